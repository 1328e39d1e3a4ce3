"""Pooling layers: max pooling (naive and fast pairs, as the course has), average and global average pooling.

Standard-only and free of in-place writes, like ``anynet.nn.conv``: the fast
forward passes reduce over the stack of a window's strided slices, and the
backward passes sum shifted copies of the window gradients (``col2im``)
instead of scattering into the input's gradient. Windows have no padding; a
stride that does not tile the input leaves its last rows or columns out of
every window (the course's floor), and their gradient is zero.
"""

from __future__ import annotations

from ..backends import fast_path, namespace
from . import checks
from .conv import LibraryCache, check_dout, col2im, place2d, windows
from .layers import _device

__all__ = [
    "avg_pool_backward", "avg_pool_forward", "global_avg_pool_backward", "global_avg_pool_forward",
    "max_pool_backward_fast", "max_pool_backward_naive", "max_pool_forward_fast", "max_pool_forward_naive",
]


def _pool_sizes(x, pool_param):
    """Check the arguments of a pooling layer; return ``(HH, WW, stride, H_out, W_out)``."""
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions (N, C, H, W); got shape {tuple(x.shape)}")
    keys = ("pool_height", "pool_width", "stride")
    if not isinstance(pool_param, dict) or any(k not in pool_param for k in keys):
        raise ValueError(f'pool_param must be a dict holding "pool_height", "pool_width" and "stride"; '
                         f"got {pool_param!r}")
    HH, WW, stride = (checks.integer(f'pool_param["{k}"]', pool_param[k], low=1) for k in keys)
    H, W = x.shape[2:]
    if HH > H or WW > W:
        raise ValueError(f"pool_param's {HH} x {WW} window does not fit in x of shape {tuple(x.shape)}")
    return HH, WW, stride, 1 + (H - HH) // stride, 1 + (W - WW) // stride


def _backward_sizes(dout, x, pool_param):
    """``_pool_sizes`` for a backward pass, once ``dout`` is checked to have the forward output's shape."""
    sizes = _pool_sizes(x, pool_param)
    check_dout(dout, (*x.shape[:2], *sizes[3:]))
    return sizes


def _first_max_mask(values, axis):
    """Float 0/1 array like ``values``: 1 at the first maximum along ``axis`` (``argmax`` returns the first)."""
    xp = namespace(values)
    shape = [1] * values.ndim
    shape[axis] = values.shape[axis]
    positions = xp.reshape(xp.arange(shape[axis], device=_device(values)), tuple(shape))
    return xp.astype(xp.expand_dims(xp.argmax(values, axis=axis), axis=axis) == positions, values.dtype)


# ---------------------------------------------------------------- max pooling, naive


def max_pool_forward_naive(x, pool_param):
    """Max pooling, one output position at a time.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    pool_param : dict
        ``pool_height``, ``pool_width`` and ``stride``, integers >= 1; no padding.

    Returns
    -------
    out : array, shape (N, C, H', W'), ``H' = 1 + (H - pool_height) // stride``, ``W' = 1 + (W - pool_width) // stride``
    cache : tuple ``(x, pool_param)``
    """
    xp = namespace(x)
    HH, WW, stride, H_out, W_out = _pool_sizes(x, pool_param)
    rows = [
        xp.stack([xp.max(x[:, :, y * stride:y * stride + HH, z * stride:z * stride + WW], axis=(2, 3))
                  for z in range(W_out)], axis=-1)
        for y in range(H_out)
    ]
    return xp.stack(rows, axis=-2), (x, pool_param)


