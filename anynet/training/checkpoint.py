"""Checkpoints: one ``.npz`` file (never a pickle), written atomically.

A checkpoint holds the model (class, constructor config, parameters, batch
normalization statistics), the Solver's optimizer state, position, learning
rates, histories and seed, and the caller's metadata as JSON. It is written to
a temporary file in the same folder, flushed to disk and renamed over the old
one, so a crash mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .. import backends
from ..files import write_atomic
from ..models import MODELS
from .options import KEEPS

FORMAT = "anynet-checkpoint-1"


class CheckpointError(OSError):
    """A checkpoint could not be written or read."""


def save_npz(path, arrays, meta):
    """Write ``arrays`` (name -> array of any backend) and JSON ``meta`` to ``path`` atomically.

    Raises
    ------
    CheckpointError
        If the file cannot be written (disk full, no permission...); the file
        already at ``path``, if any, is left untouched.
    """
    path = Path(path)
    host = {name: backends.to_numpy(a) for name, a in arrays.items()}
    host["__meta__"] = np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode(), dtype=np.uint8)
    try:
        write_atomic(path, lambda f: np.savez(f, **host))
    except OSError as exc:
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; any previous checkpoint there is intact"
        ) from exc


def describe_file(path):
    """What ``path`` looks like, in a few words, for messages about a file that is not a checkpoint."""
    path = Path(path)
    if path.is_dir():
        return "a folder"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not head:
        return "empty"
    if head.startswith(b"PK"):
        return "a zip archive that is truncated or damaged" if not zipfile.is_zipfile(path) else "a zip archive"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file"
    if head[:1] == b"\x80":
        return "a pickle"
    return "neither a zip archive nor a NumPy file"


def load_npz(path):
    """Read a checkpoint written by ``save_npz``; return ``(arrays, meta)`` with NumPy arrays.

    Raises
    ------
    CheckpointError
        If ``path`` does not exist or is not an anynet checkpoint; the
        message names the file and says what it is instead (a folder, a JSON
        file, a truncated archive, a ``.npz`` another program wrote...).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        inside = path / "checkpoint.npz"
        hint = f"; did you mean {inside}?" if inside.is_file() else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{hint}")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):  # a .npy file gives its array
            raise CheckpointError(f"{path} is not an anynet checkpoint: it is {describe_file(path)}")
        with z:
            if "__meta__" not in z.files:
                raise CheckpointError(f"{path} is a .npz file that anynet did not write (no __meta__ entry)")
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        what = describe_file(path)
        detail = f" ({exc})" if what == "a zip archive" else ""  # inside a whole archive: say what failed
        raise CheckpointError(f"{path} is not a readable anynet checkpoint: it is {what}{detail}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {path} has format {found!r}; expected {FORMAT!r}")
    return arrays, meta


def is_training_checkpoint(meta):
    """Whether checkpoint metadata ``meta`` (from ``load_npz``) holds a Solver's state, not a model alone."""
    return isinstance(meta.get("solver"), dict) and isinstance(meta.get("optim"), dict)


def _group(arrays, prefix):
    """The arrays named ``prefix/<rest>``, keyed by ``<rest>``."""
    n = len(prefix) + 1
    return {name[n:]: a for name, a in arrays.items() if name.startswith(prefix + "/")}


def _bn_arrays(prefix, bn_stats):
    """Flatten a list of running-statistics dicts into named arrays."""
    return {
        f"{prefix}/{i}/{k}": v
        for i, stats in enumerate(bn_stats)
        for k, v in stats.items()
        if k.startswith("running_")
    }


def _model_state(model):
    """Class name, constructor config, parameter and statistics arrays of ``model``."""
    arrays = {f"params/{k}": v for k, v in model.params.items()}
    arrays.update(_bn_arrays("bn", getattr(model, "bn_params", [])))
    meta = {"model": type(model).__name__, "model_config": getattr(model, "config", {})}
    return arrays, meta


def save_model(model, path, metadata=None):
    """Save ``model`` alone (parameters and statistics) as a checkpoint at ``path``."""
    arrays, meta = _model_state(model)
    save_npz(path, arrays, {**meta, "metadata": metadata or {}})


def save_solver(solver, path):
    """Save the model and the whole training state of ``solver`` at ``path``."""
    arrays, meta = _model_state(solver.model)
    arrays.update({f"best/{k}": v for k, v in solver.best_params.items()})
    arrays.update(_bn_arrays("best_bn", solver.best_bn_stats))
    optim_scalars = {}
    for p, config in solver.optim_configs.items():
        optim_scalars[p] = {}
        for k, v in config.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                optim_scalars[p][k] = v
            else:
                arrays[f"optim/{p}/{k}"] = v
    arrays["loss_history"] = np.asarray(solver.loss_history, dtype=np.float64)
    if solver._drawn == (solver.seed, solver.epoch) and solver._rng_state is not None:
        # Written inside an epoch: the random state the rest of the epoch draws from, so that a resumed run on
        # the same backend goes on with the very same dropout masks and augmentations.
        host = solver.backend.rng_state_to_host(solver._rng_state)
        arrays.update({f"rng/{k}": v for k, v in host.items()})
        meta["rng"] = {"backend": solver.backend.name, "epoch": solver.epoch}
    meta.update(
        solver={
            "epoch": solver.epoch,
            "t": solver.t,
            "seed": solver.seed,
            "best_val_acc": solver.best_val_acc,
            "train_acc_history": solver.train_acc_history,
            "val_acc_history": solver.val_acc_history,
            "update_rule": getattr(solver.update_rule, "__name__", repr(solver.update_rule)),
            "batch_size": solver.batch_size,
            "lr_decay": solver.lr_decay,
            "num_iterations": solver.num_iterations,
        },
        optim=optim_scalars,
        metadata=solver.metadata,
    )
    save_npz(path, arrays, meta)


