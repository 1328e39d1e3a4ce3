"""Updates in row blocks on threads (the optimizer's blocks layout, anynet.training.layouts), which NumPy uses
for large parameters.

The small nets here have no parameter large enough, so these tests lower
``layouts.MIN_SIZE`` and make every backend's ``block_map`` hand out the thread
map (so that the optimizer lays large parameters out in blocks), then require
the very numbers of one rule call per parameter.
"""

import dataclasses
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from blobs import halve_lr_and_zero_m_at_7, reorder_params_at_7, small_solver, straight_and_resumed

from anynet import backends
from anynet.backends import numpy as numpy_backend
from anynet.nn import optim
from anynet.training import layouts
from anynet.training.optimizer import Optimizer

RULES = sorted(optim.UPDATE_RULES)


def _set_threads(monkeypatch, threads):
    """Make anynet see ``threads()`` CPU threads: the NumPy backend's (its map, the optimizer's blocks)."""
    monkeypatch.setattr(numpy_backend, "threads", threads)


def _solver(backend_name, rule, in_blocks, monkeypatch, **kwargs):
    """The small Solver of ``blobs``, every parameter of two or more elements in up to 3 blocks, or none.

    Eager steps: blocks are how an eager update spreads over threads (a compiled step has none).
    """
    monkeypatch.setattr(layouts, "MIN_SIZE", 2)
    _set_threads(monkeypatch, lambda: 3)
    cls = type(backends.get(backend_name))
    monkeypatch.setattr(cls, "block_map", lambda self: numpy_backend.map_on_threads if in_blocks else None)
    monkeypatch.setattr(cls, "threads", lambda self: numpy_backend.threads())
    return small_solver(backend_name, rule, **{"compile": False, **kwargs})


def _blocks(solver):
    """Parameter name -> (row blocks, its group's state) of the parameters the Solver updates in blocks."""
    groups = solver.optimizer.plan.groups
    return {g.names[0]: (g.rows, state) for g, state in zip(groups, solver._optim_state, strict=True)
            if g.layout == "blocks"}


def _assert_same_run(a, b):
    """Same losses, parameters and optimizer state, bit for bit."""
    assert a.loss_history == b.loss_history
    assert a.val_acc_history == b.val_acc_history
    for p, w in a.model.params.items():
        np.testing.assert_array_equal(backends.to_numpy(b.model.params[p]), backends.to_numpy(w), err_msg=p)
    configs = b.optim_configs
    for p, config in a.optim_configs.items():
        assert configs[p].keys() == config.keys(), p
        for k, v in config.items():
            if isinstance(v, (int, float)):
                assert configs[p][k] == v, (p, k)
            else:
                np.testing.assert_array_equal(backends.to_numpy(configs[p][k]), backends.to_numpy(v),
                                              err_msg=f"{p}/{k}")


def test_row_blocks_cover_the_rows_in_order_and_only_when_it_pays():
    big = (3072, 512)
    assert layouts.row_blocks((3072, 100), 2) is None  # below MIN_SIZE
    assert layouts.row_blocks(big, 1) is None
    rows = layouts.row_blocks(big, 4)
    assert [start for start, _ in rows] == [0, 768, 1536, 2304] and rows[-1][1] == 3072
    # Blocks keep at least MIN_SIZE // 2 elements: 1024x512 is two blocks whatever the thread count.
    assert len(layouts.row_blocks((1024, 512), 16)) == 2
    for shape, threads in [((1001, 1024), 3), ((2**19,), 7), ((5, 2**18), 8)]:
        rows = layouts.row_blocks(shape, threads)
        sizes = [stop - start for start, stop in rows]
        assert rows[0][0] == 0 and rows[-1][1] == shape[0]
        assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
        assert max(sizes) - min(sizes) <= 1 and len(rows) <= threads


def test_blocks_layout_keeps_each_blocks_state_and_gives_it_back_whole(xp, device, backend_name, monkeypatch):
    """The optimizer cuts a large parameter's state into its blocks once, at init; the course's view of the state
    joins them again."""
    monkeypatch.setattr(layouts, "MIN_SIZE", 2)
    monkeypatch.setattr(type(backends.get(backend_name)), "block_map", lambda self: numpy_backend.map_on_threads)
    monkeypatch.setattr(type(backends.get(backend_name)), "threads", lambda self: 2)
    w = xp.reshape(xp.arange(12, dtype=xp.float64, device=device), (4, 3))
    opt = Optimizer("adam", backend=backends.get(backend_name, device))
    state = opt.init_from_configs({"W": {"learning_rate": 0.1, "t": 4, "m": w * 2, "v": w * 3}}, {"W": w})
    (group,) = opt.plan.groups
    assert group.layout == "blocks" and group.rows == ((0, 2), (2, 4))
    np.testing.assert_array_equal(backends.to_numpy(state[0]["m"][1]), backends.to_numpy(w * 2)[2:])
    config = opt.configs(state)["W"]
    assert config["t"] == 4 and config["learning_rate"] == 0.1
    for k, scale in (("m", 2), ("v", 3)):
        np.testing.assert_array_equal(backends.to_numpy(config[k]), backends.to_numpy(w * scale))


