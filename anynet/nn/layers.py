"""Layers: each ``*_forward`` returns ``(out, cache)``, its ``*_backward`` takes ``(dout, cache)``.

Written once against the Array API standard: the namespace comes from the
inputs, so the same function runs on NumPy, CuPy, PyTorch and
array-api-strict arrays, on whatever device they live.
"""

from __future__ import annotations

import math

import array_api_compat

from ..backends import Generator, is_eager, namespace, tracing

__all__ = [
    "affine_backward", "affine_forward", "batchnorm_backward", "batchnorm_backward_alt", "batchnorm_forward",
    "dropout_backward", "dropout_forward", "relu_backward", "relu_forward", "softmax_loss", "svm_loss",
]


def _check_ndim(name, x, ndim):
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions."""
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s); got shape {tuple(x.shape)}")


def _check_scores_labels(x, y):
    """Validate (N, C) scores ``x`` against (N,) integer labels ``y``."""
    xp = namespace(x, y)
    _check_ndim("x", x, 2)
    _check_ndim("y", y, 1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must have the same length; got {x.shape[0]} and {y.shape[0]}")
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"y must hold integer labels; got dtype {y.dtype}")
    return xp


def _device(x):
    """The device of ``x``: its attribute, which JAX's tracers lack (array-api-compat knows theirs)."""
    try:
        return x.device
    except AttributeError:
        return array_api_compat.device(x)


_CONSTANTS: dict = {}


def _constant(xp, like, n=None):
    """``zeros(())`` (``n`` None) or ``arange(n)`` in the dtype and on the device of ``like``, made once.

    On a GPU, making even these tiny arrays costs a launch (CuPy's ``arange``
    more than the comparison it feeds), so each is kept, keyed by namespace,
    dtype, device and ``n``. A 0-d zero on the device also keeps ``maximum``
    from copying a Python scalar to the GPU (PyTorch) and avoids
    array-api-compat's ``clip``, which assigns through a boolean mask (CuPy):
    both would synchronize.
    """
    dev = _device(like)
    # A traced step's constants belong to its graph: kept here, they would outlive the trace. Traced arrays are
    # told by the flag of anynet's compiled steps, and, where a caller compiles on its own (jax.jit of a layer),
    # by their type, which is not the library's eager array type.
    if tracing() or not is_eager(like):
        return xp.zeros((), dtype=like.dtype, device=dev) if n is None else xp.arange(n, dtype=like.dtype, device=dev)
    try:
        key = (xp, like.dtype, dev, n)
        value = _CONSTANTS.get(key)
    except TypeError:  # a device object that cannot be hashed
        key = (xp, like.dtype, str(dev), n)
        value = _CONSTANTS.get(key)
    if value is None:
        value = xp.zeros((), dtype=like.dtype, device=dev) if n is None else xp.arange(n, dtype=like.dtype, device=dev)
        _CONSTANTS[key] = value
    return value


def _one_hot(y, C, xp):
    """Boolean (N, C) array, True where column == label."""
    return y[:, None] == _constant(xp, y, C)[None, :]


def affine_forward(x, w, b):
    """Affine (fully connected) layer: ``out = x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : array, shape (N, d_1, ..., d_k)
        Inputs; each row is flattened to D = d_1 * ... * d_k features.
    w : array, shape (D, M)
    b : array, shape (M,)

    Returns
    -------
    out : array, shape (N, M)
    cache : tuple
        What ``affine_backward`` needs.
    """
    xp = namespace(x, w, b)
    N = x.shape[0]
    x2 = xp.reshape(x, (N, -1))
    if x2.shape[1] != w.shape[0]:
        raise ValueError(
            f"x has {x2.shape[1]} features per row but w expects {w.shape[0]} (w shape {tuple(w.shape)})"
        )
    out = x2 @ w
    if out.dtype == b.dtype and b.ndim == 1:
        out += b  # in place on the product this function made: one (N, M) array, not two
    else:
        out = out + b
    return out, (x, x2, w)


def affine_backward(dout, cache):
    """Backward pass of ``affine_forward``.

    Returns
    -------
    dx : array, the shape of ``x``
    dw : array, shape (D, M)
    db : array, shape (M,)
    """
    return _affine_backward(dout, cache, need_dx=True)


def _affine_backward(dout, cache, need_dx):
    """``affine_backward`` that skips ``dx`` (a third of the work) when nobody needs it."""
    x, x2, w = cache
    xp = namespace(dout, w)
    dw = x2.T @ dout
    db = xp.sum(dout, axis=0)
    dx = xp.reshape(dout @ w.T, x.shape) if need_dx else None
    return dx, dw, db


def relu_forward(x):
    """Rectified linear unit, ``max(x, 0)``; returns ``(out, cache)``."""
    xp = namespace(x)
    out = xp.maximum(x, _constant(xp, x))
    return out, out


