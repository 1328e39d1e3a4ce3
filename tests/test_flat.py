"""The one-call update of all parameters (anynet.flat, anynet.optimizers.FlatOptimizer), which GPU backends use.

On a CPU the backend updates one parameter at a time; these tests make every
backend look like a GPU (``Backend.on_gpu`` patched to True), so that it hands
the Solver a ``FlatOptimizer``, and require the very same numbers.
"""

import numpy as np
import pytest
from blobs import halve_lr_and_zero_m_at_7, reorder_params_at_7, small_solver, straight_and_resumed

from anynet import backend, backends, flat, optim
from anynet.optimizers import FlatOptimizer

RULES = sorted(optim.UPDATE_RULES)


def _solver(backend_name, rule, fuse, monkeypatch, **kwargs):
    """The small Solver of ``blobs``, fused or not: eager steps (a compiled step is one function, fused its own way)."""
    monkeypatch.setattr(type(backends.get(backend_name)), "on_gpu", property(lambda self: fuse))
    return small_solver(backend_name, rule, **{"compile": False, **kwargs})


def _fused(solver):
    """Whether the Solver's last steps updated all parameters in one call."""
    return isinstance(solver.optimizer, FlatOptimizer) and solver.optimizer._flat is not None


def _host(arrays):
    return {k: backend.to_numpy(v) for k, v in arrays.items()}


def test_flatten_then_unflatten_restores_each_array(xp, device):
    arrays = {
        "W": xp.reshape(xp.arange(6, dtype=xp.float32, device=device), (2, 3)),
        "b": xp.asarray([7.0, 8.0], dtype=xp.float32, device=device),
        "s": xp.asarray(9.0, dtype=xp.float32, device=device),
    }
    spans = flat.layout(arrays)
    assert [(name, start, stop) for name, start, stop, _ in spans] == [("W", 0, 6), ("b", 6, 8), ("s", 8, 9)]
    joined = flat.flatten(arrays, spans)
    np.testing.assert_array_equal(backend.to_numpy(joined), [0, 1, 2, 3, 4, 5, 7, 8, 9])
    back = flat.unflatten(joined, spans)
    for name, a in arrays.items():
        assert tuple(back[name].shape) == tuple(a.shape)
        np.testing.assert_array_equal(backend.to_numpy(back[name]), backend.to_numpy(a))


def test_flatten_configs_merges_state_and_refuses_what_differs(xp, device):
    ones = xp.ones((2, 2), dtype=xp.float64, device=device)
    twos = xp.full((3,), 2.0, dtype=xp.float64, device=device)
    spans = flat.layout({"W": ones, "b": twos})
    configs = {"W": {"learning_rate": 0.1, "t": 4, "m": ones}, "b": {"learning_rate": 0.1, "t": 4, "m": twos}}
    merged = flat.flatten_configs(configs, spans)
    assert merged["learning_rate"] == 0.1 and merged["t"] == 4
    np.testing.assert_array_equal(backend.to_numpy(merged["m"]), [1, 1, 1, 1, 2, 2, 2])
    split = flat.unflatten_config(merged, spans)
    assert split["b"]["t"] == 4
    np.testing.assert_array_equal(backend.to_numpy(split["W"]["m"]), np.ones((2, 2)))

    assert flat.flatten_configs({**configs, "b": {**configs["b"], "learning_rate": 0.2}}, spans) is None
    assert flat.flatten_configs({**configs, "b": {"learning_rate": 0.1, "t": 4}}, spans) is None
    assert flat.flatten_configs({**configs, "b": {**configs["b"], "m": None}}, spans) is None


@pytest.mark.parametrize("rule", RULES)
def test_fused_updates_equal_one_call_per_parameter(backend_name, rule, monkeypatch):
    runs = {}
    for fuse in (False, True):
        solver = _solver(backend_name, rule, fuse, monkeypatch)
        solver.train()
        runs[fuse] = solver
    per_param, fused = runs[False], runs[True]
    assert not _fused(per_param)
    # Plain SGD is not fused: its two launches per parameter cost less than the concatenation.
    assert _fused(fused) == (rule != "sgd")
    assert fused.loss_history == per_param.loss_history
    assert fused.val_acc_history == per_param.val_acc_history
    for p, w in _host(per_param.model.params).items():
        np.testing.assert_array_equal(backend.to_numpy(fused.model.params[p]), w, err_msg=p)
    for p, config in per_param.optim_configs.items():
        assert fused.optim_configs[p].keys() == config.keys()
        for k, v in config.items():
            got = fused.optim_configs[p][k]
            if k in ("learning_rate", "t", "momentum", "decay_rate", "beta1", "beta2", "epsilon"):
                assert got == v, (p, k)
            else:
                assert tuple(got.shape) == tuple(v.shape)
                np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(v), err_msg=f"{p}/{k}")


def _assert_fused_equals_unfused(monkeypatch, callback):
    """Train with Adam fused and not, both with ``callback``; require the same losses and parameters."""
    runs = {}
    for fuse in (False, True):
        runs[fuse] = _solver("numpy", "adam", fuse, monkeypatch, callback=callback)
        runs[fuse].train()
    assert runs[True].loss_history == runs[False].loss_history
    for p, w in _host(runs[False].model.params).items():
        np.testing.assert_array_equal(runs[True].model.params[p], w, err_msg=p)


def test_fused_run_follows_configs_changed_between_steps(monkeypatch):
    """A callback that reads and changes optim_configs mid-epoch sees, and steers, the fused state."""
    _assert_fused_equals_unfused(monkeypatch, halve_lr_and_zero_m_at_7)


def test_fused_run_keeps_state_by_name_when_parameters_are_reordered(monkeypatch):
    """New parameter arrays in another order mid-run (the state is merged then): each keeps its own Adam state."""
    _assert_fused_equals_unfused(monkeypatch, reorder_params_at_7)


def test_fused_run_resumes_from_a_checkpoint_exactly(tmp_path, monkeypatch):
    full, resumed = straight_and_resumed(
        lambda **kwargs: _solver("numpy", "adam", True, monkeypatch, **kwargs), tmp_path)
    assert resumed.loss_history == full.loss_history
    for p, w in full.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[p], w, err_msg=p)


def test_parameters_of_mixed_dtypes_are_updated_one_by_one(monkeypatch):
    solver = _solver("numpy", "sgd_momentum", True, monkeypatch, num_iterations=3)
    solver.model.params["b1"] = solver.model.params["b1"].astype(np.float32)
    solver.train()
    assert isinstance(solver.optimizer, FlatOptimizer) and not solver.optimizer.fuse
    assert np.isfinite(solver.loss_history).all() and len(solver.loss_history) == 3
