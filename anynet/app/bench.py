"""``anynet bench``: the benchmark harness of the source checkout, run as a program.

The harness, ``benchmarks/bench.py``, lives beside the package, not in it:
an installed wheel has none, and anynet never imports it. ``anynet bench
ARGS`` runs ``python benchmarks/bench.py ARGS`` in a process of its own,
which sets itself up (threads, OpenBLAS, malloc) as its contestants need,
and returns its exit code. ``$ANYNET_PROG`` tells the program the name to
give itself in its messages and ``--help``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NO_BENCH = "anynet bench needs a source checkout of anynet (benchmarks/bench.py)"
HELP = "anynet vs PyTorch eager vs the GEMM floor (vs a NumPy loop), side by side"
PROG = "anynet bench"


def bench_script():
    """benchmarks/bench.py of the source checkout this package lives in, or None (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    script = root / "benchmarks" / "bench.py"
    return script if script.is_file() and (root / "pyproject.toml").is_file() else None


def add_bench_parser(subparsers):
    """List ``anynet bench`` among the subcommands; ``cli.main`` hands its arguments to ``run_bench`` as they are."""
    help = HELP if bench_script() is not None else "anynet vs PyTorch eager vs the GEMM floor (needs a source checkout)"
    return subparsers.add_parser("bench", help=help, add_help=False)


def run_bench(argv):
    """Run ``benchmarks/bench.py ARGV`` with this Python; its exit code, or 2 without a checkout (``NO_BENCH``)."""
    script = bench_script()
    if script is None:
        print(f"{PROG}: error: {NO_BENCH}", file=sys.stderr)
        return 2
    env = {**os.environ, "ANYNET_PROG": PROG}
    with subprocess.Popen([sys.executable, str(script), *argv], env=env) as child:
        try:
            code = child.wait()
        except KeyboardInterrupt:  # the program got the signal too: it says so itself, and ends
            code = child.wait()
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N
