"""The matrix-calculus objectives: values against float64 NumPy, gradients against numerical ones."""

import math

import numpy as np
import pytest

from anynet import backends
from anynet.gradient_check import eval_numerical_gradient, rel_error
from anynet.objectives import gplvm_log_likelihood, linear_autoencoder_loss


def _put(xp, device, a):
    """``a`` as a float64 array of ``xp`` on ``device``."""
    return xp.asarray(np.asarray(a, dtype=np.float64), device=device)


def _np(x):
    """``x`` on the host as float64 NumPy."""
    return np.asarray(backends.to_numpy(x), dtype=np.float64)


# ---------------------------------------------------------------- linear autoencoder


@pytest.mark.parametrize("shape_x", [(7,), (7, 5)])
def test_linear_autoencoder_gradient_check(xp, device, shape_x):
    rng = np.random.default_rng(0)
    W = _put(xp, device, rng.standard_normal((3, 7)))
    X = _put(xp, device, rng.standard_normal(shape_x))
    loss, dW = linear_autoencoder_loss(W, X)
    assert loss.shape == () and dW.shape == W.shape and dW.dtype == xp.float64
    num = eval_numerical_gradient(lambda w: linear_autoencoder_loss(w, X)[0], W, verbose=False)
    assert rel_error(num, dW) < 1e-7


def test_linear_autoencoder_matches_numpy(xp, device):
    rng = np.random.default_rng(1)
    W, X = rng.standard_normal((2, 6)), rng.standard_normal((6, 9))
    W_dev = _put(xp, device, W)
    loss, dW = linear_autoencoder_loss(W_dev, _put(xp, device, X))
    assert backends.name_of(loss) == backends.name_of(dW) == backends.name_of(W_dev)
    # Column by column, as the definition reads.
    want_loss, want_dW = 0.0, np.zeros_like(W)
    for j in range(X.shape[1]):
        x = X[:, j]
        r = W.T @ W @ x - x
        want_loss += 0.5 * r @ r
        want_dW += np.outer(W @ x, r) + np.outer(W @ r, x)
    np.testing.assert_allclose(_np(loss), want_loss, rtol=1e-12)
    np.testing.assert_allclose(_np(dW), want_dW, rtol=1e-10, atol=1e-12)


def test_linear_autoencoder_vector_equals_single_column(xp, device):
    rng = np.random.default_rng(2)
    W, x = _put(xp, device, rng.standard_normal((2, 5))), rng.standard_normal(5)
    l1, d1 = linear_autoencoder_loss(W, _put(xp, device, x))
    l2, d2 = linear_autoencoder_loss(W, _put(xp, device, x[:, None]))
    np.testing.assert_allclose(_np(l1), _np(l2), rtol=1e-14)
    np.testing.assert_allclose(_np(d1), _np(d2), rtol=1e-14)


def test_linear_autoencoder_zero_loss_on_row_space(xp, device):
    # Orthonormal rows and data inside their span: W^T W is the identity there,
    # so the loss and its gradient vanish, while data off the span is penalised.
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 3)))
    W = _put(xp, device, Q.T)
    inside = Q @ rng.standard_normal((3, 10))
    loss, dW = linear_autoencoder_loss(W, _put(xp, device, inside))
    assert _np(loss) < 1e-20 and np.abs(_np(dW)).max() < 1e-10
    outside = inside + (np.eye(8) - Q @ Q.T) @ rng.standard_normal((8, 10))
    loss, _ = linear_autoencoder_loss(W, _put(xp, device, outside))
    np.testing.assert_allclose(_np(loss), 0.5 * np.sum((outside - inside) ** 2), rtol=1e-10)


def test_linear_autoencoder_validates(xp, device):
    W, X = _put(xp, device, np.ones((3, 5))), _put(xp, device, np.ones((5, 2)))
    with pytest.raises(ValueError, match="m < n"):
        linear_autoencoder_loss(_put(xp, device, np.ones((5, 5))), X)
    with pytest.raises(ValueError, match="W must have shape"):
        linear_autoencoder_loss(_put(xp, device, np.ones(5)), X)
    with pytest.raises(ValueError, match="X must have shape"):
        linear_autoencoder_loss(W, _put(xp, device, np.ones((4, 2))))
    with pytest.raises(ValueError, match="X must have shape"):
        linear_autoencoder_loss(W, _put(xp, device, np.ones((5, 2, 1))))
    with pytest.raises(TypeError, match="X must hold real floating"):
        linear_autoencoder_loss(W, xp.ones((5, 2), dtype=xp.int64, device=device))


# ---------------------------------------------------------------- GP-LVM


def _gplvm_reference(X, Y, alpha, beta):
    """Sum over columns of Y of the N(0, K) log-density, with an explicit inverse and det."""
    N, D = Y.shape
    K = alpha * X @ X.T + np.eye(N) / beta
    Kinv = np.linalg.inv(K)
    _, logdet = np.linalg.slogdet(K)
    L = sum(-0.5 * N * math.log(2 * math.pi) - 0.5 * logdet - 0.5 * Y[:, d] @ Kinv @ Y[:, d] for d in range(D))
    dX = alpha * (Kinv @ Y @ Y.T @ Kinv - D * Kinv) @ X
    return L, dX


