"""Plots: the image grid, loss/accuracy curves and first-layer weights or filters, headless."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from anynet.data import vis


def test_visualize_grid_tiles_rescaled_images():
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(5, 4, 3, 2))
    Xs[3] = 7.0  # a constant image
    grid = vis.visualize_grid(Xs, ubound=10.0, padding=2)
    # ceil(sqrt(5)) = 3 images per row and column, with 2 pixels between them.
    assert grid.shape == (3 * 4 + 2 * 2, 3 * 3 + 2 * 2, 2)
    for i in range(9):
        row, col = divmod(i, 3)
        tile = grid[row * 6:row * 6 + 4, col * 5:col * 5 + 3]
        if i < 5 and i != 3:
            x = Xs[i]
            np.testing.assert_allclose(tile, 10.0 * (x - x.min()) / (x.max() - x.min()))
        else:
            np.testing.assert_array_equal(tile, 0.0)
    # Padding rows and columns stay zero.
    np.testing.assert_array_equal(grid[4:6], 0.0)
    np.testing.assert_array_equal(grid[:, 3:5], 0.0)


def test_visualize_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="Xs must have shape"):
        vis.visualize_grid(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="padding"):
        vis.visualize_grid(np.zeros((1, 4, 4, 3)), padding=-1)


def test_first_layer_images_undo_the_flattening():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 3, 32, 32))  # what affine_forward flattens, channels first
    W = images.reshape(6, -1).T  # column j is image j
    out = vis.first_layer_images(W)
    np.testing.assert_array_equal(out, images.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="W must have shape"):
        vis.first_layer_images(np.zeros((100, 3)))


def test_plot_weights_writes_a_png_of_the_grid(tmp_path):
    W = np.random.default_rng(2).normal(size=(3072, 10))
    vis.plot_weights(W, tmp_path / "w.png", scale=2)
    image = imread(tmp_path / "w.png")
    side = 2 * (4 * 32 + 3)  # 10 images -> a 4x4 grid with 1-pixel padding, doubled
    assert image.shape[:2] == (side, side)
    # The first tile is the first weight column, rescaled to [0, 255] (PNG stores it as [0, 1]).
    tile = vis.first_layer_images(W)[0]
    expected = np.rint(255 * (tile - tile.min()) / (tile.max() - tile.min())) / 255
    np.testing.assert_allclose(image[0:64:2, 0:64:2, :3], expected, atol=1 / 255 + 1e-6)


def test_plot_filters_writes_each_filter_as_an_enlarged_colour_tile(tmp_path):
    W = np.random.default_rng(3).normal(size=(5, 3, 3, 3))  # 5 filters of 3x3 on colour images
    vis.plot_filters(W, tmp_path / "f.png", size=110)
    image = imread(tmp_path / "f.png")
    # 5 filters -> a 3x3 grid of 3-pixel tiles with 1-pixel padding: 11 pixels, enlarged 10 times.
    assert image.shape[:2] == (110, 110)
    tile = W[0].transpose(1, 2, 0)
    expected = np.rint(255 * (tile - tile.min()) / (tile.max() - tile.min())) / 255
    np.testing.assert_allclose(image[0:30:10, 0:30:10, :3], expected, atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="filters of colour images"):
        vis.plot_filters(np.zeros((4, 1, 3, 3)), tmp_path / "g.png")


def test_plot_history_writes_pngs(tmp_path):
    history = {
        "loss_history": [2.3, 2.1, 1.9, 1.8],
        "train_acc_history": [0.1, 0.3, 0.4],
        "val_acc_history": [0.1, 0.25, 0.35],
        "acc_iterations": [1, 2, 4],
    }
    for kind in ("loss", "accuracy", "both"):
        path = tmp_path / f"{kind}.png"
        vis.plot_history(history, path, kind=kind)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(path).ndim == 3
    assert imread(tmp_path / "both.png").shape[0] > imread(tmp_path / "loss.png").shape[0]
    with pytest.raises(ValueError, match="kind"):
        vis.plot_history(history, tmp_path / "x.png", kind="weights")


def test_matplotlib_is_imported_lazily():
    code = (
        "import sys, anynet, anynet.data.vis, anynet.app.train, anynet.app.runs, anynet.app.cli, anynet.data;"
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
