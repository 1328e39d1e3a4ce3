"""Two matrix-calculus objectives with closed-form gradients.

``linear_autoencoder_loss`` is the tied-weight linear autoencoder and
``gplvm_log_likelihood`` the GP-LVM / probabilistic-PCA log-likelihood. Both
take their namespace from their inputs, as the layers do, so they run on every
backend; the second needs the standard's ``linalg`` extension.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace, device

from .. import backends as _backends
from . import checks

__all__ = ["linear_autoencoder_loss", "gplvm_log_likelihood"]


def _check_floating(name, x, xp):
    """Raise ``TypeError`` unless ``x`` holds real floating-point numbers."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must hold real floating-point numbers; got dtype {x.dtype}")


def linear_autoencoder_loss(W, X):
    """Reconstruction loss of the tied-weight linear autoencoder and its gradient.

    ``L = 1/2 * sum_j ||W^T W x_j - x_j||^2`` over the columns ``x_j`` of ``X``,
    with ``dL/dW = sum_j (W x_j r_j^T + W r_j x_j^T)``, ``r_j = W^T W x_j - x_j``.

    ``W`` encodes ``x`` in ``R^n`` as the code ``z = W x`` in ``R^m`` (m < n)
    and ``W^T`` decodes it. ``L`` is a sum of squares, so ``L = 0`` exactly when
    ``W^T W x_j = x_j`` for every column: ``W^T W`` then acts as the identity
    on the span of the data. Having rank at most m, it can do so only when the
    data lie in an (at most) m-dimensional subspace, and then ``W^T W`` is the
    orthogonal projector onto it (with ``W W^T = I``: the rows of ``W`` are an
    orthonormal basis of that subspace). On general data the minimizers are of
    the same form for the top-m principal subspace of ``X X^T``: ``W^T W``
    projects onto it and ``L`` is the energy outside it.

    So the code ``W x`` keeps the m coordinates of ``x`` in the basis formed by
    the rows of ``W``: the component of ``x`` in the row space of ``W``
    (``W^T W x`` is that orthogonal projection), and discards the component
    orthogonal to it.

    Parameters
    ----------
    W : array, shape (m, n), m < n
        Encoder weights; the decoder is ``W^T``.
    X : array, shape (n,) or (n, N)
        One data vector, or N of them as columns.

    Returns
    -------
    loss : 0-d array on the device of ``W``
    dW : array, shape (m, n)
    """
    xp = array_namespace(W, X)
    _check_floating("W", W, xp)
    _check_floating("X", X, xp)
    if W.ndim != 2:
        raise ValueError(f"W must have shape (m, n); got shape {tuple(W.shape)}")
    m, n = W.shape
    if not m < n:
        raise ValueError(f"W must have fewer rows than columns (m < n, a compressing code); got shape {(m, n)}")
    if X.ndim not in (1, 2) or X.shape[0] != n:
        raise ValueError(f"X must have shape ({n},) or ({n}, N) to match W of shape {(m, n)}; got {tuple(X.shape)}")
    if X.ndim == 1:
        X = xp.reshape(X, (n, 1))
    Z = W @ X
    r = W.T @ Z - X
    loss = 0.5 * xp.sum(r * r)
    dW = Z @ r.T + (W @ r) @ X.T
    return loss, dW


def _linalg(xp, x):
    """The ``linalg`` extension of ``xp``, or a clear error naming the backend."""
    linalg = getattr(xp, "linalg", None)
    if linalg is None:
        raise TypeError(
            f"gplvm_log_likelihood needs the Array API 'linalg' extension (slogdet, solve), "
            f"which the {_backends.name_of(x)} backend does not provide here"
        )
    return linalg


def gplvm_log_likelihood(X, Y, alpha, beta):
    """Log-likelihood of the GP-LVM (probabilistic PCA) and its gradient in the latents.

    With ``K = alpha X X^T + beta^{-1} I`` (N x N), each of the D columns of
    ``Y`` is drawn from N(0, K)::

        L = -(N D / 2) log(2 pi) - (D / 2) log|K| - 1/2 tr(K^{-1} Y Y^T)
        dL/dX = alpha (K^{-1} Y Y^T K^{-1} - D K^{-1}) X

    ``log|K|`` comes from ``linalg.slogdet``; ``K^{-1} Y`` and ``K^{-1} X``
    from one ``linalg.solve`` (no inverse is formed), and since ``K`` is
    symmetric ``K^{-1} Y Y^T K^{-1} = (K^{-1} Y)(K^{-1} Y)^T``.

    Parameters
    ----------
    X : array, shape (N, q)
        Latent positions.
    Y : array, shape (N, D)
        Observed data, one row per latent point.
    alpha : float > 0
        Variance of the linear kernel.
    beta : float > 0
        Noise precision.

    Returns
    -------
    L : 0-d array on the device of ``X``
    dX : array, shape (N, q)

    Raises
    ------
    TypeError
        If the backend lacks the ``linalg`` extension, or for wrong argument types.
    ValueError
        For mismatched shapes or ``alpha``/``beta`` not > 0.
    """
    xp = array_namespace(X, Y)
    _check_floating("X", X, xp)
    _check_floating("Y", Y, xp)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (N, q); got shape {tuple(X.shape)}")
    if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape ({X.shape[0]}, D) to match X of shape {tuple(X.shape)}; "
                         f"got {tuple(Y.shape)}")
    alpha = checks.real("alpha", alpha, 0.0, low_open=True)
    beta = checks.real("beta", beta, 0.0, low_open=True)
    linalg = _linalg(xp, X)
    N, q = X.shape
    D = Y.shape[1]
    dtype = xp.result_type(X, Y)
    X, Y = xp.astype(X, dtype), xp.astype(Y, dtype)
    K = alpha * (X @ X.T) + xp.eye(N, dtype=dtype, device=device(X)) / beta
    _, logdet = linalg.slogdet(K)
    # One factorization serves both right-hand sides.
    S = linalg.solve(K, xp.concat([Y, X], axis=1))
    KinvY, KinvX = S[:, :D], S[:, D:]
    L = -0.5 * N * D * math.log(2.0 * math.pi) - 0.5 * D * logdet - 0.5 * xp.sum(Y * KinvY)
    dX = alpha * (KinvY @ (KinvY.T @ X) - D * KinvX)
    return L, dX
