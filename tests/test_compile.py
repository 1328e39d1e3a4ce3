"""Compiled training steps (anynet.step): the same numbers as eager steps, compiled once per shape, one graph."""

import numpy as np
import pytest
from conftest import tolerance

import anynet
from anynet import backends
from anynet.backend import to_numpy
from anynet.step import TrainStep


def _data(N=240, D=12, C=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N + 60, D))
    y = rng.integers(0, C, N + 60)
    return {"X_train": X[:N], "y_train": y[:N], "X_val": X[N:], "y_val": y[N:]}


def _model(backend_name, dtype, dropout=0.0, batchnorm=True):
    return anynet.FullyConnectedNet([16, 8], input_dim=12, num_classes=5, use_batchnorm=batchnorm, dropout=dropout,
                                    reg=0.01, weight_scale=0.2, dtype=dtype, seed=3, backend=backend_name)


def _solver(backend_name, dtype, compile, rule="adam", iterations=20, batch_size=40, **model_kwargs):
    model = _model(backend_name, dtype, **model_kwargs)
    return anynet.Solver(model, _data(), update_rule=rule, optim_config={"learning_rate": 1e-2}, lr_decay=0.9,
                         batch_size=batch_size, num_iterations=iterations, verbose=False, seed=7, compile=compile)


def _pure_solver(backend_name, dtype, rule, **model_kwargs):
    """A Solver whose steps are the pure step: compiled where the backend compiles, run eagerly elsewhere
    (numpy, array-api-strict)."""
    solver = _solver(backend_name, dtype, False, rule, **model_kwargs)
    solver.compiled = True
    solver._train_step = TrainStep(solver.model, rule, compile=backends.get(backend_name).can_compile)
    return solver


