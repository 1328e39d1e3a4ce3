"""anynet vs PyTorch eager vs the GEMM floor (vs a NumPy loop): ``python benchmarks/compare.py --help``.

Thin wrapper around ``benchmarks/bench.py``, as ``anynet bench`` is. Without threadpoolctl the thread count
can only be set through the environment before NumPy is imported, so it is
read here first.
"""

import os
import sys
from pathlib import Path

from anynet.cli import flag_value, prepare_process, trains_with_state


def _early_threads(argv):
    """Export the BLAS/OpenMP thread count from ``--threads N`` before NumPy loads."""
    value = flag_value(argv, "--threads")
    if value and value.isdigit():
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = value


if __name__ == "__main__":
    _early_threads(sys.argv[1:])
    prepare_process(trains_with_state(["bench", *sys.argv[1:]]))  # as ``anynet bench`` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.bench
    from benchmarks.bench import main

    sys.exit(main())
