"""Inverted dropout: masks, scaling, modes, gradients, and nets using it, on every backend."""

import math

import numpy as np
import pytest
from array_api_compat import device as device_of
from conftest import param_loss

from anynet import FullyConnectedNet, Generator, backends
from anynet.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from anynet.layers import dropout_backward, dropout_forward


def _put(xp, device, a, dtype=np.float64):
    """``a`` as an array of ``xp`` on ``device``."""
    return xp.asarray(np.asarray(a, dtype=dtype), device=device)


def _np(x):
    """``x`` on the host as float64 NumPy."""
    return np.asarray(backends.to_numpy(x), dtype=np.float64)


# ---------------------------------------------------------------- the layer


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_inverted_scaling_and_keep_rate(xp, device, p):
    x = np.random.default_rng(0).uniform(1.0, 2.0, (200, 100))  # never zero, so zeros mark dropped units
    out, _ = dropout_forward(_put(xp, device, x), {"p": p, "mode": "train", "seed": 1})
    out = _np(out)
    kept = out != 0
    # Kept units are scaled by exactly 1 / (1 - p).
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-15)
    # Units are kept with probability 1 - p (binomial: 5 standard deviations).
    n = x.size
    assert abs(kept.sum() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))
    # ... so the expectation is preserved.
    ratio = out.sum() / x.sum()
    assert abs(ratio - 1) < 5 * math.sqrt(p / (1 - p) / n) * 1.1


def test_expectation_preserved_over_masks(xp, device):
    # Averaged over many masks, each unit's output approaches its input.
    x = _put(xp, device, np.linspace(0.5, 3.0, 10))
    param = {"p": 0.4, "mode": "train", "rng": Generator(0, like=x)}
    mean = sum(_np(dropout_forward(x, param)[0]) for _ in range(2000)) / 2000
    # Standard deviation of the mean: x * sqrt(p / (1 - p) / 2000) ~ 0.018 x.
    np.testing.assert_allclose(mean, _np(x), rtol=0.1)


def test_same_seed_same_mask(xp, device):
    x = _put(xp, device, np.ones((30, 20)))
    a, _ = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 7})
    b, _ = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 7})
    c, _ = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 8})
    np.testing.assert_array_equal(_np(a), _np(b))
    assert not np.array_equal(_np(a), _np(c))


def test_rng_advances_between_calls(xp, device):
    x = _put(xp, device, np.ones((30, 20)))
    param = {"p": 0.5, "mode": "train", "rng": Generator(3, like=x)}
    a, _ = dropout_forward(x, param)
    b, _ = dropout_forward(x, param)
    assert not np.array_equal(_np(a), _np(b))
    # A generator with the same seed replays the same sequence of masks.
    replay = {"p": 0.5, "mode": "train", "rng": Generator(3, like=x)}
    np.testing.assert_array_equal(_np(dropout_forward(x, replay)[0]), _np(a))
    np.testing.assert_array_equal(_np(dropout_forward(x, replay)[0]), _np(b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_on_input_device_and_dtype(xp, device, dtype):
    x = _put(xp, device, np.ones((4, 5)), dtype)
    out, cache = dropout_forward(x, {"p": 0.3, "mode": "train", "seed": 0})
    dx = dropout_backward(_put(xp, device, np.ones((4, 5)), dtype), cache)
    for a in (out, dx):
        assert a.dtype == x.dtype and device_of(a) == device_of(x)
        assert backends.name_of(a) == backends.name_of(x)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_test_mode_is_identity(xp, device, p):
    x = np.random.default_rng(1).standard_normal((6, 5))
    out, cache = dropout_forward(_put(xp, device, x), {"p": p, "mode": "test", "seed": 0})
    np.testing.assert_array_equal(_np(out), x)
    dout = np.random.default_rng(2).standard_normal((6, 5))
    np.testing.assert_array_equal(_np(dropout_backward(_put(xp, device, dout), cache)), dout)


def test_p_zero_train_is_identity(xp, device):
    x = np.random.default_rng(3).standard_normal((6, 5))
    out, _ = dropout_forward(_put(xp, device, x), {"p": 0, "mode": "train"})
    np.testing.assert_array_equal(_np(out), x)


def test_backward_uses_the_forward_mask(xp, device):
    x = np.random.default_rng(4).uniform(1.0, 2.0, (8, 6))
    dout = np.random.default_rng(5).standard_normal((8, 6))
    out, cache = dropout_forward(_put(xp, device, x), {"p": 0.5, "mode": "train", "seed": 2})
    dx = _np(dropout_backward(_put(xp, device, dout), cache))
    mask = _np(out) / x  # 0 or 1 / (1 - p)
    np.testing.assert_allclose(dx, dout * mask, rtol=1e-14)


def test_gradient_check(xp, device):
    rng = np.random.default_rng(6)
    x = _put(xp, device, rng.standard_normal((7, 5)) + 10)
    dout = _put(xp, device, rng.standard_normal((7, 5)))
    param = {"p": 0.3, "mode": "train", "seed": 123}
    _, cache = dropout_forward(x, param)
    dx = dropout_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda a: dropout_forward(a, param)[0], x, dout)
    assert rel_error(dx_num, dx) < 1e-9


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, math.nan, "0.5", None, True])
def test_bad_p(p):
    with pytest.raises(ValueError, match="p"):
        dropout_forward(np.ones(3), {"p": p, "mode": "train"})


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        dropout_forward(np.ones(3), {"p": 0.5, "mode": "eval"})
    with pytest.raises(ValueError, match="mode"):
        dropout_forward(np.ones(3), {"p": 0.5})
    # Checked even when p = 0 makes the layer a no-op.
    with pytest.raises(ValueError, match="mode"):
        dropout_forward(np.ones(3), {"p": 0, "mode": "Train"})


