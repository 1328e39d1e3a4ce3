"""Hyperparameter sweeps: one ``train`` run per point of a grid, spread over Dask workers.

anynet builds no scheduler of its own: trials are Dask tasks. Without a
scheduler address a ``LocalCluster`` of single-threaded worker processes runs
them on this machine; with one (``tcp://host:8786``) they go to that cluster,
each on whatever backend its config names (``backend="cupy"`` on GPU
workers). Every finished trial is written to ``results.csv``/``results.json``
at once, atomically, so a crash loses nothing finished; a trial that raises is
recorded with its error; a trial whose worker dies is run again elsewhere.
"""

from __future__ import annotations

import sys
import threading
import traceback
import uuid
from collections import Counter, OrderedDict
from pathlib import Path

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

__all__ = ["parse_grid", "run_trial", "sweep"]

_EVENT_TOPIC = "anynet-sweep"
# Each worker keeps the datasets of its last few data configs, so a sweep loads
# its data once per worker rather than once per trial.
_DATA_CACHE: OrderedDict = OrderedDict()
_DATA_CACHE_SIZE = 2
_DATA_LOCK = threading.Lock()
_DATA_LOADS = Counter()  # data key -> times loaded in this process, for tests and logs
_DATA_KEYS = ("data_dir", "num_training", "num_validation", "num_test", "dtype")
_threads_limited = False


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


def run_trial(config: dict) -> dict:
    """Train one model as ``anynet train`` would, on this process's cached data; return its metrics.

    Parameters
    ----------
    config : dict
        A ``train`` config (keys are the train flags with underscores).

    Returns
    -------
    dict
        ``train``'s metrics: ``val_acc``, ``test_acc``, ``train_seconds``,
        ``images_per_second``, ...
    """
    from .train import train

    return train(config, data=cached_data(config), quiet=True)


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


def _limit_threads() -> None:
    """Use one BLAS, one torch and one anynet thread, so single-threaded workers sharing a machine don't fight."""
    global _threads_limited
    if _threads_limited:
        return
    _threads_limited = True
    from . import backend

    # Without threadpoolctl the nanny has already set OMP/MKL/OPENBLAS_NUM_THREADS=1. anynet's own threads
    # too: no row blocks (anynet.blocks) beside the other trials.
    backend.limit_threads(1)


def _execute(trial, config: dict, sweep_id: str, index: int) -> dict:
    """Run ``trial(config)`` and turn what happens into a row; an exception becomes an error row."""
    worker = _dask_worker()
    if worker is not None:
        from distributed import get_client

        # Through a client, which waits for the scheduler to store the event: a worker dying right after
        # this line still leaves its attempt counted (the worker's own log_event is sent later, in a batch).
        get_client().log_event(_EVENT_TOPIC, {"sweep": sweep_id, "trial": index, "worker": worker.address})
        _limit_threads()
        if config.get("backend") == "torch":
            import torch

            torch.set_num_threads(1)
    row = {"worker": worker.address if worker is not None else "in-process", "status": "ok", "error": ""}
    try:
        metrics = trial(config)
        for name in METRICS:
            value = metrics[name]
            row[name] = None if value is None else float(value)
    except Exception as exc:  # a failed trial is a result, not the end of the sweep
        row.update({name: None for name in METRICS})
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        row["traceback"] = traceback.format_exc(limit=-4)
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


def _plan(grid, base_config, random, random_seed):
    """Return the swept keys and the list of (flags, full config) of every trial."""
    grid = parse_grid(grid)
    points = expand_grid(grid) if random is None else sample_grid(grid, random, seed=random_seed)
    base = dict(base_config or {})
    base = {flag_key(k): v for k, v in base.items()}
    try:
        from .train import DEFAULTS
    except ImportError:
        DEFAULTS = {}
    unknown = sorted(set(base) - set(DEFAULTS)) if DEFAULTS else []
    if unknown:
        raise ValueError(
            f"base_config has unknown key(s) {', '.join(unknown)}; expected train flags: {', '.join(sorted(DEFAULTS))}"
        )
    trials = [(jsonable(point), jsonable({**DEFAULTS, **base, **point})) for point in points]
    return list(grid), trials


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


