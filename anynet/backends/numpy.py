"""NumPy: the CPU backend, and the threads that its updates in row blocks run on.

NumPy runs each array operation on one core. The elementwise update rules can
be split into row blocks on threads (``anynet.training.layouts``), which pays
only when OpenBLAS's idle threads leave the cores free
(``blas_idles_briefly``). Whether they do is decided when NumPy loads, by the
environment; setting it is the application's business
(``anynet.app.process.prepare_process``), never a library's.
"""

from __future__ import annotations

import math
import os
import sys

from .base import _MASK, _MULT, Backend

# OpenBLAS reads this when NumPy loads; its value now is the best guess of what it read (see blas_idles_briefly).
_OPENBLAS_THREAD_TIMEOUT = os.environ.get("OPENBLAS_THREAD_TIMEOUT")


def read_blas_environment() -> None:
    """Take ``$OPENBLAS_THREAD_TIMEOUT`` again as what OpenBLAS will read; only before NumPy loads."""
    global _OPENBLAS_THREAD_TIMEOUT
    if "numpy" not in sys.modules:
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

    def uniform(self, state, shape, dtype):
        """``Backend.uniform``'s very bits, computed in place in uint32, whose products wrap modulo 2**32 as the
        generic hash's masked int64 products do: a fraction of the memory traffic and no temporaries."""
        import numpy as np

        n = math.prod(shape)
        x = np.arange(n, dtype=np.uint32)
        x += np.uint32(int(state["counter"]) & _MASK)
        _mix_in_place(x)
        x ^= np.uint32(int(state["key"]))
        _mix_in_place(x)
        x >>= 8
        values = x.astype(dtype)
        values *= 2.0**-24
        return values.reshape(shape), {"key": state["key"], "counter": state["counter"] + n}

    @staticmethod
    def pad2d(x, top, bottom, left, right):
        """``anynet.nn.conv.pad2d`` by writing ``x`` into zeros: one copy, where concatenation makes two."""
        import numpy as np

        if not (top or bottom or left or right):
            return x
        *lead, H, W = x.shape
        out = np.zeros((*lead, top + H + bottom, left + W + right), dtype=x.dtype)
        out[..., top:top + H, left:left + W] = x
        return out

    @staticmethod
    def col2im(dcols, H, W, HH, WW, stride, pad):
        """``anynet.nn.conv.col2im`` by adding each kernel offset's slab in place into the strided positions it
        came from: no dilated, padded copy of every slab."""
        import numpy as np

        *lead, H_out, W_out = dcols.shape[1:]
        dx = np.zeros((*lead, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
        h_span, w_span = stride * (H_out - 1) + 1, stride * (W_out - 1) + 1
        for i in range(HH):
            for j in range(WW):
                dx[..., i:i + h_span:stride, j:j + w_span:stride] += dcols[i * WW + j]
        return dx[..., pad:pad + H, pad:pad + W]

    def block_map(self):
        """A ``map(f, items) -> list`` over ``threads()`` threads, or None where threads cannot pay."""
        if threads() < 2 or not blas_idles_briefly():
            return None
        return map_on_threads

    def threads(self):
        return threads()


def set_threads(n: int | None) -> None:
    """Let anynet's own parallel work use at most ``n`` CPU threads (None: one per usable CPU).

    BLAS and PyTorch keep their own limits (threadpoolctl, ``torch.set_num_threads``).
    """
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None; got {n!r}")
    _threads = n


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
    cycles, ``2**28`` by default, unless that variable was set before NumPy
    loaded: a whole training step, on the very cores other threads would use,
    which then take about twice as long (benchmarks/RESULTS.md, "Fourth
    session"). Other BLAS libraries are not recognized: False.
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


def _mix_in_place(x):
    """The generic hash's round (``base._mix``) on a uint32 array, in place."""
    import numpy as np

    shifted = x >> 16
    for _ in range(2):
        x ^= shifted
        x *= _MULT
        shifted = np.right_shift(x, 16, out=shifted)
    x ^= shifted