def relu_backward(dout, cache):
    """Backward pass of ``relu_forward``: ``dout`` where the input was positive."""
    xp = namespace(dout, cache)
    # A product with the 0/1 mask: NumPy's where() is much slower here (benchmarks/RESULTS.md), and sign(out),
    # though one operation fewer, is on CuPy array-api-compat's sign, which patches NaNs through a boolean mask.
    return dout * xp.astype(cache > 0, dout.dtype)


def softmax_loss(x, y, smoothing=0.0):
    """Softmax cross-entropy loss, averaged over the batch.

    Parameters
    ----------
    x : array, shape (N, C)
        Class scores.
    y : array, shape (N,)
        Integer labels, ``0 <= y[i] < C``.
    smoothing : float
        Label smoothing (Szegedy et al., 2016): the target puts ``1 - smoothing``
        on the label and spreads ``smoothing`` evenly over all C classes. 0 is
        the course's loss.

    Returns
    -------
    loss : 0-d array on the device of ``x``
    dx : array, shape (N, C)
    """
    xp = _check_scores_labels(x, y)
    N, C = x.shape
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be a number in [0, 1); got {smoothing!r}")
    # Shifting by the row maximum keeps exp() finite for any score.
    shifted = x - xp.max(x, axis=1, keepdims=True)
    e = xp.exp(shifted)
    z = xp.sum(e, axis=1, keepdims=True)
    is_label = _one_hot(y, C, xp)
    # -log p[i, y_i] = log z_i - shifted[i, y_i], picked out by the one-hot mask: on a GPU take_along_axis
    # costs several launches. where(), not a product, so that a -inf elsewhere in the row cannot give 0 * inf.
    loss = xp.sum(xp.where(is_label, xp.log(z) - shifted, _constant(xp, x))) / N
    # dx = (probs - one_hot(y)) / N, built in the one fresh array e / z.
    dx = e / z
    if smoothing:
        # The mean over classes of -log p[i, c] is log z_i - mean(shifted[i]); the target's smoothed part is
        # smoothing / C on every class.
        spread = xp.sum(xp.log(z)) / N - xp.sum(shifted) / (N * C)
        loss = (1.0 - smoothing) * loss + smoothing * spread
        dx -= xp.astype(is_label, x.dtype) * (1.0 - smoothing) + smoothing / C
    else:
        dx -= xp.astype(is_label, x.dtype)
    dx /= N
    return loss, dx


