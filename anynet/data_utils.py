"""The course's ``data_utils`` module (``cs231n.data_utils``), so that ``from anynet.data_utils import ...`` ports it.

The loaders live in ``anynet.data.cifar``; these are their course-named forms.
"""

from __future__ import annotations

from .data.cifar import get_CIFAR10_data, load_CIFAR10, load_CIFAR_batch

__all__ = ["get_CIFAR10_data", "load_CIFAR10", "load_CIFAR_batch"]
