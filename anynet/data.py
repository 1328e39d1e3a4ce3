"""CIFAR-10: find, download, safely unpickle and prepare the official python batches.

The official archive holds Python 2 pickles of dicts with a uint8 ``data``
array and a ``labels`` list. Pickles can run code, so they are read with an
unpickler that knows only the few globals those files name (NumPy's array
reconstruction, ``ndarray`` and ``dtype``): a file naming anything else is
refused before any of it runs.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from numbers import Integral
from pathlib import Path

import numpy as np

from . import checks

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 3 * 32 * 32
_CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset file is corrupt, truncated, unsafe or not what was expected."""


class _Refused(Exception):
    """A pickle named a global outside the allow-list."""


def _reconstruct(cls, shape, typecode):
    """NumPy's array reconstruction, for plain ``ndarray`` only."""
    if cls is not np.ndarray:
        raise _Refused(f"array subclass {cls!r}")
    return _NUMPY_RECONSTRUCT(cls, shape, typecode)


def _dtype(*args):
    """``numpy.dtype``, refusing object dtypes (whose elements would be unpickled objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused(f"object dtype {dtype}")
    return dtype


def _latin1(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as Python 3 uses it to pickle bytes at protocol 2, latin-1 only."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


# ``ndarray.__reduce__`` names NumPy's reconstruction function, whatever module
# this NumPy keeps it in; files name it numpy.core (1.x) or numpy._core (2.x).
_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED``."""

    def find_class(self, module, name):
        """Return the allowed object for ``module.name``; refuse anything else."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def unpickle(path):
    """Read one pickled CIFAR batch with the restricted unpickler.

    Python 2 pickles are decoded with ``encoding="bytes"``, so their dict
    keys and strings come back as ``bytes``, as in the course.

    Parameters
    ----------
    path : str or path

    Returns
    -------
    object
        What the file holds (a dict for the CIFAR-10 batches).

    Raises
    ------
    DatasetError
        If the file names a global other than NumPy array reconstruction,
        ``ndarray``, ``dtype`` (non-object) or latin-1 ``_codecs.encode`` (the
        message names it, and nothing in the file has run), or if the file is
        truncated or corrupt (the message names the file).
    FileNotFoundError
        If there is no file at ``path``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding="bytes").load()
        except _Refused as exc:
            raise DatasetError(
                f"{path}: refused to unpickle {exc}; CIFAR-10 batches hold only NumPy arrays and plain containers"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
            raise DatasetError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None


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


def data_root(root=None) -> Path:
    """Where the data lives: ``root``, else ``$ANYNET_DATA``, else ``~/.cache/anynet``."""
    if root is None:
        root = os.environ.get("ANYNET_DATA") or Path.home() / ".cache" / "anynet"
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None; got {type(root).__name__}")
    return Path(root).expanduser()


def find_cifar10(root=None):
    """Return the ``cifar-10-batches-py`` folder at ``root`` (the folder itself or its parent), or None."""
    root = data_root(root)
    for folder in (root, root / FOLDER):
        if (folder / TRAIN_BATCHES[0]).is_file():
            return folder
    return None


def _missing_message(root: Path) -> str:
    """Tell the user where to put the files by hand."""
    return (
        f"CIFAR-10 not found in {root}. Download {URL} (MD5 {MD5}) and extract it there, so that "
        f"{root / FOLDER / TRAIN_BATCHES[0]} exists; or point --data-dir / $ANYNET_DATA at a folder holding "
        f"{FOLDER}"
    )


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
        raise FileNotFoundError(_missing_message(data_root(root)))
    parts = []
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; the folder {folder} is incomplete. {_missing_message(folder)}")
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


def _open_source(url):
    """Open ``url`` (http, https, file) or a local path; return (stream, size or None)."""
    if "://" in str(url):
        response = urllib.request.urlopen(str(url), timeout=60)  # noqa: S310 - the caller chooses the source
        size = response.headers.get("Content-Length")
        return response, int(size) if size else None
    path = Path(url)
    return open(path, "rb"), path.stat().st_size


def _fetch(url, dest: Path, quiet: bool) -> str:
    """Copy ``url`` to ``dest`` with a progress bar; return the MD5 hex digest."""
    md5 = hashlib.md5()
    stream, size = _open_source(url)
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc="cifar-10-python.tar.gz")
    try:
        with stream, open(dest, "wb") as out:
            while chunk := stream.read(_CHUNK):
                md5.update(chunk)
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return md5.hexdigest()


def _extract(archive: Path, dest: Path):
    """Extract ``archive`` into ``dest``, refusing members that would land outside it."""
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not (member.isfile() or member.isdir()) or dest.resolve() not in target.parents:
                raise tarfile.TarError(f"unsafe member {member.name!r}")
        tar.extractall(dest)  # noqa: S202 - every member was checked above


def download_cifar10(root=None, url=URL, md5=MD5, quiet=False) -> Path:
    """Download and extract the official CIFAR-10 python archive into ``root``.

    The archive is checked against ``md5`` and extracted into a temporary
    folder beside the destination, which is renamed into place only once
    complete: an interrupted download never leaves a half-written dataset.

    Parameters
    ----------
    root : str or path, optional
        Parent folder of ``cifar-10-batches-py``; default as in ``data_root``.
    url : str or path
        An http(s) or file:// URL, or a local path to the archive.
    md5 : str
        Expected MD5 hex digest of the archive.
    quiet : bool
        No progress bar.

    Returns
    -------
    Path
        The ``cifar-10-batches-py`` folder.

    Raises
    ------
    FileNotFoundError
        If the archive cannot be fetched (offline, say); the message says
        where to put the files by hand.
    DatasetError
        If the MD5 does not match or the archive is corrupt.
    """
    root = data_root(root)
    found = find_cifar10(root)
    if found is not None:
        return found
    final = root / FOLDER
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileNotFoundError(f"cannot create {root} ({exc.strerror or exc}). {_missing_message(root)}") from None
    fd, part = tempfile.mkstemp(prefix=".cifar-10-python.", suffix=".tar.gz.part", dir=root)
    os.close(fd)
    part = Path(part)
    staging = None
    try:
        try:
            got = _fetch(url, part, quiet)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise FileNotFoundError(f"could not download {url} ({reason}). {_missing_message(root)}") from None
        if got != md5:
            raise DatasetError(
                f"{url}: MD5 {got} does not match the expected {md5}; the archive is corrupt or not the "
                "CIFAR-10 python version, and was deleted"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", dir=root))
        try:
            _extract(part, staging)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DatasetError(f"{url}: the archive could not be extracted ({exc})") from None
        if find_cifar10(staging) is None:
            raise DatasetError(f"{url}: the archive holds no {FOLDER}/{TRAIN_BATCHES[0]}")
        try:
            os.replace(find_cifar10(staging), final)
        except OSError:
            # Another process finished first; its complete copy is as good as ours.
            if find_cifar10(root) is None:
                raise
        return final
    finally:
        part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


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