def sweep(grid, base_config=None, client=None, *, scheduler=None, workers=None, out_dir=None, random=None,
          random_seed=0, resume=False, trial=None, retries=1, progress=False, plot=True):
    """Train one model per point of ``grid`` and return the table of results.

    Parameters
    ----------
    grid : mapping or list of str
        Flags to sweep and their values: ``{"learning_rate": [1e-4, 1e-3], "lr_decay": [0.9, 0.95]}``
        or ``["learning-rate=1e-4,1e-3", "lr-decay=0.9,0.95"]``; see ``parse_grid``.
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
        every finished trial, and ``val_acc.png`` at the end.
    random : int, optional
        Train this many points drawn from the grid's ranges (``sample_grid``)
        instead of every point.
    random_seed : int
        Seed of those draws.
    resume : bool
        Keep the trials already recorded in ``out_dir`` and run only the rest.
        Without it, an ``out_dir`` that already holds results is refused.
    trial : callable, optional
        ``trial(config) -> metrics`` run for each point; default ``run_trial``,
        which calls ``anynet.train.train`` on data loaded once per worker.
        Runs on the workers, so it must be importable (or picklable) there.
    retries : int
        Dask retries of a trial task that fails outside ``trial`` (a trial
        that raises is recorded, not retried). A trial whose worker dies is
        run again elsewhere by the scheduler, up to Dask's
        ``distributed.scheduler.allowed-failures`` times; such rows have
        ``attempts > 1``, and ``status == "lost"`` when Dask gives up.
    progress : bool
        Show a progress bar of finished trials on stderr.
    plot : bool
        Write the plot (needs matplotlib) when ``out_dir`` is given.

    Returns
    -------
    list of dict
        One row per trial, in grid order: ``trial`` (its index), the swept
        flags, ``val_acc``, ``test_acc``, ``train_seconds``,
        ``images_per_second``, ``worker``, ``attempts``, ``status`` (``ok``,
        ``error`` or ``lost``), ``error`` and ``config`` (the whole train config).

    Raises
    ------
    ValueError
        A bad grid or base config, or ``out_dir`` holding results without ``resume``.
    """
    keys, trials = _plan(grid, base_config, random, random_seed)
    trial = run_trial if trial is None else trial
    if not callable(trial):
        raise TypeError(f"trial must be callable; got {type(trial).__name__}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a non-negative integer; got {workers!r}")
    rows = []
    pending = list(range(len(trials)))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        previous = read_results(out_dir)
        if previous and not resume:
            raise ValueError(
                f"{out_dir} already holds the results of a sweep; resume it (--resume) or choose another output folder"
            )
        rows, pending = _match_previous(previous, trials)
    sweep_id = uuid.uuid4().hex[:12]
    bar = _Progress(len(pending), progress)

    def record(index, row, attempts):
        """Add one finished trial to the table and write the table out."""
        flags, config = trials[index]
        rows.append({"trial": index, **flags, **row, "attempts": attempts, "config": config})
        if out_dir is not None:
            write_results(out_dir, rows)
        bar.update(rows)

    own = None
    try:
        if client is None and scheduler is None and workers == 0:
            for index in pending:
                record(index, _execute(trial, trials[index][1], sweep_id, index), 1)
        elif pending:
            if client is None:
                if scheduler is not None:
                    from distributed import Client

                    client = own = Client(scheduler, timeout="30s")
                else:
                    from dask.system import CPU_COUNT  # the cores this process may use, cgroups included

                    own = _local_client(workers or CPU_COUNT)
                    client = own[0]
            _run_on(client, trial, trials, pending, sweep_id, retries, record, bar)
    finally:
        bar.close()
        if own is not None:
            for thing in own if isinstance(own, tuple) else (own,):
                thing.close()
    rows.sort(key=lambda r: r["trial"])
    if out_dir is not None and plot:
        plot_results(out_dir, rows, keys)
    return rows


def _run_on(client, trial, trials, pending, sweep_id, retries, record, bar):
    """Submit the pending trials to ``client`` and record each as it finishes."""
    from distributed import as_completed

    futures = {}
    for index in pending:
        future = client.submit(
            _execute, trial, trials[index][1], sweep_id, index,
            key=f"anynet-trial-{sweep_id}-{index}", pure=False, retries=retries,
        )
        futures[future] = index
    try:
        for future in as_completed(futures):
            index = futures.pop(future)
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
                died = ", ".join(starts[:-1] if row["status"] == "ok" else starts)
                bar.note(f"trial {index}: its worker died ({died}); run {len(starts)} times, now {row['status']}")
            record(index, row, max(len(starts), 1))
            # Recorded: let the worker drop it, so a worker dying later does not make Dask recompute it.
            future.release()
    finally:
        client.cancel(list(futures))


# ---- the `anynet sweep` command -------------------------------------------------------------------------------


def add_parser(subparsers):
    """Add ``anynet sweep`` to the ``anynet`` command's subparsers and return its parser.

    It takes every ``anynet train`` flag, for the config the trials share.
    """
    from .cli import add_train_flags

    parser = subparsers.add_parser(
        "sweep",
        help="train over a grid of hyperparameters on Dask workers",
        description="Train one model per point of a grid of train flags, on a local pool of worker processes "
        "or a Dask cluster, writing results.csv, results.json, best.json and val_acc.png to --out. Any train "
        "flag given outside --grid applies to every trial.",
    )
    parser.add_argument("--grid", nargs="+", required=True, metavar="FLAG=V1,V2",
                        help="train flags to sweep and their values, e.g. learning-rate=1e-4,1e-3 lr-decay=0.9,0.95 "
                        "(hidden-dims values join widths with x: 100x100)")
    parser.add_argument("--random", type=int, metavar="N",
                        help="train N points drawn from the grid's ranges (log-uniform for learning rate, reg and "
                        "weight scale, uniform otherwise) instead of the whole grid")
    parser.add_argument("--random-seed", type=int, default=0, metavar="S", help="seed of --random's draws (default 0)")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="local worker processes, one thread each (default: one per core; 0: run in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="send trials to this Dask scheduler (tcp://host:8786)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                        help="skip the trials already recorded in DIR (default: --out)")
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
    try:
        rows = sweep(
            args.grid, config_from_args(args), scheduler=args.scheduler, workers=args.workers, out_dir=out,
            random=args.random, random_seed=args.random_seed, resume=args.resume is not None,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(f"anynet sweep: interrupted; finished trials are in {out}, continue with --resume", file=sys.stderr)
        return 130
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"{len(rows)} trials, {failed} failed; results in {Path(out) / 'results.csv'}")
    best = best_row(rows)
    if best is None:
        print("no trial finished", file=sys.stderr)
        return 1
    flags = " ".join(f"{k.replace('_', '-')}={format_value(best[k])}" for k in flag_names([best]))
    test = "n/a" if best["test_acc"] is None else f"{best['test_acc']:.4f}"
    print(f"best: trial {best['trial']}, val acc {best['val_acc']:.4f}, test acc {test}: {flags}")
    return 0
