"""Hyperparameter sweeps: one ``train`` run per point of a grid, or a search, spread over Dask workers.

anynet builds no scheduler of its own: trials are Dask tasks. Without a
scheduler address a ``LocalCluster`` of single-threaded worker processes runs
them on this machine; with one (``tcp://host:8786``) they go to that cluster,
each on whatever backend its config names (``backend="cupy"`` on GPU
workers). Every finished trial is written to ``results.csv``/``results.json``
at once, atomically, so a crash loses nothing finished; a trial that raises is
recorded with its error; a trial whose worker dies is run again elsewhere.
Each trial trains into its own run folder, ``OUT/trials/NNNN``, as ``anynet
train`` would. A grid, or random points drawn from its ranges, is planned up
front; a TPE search, or any sweep with pruning, is an Optuna study
(``anynet.sweep_search``).
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
import traceback
import uuid
import warnings
from collections import Counter, OrderedDict
from functools import partial
from pathlib import Path

import numpy as np

from .sweep_grid import expand_grid, flag_key, format_value, parse_grid, sample_grid
from .sweep_results import (
    METRICS,
    best_row,
    canonical,
    flag_names,
    jsonable,
    plot_results,
    read_results,
    write_results,
)
from .sweep_search import SAMPLERS, STUDY_DB, MissingDependency, require

__all__ = ["MissingDependency", "parse_grid", "run_trial", "sweep"]
TRIALS_DIR = "trials"

_EVENT_TOPIC = "anynet-sweep"
# Each worker keeps the datasets of its last few data configs, so a sweep loads
# its data once per worker rather than once per trial.
_DATA_CACHE: OrderedDict = OrderedDict()
_DATA_CACHE_SIZE = 2
_DATA_LOCK = threading.Lock()
_DATA_LOADS = Counter()  # data key -> times loaded in this process, for tests and logs
_DATA_KEYS = ("data_dir", "num_training", "num_validation", "num_test", "dtype")
_threads_limited: set = set()  # the array libraries whose threads this worker has limited


def _data_key(config: dict) -> tuple:
    """The part of ``config`` that decides which data a trial trains on."""
    return tuple((k, str(config.get(k))) for k in _DATA_KEYS)


def cached_data(config: dict):
    """Return the dataset ``config`` asks for, loading it only the first time in this process.

    Parameters
    ----------
    config : dict
        A ``train`` config; its ``data_dir``, ``num_training``,
        ``num_validation``, ``num_test`` and ``dtype`` pick the data.
    """
    from .data import get_cifar10_data

    key = _data_key(config)
    with _DATA_LOCK:
        if key in _DATA_CACHE:
            _DATA_CACHE.move_to_end(key)
            return _DATA_CACHE[key]
        # The same call ``train`` makes when given no data, so a sweep trains on what ``anynet train`` would.
        data = get_cifar10_data(
            config.get("data_dir"), config["num_training"], config["num_validation"], config["num_test"],
            dtype=config["dtype"],
        )
        _DATA_LOADS[key] += 1
        _DATA_CACHE[key] = data
        while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
            _DATA_CACHE.popitem(last=False)
        return data


def run_trial(config: dict, out_dir=None, on_epoch=None) -> dict:
    """Train one model as ``anynet train`` would, on this process's cached data; return its metrics.

    Parameters
    ----------
    config : dict
        A ``train`` config (keys are the train flags with underscores).
    out_dir : str or path, optional
        The trial's run folder: ``train`` writes metrics, history, plots,
        checkpoint and model.npz there.
    on_epoch : callable, optional
        Passed to ``train``: called with each epoch's row, may raise
        ``anynet.train.StopRun`` to end the run early (pruning).

    Returns
    -------
    dict
        ``train``'s metrics: ``val_acc``, ``test_acc``, ``train_seconds``,
        ``images_per_second``, ..., and ``stopped`` (why it ended early, or None).
    """
    from .train import train

    return train(config, out_dir=out_dir, data=cached_data(config), quiet=True, on_epoch=on_epoch)


def _dask_worker():
    """The Dask worker running this code, or None outside one."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        return None