# ---------------------------------------------------------------- nets with dropout


def _data(N=6, D=5, C=4, seed=0):
    """Small float64 inputs and integer labels on the host."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.integers(0, C, N)


@pytest.mark.parametrize("use_batchnorm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_net_gradient_check(backend_name, use_batchnorm, reg):
    X, y = _data()
    model = FullyConnectedNet(
        [7, 6], input_dim=5, num_classes=4, dropout=0.3, use_batchnorm=use_batchnorm, reg=reg,
        weight_scale=0.5, dtype="float64", seed=2, backend=backend_name,
    )
    # Nonzero biases: with zero ones, a row whose units all drop (or die) feeds
    # exactly 0 to the next ReLU, a kink where numerical gradients are meaningless.
    rng = np.random.default_rng(3)
    for i in (1, 2, 3):
        model.params[f"b{i}"] = model.xp.asarray(rng.uniform(0.1, 0.3, model.params[f"b{i}"].shape),
                                                 device=model.device)
    # With a seed (and no Solver) every call drops the same units.
    loss, grads = model.loss(X, y)
    np.testing.assert_array_equal(_np(model.loss(X, y)[0]), _np(loss))
    for name in sorted(model.params):
        num = eval_numerical_gradient(param_loss(model, name, X, y), model.params[name], verbose=False)
        if use_batchnorm and name in ("b1", "b2"):
            # Biases right before batch normalization have exactly-zero gradients.
            assert np.abs(_np(num)).max() < 1e-8 and np.abs(_np(grads[name])).max() < 1e-10, name
        else:
            assert rel_error(num, grads[name]) < 1e-6, name


def test_net_dropout_changes_training_loss_only(backend_name):
    X, y = _data(N=20)
    kwargs = dict(input_dim=5, num_classes=4, weight_scale=0.5, dtype="float64", seed=3, backend=backend_name)
    plain = FullyConnectedNet([30, 30], **kwargs)
    dropped = FullyConnectedNet([30, 30], dropout=0.5, **kwargs)
    # Same seed, same weights; without labels (test mode) dropout is off.
    np.testing.assert_array_equal(_np(dropped.loss(X)), _np(plain.loss(X)))
    # With labels (train mode) units are dropped, changing the loss.
    assert not np.isclose(_np(dropped.loss(X, y)[0]), _np(plain.loss(X, y)[0]))


def test_net_dropout_follows_the_solver_generator(backend_name):
    # The Solver sets model.rng; masks then come from it and change call to call.
    X, y = _data(N=20)
    model = FullyConnectedNet([30], input_dim=5, num_classes=4, dropout=0.5, weight_scale=0.5, dtype="float64",
                              seed=4, backend=backend_name)
    fixed = _np(model.loss(X, y)[0])
    model.rng = Generator(9, backend_name, model.device)
    a, b = _np(model.loss(X, y)[0]), _np(model.loss(X, y)[0])
    assert a != b and fixed not in (a, b)
    model.rng = Generator(9, backend_name, model.device)
    assert _np(model.loss(X, y)[0]) == a


def test_dropout_net_cross_backend_test_mode(backend_name):
    X, _ = _data(N=10)
    kwargs = dict(input_dim=5, num_classes=4, dropout=0.4, use_batchnorm=True, weight_scale=0.5,
                  dtype="float64", seed=5)
    ref = FullyConnectedNet([8], backend="numpy", **kwargs)
    model = FullyConnectedNet([8], backend=backend_name, **kwargs)
    np.testing.assert_allclose(_np(model.loss(X)), _np(ref.loss(X)), rtol=1e-10, atol=1e-13)
