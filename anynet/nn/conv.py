"""Convolutional layers: ``conv_forward_*`` returns ``(out, cache)``, ``conv_backward_*`` takes ``(dout, cache)``.

The Array API standard has no convolution, so both pairs build one from
slicing, ``stack``/``concat`` and ``matmul``. Neither writes into an array:
JAX (whose arrays are immutable) runs them, and ``jax.jit`` and
``torch.compile`` trace them. The gradient with respect to the input, which a
loop would scatter-add window by window, is a sum of shifted copies of the
window gradients instead (``col2im``), built by zero padding and slicing.

The naive pair loops over output positions: it is the reference the fast
pair is tested against. ``anynet.fast_layers`` re-exports the fast pair.

Where the backend has the library's own convolution (torch, jax:
``Backend.conv2d_forward``), the fast pair uses it; NumPy, which has none,
pads and adds slabs in place (``Backend.pad2d``, ``Backend.col2im``). The
standard-only code here is the reference they are tested against, and
``anynet.backends.use_fast_paths(False)`` (or ``ANYNET_STANDARD_LAYERS=1``)
forces it everywhere.
"""

from __future__ import annotations

from ..backends import fast_path, namespace
from . import checks
from .layers import _device

__all__ = ["conv_backward_fast", "conv_backward_naive", "conv_forward_fast", "conv_forward_naive"]


# ---------------------------------------------------------------- helpers shared with anynet.nn.pooling


def pad2d(x, top, bottom, left, right):
    """``x`` with zero rows and columns added around its last two axes, by concatenation (the standard has no pad).

    Returns an array of shape ``(..., top + H + bottom, left + W + right)`` for ``x`` of shape ``(..., H, W)``.
    """
    fast = fast_path(x, "pad2d")
    if fast is not None:
        return fast(x, top, bottom, left, right)
    xp = namespace(x)

    def zeros(axis, n):
        shape = list(x.shape)
        shape[axis] = n
        return xp.zeros(tuple(shape), dtype=x.dtype, device=_device(x))

    for axis, before, after in ((-1, left, right), (-2, top, bottom)):
        # Empty blocks are left out: JAX would compile a program for each.
        parts = ([zeros(axis, before)] if before else []) + [x] + ([zeros(axis, after)] if after else [])
        if len(parts) > 1:
            x = xp.concat(parts, axis=axis)
    return x


def place2d(g, top, left, H, W):
    """A zero (..., H, W) array holding ``g`` (..., HH, WW) at rows ``top:top + HH`` and columns ``left:left + WW``.

    Built by contracting ``g`` with 0/1 placement matrices rather than by padding: every placement of ``g`` then
    runs the same operations on the same shapes (one compiled program each on JAX, not one per offset).
    """
    xp = namespace(g)
    dev = _device(g)
    HH, WW = g.shape[-2:]
    rows = xp.astype(xp.arange(H, device=dev)[:, None] == xp.arange(HH, device=dev)[None, :] + top, g.dtype)
    cols = xp.astype(xp.arange(W, device=dev)[:, None] == xp.arange(WW, device=dev)[None, :] + left, g.dtype)
    g = xp.tensordot(g, rows, axes=([g.ndim - 2], [1]))  # (..., WW, H)
    return xp.tensordot(g, cols, axes=([g.ndim - 2], [1]))  # (..., H, W)


def dilate2d(x, stride):
    """``x`` (..., H, W) with ``stride - 1`` zeros after every element of its last two axes.

    Returns shape ``(..., H * stride, W * stride)``; element ``[..., i, j]`` of ``x`` lands at
    ``[..., stride * i, stride * j]``. Interleaving by ``stack`` and ``reshape`` needs no index assignment.
    """
    if stride == 1:
        return x
    xp = namespace(x)
    zeros = xp.zeros_like(x)
    *lead, H, W = x.shape
    x = xp.reshape(xp.stack([x] + [zeros] * (stride - 1), axis=-2), (*lead, H * stride, W))
    zeros = xp.zeros_like(x)
    return xp.reshape(xp.stack([x] + [zeros] * (stride - 1), axis=-1), (*lead, H * stride, W * stride))


def windows(x, HH, WW, stride, H_out, W_out):
    """The ``HH * WW`` strided slices of ``x`` (A, B, H, W) that the windows of an HH x WW kernel see.

    Returns an array of shape (HH * WW, A, B, H_out, W_out) whose element ``[i * WW + j, a, b, y, z]``
    is ``x[a, b, stride * y + i, stride * z + j]``: im2col, one slice per kernel offset rather than one
    copy per window.
    """
    xp = namespace(x)
    # Each stop is one past the last element taken, so that no slice reaches beyond the array. A contiguous
    # slice, then a strided one (views both, on NumPy and PyTorch): JAX compiles one program per slice it has not
    # seen, and contiguous slices of one size share theirs whatever their start.
    h_span, w_span = stride * (H_out - 1) + 1, stride * (W_out - 1) + 1
    return xp.stack([x[..., i:i + h_span, j:j + w_span][..., ::stride, ::stride]
                     for i in range(HH) for j in range(WW)], axis=0)


