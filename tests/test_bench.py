"""``anynet bench``: the side-by-side comparison runs and reports its ratios."""

import re
import subprocess
import sys

import pytest


def test_bench_reports_three_contestants_and_ratios(backend_name):
    pytest.importorskip("torch")
    if backend_name == "cupy":
        pytest.skip("the GPU comparison runs in backends/gpu-check.sh")
    result = subprocess.run(
        [sys.executable, "-m", "anynet", "bench", "--backend", backend_name, "--repeats", "1",
         "--iterations", "3", "--num-train", "400", "--hidden", "20", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    medians = dict(re.findall(r"^(anynet|torch|gemm_floor)\s+([\d,]+)", result.stdout, re.M))
    assert set(medians) == {"anynet", "torch", "gemm_floor"}
    assert all(int(v.replace(",", "")) > 0 for v in medians.values())
    ratio = float(re.search(r"^anynet/torch\s+([\d.]+)", result.stdout, re.M).group(1))
    expected = int(medians["anynet"].replace(",", "")) / int(medians["torch"].replace(",", ""))
    assert ratio == pytest.approx(expected, rel=1e-2)


def test_bench_rejects_bad_flags():
    result = subprocess.run([sys.executable, "-m", "anynet", "bench", "--batch-size", "x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
