"""Normalization layers of convolutional and recurrent nets: spatial batch, layer and group normalization.

Each ``*_forward`` returns ``(out, cache)``; its ``*_backward`` takes
``(dout, cache)`` and returns ``(dx, dgamma, dbeta)``. Spatial batch
normalization is ``anynet.nn.layers``' batch normalization of the
(N * H * W, C) matrix of all positions; layer and group normalization
normalize each sample (over its features, or over each group of its channels
and all positions) and have no running statistics.
"""

from __future__ import annotations

from ..backends import namespace
from . import checks
from .layers import _batchnorm_backward, _batchnorm_forward

__all__ = [
    "layernorm_backward", "layernorm_forward", "spatial_batchnorm_backward", "spatial_batchnorm_forward",
    "spatial_groupnorm_backward", "spatial_groupnorm_forward",
]


def _check_ndim(name, x, ndim):
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions."""
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(x.shape)}")


def _check_shape(names, arrays, shape, x):
    """Raise ``ValueError`` unless each of ``arrays`` has ``shape``."""
    got = [tuple(a.shape) for a in arrays]
    if any(g != shape for g in got):
        raise ValueError(f"{names} must have shape {shape} for x of shape {tuple(x.shape)}; got "
                         f"{' and '.join(map(str, got))}")


def _eps(param, name):
    """``param["eps"]`` (default 1e-5), checked to be a number > 0."""
    return checks.real(f'{name}["eps"]', param.get("eps", 1e-5), low=0.0, low_open=True)


def _normalize_rows(x, eps):
    """``(xhat, std)``: each row of ``x`` (M, D) less its mean, over its standard deviation; std is (M, 1)."""
    xp = namespace(x)
    xc = x - xp.mean(x, axis=1, keepdims=True)
    std = xp.sqrt(xp.mean(xc * xc, axis=1, keepdims=True) + eps)
    return xc / std, std


def _normalize_rows_backward(dxhat, xhat, std):
    """Gradient with respect to ``x`` of ``_normalize_rows(x)``, given that of its ``xhat``."""
    xp = namespace(dxhat, xhat)
    # The closed form of batchnorm_backward_alt along rows: the mean and the variance each take out one projection.
    return (dxhat - xp.mean(dxhat, axis=1, keepdims=True)
            - xhat * xp.mean(dxhat * xhat, axis=1, keepdims=True)) / std


# ---------------------------------------------------------------- spatial batch normalization


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of each channel over the batch and all positions.

    The course reshapes to (N * H * W, C) and calls ``batchnorm_forward``;
    this reduces over axes (0, 2, 3) in place of the reshape, the same
    numbers without a transposed copy of the activations each way.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    gamma, beta : array, shape (C,)
    bn_param : dict
        As for ``anynet.nn.layers.batchnorm_forward``: ``mode`` ("train" or
        "test"), ``eps``, ``momentum``, and the running statistics, of shape (C,).

    Returns
    -------
    out : array, shape (N, C, H, W)
    cache : tuple, or None in test mode
    """
    _check_ndim("x", x, 4)
    return _batchnorm_forward(x, gamma, beta, bn_param, axes=(0, 2, 3))


def spatial_batchnorm_backward(dout, cache):
    """Backward pass of ``spatial_batchnorm_forward`` (in train mode).

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dgamma, dbeta : array, shape (C,)
    """
    _check_ndim("dout", dout, 4)
    if cache is None:
        raise ValueError("spatial_batchnorm_backward needs the cache of a forward pass in train mode; got None")
    return _batchnorm_backward(dout, cache, axes=(0, 2, 3))


# ---------------------------------------------------------------- layer normalization


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization: each row of ``x`` normalized over its features, then scaled and shifted.

    Parameters
    ----------
    x : array, shape (N, D)
    gamma, beta : array, shape (D,)
    ln_param : dict
        ``eps`` (1e-5), added to each row's variance; other keys are ignored.

    Returns
    -------
    out : array, shape (N, D)
    cache : tuple ``(xhat, std, gamma)``
    """
    _check_ndim("x", x, 2)
    _check_shape("gamma and beta", (gamma, beta), (x.shape[1],), x)
    xhat, std = _normalize_rows(x, _eps(ln_param, "ln_param"))
    return gamma * xhat + beta, (xhat, std, gamma)


def layernorm_backward(dout, cache):
    """Backward pass of ``layernorm_forward``.

    Returns
    -------
    dx : array, shape (N, D)
    dgamma, dbeta : array, shape (D,)
    """
    xhat, std, gamma = cache
    xp = namespace(dout, xhat)
    _check_shape("dout", (dout,), tuple(xhat.shape), xhat)
    dbeta = xp.sum(dout, axis=0)
    dgamma = xp.sum(dout * xhat, axis=0)
    return _normalize_rows_backward(dout * gamma, xhat, std), dgamma, dbeta


# ---------------------------------------------------------------- group normalization


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization: each sample's channels split into ``G`` groups, each normalized over its channels
    and all positions, then scaled and shifted per channel.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    gamma, beta : array, shape (1, C, 1, 1)
    G : int
        Number of groups, a divisor of C.
    gn_param : dict
        ``eps`` (1e-5), added to each group's variance; other keys are ignored.

    Returns
    -------
    out : array, shape (N, C, H, W)
    cache : tuple ``(xhat, std, gamma, G)``
    """
    xp = namespace(x, gamma, beta)
    _check_ndim("x", x, 4)
    N, C, H, W = x.shape
    G = checks.integer("G", G, low=1)
    if C % G:
        raise ValueError(f"G must divide the number of channels {C} of x (shape {tuple(x.shape)}); got {G}")
    _check_shape("gamma and beta", (gamma, beta), (1, C, 1, 1), x)
    xhat, std = _normalize_rows(xp.reshape(x, (N * G, -1)), _eps(gn_param, "gn_param"))
    xhat = xp.reshape(xhat, x.shape)
    return gamma * xhat + beta, (xhat, std, gamma, G)


def spatial_groupnorm_backward(dout, cache):
    """Backward pass of ``spatial_groupnorm_forward``.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dgamma, dbeta : array, shape (1, C, 1, 1)
    """
    xhat, std, gamma, G = cache
    xp = namespace(dout, xhat)
    _check_shape("dout", (dout,), tuple(xhat.shape), xhat)
    N = dout.shape[0]
    dbeta = xp.sum(dout, axis=(0, 2, 3), keepdims=True)
    dgamma = xp.sum(dout * xhat, axis=(0, 2, 3), keepdims=True)
    rows = (N * G, -1)
    dx = _normalize_rows_backward(xp.reshape(dout * gamma, rows), xp.reshape(xhat, rows), std)
    return xp.reshape(dx, dout.shape), dgamma, dbeta
