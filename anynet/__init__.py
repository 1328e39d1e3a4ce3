"""anynet: CS231n-style neural networks written once against the Python Array API standard.

The same layers, models, optimizers and Solver run on NumPy, CuPy, PyTorch
and array-api-strict arrays; the backend is chosen at run time.
"""

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

__version__ = "0.1.0"

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