def max_pool_backward_naive(dout, cache):
    """Backward pass of ``max_pool_forward_naive``.

    Each window passes its gradient to the position of its maximum, the first
    in row-major order when several elements tie; each window's gradient is
    placed where the window lies, and they are added up.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    x, pool_param = cache
    xp = namespace(dout, x)
    HH, WW, stride, H_out, W_out = _backward_sizes(dout, x, pool_param)
    N, C, H, W = x.shape
    dx = xp.zeros_like(x)
    for y in range(H_out):
        for z in range(W_out):
            top, left = y * stride, z * stride
            window = xp.reshape(x[:, :, top:top + HH, left:left + WW], (N, C, HH * WW))
            dwindow = xp.reshape(_first_max_mask(window, -1) * dout[:, :, y, z][:, :, None], (N, C, HH, WW))
            dx = dx + place2d(dwindow, top, left, H, W)
    return dx


# ---------------------------------------------------------------- max pooling, fast


def max_pool_forward_fast(x, pool_param):
    """Max pooling as the maximum over the stack of a window's ``HH * WW`` strided slices.

    Parameters and returns are those of ``max_pool_forward_naive``; the cache
    is ``(x, pool_param, cols)``, ``cols`` the (HH * WW, N, C, H', W') stack of window elements, or, where the
    library pools (``Backend.max_pool2d_forward``; see ``anynet.nn.conv``), ``(x, pool_param, LibraryCache)``.
    """
    xp = namespace(x)
    HH, WW, stride, H_out, W_out = _pool_sizes(x, pool_param)
    forward = fast_path(x, "max_pool2d_forward")
    if forward is not None:
        out, ctx = forward(x, HH, WW, stride)
        return out, (x, pool_param, LibraryCache(fast_path(x, "max_pool2d_backward"), ctx))
    cols = windows(x, HH, WW, stride, H_out, W_out)
    return xp.max(cols, axis=0), (x, pool_param, cols)


def max_pool_backward_fast(dout, cache):
    """Backward pass of ``max_pool_forward_fast``: ``dout`` masked to each window's first maximum, then ``col2im``.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    x, pool_param, cols = cache
    HH, WW, stride, H_out, W_out = _backward_sizes(dout, x, pool_param)
    N, C, H, W = x.shape
    if isinstance(cols, LibraryCache):
        return cols.backward(dout, cols.ctx)
    # The mask is made here, not in the forward pass, which also runs for scores alone.
    return col2im(_first_max_mask(cols, 0) * dout, H, W, HH, WW, stride, 0)


# ---------------------------------------------------------------- average pooling


def avg_pool_forward(x, pool_param):
    """Average pooling: the mean of each window (no padding).

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    pool_param : dict
        ``pool_height``, ``pool_width`` and ``stride``, as for ``max_pool_forward_naive``.

    Returns
    -------
    out : array, shape (N, C, H', W')
    cache : tuple ``(x, pool_param)``
    """
    xp = namespace(x)
    HH, WW, stride, H_out, W_out = _pool_sizes(x, pool_param)
    return xp.mean(windows(x, HH, WW, stride, H_out, W_out), axis=0), (x, pool_param)


def avg_pool_backward(dout, cache):
    """Backward pass of ``avg_pool_forward``: every element of a window gets its gradient over the window's size.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    x, pool_param = cache
    xp = namespace(dout, x)
    HH, WW, stride, H_out, W_out = _backward_sizes(dout, x, pool_param)
    N, C, H, W = x.shape
    # A product with a constant, not broadcast_to: col2im may hand back a slice of its input (a 1 x 1 window).
    share = xp.full((HH * WW, 1, 1, 1, 1), 1.0 / (HH * WW), dtype=dout.dtype, device=_device(dout))
    return col2im(share * dout, H, W, HH, WW, stride, 0)


def global_avg_pool_forward(x):
    """Global average pooling: the mean of each channel over all positions.

    Parameters
    ----------
    x : array, shape (N, C, H, W)

    Returns
    -------
    out : array, shape (N, C)
    cache : tuple ``(x.shape,)``
    """
    xp = namespace(x)
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions (N, C, H, W); got shape {tuple(x.shape)}")
    return xp.mean(x, axis=(2, 3)), (tuple(x.shape),)


def global_avg_pool_backward(dout, cache):
    """Backward pass of ``global_avg_pool_forward``: each position of a channel gets ``dout / (H * W)``.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    (shape,) = cache
    xp = namespace(dout)
    N, C, H, W = shape
    check_dout(dout, (N, C))
    # A product with a constant (H, W) array makes a fresh (N, C, H, W) array, not a read-only broadcast view.
    share = xp.full((H, W), 1.0 / (H * W), dtype=dout.dtype, device=_device(dout))
    return dout[:, :, None, None] * share
