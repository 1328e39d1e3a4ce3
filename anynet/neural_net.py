"""The course's first, non-modular TwoLayerNet lives in ``anynet.models.neural_net``; this name keeps its import."""

from .models.neural_net import *  # noqa: F403
