"""The course's layers live in ``anynet.nn.layers``; this name keeps ``from anynet.layers import ...`` working."""

from .nn.layers import *  # noqa: F403
