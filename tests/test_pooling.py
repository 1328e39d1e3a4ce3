"""Max, average and global average pooling: the course's known answer, float64 NumPy loop references and
numerical gradients, on every backend."""

import numpy as np
import pytest
from layer_checks import float32_pass, put, rel_error

from anynet.backends import to_numpy
from anynet.nn.gradient_check import eval_numerical_gradient_array
from anynet.nn.pooling import (
    avg_pool_backward,
    avg_pool_forward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    max_pool_backward_fast,
    max_pool_backward_naive,
    max_pool_forward_fast,
    max_pool_forward_naive,
)

MAX_POOLS = [(max_pool_forward_naive, max_pool_backward_naive), (max_pool_forward_fast, max_pool_backward_fast)]
POOLS = [*MAX_POOLS, (avg_pool_forward, avg_pool_backward)]
POOL_IDS = ["max_naive", "max_fast", "avg"]

# (x shape, pool height, pool width, stride). Few shapes, shared with test_conv and test_normalization: JAX
# compiles every operation again at every new shape.
COURSE = ((2, 3, 4, 4), 2, 2, 2)  # the notebook's: windows that tile x
NUMERIC = ((2, 2, 3, 4), 2, 3, 1)  # overlapping non-square windows; the numerical gradient checks'
UNEVEN = ((2, 2, 3, 4), 2, 2, 2)  # a last row that no window reaches; test_conv's conv_relu_pool pools so
CONFIGS = [NUMERIC, UNEVEN]


def _pool_param(HH, WW, stride):
    """The course's ``pool_param``."""
    return {"pool_height": HH, "pool_width": WW, "stride": stride}


def _pool_reference(x, HH, WW, stride, dout, reduce):
    """Pooling by ``reduce`` ("max" or "avg") and its gradient, written out window by window in float64 NumPy.

    The max's gradient goes to the first maximum of each window in row-major order (``np.argmax``'s choice).
    """
    N, C, H, W = x.shape
    H_out, W_out = 1 + (H - HH) // stride, 1 + (W - WW) // stride
    out, dx = np.zeros((N, C, H_out, W_out)), np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    rows, cols = slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)
                    window = x[n, c, rows, cols]
                    if reduce == "max":
                        out[n, c, i, j] = window.max()
                        k, m = np.unravel_index(np.argmax(window), window.shape)
                        dx[n, c, i * stride + k, j * stride + m] += dout[n, c, i, j]
                    else:
                        out[n, c, i, j] = window.mean()
                        dx[n, c, rows, cols] += dout[n, c, i, j] / (HH * WW)
    return out, dx


def _random(x_shape, HH, WW, stride, seed=0):
    """Host ``x`` and ``dout`` for pooling of these sizes."""
    rng = np.random.default_rng(seed)
    N, C, H, W = x_shape
    return rng.standard_normal(x_shape), rng.standard_normal((N, C, 1 + (H - HH) // stride, 1 + (W - WW) // stride))


# ---------------------------------------------------------------- values


def test_course_known_answer(xp, device):
    # CS231n assignment 2, ConvolutionalNetworks.ipynb, "Max-Pooling: Naive forward".
    x_shape, HH, WW, stride = COURSE
    x = np.linspace(-0.3, 0.4, num=np.prod(x_shape)).reshape(x_shape)
    correct_out = np.array([[[[-0.26315789, -0.24842105], [-0.20421053, -0.18947368]],
                             [[-0.14526316, -0.13052632], [-0.08631579, -0.07157895]],
                             [[-0.02736842, -0.01263158], [0.03157895, 0.04631579]]],
                            [[[0.09052632, 0.10526316], [0.14947368, 0.16421053]],
                             [[0.20842105, 0.22315789], [0.26736842, 0.28210526]],
                             [[0.32631579, 0.34105263], [0.38526316, 0.4]]]])
    reference, _ = _pool_reference(x, HH, WW, stride, np.zeros(correct_out.shape), "max")
    # The notebook prints eight decimals: the loop reference agrees to their last digit.
    np.testing.assert_allclose(reference, correct_out, rtol=0, atol=5e-9)
    for forward, _ in MAX_POOLS:
        out, _ = forward(put(xp, device, x), _pool_param(HH, WW, stride))
        np.testing.assert_array_equal(to_numpy(out), reference)
        assert rel_error(out, correct_out) < 1e-7


@pytest.mark.parametrize(("x_shape", "HH", "WW", "stride"), CONFIGS, ids=["overlapping", "uneven"])
def test_forward_and_backward_match_reference(xp, device, x_shape, HH, WW, stride):
    x, dout = _random(x_shape, HH, WW, stride)
    pool_param = _pool_param(HH, WW, stride)
    results = []
    for (forward, backward), reduce in zip(POOLS, ["max", "max", "avg"], strict=True):
        want_out, want_dx = _pool_reference(x, HH, WW, stride, dout, reduce)
        out, cache = forward(put(xp, device, x), pool_param)
        np.testing.assert_allclose(to_numpy(out), want_out, rtol=1e-12, atol=1e-15)
        dx = backward(put(xp, device, dout), cache)
        np.testing.assert_allclose(to_numpy(dx), want_dx, rtol=1e-12, atol=1e-15)
        results.append((to_numpy(out), to_numpy(dx)))
    # The fast max pooling picks what the naive one does; gradients that overlapping windows pass to one element
    # are added in another order.
    (naive_out, naive_dx), (fast_out, fast_dx) = results[:2]
    np.testing.assert_array_equal(fast_out, naive_out)
    np.testing.assert_allclose(fast_dx, naive_dx, rtol=1e-15, atol=1e-15)


def test_max_pool_ties_go_to_the_first_maximum(xp, device):
    x_shape, HH, WW, stride = NUMERIC
    _, dout = _random(x_shape, HH, WW, stride, seed=1)
    # Values from {0, 1}: most windows hold several maxima.
    x = np.random.default_rng(1).integers(0, 2, x_shape).astype(np.float64)
    _, want = _pool_reference(x, HH, WW, stride, dout, "max")
    for forward, backward in MAX_POOLS:
        dx = to_numpy(backward(put(xp, device, dout), forward(put(xp, device, x), _pool_param(HH, WW, stride))[1]))
        np.testing.assert_allclose(dx, want, rtol=1e-15, atol=0)
    # All of each window's gradient reaches one element: with ones everywhere, each window's top left.
    ones = np.ones(x_shape)
    for forward, backward in MAX_POOLS:
        dx = to_numpy(backward(put(xp, device, dout), forward(put(xp, device, ones), _pool_param(HH, WW, stride))[1]))
        want = np.zeros(x_shape)
        want[:, :, :dout.shape[2], :dout.shape[3]] = dout  # stride 1: window (i, j) starts at (i, j)
        np.testing.assert_array_equal(dx, want)


@pytest.mark.parametrize(("forward", "backward"), POOLS, ids=POOL_IDS)
def test_backward_numeric(xp, device, forward, backward):
    x_shape, HH, WW, stride = NUMERIC
    x, dout = (put(xp, device, a) for a in _random(x_shape, HH, WW, stride, seed=2))
    pool_param = _pool_param(HH, WW, stride)
    dx = backward(dout, forward(x, pool_param)[1])
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: forward(v, pool_param)[0], x, dout)) < 1e-8


