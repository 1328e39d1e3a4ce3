"""Backends: one object per array library and device, the only modules that know libraries by name.

Everything else in anynet takes its array namespace from its inputs and uses
only the Array API standard. ``get(name, device)`` gives the backend object
(a ``base.Backend``) that holds what the standard leaves out: devices, moves
between host and device, synchronization, random generators, minibatch
gathers, and each library's fast paths (update layouts, compiled steps).
``backend=`` arguments everywhere take a name or such an object.
"""

from __future__ import annotations

# The NumPy backend's module reads OpenBLAS's environment as NumPy will find it, so it is imported with the
# package (it loads NumPy only when first used).
from . import numpy  # noqa: F401
from .base import DTYPES, Backend, BackendUnavailableError, OnBackend, dtype_name
from .random import Generator
from .registry import (
    BACKENDS,
    available_backends,
    backend_class,
    bfloat16_of,
    check_name,
    fast_path,
    fast_paths,
    get,
    get_backend,
    is_eager,
    name_of,
    namespace,
    of,
    set_backend,
    to_numpy,
    use_fast_paths,
    why_unavailable,
)
from .tracing import compiled_call, tracing

__all__ = [
    "BACKENDS", "DTYPES", "Backend", "BackendUnavailableError", "Generator", "OnBackend", "available_backends",
    "backend_class", "bfloat16_of", "check_name", "compiled_call", "dtype_name", "fast_path", "fast_paths", "get",
    "get_backend", "is_eager", "name_of", "namespace", "of", "set_backend", "to_numpy", "tracing", "use_fast_paths",
    "why_unavailable",
]
