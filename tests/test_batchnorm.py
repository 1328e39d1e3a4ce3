"""Batch normalization: layer gradients, running statistics, and nets using it, on every backend."""

import numpy as np
import pytest
from array_api_compat import device as device_of
from conftest import param_loss, tolerance

from anynet import FullyConnectedNet, backends, load_model, save_model
from anynet.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from anynet.layer_utils import affine_batchnorm_relu_backward, affine_batchnorm_relu_forward
from anynet.layers import batchnorm_backward, batchnorm_backward_alt, batchnorm_forward

BACKWARDS = [batchnorm_backward, batchnorm_backward_alt]


def _put(xp, device, a, dtype=np.float64):
    """``a`` as an array of ``xp`` on ``device``."""
    return xp.asarray(np.asarray(a, dtype=dtype), device=device)


def _np(x):
    """``x`` on the host as float64 NumPy."""
    return np.asarray(backends.to_numpy(x), dtype=np.float64)


def _bn_reference(x, gamma, beta, eps=1e-5):
    """Train-mode batch normalization in float64 NumPy, with its batch mean and (biased) variance."""
    mu, var = x.mean(axis=0), x.var(axis=0)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, mu, var


def _layer_inputs(xp, device, N=6, D=4, seed=0):
    """Random float64 ``x`` (offset and scaled, as real activations are), ``gamma``, ``beta``, ``dout``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)) * 3 + 5
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)
    dout = rng.standard_normal((N, D))
    return x, gamma, beta, dout, [_put(xp, device, a) for a in (x, gamma, beta, dout)]


# ---------------------------------------------------------------- the layer


def test_forward_train_matches_numpy(xp, device):
    x, gamma, beta, _, (xd, gd, bd, _) = _layer_inputs(xp, device)
    out, _ = batchnorm_forward(xd, gd, bd, {"mode": "train"})
    want, _, _ = _bn_reference(x, gamma, beta)
    np.testing.assert_allclose(_np(out), want, rtol=1e-12, atol=1e-12)
    # Per feature, the output has mean beta and standard deviation ~gamma.
    np.testing.assert_allclose(_np(out).mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(_np(out).std(axis=0), np.abs(gamma), rtol=1e-5)


@pytest.mark.parametrize("backward", BACKWARDS, ids=lambda f: f.__name__)
def test_backward_gradient_check(xp, device, backward):
    _, _, _, _, (x, gamma, beta, dout) = _layer_inputs(xp, device)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx, dgamma, dbeta = backward(dout, cache)

    def f(x_, gamma_, beta_):
        return batchnorm_forward(x_, gamma_, beta_, {"mode": "train"})[0]

    dx_num = eval_numerical_gradient_array(lambda a: f(a, gamma, beta), x, dout)
    dgamma_num = eval_numerical_gradient_array(lambda a: f(x, a, beta), gamma, dout)
    dbeta_num = eval_numerical_gradient_array(lambda a: f(x, gamma, a), beta, dout)
    assert rel_error(dx_num, dx) < 1e-7
    assert rel_error(dgamma_num, dgamma) < 1e-8
    assert rel_error(dbeta_num, dbeta) < 1e-8
    assert all(backends.name_of(g) == backends.name_of(x) for g in (dx, dgamma, dbeta))


def test_backward_versions_agree(xp, device):
    _, _, _, _, (x, gamma, beta, dout) = _layer_inputs(xp, device, N=50, D=7, seed=1)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for a, b in zip(batchnorm_backward(dout, cache), batchnorm_backward_alt(dout, cache), strict=True):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-10, atol=1e-13)


def test_backward_float32_stays_float32(xp, device):
    x, gamma, beta, dout, _ = _layer_inputs(xp, device)
    args = [_put(xp, device, a, np.float32) for a in (x, gamma, beta)]
    out, cache = batchnorm_forward(*args, {"mode": "train"})
    assert out.dtype == xp.float32
    for backward in BACKWARDS:
        for g in backward(_put(xp, device, dout, np.float32), cache):
            assert g.dtype == xp.float32


def test_running_statistics(xp, device):
    rng = np.random.default_rng(2)
    D, momentum = 3, 0.7
    gamma, beta = np.ones(D), np.zeros(D)
    bn_param = {"mode": "train", "momentum": momentum}
    want_mean, want_var = np.zeros(D), np.ones(D)
    for step in range(4):
        x = rng.standard_normal((8, D)) * (step + 1) + step
        xd = _put(xp, device, x)
        batchnorm_forward(xd, _put(xp, device, gamma), _put(xp, device, beta), bn_param)
        if step == 0:
            # Created on first use, on the input's device and in its dtype.
            for key in ("running_mean", "running_var"):
                assert backends.name_of(bn_param[key]) == backends.name_of(xd)
                assert device_of(bn_param[key]) == device_of(xd)
                assert bn_param[key].dtype == xd.dtype
        want_mean = momentum * want_mean + (1 - momentum) * x.mean(axis=0)
        want_var = momentum * want_var + (1 - momentum) * x.var(axis=0)
        np.testing.assert_allclose(_np(bn_param["running_mean"]), want_mean, rtol=1e-12)
        np.testing.assert_allclose(_np(bn_param["running_var"]), want_var, rtol=1e-12)


def test_default_momentum_is_0_9(xp, device):
    x = np.random.default_rng(3).standard_normal((5, 2)) + 4
    bn_param = {"mode": "train"}
    batchnorm_forward(_put(xp, device, x), _put(xp, device, np.ones(2)), _put(xp, device, np.zeros(2)), bn_param)
    np.testing.assert_allclose(_np(bn_param["running_mean"]), 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(_np(bn_param["running_var"]), 0.9 + 0.1 * x.var(axis=0), rtol=1e-12)


def test_partial_state_is_completed(xp, device):
    # A bn_param holding only a running mean gets a running variance of ones.
    x = np.random.default_rng(7).standard_normal((5, 2))
    bn_param = {"mode": "test", "running_mean": _put(xp, device, [1.0, -1.0])}
    out, _ = batchnorm_forward(_put(xp, device, x), _put(xp, device, np.ones(2)), _put(xp, device, np.zeros(2)),
                               bn_param)
    np.testing.assert_allclose(_np(bn_param["running_var"]), np.ones(2))
    np.testing.assert_allclose(_np(out), (x - [1.0, -1.0]) / np.sqrt(1 + 1e-5), rtol=1e-12)


def test_test_mode_uses_running_statistics(xp, device):
    rng = np.random.default_rng(4)
    x, gamma, beta = rng.standard_normal((6, 3)), rng.standard_normal(3), rng.standard_normal(3)
    rm, rv, eps = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), 1e-3
    bn_param = {"mode": "test", "eps": eps, "running_mean": _put(xp, device, rm), "running_var": _put(xp, device, rv)}
    out, _ = batchnorm_forward(_put(xp, device, x), _put(xp, device, gamma), _put(xp, device, beta), bn_param)
    np.testing.assert_allclose(_np(out), gamma * (x - rm) / np.sqrt(rv + eps) + beta, rtol=1e-12)
    # Test mode leaves the statistics alone.
    np.testing.assert_allclose(_np(bn_param["running_mean"]), rm, rtol=0)
    np.testing.assert_allclose(_np(bn_param["running_var"]), rv, rtol=0)


def test_test_mode_after_training_normalizes_the_distribution(xp, device):
    # After many training batches from one distribution, test mode maps fresh
    # samples of it to roughly zero mean and unit variance per feature.
    rng = np.random.default_rng(5)
    scale, shift = np.array([1.0, 5.0, 0.2]), np.array([-3.0, 10.0, 0.5])
    ones, zeros = _put(xp, device, np.ones(3)), _put(xp, device, np.zeros(3))
    bn_param = {"mode": "train"}
    for _ in range(100):
        batchnorm_forward(_put(xp, device, rng.standard_normal((200, 3)) * scale + shift), ones, zeros, bn_param)
    bn_param["mode"] = "test"
    out, _ = batchnorm_forward(_put(xp, device, rng.standard_normal((2000, 3)) * scale + shift), ones, zeros, bn_param)
    out = _np(out)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=0.1)


def test_bad_parameters(xp, device):
    x, ones, zeros = _put(xp, device, np.ones((4, 2))), _put(xp, device, np.ones(2)), _put(xp, device, np.zeros(2))
    with pytest.raises(ValueError, match="mode"):
        batchnorm_forward(x, ones, zeros, {"mode": "eval"})
    with pytest.raises(ValueError, match="mode"):
        batchnorm_forward(x, ones, zeros, {})
    for key, bad in [("eps", 0.0), ("eps", -1e-5), ("eps", "1e-5"), ("momentum", 1.5), ("momentum", -0.1),
                     ("momentum", float("nan"))]:
        bn_param = {"mode": "train", key: bad}
        with pytest.raises(ValueError, match=key):
            batchnorm_forward(x, ones, zeros, bn_param)
        assert "running_mean" not in bn_param  # nothing half-done
    with pytest.raises(ValueError, match="x must have 2"):
        batchnorm_forward(_put(xp, device, np.ones((4, 2, 1))), ones, zeros, {"mode": "train"})


def test_affine_batchnorm_relu_sandwich(xp, device):
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    gamma, beta, dout = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal((5, 3))
    xd, wd, bd, gd, betad, doutd = (_put(xp, device, a) for a in (x, w, b, gamma, beta, dout))
    out, cache = affine_batchnorm_relu_forward(xd, wd, bd, gd, betad, {"mode": "train"})
    bn, _, _ = _bn_reference(x @ w + b, gamma, beta)
    np.testing.assert_allclose(_np(out), np.maximum(bn, 0), rtol=1e-12, atol=1e-12)
    dx, dw, db, dgamma, dbeta = affine_batchnorm_relu_backward(doutd, cache)

    def f(x_=xd, w_=wd, b_=bd, g_=gd, be_=betad):
        return affine_batchnorm_relu_forward(x_, w_, b_, g_, be_, {"mode": "train"})[0]

    assert rel_error(eval_numerical_gradient_array(lambda a: f(x_=a), xd, doutd), dx) < 1e-7
    assert rel_error(eval_numerical_gradient_array(lambda a: f(w_=a), wd, doutd), dw) < 1e-7
    assert rel_error(eval_numerical_gradient_array(lambda a: f(g_=a), gd, doutd), dgamma) < 1e-7
    assert rel_error(eval_numerical_gradient_array(lambda a: f(be_=a), betad, doutd), dbeta) < 1e-7
    # b shifts every row of a feature alike, which batch normalization removes.
    assert np.abs(_np(db)).max() < 1e-12


# ---------------------------------------------------------------- nets with batch normalization


def _data(N=6, D=5, C=4, seed=0):
    """Small float64 inputs and integer labels on the host."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.integers(0, C, N)


