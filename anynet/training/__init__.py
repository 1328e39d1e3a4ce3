"""Training: the optimizer state, the one training step, the compiled-step cache, the Solver and checkpoints.

``optimizer`` keeps an update rule's state the way optax does (``init``, a
pure ``update``), laid out once (``layouts``); ``step`` is one pure function
of a run's state, compiled by the backend where it can (``compiled``);
``solver`` is the course's ``Solver`` around it; ``configs`` its course-form
view of the optimizer state; ``checkpoint`` writes and reads it all as npz.
"""
