"""Backends by name: the functions of anynet's public API over the backend objects of ``anynet.backends``.

``backend=`` and ``device=`` arguments, ``set_backend``, ``$ANYNET_BACKEND``
and ``available_backends()`` are anynet's public API; each backend is one
object (``anynet.backends.get(name, device)``) that holds what the Array API
standard leaves out. This module keeps the by-name helpers that models,
scripts and tests call.
"""

from __future__ import annotations

from . import backends as _backends
from .backends import (
    BACKENDS,
    DTYPES,
    BackendUnavailableError,
    available_backends,
    dtype_name,
    get_backend,
    name_of,
    set_backend,
    to_numpy,
)
from .backends import base as _base
from .backends.numpy import blas_idles_briefly, keep_freed_memory, limit_threads, map_on_threads, set_threads, threads

__all__ = [
    "BACKENDS", "DTYPES", "BackendUnavailableError", "Generator", "available_backends", "blas_idles_briefly",
    "block_map", "check_backend_name", "dtype_name", "dtype_of", "get_backend", "keep_freed_memory",
    "limit_threads", "map_on_threads", "name_of", "namespace", "on_gpu", "resolve_device", "set_backend",
    "set_threads", "take_rows", "threads", "to_device", "to_numpy",
]

check_backend_name = _backends.check_name


def namespace(name: str | None = None):
    """Return the Array API namespace of backend ``name`` (default: ``get_backend()``)."""
    return _backends.get(name).xp


def resolve_device(name: str, device=None):
    """Return the device object of backend ``name`` that ``device`` names (None: the backend's default)."""
    return _backends.get(name, device).device


def on_gpu(name: str, device) -> bool:
    """Whether backend ``name`` computes on a GPU on ``device``."""
    return name is not None and _backends.get(name, device).on_gpu


def dtype_of(xp, dtype):
    """Return the floating dtype of namespace ``xp`` for ``dtype`` (a name or a NumPy dtype)."""
    return getattr(xp, dtype_name(dtype))


def take_rows(x, indices):
    """``take(x, indices, axis=0)`` for non-negative ``indices``, as the backend of ``x`` does it fastest."""
    return _backends.of(x).take_rows(x, indices)


def block_map(name):
    """A ``map(f, items) -> list`` running the calls on threads, or None where threads cannot pay (see blocks).

    ``name`` is a backend's name or its object.
    """
    if name is None:
        return None
    cls = type(name) if isinstance(name, _backends.Backend) else _backends.backend_class(name)
    if cls.block_map is _backends.Backend.block_map:
        return None  # a library without threaded updates (cupy, torch, jax), installed here or not
    return _backends.get(name).block_map()


def to_device(x, xp, device, dtype=None):
    """Return ``x`` as an array of namespace ``xp`` on ``device`` (no copy when it is already there)."""
    return _backends.get(_name_of_namespace(xp), device).to_device(x, dtype)


def _name_of_namespace(xp) -> str:
    for name in BACKENDS:
        cls = _backends.backend_class(name)
        if xp.__name__ == cls.namespace_module:
            return name
    raise TypeError(f"no anynet backend has the namespace {xp.__name__}")


class Generator(_base.Generator):
    """A seeded random generator producing arrays of one backend on one device.

    Parameters
    ----------
    seed : None, int or sequence of int
        The same seed gives the same numbers run after run.
    backend : str, optional
        A name in ``BACKENDS``; default ``get_backend()``, or the backend of ``like``.
    device : optional
        A device of that backend.
    like : array, optional
        Take backend and device from this array.
    """

    def __init__(self, seed=None, backend=None, device=None, *, like=None):
        if like is not None:
            obj = _backends.of(like)
        elif isinstance(backend, _backends.Backend):
            obj = backend
        else:
            obj = _backends.get(backend, device)
        super().__init__(obj, seed)
