"""The course's ``fc_net`` module: ``from anynet.fc_net import *`` gives what ``from nndl.fc_net import *`` gives.

The course's ``fc_net`` defines the modular ``TwoLayerNet`` and
``FullyConnectedNet`` after ``from .layers import *`` and
``from .layer_utils import *``, so a star import of it brings every layer and
sandwich function too. Here they are anynet's own: weights of shape (in, out),
as in the course's modular nets.
"""

from __future__ import annotations

from .models import FullyConnectedNet, TwoLayerNet
from .nn.layer_utils import (
    affine_batchnorm_relu_backward,
    affine_batchnorm_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
)
from .nn.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
    svm_loss,
)

__all__ = [
    "FullyConnectedNet",
    "TwoLayerNet",
    "affine_backward",
    "affine_batchnorm_relu_backward",
    "affine_batchnorm_relu_forward",
    "affine_forward",
    "affine_relu_backward",
    "affine_relu_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "batchnorm_forward",
    "dropout_backward",
    "dropout_forward",
    "relu_backward",
    "relu_forward",
    "softmax_loss",
    "svm_loss",
]
