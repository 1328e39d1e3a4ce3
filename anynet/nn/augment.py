"""Data augmentation: each training image its own random crop and horizontal flip inside a step
(``random_crop_flip``), and the mean scores of test-time views (``augmented_scores``: mirror images, one-pixel
shifts).

The crops and flips are as torchvision's ``RandomCrop(size, padding=pad)`` and ``RandomHorizontalFlip()``
do it: every image is shifted by its own offset in each direction, uniform in
``[-pad, pad]``, the zeros of the padding coming in at the border, and mirrored
left to right with probability 1/2. The draws come from the generator a step
carries (``rng.uniform``), on the device.

Standard-only and free of in-place writes and gathers: a shift (and a
mirror) of each image is a product with 0/1 selection matrices, one for the
rows and one for the columns of each image, so that compilers trace it and
every library runs it. A product with 0/1 weights copies values exactly.
"""

from __future__ import annotations

from ..backends import namespace
from .layers import _device

__all__ = ["random_crop_flip", "shift", "augmented_scores"]


def _images(x):
    """``(namespace, (N, C, H, W), device)`` of a batch of images ``x``, refused unless it has 4 dimensions."""
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions (N, C, H, W); got shape {tuple(x.shape)}")
    return namespace(x), tuple(x.shape), _device(x)


def random_crop_flip(x, rng, pad=4, flip=True):
    """Images ``x`` (N, C, H, W), each shifted by its own random offset in ``[-pad, pad]`` (rows and columns) and,
    with ``flip``, mirrored left to right with probability 1/2.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
    rng : object with ``uniform(shape, dtype)``
        Three draws per image are taken from it (a step's carried generator).
    pad : int
        The largest shift, as the padding of a crop of the original size.
    flip : bool

    Returns
    -------
    array, shape (N, C, H, W), a new array.
    """
    xp, (N, C, H, W), dev = _images(x)
    u = rng.uniform((3, N), dtype="float64" if x.dtype == xp.float64 else "float32")
    span = 2 * pad + 1
    dy = xp.astype(xp.floor(u[0, :] * span), xp.int32) - pad
    dx = xp.astype(xp.floor(u[1, :] * span), xp.int32) - pad
    rows = xp.arange(H, dtype=xp.int32, device=dev)
    cols = xp.arange(W, dtype=xp.int32, device=dev)
    # Row i of image n comes from row i + dy[n]: rows past the border select nothing (the padding's zeros).
    R = xp.astype(rows[None, None, :] == rows[None, :, None] + dy[:, None, None], x.dtype)  # (N, H, H)
    source = cols[None, :] + xp.zeros((N, 1), dtype=xp.int32, device=dev)
    if flip:
        mirrored = u[2, :] < 0.5
        source = xp.where(mirrored[:, None], (W - 1) - source, source)
    S = xp.astype(cols[None, None, :] == source[:, :, None] + dx[:, None, None], x.dtype)  # (N, W, W)
    shifted = R[:, None, :, :] @ x  # (N, C, H, W)
    return shifted @ xp.permute_dims(S, (0, 2, 1))[:, None, :, :]


def shift(x, dy, dx):
    """Images ``x`` (N, C, H, W) moved ``dy`` rows down and ``dx`` columns right, zeros coming in at the border
    (negative offsets move up and left), as a crop of the zero-padded image does it.

    Returns
    -------
    array, shape (N, C, H, W), a new array.
    """
    xp, (N, C, H, W), dev = _images(x)
    if abs(dy) >= H or abs(dx) >= W:
        raise ValueError(f"shifts must be smaller than the image ({H}x{W}); got dy={dy}, dx={dx}")
    if dy:
        rows = xp.zeros((N, C, abs(dy), W), dtype=x.dtype, device=dev)
        x = xp.concat([rows, x[:, :, :H - dy, :]] if dy > 0 else [x[:, :, -dy:, :], rows], axis=2)
    if dx:
        cols = xp.zeros((N, C, H, abs(dx)), dtype=x.dtype, device=dev)
        x = xp.concat([cols, x[:, :, :, :W - dx]] if dx > 0 else [x[:, :, :, -dx:], cols], axis=3)
    return x


def augmented_scores(scores, x, flip=False, translate=False):
    """The mean of the scores a model gives several views of images ``x``: test-time augmentation.

    With ``flip``, each image's scores are averaged with its mirror image's. With ``translate``, as airbench's
    test-time augmentation: half the weight stays on the image (and its mirror), a quarter goes to it shifted
    one pixel down and right, a quarter to it shifted one pixel up and left (``shift``).

    Parameters
    ----------
    scores : callable
        ``scores(x)``: the model's class scores, shape (N, C), of images (N, ...).
    x : array, shape (N, C, H, W) with ``translate``, else any shape ``scores`` takes
    flip, translate : bool

    Returns
    -------
    array, shape (N, C)
    """
    xp = namespace(x)

    def mirrored(images):
        out = scores(images)
        return 0.5 * (out + scores(xp.flip(images, axis=-1))) if flip else out

    out = mirrored(x)
    if translate:
        out = 0.5 * out + 0.25 * (mirrored(shift(x, 1, 1)) + mirrored(shift(x, -1, -1)))
    return out
