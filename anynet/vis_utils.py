"""The course's ``vis_utils`` module (``cs231n.vis_utils``): ``visualize_grid`` lives in ``anynet.data.vis``."""

from __future__ import annotations

from .data.vis import visualize_grid

__all__ = ["visualize_grid"]
