"""Backends: the one module that knows them by name.

Everything else in anynet takes its array namespace from its inputs
(``array_api_compat.array_namespace``). This module turns a backend *name*
into a namespace and a device, moves arrays between host and device, and
owns the random generators, since randomness is not in the Array API
standard.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import array_api_compat
import numpy as np

# OpenBLAS reads this when NumPy loads; its value now is the best guess of what it read (see blas_idles_briefly).
_OPENBLAS_THREAD_TIMEOUT = os.environ.get("OPENBLAS_THREAD_TIMEOUT")

BACKENDS = ("numpy", "cupy", "torch", "array_api_strict")
DTYPES = ("float32", "float64")

_INSTALL = {
    "numpy": 'pip install numpy',
    "cupy": 'pip install "anynet[cuda12]" (or "anynet[cuda13]", matching your CUDA driver)',
    "torch": 'pip install "anynet[torch]"',
    "array_api_strict": 'pip install "anynet[strict]"',
}
_MODULES = {
    "numpy": "array_api_compat.numpy",
    "cupy": "array_api_compat.cupy",
    "torch": "array_api_compat.torch",
    "array_api_strict": "array_api_strict",
}
_default: str | None = None


class BackendUnavailableError(RuntimeError):
    """A known backend that cannot run on this machine."""


def check_backend_name(name: str) -> str:
    """Return ``name`` if it names a backend, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(BACKENDS)}; got {name!r}"
        )
    return name


def _why_unavailable(name: str) -> str | None:
    """Return why backend ``name`` cannot run here, or None when it can."""
    package = {"array_api_strict": "array_api_strict"}.get(name, name)
    try:
        module = importlib.import_module(package)
    except ImportError:
        return f"the {name} backend needs the package {package!r}: {_INSTALL[name]}"
    if name == "cupy":
        try:
            count = module.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CuPy raises its own CUDA errors without a driver
            return f"the cupy backend needs an NVIDIA GPU and driver ({exc})"
        if count == 0:
            return "the cupy backend needs an NVIDIA GPU; none is visible"
    return None


def available_backends() -> list[str]:
    """List the backends that can run on this machine, in ``BACKENDS`` order."""
    return [name for name in BACKENDS if _why_unavailable(name) is None]


def get_backend() -> str:
    """Return the default backend: ``set_backend``, else ``$ANYNET_BACKEND``, else numpy."""
    if _default is not None:
        return _default
    name = os.environ.get("ANYNET_BACKEND", "numpy")
    if name not in BACKENDS:
        raise ValueError(
            f"ANYNET_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}"
        )
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
    namespace(name)
    _default = name


def namespace(name: str | None = None):
    """Return the Array API namespace of backend ``name`` (default: ``get_backend()``)."""
    name = get_backend() if name is None else check_backend_name(name)
    why = _why_unavailable(name)
    if why is not None:
        raise BackendUnavailableError(why)
    return importlib.import_module(_MODULES[name])


def name_of(x) -> str:
    """Return the name of the backend that array ``x`` belongs to."""
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_cupy_array(x):
        return "cupy"
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        return "array_api_strict"
    raise TypeError(f"expected an array of one of {', '.join(BACKENDS)}; got {type(x).__name__}")


def resolve_device(name: str, device=None):
    """Return the device object of backend ``name`` that ``device`` names.

    ``None`` picks the backend's default: the current CUDA device for cupy,
    ``"cuda"`` for torch when a GPU is visible (else ``"cpu"``), the CPU for
    numpy and array_api_strict. Torch takes strings such as ``"cuda:1"``, CuPy
    an integer device id.
    """
    xp = namespace(name)
    try:
        if name == "torch":
            import torch

            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            device = torch.device(device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise BackendUnavailableError(f"torch device {str(device)!r} needs a CUDA GPU; none is visible")
            if device.type == "cuda" and device.index is None:
                # Tensors report "cuda:0", never "cuda": name the index so device checks compare equal.
                device = torch.device("cuda", torch.cuda.current_device())
            return device
        if name == "cupy":
            import cupy

            if device is None:
                return cupy.cuda.Device()
            if isinstance(device, str) and device.startswith("cuda"):
                device = device.partition(":")[2] or 0
            device = device if isinstance(device, cupy.cuda.Device) else cupy.cuda.Device(int(device))
            # CuPy accepts any id here and fails only at first use, with its own error.
            if not 0 <= device.id < cupy.cuda.runtime.getDeviceCount():
                raise ValueError
            return device
        if name == "numpy":
            if device not in (None, "cpu"):
                raise ValueError
            return "cpu"
        if device is None or device == "cpu":
            return xp.asarray(0).device
        return device if isinstance(device, xp.Device) else xp.Device(device)
    except BackendUnavailableError:
        raise
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"device {device!r} is not a device of the {name} backend") from exc