def col2im(dcols, H, W, HH, WW, stride, pad):
    """Gradient with respect to ``x`` (A, B, H, W) of ``windows(pad2d(x, pad, ...), HH, WW, stride, ...)``.

    ``dcols`` (HH * WW, A, B, H_out, W_out) holds the gradient of each window element. Each kernel offset
    (i, j) contributes its (H_out, W_out) slab to every ``stride``-th position from (i, j) on: the slab,
    dilated by ``stride``, shifted by (i, j). Padding the dilated slabs once by the kernel size and taking
    one shifted slice per offset builds those shifts; their sum, cropped by ``pad``, is the gradient.

    Returns an array of shape (A, B, H, W).
    """
    fast = fast_path(dcols, "col2im")
    if fast is not None:
        return fast(dcols, H, W, HH, WW, stride, pad)
    dd = dilate2d(dcols, stride)
    H_d, W_d = dd.shape[-2:]
    # Offset (i, j) of padded position u reads dd[u - i]: padded by HH - 1 on top, row u + pad of x is at
    # HH - 1 + pad - i. The bottom pad makes every such slice of H rows fit; dilation's trailing zeros add nothing.
    dd = pad2d(dd, HH - 1, max(0, pad + H - H_d), WW - 1, max(0, pad + W - W_d))
    dx = None
    for i in range(HH):
        for j in range(WW):
            top, left = HH - 1 + pad - i, WW - 1 + pad - j
            part = dd[i * WW + j, ..., top:top + H, left:left + W]
            dx = part if dx is None else dx + part
    return dx


def check_dout(dout, shape):
    """Raise ``ValueError`` unless ``dout`` has ``shape``, the shape of the forward pass's output."""
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(f"dout must have the shape of the forward output, {tuple(shape)}; got {tuple(dout.shape)}")


# ---------------------------------------------------------------- argument checks


def _conv_sizes(x, w, b, conv_param):
    """Check the arguments of a convolution; return ``(stride, pad, H_out, W_out)``."""
    for name, a, ndim in (("x", x, 4), ("w", w, 4), ("b", b, 1)):
        if a.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions; got shape {tuple(a.shape)}")
    if not isinstance(conv_param, dict) or "stride" not in conv_param or "pad" not in conv_param:
        raise ValueError(f'conv_param must be a dict holding "stride" and "pad"; got {conv_param!r}')
    stride = checks.integer('conv_param["stride"]', conv_param["stride"], low=1)
    pad = checks.integer('conv_param["pad"]', conv_param["pad"], low=0)
    N, C, H, W = x.shape
    F, C_w, HH, WW = w.shape
    if C_w != C:
        raise ValueError(f"x has {C} channels but w expects {C_w} (x shape {tuple(x.shape)}, w shape {tuple(w.shape)})")
    if b.shape[0] != F:
        raise ValueError(f"b must have shape ({F},) for w of shape {tuple(w.shape)}; got {tuple(b.shape)}")
    for axis, size, k in (("height", H, HH), ("width", W, WW)):
        span = size + 2 * pad - k
        if span < 0 or span % stride:
            raise ValueError(
                f"conv_param {{'stride': {stride}, 'pad': {pad}}} does not fit the {axis}: the padded input "
                f"{axis} {size} + 2 * {pad} less the filter {axis} {k} is {span}, which must be a non-negative "
                f"multiple of the stride"
            )
    return stride, pad, 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride


# ---------------------------------------------------------------- naive


