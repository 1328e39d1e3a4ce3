"""CIFAR-10 prepared the way the course prepared it: the official python batches, read, checked and split.

``load_batch`` reads one batch file (through the restricted unpickler of
``anynet.data.pickles``) and checks what it holds; ``load_cifar10`` reads
the whole dataset where ``anynet.data.download`` finds it, and
``get_cifar10_data`` splits and normalizes it, downloading it first when it
is missing. The course's own names (``load_CIFAR10``, ...) come last.
"""

from __future__ import annotations

import os
from numbers import Integral
from pathlib import Path

import numpy as np

from ..nn import checks
from .download import TEST_BATCH, TRAIN_BATCHES, data_root, download_cifar10, find_cifar10, missing_message
from .pickles import DatasetError, unpickle

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 3 * 32 * 32


def _field(batch, name):
    """``batch[name]`` whether the pickle keyed it by bytes (Python 2) or str."""
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    raise KeyError(name)


def load_batch(path):
    """Read one official batch file; return images (N, 32, 32, 3) uint8 and labels (N,) int64.

    Raises
    ------
    DatasetError
        If the file is unsafe, corrupt, or does not hold a uint8 ``data``
        array of shape (N, 3072) with N labels in [0, 10).
    """
    path = Path(path)
    batch = unpickle(path)
    try:
        if not isinstance(batch, dict):
            raise TypeError(f"expected a dict; got {type(batch).__name__}")
        data, labels = _field(batch, "data"), _field(batch, "labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise TypeError(
                f"data must be a uint8 array of shape (N, {_PIXELS}); got "
                f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}"
            )
        if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
            isinstance(v, (Integral, np.integer)) and not isinstance(v, bool) for v in labels
        ):
            raise TypeError("labels must be a list of integers")
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if y.shape[0] != data.shape[0]:
            raise ValueError(f"{data.shape[0]} images but {y.shape[0]} labels")
        if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
            raise ValueError(f"labels must lie in [0, {len(CLASSES)}); got {y.min()}..{y.max()}")
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path} is not a CIFAR-10 batch: {exc}") from None
    # Rows are 1024 red, then green, then blue values of a row-major 32x32 image.
    X = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(X), y


