"""Process-wide settings, made only by anynet's own commands: a library never changes its host process.

OpenBLAS's idle threads (``prepare_process``, before NumPy loads), every
thread pool's size (``limit_threads``: a sweep's single-threaded workers), and
glibc's handling of freed memory (``keep_freed_memory``). The application
layer is the only one that calls these.
"""

from __future__ import annotations

import os
import sys

from ..backends import numpy as numpy_backend


def prepare_process(updates_in_blocks: bool) -> None:
    """Set up a process that will (or will not) update parameters in row blocks; call before NumPy loads.

    OpenBLAS keeps its idle threads spinning after each matrix product (for
    2**28 cycles by default), on the very cores the update threads need
    (row blocks, for every rule but plain SGD): told
    ``OPENBLAS_THREAD_TIMEOUT=4`` before it loads, they sleep at once. Plain
    SGD would only pay for that (threads woken for every product, a cost on
    small nets: benchmarks/RESULTS.md), so it is set only when
    ``updates_in_blocks``. A value the user set is
    kept; once NumPy is loaded this changes nothing. Process-wide: anynet's
    commands call it first thing (``anynet.app.cli.main``); a library never does.
    """
    if updates_in_blocks and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        numpy_backend.read_blas_environment()


def limit_threads(n: int) -> str:
    """Limit every thread pool of this process to ``n`` threads: anynet's own, NumPy's BLAS and PyTorch's.

    PyTorch is limited only if it is loaded. Returns how BLAS was limited:
    through threadpoolctl, or (without it) only by the environment NumPy
    loaded with (``OPENBLAS_NUM_THREADS`` and the like).
    """
    numpy_backend.set_threads(n)
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


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of returning them to the OS.

    NumPy's multi-megabyte temporaries (a step's activations, Adam's passes over
    a weight matrix) otherwise come back as fresh pages that fault in,
    zero-filled, at every training step; kept, they are reused, for a little
    more peak memory (both measured in benchmarks/RESULTS.md, "anynet train
    keeps freed memory"). Process-wide, so a library never calls it on its
    own: ``anynet train`` does, and ``benchmarks/bench.py`` (``anynet bench``)
    in its own process, for every contestant (unless ``--default-malloc``).
    Returns whether the setting took (False off glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 28) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False