def test_gplvm_gradient_check(xp, device):
    rng = np.random.default_rng(4)
    X = _put(xp, device, rng.standard_normal((6, 2)))
    Y = _put(xp, device, rng.standard_normal((6, 4)))
    L, dX = gplvm_log_likelihood(X, Y, 1.3, 2.5)
    assert L.shape == () and dX.shape == X.shape and dX.dtype == xp.float64
    num = eval_numerical_gradient(lambda x: gplvm_log_likelihood(x, Y, 1.3, 2.5)[0], X, verbose=False)
    assert rel_error(num, dX) < 1e-6


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.3, 20.0), (4, 0.5)])
def test_gplvm_matches_numpy(xp, device, alpha, beta):
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((7, 3)), rng.standard_normal((7, 5))
    L, dX = gplvm_log_likelihood(_put(xp, device, X), _put(xp, device, Y), alpha, beta)
    want_L, want_dX = _gplvm_reference(X, Y, alpha, beta)
    np.testing.assert_allclose(_np(L), want_L, rtol=1e-12)
    np.testing.assert_allclose(_np(dX), want_dX, rtol=1e-9, atol=1e-11)


def test_gplvm_maximum_is_probabilistic_pca():
    # Tipping & Bishop: at the maximum, alpha X X^T = U_q (Lambda_q - 1/beta) U_q^T
    # with U_q, Lambda_q the top eigenpairs of Y Y^T / D. The gradient vanishes there.
    rng = np.random.default_rng(6)
    N, D, q, alpha, beta = 8, 30, 2, 1.0, 4.0
    Y = rng.standard_normal((N, q)) @ rng.standard_normal((q, D)) * 2 + rng.standard_normal((N, D)) * 0.3
    lam, U = np.linalg.eigh(Y @ Y.T / D)
    lam, U = lam[::-1][:q], U[:, ::-1][:, :q]
    X = U * np.sqrt((lam - 1 / beta) / alpha)
    L, dX = gplvm_log_likelihood(X, Y, alpha, beta)
    assert np.abs(dX).max() < 1e-8 * np.abs(X).max() * D
    # ... and it is a maximum: small perturbations lower L.
    for _ in range(5):
        L2, _ = gplvm_log_likelihood(X + 1e-3 * rng.standard_normal(X.shape), Y, alpha, beta)
        assert L2 < L


def test_gplvm_validates(xp, device):
    X, Y = _put(xp, device, np.ones((4, 2))), _put(xp, device, np.ones((4, 3)))
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha"):
            gplvm_log_likelihood(X, Y, bad, 1.0)
        with pytest.raises(ValueError, match="beta"):
            gplvm_log_likelihood(X, Y, 1.0, bad)
    for bad in ("1", None, True):
        with pytest.raises(TypeError, match="alpha"):
            gplvm_log_likelihood(X, Y, bad, 1.0)
    with pytest.raises(ValueError, match="Y must have shape"):
        gplvm_log_likelihood(X, _put(xp, device, np.ones((5, 3))), 1.0, 1.0)
    with pytest.raises(ValueError, match="X must have shape"):
        gplvm_log_likelihood(_put(xp, device, np.ones(4)), Y, 1.0, 1.0)
    with pytest.raises(TypeError, match="Y must hold real floating"):
        gplvm_log_likelihood(X, xp.ones((4, 3), dtype=xp.int64, device=device), 1.0, 1.0)


def test_gplvm_without_linalg_names_backend():
    array_api_strict = pytest.importorskip("array_api_strict")
    X = array_api_strict.asarray(np.ones((3, 2)))
    Y = array_api_strict.asarray(np.ones((3, 2)))
    array_api_strict.set_array_api_strict_flags(enabled_extensions=())
    try:
        with pytest.raises(TypeError, match="linalg.*array_api_strict"):
            gplvm_log_likelihood(X, Y, 1.0, 1.0)
    finally:
        array_api_strict.reset_array_api_strict_flags()


# ---------------------------------------------------------------- the example


def test_example_compare_subspaces(repo_script):
    ex = repo_script("examples/linear_autoencoder.py")
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 4)))
    U, V = Q[:, :2], Q[:, 2:]
    # The same subspace given by a non-orthonormal basis: zero angle and distance.
    same = ex.compare_subspaces(rng.standard_normal((2, 2)) @ U.T, U)
    assert same["max_angle_deg"] < 1e-5 and same["projector_distance"] < 1e-12
    # Orthogonal subspaces: 90 degrees, distance sqrt(2 m).
    far = ex.compare_subspaces(V.T, U)
    np.testing.assert_allclose(far["max_angle_deg"], 90.0)
    np.testing.assert_allclose(far["projector_distance"], 2.0)
    assert far["orthonormality"] < 1e-12


def test_example_learns_the_principal_subspace(repo_script, backend_name, capsys):
    ex = repo_script("examples/linear_autoencoder.py")
    result = ex.main(["-n", "12", "-m", "2", "-N", "200", "--steps", "300", "--learning-rate", "0.1",
                      "--print-every", "0", "--backend", backend_name])
    assert result["shape"] == (12, 200)
    assert result["max_angle_deg"] < 0.05
    assert result["projector_distance"] < 1e-3
    assert result["orthonormality"] < 1e-3  # W W^T = I: W^T W is the projector onto the subspace
    assert result["final_loss"] <= result["pca_loss"] * (1 + 1e-4)
    assert "principal angle" in capsys.readouterr().out
