"""The application: the ``anynet`` command and what it runs.

The top layer: it may import every package below it, and it is the only one
that changes the process it runs in (environment variables, malloc settings,
thread pools: ``process``).

- ``cli``: ``main``, the parser class, how errors end the command
- ``flags``: the training flags, config files, ``$ANYNET_BACKEND``/``$ANYNET_DEVICE``
- ``commands``: ``anynet train``, ``evaluate`` and ``info``; ``bench``: ``anynet bench``
- ``config``: a training config and its defaults; ``train``: config -> model -> Solver -> metrics
- ``runs``: run folders, the progress, metrics.csv, history and plots, TensorBoard
- ``evaluate``: a saved model's accuracy; ``info``: what this machine offers
- ``sweep``: hyperparameter sweeps (``anynet sweep``); ``process``: process-wide settings
"""
