"""``anynet bench``: the side-by-side comparison runs and reports its ratios."""

import platform
import re
import subprocess
import sys

import numpy as np
import pytest
from cifar_files import write_cifar10

from anynet import bench
from anynet.data import get_cifar10_data


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
    assert re.search(r"^garbage collection in the timed runs: anynet \d+ \(\d+ full\)", result.stdout, re.M)
    if platform.libc_ver()[0] == "glibc":  # by default every contestant reuses freed memory
        assert "glibc keeps freed memory" in result.stdout


def test_bench_rejects_bad_flags():
    result = subprocess.run([sys.executable, "-m", "anynet", "bench", "--batch-size", "x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_count_ops_counts_operations_and_not_views(repo_script):
    from array_api_compat import array_namespace

    count_ops = repo_script("benchmarks/count_ops.py")
    x = np.ones((4, 3), dtype=np.float32).view(count_ops.Counted)
    w = np.ones((3, 2), dtype=np.float32).view(count_ops.Counted)
    xp = array_namespace(x)
    with count_ops.counting() as counts:
        h = xp.reshape(x, (4, 3)).T.T @ w  # two views and a product
        h += 1.0
        total = xp.sum(xp.astype(h > 0, h.dtype))
        total = total / 2  # a 0-d array, as on a GPU, so this is an operation too
    assert counts == {"matmul": 1, "add": 1, "greater": 1, "astype": 1, "sum": 1, "divide": 1}
    assert isinstance(total, count_ops.Counted) and float(total) == 4.0


@pytest.mark.parametrize(("model", "matmuls"), [("two-layer", 5), ("fc", 8)])
def test_a_step_makes_no_input_gradient(repo_script, model, matmuls):
    # L forward products, L weight gradients and L - 1 input gradients: none for the images.
    _, by_name = repo_script("benchmarks/count_ops.py").count_step_ops(model, hidden=20, batch_size=10, steps=2)
    assert by_name["matmul"] == matmuls
    assert by_name["take"] == 1  # the images; the labels are put in the epoch's order once and sliced


def test_count_ops_sees_the_l2_term(repo_script):
    count_step_ops = repo_script("benchmarks/count_ops.py").count_step_ops
    plain, _ = count_step_ops("two-layer", hidden=20, batch_size=10, steps=1)
    with_reg, by_name = count_step_ops("two-layer", hidden=20, batch_size=10, reg=0.1, steps=1)
    assert with_reg > plain and by_name["matmul"] == 5 + 2  # a dot product of each weight with itself


def test_bench_data_is_cifar10_prepared_as_for_training(tmp_path, monkeypatch):
    folder, _ = write_cifar10(tmp_path, n_per_batch=30)
    data, source = bench.load_data(70, 20, data_dir=tmp_path)
    assert source == "cifar10"
    ref = get_cifar10_data(folder, num_training=70, num_validation=20, num_test=0, download=False)
    for split in ("train", "val"):
        X = data[f"X_{split}"]
        assert X.shape == ref[f"X_{split}"].shape and X.dtype == np.float32 and X.flags.c_contiguous
        np.testing.assert_allclose(X * 64.0, ref[f"X_{split}"], atol=1e-3)  # same pixels, mean removed
        np.testing.assert_array_equal(data[f"y_{split}"], ref[f"y_{split}"])
    monkeypatch.delenv("ANYNET_DATA", raising=False)
    data, source = bench.load_data(70, 20)  # benchmarks never download: random images of the same shape
    assert source == "random" and data["X_train"].shape == (70, 3, 32, 32)


def test_gc_watch_counts_collections_inside_a_contestants_run_only():
    import gc

    with bench._GcWatch(["anynet", "torch"]) as watch:
        gc.collect()  # no contestant running: not counted
        watch.who = "torch"
        gc.collect()
        gc.collect(0)
        watch.who = None
    assert watch.totals["anynet"] == {"full": 0, "collections": 0, "ms": 0.0}
    assert watch.totals["torch"]["collections"] == 2 and watch.totals["torch"]["full"] == 1
    assert watch.totals["torch"]["ms"] > 0
    assert watch._callback not in gc.callbacks


@pytest.mark.parametrize("model", ["two-layer", "fc"])
def test_pytorch_dispatches_no_more_operations_than_the_code_asks_for(repo_script, backend_name, model):
    # The torch backend's operators, counted by PyTorch's profiler, against the operations the code makes on
    # NumPy: a wrapper of array-api-compat that adds work (a take that maps negative indices, a sign that
    # patches NaNs through a mask) shows up here as a difference, which on CUDA is extra launches.
    if backend_name != "torch":
        pytest.skip("counted with PyTorch's profiler")
    count_step_ops = repo_script("benchmarks/count_ops.py").count_step_ops
    numpy_total, numpy_ops = count_step_ops(model, hidden=20, batch_size=10, steps=2)
    torch_total, torch_ops = count_step_ops(model, hidden=20, batch_size=10, steps=2, backend="torch")
    assert torch_total == numpy_total, (numpy_ops, torch_ops)
