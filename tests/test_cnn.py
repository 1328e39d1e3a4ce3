"""Convolutional nets (anynet.models.cnn) and the training a CNN needs: gradients, the compiled step, augmentation,
label smoothing, schedules, bfloat16, and a small ConvNet that overfits."""

import numpy as np
import pytest
from conftest import tolerance

import anynet
from anynet import backends
from anynet.backends import to_numpy
from anynet.models import ConvNet, ThreeLayerConvNet
from anynet.nn.gradient_check import eval_numerical_gradient, rel_error


def _images(N, C=3, H=8, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, C, H, H)), rng.integers(0, classes, N)


def _data(N=60, H=8, classes=10):
    X, y = _images(N + 20, H=H, classes=classes)
    return {"X_train": X[:N], "y_train": y[:N], "X_val": X[N:], "y_val": y[N:]}


def _check_gradients(model, X, y, names, tol=1e-6):
    """Every parameter in ``names``: the analytic gradient against centered differences (float64).

    On JAX, where each new shape compiles every operation of the check again, the gradients are held to the
    NumPy model's instead, which this same check holds to centered differences.
    """
    loss, grads = model.loss(X, y)
    if model.backend.name == "jax":
        twin = type(model)(**{**model.config, "backend": "numpy"})
        twin.reg = model.reg
        _, want = twin.loss(X, y)
        for name in names:
            np.testing.assert_allclose(to_numpy(grads[name]), want[name], rtol=1e-9, atol=1e-12, err_msg=name)
        return loss
    for name in names:
        original = model.params[name]

        def f(w, name=name, original=original):
            model.params[name] = w
            try:
                return model.loss(X, y)[0]
            finally:
                model.params[name] = original

        numeric = eval_numerical_gradient(f, original, verbose=False, h=1e-5)
        assert rel_error(grads[name], numeric) < tol, name
    return loss


def test_three_layer_conv_net_gradients_and_initial_loss(backend_name):
    """The course's checks: loss about log(10) at small weights, and every gradient numerically right."""
    kwargs = dict(input_dim=(3, 8, 8), num_filters=3, filter_size=3, hidden_dim=7, dtype="float64", seed=0,
                  backend=backend_name)
    X, y = _images(2, H=8)
    small = ThreeLayerConvNet(weight_scale=1e-3, **kwargs)
    assert float(small.loss(X, y)[0]) == pytest.approx(np.log(10), rel=1e-4)
    model = ThreeLayerConvNet(weight_scale=0.2, **kwargs)
    _check_gradients(model, X, y, sorted(model.params))
    model.reg = 0.5
    _check_gradients(model, X, y, ["W1", "W3", "b2"])


def test_conv_net_gradients_with_batchnorm_and_label_smoothing(backend_name):
    model = ConvNet(widths=(3, 4), convs_per_stage=1, input_dim=(2, 8, 8), num_classes=5, reg=0.1,
                    label_smoothing=0.2, dtype="float64", seed=1, backend=backend_name)
    X, y = _images(3, C=2, H=8, classes=5)
    _check_gradients(model, X, y, ["W1", "b1", "gamma1", "beta2", "W2", "W3", "b3"])
    assert tuple(model.params["W1"].shape) == (3, 2, 3, 3) and tuple(model.params["W3"].shape) == (4, 5)
    assert model.weight_names == ("W1", "W2", "W3")


def test_conv_net_with_the_pool_after_the_first_convolution_of_each_stage(backend_name):
    """airbench's block, conv - pool - conv: gradients right, and the second convolution on pooled positions."""
    model = ConvNet(widths=(3, 4), convs_per_stage=2, pool_after=1, input_dim=(2, 8, 8), num_classes=5,
                    dtype="float64", seed=1, backend=backend_name)
    X, y = _images(3, C=2, H=8, classes=5)
    _check_gradients(model, X, y, ["W1", "W2", "gamma2", "W4", "W5"])
    assert model.config["pool_after"] == 1 and tuple(model.params["W5"].shape) == (4, 5)
    with pytest.raises(ValueError, match="pool_after must be at most convs_per_stage"):
        ConvNet(convs_per_stage=2, pool_after=3)