def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation, as the course defines it), one output position at a time.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    w : array, shape (F, C, HH, WW)
        F filters.
    b : array, shape (F,)
    conv_param : dict
        ``stride`` (an integer >= 1) and ``pad`` (an integer >= 0, zeros added on every side); ``H + 2 * pad - HH``
        and ``W + 2 * pad - WW`` must be multiples of ``stride``.

    Returns
    -------
    out : array, shape (N, F, H', W'), ``H' = 1 + (H + 2 * pad - HH) // stride`` and likewise W'
    cache : tuple ``(x, w, b, conv_param)``
    """
    xp = namespace(x, w, b)
    stride, pad, H_out, W_out = _conv_sizes(x, w, b, conv_param)
    HH, WW = w.shape[2:]
    xpad = pad2d(x, pad, pad, pad, pad)
    filters = w[None, ...]  # (1, F, C, HH, WW)
    rows = []
    for y in range(H_out):
        row = []
        for z in range(W_out):
            window = xpad[:, :, y * stride:y * stride + HH, z * stride:z * stride + WW]  # (N, C, HH, WW)
            row.append(xp.sum(window[:, None, ...] * filters, axis=(2, 3, 4)))  # (N, F)
        rows.append(xp.stack(row, axis=-1))  # (N, F, W')
    return xp.stack(rows, axis=-2) + b[:, None, None], (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """Backward pass of ``conv_forward_naive``, one output position at a time.

    Each position's window gradient is placed where its window lies in the padded input, and they are added up.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dw : array, shape (F, C, HH, WW)
    db : array, shape (F,)
    """
    x, w, b, conv_param = cache
    xp = namespace(dout, x, w)
    stride, pad, H_out, W_out = _conv_sizes(x, w, b, conv_param)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    check_dout(dout, (N, F, H_out, W_out))
    xpad = pad2d(x, pad, pad, pad, pad)
    Hp, Wp = H + 2 * pad, W + 2 * pad
    dxpad = xp.zeros_like(xpad)
    dw = xp.zeros_like(w)
    filters = w[None, ...]  # (1, F, C, HH, WW)
    for y in range(H_out):
        for z in range(W_out):
            top, left = y * stride, z * stride
            window = xpad[:, :, top:top + HH, left:left + WW]
            g = dout[:, :, y, z][:, :, None, None, None]  # (N, F, 1, 1, 1)
            dw = dw + xp.sum(g * window[:, None, ...], axis=0)
            dwindow = xp.sum(g * filters, axis=1)  # (N, C, HH, WW)
            dxpad = dxpad + place2d(dwindow, top, left, Hp, Wp)
    db = xp.sum(dout, axis=(0, 2, 3))
    return dxpad[:, :, pad:pad + H, pad:pad + W], dw, db


# ---------------------------------------------------------------- fast


def _filter_rows(w):
    """``w`` (F, C, HH, WW) as an (F, HH * WW * C) matrix, its columns in the order (i, j, c) of the window rows."""
    xp = namespace(w)
    F, C, HH, WW = w.shape
    return xp.reshape(xp.permute_dims(w, (0, 2, 3, 1)), (F, HH * WW * C))


class LibraryCache:
    """The cache of a layer the library computed (a backend's fast path), with the backward pass that reads it."""

    def __init__(self, backward, ctx):
        self.backward, self.ctx = backward, ctx


def conv_forward_fast(x, w, b, conv_param):
    """Convolution by im2col: one strided slice of the padded input per kernel offset, then one ``matmul``.

    Parameters and returns are those of ``conv_forward_naive``; the cache is
    ``(x, w, b, conv_param, cols)``, ``cols`` the (HH * WW * C, N * H' * W') window matrix, or, where the
    library computes it (see the module), ``(x, w, b, conv_param, LibraryCache)``.
    """
    xp = namespace(x, w, b)
    stride, pad, H_out, W_out = _conv_sizes(x, w, b, conv_param)
    forward = fast_path(x, "conv2d_forward")
    if forward is not None:
        out, ctx = forward(x, w, b, stride, pad)
        return out, (x, w, b, conv_param, LibraryCache(fast_path(x, "conv2d_backward"), ctx))
    N, C = x.shape[:2]
    F, _, HH, WW = w.shape
    # Channels first, so that the stacked windows reshape without a copy to rows (i, j, c) and columns (n, y, z)
    # and the product is one 2-d matmul: PyTorch's batched matmul of small shapes is far slower on a CPU.
    xpad = pad2d(xp.permute_dims(x, (1, 0, 2, 3)), pad, pad, pad, pad)
    cols = xp.reshape(windows(xpad, HH, WW, stride, H_out, W_out), (HH * WW * C, N * H_out * W_out))
    out = _filter_rows(w) @ cols + b[:, None]  # (F, N * H' * W')
    return xp.permute_dims(xp.reshape(out, (F, N, H_out, W_out)), (1, 0, 2, 3)), (x, w, b, conv_param, cols)


def conv_backward_fast(dout, cache):
    """Backward pass of ``conv_forward_fast``: two ``matmul`` and a ``col2im`` of shifted slices.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dw : array, shape (F, C, HH, WW)
    db : array, shape (F,)
    """
    return conv_backward(dout, cache, need_dx=True)


def conv_backward(dout, cache, need_dx):
    """``conv_backward_fast`` that skips ``dx`` (None), a third of the work, when nobody needs it (a net's first
    layer: nobody needs the gradient with respect to the images)."""
    x, w, b, conv_param, cols = cache
    stride, pad, H_out, W_out = _conv_sizes(x, w, b, conv_param)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    check_dout(dout, (N, F, H_out, W_out))
    if isinstance(cols, LibraryCache):
        return cols.backward(dout, cols.ctx, need_dx)
    xp = namespace(dout, cols, w)
    dout2 = xp.reshape(xp.permute_dims(dout, (1, 0, 2, 3)), (F, N * H_out * W_out))
    db = xp.sum(dout2, axis=1)
    dw = xp.permute_dims(xp.reshape(dout2 @ cols.T, (F, HH, WW, C)), (0, 3, 1, 2))
    if not need_dx:
        return None, dw, db
    dcols = xp.reshape(_filter_rows(w).T @ dout2, (HH * WW, C, N, H_out, W_out))
    dx = col2im(dcols, H, W, HH, WW, stride, pad)  # (C, N, H, W)
    return xp.permute_dims(dx, (1, 0, 2, 3)), dw, db