def svm_loss(x, y):
    """Multiclass hinge loss with margin 1, averaged over the batch.

    Parameters and returns are those of ``softmax_loss``.
    """
    xp = _check_scores_labels(x, y)
    N, C = x.shape
    is_label = _one_hot(y, C, xp)
    correct = xp.take_along_axis(x, y[:, None], axis=1)
    margins = xp.where(is_label, 0.0, xp.maximum(x - correct + 1.0, _constant(xp, x)))
    loss = xp.sum(margins) / N
    positive = xp.astype(margins > 0, x.dtype)
    num_positive = xp.sum(positive, axis=1, keepdims=True)
    dx = (positive - xp.astype(is_label, x.dtype) * num_positive) / N
    return loss, dx


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization over the batch axis of (N, D) ``x``.

    Parameters
    ----------
    x : array, shape (N, D)
    gamma, beta : array, shape (D,)
        Scale and shift.
    bn_param : dict
        ``mode`` ("train" or "test", required), ``eps`` (1e-5), ``momentum``
        (0.9), and the state ``running_mean`` / ``running_var``, created here on
        first use on the device of ``x``. In train mode they become
        ``momentum * running + (1 - momentum) * batch_stat``; test mode
        normalizes with them instead of the batch statistics.

    Returns
    -------
    out : array, shape (N, D)
    cache : tuple, or None in test mode
    """
    _check_ndim("x", x, 2)
    return _batchnorm_forward(x, gamma, beta, bn_param, axes=(0,))


def _batchnorm_forward(x, gamma, beta, bn_param, axes):
    """Batch normalization of ``x`` over ``axes``, per channel of its one other axis (the course's checks).

    The train-mode cache is ``(xhat, xc, std, gamma)``; ``std`` and ``gamma`` broadcast against ``x``.
    """
    xp = namespace(x, gamma, beta)
    mode = bn_param.get("mode")
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    channel = [axis for axis in range(x.ndim) if axis not in axes][0]
    D = x.shape[channel]
    if tuple(gamma.shape) != (D,) or tuple(beta.shape) != (D,):
        raise ValueError(
            f"gamma and beta must have shape ({D},) for x of shape {tuple(x.shape)}; "
            f"got {tuple(gamma.shape)} and {tuple(beta.shape)}"
        )
    if mode not in ("train", "test"):
        raise ValueError(f'bn_param["mode"] must be "train" or "test"; got {mode!r}')
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f'bn_param["eps"] must be a number > 0; got {eps!r}')
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
        raise ValueError(f'bn_param["momentum"] must be a number in [0, 1]; got {momentum!r}')
    if "running_mean" not in bn_param:
        bn_param["running_mean"] = xp.zeros(D, dtype=x.dtype, device=_device(x))
    if "running_var" not in bn_param:
        bn_param["running_var"] = xp.ones(D, dtype=x.dtype, device=_device(x))
    shape = tuple([D if axis == channel else 1 for axis in range(x.ndim)])

    def per_channel(a):
        return a if channel == x.ndim - 1 else xp.reshape(a, shape)

    if mode == "train":
        mu = xp.mean(x, axis=axes)
        xc = x - per_channel(mu)
        var = xp.mean(xc * xc, axis=axes)
        std = per_channel(xp.sqrt(var + eps))
        xhat = xc / std
        out = per_channel(gamma) * xhat + per_channel(beta)
        bn_param["running_mean"] = momentum * bn_param["running_mean"] + (1 - momentum) * mu
        bn_param["running_var"] = momentum * bn_param["running_var"] + (1 - momentum) * var
        return out, (xhat, xc, std, per_channel(gamma))
    scale = per_channel(xp.sqrt(bn_param["running_var"] + eps))
    xhat = (x - per_channel(bn_param["running_mean"])) / scale
    return per_channel(gamma) * xhat + per_channel(beta), None


def batchnorm_backward(dout, cache):
    """Backward pass of ``batchnorm_forward``, step by step through its graph.

    Returns
    -------
    dx : array, shape (N, D)
    dgamma, dbeta : array, shape (D,)
    """
    xhat, xc, std, gamma = cache
    xp = namespace(dout, xhat)
    N = dout.shape[0]
    dbeta = xp.sum(dout, axis=0)
    dgamma = xp.sum(dout * xhat, axis=0)
    dxhat = dout * gamma
    # xhat = xc * invstd; invstd = 1 / std; std = sqrt(var + eps); var = mean(xc**2)
    dinvstd = xp.sum(dxhat * xc, axis=0)
    dstd = -dinvstd / (std * std)
    dvar = dstd / (2.0 * std)
    dxc = dxhat / std + 2.0 * xc * dvar / N
    # xc = x - mean(x)
    dx = dxc - xp.mean(dxc, axis=0)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Backward pass of ``batchnorm_forward`` in the simplified closed form.

    ``dx = gamma / std * (dout - mean(dout) - xhat * mean(dout * xhat))``;
    agrees with ``batchnorm_backward`` in fewer passes.
    """
    return _batchnorm_backward(dout, cache, axes=(0,))


def _batchnorm_backward(dout, cache, axes):
    """``batchnorm_backward_alt`` over ``axes`` (see ``_batchnorm_forward``)."""
    xhat, _, std, gamma = cache
    xp = namespace(dout, xhat)
    dbeta = xp.sum(dout, axis=axes)
    dgamma = xp.sum(dout * xhat, axis=axes)
    M = math.prod([dout.shape[axis] for axis in axes])
    # dbeta and dgamma broadcast against dout as gamma does.
    dx = (gamma / std) * (dout - (xp.reshape(dbeta, gamma.shape) + xhat * xp.reshape(dgamma, gamma.shape)) / M)
    return dx, dgamma, dbeta


def dropout_forward(x, dropout_param):
    """Inverted dropout.

    Parameters
    ----------
    x : array
    dropout_param : dict
        ``p``: probability of dropping each unit, ``0 <= p < 1``; ``mode``:
        "train" or "test" (identity); optional ``seed`` (the same seed gives the
        same mask) or ``rng``, a ``backend.Generator`` to draw the mask from.
        Kept units are scaled by ``1 / (1 - p)`` so test mode needs no scaling.

    Returns
    -------
    out : array, the shape of ``x``
    cache : tuple
    """
    p = dropout_param.get("p")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ValueError(f'dropout_param["p"] must be a number in [0, 1); got {p!r}')
    mode = dropout_param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f'dropout_param["mode"] must be "train" or "test"; got {mode!r}')
    if mode == "test" or p == 0:
        return x, (mode, None)
    xp = namespace(x)
    rng = dropout_param.get("rng")
    if rng is None:
        rng = Generator(dropout_param.get("seed"), like=x)
    keep = rng.uniform(x.shape, dtype="float64" if x.dtype == xp.float64 else "float32") >= p
    mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
    return x * mask, (mode, mask)


def dropout_backward(dout, cache):
    """Backward pass of ``dropout_forward``."""
    mode, mask = cache
    return dout if mask is None else dout * mask