def test_conv_net_arguments_are_checked():
    with pytest.raises(ValueError, match="filter_size must be odd"):
        ConvNet(filter_size=4)
    with pytest.raises(ValueError, match="multiples of 8"):
        ConvNet(widths=(4, 4, 4), input_dim=(3, 12, 12))
    with pytest.raises(ValueError, match="precision must be one of"):
        ConvNet(precision="float16")
    with pytest.raises(ValueError, match="bfloat16.*numpy backend has none"):
        ConvNet(precision="bfloat16", backend="numpy")
    with pytest.raises(TypeError, match="widths"):
        ConvNet(widths=64)
    with pytest.raises(ValueError, match="filter_size must be odd"):
        ThreeLayerConvNet(filter_size=6)


def _solver(backend_name, compile, iterations=8, augment=None, dtype="float64", **kwargs):
    model = ConvNet(widths=(4, 6), input_dim=(3, 8, 8), dtype=dtype, seed=2, backend=backend_name)
    return anynet.Solver(model, _data(), update_rule="sgd_momentum", optim_config={"learning_rate": 0.05},
                         batch_size=20, num_iterations=iterations, verbose=False, seed=4, compile=compile,
                         augment=augment, **kwargs)


def _last_params(solver):
    """Train, keeping the parameters of the last step (train ends with the best ones)."""
    kept = {}

    def keep(s, event):
        if event == "iteration" and s.t == s.num_iterations:
            kept.update({k: np.array(to_numpy(v), copy=True) for k, v in s.model.params.items()})

    solver.callback = keep
    solver.train()
    return kept


def test_compiled_conv_net_step_equals_the_eager_step(backend_name):
    """A ConvNet step with batch normalization, compiled and eager: the same parameters and losses."""
    if not backends.get(backend_name).can_compile:
        pytest.skip(f"the {backend_name} backend runs steps eagerly")
    eager, compiled = _solver(backend_name, False), _solver(backend_name, True)
    a, b = _last_params(eager), _last_params(compiled)
    assert compiled.compiled and not eager.compiled
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=tolerance("float64"), atol=1e-12, err_msg=k)
    np.testing.assert_allclose(compiled.loss_history, eager.loss_history, rtol=tolerance("float64"))


