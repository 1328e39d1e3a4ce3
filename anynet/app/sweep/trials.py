"""One trial of a sweep, where it runs: on a Dask worker or in this process, its outcome a row of the table.

``run_trial`` trains as ``anynet train`` would, on data each worker loads
once (``cached_data``). ``execute`` turns whatever a trial does into a row
(an exception into an error row, an early stop into a ``pruned`` one);
``submit`` sends it to a Dask cluster and ``outcome`` reads the row back,
with how many times the trial ran (its worker may have died).
"""

from __future__ import annotations

import inspect
import sys
import threading
import traceback
from collections import Counter, OrderedDict
from pathlib import Path

from .results import METRICS

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
    from ...data import get_cifar10_data

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
        checkpoint and model.npz there. When it already holds a checkpoint of
        this very config (the trial was training when its sweep or worker
        died), training goes on from that checkpoint (``continued_checkpoint``).
    on_epoch : callable, optional
        Passed to ``train``: called with each epoch's row, may raise
        ``anynet.app.train.StopRun`` to end the run early (pruning).

    Returns
    -------
    dict
        ``train``'s metrics: ``val_acc``, ``test_acc``, ``train_seconds``,
        ``images_per_second``, ..., and ``stopped`` (why it ended early, or None).
    """
    from ..train import train

    return train(config, out_dir=out_dir, data=cached_data(config), quiet=True, on_epoch=on_epoch,
                 resume=continued_checkpoint(config, out_dir))


def _trajectory(config: dict) -> str:
    """What decides what a run of ``config`` trains (not where or how it computes), as comparable text."""
    from ..config import DEFAULTS, PLACE_KEYS, make_config
    from .results import canonical

    full = make_config({k: v for k, v in config.items() if k in DEFAULTS})
    return canonical({k: v for k, v in full.items() if k not in PLACE_KEYS})


def continued_checkpoint(config: dict, out_dir):
    """``out_dir``'s checkpoint.npz when it is a training checkpoint of ``config`` (place aside), else None."""
    from ...training.checkpoint import CheckpointError, is_training_checkpoint, load_npz
    from ..runs import CHECKPOINT

    path = None if out_dir is None else Path(out_dir) / f"{CHECKPOINT}.npz"
    if path is None or not path.is_file():
        return None
    try:
        _, meta = load_npz(path)
        saved = meta.get("metadata", {}).get("config")
        if is_training_checkpoint(meta) and isinstance(saved, dict) and _trajectory(saved) == _trajectory(config):
            return path
    except (CheckpointError, ValueError, TypeError):
        pass  # a torn or foreign file: the trial trains afresh over it
    return None


def config_only(trial, config, out_dir=None, on_epoch=None):
    """Call a ``trial(config)`` written before trials had run folders and pruning."""
    return trial(config)


def takes_run_arguments(trial) -> bool:
    """Whether ``trial`` accepts the ``out_dir`` and ``on_epoch`` keywords (or any keyword)."""
    try:
        params = inspect.signature(trial).parameters
    except (TypeError, ValueError):  # a builtin or C callable: assume the current contract
        return True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return {"out_dir", "on_epoch"} <= set(params)


def _dask_worker():
    """The Dask worker running this code, or None outside one."""
    if "distributed" not in sys.modules:  # a worker has it loaded; a sweep in this process need not (a second)
        return None
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
    from ... import backends
    from ..process import limit_threads

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
    limit_threads(1)


def execute(trial, config: dict, sweep_id: str, index: int, run_dir=None, on_epoch=None) -> dict:
    """Run ``trial(config, out_dir=run_dir, on_epoch=on_epoch)`` and turn what happens into a row.

    An exception becomes an error row; a run that ``on_epoch`` stopped early, a ``pruned`` one; a run whose
    loss diverged (``anynet.app.train.Diverged``), a ``diverged`` one with the accuracies of its best parameters.
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
        _measured(row, metrics)
        if metrics.get("stopped"):
            row.update(status="pruned", error=str(metrics["stopped"]))
    except FloatingPointError as exc:  # diverged: what ``train`` kept of it (else an error like any other)
        metrics = getattr(exc, "metrics", None)
        if isinstance(metrics, dict) and isinstance(metrics.get("diverged"), dict) and set(METRICS) <= set(metrics):
            _measured(row, metrics)
            row.update(status="diverged", error=_divergence_note(metrics))
        else:
            _failed(row, exc)
    except Exception as exc:  # a failed trial is a result, not the end of the sweep
        _failed(row, exc)
    finally:
        close = getattr(on_epoch, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # tidying up must not turn a result into an error
                pass
    return row


def _measured(row: dict, metrics: dict) -> None:
    """Copy a trial's ``METRICS`` from the metrics it returned into its row."""
    for name in METRICS:
        value = metrics[name]
        row[name] = None if value is None else float(value)


def _failed(row: dict, exc: BaseException) -> None:
    """Make ``row`` the error row of ``exc``, raised by its trial."""
    row.update({name: None for name in METRICS})
    row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    row["traceback"] = traceback.format_exc(limit=-4)


def _divergence_note(metrics: dict) -> str:
    """The error column of a diverged trial: where its loss stopped being finite, and what it kept."""
    where = metrics["diverged"]
    last = where.get("last_finite_loss")
    note = f"loss became {where.get('loss') or 'non-finite'} at iteration {where.get('iteration')}"
    note += "" if last is None else f" (last finite loss {last:.4g})"
    kept = "its val_acc is that of its best parameters" if metrics.get("val_acc") is not None else "nothing was kept"
    return f"{note}; {kept}"


def submit(client, trial, config, sweep_id, index, retries, run_dir, on_epoch=None):
    """Submit one trial to ``client``; return its future."""
    return client.submit(
        execute, trial, config, sweep_id, index, run_dir, on_epoch,
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
        died = ", ".join(starts[:-1] if row["status"] in ("ok", "pruned", "diverged") else starts)
        bar.note(f"trial {index}: its worker died ({died}); run {len(starts)} times, now {row['status']}")
    return row, max(len(starts), 1)
