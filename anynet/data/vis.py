"""Pictures of a training run: image grids, loss and accuracy curves, first-layer weights or filters.

matplotlib is imported here only, and lazily, through its object-oriented
API with the Agg canvas: plotting works headless and never changes the
caller's pyplot backend. Images are written atomically (``anynet.files``):
a viewer watching a run never reads half a picture.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..backends import to_numpy
from ..files import write_atomic


def visualize_grid(Xs, ubound=255.0, padding=1):
    """Tile a batch of images into one image, each rescaled to [0, ubound].

    Parameters
    ----------
    Xs : array, shape (N, H, W, C)
        Images of any backend.
    ubound : float
        Each image is shifted and scaled so its own minimum maps to 0 and its
        maximum to ``ubound`` (a constant image becomes 0).
    padding : int
        Pixels of zeros between neighbouring images.

    Returns
    -------
    ndarray, shape (G*H + (G-1)*padding, G*W + (G-1)*padding, C), float64
        Where ``G = ceil(sqrt(N))``; images fill the grid row by row.
    """
    Xs = to_numpy(Xs).astype(np.float64)
    if Xs.ndim != 4 or Xs.shape[0] == 0:
        raise ValueError(f"Xs must have shape (N, H, W, C) with N > 0; got {Xs.shape}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer; got {padding!r}")
    N, H, W, C = Xs.shape
    G = math.ceil(math.sqrt(N))
    grid = np.zeros((G * H + (G - 1) * padding, G * W + (G - 1) * padding, C))
    low = Xs.min(axis=(1, 2, 3), keepdims=True)
    span = Xs.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = float(ubound) * (Xs - low) / np.where(span > 0, span, 1.0)
    for i in range(N):
        row, col = divmod(i, G)
        top, left = row * (H + padding), col * (W + padding)
        grid[top:top + H, left:left + W] = scaled[i]
    return grid


def first_layer_images(W, image_shape=(3, 32, 32)):
    """First-layer weights ``W`` of shape (D, H) as H images of shape (32, 32, 3) (channels last)."""
    W = to_numpy(W)
    C, height, width = image_shape
    if W.ndim != 2 or W.shape[0] != C * height * width:
        raise ValueError(f"W must have shape ({C * height * width}, H); got {W.shape}")
    return W.T.reshape(-1, C, height, width).transpose(0, 2, 3, 1)


def save_image(image, path, scale=1):
    """Write an (H, W, 3) image with values in [0, 255] to ``path`` (PNG), each pixel ``scale`` times larger."""
    from matplotlib.image import imsave

    pixels = np.clip(np.rint(to_numpy(image)), 0, 255).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    write_atomic(path, lambda f: imsave(f, pixels, format=_format(path)))


def plot_weights(W, path, scale=3):
    """Save the first-layer weights ``W`` (3072, H) as a grid of 32x32 colour images at ``path``."""
    save_image(visualize_grid(first_layer_images(W), padding=1), path, scale=scale)


def filter_images(W):
    """Convolution filters ``W`` of shape (F, 3, k, k) as F colour images of shape (k, k, 3) (channels last)."""
    W = to_numpy(W)
    if W.ndim != 4 or W.shape[1] != 3:
        raise ValueError(f"W must have shape (F, 3, HH, WW): filters of colour images; got {W.shape}")
    return W.transpose(0, 2, 3, 1)


def plot_filters(W, path, size=256):
    """Save the first convolutional layer's filters ``W`` (F, 3, k, k) as a grid of k x k colour images at ``path``.

    Each filter is scaled to [0, 255] on its own (``visualize_grid``) and the
    grid enlarged by a whole factor to about ``size`` pixels a side, so that
    3x3 filters can be seen.
    """
    grid = visualize_grid(filter_images(W), padding=1)
    save_image(grid, path, scale=max(1, round(size / max(grid.shape[:2]))))


def _figure(rows=1):
    """A headless matplotlib figure with ``rows`` stacked axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2 * rows), layout="constrained")
    return fig, fig.subplots(rows, 1, squeeze=False)[:, 0]


def _draw_loss(ax, history):
    """Loss per iteration."""
    loss = history["loss_history"]
    ax.plot(np.arange(1, len(loss) + 1), loss, ".", markersize=2, alpha=0.6)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")


def _draw_accuracy(ax, history):
    """Training and validation accuracy at each check."""
    train, val = history["train_acc_history"], history["val_acc_history"]
    x = history.get("acc_iterations") or list(range(len(train)))
    ax.plot(x, train, "-o", label="train")
    ax.plot(x, val, "-o", label="validation")
    ax.set_xlabel("iteration" if history.get("acc_iterations") else "check")
    ax.set_ylabel("accuracy")
    ax.set_title("Classification accuracy")
    ax.legend(loc="lower right")


def plot_history(history, path, kind="both"):
    """Plot the loss and accuracy curves of a training run into ``path`` (PNG).

    Parameters
    ----------
    history : dict
        ``loss_history``, ``train_acc_history``, ``val_acc_history`` as the
        Solver names them (a Solver's attributes, or ``history.json``), and
        optionally ``acc_iterations``: the iteration of each accuracy check.
    path : str or path
    kind : {"both", "loss", "accuracy"}
        Both curves stacked, or one of them.
    """
    draw = {"loss": [_draw_loss], "accuracy": [_draw_accuracy], "both": [_draw_loss, _draw_accuracy]}
    if kind not in draw:
        raise ValueError(f"kind must be one of {', '.join(draw)}; got {kind!r}")
    if not isinstance(history, dict):
        history = {k: getattr(history, k) for k in ("loss_history", "train_acc_history", "val_acc_history")}
    fig, axes = _figure(len(draw[kind]))
    for ax, fn in zip(axes, draw[kind], strict=True):
        fn(ax, history)
    write_atomic(path, lambda f: fig.savefig(f, format=_format(path), dpi=100))


def _format(path):
    """The image format ``path``'s suffix names (png without one): a file object has no name to go by."""
    return Path(path).suffix.lstrip(".").lower() or "png"
