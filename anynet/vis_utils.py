"""The course's ``vis_utils`` module (``cs231n.vis_utils``): ``visualize_grid``, which ``anynet.vis`` defines."""

from __future__ import annotations

from .vis import visualize_grid

__all__ = ["visualize_grid"]
