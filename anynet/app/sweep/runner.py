"""A sweep from start to end: plan it or open its study, run its trials here or on Dask, record each, plot.

anynet builds no scheduler of its own: trials are Dask tasks. Without a
scheduler address a ``LocalCluster`` of single-threaded worker processes runs
them on this machine; with one (``tcp://host:8786``) they go to that cluster.
Every finished trial is written to the table at once (``results``), so a
crash loses nothing finished.
"""

from __future__ import annotations

import math
import sys
import uuid
from functools import partial
from pathlib import Path

from .dependencies import require
from .grid import parse_grid
from .manifest import first_trials, read_manifest, write_manifest
from .plan import check_args, check_points, match_previous, plan, previous_rows, shared_config
from .results import FINISHED, METRICS, best_row, jsonable, plot_results, write_results
from .trials import config_only, execute, outcome, run_trial, submit, takes_run_arguments

TRIALS_DIR = "trials"


def sweep(grid, base_config=None, client=None, *, scheduler=None, workers=None, out_dir=None, sampler=None,
          trials=None, prune=False, random=None, random_seed=0, resume=False, trial=None, retries=1, progress=False,
          plot=True):
    """Train one model per point of ``grid``, or per point a search picks, and return the table of results.

    Parameters
    ----------
    grid : mapping or list of str
        Flags to sweep and their values: ``{"learning_rate": [1e-4, 1e-3], "lr_decay": [0.9, 0.95]}``
        or ``["learning-rate=1e-4,1e-3", "lr-decay=0.9,0.95"]``; see ``parse_grid``.
        For ``random`` and ``tpe`` a numeric flag's values give its range.
    base_config : dict, optional
        ``train`` config shared by every trial (the grid's values win);
        the rest comes from ``anynet.app.config.DEFAULTS``.
    client : distributed.Client, optional
        Run the trials on this Dask cluster.
    scheduler : str, optional
        Without ``client``: address of a Dask scheduler (``tcp://host:8786``) to send trials to.
    workers : int, optional
        Without ``client`` or ``scheduler``: start a ``LocalCluster`` of this
        many single-threaded worker processes (default one per core). ``0``
        runs every trial here, one after another, without Dask.
    out_dir : str or path, optional
        Write ``results.csv``, ``results.json`` and ``best.json`` there after
        every finished trial, each trial's run folder under ``trials/``, the
        plots at the end, a search's Optuna study (``study.db``), and, when
        the sweep starts, what it runs with (``sweep.json``, which ``anynet
        sweep --resume DIR`` reads).
    sampler : {"grid", "random", "tpe"}, optional
        ``grid`` (default): every point of the grid, or ``trials`` of them
        chosen at random. ``random``: ``trials`` points drawn from the grid's
        ranges (``sample_grid``; log-uniform for learning rate, reg and
        weight scale). ``tpe``: an Optuna study with the TPE sampler over
        those ranges, each trial chosen from the results so far (needs optuna).
    trials : int, optional
        How many trials (for ``grid``, at most the grid's size); needed for
        ``random`` and ``tpe``. With ``resume``, the total, finished ones included.
    prune : bool
        Stop trials whose validation accuracy at an epoch end is below the
        median of earlier trials' at that epoch (Optuna's median pruner; needs
        optuna). The sweep is then an Optuna study whatever the sampler, and
        ``grid`` and ``random`` points come from Optuna's samplers of those names.
    random : int, optional
        Deprecated: ``sampler="random", trials=random``.
    random_seed : int
        Seed of the sampler's draws.
    resume : bool
        Keep the trials already recorded in ``out_dir`` and run only the rest
        (a search continues its study). A trial that was training when the
        sweep stopped runs again under its number, from its checkpoint
        (``run_trial``); a search's is recorded ``lost`` and its point
        queued again. Backend, device, data folder and compiling may differ
        from the recorded trials'. Without ``resume``, an ``out_dir`` that
        already holds a sweep is refused.
    trial : callable, optional
        ``trial(config, out_dir=None, on_epoch=None) -> metrics`` run for each
        point; default ``run_trial``, which calls ``anynet.app.train.train`` on
        data loaded once per worker. Runs on the workers, so it must be
        importable (or picklable) there. A ``trial(config)`` without those
        keywords is called with the config alone: its trials get no run
        folder written for them and are never pruned.
    retries : int
        Dask retries of a trial task that fails outside ``trial`` (a trial
        that raises is recorded, not retried). A trial whose worker dies is
        run again elsewhere by the scheduler, up to Dask's
        ``distributed.scheduler.allowed-failures`` times; such rows have
        ``attempts > 1``, and ``status == "lost"`` when Dask gives up.
    progress : bool
        Show a progress bar of finished trials on stderr.
    plot : bool
        Write the plots (needs matplotlib) when ``out_dir`` is given.

    Returns
    -------
    list of dict
        One row per trial, in trial order: ``trial`` (its index, or the
        study's trial number), the swept flags, ``val_acc``, ``test_acc``,
        ``train_seconds``, ``images_per_second``, ``worker``, ``attempts``,
        ``status`` (``ok``, ``pruned``, ``error``, ``lost``, or
        ``diverged``: finished, with the accuracies of its best parameters before its loss diverged), ``run_dir``
        (the trial's folder relative to ``out_dir``, or None), ``error`` and
        ``config`` (the whole train config).

    Raises
    ------
    ValueError
        A bad grid, base config, sampler or number of trials, or ``out_dir``
        holding results without ``resume``.
    MissingDependency
        Dask (or, for ``tpe`` and ``prune``, optuna) is not installed.
    """
    trial = run_trial if trial is None else trial
    sampler, trials = check_args(sampler, trials, workers, trial, random)
    if not takes_run_arguments(trial):
        trial = partial(config_only, trial)
    grid = parse_grid(grid)
    base = shared_config(base_config)
    search = sampler == "tpe" or prune
    in_process = client is None and scheduler is None and workers == 0
    _require(search, in_process, sampler, prune)
    size = math.prod(len(values) for values in grid.values())  # without listing the points: a range has two
    if sampler == "grid" and trials is not None and trials > size:
        raise ValueError(f"trials must be at most the grid's {size} points for the grid sampler; got {trials}")
    out_dir = None if out_dir is None else Path(out_dir)
    first = first_trials(read_manifest(out_dir) if out_dir is not None and resume else None, grid, sampler, trials,
                         random_seed)
    planned = None if search else plan(grid, base, sampler, trials, random_seed, first)
    check_points([flags for flags, _ in planned] if planned is not None else
                 [{key: value} for key, values in grid.items() for value in values], base)
    previous = previous_rows(out_dir, resume, search, sampler, prune)
    sweep_id = uuid.uuid4().hex[:12]
    if search:
        study, space, rows, todo = _open_search(grid, sampler, out_dir, trials or size, prune, random_seed, resume,
                                                base, previous)
    else:
        rows, pending = match_previous(previous, planned) if out_dir is not None else ([], list(range(len(planned))))
        todo = len(pending)
    if out_dir is not None:  # checked: what it runs with, for --resume DIR alone
        write_manifest(out_dir, grid=grid, base_config=base_config, sampler=sampler, trials=trials, first_trials=first,
                       prune=prune, random_seed=random_seed, workers=workers, scheduler=scheduler)
    bar = _Progress(todo, progress)
    table = _Table(out_dir, rows, bar)
    own = ()
    try:
        if todo and not in_process and client is None:
            own = _own_client(scheduler, workers)
            client = own[0]
        if search:
            from .search import run_study

            run_study(study, space, base, todo, client, trial, sweep_id, retries, table.record, bar, table.run_dir)
        else:
            _run_planned(client, trial, planned, pending, sweep_id, retries, table, bar)
    finally:
        bar.close()
        for thing in own:
            thing.close()
    rows.sort(key=lambda r: r["trial"])
    if out_dir is not None and plot:
        plot_results(out_dir, rows, list(grid))
    return rows


