"""Backends by name: which libraries there are, the one object per library and device, and what an array is on.

``get(name, device)`` gives the ``Backend`` of a library on a device (one
object per pair, made on first use), ``of(x)`` the backend an array lives on.
The library modules are imported only when first asked for, so that
``import anynet`` loads no array library.
"""

from __future__ import annotations

import importlib
import os

import array_api_compat

from .base import Backend, BackendUnavailableError

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict", "jax")
# name -> "module:class" of this package, imported on first use
_CLASSES = {
    "numpy": "numpy:NumpyBackend",
    "cupy": "cupy:CupyBackend",
    "torch": "torch:TorchBackend",
    "array_api_strict": "strict:StrictBackend",
    "jax": "jax:JaxBackend",
}
_default: str | None = None
_instances: dict = {}  # (name, device) -> its Backend
_namespaces: dict = {}  # array type -> its Array API namespace
_classes: dict = {}  # an Array API namespace's name -> the Backend subclass of its library (str keys: traceable)
_fast = os.environ.get("ANYNET_STANDARD_LAYERS", "") in ("", "0")
_eager_types: set = set()  # the array types of the backends made so far, as their libraries run them eagerly


def check_name(name) -> str:
    """Return ``name`` if it names a backend, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def backend_class(name: str) -> type[Backend]:
    """The ``Backend`` subclass of backend ``name``."""
    module, _, cls = _CLASSES[check_name(name)].partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), cls)


def why_unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run here, with the command that installs what is missing; None when it can."""
    return backend_class(name).why_unavailable()


def available_backends() -> list[str]:
    """List the backends that can run on this machine, in ``BACKENDS`` order."""
    return [name for name in BACKENDS if why_unavailable(name) is None]


def get_backend() -> str:
    """Return the default backend's name: ``set_backend``, else ``$ANYNET_BACKEND``, else numpy."""
    if _default is not None:
        return _default
    name = os.environ.get("ANYNET_BACKEND", "numpy")
    if name not in BACKENDS:
        raise ValueError(f"ANYNET_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Make ``name`` the default backend for models built from now on.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``BACKENDS``.
    BackendUnavailableError
        If the backend cannot run here; the message says what to install.
    """
    global _default
    get(name)
    _default = name


def get(name: str | Backend | None = None, device=None) -> Backend:
    """The backend object of library ``name`` (default ``get_backend()``) on ``device``.

    Without ``device``, the default backend computes on ``$ANYNET_DEVICE`` when
    that is set, every backend else on its own default device.

    A backend object given as ``name`` is returned as it is.

    Raises
    ------
    ValueError
        If ``name`` is not a backend, or ``device`` not one of its devices.
    BackendUnavailableError
        If the backend cannot run here.
    """
    if isinstance(name, Backend) and device is None:
        return name
    if isinstance(name, Backend):
        name = name.name
    name = get_backend() if name is None else check_name(name)
    from_environment = device is None and name == get_backend() and bool(os.environ.get("ANYNET_DEVICE"))
    if from_environment:
        device = os.environ["ANYNET_DEVICE"]  # the default device of the default backend
    if isinstance(device, Backend):
        device = device.device
    try:
        key = (name, device)
        hash(key)
    except TypeError:
        key = (name, str(device))
    backend = _instances.get(key)
    if backend is None:
        cls = backend_class(name)
        why = cls.why_unavailable()
        if why is not None:
            raise BackendUnavailableError(why)
        try:
            backend = cls(device)
        except ValueError as exc:
            if from_environment:
                raise ValueError(f"ANYNET_DEVICE={device!r} is not a device of the {name} backend") from exc
            raise
        # One object per device however it was named ("cuda" and "cuda:0"), so that models compare backends.
        backend = _instances.setdefault((name, str(backend.device)), backend)
        _instances[key] = backend
        # Known before any compiled step asks: a trace would otherwise go through array-api-compat's lookup.
        _namespaces.setdefault(backend._array_type, backend.xp)
        _eager_types.add(backend._array_type)
        _classes.setdefault(backend.xp.__name__, type(backend))
    return backend


def is_eager(x) -> bool:
    """Whether ``x`` is an array of a backend's library as it runs eagerly, not a compiler's stand-in for one
    (a JAX tracer, a PyTorch fake tensor): what a cache may keep."""
    return type(x) in _eager_types


def use_fast_paths(on: bool) -> None:
    """Let layers use their library's fast paths (the default), or force anynet's standard-only code everywhere.

    ``$ANYNET_STANDARD_LAYERS=1`` in the environment starts a process with them off. The standard path is the
    reference: every fast path is tested against it.
    """
    global _fast
    if not isinstance(on, bool):
        raise TypeError(f"on must be True or False; got {on!r}")
    _fast = on


def fast_paths() -> bool:
    """Whether layers use their library's fast paths (``use_fast_paths``)."""
    return _fast


def bfloat16_of(x):
    """The bfloat16 dtype of array ``x``'s library, or None (a capability outside the standard)."""
    cls = _class_of(namespace(x))
    return None if cls is None else cls.bfloat16_of(namespace(x))


def fast_path(x, name):
    """The fast path ``name`` (a ``Backend`` attribute such as ``"conv2d_forward"``) of array ``x``'s library, or
    None: none given, or ``use_fast_paths(False)``. Found from ``x``'s namespace, so traced arrays find it too."""
    if not _fast:
        return None
    cls = _class_of(namespace(x))
    return None if cls is None else getattr(cls, name)


def _class_of(xp):
    """The ``Backend`` subclass of namespace ``xp``'s library (None for a library anynet has no backend of)."""
    name = xp.__name__
    cls = _classes.get(name)
    if cls is None and name not in _classes:  # a library no backend object was made for yet
        cls = next((backend_class(n) for n in BACKENDS if backend_class(n).namespace_module == name), None)
        _classes[name] = cls
    return cls


def name_of(x) -> str:
    """Return the name of the backend that array ``x`` belongs to."""
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_cupy_array(x):
        return "cupy"
    if array_api_compat.is_jax_array(x):
        return "jax"
    try:
        if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
            return "array_api_strict"
    except TypeError:
        pass
    raise TypeError(f"expected an array of one of {', '.join(BACKENDS)}; got {type(x).__name__}")


def of(x) -> Backend:
    """The backend object that array ``x`` lives on (its library and device)."""
    return get(name_of(x), array_api_compat.device(x))


def to_numpy(x):
    """Copy array ``x`` of any backend (or host data) to a NumPy array on the host."""
    import numpy as np

    if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return np.asarray(x)
    return of(x).to_numpy(x)


def namespace(*arrays):
    """The Array API namespace of ``arrays`` (``array_api_compat.array_namespace``), remembered by array type.

    Compute code asks this at every layer call: array-api-compat's own lookup
    costs microseconds of Python each time and, traced by ``torch.compile``,
    a trip through caches that PyTorch's compiler warns about. One library's
    arrays always have the same namespace, so a dict keyed by type answers.
    """
    kind = type(arrays[0])
    xp = _namespaces.get(kind)
    if xp is not None and all(type(a) is kind for a in arrays[1:]):
        return xp
    xp = array_api_compat.array_namespace(*arrays)
    if all(type(a) is kind for a in arrays[1:]):
        _namespaces[kind] = xp
    return xp
