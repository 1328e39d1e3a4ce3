"""Affine, ReLU, softmax and SVM layers: numeric gradients and independent answers, on every backend."""

import math

import numpy as np
import pytest

from anynet import backends
from anynet.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from anynet.layer_utils import affine_relu_backward, affine_relu_forward
from anynet.layers import (
    affine_backward,
    affine_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)


@pytest.fixture
def put(xp, device):
    """Move host arrays to the backend under test (float64 unless integer)."""

    def put(a):
        a = np.asarray(a)
        return xp.asarray(a, dtype=None if a.dtype.kind == "i" else xp.float64, device=device)

    return put


def _numeric_grads(forward, args, dout):
    """Numerical gradient of ``sum(forward(*args)[0] * dout)`` with respect to each of ``args``."""

    def with_arg(i):
        return lambda v: forward(*args[:i], v, *args[i + 1:])[0]

    return [eval_numerical_gradient_array(with_arg(i), a, dout) for i, a in enumerate(args)]


def test_affine_forward_matches_numpy(put):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    out, _ = affine_forward(put(x), put(w), put(b))
    np.testing.assert_allclose(backends.to_numpy(out), x.reshape(4, 6) @ w + b, rtol=1e-12)


def test_affine_backward_numeric(put):
    rng = np.random.default_rng(1)
    x, w, b = put(rng.standard_normal((10, 2, 3))), put(rng.standard_normal((6, 5))), put(rng.standard_normal(5))
    dout = put(rng.standard_normal((10, 5)))
    _, cache = affine_forward(x, w, b)
    dx, dw, db = affine_backward(dout, cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    for analytic, numeric in zip((dx, dw, db), _numeric_grads(affine_forward, (x, w, b), dout), strict=True):
        assert rel_error(analytic, numeric) < 1e-7


def test_affine_rejects_mismatched_features(put):
    with pytest.raises(ValueError, match="features"):
        affine_forward(put(np.ones((2, 3))), put(np.ones((4, 5))), put(np.ones(5)))


def test_relu_forward_and_backward(put):
    rng = np.random.default_rng(2)
    host = rng.standard_normal((6, 7))
    x, dout = put(host), put(rng.standard_normal((6, 7)))
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(backends.to_numpy(out), np.maximum(host, 0))
    dx = relu_backward(dout, cache)
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: relu_forward(v)[0], x, dout)) < 1e-7


def test_affine_relu_sandwich(put):
    rng = np.random.default_rng(3)
    x, w, b = put(rng.standard_normal((2, 3, 4))), put(rng.standard_normal((12, 10))), put(rng.standard_normal(10))
    dout = put(rng.standard_normal((2, 10)))
    _, cache = affine_relu_forward(x, w, b)
    dx, dw, db = affine_relu_backward(dout, cache)
    for analytic, numeric in zip((dx, dw, db), _numeric_grads(affine_relu_forward, (x, w, b), dout), strict=True):
        assert rel_error(analytic, numeric) < 1e-7


def _softmax_reference(x, y):
    """Softmax loss and gradient written out with float64 NumPy."""
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    p[np.arange(len(y)), y] -= 1
    return loss, p / len(y)


def _svm_reference(x, y):
    """Hinge loss and gradient written out with float64 NumPy, loop by loop."""
    N, C = x.shape
    loss, dx = 0.0, np.zeros_like(x)
    for i in range(N):
        for j in range(C):
            margin = x[i, j] - x[i, y[i]] + 1
            if j != y[i] and margin > 0:
                loss += margin
                dx[i, j] += 1
                dx[i, y[i]] -= 1
    return loss / N, dx / N


@pytest.mark.parametrize(("loss_fn", "reference"), [(softmax_loss, _softmax_reference), (svm_loss, _svm_reference)])
def test_losses_match_reference_and_numeric(put, loss_fn, reference):
    rng = np.random.default_rng(4)
    N, C = 50, 10
    x_host, y_host = 0.5 * rng.standard_normal((N, C)), rng.integers(0, C, N)
    x, y = put(x_host), put(y_host)
    loss, dx = loss_fn(x, y)
    assert loss.ndim == 0
    ref_loss, ref_dx = reference(x_host, y_host)
    assert math.isclose(float(loss), ref_loss, rel_tol=1e-12)
    np.testing.assert_allclose(backends.to_numpy(dx), ref_dx, rtol=1e-10, atol=1e-14)
    assert rel_error(dx, eval_numerical_gradient(lambda v: loss_fn(v, y)[0], x, verbose=False)) < 1e-7


def test_known_loss_values(put):
    rng = np.random.default_rng(5)
    y = put(rng.integers(0, 10, 100))
    uniform = put(np.zeros((100, 10)))
    assert math.isclose(float(softmax_loss(uniform, y)[0]), math.log(10), rel_tol=1e-12)
    near_zero = put(1e-3 * rng.standard_normal((100, 10)))
    assert abs(float(svm_loss(near_zero, y)[0]) - 9.0) < 0.01


def test_softmax_gradient_rows_sum_to_zero(put):
    rng = np.random.default_rng(6)
    _, dx = softmax_loss(put(rng.standard_normal((8, 5))), put(rng.integers(0, 5, 8)))
    np.testing.assert_allclose(backends.to_numpy(dx).sum(axis=1), 0, atol=1e-15)


def test_softmax_stays_finite_for_huge_scores(put):
    x = put(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]]))
    loss, dx = softmax_loss(x, put(np.array([1, 1])))
    assert np.isfinite(float(loss)) and np.isfinite(backends.to_numpy(dx)).all()
    assert math.isclose(float(loss), 1e4, rel_tol=1e-12)


def test_losses_keep_float32(xp, device):
    x = xp.ones((4, 3), dtype=xp.float32, device=device)
    y = xp.asarray([0, 1, 2, 0], device=device)
    for fn in (softmax_loss, svm_loss):
        loss, dx = fn(x, y)
        assert loss.dtype == xp.float32 and dx.dtype == xp.float32


def test_losses_check_labels(put):
    x = put(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="same length"):
        softmax_loss(x, put(np.array([0, 1])))
    with pytest.raises(TypeError, match="integer"):
        svm_loss(x, put(np.array([0.0, 1.0, 2.0])))


def test_a_layer_compiled_by_the_caller_leaves_no_traced_value_behind(backend_name):
    """The layers keep small constants between calls; under a compiler the caller ran itself (jax.jit), what they
    make is a stand-in of the trace and must not be kept: the eager call after it still works."""
    if backend_name != "jax":
        pytest.skip("jax.jit is JAX's")
    import jax

    from anynet.layers import softmax_loss

    xp = backends.get("jax").xp
    x = xp.asarray(np.random.default_rng(0).standard_normal((4, 13)))  # 13 classes: a constant no test made
    y = xp.asarray([0, 12, 3, 3])
    traced = jax.jit(lambda x, y: softmax_loss(x, y)[0])(x, y)
    eager = softmax_loss(x, y)[0]
    np.testing.assert_allclose(float(traced), float(eager), rtol=1e-12)