@pytest.mark.parametrize("rule", RULES)
def test_an_update_in_blocks_equals_one_call(xp, device, rule):
    rng = np.random.default_rng(0)
    w, dw = (xp.asarray(rng.standard_normal((7, 3)), device=device) for _ in range(2))
    rows = ((0, 3), (3, 5), (5, 7))
    whole, parts = {"learning_rate": 1e-2}, [{"learning_rate": 1e-2} for _ in rows]
    mutable = backends.of(w).mutable
    for _ in range(3):  # the first step creates the state, the next ones carry it
        expected, whole = optim.UPDATE_RULES[rule](w, dw, whole)
        got, parts = layouts.update_in_blocks(optim.UPDATE_RULES[rule], w, dw, parts, rows,
                                              numpy_backend.map_on_threads, mutable)
        np.testing.assert_array_equal(backends.to_numpy(got), backends.to_numpy(expected))
        w = expected
    for k, v in whole.items():
        if isinstance(v, (int, float)):
            assert all(part[k] == v for part in parts)
        else:
            joined = xp.concat([part[k] for part in parts], axis=0)
            np.testing.assert_array_equal(backends.to_numpy(joined), backends.to_numpy(v), err_msg=k)


@pytest.mark.parametrize("rule", RULES)
def test_solver_in_blocks_equals_one_call_per_parameter(backend_name, rule, monkeypatch):
    seen = []
    runs = {False: _solver(backend_name, rule, False, monkeypatch),
            True: _solver(backend_name, rule, True, monkeypatch,
                          callback=lambda solver, event: seen.append(sorted(_blocks(solver))))}
    for solver in runs.values():
        solver.train()
    assert not _blocks(runs[False])
    # Plain SGD's two passes gain nothing from threads: never in blocks.
    assert any(seen) == (rule != "sgd")
    _assert_same_run(runs[False], runs[True])


def _assert_blocks_change_nothing(monkeypatch, rule, callback):
    """Train with ``rule`` in blocks and not, both with ``callback``; require the same run."""
    runs = [_solver("numpy", rule, in_blocks, monkeypatch, callback=callback) for in_blocks in (False, True)]
    for solver in runs:
        solver.train()
    _assert_same_run(*runs)
    return runs


def test_configs_read_and_changed_between_steps_steer_the_blocks(monkeypatch):
    _assert_blocks_change_nothing(monkeypatch, "adam", halve_lr_and_zero_m_at_7)


def test_parameters_replaced_mid_run_keep_their_state(monkeypatch):
    """New parameter arrays, in another order, at step 7: each keeps its own state by name."""
    _assert_blocks_change_nothing(monkeypatch, "rmsprop", reorder_params_at_7)


def test_a_parameter_whose_gradient_has_another_dtype_is_updated_in_one_piece(monkeypatch):
    """float32 W1 in a float64 net from step 3: its float64 gradient promotes the update, as in one call."""
    def to_float32(solver, event):
        if event == "iteration" and solver.t == 3:
            solver.model.params["W1"] = solver.model.params["W1"].astype(np.float32)

    runs = _assert_blocks_change_nothing(monkeypatch, "adam", to_float32)
    assert runs[1].model.params["W1"].dtype == np.float64


def test_a_parameter_below_the_size_leaves_its_blocks_when_the_state_is_laid_out_again(monkeypatch):
    """The layout is chosen once, when the state is made: a state made anew (here from the course's configs, as a
    checkpoint does) after MIN_SIZE rose updates b1 (8 elements) in one piece, with the state it had in blocks."""
    solver = _solver("numpy", "adam", True, monkeypatch, num_iterations=3)
    solver.train()
    assert "b1" in _blocks(solver)
    m_before = np.array(solver.optim_configs["b1"]["m"], copy=True)
    monkeypatch.setattr(layouts, "MIN_SIZE", 9)
    solver.optim_configs = {p: dict(config) for p, config in solver.optim_configs.items()}
    assert "b1" not in _blocks(solver) and "W1" in _blocks(solver)
    np.testing.assert_array_equal(solver.optim_configs["b1"]["m"], m_before)
    solver.num_iterations = 4
    solver.train()
    assert solver.optim_configs["b1"]["t"] == 4 and solver.optim_configs["b1"]["m"].shape == m_before.shape


def test_solver_in_blocks_resumes_from_a_checkpoint_exactly(tmp_path, monkeypatch):
    _assert_same_run(*straight_and_resumed(
        lambda **kwargs: _solver("numpy", "adam", True, monkeypatch, **kwargs), tmp_path))