def on_gpu(name: str, device) -> bool:
    """Whether backend ``name`` computes on a GPU on ``device``.

    There each array operation costs a kernel launch, 10-30 us of host time
    whatever the array's size, so doing one operation on concatenated arrays
    beats doing it on each, even at the price of the concatenation; on a CPU
    the extra copy is what costs.
    """
    return name == "cupy" or (name == "torch" and getattr(device, "type", str(device).partition(":")[0]) == "cuda")


def dtype_of(xp, dtype: str):
    """Return the floating dtype of namespace ``xp`` named ``dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return getattr(xp, dtype)


def take_rows(x, indices):
    """``take(x, indices, axis=0)`` for non-negative ``indices``: one operation on every backend.

    array-api-compat's ``take`` for PyTorch first maps negative indices
    (``where(i < 0, i + n, i)``): three more operations, three more launches on
    a GPU, for minibatch indices that are never negative.
    """
    if array_api_compat.is_torch_array(x):
        import torch

        return torch.index_select(x, 0, indices)
    return array_api_compat.array_namespace(x, indices).take(x, indices, axis=0)


_threads: int | None = None  # set_threads(n); None: one per CPU this process may run on
_pool = None  # (threads, ThreadPoolExecutor) behind block_map


def set_threads(n: int | None) -> None:
    """Let anynet's own parallel work use at most ``n`` CPU threads (None: one per usable CPU).

    BLAS and PyTorch keep their own limits (threadpoolctl, ``torch.set_num_threads``).
    """
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None; got {n!r}")
    _threads = n


def limit_threads(n: int) -> str:
    """Limit every thread pool of this process to ``n`` threads: anynet's own, NumPy's BLAS and PyTorch's.

    PyTorch is limited only if it is loaded. Returns how BLAS was limited:
    through threadpoolctl, or (without it) only by the environment NumPy
    loaded with (``OPENBLAS_NUM_THREADS`` and the like).
    """
    set_threads(n)
    how = "environment (set before NumPy was imported)"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(n)
        how = "threadpoolctl"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return how


def threads() -> int:
    """CPU threads anynet's own parallel work may use (``set_threads``)."""
    if _threads is not None:
        return _threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def block_map(name: str):
    """A ``map(f, items) -> list`` that runs the calls on ``threads()`` threads, or None where that cannot pay.

    Only for backends whose array operations each run on one core and let go
    of the GIL (NumPy, and array-api-strict on top of it): PyTorch already
    spreads an operation over its own threads, and CuPy computes on a GPU.
    And only where NumPy's BLAS leaves the cores free between products
    (``blas_idles_briefly``).
    """
    if name not in ("numpy", "array_api_strict") or threads() < 2 or not blas_idles_briefly():
        return None
    return _map_on_threads


def blas_idles_briefly() -> bool:
    """Whether NumPy's BLAS threads stop spinning soon after a matrix product.

    OpenBLAS keeps its idle threads spinning for ``2**OPENBLAS_THREAD_TIMEOUT``
    cycles, ``2**28`` (about 0.1 s) unless that variable was set before NumPy
    loaded: a whole training step, on the very cores other threads would use
    (Adam in row blocks on two cores then took 4.5 ms instead of 2.2 ms).
    ``anynet.cli.prepare_process`` sets it for the processes anynet owns.
    Other BLAS libraries are not recognized: False.
    """
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
        timeout = int(_OPENBLAS_THREAD_TIMEOUT or 28)
    except (KeyError, TypeError, ValueError):
        return False
    return "openblas" in blas.lower() and timeout <= 16


def _map_on_threads(f, items):
    """``list(map(f, items))``: the first call on this thread, the others on the pool; waits for all."""
    global _pool
    from concurrent.futures import ThreadPoolExecutor, wait

    n = threads()
    if n < 2:
        return [f(item) for item in items]
    if _pool is None or _pool[0] != n:
        if _pool is not None:
            _pool[1].shutdown(wait=False)
        _pool = (n, ThreadPoolExecutor(n - 1, thread_name_prefix="anynet"))
    first, *rest = items
    futures = [_pool[1].submit(f, item) for item in rest]
    try:
        results = [f(first)]
    finally:
        wait(futures)  # never return, or raise, while another thread still writes into shared outputs
    return results + [future.result() for future in futures]


