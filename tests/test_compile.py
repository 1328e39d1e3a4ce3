"""The one training step (anynet.training.step): the course's loop in numbers, eager or compiled; compiled once per
statics and shape, as one graph, kept while the model lives."""

import gc
import weakref

import numpy as np
import pytest
from conftest import tolerance

import anynet
from anynet import backends
from anynet.backends import to_numpy
from anynet.nn import optim
from anynet.training import compiled


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


def _last(solver):
    """Have ``solver`` keep the parameters and statistics of its last step (``train`` ends with the best ones)."""
    def keep(s, event):
        if event == "iteration" and s.t == s.num_iterations:
            s.last_params = {k: np.array(to_numpy(v), copy=True) for k, v in s.model.params.items()}
            s.last_bn = [{k: np.array(to_numpy(bn[k])) for k in ("running_mean", "running_var")}
                         for bn in getattr(s.model, "bn_params", [])]
    solver.callback = keep
    return solver


def _course_loop(backend_name, dtype, rule, iterations=20, batch_size=40, rates=None, **model_kwargs):
    """The course's Solver loop written out: ``model.loss`` on each minibatch, then the rule on each parameter,
    the learning rates decayed at each epoch end; the minibatches in the Solver's order. Returns the model and
    its losses."""
    model = _model(backend_name, dtype, **model_kwargs)
    data, rule_fn = _data(), optim.UPDATE_RULES[rule]
    configs = {p: {"learning_rate": (rates or {}).get(p, 1e-2)} for p in model.params}
    N, losses = len(data["X_train"]), []
    per_epoch = N // batch_size
    for t in range(iterations):
        epoch, k = divmod(t, per_epoch)
        order = to_numpy(anynet.Generator((7, epoch), backend_name).permutation(N))
        idx = order[k * batch_size:(k + 1) * batch_size]
        loss, grads = model.loss(data["X_train"][idx], data["y_train"][idx])
        losses.append(float(loss))
        for p, w in model.params.items():
            model.params[p], configs[p] = rule_fn(w, grads[p], configs[p])
        if (t + 1) % per_epoch == 0:
            for config in configs.values():
                config["learning_rate"] *= 0.9
    return model, losses, configs


def _assert_same_params(a, b, rtol):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(to_numpy(a[k]), to_numpy(b[k]), rtol=rtol, atol=rtol, err_msg=k)