def test_augmented_runs_repeat_and_differ_from_unaugmented_ones(backend_name):
    runs = [_last_params(_solver(backend_name, "auto", augment=augment)) for augment in (True, True, None)]
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)
    assert any(not np.array_equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_schedule_warms_up_then_decays_to_zero():
    """Warm-up from 1/4 over 4 steps, then a cosine decay reaching 0 at the last step: plain SGD's updates shrink
    with it, and the last one is (almost) nothing."""
    from anynet.training.step import rate_factor

    xp = backends.get("numpy").xp
    factors = [float(rate_factor(xp, xp.asarray(float(t)), "cosine", 4, 12)) for t in range(13)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[12] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    linear = [float(rate_factor(xp, xp.asarray(float(t)), "linear", 0, 10)) for t in (0, 5, 10)]
    assert linear == pytest.approx([1.0, 0.5, 0.0])
    solver = _solver("numpy", False, iterations=6, lr_schedule="linear")
    params = []
    solver.callback = lambda s, e: params.append(np.array(s.model.params["W3"], copy=True))
    solver.train()
    steps = [np.abs(b - a).max() for a, b in zip(params, params[1:], strict=False)]
    assert steps[-1] < steps[0] / 3


@pytest.mark.parametrize("translate", [False, True])
def test_flip_test_averages_each_image_with_its_mirror_and_translate_test_with_its_shifts(backend_name, translate):
    """The count in the (compiled, where the backend compiles) step against NumPy views of the images."""
    solver = _solver(backend_name, "auto", iterations=3, flip_test=True, translate_test=translate)
    solver.train()
    X, y = to_numpy(solver.X_val), to_numpy(solver.y_val)
    model, to_device = solver.model, solver.backend.to_device

    def mirrored(images):
        return to_numpy(model.loss(to_device(images))) + to_numpy(model.loss(to_device(images[..., ::-1].copy())))

    scores = mirrored(X)
    if translate:  # one pixel down-right and up-left, zeros at the border
        padded = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
        scores = 2 * scores + mirrored(padded[..., :-2, :-2]) + mirrored(padded[..., 2:, 2:])
    accuracy = float(np.mean(scores.argmax(axis=1) == y))
    assert solver.check_accuracy(X, y) == pytest.approx(accuracy)


def test_weight_decay_reaches_the_weights_only():
    """Decoupled weight decay applies to the weights only (filters and matrices), as reg does: the Solver gives
    biases, gammas and betas a weight decay of 0, and plain SGD then takes the rule's way, not the scaled loss."""
    model = ConvNet(widths=(4,), input_dim=(3, 8, 8), dtype="float64", seed=2)
    solver = anynet.Solver(model, _data(), update_rule="sgd", optim_config={"learning_rate": 0.1, "weight_decay": 0.5},
                           batch_size=20, num_iterations=1, verbose=False, seed=4)
    assert not solver.optimizer.single_rate()
    configs = solver.optim_configs
    assert {p: configs[p]["weight_decay"] for p in model.params} == {
        p: (0.5 if p.startswith("W") else 0.0) for p in model.params}


def test_small_conv_net_overfits_one_hundred_images(backend_name):
    """The course's sanity check: a small ConvNet learns 100 training images (numpy and jax: CI time)."""
    if backend_name not in ("numpy", "jax"):
        pytest.skip("run on numpy and jax (CI time)")
    X, y = _images(120, H=16, seed=3)
    data = {"X_train": X[:100], "y_train": y[:100], "X_val": X[100:], "y_val": y[100:]}
    model = ConvNet(widths=(16, 32), input_dim=(3, 16, 16), seed=0, backend=backend_name)
    solver = anynet.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-2}, batch_size=25,
                           num_epochs=12, num_train_samples=None, verbose=False, seed=0)
    solver.train()
    assert solver.train_acc_history[-1] >= 0.9


def test_bfloat16_computes_convolutions_and_products_in_bfloat16_keeping_float32_parameters():
    if "torch" not in backends.available_backends():
        pytest.skip("torch cannot run here")
    kwargs = dict(widths=(4, 6), input_dim=(3, 8, 8), seed=2, backend="torch")
    low, full = ConvNet(precision="bfloat16", **kwargs), ConvNet(**kwargs)
    X, y = _images(20, H=8)
    loss_low, grads_low = low.loss(X, y)
    loss_full, grads_full = full.loss(X, y)
    assert all(g.dtype == low.params[k].dtype for k, g in grads_low.items())
    assert str(low.params["W1"].dtype) == "torch.float32" and str(loss_low.dtype) == "torch.float32"
    # bfloat16 keeps 8 bits of mantissa: close to float32, but not equal.
    assert float(loss_low) == pytest.approx(float(loss_full), rel=5e-2) and float(loss_low) != float(loss_full)
    # The last layers' gradients agree to bfloat16's precision; deeper ones pass through batch normalization's
    # backward pass, whose differences of nearly equal terms magnify rounding: there, the direction agrees.
    for name in ("W3", "b3", "gamma2"):
        difference = np.linalg.norm(to_numpy(grads_low[name]) - to_numpy(grads_full[name]))
        assert difference < 0.02 * np.linalg.norm(to_numpy(grads_full[name])), name
    a, b = (to_numpy(g["W1"]).ravel() for g in (grads_low, grads_full))
    assert a @ b > 0.95 * np.linalg.norm(a) * np.linalg.norm(b)