def _forget_pool():
    """In a forked child: the parent's pool threads do not exist there, and work handed to them would never run."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of returning them to the OS.

    NumPy's multi-megabyte temporaries (a step's activations, Adam's passes over
    a weight matrix) otherwise come back as fresh pages that fault in,
    zero-filled, at every training step: the FullyConnectedNet [512, 256] with
    Adam trains about 10 % faster on a CPU with it, for about 6 % more peak
    memory. Process-wide, so a library never calls it on its own: ``anynet
    train`` does, and ``anynet bench`` for every contestant (unless ``--default-malloc``).
    Returns whether the setting took (False off glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 28) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


def to_numpy(x) -> np.ndarray:
    """Copy array ``x`` of any backend to a NumPy array on the host."""
    if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return np.asarray(x)
    name = name_of(x)
    if name == "torch":
        return x.detach().cpu().numpy()
    if name == "cupy":
        return x.get()
    xp = array_api_compat.array_namespace(x)
    return np.from_dlpack(x.to_device(xp.asarray(0).device))


_ARRAY_TYPES: dict = {}


def _array_type(xp):
    """The array type of namespace ``xp``."""
    t = _ARRAY_TYPES.get(xp)
    if t is None:
        t = _ARRAY_TYPES[xp] = type(xp.empty(0))
    return t


def to_device(x, xp, device, dtype=None):
    """Return ``x`` as an array of namespace ``xp`` on ``device``.

    A no-op (no copy) when ``x`` is already there with that dtype; otherwise
    one transfer, through the host when ``x`` lives on another backend.
    """
    if type(x) is _array_type(xp) and x.device == device and (dtype is None or x.dtype == dtype):
        return x  # the common case, told in three attribute reads: a GPU step passes here a dozen times
    try:
        same = array_api_compat.array_namespace(x) is xp
    except TypeError:
        same = False
    if same:
        if array_api_compat.device(x) != device:
            x = array_api_compat.to_device(x, device)
        return x if dtype is None or x.dtype == dtype else xp.astype(x, dtype)
    host = to_numpy(x)
    if host.dtype == object:
        raise TypeError(f"expected a numeric array; got {type(x).__name__} of objects")
    return xp.asarray(host, dtype=dtype, device=device)


def _seed_words(seed) -> np.random.SeedSequence:
    """Return a SeedSequence for ``seed`` (None, an int, or a sequence of ints)."""
    if seed is not None and not isinstance(seed, (int, np.integer, Sequence)):
        raise TypeError(f"seed must be None, an int or a sequence of ints; got {seed!r}")
    return np.random.SeedSequence(seed)


class Generator:
    """A seeded random generator producing arrays of one backend on one device.

    Weights and permutations are drawn on the host with NumPy and moved once, so
    the same seed gives the same initial weights and the same minibatch order on
    every backend. Per-iteration randomness (``uniform``, used for dropout
    masks) is drawn on the device by the backend's own generator, so the hot
    loop never crosses to the host.

    Parameters
    ----------
    seed : None, int or sequence of int
        The same seed gives the same numbers run after run.
    backend : str, optional
        A name in ``BACKENDS``; default ``get_backend()``, or the backend of ``like``.
    device : optional
        A device of that backend, as in ``resolve_device``.
    like : array, optional
        Take backend and device from this array.
    """

    def __init__(self, seed=None, backend=None, device=None, *, like=None):
        if like is not None:
            backend, device = name_of(like), array_api_compat.device(like)
        self.backend = get_backend() if backend is None else check_backend_name(backend)
        self.xp = namespace(self.backend)
        self.device = resolve_device(self.backend, device)
        self.seed = seed
        host_seq, device_seq = _seed_words(seed).spawn(2)
        self._host = np.random.default_rng(host_seq)
        self._device_seed = int(device_seq.generate_state(1, np.uint64)[0] >> 1)
        self._device_rng = None

    def _device_generator(self):
        """The backend's own generator, created on first use: CuPy's takes milliseconds to set up."""
        if self._device_rng is None:
            if self.backend == "torch":
                import torch

                self._device_rng = torch.Generator(device=self.device)
                self._device_rng.manual_seed(self._device_seed)
            elif self.backend == "cupy":
                import cupy

                with self.device:
                    self._device_rng = cupy.random.default_rng(self._device_seed)
            else:
                self._device_rng = np.random.default_rng(self._device_seed)
        return self._device_rng

    def _put(self, host: np.ndarray):
        """Move a host array to this generator's backend and device."""
        return self.xp.asarray(host, device=self.device)

    def normal(self, shape, scale=1.0, dtype="float32"):
        """Draw from N(0, scale**2), drawn on the host in float64 then cast."""
        x = self._host.standard_normal(shape) * scale
        return self._put(x.astype(dtype_of(np, dtype)))

    def integers(self, high, shape):
        """Draw int64 integers uniformly from [0, high)."""
        return self._put(self._host.integers(0, high, size=shape, dtype=np.int64))

    def permutation(self, n):
        """Return a random permutation of ``range(n)`` as an int64 array."""
        return self._put(self._host.permutation(n).astype(np.int64))

    def sample(self, n, k):
        """Return ``k`` distinct integers from ``range(n)`` in random order, as an int64 array."""
        return self._put(self._host.choice(n, k, replace=False).astype(np.int64))

    def uniform(self, shape, dtype="float32"):
        """Draw from U[0, 1) on the device, without a host round trip."""
        shape = tuple(shape)
        if self.backend == "torch":
            import torch

            return torch.rand(
                shape, generator=self._device_generator(), device=self.device,
                dtype=dtype_of(torch, dtype),
            )
        if self.backend == "cupy":
            import cupy

            with self.device:
                return self._device_generator().random(shape, dtype=dtype_of(cupy, dtype))
        return self._put(self._device_generator().random(shape, dtype=dtype_of(np, dtype)))