def load_cifar10(root=None):
    """Load the official python version of CIFAR-10.

    Parameters
    ----------
    root : str or path, optional
        The ``cifar-10-batches-py`` folder or its parent; default as in ``data_root``.

    Returns
    -------
    X_train : ndarray, shape (50000, 32, 32, 3), uint8
    y_train : ndarray, shape (50000,), int64, values in [0, 10)
    X_test : ndarray, shape (10000, 32, 32, 3), uint8
    y_test : ndarray, shape (10000,), int64

    Raises
    ------
    FileNotFoundError
        If the batches are not there; the message says where to put them.
    DatasetError
        If a batch is unsafe, truncated or malformed; the message names the file.
    """
    folder = find_cifar10(root)
    if folder is None:
        raise FileNotFoundError(missing_message(data_root(root)))
    parts = []
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; the folder {folder} is incomplete. {missing_message(folder)}")
        parts.append(load_batch(path))
    X_train = np.concatenate([X for X, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    X_test, y_test = parts[-1]
    return X_train, y_train, X_test, y_test


def get_cifar10_data(root=None, num_training=49000, num_validation=1000, num_test=1000, subtract_mean=True,
                     dtype="float32", download=True):
    """CIFAR-10 split and normalized the way the course prepared it.

    Validation is the ``num_validation`` training images right after the first
    ``num_training``; test is the first ``num_test`` test images. The mean
    training image is subtracted from all three splits, and images are
    channels-first so that ``affine_forward`` flattens them.

    Parameters
    ----------
    root : str or path, optional
        The ``cifar-10-batches-py`` folder or its parent; default ``$ANYNET_DATA``,
        else ``~/.cache/anynet``.
    num_training, num_validation : int
        Their sum may not exceed the 50,000 training images.
    num_test : int
        At most the 10,000 test images; 0 leaves the test split empty.
    subtract_mean : bool
    dtype : {"float32", "float64"}
    download : bool
        Fetch the archive with ``download_cifar10`` when the data is missing.

    Returns
    -------
    dict
        ``X_train, X_val, X_test`` NumPy arrays of shape (N, 3, 32, 32) and
        ``dtype``; ``y_train, y_val, y_test`` int64 labels of shape (N,).
    """
    num_training = checks.integer("num_training", num_training)
    num_validation = checks.integer("num_validation", num_validation)
    num_test = checks.integer("num_test", num_test, low=0)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}")
    if find_cifar10(root) is None and download:
        download_cifar10(root)
    X_train, y_train, X_test, y_test = load_cifar10(root)
    if num_training + num_validation > X_train.shape[0]:
        raise ValueError(
            f"num_training + num_validation must be at most {X_train.shape[0]} (the training images); "
            f"got {num_training} + {num_validation}"
        )
    if num_test > X_test.shape[0]:
        raise ValueError(f"num_test must be at most {X_test.shape[0]} (the test images); got {num_test}")
    stop = num_training + num_validation
    splits = {
        "train": (X_train[:num_training], y_train[:num_training]),
        "val": (X_train[num_training:stop], y_train[num_training:stop]),
        "test": (X_test[:num_test], y_test[:num_test]),
    }
    mean = splits["train"][0].mean(axis=0, dtype=np.float64).transpose(2, 0, 1).astype(dtype)
    data = {}
    for split, (X, y) in splits.items():
        # Filled in place in the target dtype: no float64 copy of the whole set.
        out = np.empty((X.shape[0], 3, 32, 32), dtype=dtype)
        out[...] = X.transpose(0, 3, 1, 2)
        if subtract_mean:
            out -= mean
        data[f"X_{split}"] = out
        data[f"y_{split}"] = y
    return data


# The course's names (``cs231n.data_utils``), on the loaders above; ``anynet.data_utils`` re-exports them.


def load_CIFAR_batch(filename):
    """The course's ``load_CIFAR_batch``: one batch file as float64 images (N, 32, 32, 3) and int64 labels (N,).

    Read with ``load_batch`` (the restricted unpickler); only the dtype differs.
    """
    X, y = load_batch(filename)
    return X.astype(np.float64), y


def load_CIFAR10(root):
    """The course's ``load_CIFAR10``: ``load_cifar10(root)`` with float64 images, as the course returns them.

    Parameters
    ----------
    root : str or path
        The ``cifar-10-batches-py`` folder or its parent.

    Returns
    -------
    X_train : ndarray, shape (50000, 32, 32, 3), float64
        Pixel values 0..255, so that the notebook's in-place ``X_train -= mean_image`` works.
    y_train : ndarray, shape (50000,), int64
    X_test : ndarray, shape (10000, 32, 32, 3), float64
    y_test : ndarray, shape (10000,), int64
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (the cifar-10-batches-py folder or its parent); got {root!r}")
    X_train, y_train, X_test, y_test = load_cifar10(root)
    return X_train.astype(np.float64), y_train, X_test.astype(np.float64), y_test


def get_CIFAR10_data(num_training=49000, num_validation=1000, num_test=1000, subtract_mean=True,
                     cifar10_dir=None):
    """The course's ``get_CIFAR10_data`` (``cs231n.data_utils``): ``get_cifar10_data`` in float64.

    The course reads a fixed folder; here it is ``cifar10_dir``, else
    ``$ANYNET_DATA``, else ``~/.cache/anynet`` (downloaded there when missing).

    Returns
    -------
    dict
        ``X_train, X_val, X_test``: float64 (N, 3, 32, 32), channels first, the
        mean training image subtracted (with ``subtract_mean``);
        ``y_train, y_val, y_test``: int64 (N,). Validation is the
        ``num_validation`` images after the first ``num_training``.
    """
    return get_cifar10_data(cifar10_dir, num_training=num_training, num_validation=num_validation,
                            num_test=num_test, subtract_mean=subtract_mean, dtype="float64")