# A bias followed by batch normalization has a gradient of exactly zero in exact arithmetic; what is computed is
# rounding noise, which Adam and RMSProp divide by its own root mean square into steps of the full learning rate:
# no two correct orders of operations agree on it. So the rules that normalize run without batch normalization.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("rule", "batchnorm"), [("sgd", True), ("sgd_momentum", True), ("adam", False)])
def test_the_step_equals_the_course_loop(backend_name, dtype, rule, batchnorm, monkeypatch):
    """20 steps across three epoch ends (learning rate decayed), eager and, where the backend compiles, compiled:
    the course's parameters, statistics and losses."""
    if dtype == "float32" and rule != "sgd_momentum":
        # The torch session traces steps without generating code (noxfile); here Inductor's generated code itself
        # is checked, in the dtype nets train in, on both ways a step updates (SGD's scaled backward pass, a rule).
        monkeypatch.delenv("ANYNET_TORCH_COMPILE_BACKEND", raising=False)
    course, course_losses, configs = _course_loop(backend_name, dtype, rule, batchnorm=batchnorm)
    rtol = tolerance(dtype)
    for compile in (False, True) if backends.get(backend_name).can_compile else (False,):
        solver = _last(_solver(backend_name, dtype, compile, rule, batchnorm=batchnorm))
        solver.train()
        assert solver.compiled == compile
        assert solver.optimizer.single_rate() == (rule == "sgd")  # plain SGD backpropagates loss * -learning_rate
        _assert_same_params(course.params, solver.last_params, rtol)
        assert len(course.bn_params) == (2 if batchnorm else 0)
        for bn_c, bn_s in zip(course.bn_params, solver.last_bn, strict=True):
            for key in ("running_mean", "running_var"):
                np.testing.assert_allclose(to_numpy(bn_c[key]), to_numpy(bn_s[key]), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(course_losses, solver.loss_history, rtol=rtol)
        if rule == "adam":
            assert solver.optim_configs["W1"]["t"] == 20
        assert solver.optim_configs["W1"]["learning_rate"] == pytest.approx(configs["W1"]["learning_rate"])


def test_sgd_with_a_learning_rate_per_parameter(backend_name, dtype="float64"):
    """The step backpropagates the loss scaled by the learning rate only when there is one: given a rate per
    parameter, it applies the rule to each gradient, as the course does."""
    course, _, _ = _course_loop(backend_name, dtype, "sgd", rates={"W2": 3e-2})
    solver = _last(_solver(backend_name, dtype, "auto", "sgd"))
    solver.optim_configs["W2"]["learning_rate"] = 3e-2
    solver.train()
    assert not solver.optimizer.single_rate()
    _assert_same_params(course.params, solver.last_params, tolerance(dtype))
    assert solver.optim_configs["W2"]["learning_rate"] == pytest.approx(3e-2 * 0.9 ** 3)


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


def test_dropout_masks_come_from_the_carried_state_eager_and_compiled(backend_name):
    """The same seed gives the same run, another seed another, eager and (where the backend compiles) compiled."""
    for compile in (False, True) if backends.get(backend_name).can_compile else (False,):
        runs = []
        for seed in (7, 7, 8):
            solver = _solver(backend_name, "float32", compile, iterations=12, dropout=0.3)
            solver.seed = seed
            solver.train()
            runs.append(solver)
        assert all(np.isfinite(run.loss_history).all() for run in runs)
        assert runs[0].loss_history == runs[1].loss_history
        assert runs[0].loss_history != runs[2].loss_history


def test_the_numpy_draw_gives_the_generic_hashs_bits():
    """NumPy computes the counter-based hash in place in uint32: the very bits of the generic int64 version, also
    where the counter passes 2**32."""
    numpy = backends.get("numpy")
    state = numpy.rng_state(11)
    state["counter"] = state["counter"] + (2**32 - 50)
    for dtype in (np.float32, np.float64):
        fast, fast_next = numpy.uniform(state, (30, 7), dtype)
        slow, slow_next = backends.Backend.uniform(numpy, state, (30, 7), dtype)
        assert fast.dtype == dtype and fast.shape == (30, 7)
        np.testing.assert_array_equal(fast, slow)
        assert int(fast_next["counter"]) == int(slow_next["counter"]) == int(state["counter"]) + 210


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
    def own_rule(w, dw, config):
        return anynet.optim.sgd(w, dw, config)

    with pytest.raises(ValueError, match="only the update rules of anynet.optim are compiled"):
        anynet.Solver(model, _data(), update_rule=own_rule, compile=True, verbose=False)
    solver = anynet.Solver(model, _data(), update_rule=own_rule, compile="auto", verbose=False)
    assert not solver.compiled  # a rule of your own runs eagerly
    # anynet's own rule given as the function itself is the same rule: it compiles.
    assert anynet.Solver(model, _data(), update_rule=anynet.optim.sgd, compile=True, verbose=False).compiled


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


def test_compiled_steps_live_in_the_cache_and_go_with_their_model(backend_name):
    """Not in the model's __dict__: one cache, keyed by the model (weakly), the statics and the shapes."""
    _compiling_backend(backend_name)
    solver = _solver(backend_name, "float32", True, iterations=3)
    solver.train()
    model = solver.model
    assert compiled.cached(model) == 1
    assert not any(callable(v) and hasattr(v, "compiled") for v in vars(model).values())
    model.reg = 0.5  # another constant: another compiled step
    solver.num_iterations = 4
    solver.train()
    assert compiled.cached(model) == 2
    gone = weakref.ref(model)
    del solver, model
    gc.collect()
    assert gone() is None


def test_a_model_with_only_the_course_loss_trains_through_the_same_step(backend_name):
    """A model of your own: the step sets its parameters and calls its loss; it runs eagerly, with any rule."""
    inner = _model(backend_name, "float64", batchnorm=False)

    class CourseStyle:
        def __init__(self):
            self.params, self.xp, self.device = inner.params, inner.xp, inner.device

        def loss(self, X, y=None):
            inner.params = self.params
            return inner.loss(X, y)

    course, course_losses, _ = _course_loop(backend_name, "float64", "sgd_momentum", batchnorm=False)
    model = CourseStyle()
    solver = _last(anynet.Solver(model, _data(), update_rule="sgd_momentum", optim_config={"learning_rate": 1e-2},
                                 lr_decay=0.9, batch_size=40, num_iterations=20, verbose=False, seed=7))
    assert not solver.compiled
    with pytest.raises(ValueError, match="cannot be honoured"):
        anynet.Solver(model, _data(), compile=True, verbose=False)
    solver.train()
    _assert_same_params(course.params, solver.last_params, 1e-10)
    np.testing.assert_allclose(course_losses, solver.loss_history, rtol=1e-10)
