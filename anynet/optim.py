"""The course's update rules live in ``anynet.nn.optim``; this name keeps ``from anynet import optim`` working."""

from .nn.optim import *  # noqa: F403