def test_global_avg_pool(xp, device):
    x_shape = NUMERIC[0]
    H, W = x_shape[2:]
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal(x_shape), rng.standard_normal(x_shape[:2])
    xd, doutd = put(xp, device, x), put(xp, device, dout)
    out, cache = global_avg_pool_forward(xd)
    np.testing.assert_allclose(to_numpy(out), x.mean(axis=(2, 3)), rtol=1e-12)
    dx = global_avg_pool_backward(doutd, cache)
    np.testing.assert_allclose(to_numpy(dx), np.broadcast_to(dout[:, :, None, None] / (H * W), x_shape), rtol=1e-12)
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: global_avg_pool_forward(v)[0], xd, doutd)) < 1e-8
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        global_avg_pool_forward(xd[0, ...])
    with pytest.raises(ValueError, match=r"dout must have the shape of the forward output, \(2, 2\)"):
        global_avg_pool_backward(xd, cache)


def test_float32_stays_float32(backend_name, xp, device):
    x_shape, HH, WW, stride = NUMERIC
    x, dout = (xp.asarray(a, dtype=xp.float32, device=device) for a in _random(x_shape, HH, WW, stride))
    for forward, backward in POOLS[1:]:  # the fast max pooling and the average; the naive pass is a float64 reference
        results = float32_pass(backend_name, forward, backward, x, dout, rest=[_pool_param(HH, WW, stride)])
        assert all(a.dtype == xp.float32 for a in results)
    results = float32_pass(backend_name, global_avg_pool_forward, global_avg_pool_backward, x, dout[:, :, 0, 0])
    assert all(a.dtype == xp.float32 for a in results)


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize(("forward", "backward"), POOLS, ids=POOL_IDS)
def test_rejects_bad_shapes_and_params(xp, device, forward, backward):
    x_shape, HH, WW, stride = NUMERIC
    x = put(xp, device, np.ones(x_shape))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        forward(x[0, ...], _pool_param(HH, WW, stride))
    with pytest.raises(ValueError, match='pool_param must be a dict holding "pool_height", "pool_width" and "stride"'):
        forward(x, {"pool_height": 2, "stride": 2})
    with pytest.raises(ValueError, match=r'pool_param\["stride"\] must be a positive integer; got 0'):
        forward(x, _pool_param(2, 2, 0))
    with pytest.raises(TypeError, match=r'pool_param\["pool_width"\] must be a positive integer; got 2.0'):
        forward(x, _pool_param(2, 2.0, 2))
    with pytest.raises(ValueError, match=r"4 x 2 window does not fit in x of shape \(2, 2, 3, 4\)"):
        forward(x, _pool_param(4, 2, 1))
    _, cache = forward(x, _pool_param(HH, WW, stride))
    with pytest.raises(ValueError, match=r"dout must have the shape of the forward output, \(2, 2, 2, 2\)"):
        backward(put(xp, device, np.ones((2, 2, 2, 3))), cache)
