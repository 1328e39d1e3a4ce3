"""NumPy: the CPU backend, with the process settings and the threaded updates that pay on it.

NumPy runs each array operation on one core. The elementwise update rules can
be split into row blocks on threads (``anynet.blocks``), which pays only when
OpenBLAS's idle threads leave the cores free (``blas_idles_briefly``), and
NumPy's multi-megabyte temporaries are cheaper when glibc keeps freed memory
(``keep_freed_memory``). Both are process-wide, so anynet's own commands make
them explicitly (``prepare_process``, ``keep_freed_memory``); a library never does on its own.
"""

from __future__ import annotations

import os
import sys

from .base import Backend

# OpenBLAS reads this when NumPy loads; its value now is the best guess of what it read (see blas_idles_briefly).
_OPENBLAS_THREAD_TIMEOUT = os.environ.get("OPENBLAS_THREAD_TIMEOUT")

_threads: int | None = None  # set_threads(n); None: one per CPU this process may run on
_pool = None  # (threads, ThreadPoolExecutor) behind map_on_threads


class NumpyBackend(Backend):
    """NumPy arrays on the CPU."""

    name = "numpy"
    package = "numpy"
    namespace_module = "array_api_compat.numpy"
    install = "pip install numpy"

    def resolve_device(self, device):
        if device not in (None, "cpu"):
            raise ValueError(f"numpy computes on the cpu; got {device!r}")
        return "cpu"

    def owns(self, x) -> bool:
        return type(x) is self._array_type

    def to_numpy(self, x):
        import numpy as np

        return np.asarray(x)

    def asarray(self, host, dtype=None):
        import numpy as np

        return np.asarray(host, dtype=dtype)

    def block_map(self):
        """A ``map(f, items) -> list`` over ``threads()`` threads, or None where threads cannot pay."""
        if threads() < 2 or not blas_idles_briefly():
            return None
        return map_on_threads

    def threads(self):
        return threads()


def prepare_process(updates_in_blocks: bool) -> None:
    """Set up a process that will (or will not) update parameters in row blocks; call before NumPy loads.

    OpenBLAS keeps its idle threads spinning for about 0.1 s after each
    matrix product, on the very cores the update threads need
    (``BlockOptimizer``, for every rule but plain SGD): told
    ``OPENBLAS_THREAD_TIMEOUT=4`` before it loads, they sleep at once. That
    costs plain SGD on small nets about 4 % (threads woken for every product),
    so it is set only when ``updates_in_blocks``. A value the user set is
    kept; once NumPy is loaded this changes nothing. Process-wide: anynet's
    commands call it first thing (``anynet.cli.main``); a library never does.
    This module loads NumPy only when it needs it, so it can be imported first.
    """
    global _OPENBLAS_THREAD_TIMEOUT
    if updates_in_blocks and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        _OPENBLAS_THREAD_TIMEOUT = os.environ["OPENBLAS_THREAD_TIMEOUT"]


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


def blas_idles_briefly() -> bool:
    """Whether NumPy's BLAS threads stop spinning soon after a matrix product.

    OpenBLAS keeps its idle threads spinning for ``2**OPENBLAS_THREAD_TIMEOUT``
    cycles, ``2**28`` (about 0.1 s) unless that variable was set before NumPy
    loaded: a whole training step, on the very cores other threads would use
    (Adam in row blocks on two cores then took 4.5 ms instead of 2.2 ms).
    Other BLAS libraries are not recognized: False.
    """
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
        timeout = int(_OPENBLAS_THREAD_TIMEOUT or 28)
    except (KeyError, TypeError, ValueError):
        return False
    return "openblas" in blas.lower() and timeout <= 16


def map_on_threads(f, items):
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
