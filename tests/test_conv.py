"""Convolutional layers and their sandwiches: the course's known answer, float64 NumPy loop references and
numerical gradients, on every backend."""

import numpy as np
import pytest
from layer_checks import float32_pass, put, rel_error

from anynet.backends import to_numpy
from anynet.nn.conv import conv_backward_fast, conv_backward_naive, conv_forward_fast, conv_forward_naive
from anynet.nn.conv_layers import (
    conv_bn_relu_backward,
    conv_bn_relu_forward,
    conv_relu_backward,
    conv_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)
from anynet.nn.gradient_check import eval_numerical_gradient_array

CONVS = [(conv_forward_naive, conv_backward_naive), (conv_forward_fast, conv_backward_fast)]
CONV_IDS = ["naive", "fast"]

# (x shape, w shape, stride, pad): with the known answer's stride 2 and pad 1, strides 1 and 2, pads 0 to 2, and
# non-square inputs and kernels. JAX compiles every operation again at every new shape (and the numerical gradient's
# own operations at every new shape of a checked argument), so the tests share few shapes: NUMERIC's output has the
# shape of its x, which test_pooling and test_normalization use too, so that the sandwiches' ReLU, pooling and
# normalization run on shapes compiled for already.
NUMERIC = ((2, 2, 3, 4), (2, 2, 3, 2), 2, 2)  # the numerical gradient checks' and the sandwiches'
STRIDE_1 = ((2, 2, 3, 4), (2, 2, 3, 2), 1, 0)  # one row of three windows
CONFIGS = [NUMERIC, STRIDE_1]


