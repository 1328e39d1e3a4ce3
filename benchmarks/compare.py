"""anynet vs PyTorch eager vs the GEMM floor: ``python benchmarks/compare.py --help``.

Thin wrapper around ``anynet.bench``. Without threadpoolctl the thread count
can only be set through the environment before NumPy is imported, so it is
read here first.
"""

import os
import sys


def _early_threads(argv):
    """Export the BLAS/OpenMP thread count from ``--threads N`` before NumPy loads."""
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--threads=") else (
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None
        )
        if value and value.isdigit():
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[name] = value


if __name__ == "__main__":
    _early_threads(sys.argv[1:])
    from anynet.cli import prepare_process

    prepare_process()  # as the anynet command does, before NumPy loads
    from anynet.bench import main

    sys.exit(main())
