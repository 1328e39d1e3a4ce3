"""The course's layers live in ``anynet.nn`` (``layers``, ``conv``, ``pooling``, ``normalization``); this name keeps
``from anynet.layers import ...`` working, for both assignments' layers."""

from .nn.conv import *  # noqa: F403
from .nn.layers import *  # noqa: F403
from .nn.normalization import *  # noqa: F403
from .nn.pooling import *  # noqa: F403
