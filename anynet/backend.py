"""Deprecated: the functions of backends by name. Use the objects of ``anynet.backends`` instead.

``anynet.backends.get(name, device)`` gives the backend object that these
functions looked up; the public API (``backend=``, ``set_backend``,
``available_backends``, ``$ANYNET_BACKEND``) is unchanged. This module stays
for scripts written against it and warns when imported.
"""

from __future__ import annotations

import warnings

from . import backends as _backends
from .backends import (  # noqa: F401 - re-exported
    BACKENDS,
    DTYPES,
    BackendUnavailableError,
    Generator,
    available_backends,
    dtype_name,
    get_backend,
    name_of,
    set_backend,
    to_numpy,
)

warnings.warn("anynet.backend is deprecated: use the backend objects of anynet.backends "
              "(anynet.backends.get(name, device))", DeprecationWarning, stacklevel=2)

check_backend_name = _backends.check_name


def namespace(name=None):
    """The Array API namespace of backend ``name``: ``anynet.backends.get(name).xp``."""
    return _backends.get(name).xp


def resolve_device(name, device=None):
    """The device object of backend ``name``: ``anynet.backends.get(name, device).device``."""
    return _backends.get(name, device).device


def on_gpu(name, device):
    """``anynet.backends.get(name, device).on_gpu``."""
    return name is not None and _backends.get(name, device).on_gpu


def take_rows(x, indices):
    """``anynet.backends.of(x).take_rows(x, indices)``."""
    return _backends.of(x).take_rows(x, indices)


def to_device(x, xp, device, dtype=None):
    """``x`` on ``device`` of the backend whose namespace is ``xp``: ``Backend.to_device``."""
    for name in BACKENDS:
        if _backends.backend_class(name).namespace_module == xp.__name__:
            return _backends.get(name, device).to_device(x, dtype)
    raise TypeError(f"no anynet backend has the namespace {xp.__name__}")