def _restore_bn(bn_params, arrays, prefix, xp, device):
    """Put saved running statistics back into ``bn_params``."""
    for name, a in _group(arrays, prefix).items():
        i, key = name.split("/", 1)
        bn_params[int(i)][key] = xp.asarray(a, device=device)


def load_model(path, backend=None, device=None, params="best"):
    """Rebuild the model saved in checkpoint ``path``, ready to predict.

    From a training checkpoint the model gets the parameters ``params``
    names: by default the best the Solver had seen when it saved (those a
    finished ``train`` with ``keep="best"`` leaves in the model). From a
    checkpoint written by ``save_model`` it gets the one set saved there.

    Parameters
    ----------
    path : str or path
    backend, device : optional
        Where to put the model; default ``anynet.get_backend()``.
    params : "best" or "last"
        From a training checkpoint, the parameters of its best validation
        check, or those of its last step (a Solver's ``keep``).
    """
    if params not in KEEPS:
        raise ValueError(f"params must be one of {', '.join(KEEPS)}; got {params!r}")
    arrays, meta = load_npz(path)
    cls = MODELS.get(meta.get("model"))
    if cls is None:
        raise CheckpointError(f"checkpoint {path} holds an unknown model {meta.get('model')!r}")
    if params == "last" and not is_training_checkpoint(meta):
        raise CheckpointError(
            f"{path} is a saved model: it holds one set of parameters, those its run kept; the last step's "
            "are in a training checkpoint (anynet train's checkpoint.npz)"
        )
    model = cls(**meta["model_config"], backend=backend, device=device)
    best = _group(arrays, "best") if params == "best" else {}
    _set_params(model, best or _group(arrays, "params"), path)
    _restore_bn(model.bn_params, arrays, "best_bn" if best else "bn", model.xp, model.device)
    return model


def _set_params(model, params, path):
    """Replace the model's parameters by ``params``, checking names and shapes."""
    if set(params) != set(model.params):
        raise CheckpointError(
            f"checkpoint {path} holds parameters {sorted(params)}; the model has {sorted(model.params)}"
        )
    for k, a in params.items():
        if tuple(a.shape) != tuple(model.params[k].shape):
            raise CheckpointError(
                f"checkpoint {path}: parameter {k} has shape {a.shape}; the model needs {tuple(model.params[k].shape)}"
            )
    model.params = {
        k: model.xp.asarray(params[k], dtype=model.params[k].dtype, device=model.device) for k in model.params
    }


def restore_solver(solver, path):
    """Restore ``solver`` (and its model) to the state saved at ``path``."""
    arrays, meta = load_npz(path)
    if not is_training_checkpoint(meta):
        raise CheckpointError(
            f"{path} is a saved model, not a training checkpoint: it holds no optimizer state or position "
            "to resume from (anynet train writes those to checkpoint.npz)"
        )
    model = solver.model
    if meta.get("model") != type(model).__name__ or meta.get("model_config") != getattr(model, "config", {}):
        raise CheckpointError(
            f"checkpoint {path} was saved from {meta.get('model')} {meta.get('model_config')}; "
            f"this solver trains {type(model).__name__} {getattr(model, 'config', {})}"
        )
    xp, device = model.xp, model.device
    _set_params(model, _group(arrays, "params"), path)
    _restore_bn(model.bn_params, arrays, "bn", xp, device)
    state = meta["solver"]
    solver.epoch, solver.t, solver.seed = state["epoch"], state["t"], state["seed"]
    solver._drawn = None  # the epoch's minibatch order is drawn again from (seed, epoch)
    solver._count = None  # the schedule's step count starts again from solver.t
    rng = meta.get("rng")
    if isinstance(rng, dict) and rng.get("backend") == solver.backend.name and rng.get("epoch") == solver.epoch:
        # Another backend's generator cannot take this state: there the epoch's random state starts over.
        solver._start_epoch(solver.epoch)
        solver._rng_state = solver.backend.rng_state_from_host(_group(arrays, "rng"))
    solver.best_val_acc = state["best_val_acc"]
    solver.train_acc_history = list(state["train_acc_history"])
    solver.val_acc_history = list(state["val_acc_history"])
    solver.loss_history = arrays["loss_history"].tolist()
    solver._pending_losses = []
    solver.best_params = {k: xp.asarray(a, device=device) for k, a in _group(arrays, "best").items()}
    solver.best_bn_stats = [dict() for _ in model.bn_params]
    for name, a in _group(arrays, "best_bn").items():
        i, key = name.split("/", 1)
        solver.best_bn_stats[int(i)][key] = xp.asarray(a, device=device)
    saved = _group(arrays, "optim")
    configs = {}
    for p, scalars in meta["optim"].items():
        configs[p] = dict(scalars)
        for name, a in saved.items():
            owner, key = name.split("/", 1)
            if owner == p:
                configs[p][key] = xp.asarray(a, device=device)
    solver.optim_configs = configs
    solver.metadata = meta.get("metadata", {})