def _require(search, in_process, sampler, prune):
    """Raise ``MissingDependency`` unless the packages this sweep needs are installed: Dask, Optuna for a search."""
    if search:
        require("optuna", f"--sampler {sampler}" + (" --prune" if prune else ""))
    if not in_process:
        require("distributed", "a sweep on Dask workers (--workers 0 runs trials in this process)")


def _open_search(grid, sampler, out_dir, trials, prune, random_seed, resume, base, previous):
    """The study of a search sweep, its space, its rows so far and how many trials are left to run.

    The rows are the finished trials and the ``lost`` ones, kept in the table
    (they point to their folders) but not counted: their points run again.
    """
    from .search import Space, open_study, settle_stale

    space = Space(grid, sampler)
    study = open_study(out_dir, space, trials, prune, random_seed, resume, base)
    stale = settle_stale(study, previous)
    rows = [row for row in previous if row.get("status") in (*FINISHED, "lost")]
    if out_dir is not None and stale:
        rows += [_lost_row(number, space.point(params), base) for number, params in stale]
        write_results(out_dir, rows)
    return study, space, rows, max(trials - sum(row["status"] in FINISHED for row in rows), 0)


def _lost_row(number, flags, base):
    """The row of search trial ``number``, which was training when its sweep stopped: its point is queued again."""
    flags = jsonable(flags)
    return {"trial": number, **flags, **dict.fromkeys(METRICS), "worker": "", "attempts": 1, "status": "lost",
            "run_dir": f"{TRIALS_DIR}/{number:04d}",
            "error": "the sweep stopped while it trained; its flags were queued to train again as a new trial, and "
                     "its folder keeps what it trained", "config": jsonable({**base, **flags})}


