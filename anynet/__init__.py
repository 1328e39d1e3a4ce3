"""anynet: CS231n-style neural networks written once against the Python Array API standard.

The same layers, models, optimizers and Solver run on NumPy, CuPy, PyTorch
and array-api-strict arrays; the backend is chosen at run time.

The names below load their module on first use: ``import anynet`` alone
loads no array library, so the ``anynet`` command can set up its process
before NumPy starts (``anynet.cli.prepare_process``).
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
    "BACKENDS": "backend",
    "BackendUnavailableError": "backend",
    "Generator": "backend",
    "available_backends": "backend",
    "get_backend": "backend",
    "set_backend": "backend",
    "CheckpointError": "checkpoint",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "FullyConnectedNet": "models",
    "TwoLayerNet": "models",
    "Solver": "solver",
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
    from .backend import (
        BACKENDS,
        BackendUnavailableError,
        Generator,
        available_backends,
        get_backend,
        set_backend,
    )
    from .checkpoint import CheckpointError, load_model, save_model
    from .models import FullyConnectedNet, TwoLayerNet
    from .solver import Solver


def __getattr__(name):
    """Load a public name (or a submodule, as ``anynet.backend``) on first use."""
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
