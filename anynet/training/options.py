"""The Solver's options: their defaults, and the checks each gets before training."""

from __future__ import annotations

import os
import secrets

from .. import backends
from ..nn import checks

DEFAULTS = {
    "update_rule": "sgd",
    "optim_config": None,
    "lr_decay": 1.0,
    "batch_size": 100,
    "num_epochs": 10,
    "num_iterations": None,
    "num_train_samples": 1000,
    "num_val_samples": None,
    "checkpoint_name": None,
    "print_every": 10,
    "verbose": True,
    "seed": None,
    "callback": None,
    "compile": "auto",
    "augment": None,
    "lr_schedule": None,
    "warmup_iterations": 0,
    "flip_test": False,
    "translate_test": False,
    "keep": "best",
}
SCHEDULES = ("linear", "cosine")
KEEPS = ("best", "last")
# The options a Solver keeps as attributes of the same name, as they are after ``checked``.
KEPT = ("lr_decay", "batch_size", "num_epochs", "num_iterations", "num_train_samples", "num_val_samples",
        "checkpoint_name", "print_every", "verbose", "seed", "callback", "augment", "lr_schedule",
        "warmup_iterations", "flip_test", "translate_test", "keep")


def checked(kwargs):
    """The Solver's keyword arguments with the defaults filled in and each checked (``ValueError`` or ``TypeError``
    naming the argument); ``seed`` None becomes a drawn seed, ``augment`` its ``(pad, flip)`` or None."""
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown Solver argument(s) {', '.join(unknown)}; expected some of {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **kwargs}
    opts["lr_decay"] = checks.real("lr_decay", opts["lr_decay"], 0, 1, low_open=True, high_open=False)
    for name in ("batch_size", "num_epochs", "print_every"):
        opts[name] = checks.integer(name, opts[name])
    for name in ("num_iterations", "num_train_samples", "num_val_samples"):
        opts[name] = checks.integer(name, opts[name], optional=True)
    if opts["checkpoint_name"] is not None and not isinstance(opts["checkpoint_name"], (str, os.PathLike)):
        raise TypeError(f"checkpoint_name must be a path or None; got {opts['checkpoint_name']!r}")
    opts["verbose"] = bool(opts["verbose"])
    seed = checks.seed(opts["seed"])
    opts["seed"] = secrets.randbits(32) if seed is None else seed
    if opts["callback"] is not None and not callable(opts["callback"]):
        raise TypeError(f"callback must be callable(solver, event) or None; got {opts['callback']!r}")
    opts["augment"] = _augment(opts["augment"])
    if opts["lr_schedule"] not in (None, *SCHEDULES):
        raise ValueError(f"lr_schedule must be None or one of {', '.join(SCHEDULES)}; got {opts['lr_schedule']!r}")
    opts["warmup_iterations"] = checks.integer("warmup_iterations", opts["warmup_iterations"], low=0)
    for name in ("flip_test", "translate_test"):
        if not isinstance(opts[name], bool):
            raise TypeError(f"{name} must be True or False; got {opts[name]!r}")
    if opts["keep"] not in KEEPS:
        raise ValueError(f"keep must be one of {', '.join(KEEPS)}; got {opts['keep']!r}")
    if not isinstance(opts["optim_config"], (dict, type(None))):
        raise TypeError(f"optim_config must be a dict or None; got {type(opts['optim_config']).__name__}")
    return opts


def _augment(augment):
    """The ``augment`` option as ``(pad, flip)``, or None: True is torchvision's pad 4 and flips."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return (4, True)
    if not isinstance(augment, dict) or set(augment) - {"pad", "flip"}:
        raise TypeError(f'augment must be None, True or a dict with "pad" and "flip"; got {augment!r}')
    flip = augment.get("flip", True)
    if not isinstance(flip, bool):
        raise TypeError(f'augment["flip"] must be True or False; got {flip!r}')
    return (checks.integer('augment["pad"]', augment.get("pad", 4), low=0), flip)


def backend_of(model):
    """The backend object a model computes on: its ``backend``, or that of its first parameter."""
    backend = getattr(model, "backend", None)
    if isinstance(backend, backends.Backend):
        return backend
    if isinstance(backend, str):
        return backends.get(backend, getattr(model, "device", None))
    first = next(iter(model.params.values()), None)
    return backends.of(first) if first is not None else backends.get()