class _Progress:
    """A tqdm bar of finished trials that shows the best validation accuracy so far."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="sweep", unit="trial", disable=not enabled, file=sys.stderr)

    def note(self, text: str) -> None:
        """Print a line above the bar."""
        if not self.bar.disable:
            self.bar.write(text, file=sys.stderr)

    def update(self, rows) -> None:
        """Count one more finished trial."""
        best = best_row(rows)
        if best is not None:
            self.bar.set_postfix(best_val_acc=f"{best['val_acc']:.4f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


class _Table:
    """The sweep's rows, written out (``out_dir`` given) each time a trial finishes, and each trial's run folder."""

    def __init__(self, out_dir, rows, bar):
        self.out_dir, self.rows, self.bar = out_dir, rows, bar

    def run_dir(self, index):
        """Trial ``index``'s run folder: absolute, for the trial; relative to ``out_dir``, for the table."""
        if self.out_dir is None:
            return None, None
        relative = f"{TRIALS_DIR}/{index:04d}"
        return str((self.out_dir / relative).resolve()), relative

    def record(self, index, flags, config, row, attempts):
        """Add one finished trial to the table and write the table out."""
        self.rows.append({"trial": index, **flags, **row, "attempts": attempts, "run_dir": self.run_dir(index)[1],
                          "config": config})
        if self.out_dir is not None:
            write_results(self.out_dir, self.rows)
        self.bar.update(self.rows)


def _own_client(scheduler, workers):
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster: (client,) or (client, cluster)."""
    if scheduler is not None:
        from distributed import Client

        return (Client(scheduler, timeout="30s"),)
    from dask.system import CPU_COUNT  # the cores this process may use, cgroups included

    return _local_client(workers or CPU_COUNT)


def _local_client(workers):
    """Start a LocalCluster of ``workers`` single-threaded processes on 127.0.0.1 and a client to it."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
    )
    return Client(cluster), cluster


def _run_planned(client, trial, planned, pending, sweep_id, retries, table, bar):
    """Run the pending trials of a planned sweep: here one after another (``client`` None), or on ``client``."""
    if client is None:
        for index in pending:
            flags, config = planned[index]
            table.record(index, flags, config, execute(trial, config, sweep_id, index, table.run_dir(index)[0]), 1)
    elif pending:
        _run_on(client, trial, planned, pending, sweep_id, retries, table, bar)


def _run_on(client, trial, planned, pending, sweep_id, retries, table, bar):
    """Submit the pending trials to ``client`` and record each as it finishes."""
    from distributed import as_completed

    futures = {}
    for index in pending:
        futures[submit(client, trial, planned[index][1], sweep_id, index, retries, table.run_dir(index)[0])] = index
    try:
        for future in as_completed(futures):
            index = futures.pop(future)
            row, attempts = outcome(client, future, sweep_id, index, bar)
            table.record(index, *planned[index], row, attempts)
            # Recorded: let the worker drop it, so a worker dying later does not make Dask recompute it.
            future.release()
    finally:
        client.cancel(list(futures))
