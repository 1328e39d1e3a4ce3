"""The course's ``ThreeLayerConvNet`` lives in ``anynet.models.cnn``; this name keeps ``classifiers.cnn`` working."""

from ..models.cnn import ThreeLayerConvNet

__all__ = ["ThreeLayerConvNet"]
