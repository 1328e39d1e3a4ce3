"""Property-based tests (hypothesis) of every layer, on every backend.

Hypothesis draws shapes, seeds, scales and (for the large-logit tests) the
values themselves; the expected answers are derived here, on the host in
float64 NumPy: numeric gradients by centered differences, reference formulas,
and invariants that hold for any input (relu output >= 0, softmax gradient
rows sum to zero, batchnorm output standardized per feature, dropout keeping
the expectation).
"""

import math

import numpy as np
import pytest
from conftest import FEWER_DRAWS
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anynet import backends
from anynet.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)

# The backend fixtures are plain names: reusing them across examples is safe.
_SETTINGS = settings(deadline=None, max_examples=8 if FEWER_DRAWS else 20,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
_FEW = settings(_SETTINGS, max_examples=5 if FEWER_DRAWS else 10)

dims = st.integers(1, 4)
seeds = st.integers(0, 2**32 - 1)
scales = st.sampled_from([1e-2, 1.0, 10.0])


@pytest.fixture
def put(xp, device):
    """Move a host array to the backend under test (float64 unless integer, or the dtype given)."""

    def put(a, dtype="float64"):
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            return xp.asarray(a, device=device)
        return xp.asarray(a, dtype=getattr(xp, dtype), device=device)

    return put


def host(x):
    """The host float64 copy of a backend array."""
    return backends.to_numpy(x).astype(np.float64)


def numeric_grad(f, x, dout, h=1e-6):
    """Centered-difference gradient of ``sum(f(x) * dout)`` with respect to host array ``x``."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[ix] = h
        grad[ix] = np.sum((f(x + step) - f(x - step)) * dout) / (2 * h)
    return grad


def assert_close(actual, expected, rtol=1e-6, atol=1e-8):
    np.testing.assert_allclose(host(actual), expected, rtol=rtol, atol=atol)


# --- affine -----------------------------------------------------------------


@_SETTINGS
@given(N=dims, d1=dims, d2=dims, M=dims, seed=seeds, scale=scales)
def test_affine_shapes_values_and_numeric_gradients(put, N, d1, d2, M, seed, scale):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((N, d1, d2)) * scale, rng.standard_normal((d1 * d2, M)), rng.standard_normal(M)
    dout = rng.standard_normal((N, M))
    out, cache = affine_forward(put(x), put(w), put(b))
    assert tuple(out.shape) == (N, M)
    assert_close(out, x.reshape(N, -1) @ w + b, rtol=1e-12, atol=1e-12 * scale)
    dx, dw, db = affine_backward(put(dout), cache)
    assert tuple(dx.shape) == x.shape and tuple(dw.shape) == w.shape and tuple(db.shape) == b.shape

    def run(x_, w_, b_):
        return host(affine_forward(put(x_), put(w_), put(b_))[0])

    assert_close(dx, numeric_grad(lambda v: run(v, w, b), x, dout), atol=1e-7)
    assert_close(dw, numeric_grad(lambda v: run(x, v, b), w, dout), atol=1e-7 * scale)
    assert_close(db, numeric_grad(lambda v: run(x, w, v), b, dout), atol=1e-7)


# --- relu -------------------------------------------------------------------


@_SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=3), seed=seeds, scale=scales)
def test_relu_is_non_negative_and_its_gradient_numeric(put, shape, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    # Centered differences are meaningless within h of the kink at zero.
    x = np.where(np.abs(x) < 1e-4, 1e-4, x)
    dout = rng.standard_normal(shape)
    out, cache = relu_forward(put(x))
    assert tuple(out.shape) == tuple(shape)
    assert (host(out) >= 0).all()
    np.testing.assert_array_equal(host(out), np.maximum(x, 0))
    dx = relu_backward(put(dout), cache)
    assert_close(dx, numeric_grad(lambda v: host(relu_forward(put(v))[0]), x, dout), atol=1e-8)


@_SETTINGS
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                    elements=st.floats(-1e4, 1e4, width=32)))
def test_relu_output_non_negative_for_any_float32(put, x):
    out, _ = relu_forward(put(x, "float32"))
    got = backends.to_numpy(out)
    assert got.dtype == np.float32 and (got >= 0).all()
    expected = np.maximum(x, 0)
    # Exact, except that a GPU may flush a subnormal (below float32's smallest normal, 1.2e-38) to
    # zero: CuPy's maximum returned 0 for 1e-45 on an H100. Nothing else may differ.
    subnormal = expected < np.finfo(np.float32).tiny
    np.testing.assert_array_equal(np.where(subnormal, 0, got), np.where(subnormal, 0, expected))
    assert (got[subnormal] <= expected[subnormal]).all()


# --- softmax and SVM losses -------------------------------------------------


def _labels(rng, N, C):
    return rng.integers(0, C, N)


def _softmax_reference(x, y):
    """Float64 softmax loss and gradient, by a log-sum-exp computed here."""
    m = x.max(axis=1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    N = x.shape[0]
    loss = np.mean(log_z - x[np.arange(N), y])
    probs = np.exp(x - log_z[:, None])
    probs[np.arange(N), y] -= 1
    return loss, probs / N


@_SETTINGS
@given(N=dims, C=st.integers(2, 5), seed=seeds, scale=scales)
def test_softmax_loss_matches_reference_and_numeric_gradient(put, N, C, seed, scale):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((N, C)) * scale, _labels(rng, N, C)
    loss, dx = softmax_loss(put(x), put(y))
    assert tuple(loss.shape) == () and tuple(dx.shape) == (N, C)
    expected_loss, expected_dx = _softmax_reference(x, y)
    assert math.isclose(float(loss), expected_loss, rel_tol=1e-10, abs_tol=1e-12)
    assert_close(dx, expected_dx, rtol=1e-9, atol=1e-12)
    numeric = numeric_grad(lambda v: np.array(float(softmax_loss(put(v), put(y))[0])), x, 1.0)
    assert_close(dx, numeric, rtol=1e-5, atol=1e-8)


@_SETTINGS
@given(N=dims, C=st.integers(2, 5), seed=seeds, scale=scales)
def test_svm_loss_matches_reference_and_numeric_gradient(put, N, C, seed, scale):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((N, C)) * scale, _labels(rng, N, C)
    margins = x - x[np.arange(N), y][:, None] + 1
    margins[np.arange(N), y] = 0
    # The hinge has kinks at margin 0; numeric gradients need a step away from them.
    off_label = np.ones((N, C), dtype=bool)
    off_label[np.arange(N), y] = False
    assume(np.all(np.abs(margins[off_label]) > 1e-4))
    loss, dx = svm_loss(put(x), put(y))
    assert tuple(loss.shape) == () and tuple(dx.shape) == (N, C)
    assert math.isclose(float(loss), np.maximum(margins, 0).sum() / N, rel_tol=1e-10, abs_tol=1e-12)
    numeric = numeric_grad(lambda v: np.array(float(svm_loss(put(v), put(y))[0])), x, 1.0)
    assert_close(dx, numeric, rtol=1e-5, atol=1e-8)


@_SETTINGS
@given(N=dims, C=st.integers(2, 6), seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e2, 1e4]))
def test_softmax_gradient_rows_sum_to_zero(put, N, C, seed, scale):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((N, C)) * scale, _labels(rng, N, C)
    loss, dx = softmax_loss(put(x), put(y))
    g = host(dx)
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-15)
    # Only the label's entry pulls the score up: -1/N <= dx[i, y_i] <= 0 <= dx[i, j] <= 1/N.
    at_label = g[np.arange(N), y]
    assert (at_label <= 0).all() and (at_label >= -1 / N).all()
    g[np.arange(N), y] = 0
    assert (g >= 0).all() and (g <= 1 / N).all()
    assert float(loss) >= 0


logits = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 5), st.integers(2, 6)),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
)


@_SETTINGS
@given(x=logits, dtype=st.sampled_from(["float32", "float64"]), seed=seeds)
@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
def test_losses_stay_finite_for_logits_up_to_1e4(put, loss_fn, x, dtype, seed):
    N, C = x.shape
    y = _labels(np.random.default_rng(seed), N, C)
    loss, dx = loss_fn(put(x, dtype), put(y))
    assert math.isfinite(float(loss)) and float(loss) >= 0
    assert np.isfinite(host(dx)).all()
    if loss_fn is softmax_loss:
        # float32 rounds scores of 1e4 to about 1e-3; the loss may be off by that much.
        assert math.isclose(float(loss), _softmax_reference(x, y)[0], rel_tol=1e-5, abs_tol=4e-3)


# --- batch normalization ----------------------------------------------------


@_SETTINGS
@given(N=st.integers(2, 6), D=dims, seed=seeds, scale=st.sampled_from([1e-3, 1.0, 1e3]),
       eps=st.sampled_from([1e-5, 1e-2]), constant=st.booleans())
def test_batchnorm_train_output_standardized_per_feature(put, N, D, seed, scale, eps, constant):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)) * scale + rng.standard_normal(D) * 10
    if constant:
        x[:, 0] = 3.0  # a feature with zero variance
    out, _ = batchnorm_forward(put(x), put(np.ones(D)), put(np.zeros(D)), {"mode": "train", "eps": eps})
    out = host(out)
    assert out.shape == (N, D)
    var = x.var(axis=0)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-9)
    # Unit variance up to eps: var(out) = var / (var + eps), exactly 0 for a constant feature.
    np.testing.assert_allclose(out.var(axis=0), var / (var + eps), rtol=1e-8, atol=1e-12)
    if constant:
        np.testing.assert_allclose(out[:, 0], 0, atol=1e-9)


@_SETTINGS
@given(N=st.integers(2, 5), D=dims, seed=seeds, momentum=st.sampled_from([0.0, 0.5, 0.9]))
def test_batchnorm_shift_scale_and_running_statistics(put, N, D, seed, momentum):
    rng = np.random.default_rng(seed)
    x, gamma, beta = rng.standard_normal((N, D)) * 3 + 1, rng.standard_normal(D), rng.standard_normal(D)
    running_mean, running_var = rng.standard_normal(D), rng.uniform(0.5, 2, D)
    bn_param = {"mode": "train", "momentum": momentum,
                "running_mean": put(running_mean), "running_var": put(running_var)}
    out, _ = batchnorm_forward(put(x), put(gamma), put(beta), bn_param)
    xhat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5)
    assert_close(out, gamma * xhat + beta, rtol=1e-9, atol=1e-12)
    expected_mean = momentum * running_mean + (1 - momentum) * x.mean(axis=0)
    expected_var = momentum * running_var + (1 - momentum) * x.var(axis=0)
    assert_close(bn_param["running_mean"], expected_mean, rtol=1e-10, atol=1e-12)
    assert_close(bn_param["running_var"], expected_var, rtol=1e-10, atol=1e-12)
    bn_param["mode"] = "test"
    test_out, _ = batchnorm_forward(put(x), put(gamma), put(beta), bn_param)
    assert tuple(test_out.shape) == (N, D)
    assert_close(test_out, gamma * (x - expected_mean) / np.sqrt(expected_var + 1e-5) + beta, rtol=1e-9, atol=1e-12)


@_FEW
@given(N=st.integers(2, 4), D=st.integers(1, 3), seed=seeds)
@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_alt])
def test_batchnorm_gradients_numeric(put, backward, N, D, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)) * 2 + 1
    gamma, beta, dout = rng.standard_normal(D), rng.standard_normal(D), rng.standard_normal((N, D))
    # Tiny per-feature spread makes the normalization ill-conditioned for differences.
    assume(np.all(x.std(axis=0) > 0.05))
    _, cache = batchnorm_forward(put(x), put(gamma), put(beta), {"mode": "train"})
    dx, dgamma, dbeta = backward(put(dout), cache)

    def run(x_, g_, b_):
        return host(batchnorm_forward(put(x_), put(g_), put(b_), {"mode": "train"})[0])

    assert_close(dx, numeric_grad(lambda v: run(v, gamma, beta), x, dout), rtol=1e-5, atol=1e-7)
    assert_close(dgamma, numeric_grad(lambda v: run(x, v, beta), gamma, dout), rtol=1e-5, atol=1e-7)
    assert_close(dbeta, numeric_grad(lambda v: run(x, gamma, v), beta, dout), rtol=1e-5, atol=1e-7)


# --- dropout ----------------------------------------------------------------


@_SETTINGS
@given(shape=st.lists(dims, min_size=1, max_size=3), p=st.floats(0, 0.95), seed=seeds)
def test_dropout_zeroes_or_scales_and_its_gradient_matches(put, shape, p, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(shape) + 3, rng.standard_normal(shape)  # x never 0
    param = {"p": p, "mode": "train", "seed": seed}
    out, cache = dropout_forward(put(x), param)
    got = host(out)
    assert got.shape == tuple(shape)
    kept = got != 0
    np.testing.assert_allclose(got[kept], x[kept] / (1 - p), rtol=1e-12)
    np.testing.assert_array_equal(host(dropout_forward(put(x), param)[0]), got)  # the seed fixes the mask
    # With the mask fixed, dropout is linear in x: its gradient is the mask.
    dx = dropout_backward(put(dout), cache)
    numeric = numeric_grad(lambda v: host(dropout_forward(put(v), param)[0]), x, dout)
    assert_close(dx, numeric, rtol=1e-6, atol=1e-8)
    test_out, _ = dropout_forward(put(x), {"p": p, "mode": "test"})
    np.testing.assert_array_equal(host(test_out), x)


@_FEW
@given(p=st.floats(0.05, 0.9), seed=seeds, dtype=st.sampled_from(["float32", "float64"]))
def test_dropout_keeps_the_expectation(put, p, seed, dtype):
    n = 40_000
    x = np.ones(n)
    out, _ = dropout_forward(put(x, dtype), {"p": p, "mode": "train", "seed": seed})
    got = host(out)
    # Each output is 1/(1-p) with probability 1-p, else 0: mean 1, variance p/(1-p).
    sigma = math.sqrt(p / (1 - p) / n)
    assert abs(got.mean() - 1) < 6 * sigma
    assert abs((got == 0).mean() - p) < 6 * math.sqrt(p * (1 - p) / n)