def _conv_reference(x, w, b, stride, pad):
    """Convolution written out in float64 NumPy, one output element at a time."""
    N, _, H, W = x.shape
    F, _, HH, WW = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    H_out, W_out = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    out = np.zeros((N, F, H_out, W_out))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = xpad[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out


def _conv_backward_reference(dout, x, w, stride, pad):
    """Gradients of ``_conv_reference``, scattered element by element in float64 NumPy."""
    N, _, H, W = x.shape
    F, _, HH, WW = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad, dw = np.zeros_like(xpad), np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
                    dxpad[n, :, rows, cols] += dout[n, f, i, j] * w[f]
                    dw[f] += dout[n, f, i, j] * xpad[n, :, rows, cols]
    return dxpad[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


def _random(x_shape, w_shape, stride, pad, seed=0):
    """Host ``x, w, b, dout`` for a convolution of these sizes."""
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    H_out = 1 + (x_shape[2] + 2 * pad - w_shape[2]) // stride
    W_out = 1 + (x_shape[3] + 2 * pad - w_shape[3]) // stride
    return x, w, b, rng.standard_normal((x_shape[0], w_shape[0], H_out, W_out))


def _numeric_grads(forward, args, dout, *rest):
    """Numerical gradients of ``sum(forward(*args, *rest)[0] * dout)`` with respect to each of ``args``."""

    def with_arg(i):
        return lambda v: forward(*args[:i], v, *args[i + 1:], *rest)[0]

    return [eval_numerical_gradient_array(with_arg(i), a, dout) for i, a in enumerate(args)]


# ---------------------------------------------------------------- values


def test_course_known_answer(xp, device):
    # CS231n assignment 2, ConvolutionalNetworks.ipynb, "Convolution: Naive forward pass".
    x = np.linspace(-0.1, 0.5, num=2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    w = np.linspace(-0.2, 0.3, num=3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    b = np.linspace(-0.1, 0.2, num=3)
    correct_out = np.array([[[[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
                             [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
                             [[0.50813986, 0.54309974], [0.64082444, 0.67101435]]],
                            [[[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
                             [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
                             [[2.36270298, 2.36904306], [2.38090835, 2.38247847]]]])
    reference = _conv_reference(x, w, b, stride=2, pad=1)
    # The notebook prints eight decimals: the loop reference agrees to their last digit.
    np.testing.assert_allclose(reference, correct_out, rtol=0, atol=5e-9)
    for forward, _ in CONVS:
        out, _ = forward(put(xp, device, x), put(xp, device, w), put(xp, device, b), {"stride": 2, "pad": 1})
        np.testing.assert_allclose(to_numpy(out), reference, rtol=1e-12, atol=1e-14)
        assert rel_error(out, correct_out) < 1e-7


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pad"), CONFIGS, ids=["stride2_pad2", "stride1_pad0"])
def test_forward_and_backward_match_reference(xp, device, x_shape, w_shape, stride, pad):
    x, w, b, dout = _random(x_shape, w_shape, stride, pad)
    want_out = _conv_reference(x, w, b, stride, pad)
    want_grads = _conv_backward_reference(dout, x, w, stride, pad)
    conv_param = {"stride": stride, "pad": pad}
    results = []
    for forward, backward in CONVS:
        out, cache = forward(*(put(xp, device, a) for a in (x, w, b)), conv_param)
        np.testing.assert_allclose(to_numpy(out), want_out, rtol=1e-12, atol=1e-12)
        grads = backward(put(xp, device, dout), cache)
        for got, want in zip(grads, want_grads, strict=True):
            assert tuple(got.shape) == want.shape
            np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-12)
        results.append([to_numpy(a) for a in (out, *grads)])
    # The fast pair computes what the naive pair does, to rounding.
    for naive, fast in zip(*results, strict=True):
        np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("forward", "backward"), CONVS, ids=CONV_IDS)
def test_backward_numeric(xp, device, forward, backward):
    x_shape, w_shape, stride, pad = NUMERIC
    x, w, b, dout = (put(xp, device, a) for a in _random(x_shape, w_shape, stride, pad, seed=1))
    conv_param = {"stride": stride, "pad": pad}
    _, cache = forward(x, w, b, conv_param)
    grads = backward(dout, cache)
    for analytic, numeric in zip(grads, _numeric_grads(forward, (x, w, b), dout, conv_param), strict=True):
        assert rel_error(analytic, numeric) < 1e-8


def test_float32_stays_float32(backend_name, xp, device):
    x_shape, w_shape, stride, pad = NUMERIC
    args = [xp.asarray(a, dtype=xp.float32, device=device) for a in _random(x_shape, w_shape, stride, pad)]
    # The fast pair: the naive one is a float64 reference.
    results = float32_pass(backend_name, conv_forward_fast, conv_backward_fast, *args,
                            rest=[{"stride": stride, "pad": pad}])
    assert len(results) == 4 and all(a.dtype == xp.float32 for a in results)


def test_inputs_are_not_changed(xp, device):
    x_shape, w_shape, stride, pad = NUMERIC
    host = _random(x_shape, w_shape, stride, pad)
    args = [put(xp, device, a) for a in host]
    for forward, backward in CONVS:
        _, cache = forward(*args[:3], {"stride": stride, "pad": pad})
        backward(args[3], cache)
    for a, h in zip(args, host, strict=True):
        np.testing.assert_array_equal(to_numpy(a), h)


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(("forward", "backward"), CONVS, ids=CONV_IDS)
def test_rejects_bad_shapes_and_params(xp, device, forward, backward):
    # The numerical checks' shapes: the checks come before any computation, and the one pass that runs (for the
    # cache) reuses what JAX compiled for them.
    x_shape, w_shape, stride, pad = NUMERIC
    x, w, b = (put(xp, device, np.ones(s)) for s in (x_shape, w_shape, (2,)))
    ok = {"stride": stride, "pad": pad}
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        forward(put(xp, device, np.ones((2, 3, 4))), w, b, ok)
    with pytest.raises(ValueError, match="w must have 4 dimensions"):
        forward(x, put(xp, device, np.ones((2, 12))), b, ok)
    with pytest.raises(ValueError, match="x has 2 channels but w expects 3"):
        forward(x, put(xp, device, np.ones((2, 3, 3, 2))), b, ok)
    with pytest.raises(ValueError, match=r"b must have shape \(2,\)"):
        forward(x, w, put(xp, device, np.ones(3)), ok)
    with pytest.raises(ValueError, match=r"conv_param \{'stride': 3, 'pad': 0\}.*width 4 \+ 2 \* 0 .* 2 is 2"):
        forward(x, w, b, {"stride": 3, "pad": 0})
    with pytest.raises(ValueError, match=r"height 3 \+ 2 \* 0 less the filter height 4 is -1"):
        forward(x, put(xp, device, np.ones((2, 2, 4, 1))), b, {"stride": 1, "pad": 0})
    with pytest.raises(ValueError, match=r'conv_param\["stride"\] must be a positive integer; got 0'):
        forward(x, w, b, {"stride": 0, "pad": 1})
    with pytest.raises(TypeError, match=r'conv_param\["stride"\] must be a positive integer; got 1.5'):
        forward(x, w, b, {"stride": 1.5, "pad": 1})
    with pytest.raises(ValueError, match=r'conv_param\["pad"\] must be a non-negative integer; got -1'):
        forward(x, w, b, {"stride": 1, "pad": -1})
    with pytest.raises(ValueError, match='conv_param must be a dict holding "stride" and "pad"'):
        forward(x, w, b, {"stride": 1})
    _, cache = forward(x, w, b, ok)
    with pytest.raises(ValueError, match=r"dout must have the shape of the forward output, \(2, 2, 3, 4\)"):
        backward(put(xp, device, np.ones((2, 2, 4, 3))), cache)


# ---------------------------------------------------------------- sandwiches


def _sandwich_inputs(seed):
    """Host ``x, w, b`` of the sandwiches' shapes, their reference convolution, ``conv_param`` and a generator."""
    x_shape, w_shape, stride, pad = NUMERIC
    x, w, b, _ = _random(x_shape, w_shape, stride, pad, seed=seed)
    return x, w, b, _conv_reference(x, w, b, stride, pad), {"stride": stride, "pad": pad}, np.random.default_rng(seed)


def _check_sandwich(xp, device, forward, backward, params, rest, want, rng, tiny=(), tol=1e-7):
    """Check ``forward``'s output against ``want`` and ``backward``'s gradients against numerical ones.

    ``tiny`` lists the positions of gradients that are zero in exact arithmetic (a bias before batch
    normalization): rounding noise has no relative error to speak of, so those are checked to be near zero.
    """
    args = [put(xp, device, a) for a in params]
    out, cache = forward(*args, *rest)
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-10, atol=1e-12)
    dout = put(xp, device, rng.standard_normal(want.shape))
    grads = backward(dout, cache)
    assert len(grads) == len(args)
    for i, (analytic, numeric) in enumerate(zip(grads, _numeric_grads(forward, args, dout, *rest), strict=True)):
        assert tuple(analytic.shape) == tuple(args[i].shape)
        if i in tiny:
            assert np.abs(to_numpy(analytic)).max() < 1e-12 and np.abs(to_numpy(numeric)).max() < 1e-8
        else:
            assert rel_error(analytic, numeric) < tol


def test_conv_relu(xp, device):
    x, w, b, conv, conv_param, rng = _sandwich_inputs(seed=2)
    _check_sandwich(xp, device, conv_relu_forward, conv_relu_backward, [x, w, b], [conv_param], np.maximum(conv, 0),
                    rng)


def test_conv_relu_pool(xp, device):
    x, w, b, conv, conv_param, rng = _sandwich_inputs(seed=3)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    N, F, H, W = conv.shape
    # 2 x 2 windows with stride 2 leave the last row of the 3 x 4 output out.
    want = np.maximum(conv, 0)[:, :, :H - H % 2, :W - W % 2].reshape(N, F, H // 2, 2, W // 2, 2).max(axis=(3, 5))
    _check_sandwich(xp, device, conv_relu_pool_forward, conv_relu_pool_backward, [x, w, b], [conv_param, pool_param],
                    want, rng)


def test_conv_bn_relu(xp, device):
    x, w, b, conv, conv_param, rng = _sandwich_inputs(seed=4)
    F = w.shape[0]
    gamma, beta = 1 + 0.1 * rng.standard_normal(F), 0.1 * rng.standard_normal(F)
    mu, var = conv.mean(axis=(0, 2, 3), keepdims=True), conv.var(axis=(0, 2, 3), keepdims=True)
    want = np.maximum(gamma[:, None, None] * (conv - mu) / np.sqrt(var + 1e-5) + beta[:, None, None], 0)
    # db is zero in exact arithmetic (batch normalization takes the mean out); central differences through batch
    # normalization carry absolute errors near 1e-10, a relative error above 1e-7 on the smallest elements of dx.
    _check_sandwich(xp, device, conv_bn_relu_forward, conv_bn_relu_backward, [x, w, b, gamma, beta],
                    [conv_param, {"mode": "train"}], want, rng, tiny=(2,), tol=1e-6)


def test_jax_jit_traces_fast_layers(backend_name, xp, device):
    # JAX's arrays are immutable and its tracers lack .device: a jitted conv - relu - pool step runs only if the
    # layers never write in place and take the device from where array-api-compat finds it.
    if backend_name != "jax":
        pytest.skip("jax.jit is JAX's")
    import jax

    x, w, b, _, conv_param, rng = _sandwich_inputs(seed=5)
    x, w, b, dout = (put(xp, device, a) for a in (x, w, b, rng.standard_normal((2, 2, 1, 2))))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}

    def step(x, w, b, dout):
        out, cache = conv_relu_pool_forward(x, w, b, conv_param, pool_param)
        return (out, *conv_relu_pool_backward(dout, cache))

    for eager, jitted in zip(step(x, w, b, dout), jax.jit(step)(x, w, b, dout), strict=True):
        np.testing.assert_allclose(to_numpy(jitted), to_numpy(eager), rtol=1e-12, atol=1e-14)


def test_the_librarys_convolution_and_pooling_equal_the_standard_path(xp, device, backend_name, monkeypatch):
    """Where the backend computes convolution and max pooling with its library's own kernels (torch, jax), the
    results, forward and backward, are those of anynet's standard-only path (use_fast_paths(False))."""
    from anynet import backends
    from anynet.nn.pooling import max_pool_backward_fast, max_pool_forward_fast

    if backends.backend_class(backend_name).conv2d_forward is None:
        pytest.skip(f"the {backend_name} backend has no fast path: the standard path is the only one")
    rng = np.random.default_rng(7)
    x, w, b = (put(xp, device, rng.standard_normal(s)) for s in ((2, 3, 7, 7), (4, 3, 3, 3), (4,)))
    dout = put(xp, device, rng.standard_normal((2, 4, 4, 4)))
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    dpool = put(xp, device, rng.standard_normal((2, 3, 3, 3)))
    results = {}
    for fast in (True, False):
        monkeypatch.setattr(backends.registry, "_fast", fast)
        out, cache = conv_forward_fast(x, w, b, {"stride": 2, "pad": 1})
        pooled, pool_cache = max_pool_forward_fast(x, pool)
        results[fast] = [out, *conv_backward_fast(dout, cache), pooled, max_pool_backward_fast(dpool, pool_cache)]
        assert (type(cache[-1]).__name__ == "LibraryCache") == fast
    for got, want in zip(results[True], results[False], strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("HH", "WW", "stride", "pad"), [(3, 3, 1, 1), (3, 2, 2, 2), (2, 2, 2, 0)])
def test_the_backends_padding_and_col2im_equal_the_standard_path(xp, device, backend_name, monkeypatch, HH, WW,
                                                                  stride, pad):
    """Where the backend pads and adds window gradients its own way (numpy: in place), the results are those of
    the standard-only path: col2im is the adjoint of the padded windows, and padding puts x in zeros."""
    from anynet import backends
    from anynet.nn.conv import col2im, pad2d, windows

    cls = backends.backend_class(backend_name)
    if cls.col2im is None and cls.pad2d is None:
        pytest.skip(f"the {backend_name} backend pads and adds by the standard path only")
    rng = np.random.default_rng(11)
    H, W = 5, 6
    H_out, W_out = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    x = put(xp, device, rng.standard_normal((2, 3, H, W)))
    dcols = put(xp, device, rng.standard_normal((HH * WW, 2, 3, H_out, W_out)))
    results = {}
    for fast in (True, False):
        monkeypatch.setattr(backends.registry, "_fast", fast)
        padded = pad2d(x, pad, pad + 1, pad + 2, pad)
        results[fast] = (padded, col2im(dcols, H, W, HH, WW, stride, pad))
    np.testing.assert_array_equal(to_numpy(results[True][0]), to_numpy(results[False][0]))
    np.testing.assert_allclose(to_numpy(results[True][1]), to_numpy(results[False][1]), rtol=1e-13, atol=1e-13)
    # The adjoint identity <windows(pad(x)), dcols> == <x, col2im(dcols)>, independent of either implementation.
    monkeypatch.setattr(backends.registry, "_fast", True)
    cols = windows(pad2d(x, pad, pad, pad, pad), HH, WW, stride, H_out, W_out)
    lhs = float(xp.sum(cols * dcols))
    rhs = float(xp.sum(x * col2im(dcols, H, W, HH, WW, stride, pad)))
    assert lhs == pytest.approx(rhs, rel=1e-12)
