"""Hyperparameter sweeps: one ``train`` run per point of a grid, or a search, spread over Dask workers.

anynet builds no scheduler of its own: trials are Dask tasks. Without a
scheduler address a ``LocalCluster`` of single-threaded worker processes runs
them on this machine; with one (``tcp://host:8786``) they go to that cluster,
each on whatever backend its config names (``backend="cupy"`` on GPU
workers). Every finished trial is written to ``results.csv``/``results.json``
at once, atomically, so a crash loses nothing finished; a trial that raises is
recorded with its error, and one whose loss diverged as ``diverged``, with
what it learned; a trial whose worker dies is run again elsewhere, from its
checkpoint. Each trial trains into its own run folder, ``OUT/trials/NNNN``,
as ``anynet train`` would. A grid, or random points drawn from its ranges, is
planned up front; a TPE search, or any sweep with pruning, is an Optuna study.
A sweep records what it was started with in ``OUT/sweep.json``, so that
``anynet sweep --resume OUT`` needs nothing else.

Where each part lives: ``runner`` (``sweep`` itself), ``plan`` (arguments,
planned trials, resuming), ``manifest`` (``sweep.json``, and what a resume may
change), ``trials`` (one trial on a worker: ``run_trial``), ``search`` and
``pruning`` (the Optuna study), ``grid`` (``parse_grid``), ``results`` (the
table and its plots), ``dependencies`` (``MissingDependency``), ``command``
(``anynet sweep``).
"""

from __future__ import annotations

from .dependencies import MissingDependency
from .grid import parse_grid
from .runner import sweep
from .trials import run_trial

__all__ = ["MissingDependency", "parse_grid", "run_trial", "sweep"]