def _limit_threads(config) -> None:
    """Use one BLAS, one torch and one anynet thread, so single-threaded workers sharing a machine don't fight."""
    from . import backend, backends

    try:
        # Loads the trial's array library first, so that its threads are limited too (PyTorch's, say).
        name = backends.get(config.get("backend") or "numpy", config.get("device")).name
    except (backends.BackendUnavailableError, ValueError):
        return  # the trial reports that itself
    if name in _threads_limited:
        return
    _threads_limited.add(name)
    # Without threadpoolctl the nanny has already set OMP/MKL/OPENBLAS_NUM_THREADS=1. anynet's own threads
    # too: no row blocks beside the other trials.
    backend.limit_threads(1)


def _execute(trial, config: dict, sweep_id: str, index: int, run_dir=None, on_epoch=None) -> dict:
    """Run ``trial(config, out_dir=run_dir, on_epoch=on_epoch)`` and turn what happens into a row.

    An exception becomes an error row; a run that ``on_epoch`` stopped early, a ``pruned`` one.
    """
    worker = _dask_worker()
    if worker is not None:
        from distributed import get_client

        # Through a client, which waits for the scheduler to store the event: a worker dying right after
        # this line still leaves its attempt counted (the worker's own log_event is sent later, in a batch).
        get_client().log_event(_EVENT_TOPIC, {"sweep": sweep_id, "trial": index, "worker": worker.address})
        _limit_threads(config)
    row = {"worker": worker.address if worker is not None else "in-process", "status": "ok", "error": ""}
    try:
        metrics = trial(config, out_dir=run_dir, on_epoch=on_epoch)
        for name in METRICS:
            value = metrics[name]
            row[name] = None if value is None else float(value)
        if metrics.get("stopped"):
            row.update(status="pruned", error=str(metrics["stopped"]))
    except Exception as exc:  # a failed trial is a result, not the end of the sweep
        row.update({name: None for name in METRICS})
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        row["traceback"] = traceback.format_exc(limit=-4)
    finally:
        close = getattr(on_epoch, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # tidying up must not turn a result into an error
                pass
    return row


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


def _base(base_config) -> dict:
    """The shared train config with every key a train flag, checked."""
    base = {flag_key(k): v for k, v in dict(base_config or {}).items()}
    try:
        from .train import DEFAULTS
    except ImportError:
        DEFAULTS = {}
    unknown = sorted(set(base) - set(DEFAULTS)) if DEFAULTS else []
    if unknown:
        raise ValueError(
            f"base_config has unknown key(s) {', '.join(unknown)}; expected train flags: {', '.join(sorted(DEFAULTS))}"
        )
    return {**DEFAULTS, **base}


def _plan(grid, base, sampler, trials, random_seed):
    """The list of (flags, full config) of every trial of a planned sweep: the grid, a part of it, or random points."""
    if sampler == "random":
        points = sample_grid(grid, trials, seed=random_seed)
    else:
        points = expand_grid(grid)
        if trials is not None and trials < len(points):
            # Fewer trials than points: a seeded choice of them, in grid order.
            keep = np.random.default_rng(random_seed).choice(len(points), size=trials, replace=False)
            points = [points[i] for i in sorted(keep)]
    return [(jsonable(point), jsonable({**base, **point})) for point in points]


def _match_previous(previous, trials):
    """Split the plan into finished rows (renumbered to their plan index) and the indices still to run.

    A recorded trial counts as finished when it ended ``ok`` or ``error``;
    ``lost`` trials (their workers kept dying) run again. Rows that are not in
    the plan are kept, numbered after it.
    """
    by_config: dict[str, list] = {}
    for row in previous:
        if row.get("status") in ("ok", "error"):
            by_config.setdefault(canonical(row["config"]), []).append(row)
    done, pending = [], []
    for index, (_, config) in enumerate(trials):
        matches = by_config.get(canonical(config))
        if matches:
            done.append({**matches.pop(0), "trial": index})
        else:
            pending.append(index)
    extra = [row for rows in by_config.values() for row in rows]
    for offset, row in enumerate(sorted(extra, key=lambda r: r.get("trial", 0))):
        done.append({**row, "trial": len(trials) + offset})
    return done, pending


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


def _config_only(trial, config, out_dir=None, on_epoch=None):
    """Call a ``trial(config)`` written before trials had run folders and pruning."""
    return trial(config)


def _takes_run_arguments(trial) -> bool:
    """Whether ``trial`` accepts the ``out_dir`` and ``on_epoch`` keywords (or any keyword)."""
    try:
        params = inspect.signature(trial).parameters
    except (TypeError, ValueError):  # a builtin or C callable: assume the current contract
        return True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return {"out_dir", "on_epoch"} <= set(params)


def _check_args(sampler, trials, workers, trial, random):
    """Check the sweep's arguments; return (sampler, trials) with the deprecated ``random=N`` applied."""
    if random is not None:
        if sampler not in (None, "random") or trials not in (None, random):
            raise ValueError(f"random={random!r} is short for sampler='random', trials={random!r}; give one of them")
        warnings.warn("sweep(random=N) is deprecated; use sampler='random', trials=N", DeprecationWarning,
                      stacklevel=3)
        sampler, trials = "random", random
    sampler = "grid" if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0):
        raise ValueError(f"trials must be a positive integer; got {trials!r}")
    if trials is None and sampler != "grid":
        raise ValueError(f"sampler {sampler!r} needs the number of trials (--trials N)")
    if not callable(trial):
        raise TypeError(f"trial must be callable; got {type(trial).__name__}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a non-negative integer; got {workers!r}")
    return sampler, trials


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
        the rest comes from ``anynet.train.DEFAULTS``.
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
        plots at the end, and a search's Optuna study (``study.db``).
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
        (a search continues its study). Without it, an ``out_dir`` that
        already holds results is refused.
    trial : callable, optional
        ``trial(config, out_dir=None, on_epoch=None) -> metrics`` run for each
        point; default ``run_trial``, which calls ``anynet.train.train`` on
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
        ``status`` (``ok``, ``pruned``, ``error`` or ``lost``), ``run_dir``
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
    sampler, trials = _check_args(sampler, trials, workers, trial, random)
    if not _takes_run_arguments(trial):
        trial = partial(_config_only, trial)
    grid = parse_grid(grid)
    keys = list(grid)
    base = _base(base_config)
    search = sampler == "tpe" or prune
    if search:
        require("optuna", f"--sampler {sampler}" + (" --prune" if prune else ""))
    if not (client is None and scheduler is None and workers == 0):
        require("distributed", "a sweep on Dask workers (--workers 0 runs trials in this process)")
    size = math.prod(len(values) for values in grid.values())  # without listing the points: a range has two
    if sampler == "grid" and trials is not None and trials > size:
        raise ValueError(f"trials must be at most the grid's {size} points for the grid sampler; got {trials}")
    rows, previous = [], []
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        previous = read_results(out_dir)
        if previous and not resume:
            raise ValueError(
                f"{out_dir} already holds the results of a sweep; resume it (--resume) or choose another output folder"
            )
        if (out_dir / STUDY_DB).exists() and not search:
            raise ValueError(f"{out_dir} holds an Optuna study ({STUDY_DB}); resume it with the --sampler and "
                             "--prune it was started with")
        if search and previous and not (out_dir / STUDY_DB).exists():
            raise ValueError(f"{out_dir} holds a sweep without an Optuna study; it cannot be resumed as "
                             f"--sampler {sampler}" + (" --prune" if prune else ""))
    sweep_id = uuid.uuid4().hex[:12]
    if search:
        from .sweep_search import Space, open_study, settle_stale

        space = Space(grid, sampler)
        study = open_study(out_dir, space, trials or size, prune, random_seed, resume, base)
        settle_stale(study, previous)
        rows = [row for row in previous if row.get("status") in ("ok", "error", "pruned")]
        todo = max((trials or size) - len(rows), 0)
        plan = None
    else:
        plan = _plan(grid, base, sampler, trials, random_seed)
        rows, pending = _match_previous(previous, plan) if out_dir is not None else ([], list(range(len(plan))))
        todo = len(pending)
    bar = _Progress(todo, progress)

    def run_dir(index):
        """Trial ``index``'s run folder: absolute, for the trial; relative to ``out_dir``, for the table."""
        if out_dir is None:
            return None, None
        relative = f"{TRIALS_DIR}/{index:04d}"
        return str((out_dir / relative).resolve()), relative

    def record(index, flags, config, row, attempts):
        """Add one finished trial to the table and write the table out."""
        rows.append({"trial": index, **flags, **row, "attempts": attempts, "run_dir": run_dir(index)[1],
                     "config": config})
        if out_dir is not None:
            write_results(out_dir, rows)
        bar.update(rows)

    own = None
    try:
        if todo and not (client is None and scheduler is None and workers == 0) and client is None:
            if scheduler is not None:
                from distributed import Client

                client = own = Client(scheduler, timeout="30s")
            else:
                from dask.system import CPU_COUNT  # the cores this process may use, cgroups included

                own = _local_client(workers or CPU_COUNT)
                client = own[0]
        if search:
            from .sweep_search import run_study

            run_study(study, space, base, todo, client, trial, sweep_id, retries, record, bar, run_dir)
        elif client is None:
            for index in pending:
                flags, config = plan[index]
                record(index, flags, config, _execute(trial, config, sweep_id, index, run_dir(index)[0]), 1)
        elif pending:
            _run_on(client, trial, plan, pending, sweep_id, retries, record, bar, run_dir)
    finally:
        bar.close()
        if own is not None:
            for thing in own if isinstance(own, tuple) else (own,):
                thing.close()
    rows.sort(key=lambda r: r["trial"])
    if out_dir is not None and plot:
        plot_results(out_dir, rows, keys)
    return rows


