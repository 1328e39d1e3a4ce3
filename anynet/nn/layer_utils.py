"""Sandwich layers: common stacks of layers, forward and backward side by side."""

from __future__ import annotations

from .layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward_alt,
    batchnorm_forward,
    relu_backward,
    relu_forward,
)

__all__ = ["affine_relu_forward", "affine_relu_backward", "affine_batchnorm_relu_forward",
           "affine_batchnorm_relu_backward"]


def affine_relu_forward(x, w, b):
    """Affine layer followed by a ReLU; returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward pass of ``affine_relu_forward``; returns ``(dx, dw, db)``."""
    fc_cache, relu_cache = cache
    return affine_backward(relu_backward(dout, relu_cache), fc_cache)


def affine_batchnorm_relu_forward(x, w, b, gamma, beta, bn_param):
    """Affine - batch normalization - ReLU; returns ``(out, cache)``."""
    a, fc_cache = affine_forward(x, w, b)
    an, bn_cache = batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, bn_cache, relu_cache)


def affine_batchnorm_relu_backward(dout, cache):
    """Backward pass of ``affine_batchnorm_relu_forward``.

    Returns ``(dx, dw, db, dgamma, dbeta)``.
    """
    fc_cache, bn_cache, relu_cache = cache
    dan, dgamma, dbeta = batchnorm_backward_alt(relu_backward(dout, relu_cache), bn_cache)
    dx, dw, db = affine_backward(dan, fc_cache)
    return dx, dw, db, dgamma, dbeta
