"""Sandwich layers of convolutional nets (the course's assignment 2 ``layer_utils``), on the fast conv and pool."""

from __future__ import annotations

from .conv import conv_backward_fast, conv_forward_fast
from .layers import relu_backward, relu_forward
from .normalization import spatial_batchnorm_backward, spatial_batchnorm_forward
from .pooling import max_pool_backward_fast, max_pool_forward_fast

__all__ = [
    "conv_bn_relu_backward", "conv_bn_relu_forward", "conv_relu_backward", "conv_relu_forward",
    "conv_relu_pool_backward", "conv_relu_pool_forward",
]


def conv_relu_forward(x, w, b, conv_param):
    """Convolution followed by a ReLU; returns ``(out, cache)``, out (N, F, H', W')."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Backward pass of ``conv_relu_forward``; returns ``(dx, dw, db)``."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    s, relu_cache = relu_forward(a)
    out, pool_cache = max_pool_forward_fast(s, pool_param)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward pass of ``conv_relu_pool_forward``; returns ``(dx, dw, db)``."""
    conv_cache, relu_cache, pool_cache = cache
    ds = max_pool_backward_fast(dout, pool_cache)
    return conv_backward_fast(relu_backward(ds, relu_cache), conv_cache)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """Convolution, spatial batch normalization, then a ReLU; returns ``(out, cache)``."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache):
    """Backward pass of ``conv_bn_relu_forward``; returns ``(dx, dw, db, dgamma, dbeta)``."""
    conv_cache, bn_cache, relu_cache = cache
    dan, dgamma, dbeta = spatial_batchnorm_backward(relu_backward(dout, relu_cache), bn_cache)
    dx, dw, db = conv_backward_fast(dan, conv_cache)
    return dx, dw, db, dgamma, dbeta
