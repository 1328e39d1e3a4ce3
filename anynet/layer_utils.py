"""The course's sandwich layers live in ``anynet.nn.layer_utils``; this name keeps the course's import working."""

from .nn.layer_utils import *  # noqa: F403
