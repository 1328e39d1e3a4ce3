"""The matrix-calculus objectives live in ``anynet.nn.objectives``; this name keeps ``anynet.objectives`` working."""

from .nn.objectives import *  # noqa: F403
