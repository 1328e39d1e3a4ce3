"""``anynet bench``: the side-by-side comparison runs and reports its ratios; and every benchmark still runs."""

import ast
import importlib
import itertools
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cifar_files import write_cifar10

from anynet.data import get_cifar10_data
from benchmarks import bench

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_reports_three_contestants_and_ratios(backend_name):
    pytest.importorskip("torch")
    if backend_name == "cupy":
        pytest.skip("the GPU comparison runs in backends/gpu-check.sh")
    result = subprocess.run(
        [sys.executable, "-m", "anynet", "bench", "--backend", backend_name, "--repeats", "1",
         "--iterations", "3", "--num-training", "400", "--hidden-dims", "20", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    medians = dict(re.findall(r"^(anynet|numpy_loop|torch|gemm_floor)\s+([\d,]+)", result.stdout, re.M))
    assert set(medians) == {"anynet", "numpy_loop", "torch", "gemm_floor"}  # a CPU run: the NumPy loop too
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
    assert result.stderr.startswith("anynet bench: error: argument --batch-size: ")


def test_bench_help_is_the_programs_under_anynet_bench():
    # anynet bench runs benchmarks/bench.py as a program, which names itself as the command the user typed.
    result = subprocess.run([sys.executable, "-m", "anynet", "bench", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("usage: anynet bench ")
    assert "--hidden-dims" in result.stdout and "--default-malloc" in result.stdout
    listed = subprocess.run([sys.executable, "-m", "anynet", "--help"], capture_output=True, text=True, timeout=60)
    assert re.search(r"^ +bench +anynet vs PyTorch eager", listed.stdout, re.M)


def test_bench_passes_an_error_of_the_environment_on_in_one_line():
    env = {**os.environ, "ANYNET_BACKEND": "mxnet"}
    result = subprocess.run([sys.executable, "-m", "anynet", "bench", "--iterations", "1"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("anynet bench: error: ANYNET_BACKEND must be one of ")


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


def test_check_steps_are_the_steps_the_solver_measures_accuracy_after():
    # The contestants that keep the Solver's books must measure where it does: 100 training points at batch
    # 30 make 3 steps an epoch; 8 steps end epochs at 3 and 6, and the run at 8.
    from blobs import blobs

    from anynet import Solver, TwoLayerNet

    checks_by_step = {}  # step -> accuracy measurements so far
    model = TwoLayerNet(input_dim=6, hidden_dims=4, num_classes=3, seed=0, dtype="float64", backend="numpy")
    solver = Solver(model, blobs(), batch_size=30, num_iterations=8, verbose=False,
                    callback=lambda s, event: checks_by_step.setdefault(s.t, len(s.val_acc_history)))
    solver.train()
    measured = {t for t, n in checks_by_step.items() if n > checks_by_step.get(t - 1, 0)}
    assert measured == bench.check_steps(8, 3) == {1, 3, 6, 8}


def test_numpy_loop_takes_the_step_anynet_takes():
    # The hand-written reference must do the same arithmetic as TwoLayerNet.loss + optim.sgd, or comparing
    # their speed says nothing.
    from anynet import TwoLayerNet, optim

    data, _ = bench.load_data(60, 20)
    loop = bench.NumpyLoop(data, hidden=7, batch_size=20, iterations=3)
    p = {k: v.copy() for k, v in loop.initial.items()}
    x, y = loop.X[:20], loop.y[:20]
    model = TwoLayerNet(hidden_dims=7, dtype="float32", backend="numpy")
    model.params = {k: v.copy() for k, v in p.items()}
    loss, grads = model.loss(x, y)
    expected = {k: optim.sgd(w, grads[k], {"learning_rate": 1e-3})[0] for k, w in model.params.items()}
    assert loop.step(p, x, y) == pytest.approx(float(loss), rel=1e-5)
    for k, w in expected.items():
        np.testing.assert_allclose(p[k], w, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(p["W1"], loop.initial["W1"])  # it did step


@pytest.mark.parametrize("contestant", ["numpy_loop", "torch"])
def test_contestants_keep_the_solvers_books(contestant):
    data, _ = bench.load_data(100, 20)
    if contestant == "torch":
        pytest.importorskip("torch")
        run = bench.TorchRun(data, "cpu", "two-layer", hidden=5, batch_size=20, iterations=12)
    else:
        run = bench.NumpyLoop(data, hidden=5, batch_size=20, iterations=12)
    record = run._record_accuracy
    calls = []
    run._record_accuracy = lambda *args: (record(*args), calls.append(len(run.loss_history)))
    run()
    # 5 steps an epoch: measured after steps 1, 5, 10 and 12, each time with every loss so far on the host.
    assert calls == sorted(bench.check_steps(12, 5)) == [1, 5, 10, 12]
    assert len(run.acc_history) == 4 and all(0 <= acc <= 1 for pair in run.acc_history for acc in pair)
    assert run.best_val_acc == max(val for _, val in run.acc_history) and run.best is not None


def test_compare_leaves_the_numpy_loop_out_where_it_is_not_the_same_model():
    pytest.importorskip("torch")
    result = bench.compare(model="fc", repeats=1, iterations=2, num_train=60, batch_size=20, keep_memory=False)
    assert set(result["median"]) == {"anynet", "torch", "gemm_floor"}


def test_anynet_contestant_takes_its_input_width_from_the_data():
    # asv's Overhead benchmark times anynet on 16 features, where the products are negligible.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 16), dtype=np.float32), rng.integers(0, 10, 60)
    data = {"X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:]}
    run = bench.AnynetRun(data, "numpy", None, "two-layer", 5, 20, 3)
    assert run.model.params["W1"].shape == (16, 5)
    solver = run.solver  # the run trains this one, then sets up the next
    assert run() > 0 and len(solver.loss_history) == 3


def test_unsteady_runs_are_reported():
    runs = {"anynet": [97_000, 98_000, 56_000], "torch": [85_000, 86_000, 84_000], "gemm_floor": [140_000]}
    (note,) = bench.unsteady(runs)
    assert note.startswith("anynet's runs span 1.75x")
    assert bench.unsteady({"torch": [85_000, 86_000, 84_000]}) == []


# --- every benchmark stays runnable -------------------------------------------------------------------------------

_ASV_PREFIXES = ("time_", "timeraw_", "track_", "peakmem_", "mem_")


def _asv_modules():
    """The modules of benchmarks/ that asv collects benchmarks from: those that define ``time_...`` and the like."""
    found = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        names = [node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.FunctionDef)]
        if any(name.startswith(_ASV_PREFIXES) for name in names):
            found.append(path.stem)
    return found


def _combinations(cls):
    """asv's parameter combinations of benchmark class ``cls``, as ``{param_name: value}`` dicts."""
    params = getattr(cls, "params", None)
    if params is None:
        return [{}]
    if not (params and all(isinstance(p, (list, tuple)) for p in params)):
        params = [params]  # one parameter, given as the list of its values
    names = getattr(cls, "param_names", None) or [f"param{i}" for i in range(len(params))]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*params)]


def _session_has(combination):
    """Whether the backend a combination names is one this test session tests (``$ANYNET_TEST_BACKENDS``)."""
    wanted = [b for b in os.environ.get("ANYNET_TEST_BACKENDS", "").split(",") if b]
    backend = combination.get("backend")
    return not wanted or backend is None or backend.partition("-")[0] in wanted


def test_every_asv_benchmark_runs_once_with_tiny_sizes(monkeypatch):
    # asv's own quick run takes minutes and is no CI job: here each benchmark's setup and method run once, on a few
    # images (ANYNET_BENCH_SMOKE), for every parametrization whose backend this session has and can run here.
    monkeypatch.setenv("ANYNET_BENCH_SMOKE", "1")
    modules = _asv_modules()
    assert "bench_training" in modules
    ran, failed = [], []
    for name in modules:
        key = f"benchmarks.{name}"
        before = sys.modules.pop(key, None)  # imported afresh, to read ANYNET_BENCH_SMOKE
        try:
            module = importlib.import_module(key)
        finally:
            sys.modules.pop(key, None)
            if before is not None:
                sys.modules[key] = before
        for cls_name, cls in vars(module).items():
            methods = [m for m in vars(cls) if m.startswith(_ASV_PREFIXES)] if isinstance(cls, type) else []
            for combination in _combinations(cls) if methods else ():
                if not _session_has(combination):
                    continue
                args = list(combination.values())
                where = f"{name}.{cls_name}{args}"
                instance = cls()
                try:
                    if hasattr(instance, "setup"):
                        instance.setup(*args)
                    for method in methods:
                        value = getattr(instance, method)(*args)
                        if method.startswith("track_"):
                            assert isinstance(value, (int, float)) and value == value, (where, method, value)
                        ran.append(f"{where}.{method}")
                except NotImplementedError:  # asv's skip: a backend that cannot run here
                    continue
                except Exception as exc:
                    failed.append(f"{where}: {type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)
    assert ran and any(".Update" in r for r in ran) and any(".Training" in r for r in ran), ran


def _script(name, *args):
    """Run ``python benchmarks/NAME.py ARGS`` in a fresh process, sized for a smoke run; the completed process."""
    env = {**os.environ, "ANYNET_BENCH_SMOKE": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("ab", ["--base-dir", BENCHMARKS.parent, "--rounds", "1", "--model", "two-layer"],
     r"^two-layer hidden 100 sgd, batch 20: base [\d,]+, new [\d,]+ images/s"),
    ("compare", ["--repeats", "1", "--iterations", "2", "--num-training", "40", "--batch-size", "20",
                 "--hidden-dims", "5", "--quiet"], r"^numpy_loop +[\d,]+ "),
    ("count_ops", ["--model", "fc", "--hidden", "20", "--batch-size", "10"], r"array operations per step"),
    ("profile_step", ["--steps", "2", "--batch-size", "20", "--top", "3"], r"^ +[\d.]+ us +x @ w$"),
    ("peak_memory", ["--num-train", "100", "--epochs", "1", "--batch-size", "20", "--hidden", "5"],
     r"^peak resident host memory: "),
    ("sync_check", ["--help"], r"^usage: sync_check.py "),  # it needs a GPU; --help imports what it runs
    ("cnn", ["--contestants", "anynet-numpy", "twin", "--widths", "4", "8", "--batch-size", "8", "--steps", "1",
             "--rounds", "1"], r"^twin +median +[\d.]+ images/s +[\d.]+x anynet-numpy"),
    ("cnn_twin", ["--help"], r"^usage: cnn_twin.py "),  # it trains on CIFAR-10 for minutes
])
def test_every_benchmark_script_runs(script, args, expected):
    if "twin" in args:  # the PyTorch twin is what anynet's CNN is measured against
        pytest.importorskip("torch")
    result = _script(script, *args)
    assert result.returncode == 0, result.stderr
    assert re.search(expected, result.stdout, re.M), result.stdout
