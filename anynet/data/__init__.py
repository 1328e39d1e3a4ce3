"""Data and pictures: CIFAR-10 found or downloaded (``download``), read safely from its pickled batches
(``pickles``) and prepared as the course did (``cifar``), and plots (``vis``)."""

from __future__ import annotations

from .cifar import (
    get_CIFAR10_data,
    get_cifar10_data,
    load_batch,
    load_CIFAR10,
    load_cifar10,
    load_CIFAR_batch,
)
from .download import data_root, download_cifar10, find_cifar10
from .pickles import DatasetError, unpickle

__all__ = [
    "DatasetError", "data_root", "download_cifar10", "find_cifar10", "get_CIFAR10_data", "get_cifar10_data",
    "load_CIFAR10", "load_CIFAR_batch", "load_batch", "load_cifar10", "unpickle",
]
