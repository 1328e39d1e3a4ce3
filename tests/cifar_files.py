"""Write small CIFAR-10 look-alikes in the official ``cifar-10-batches-py`` format, so tests need no download.

Images are a per-class colour pattern plus noise, so a small net can learn
them quickly; labels cycle through the ten classes in a shuffled order.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_images(n, rng, noise=40):
    """``n`` uint8 images (n, 32, 32, 3) and their int64 labels: a class pattern plus noise."""
    patterns = np.random.default_rng(1234).integers(40, 216, size=(10, 4, 4, 3))
    y = rng.permutation(np.arange(n) % 10)
    base = patterns[y].repeat(8, axis=1).repeat(8, axis=2).astype(np.float64)
    X = np.clip(base + rng.normal(0, noise, size=base.shape), 0, 255).astype(np.uint8)
    return X, y.astype(np.int64)


def pickle_batch(obj, protocol=2):
    """Pickle ``obj`` as the official files do, naming NumPy's reconstruction ``numpy.core.multiarray``.

    Protocol 2 from Python 3 pickles bytes through ``_codecs.encode``; protocol 3
    is what ``make_cifar10.py`` writes.
    """
    raw = pickle.dumps(obj, protocol=protocol)
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def batch_dict(X, y, label):
    """The dict of one official batch holding images ``X`` (N, 32, 32, 3) and labels ``y``."""
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in y],
        b"data": np.ascontiguousarray(X.transpose(0, 3, 1, 2).reshape(len(X), 3072)),
        b"filenames": [f"{CLASSES[int(v)]}_{i}.png".encode() for i, v in enumerate(y)],
    }


def write_cifar10(root, n_per_batch=40, n_test=100, protocol=2, seed=0):
    """Write ``root/cifar-10-batches-py`` with five training batches and a test batch.

    Returns
    -------
    folder : Path
        The ``cifar-10-batches-py`` folder.
    arrays : tuple
        ``(X_train, y_train, X_test, y_test)`` exactly as written, images
        (N, 32, 32, 3) uint8.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    X_train, y_train = make_images(5 * n_per_batch, rng)
    X_test, y_test = make_images(n_test, rng)
    for b in range(5):
        s = slice(b * n_per_batch, (b + 1) * n_per_batch)
        d = batch_dict(X_train[s], y_train[s], f"training batch {b + 1} of 5")
        (folder / f"data_batch_{b + 1}").write_bytes(pickle_batch(d, protocol))
    (folder / "test_batch").write_bytes(pickle_batch(batch_dict(X_test, y_test, "testing batch 1 of 1"), protocol))
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle_batch(meta, protocol))
    return folder, (X_train, y_train, X_test, y_test)


def write_archive(folder, path):
    """Pack ``folder`` (a ``cifar-10-batches-py``) into the tar.gz ``path``, laid out like the official archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=FOLDER)
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)
