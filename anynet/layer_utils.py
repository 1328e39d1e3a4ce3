"""The course's sandwich layers live in ``anynet.nn.layer_utils`` and ``anynet.nn.conv_layers``; this name keeps
the course's import working."""

from .nn.conv_layers import *  # noqa: F403
from .nn.layer_utils import *  # noqa: F403