def test_an_error_in_one_block_leaves_the_parameter_and_its_state_as_they_were(monkeypatch):
    solver = _solver("numpy", "adam", True, monkeypatch, num_iterations=2)
    solver.train()
    before = dict(solver.model.params)
    state = {k: np.array(v[1], copy=True) for k, v in _blocks(solver)["W1"][1].items() if isinstance(v, list)}
    assert set(state) == {"m", "v"}
    adam = solver.update_rule

    def first_row(w):
        offset = w.__array_interface__["data"][0] - before["W1"].__array_interface__["data"][0]
        return offset // before["W1"].strides[0]

    def fails_on_the_second_block(w, dw, config):
        if w.shape == (2, 8) and np.shares_memory(w, before["W1"]) and first_row(w) == 2:  # W1 6x8: rows 2-3
            raise RuntimeError("out of memory in block 2")
        return adam(w, dw, config)

    # The rule the step calls is the optimizer's plan's.
    solver.optimizer.plan = dataclasses.replace(solver.optimizer.plan, rule=fails_on_the_second_block)
    solver.num_iterations = 3
    with pytest.raises(RuntimeError, match="block 2"):
        solver.train()
    assert solver.model.params["W1"] is before["W1"]
    for k, v in state.items():
        np.testing.assert_array_equal(_blocks(solver)["W1"][1][k][1], v, err_msg=k)


def test_map_on_threads_keeps_order_waits_for_all_and_raises(monkeypatch):
    _set_threads(monkeypatch, lambda: 3)
    assert numpy_backend.map_on_threads(lambda i: i * i, range(7)) == [0, 1, 4, 9, 16, 25, 36]
    done = []

    def fail_on(bad):
        def f(i):
            if i == bad:
                raise RuntimeError(f"block {i}")
            __import__("time").sleep(0.05)
            done.append(i)
        return f

    for bad in (0, 2):
        done.clear()
        with pytest.raises(RuntimeError, match=f"block {bad}"):
            numpy_backend.map_on_threads(fail_on(bad), range(4))
        assert sorted(done) == [i for i in range(4) if i != bad]  # the others had finished
    _set_threads(monkeypatch, lambda: 1)
    assert numpy_backend.map_on_threads(lambda i: -i, [1, 2]) == [-1, -2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the point here
def test_map_on_threads_works_in_a_forked_child(monkeypatch):
    _set_threads(monkeypatch, lambda: 2)
    assert numpy_backend.map_on_threads(lambda i: i + 1, range(3)) == [1, 2, 3]  # the parent's pool is up
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pool has no threads; the map must not wait on them forever
        signal.alarm(10)
        os.write(write, repr(numpy_backend.map_on_threads(lambda i: i * 10, range(3))).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 100) == b"[0, 10, 20]" and os.waitstatus_to_exitcode(status) == 0


def test_block_map_only_where_threads_can_pay(monkeypatch):
    _set_threads(monkeypatch, lambda: 2)
    monkeypatch.setattr(numpy_backend, "_OPENBLAS_THREAD_TIMEOUT", "4")
    openblas = "openblas" in np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    numpy = backends.get("numpy")
    assert (numpy.block_map() is not None) == openblas
    assert numpy.update_layout() == ("blocks" if openblas else "each")
    for name in ("torch", "cupy", "jax"):  # libraries without threaded updates, installed here or not
        assert backends.backend_class(name).block_map is backends.Backend.block_map
    monkeypatch.setattr(numpy_backend, "_OPENBLAS_THREAD_TIMEOUT", "28")  # OpenBLAS's default: threads spin ~0.1 s
    assert numpy.block_map() is None and numpy.update_layout() == "each"
    monkeypatch.setattr(numpy_backend, "_OPENBLAS_THREAD_TIMEOUT", None)
    assert numpy.block_map() is None
    monkeypatch.setattr(numpy_backend, "_OPENBLAS_THREAD_TIMEOUT", "4")
    _set_threads(monkeypatch, lambda: 1)
    assert numpy.block_map() is None


def test_block_map_goes_by_the_variable_numpy_loaded_with():
    code = ("import os; from anynet import backends; os.environ['OPENBLAS_THREAD_TIMEOUT'] = '28'; "
            "print(backends.get('numpy').block_map() is not None)")
    env = {**os.environ, "OPENBLAS_THREAD_TIMEOUT": "4"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    openblas = "openblas" in np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    assert out.stdout.split() == [str(openblas and len(os.sched_getaffinity(0)) > 1)]


def test_set_threads_checks_and_sets(monkeypatch):
    monkeypatch.setattr(numpy_backend, "_threads", None)
    assert numpy_backend.threads() >= 1
    numpy_backend.set_threads(3)
    assert numpy_backend.threads() == 3 and backends.get("numpy").threads() == 3
    for bad in (0, -1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            numpy_backend.set_threads(bad)
    numpy_backend.set_threads(None)
    assert numpy_backend._threads is None
