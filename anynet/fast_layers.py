"""The course's ``fast_layers``: the fast convolution and max pooling of ``anynet.nn.conv`` and ``.pooling``."""

from .nn.conv import conv_backward_fast, conv_forward_fast
from .nn.pooling import max_pool_backward_fast, max_pool_forward_fast

__all__ = ["conv_backward_fast", "conv_forward_fast", "max_pool_backward_fast", "max_pool_forward_fast"]
