"""Backend selection, transfers and random generators."""

import array_api_strict
import numpy as np
import pytest

import anynet
from anynet import backends


def test_numpy_and_strict_always_available():
    names = anynet.available_backends()
    assert "numpy" in names and "array_api_strict" in names
    assert set(names) <= set(anynet.BACKENDS)


def test_every_public_name_loads_on_first_use():
    assert sorted(anynet.__all__) == sorted(anynet._HOME)
    for name in anynet.__all__:
        assert getattr(anynet, name) is getattr(__import__(f"anynet.{anynet._HOME[name]}", fromlist=[name]), name)
    assert set(anynet.__all__) <= set(dir(anynet))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        anynet.nothing_here  # noqa: B018


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match="numpy, cupy, torch, array_api_strict, jax"):
        anynet.set_backend("tensorflow")
    with pytest.raises(ValueError, match="backend must be one of"):
        anynet.TwoLayerNet(backend="tensorflow")


def test_set_backend_changes_default(monkeypatch):
    monkeypatch.setattr(backends.registry, "_default", None)
    assert anynet.get_backend() == "numpy"
    anynet.set_backend("array_api_strict")
    assert anynet.get_backend() == "array_api_strict"
    assert anynet.TwoLayerNet(hidden_dims=4, input_dim=3).backend.name == "array_api_strict"


def test_device_variable_chooses_the_default_backends_device(monkeypatch):
    monkeypatch.setattr(backends.registry, "_default", None)
    monkeypatch.setenv("ANYNET_BACKEND", "array_api_strict")
    monkeypatch.setenv("ANYNET_DEVICE", "device1")
    model = anynet.TwoLayerNet(hidden_dims=4, input_dim=3)
    assert str(model.device) == str(array_api_strict.Device("device1"))
    assert anynet.TwoLayerNet(hidden_dims=4, input_dim=3, backend="numpy").device == "cpu"  # another backend
    monkeypatch.setenv("ANYNET_DEVICE", "device9")
    with pytest.raises(ValueError, match="ANYNET_DEVICE='device9' is not a device of the array_api_strict backend"):
        anynet.TwoLayerNet(hidden_dims=4, input_dim=3)


def test_environment_variable_chooses_default(monkeypatch):
    monkeypatch.setattr(backends.registry, "_default", None)
    monkeypatch.setenv("ANYNET_BACKEND", "array_api_strict")
    assert anynet.get_backend() == "array_api_strict"
    monkeypatch.setenv("ANYNET_BACKEND", "nope")
    with pytest.raises(ValueError, match="ANYNET_BACKEND"):
        anynet.get_backend()


def test_unavailable_backend_names_install_command(monkeypatch):
    from anynet.backends.cupy import CupyBackend

    monkeypatch.setattr(CupyBackend, "why_unavailable", classmethod(lambda cls: f"needs {cls.install}"))
    with pytest.raises(anynet.BackendUnavailableError, match=r'pip install "anynet\[cuda12\]"'):
        anynet.set_backend("cupy")


def test_cupy_without_gpu_is_refused_clearly():
    if "cupy" in anynet.available_backends():
        pytest.skip("a GPU is visible here")
    with pytest.raises(anynet.BackendUnavailableError, match="cupy"):
        backends.get("cupy")


def test_round_trip_to_device(xp, device, backend_name):
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    place = backends.get(backend_name, device)
    x = place.to_device(host)
    assert backends.name_of(x) == backends.name_of(xp.asarray(0, device=device))
    assert place.to_device(x) is x
    np.testing.assert_array_equal(backends.to_numpy(x), host)
    y = place.to_device(x, xp.float64)
    assert y.dtype == xp.float64


def test_bad_device_is_value_error(backend_name):
    with pytest.raises(ValueError, match="device"):
        backends.get(backend_name, "no-such-device")


def test_generator_is_reproducible(backend_name):
    a = backends.Generator(7, backend_name)
    b = backends.Generator(7, backend_name)
    for draw in (lambda g: g.normal((3, 4), 0.5), lambda g: g.uniform((5,)), lambda g: g.permutation(10),
                 lambda g: g.integers(4, (6,)), lambda g: g.sample(100, 7)):
        np.testing.assert_array_equal(backends.to_numpy(draw(a)), backends.to_numpy(draw(b)))
    c = backends.Generator(8, backend_name)
    assert not np.array_equal(backends.to_numpy(a.normal((20,))), backends.to_numpy(c.normal((20,))))


def test_generator_arrays_live_on_backend(xp, backend_name, device):
    g = backends.Generator(0, backend_name)
    u = g.uniform((1000,), dtype="float64")
    assert u.dtype == xp.float64
    host = backends.to_numpy(u)
    assert host.min() >= 0 and host.max() < 1 and 0.4 < host.mean() < 0.6
    perm = backends.to_numpy(g.permutation(50))
    np.testing.assert_array_equal(np.sort(perm), np.arange(50))
    sample = g.sample(50_000, 1000)
    assert sample.dtype == xp.int64
    sample = backends.to_numpy(sample)
    assert len(set(sample.tolist())) == 1000 and sample.min() >= 0 and sample.max() < 50_000
    assert sample.max() > 40_000 and not np.all(np.diff(sample) > 0)  # spread over the range, not sorted


