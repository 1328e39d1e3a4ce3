"""Spatial batch, layer and spatial group normalization: float64 NumPy references and numerical gradients,
on every backend."""

import numpy as np
import pytest
from layer_checks import float32_pass, put, rel_error

from anynet.backends import name_of, to_numpy
from anynet.nn.gradient_check import eval_numerical_gradient_array
from anynet.nn.normalization import (
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

# Few shapes, reused by every test (spatial batch normalization's that of test_conv and test_pooling): JAX compiles
# every operation again at every new shape.
BN_SHAPE = (2, 2, 3, 4)  # test_conv's x, and the output of its sandwiches' convolution
GN_SHAPE = (2, 4, 3, 3)  # two groups of two channels
LN_SHAPE = (4, 5)


def _normalize(x, axes, eps=1e-5):
    """``x`` less its mean over ``axes``, over its (biased) standard deviation, in float64 NumPy."""
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


def _inputs(shape, param_shape, seed):
    """Host ``x`` (offset and scaled, as real activations are), ``gamma``, ``beta`` and ``dout``."""
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal(shape) + 2
    return x, 1 + 0.5 * rng.standard_normal(param_shape), rng.standard_normal(param_shape), rng.standard_normal(shape)


def _check_numeric(forward, args, rest, grads, dout):
    """Compare ``grads`` with the numerical gradients of ``sum(forward(*args, *rest)[0] * dout)``."""
    for i, analytic in enumerate(grads):
        numeric = eval_numerical_gradient_array(lambda v, i=i: forward(*args[:i], v, *args[i + 1:], *rest)[0],
                                                args[i], dout)
        assert tuple(analytic.shape) == tuple(args[i].shape)
        assert rel_error(analytic, numeric) < 1e-7


# ---------------------------------------------------------------- spatial batch normalization


def test_spatial_batchnorm_train(xp, device):
    x, gamma, beta, dout = _inputs(BN_SHAPE, BN_SHAPE[1], seed=0)
    args = [put(xp, device, a) for a in (x, gamma, beta)]
    bn_param = {"mode": "train", "momentum": 0.8}
    out, cache = spatial_batchnorm_forward(*args, bn_param)
    want = gamma[:, None, None] * _normalize(x, (0, 2, 3)) + beta[:, None, None]
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-10, atol=1e-12)
    # Running statistics per channel, as batchnorm_forward keeps them, on the input's backend.
    np.testing.assert_allclose(to_numpy(bn_param["running_mean"]), 0.2 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(bn_param["running_var"]), 0.8 + 0.2 * x.var(axis=(0, 2, 3)), rtol=1e-12)
    assert name_of(bn_param["running_mean"]) == name_of(args[0])
    doutd = put(xp, device, dout)
    grads = spatial_batchnorm_backward(doutd, cache)
    _check_numeric(spatial_batchnorm_forward, args, [{"mode": "train"}], grads, doutd)


def test_spatial_batchnorm_test_mode(xp, device):
    x, gamma, beta, _ = _inputs(BN_SHAPE, BN_SHAPE[1], seed=1)
    C = BN_SHAPE[1]
    mean, var = np.linspace(-1, 1, C), np.linspace(0.5, 2, C)
    bn_param = {"mode": "test", "running_mean": put(xp, device, mean), "running_var": put(xp, device, var)}
    out, cache = spatial_batchnorm_forward(*(put(xp, device, a) for a in (x, gamma, beta)), bn_param)
    want = gamma[:, None, None] * (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) + beta[:, None, None]
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-10, atol=1e-12)
    assert cache is None
    with pytest.raises(ValueError, match="train mode"):
        spatial_batchnorm_backward(out, cache)


def test_spatial_batchnorm_rejects_bad_shapes(xp, device):
    x = put(xp, device, np.ones(BN_SHAPE))
    ones = put(xp, device, np.ones(2))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        spatial_batchnorm_forward(x[0, ...], ones, ones, {"mode": "train"})
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(2,\)"):
        spatial_batchnorm_forward(x, ones[:1], ones[:1], {"mode": "train"})


# ---------------------------------------------------------------- layer normalization