def submit(client, trial, config, sweep_id, index, retries, run_dir, on_epoch=None):
    """Submit one trial to ``client``; return its future."""
    return client.submit(
        _execute, trial, config, sweep_id, index, run_dir, on_epoch,
        key=f"anynet-trial-{sweep_id}-{index}", pure=False, retries=retries,
    )


def outcome(client, future, sweep_id, index, bar):
    """The row of a finished trial future and how many times it ran (its worker may have died)."""
    try:
        row = future.result()
    except Exception as exc:  # KilledWorker, or the task could not even run there
        status = "lost" if type(exc).__name__ == "KilledWorker" else "error"
        row = {name: None for name in METRICS}
        row.update(worker="", status=status, error=f"{type(exc).__name__}: {exc}")
    starts = [
        msg["worker"] for _, msg in client.get_events(_EVENT_TOPIC)
        if msg.get("sweep") == sweep_id and msg.get("trial") == index
    ]
    if len(starts) > 1:
        died = ", ".join(starts[:-1] if row["status"] in ("ok", "pruned") else starts)
        bar.note(f"trial {index}: its worker died ({died}); run {len(starts)} times, now {row['status']}")
    return row, max(len(starts), 1)


def _run_on(client, trial, plan, pending, sweep_id, retries, record, bar, run_dir):
    """Submit the pending trials to ``client`` and record each as it finishes."""
    from distributed import as_completed

    futures = {}
    for index in pending:
        futures[submit(client, trial, plan[index][1], sweep_id, index, retries, run_dir(index)[0])] = index
    try:
        for future in as_completed(futures):
            index = futures.pop(future)
            row, attempts = outcome(client, future, sweep_id, index, bar)
            record(index, *plan[index], row, attempts)
            # Recorded: let the worker drop it, so a worker dying later does not make Dask recompute it.
            future.release()
    finally:
        client.cancel(list(futures))


