"""anynet vs PyTorch eager vs the GEMM floor (vs a NumPy loop): ``python benchmarks/compare.py --help``.

The program ``benchmarks/bench.py`` (the one ``anynet bench`` runs) under the name it has long had: the same
flags, the same process setup before NumPy loads, the same report.
"""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().with_name("bench.py")), run_name="__main__")
