"""anynet: CS231n-style neural networks written once against the Python Array API standard.

The same layers, models, optimizers and Solver run on NumPy, CuPy, PyTorch,
JAX and array-api-strict arrays; the backend is chosen at run time.

The packages are layers, each importing only those below it: ``backends``
(the array libraries), ``nn`` (standard-only compute), ``models``,
``training``, ``data`` (and pictures), ``app`` (the command). The course's
module names (``anynet.layers``, ``anynet.solver``, ...) point into them.

The names below load their module on first use: ``import anynet`` alone
loads no array library, so the ``anynet`` command can set up its process
before NumPy starts (``anynet.app.process.prepare_process``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


def _installed_version() -> str:
    """The version of the installed distribution (pyproject.toml's, the one source); "0+unknown" without one."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anynet")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _installed_version()

# public name -> the module that defines it
_HOME = {
    "BACKENDS": "backends",
    "BackendUnavailableError": "backends",
    "Generator": "backends",
    "available_backends": "backends",
    "get_backend": "backends",
    "set_backend": "backends",
    "CheckpointError": "training.checkpoint",
    "load_model": "training.checkpoint",
    "save_model": "training.checkpoint",
    "FullyConnectedNet": "models",
    "TwoLayerNet": "models",
    "Solver": "training.solver",
}

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "CheckpointError",
    "FullyConnectedNet",
    "Generator",
    "Solver",
    "TwoLayerNet",
    "available_backends",
    "get_backend",
    "load_model",
    "save_model",
    "set_backend",
]

if TYPE_CHECKING:
    from .backends import (
        BACKENDS,
        BackendUnavailableError,
        Generator,
        available_backends,
        get_backend,
        set_backend,
    )
    from .models import FullyConnectedNet, TwoLayerNet
    from .training.checkpoint import CheckpointError, load_model, save_model
    from .training.solver import Solver


def __getattr__(name):
    """Load a public name (or a submodule, as ``anynet.backends``) on first use."""
    home = _HOME.get(name)
    if home is None:
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_HOME})