def _assert_same_params(a, b, rtol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(to_numpy(a[k]), to_numpy(b[k]), rtol=rtol, atol=rtol, err_msg=k)


# A bias followed by batch normalization has a gradient of exactly zero in exact arithmetic; what is computed is
# rounding noise, which Adam and RMSProp divide by its own root mean square into steps of the full learning rate:
# no two correct orders of operations agree on it. So the rules that normalize run without batch normalization.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("rule", "batchnorm"), [("sgd", True), ("sgd_momentum", True), ("adam", False)])
def test_pure_step_equals_eager_step(backend_name, dtype, rule, batchnorm, monkeypatch):
    """20 steps across three epoch ends (learning rate decayed): the same parameters, statistics and losses."""
    if dtype == "float32" and rule != "sgd_momentum":
        # The torch session traces steps without generating code (noxfile); here Inductor's generated code itself
        # is checked, in the dtype nets train in, on both ways a step updates (SGD's scaled backward pass, a rule).
        monkeypatch.delenv("ANYNET_TORCH_COMPILE_BACKEND", raising=False)
    eager = _solver(backend_name, dtype, False, rule, batchnorm=batchnorm)
    eager.train()
    pure = _pure_solver(backend_name, dtype, rule, batchnorm=batchnorm)
    pure.train()
    assert pure._train_step.scaled == (rule == "sgd")  # plain SGD backpropagates the loss times -learning_rate
    rtol = tolerance(dtype)
    _assert_same_params(eager.best_params, pure.best_params, rtol)
    _assert_same_params(eager.model.params, pure.model.params, rtol)
    assert len(eager.model.bn_params) == (2 if batchnorm else 0)
    for bn_e, bn_p in zip(eager.model.bn_params, pure.model.bn_params, strict=True):
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(to_numpy(bn_e[key]), to_numpy(bn_p[key]), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(eager.loss_history, pure.loss_history, rtol=rtol)
    assert eager.val_acc_history == pure.val_acc_history
    if rule == "adam":
        assert eager.optim_configs["W1"]["t"] == pure.optim_configs["W1"]["t"] == 20
    assert eager.optim_configs["W1"]["learning_rate"] == pytest.approx(pure.optim_configs["W1"]["learning_rate"])


def test_sgd_with_a_learning_rate_per_parameter(backend_name, dtype="float64"):
    """The pure SGD step backpropagates the loss scaled by the learning rate only when there is one: given a rate
    per parameter, it applies the rule to each gradient, and both ways give the eager step's parameters."""
    runs = []
    for make in (lambda: _solver(backend_name, dtype, False, "sgd"), lambda: _pure_solver(backend_name, dtype, "sgd")):
        solver = make()
        solver.optim_configs["W2"]["learning_rate"] = 3e-2
        solver.train()
        runs.append(solver)
    eager, pure = runs
    assert not pure._train_step.scaled
    _assert_same_params(eager.model.params, pure.model.params, tolerance(dtype))
    assert pure.optim_configs["W2"]["learning_rate"] == pytest.approx(3e-2 * 0.9 ** 3)


def _compiling_backend(backend_name):
    if not backends.get(backend_name).can_compile:
        pytest.skip(f"the {backend_name} backend runs steps eagerly")


def test_compiled_solver_compiles_once_per_shape(backend_name):
    """A 6-epoch run compiles no more often than a 2-epoch run: the decayed learning rate is state, not a constant."""
    _compiling_backend(backend_name)
    backend = backends.get(backend_name)
    counts = []
    for epochs in (2, 6):
        before = backend.compile_count()
        solver = _solver(backend_name, "float32", True, iterations=epochs * 6, batch_size=40)
        solver.train()
        assert solver.compiled and len(solver.val_acc_history) == epochs + 1
        counts.append(backend.compile_count() - before)
        # The time of the calls that compiled is compile time; a step torch.compile had cached compiles nothing.
        assert (solver.compile_seconds > 0) == (counts[-1] > 0)
    assert counts[1] <= counts[0]


def test_torch_step_is_one_graph():
    """fullgraph=True makes a graph break an error; dynamo's counters say the step was traced whole."""
    pytest.importorskip("torch")
    if "torch" not in backends.available_backends():
        pytest.skip("torch cannot run here")
    from torch._dynamo.utils import counters

    solver = _solver("torch", "float32", True, iterations=3, batch_size=40)
    solver.train()
    assert solver.compiled
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_compiled_dropout_and_batchnorm_train_and_repeat(backend_name):
    """Dropout masks come from the carried generator: the same seed gives the same run, another seed another."""
    _compiling_backend(backend_name)
    runs = []
    for seed in (7, 7, 8):
        solver = _solver(backend_name, "float32", True, iterations=12, dropout=0.3)
        solver.seed = seed
        solver.train()
        runs.append(solver)
    assert all(np.isfinite(run.loss_history).all() for run in runs)
    assert runs[0].loss_history == runs[1].loss_history
    assert runs[0].loss_history != runs[2].loss_history
    eager = _solver(backend_name, "float32", False, iterations=12, dropout=0.3)
    eager.train()
    assert eager.loss_history != runs[0].loss_history  # compiled masks are the carried generator's, not the host's


def test_compiled_resume_equals_uninterrupted_run(backend_name, tmp_path):
    _compiling_backend(backend_name)
    whole = _solver(backend_name, "float64", True, iterations=18)
    whole.train()
    first = _solver(backend_name, "float64", True, iterations=12)
    first.checkpoint_name = str(tmp_path / "ckpt")
    first.train()
    resumed = _solver(backend_name, "float64", True, iterations=18)
    resumed.load_checkpoint(tmp_path / "ckpt.npz")
    resumed.train()
    _assert_same_params(whole.model.params, resumed.model.params, 1e-12)
    assert whole.loss_history == resumed.loss_history


def test_compile_argument_is_checked(backend_name):
    with pytest.raises(ValueError, match="compile must be"):
        _solver(backend_name, "float32", "yes")
    model = _model(backend_name, "float32")
    if not backends.get(backend_name).can_compile:
        with pytest.raises(ValueError, match="compile=True cannot be honoured: the .* backend runs steps eagerly"):
            anynet.Solver(model, _data(), compile=True, verbose=False)
        return
    with pytest.raises(ValueError, match="only the update rules of anynet.optim"):
        anynet.Solver(model, _data(), update_rule=anynet.optim.sgd, compile=True, verbose=False)
    solver = anynet.Solver(model, _data(), update_rule=anynet.optim.sgd, compile="auto", verbose=False)
    assert not solver.compiled  # a rule given as a function runs eagerly


def test_uniform_is_a_pure_function_of_its_state(backend_name):
    backend = backends.get(backend_name)
    state = backend.rng_state(5)
    a, next_state = backend.uniform(state, (3, 4), backend.dtype("float32"))
    b, _ = backend.uniform(state, (3, 4), backend.dtype("float32"))
    c, _ = backend.uniform(next_state, (3, 4), backend.dtype("float32"))
    a, b, c = to_numpy(a), to_numpy(b), to_numpy(c)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (3, 4) and (a >= 0).all() and (a < 1).all()
    big, _ = backend.uniform(state, (20000,), backend.dtype("float32"))
    assert abs(float(np.mean(to_numpy(big))) - 0.5) < 0.01


def test_compiled_step_follows_constants_changed_mid_run(backend_name):
    """``model.reg`` changed between steps reaches the compiled step (it compiles again), as it reaches eager ones."""
    _compiling_backend(backend_name)

    def raise_reg(solver, event):
        if event == "iteration" and solver.t == 5:
            solver.model.reg = 0.5

    runs = []
    for compile in (False, True):
        solver = _solver(backend_name, "float64", compile, rule="sgd_momentum", iterations=10)
        solver.callback = raise_reg
        solver.train()
        runs.append(solver)
    _assert_same_params(runs[0].model.params, runs[1].model.params, 1e-10)
    np.testing.assert_allclose(runs[0].loss_history, runs[1].loss_history, rtol=1e-10)


def test_a_second_solver_on_the_same_model_compiles_nothing_new(backend_name):
    _compiling_backend(backend_name)
    backend = backends.get(backend_name)
    model = _model(backend_name, "float32")
    kwargs = dict(update_rule="adam", batch_size=40, num_iterations=6, verbose=False, seed=1, compile=True)
    anynet.Solver(model, _data(), **kwargs).train()
    before = backend.compile_count()
    second = anynet.Solver(model, _data(), **kwargs)
    second.train()
    assert backend.compile_count() == before and second.compile_seconds == 0


def test_train_called_again_after_a_compiled_run_keeps_the_best_parameters(backend_name, tmp_path):
    """jax donates the parameters a compiled step is given: those the model ends with must not be best_params."""
    _compiling_backend(backend_name)
    solver = _solver(backend_name, "float32", True, iterations=12)
    solver.train()
    solver.num_iterations = 24
    solver.train()
    solver.save_checkpoint(tmp_path / "again.npz")
    for k, v in solver.best_params.items():
        assert np.isfinite(to_numpy(v)).all(), k
    _assert_same_params(solver.model.params, solver.best_params, 0)