# ---- the `anynet sweep` command -------------------------------------------------------------------------------


def add_parser(subparsers):
    """Add ``anynet sweep`` to the ``anynet`` command's subparsers and return its parser.

    It takes every ``anynet train`` flag, for the config the trials share.
    """
    from .cli import add_train_flags, positive_int

    parser = subparsers.add_parser(
        "sweep",
        help="train over a grid of hyperparameters, or search it, on Dask workers",
        description="Train one model per point of a grid of train flags, or per point a search picks, on a local "
        "pool of worker processes or a Dask cluster. Each trial gets a run folder under --out/trials; the table "
        "goes to results.csv and results.json, the best trial to best.json, the plots to val_acc.png (and "
        "val_acc_map.png when two or more flags are swept). Any train flag given outside --grid applies to "
        "every trial.",
    )
    parser.add_argument("--grid", nargs="+", required=True, metavar="FLAG=V1,V2",
                        help="train flags to sweep and their values, e.g. learning-rate=1e-4,1e-3 lr-decay=0.9,0.95 "
                        "(hidden-dims values join widths with x: 100x100); for random and tpe a number flag's "
                        "values give its range")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="grid: every point of the grid (default); random: --trials points drawn from its "
                        "ranges (log-uniform for learning rate, reg and weight scale); tpe: an Optuna study that "
                        "picks each trial from the results so far (needs optuna)")
    parser.add_argument("--trials", type=positive_int, metavar="N",
                        help="how many trials (needed for random and tpe; for grid, at most the grid's size: that "
                        "many points chosen at random); with --resume, the total")
    parser.add_argument("--prune", action="store_true",
                        help="stop a trial whose validation accuracy at an epoch end is below the median of earlier "
                        "trials' at that epoch (Optuna's median pruner; the sweep becomes an Optuna study)")
    parser.add_argument("--random", type=positive_int, metavar="N",
                        help="deprecated: --sampler random --trials N")
    parser.add_argument("--random-seed", type=int, default=0, metavar="S",
                        help="seed of the sampler's draws (default 0)")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="local worker processes, one thread each (default: one per core; 0: run in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="send trials to this Dask scheduler (tcp://host:8786)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                        help="skip the trials already recorded in DIR (default: --out); a search continues its study")
    parser.add_argument("--out", metavar="DIR", help="folder for the results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_train_flags(parser)
    parser.set_defaults(run=main)
    return parser


def main(args) -> int:
    """Run ``anynet sweep`` from parsed ``args``; print the best trial and return the exit code."""
    from .cli import config_from_args

    out = args.out
    if isinstance(args.resume, str):
        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--resume {args.resume} and --out {out} name different folders; give one")
        out = args.resume
    if out is None:
        raise ValueError("--out DIR is required: the folder where results go")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more; got {args.workers}")
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("--workers starts a local cluster and --scheduler names another; give one")
    sampler, trials = args.sampler, args.trials
    if args.random is not None:
        if sampler not in (None, "random") or trials not in (None, args.random):
            raise ValueError(f"--random {args.random} is short for --sampler random --trials {args.random}; give one")
        print(f"anynet sweep: --random is deprecated; use --sampler random --trials {args.random}", file=sys.stderr)
        sampler, trials = "random", args.random
    try:
        rows = sweep(
            args.grid, config_from_args(args), scheduler=args.scheduler, workers=args.workers, out_dir=out,
            sampler=sampler, trials=trials, prune=args.prune, random_seed=args.random_seed,
            resume=args.resume is not None, progress=not args.quiet,
        )
    except MissingDependency as exc:
        print(f"anynet sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anynet sweep: interrupted; finished trials are in {out}, continue with --resume", file=sys.stderr)
        return 130
    failed = sum(row["status"] not in ("ok", "pruned") for row in rows)
    pruned = sum(row["status"] == "pruned" for row in rows)
    note = f", {pruned} pruned" if args.prune else ""
    print(f"{len(rows)} trials, {failed} failed{note}; results in {Path(out) / 'results.csv'}")
    best = best_row(rows)
    if best is None:
        print("no trial finished", file=sys.stderr)
        return 1
    flags = " ".join(f"{k.replace('_', '-')}={format_value(best[k])}" for k in flag_names([best]))
    test = "n/a" if best["test_acc"] is None else f"{best['test_acc']:.4f}"
    print(f"best: trial {best['trial']}, val acc {best['val_acc']:.4f}, test acc {test}: {flags}")
    if best.get("run_dir"):
        print(f"its run folder: {Path(out) / best['run_dir']}; "
              f"train it again: anynet train --config {Path(out) / 'best.json'}")
    return 0
