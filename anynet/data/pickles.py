"""Pickled CIFAR-10 batches, read safely: an unpickler that knows only the globals those files name.

The official archive holds Python 2 pickles of dicts with a uint8 ``data``
array and a ``labels`` list. Pickles can run code, so they are read with an
unpickler that knows only the few globals those files name (NumPy's array
reconstruction, ``ndarray`` and ``dtype``): a file naming anything else is
refused before any of it runs. ``DatasetError`` is what every reader of the
data, and the download, raise for a file that is not what it should be.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np


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