def _check_net_gradients(model, X, y, h=1e-5):
    """Numerical gradients of every parameter of ``model`` agree with ``model.loss``."""
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params)
    for name in sorted(model.params):
        num = eval_numerical_gradient(param_loss(model, name, X, y), model.params[name], verbose=False, h=h)
        if name[0] == "b" and name[1:].isdigit() and model.use_batchnorm and int(name[1:]) < model.num_layers:
            # A bias right before batch normalization has an exactly-zero gradient.
            assert np.abs(_np(num)).max() < 1e-8, name
            assert np.abs(_np(grads[name])).max() < 1e-10, name
        else:
            assert rel_error(num, grads[name]) < 1e-6, name


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_net_with_batchnorm_gradient_check(backend_name, reg):
    X, y = _data()
    model = FullyConnectedNet(
        [7, 5], input_dim=5, num_classes=4, use_batchnorm=True, reg=reg,
        weight_scale=0.5, dtype="float64", seed=1, backend=backend_name,
    )
    assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(model.params)
    assert "gamma3" not in model.params and len(model.bn_params) == 2
    _check_net_gradients(model, X, y)


def test_net_gamma_beta_start_at_one_zero_and_are_not_regularized(backend_name):
    X, y = _data()
    kwargs = dict(input_dim=5, num_classes=4, use_batchnorm=True, weight_scale=0.5, dtype="float64",
                  seed=2, backend=backend_name)
    plain = FullyConnectedNet([6], **kwargs)
    np.testing.assert_array_equal(_np(plain.params["gamma1"]), np.ones(6))
    np.testing.assert_array_equal(_np(plain.params["beta1"]), np.zeros(6))
    rng = np.random.default_rng(3)
    for name in ("gamma1", "beta1"):
        plain.params[name] = _put(plain.xp, plain.device, rng.uniform(0.5, 2.0, 6))
    reg = FullyConnectedNet([6], reg=0.3, **kwargs)
    reg.params = dict(plain.params)
    loss0, grads0 = plain.loss(X, y)
    loss1, grads1 = reg.loss(X, y)
    penalty = 0.5 * 0.3 * sum(np.sum(_np(plain.params[f"W{i}"]) ** 2) for i in (1, 2))
    np.testing.assert_allclose(_np(loss1), _np(loss0) + penalty, rtol=1e-12)
    for name in ("gamma1", "beta1", "b2"):
        np.testing.assert_allclose(_np(grads1[name]), _np(grads0[name]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_np(grads1["W1"]), _np(grads0["W1"]) + 0.3 * _np(plain.params["W1"]), rtol=1e-12)


def test_net_modes_and_running_statistics(backend_name):
    X, y = _data(N=8)
    model = FullyConnectedNet([6, 5], input_dim=5, num_classes=4, use_batchnorm=True, dtype="float64",
                              weight_scale=0.5, seed=3, backend=backend_name)
    model.loss(X, y)
    assert all(bn["mode"] == "train" for bn in model.bn_params)
    # The first hidden layer's statistics follow the momentum rule on its affine output.
    a1 = X @ _np(model.params["W1"]) + _np(model.params["b1"])
    np.testing.assert_allclose(_np(model.bn_params[0]["running_mean"]), 0.1 * a1.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(_np(model.bn_params[0]["running_var"]), 0.9 + 0.1 * a1.var(axis=0), rtol=1e-12)
    for bn in model.bn_params:
        assert device_of(bn["running_mean"]) == model.device
    before = [(_np(bn["running_mean"]), _np(bn["running_var"])) for bn in model.bn_params]
    scores = model.loss(X)  # no labels: test mode, statistics untouched
    assert all(bn["mode"] == "test" for bn in model.bn_params)
    for bn, (m, v) in zip(model.bn_params, before, strict=True):
        np.testing.assert_array_equal(_np(bn["running_mean"]), m)
        np.testing.assert_array_equal(_np(bn["running_var"]), v)
    # Test mode normalizes with the running statistics, not the batch's.
    W, b = [_np(model.params[f"W{i}"]) for i in (1, 2, 3)], [_np(model.params[f"b{i}"]) for i in (1, 2, 3)]
    h = X
    for i in range(2):
        m, v = before[i]
        h = np.maximum((h @ W[i] + b[i] - m) / np.sqrt(v + 1e-5), 0)  # gamma 1, beta 0
    np.testing.assert_allclose(_np(scores), h @ W[2] + b[2], rtol=1e-10, atol=1e-12)
    # ... so one image is scored the same alone as within a batch.
    np.testing.assert_allclose(_np(model.loss(X[:1]))[0], _np(scores)[0], rtol=1e-12)


def test_running_statistics_survive_a_checkpoint(backend_name, tmp_path):
    X, y = _data(N=8)
    model = FullyConnectedNet([6], input_dim=5, num_classes=4, use_batchnorm=True, dtype="float64",
                              weight_scale=0.5, seed=4, backend=backend_name)
    for _ in range(3):
        model.loss(X, y)
    save_model(model, tmp_path / "bn.npz")
    loaded = load_model(tmp_path / "bn.npz", backend=backend_name)
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(_np(loaded.bn_params[0][key]), _np(model.bn_params[0][key]))
    np.testing.assert_array_equal(_np(loaded.loss(X)), _np(model.loss(X)))


def test_net_cross_backend_equivalence(backend_name):
    """Same seed, float64: every backend computes numpy's scores, loss and gradients."""
    rtol = tolerance("float64")
    X, y = _data(N=10, D=8, C=5)
    kwargs = dict(input_dim=8, num_classes=5, use_batchnorm=True, reg=0.1, weight_scale=0.3, dtype="float64", seed=5)
    ref = FullyConnectedNet([9, 7], backend="numpy", **kwargs)
    model = FullyConnectedNet([9, 7], backend=backend_name, **kwargs)
    for name in ref.params:
        np.testing.assert_array_equal(_np(model.params[name]), _np(ref.params[name]))
    ref_loss, ref_grads = ref.loss(X, y)
    loss, grads = model.loss(X, y)
    np.testing.assert_allclose(_np(loss), _np(ref_loss), rtol=rtol)
    for name, g in ref_grads.items():
        scale = np.abs(_np(g)).max()
        np.testing.assert_allclose(_np(grads[name]), _np(g), rtol=rtol, atol=rtol * scale * 1e-3 + 1e-15,
                                   err_msg=name)
    for bn, ref_bn in zip(model.bn_params, ref.bn_params, strict=True):
        np.testing.assert_allclose(_np(bn["running_var"]), _np(ref_bn["running_var"]), rtol=rtol)
    np.testing.assert_allclose(_np(model.loss(X)), _np(ref.loss(X)), rtol=rtol, atol=1e-13)
