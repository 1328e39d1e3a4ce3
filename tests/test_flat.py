"""The one-call update of several parameters (the optimizer's flat layout, anynet.training.layouts), which GPUs use.

On a CPU the backend updates one parameter at a time; these tests make every
backend choose the GPU's layout (``Backend.update_layout`` patched to "flat"),
so that the optimizer lays its state out flat, and require the very same numbers.
"""

import numpy as np
import pytest
from blobs import halve_lr_and_zero_m_at_7, reorder_params_at_7, small_solver, straight_and_resumed

from anynet import backends
from anynet.nn import optim
from anynet.training import layouts
from anynet.training.optimizer import Optimizer

RULES = sorted(optim.UPDATE_RULES)


def _solver(backend_name, rule, fuse, monkeypatch, **kwargs):
    """The small Solver of ``blobs``, fused or not: eager steps (a compiled step is one function, fused its own way)."""
    monkeypatch.setattr(type(backends.get(backend_name)), "update_layout", lambda self: "flat" if fuse else "each")
    return small_solver(backend_name, rule, **{"compile": False, **kwargs})


def _fused(solver):
    """Whether the Solver's optimizer updates several parameters in one call."""
    return any(group.layout == "flat" for group in solver.optimizer.plan.groups)


def _host(arrays):
    return {k: backends.to_numpy(v) for k, v in arrays.items()}


def test_flatten_then_unflatten_restores_each_array(xp, device):
    arrays = [
        xp.reshape(xp.arange(6, dtype=xp.float32, device=device), (2, 3)),
        xp.asarray([7.0, 8.0], dtype=xp.float32, device=device),
        xp.asarray(9.0, dtype=xp.float32, device=device),
    ]
    spans = layouts.spans([a.shape for a in arrays])
    assert [(start, stop) for start, stop, _ in spans] == [(0, 6), (6, 8), (8, 9)]
    joined = layouts.flatten(arrays)
    np.testing.assert_array_equal(backends.to_numpy(joined), [0, 1, 2, 3, 4, 5, 7, 8, 9])
    back = layouts.unflatten(joined, spans)
    for got, a in zip(back, arrays, strict=True):
        assert tuple(got.shape) == tuple(a.shape)
        np.testing.assert_array_equal(backends.to_numpy(got), backends.to_numpy(a))


def test_flat_layout_merges_state_and_keeps_apart_what_differs(xp, device, backend_name, monkeypatch):
    """Parameters share a call only when dtype, hyperparameters, learning rate and step count agree."""
    monkeypatch.setattr(type(backends.get(backend_name)), "update_layout", lambda self: "flat")
    params = {"W": xp.ones((2, 2), dtype=xp.float64, device=device), "b": xp.full((3,), 2.0, dtype=xp.float64,
                                                                                  device=device)}
    opt = Optimizer("adam", backend=backends.get(backend_name, device))
    configs = {"W": {"learning_rate": 0.1, "t": 4, "m": params["W"]}, "b": {"learning_rate": 0.1, "t": 4,
                                                                          "m": params["b"]}}
    state = opt.init_from_configs(configs, params)
    assert [(g.names, g.layout) for g in opt.plan.groups] == [(("W", "b"), "flat")]
    np.testing.assert_array_equal(backends.to_numpy(state[0]["m"]), [1, 1, 1, 1, 2, 2, 2])
    back = opt.configs(state)
    assert back["b"]["t"] == 4 and back["b"]["learning_rate"] == 0.1
    np.testing.assert_array_equal(backends.to_numpy(back["W"]["m"]), np.ones((2, 2)))

    for change in ({"learning_rate": 0.2}, {"t": 5}, {"beta1": 0.5}):
        opt.init_from_configs({**configs, "b": {**configs["b"], **change}}, params)
        assert [g.names for g in opt.plan.groups] == [("W",), ("b",)], change
    opt.init_from_configs(configs, {**params, "b": xp.astype(params["b"], xp.float32)})
    assert [g.names for g in opt.plan.groups] == [("W",), ("b",)]


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
        np.testing.assert_array_equal(backends.to_numpy(fused.model.params[p]), w, err_msg=p)
    for p, config in per_param.optim_configs.items():
        assert fused.optim_configs[p].keys() == config.keys()
        for k, v in config.items():
            got = fused.optim_configs[p][k]
            if k in ("learning_rate", "t", "momentum", "decay_rate", "beta1", "beta2", "epsilon", "weight_decay"):
                assert got == v, (p, k)
            else:
                assert tuple(got.shape) == tuple(v.shape)
                np.testing.assert_array_equal(backends.to_numpy(got), backends.to_numpy(v), err_msg=f"{p}/{k}")


def _assert_fused_equals_unfused(monkeypatch, callback):
    """Train with Adam fused and not, both with ``callback``; require the same losses and parameters."""
    runs = {}
    for fuse in (False, True):
        runs[fuse] = _solver("numpy", "adam", fuse, monkeypatch, callback=callback)
        runs[fuse].train()
    assert runs[True].loss_history == runs[False].loss_history
    for p, w in _host(runs[False].model.params).items():
        np.testing.assert_array_equal(runs[True].model.params[p], w, err_msg=p)
    return runs


def test_fused_run_follows_configs_changed_between_steps(monkeypatch):
    """A callback that reads and changes optim_configs mid-epoch sees, and steers, the fused state."""
    runs = _assert_fused_equals_unfused(monkeypatch, halve_lr_and_zero_m_at_7)
    assert _fused(runs[True])  # laid out flat again once the rates agree


def test_fused_run_keeps_state_by_name_when_parameters_are_reordered(monkeypatch):
    """New parameter arrays in another order mid-run: each keeps its own Adam state (the layout goes by name)."""
    _assert_fused_equals_unfused(monkeypatch, reorder_params_at_7)


def test_fused_run_resumes_from_a_checkpoint_exactly(tmp_path, monkeypatch):
    full, resumed = straight_and_resumed(
        lambda **kwargs: _solver("numpy", "adam", True, monkeypatch, **kwargs), tmp_path)
    assert _fused(resumed)
    assert resumed.loss_history == full.loss_history
    for p, w in full.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[p], w, err_msg=p)


def test_a_parameter_that_changes_dtype_is_updated_in_its_own_call(xp, device, backend_name, monkeypatch):
    """A float32 bias handed to a float64 flat group: the group updates its parameters one call each, on views
    of its flat state, and the bias's update promotes to float64 as one call of the rule on it would."""
    monkeypatch.setattr(type(backends.get(backend_name)), "update_layout", lambda self: "flat")
    rng = np.random.default_rng(0)
    host = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    grads = {k: xp.asarray(rng.standard_normal(v.shape), device=device) for k, v in host.items()}
    params = {k: xp.asarray(v, device=device) for k, v in host.items()}
    opt = Optimizer("sgd_momentum", {"learning_rate": 0.1}, backend=backends.get(backend_name, device))
    state = opt.init(params)
    assert opt.plan.groups[0].layout == "flat"
    mixed = {**params, "b": xp.astype(params["b"], xp.float32)}
    got, state = opt.update(state, mixed, grads)
    for k in host:
        expected, _ = optim.sgd_momentum(mixed[k], grads[k], {"learning_rate": 0.1})
        assert got[k].dtype == xp.float64
        np.testing.assert_array_equal(backends.to_numpy(got[k]), backends.to_numpy(expected), err_msg=k)
    assert tuple(state[0]["velocity"].shape) == (8,)