def test_layernorm(xp, device):
    x, gamma, beta, dout = _inputs(LN_SHAPE, LN_SHAPE[1], seed=2)
    args = [put(xp, device, a) for a in (x, gamma, beta)]
    for ln_param, eps in (({}, 1e-5), ({"eps": 0.5}, 0.5)):
        out, cache = layernorm_forward(*args, ln_param)
        np.testing.assert_allclose(to_numpy(out), gamma * _normalize(x, 1, eps) + beta, rtol=1e-10, atol=1e-12)
    # Each row of the normalized output has mean 0 and variance 1 (less eps's share).
    xhat = to_numpy(layernorm_forward(args[0], *(put(xp, device, a) for a in (np.ones(5), np.zeros(5))), {})[0])
    np.testing.assert_allclose(xhat.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(xhat.var(axis=1), x.var(axis=1) / (x.var(axis=1) + 1e-5), rtol=1e-12)
    doutd = put(xp, device, dout)
    grads = layernorm_backward(doutd, layernorm_forward(*args, {})[1])
    _check_numeric(layernorm_forward, args, [{}], grads, doutd)


def test_layernorm_rejects_bad_shapes_and_eps(xp, device):
    x = put(xp, device, np.ones(LN_SHAPE))
    ones = put(xp, device, np.ones(5))
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        layernorm_forward(x[0, ...], ones, ones, {})
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(5,\) for x of shape \(4, 5\)"):
        layernorm_forward(x, ones[:4], ones, {})
    with pytest.raises(ValueError, match=r'ln_param\["eps"\] must be a number in \(0'):
        layernorm_forward(x, ones, ones, {"eps": 0})
    _, cache = layernorm_forward(x, ones, ones, {})
    with pytest.raises(ValueError, match=r"dout must have shape \(4, 5\)"):
        layernorm_backward(x[:2, ...], cache)


# ---------------------------------------------------------------- spatial group normalization


@pytest.mark.parametrize("G", [1, 2, 4])
def test_spatial_groupnorm(xp, device, G):
    C = GN_SHAPE[1]
    x, gamma, beta, dout = _inputs(GN_SHAPE, (1, C, 1, 1), seed=3 + G)
    args = [put(xp, device, a) for a in (x, gamma, beta)]
    out, cache = spatial_groupnorm_forward(*args, G, {})
    N, _, H, W = GN_SHAPE
    want = gamma * _normalize(x.reshape(N, G, C // G, H, W), (2, 3, 4)).reshape(GN_SHAPE) + beta
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-10, atol=1e-12)
    if G == 2:  # one numerical check: the others differ only in a reshape
        doutd = put(xp, device, dout)
        _check_numeric(spatial_groupnorm_forward, args, [G, {}], spatial_groupnorm_backward(doutd, cache), doutd)


def test_spatial_groupnorm_eps(xp, device):
    x, gamma, beta, _ = _inputs(GN_SHAPE, (1, 4, 1, 1), seed=7)
    out, _ = spatial_groupnorm_forward(*(put(xp, device, a) for a in (x, gamma, beta)), 2, {"eps": 0.5})
    want = gamma * _normalize(x.reshape(2, 2, 2, 3, 3), (2, 3, 4), eps=0.5).reshape(GN_SHAPE) + beta
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-10, atol=1e-12)


def test_spatial_groupnorm_rejects_bad_shapes_and_params(xp, device):
    x = put(xp, device, np.ones(GN_SHAPE))
    ones = put(xp, device, np.ones((1, 4, 1, 1)))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        spatial_groupnorm_forward(x[0, ...], ones, ones, 2, {})
    with pytest.raises(ValueError, match="G must divide the number of channels 4 of x"):
        spatial_groupnorm_forward(x, ones, ones, 3, {})
    with pytest.raises(ValueError, match="G must be a positive integer; got 0"):
        spatial_groupnorm_forward(x, ones, ones, 0, {})
    with pytest.raises(TypeError, match="G must be a positive integer; got 2.0"):
        spatial_groupnorm_forward(x, ones, ones, 2.0, {})
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(1, 4, 1, 1\)"):
        spatial_groupnorm_forward(x, ones[0, :, 0, 0], ones[0, :, 0, 0], 2, {})
    with pytest.raises(ValueError, match=r'gn_param\["eps"\] must be a number in \(0'):
        spatial_groupnorm_forward(x, ones, ones, 2, {"eps": -1.0})


def test_float32_stays_float32(backend_name, xp, device):
    for forward, backward, shape, param_shape, rest in (
        (spatial_batchnorm_forward, spatial_batchnorm_backward, BN_SHAPE, (2,), [{"mode": "train"}]),
        (layernorm_forward, layernorm_backward, LN_SHAPE, (5,), [{}]),
        (spatial_groupnorm_forward, spatial_groupnorm_backward, GN_SHAPE, (1, 4, 1, 1), [2, {}]),
    ):
        args = [xp.asarray(a, dtype=xp.float32, device=device) for a in _inputs(shape, param_shape, 0)]
        results = float32_pass(backend_name, forward, backward, *args, rest=rest)
        assert len(results) == 4 and all(a.dtype == xp.float32 for a in results)