def test_host_draws_agree_across_backends(backend_name):
    ref = backends.Generator(3, "numpy").normal((4, 5), 0.1)
    other = backends.Generator(3, backend_name).normal((4, 5), 0.1)
    np.testing.assert_array_equal(backends.to_numpy(other), ref)
    ref = backends.Generator(3, "numpy").sample(1000, 10)
    np.testing.assert_array_equal(backends.to_numpy(backends.Generator(3, backend_name).sample(1000, 10)), ref)


_FAULTS = """
import resource, sys
import numpy as np
from anynet.app.process import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("unsupported")
    sys.exit()
for i in range(23):
    if i == 3:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(10_000_000, np.float32)  # 40 MB: glibc maps blocks this large afresh, by default
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_keep_freed_memory_reuses_large_blocks_without_page_faults():
    import subprocess
    import sys

    faults = {}
    for how in ("default", "keep"):  # each in its own process: the setting is process-wide
        out = subprocess.run([sys.executable, "-c", _FAULTS, how], capture_output=True, text=True, check=True)
        faults[how] = out.stdout.strip()
    if faults["keep"] == "unsupported":
        pytest.skip("not glibc")
    # Every fresh 40 MB array faults in (page by page, or by 2 MB pages where the kernel uses huge pages);
    # a kept block is reused as it is.
    assert int(faults["default"]) >= 20
    assert int(faults["keep"]) <= int(faults["default"]) // 10


def test_take_rows_is_take_along_the_first_axis(xp, device):
    x = xp.reshape(xp.arange(12, dtype=xp.float32, device=device), (4, 3))
    idx = xp.asarray([3, 0, 0, 2], device=device)
    np.testing.assert_array_equal(backends.to_numpy(backends.of(x).take_rows(x, idx)),
                                  backends.to_numpy(xp.take(x, idx, axis=0)))
    y = xp.asarray([5, 6, 7, 8], device=device)
    np.testing.assert_array_equal(backends.to_numpy(backends.of(y).take_rows(y, idx)), [8, 5, 5, 7])


def test_limit_threads_limits_anynet_blas_and_loaded_torch(monkeypatch):
    from anynet.app.process import limit_threads

    threadpoolctl = pytest.importorskip("threadpoolctl")
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(backends.numpy, "_threads", None)
    before_blas, before_torch = threadpoolctl.threadpool_info(), torch.get_num_threads()
    try:
        assert limit_threads(1) == "threadpoolctl"
        assert backends.numpy.threads() == 1 and torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpoolctl.threadpool_info())
    finally:
        for pool in before_blas:
            threadpoolctl.threadpool_limits(pool["num_threads"], user_api=pool["user_api"])
        torch.set_num_threads(before_torch)


def test_jax_trains_in_32_bits_until_a_model_asks_for_float64(backend_name):
    """JAX's 64-bit mode is off in a fresh process: a float32 model trains there, without a warning about
    truncated dtypes; a float64 model turns the mode on, saying so once, and computes in float64. (The test
    session itself runs JAX in 64-bit mode from its first test: see conftest.)"""
    if backend_name != "jax":
        pytest.skip("JAX's 32-bit default")
    code = """
import warnings, numpy as np, jax, anynet
warnings.simplefilter("error")
rng = np.random.default_rng(0)
data = {"X_train": rng.standard_normal((20, 6)), "y_train": rng.integers(0, 3, 20),
        "X_val": rng.standard_normal((6, 6)), "y_val": rng.integers(0, 3, 6)}
for dtype in ("float32", "float64"):
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model = anynet.FullyConnectedNet([5], input_dim=6, num_classes=3, dtype=dtype, seed=0, backend="jax")
    assert [str(w.message)[:40] for w in said] == ([] if dtype == "float32" else
                                                   ["anynet turned on JAX's 64-bit mode (jax_"]), said
    solver = anynet.Solver(model, data, batch_size=10, num_epochs=2, verbose=False, seed=0)
    solver.train()
    print(dtype, jax.config.jax_enable_x64, model.params["W1"].dtype, np.isfinite(solver.loss_history).all())
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["float32 False float32 True", "float64 True float64 True"]


def test_jax_moves_float64_data_as_float64_saying_once_that_it_turns_64_bit_mode_on(backend_name):
    """A float64 host array moved to JAX stays float64 (JAX alone would silently make it float32): the move
    turns 64-bit mode on, with one warning that names what that changes; float32 data leaves the mode off."""
    if backend_name != "jax":
        pytest.skip("JAX's 32-bit default")
    code = """
import warnings, numpy as np, jax
from anynet import backends
warnings.simplefilter("error")
jaxb = backends.get("jax")
print(jaxb.asarray(np.ones(3, np.float32)).dtype, jax.config.jax_enable_x64)
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    x = jaxb.asarray(np.ones(3))
    y = jaxb.to_device(np.ones(2, np.float64))
print(x.dtype, y.dtype, jax.config.jax_enable_x64, len(said), "process" in str(said[0].message))
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["float32 False", "float64 float64 True 1 True"]


def test_the_deprecated_backend_module_warns_and_still_answers():
    import importlib
    import sys

    sys.modules.pop("anynet.backend", None)
    with pytest.warns(DeprecationWarning, match="anynet.backends"):
        old = importlib.import_module("anynet.backend")
    assert old.namespace("numpy") is backends.get("numpy").xp
    assert old.resolve_device("numpy") == "cpu"
    x = old.to_device(np.ones(2), old.namespace("numpy"), "cpu", np.float32)
    assert x.dtype == np.float32
