"""Models: ``loss(X)`` gives scores, ``loss(X, y)`` gives ``(loss, grads)``; built from ``anynet.nn`` alone.

The modular nets (``fc_net``, ``cnn``) also give the training layer what it
compiles: a frozen ``spec()`` of everything but their arrays, whose
``loss_and_grads`` is a pure function of the parameters (``base``). The
course's first, non-modular net is ``neural_net``.
"""

from __future__ import annotations

from .cnn import ConvNet, ThreeLayerConvNet
from .fc_net import FullyConnectedNet, TwoLayerNet

__all__ = ["MODELS", "ConvNet", "FullyConnectedNet", "ThreeLayerConvNet", "TwoLayerNet"]

# Class name -> class: what a checkpoint's "model" entry names.
MODELS = {cls.__name__: cls for cls in (TwoLayerNet, FullyConnectedNet, ThreeLayerConvNet, ConvNet)}
