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


def _count_ops_module():
    """benchmarks/count_ops.py, imported from its file (the benchmarks are not an installed package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "count_ops.py"
    spec = importlib.util.spec_from_file_location("count_ops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_ops_counts_operations_and_not_views():
    import numpy as np
    from array_api_compat import array_namespace

    count_ops = _count_ops_module()
    x = np.ones((4, 3), dtype=np.float32).view(count_ops.Counted)
    w = np.ones((3, 2), dtype=np.float32).view(count_ops.Counted)
    xp = array_namespace(x)
    count_ops._counts = counts = __import__("collections").Counter()
    try:
        h = xp.reshape(x, (4, 3)).T.T @ w  # two views and a product
        h += 1.0
        total = xp.sum(xp.astype(h > 0, h.dtype))
        total = total / 2  # a 0-d array, as on a GPU, so this is an operation too
    finally:
        count_ops._counts = None
    assert counts == {"matmul": 1, "add": 1, "greater": 1, "astype": 1, "sum": 1, "divide": 1}
    assert isinstance(total, count_ops.Counted) and float(total) == 4.0


@pytest.mark.parametrize(("model", "matmuls"), [("two-layer", 5), ("fc", 8)])
def test_a_step_makes_no_input_gradient(model, matmuls):
    # L forward products, L weight gradients and L - 1 input gradients: none for the images.
    _, by_name = _count_ops_module().count_step_ops(model, hidden=20, batch_size=10, steps=2)
    assert by_name["matmul"] == matmuls
    assert by_name["take"] == 2  # one gather of images and one of labels per step


def test_count_ops_sees_the_l2_term():
    count_step_ops = _count_ops_module().count_step_ops
    plain, _ = count_step_ops("two-layer", hidden=20, batch_size=10, steps=1)
    with_reg, by_name = count_step_ops("two-layer", hidden=20, batch_size=10, reg=0.1, steps=1)
    assert with_reg > plain and by_name["matmul"] == 5 + 2  # a dot product of each weight with itself
