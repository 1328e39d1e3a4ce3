"""Convolutional nets: the course's ``ThreeLayerConvNet`` and a configurable ``ConvNet`` for real training.

Both keep images as (N, C, H, W) and filters as (F, C, HH, WW), the course's
layout, and compute with the layers of ``anynet.nn`` (the fast convolution
and pooling, which use the library's own kernels where the backend has them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import backends
from ..backends import Generator, namespace
from ..nn import checks
from ..nn.conv import conv_backward, conv_forward_fast
from ..nn.layers import _affine_backward, affine_forward, relu_backward, relu_forward, softmax_loss
from ..nn.normalization import spatial_batchnorm_backward, spatial_batchnorm_forward
from ..nn.pooling import (
    global_avg_pool_backward,
    global_avg_pool_forward,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from .base import Model, Spec

_POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}
PRECISIONS = ("float32", "bfloat16")


def _image_shape(input_dim):
    """``input_dim`` checked as a (C, H, W) tuple of positive integers."""
    if isinstance(input_dim, (str, bytes)) or not hasattr(input_dim, "__len__") or len(input_dim) != 3:
        raise TypeError(f"input_dim must be (C, H, W); got {input_dim!r}")
    return tuple(checks.integer(f"input_dim[{i}]", d) for i, d in enumerate(input_dim))


def _l2(params, names, reg, scale, grads):
    """The L2 term ``0.5 * reg * sum(W * W)`` over the weights ``names``, its gradient added into ``grads``."""
    squares = None
    step = reg if scale is None else reg * scale
    for name in names:
        w = params[name]
        flat = namespace(w).reshape(w, (-1,))
        squares = flat @ flat if squares is None else squares + flat @ flat
        grads[name] = grads[name] + step * w
    return 0.5 * reg * squares


class ThreeLayerConvNet(Model):
    """The course's ``conv - relu - 2x2 max pool - affine - relu - affine - softmax``.

    Parameters
    ----------
    input_dim : tuple (C, H, W)
    num_filters : int
        F, the filters of the convolutional layer.
    filter_size : int
        Their height and width (odd; the convolution keeps H and W: stride 1, padding (filter_size - 1) / 2).
    hidden_dim : int
        Units of the hidden affine layer.
    num_classes : int
    weight_scale : float
        Weights are drawn from N(0, weight_scale**2); biases start at zero.
    reg : float
        L2 strength on the three weights.
    dtype : {"float32", "float64"} or a NumPy dtype
    seed, backend, device : optional
        As for ``FullyConnectedNet``.

    Attributes
    ----------
    params : dict
        ``W1`` (F, C, filter_size, filter_size), ``b1`` (F,), ``W2`` (F * H/2 * W/2, hidden_dim), ``b2``,
        ``W3`` (hidden_dim, num_classes), ``b3``.
    """

    def __init__(self, input_dim=(3, 32, 32), num_filters=32, filter_size=7, hidden_dim=100, num_classes=10,
                 weight_scale=1e-3, reg=0.0, dtype="float32", seed=None, backend=None, device=None):
        C, H, W = _image_shape(input_dim)
        F = checks.integer("num_filters", num_filters)
        size = checks.integer("filter_size", filter_size)
        if size % 2 == 0:
            raise ValueError(f"filter_size must be odd, so that the convolution keeps the image size; got {size}")
        hidden = checks.integer("hidden_dim", hidden_dim)
        classes = checks.integer("num_classes", num_classes)
        weight_scale = checks.real("weight_scale", weight_scale, 0.0, low_open=True)
        self.reg = checks.real("reg", reg, 0.0)
        self.seed = checks.seed(seed)
        self.dtype = backends.dtype_name(dtype)
        self.backend = backends.get(backend, device)
        self._dtype = self.backend.dtype(self.dtype)
        self.config = {"input_dim": [C, H, W], "num_filters": F, "filter_size": size, "hidden_dim": hidden,
                       "num_classes": classes, "weight_scale": weight_scale, "reg": self.reg, "dtype": self.dtype,
                       "seed": self.seed}
        rng, xp, dt, dev = Generator(self.seed, self.backend), self.xp, self._dtype, self.device
        pooled = F * (H // 2) * (W // 2)
        self.params = {
            "W1": rng.normal((F, C, size, size), weight_scale, self.dtype), "b1": xp.zeros(F, dtype=dt, device=dev),
            "W2": rng.normal((pooled, hidden), weight_scale, self.dtype), "b2": xp.zeros(hidden, dtype=dt, device=dev),
            "W3": rng.normal((hidden, classes), weight_scale, self.dtype),
            "b3": xp.zeros(classes, dtype=dt, device=dev),
        }
        self.bn_params, self.dropout_param, self.rng = [], {}, None

    @property
    def input_shape(self):
        return tuple(self.config["input_dim"])

    weight_names = ("W1", "W2", "W3")

    def spec(self):
        """The net but its arrays (see ``ThreeLayerSpec``)."""
        return ThreeLayerSpec(**self._spec_fields(), filter_size=self.config["filter_size"])


@dataclass(frozen=True, kw_only=True)
class ThreeLayerSpec(Spec):
    """A ``ThreeLayerConvNet`` but its arrays."""

    filter_size: int

    def _forward(self, params, X):
        conv = {"stride": 1, "pad": (self.filter_size - 1) // 2}
        a, conv_cache = conv_forward_fast(X, params["W1"], params["b1"], conv)
        r, relu1 = relu_forward(a)
        p, pool_cache = max_pool_forward_fast(r, _POOL)
        h, fc2 = affine_forward(p, params["W2"], params["b2"])
        h, relu2 = relu_forward(h)
        scores, fc3 = affine_forward(h, params["W3"], params["b3"])
        return scores, (conv_cache, relu1, pool_cache, fc2, relu2, fc3)

    def scores(self, params, X, bn_params):
        return self._forward(params, X)[0]

    def loss_and_grads(self, params, X, y, bn_params, dropout_param=None, scale=None):
        scores, (conv_cache, relu1, pool_cache, fc2, relu2, fc3) = self._forward(params, X)
        loss, dout = softmax_loss(scores, y)
        if scale is not None:
            dout = dout * scale
        grads = {}
        dh, grads["W3"], grads["b3"] = _affine_backward(dout, fc3, need_dx=True)
        dp, grads["W2"], grads["b2"] = _affine_backward(relu_backward(dh, relu2), fc2, need_dx=True)
        dr = max_pool_backward_fast(dp, pool_cache)
        _, grads["W1"], grads["b1"] = conv_backward(relu_backward(dr, relu1), conv_cache, need_dx=False)
        if self.reg:
            loss = loss + _l2(params, ("W1", "W2", "W3"), self.reg, scale, grads)
        return loss, grads


class ConvNet(Model):
    """``{conv - [batchnorm] - relu} x k`` per stage, with a 2x2 max pool after its ``pool_after``-th convolution,
    then global average pooling, affine, softmax.

    Parameters
    ----------
    widths : sequence of int
        The filters of each stage; each stage halves the image's height and width.
    convs_per_stage : int
        k, the convolutional layers of a stage (all of its width).
    pool_after : int, optional
        The convolution of each stage that the stage's max pool follows; None (the default): the last.
        1 with k = 2 is airbench's block (conv, pool, conv): the second convolution works on a quarter of
        the positions.
    filter_size : int
        Odd; every convolution keeps the image size (stride 1, padding (filter_size - 1) / 2).
    input_dim : tuple (C, H, W)
    num_classes : int
    batchnorm : bool
        Spatial batch normalization after each convolution.
    reg : float
        L2 strength on the weights (the filters and the last affine layer's matrix).
    weight_scale : float, optional
        Weights from N(0, weight_scale**2); None (the default): He's scale, sqrt(2 / fan_in), for the
        filters, and sqrt(1 / fan_in) for the last layer.
    label_smoothing : float
        The loss's label smoothing (``anynet.nn.layers.softmax_loss``).
    precision : {"float32", "bfloat16"}
        bfloat16 computes the convolutions and matrix products in bfloat16 where the backend has it (torch,
        jax); parameters, batch normalization, the loss and the update stay in float32.
    dtype, seed, backend, device
        As for ``FullyConnectedNet``.

    Attributes
    ----------
    params : dict
        ``W1 .. WL`` (filters (F, C, HH, WW), then the last affine layer's (widths[-1], num_classes)), ``b1 ..
        bL``, and ``gamma_i, beta_i`` (F,) of each convolution with batch normalization.
    """

    def __init__(self, widths=(32, 64, 128), convs_per_stage=1, filter_size=3, input_dim=(3, 32, 32),
                 num_classes=10, batchnorm=True, reg=0.0, weight_scale=None, label_smoothing=0.0,
                 precision="float32", dtype="float32", seed=None, backend=None, device=None, pool_after=None):
        self._check(widths, convs_per_stage, filter_size, input_dim, batchnorm, precision, dtype)
        pool_after = convs_per_stage if pool_after is None else checks.integer("pool_after", pool_after)
        if pool_after > convs_per_stage:
            raise ValueError(f"pool_after must be at most convs_per_stage ({convs_per_stage}); got {pool_after}")
        widths = [checks.integer("widths[i]", w) for w in widths]
        C, H, W = _image_shape(input_dim)
        if H % 2 ** len(widths) or W % 2 ** len(widths):
            raise ValueError(f"input_dim {tuple(input_dim)}: {len(widths)} stages halve H and W {len(widths)} "
                             f"times; they must be multiples of {2 ** len(widths)}")
        self.reg = checks.real("reg", reg, 0.0)
        scale = None if weight_scale is None else checks.real("weight_scale", weight_scale, 0.0, low_open=True)
        smoothing = checks.real("label_smoothing", label_smoothing, 0.0, 1.0)
        self.seed = checks.seed(seed)
        self.dtype = backends.dtype_name(dtype)
        self.backend = backends.get(backend, device)
        self._dtype = self.backend.dtype(self.dtype)
        if precision == "bfloat16" and self.backend.bfloat16_of(self.xp) is None:
            raise ValueError(f"precision='bfloat16' needs a backend with bfloat16 (torch, jax); the {self.backend} "
                             "backend has none")
        self.config = {"widths": widths, "convs_per_stage": convs_per_stage, "filter_size": filter_size,
                       "input_dim": [C, H, W], "num_classes": num_classes, "batchnorm": batchnorm, "reg": self.reg,
                       "weight_scale": scale, "label_smoothing": smoothing, "precision": precision,
                       "dtype": self.dtype, "seed": self.seed, "pool_after": pool_after}
        self._init_params(C, widths, convs_per_stage, filter_size, num_classes, batchnorm, scale)
        layers = len(widths) * convs_per_stage
        self.bn_params = [{"mode": "train"} for _ in range(layers)] if batchnorm else []
        self.bn_names = tuple(f"beta{i}" for i in range(1, layers + 1)) if batchnorm else ()
        self.weight_names = tuple(f"W{i}" for i in range(1, layers + 2))
        self.dropout_param, self.rng = {}, None

    @staticmethod
    def _check(widths, convs_per_stage, filter_size, input_dim, batchnorm, precision, dtype):
        """The arguments' kinds and choices (values are checked where they are used)."""
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__") or not list(widths):
            raise TypeError(f"widths must be a non-empty sequence of positive integers; got {widths!r}")
        checks.integer("convs_per_stage", convs_per_stage)
        if checks.integer("filter_size", filter_size) % 2 == 0:
            raise ValueError(f"filter_size must be odd, so that convolutions keep the image size; got {filter_size}")
        if not isinstance(batchnorm, bool):
            raise TypeError(f"batchnorm must be True or False; got {batchnorm!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if precision == "bfloat16" and backends.dtype_name(dtype) != "float32":
            raise ValueError(f"precision='bfloat16' keeps float32 parameters: dtype must be float32; got {dtype!r}")

    def _init_params(self, C, widths, k, size, classes, batchnorm, scale):
        rng, xp, dt, dev = Generator(self.seed, self.backend), self.xp, self._dtype, self.device
        self.params, layer, channels = {}, 0, C
        for width in widths:
            for _ in range(k):
                layer += 1
                std = math.sqrt(2.0 / (channels * size * size)) if scale is None else scale
                self.params[f"W{layer}"] = rng.normal((width, channels, size, size), std, self.dtype)
                self.params[f"b{layer}"] = xp.zeros(width, dtype=dt, device=dev)
                if batchnorm:
                    self.params[f"gamma{layer}"] = xp.ones(width, dtype=dt, device=dev)
                    self.params[f"beta{layer}"] = xp.zeros(width, dtype=dt, device=dev)
                channels = width
        std = math.sqrt(1.0 / channels) if scale is None else scale
        self.params[f"W{layer + 1}"] = rng.normal((channels, classes), std, self.dtype)
        self.params[f"b{layer + 1}"] = xp.zeros(classes, dtype=dt, device=dev)

    @property
    def input_shape(self):
        return tuple(self.config["input_dim"])

    def spec(self):
        """The net but its arrays (see ``ConvSpec``)."""
        c = self.config
        return ConvSpec(**self._spec_fields(), stages=len(c["widths"]), convs_per_stage=c["convs_per_stage"],
                        pool_after=c["pool_after"], filter_size=c["filter_size"], batchnorm=c["batchnorm"],
                        label_smoothing=c["label_smoothing"], bfloat16=c["precision"] == "bfloat16")


@dataclass(frozen=True, kw_only=True)
class ConvSpec(Spec):
    """A ``ConvNet`` but its arrays."""

    stages: int
    convs_per_stage: int
    pool_after: int
    filter_size: int
    batchnorm: bool
    label_smoothing: float
    bfloat16: bool

    def _low(self, a):
        """``a`` in the compute dtype of convolutions and matrix products (bfloat16 when asked for)."""
        if not self.bfloat16:
            return a
        return namespace(a).astype(a, backends.bfloat16_of(a))

    def _high(self, a, like):
        """``a`` back in the dtype of ``like`` (the parameters')."""
        return a if a.dtype == like.dtype else namespace(a).astype(a, like.dtype)

    def _conv_block(self, h, params, layer, bn_params):
        conv = {"stride": 1, "pad": (self.filter_size - 1) // 2}
        w = params[f"W{layer}"]
        a, conv_cache = conv_forward_fast(self._low(h), self._low(w), self._low(params[f"b{layer}"]), conv)
        a, bn_cache = self._high(a, w), None
        if self.batchnorm:
            a, bn_cache = spatial_batchnorm_forward(a, params[f"gamma{layer}"], params[f"beta{layer}"],
                                                    bn_params[layer - 1])
        out, relu_cache = relu_forward(a)
        return out, (conv_cache, bn_cache, relu_cache)

    def _forward(self, params, X, bn_params, mode):
        for bn in bn_params:
            bn["mode"] = mode
        h, caches, layer = X, [], 0
        for _ in range(self.stages):
            for j in range(1, self.convs_per_stage + 1):
                layer += 1
                h, cache = self._conv_block(h, params, layer, bn_params)
                caches.append(cache)
                if j == self.pool_after:
                    h, pool_cache = max_pool_forward_fast(h, _POOL)
                    caches.append(pool_cache)
        h, gap_cache = global_avg_pool_forward(h)
        last = layer + 1
        scores, fc_cache = affine_forward(self._low(h), self._low(params[f"W{last}"]), self._low(params[f"b{last}"]))
        return self._high(scores, params[f"W{last}"]), (caches, gap_cache, fc_cache)

    def scores(self, params, X, bn_params):
        return self._forward(params, X, bn_params, "test")[0]

    def loss_and_grads(self, params, X, y, bn_params, dropout_param=None, scale=None):
        scores, (caches, gap_cache, fc_cache) = self._forward(params, X, bn_params, "train")
        loss, dout = softmax_loss(scores, y, self.label_smoothing)
        if scale is not None:
            dout = dout * scale
        last = self.stages * self.convs_per_stage + 1
        grads = {}
        dh, dw, db = _affine_backward(self._low(dout), fc_cache, need_dx=True)
        grads[f"W{last}"], grads[f"b{last}"] = self._high(dw, dout), self._high(db, dout)
        dh = global_avg_pool_backward(self._high(dh, dout), gap_cache)
        layer = last - 1
        for _ in range(self.stages):
            for j in range(self.convs_per_stage, 0, -1):
                if j == self.pool_after:
                    dh = max_pool_backward_fast(dh, caches.pop())
                dh = self._conv_block_backward(dh, caches.pop(), layer, grads, need_dx=layer > 1)
                layer -= 1
        if self.reg:
            loss = loss + _l2(params, [f"W{i}" for i in range(1, last + 1)], self.reg, scale, grads)
        return loss, grads

    def _conv_block_backward(self, dout, cache, layer, grads, need_dx):
        conv_cache, bn_cache, relu_cache = cache
        da = relu_backward(dout, relu_cache)
        if bn_cache is not None:
            da, grads[f"gamma{layer}"], grads[f"beta{layer}"] = spatial_batchnorm_backward(da, bn_cache)
        # The first convolution's input gradient (the images') is never used: it is not computed.
        dx, dw, db = conv_backward(self._low(da), conv_cache, need_dx)
        grads[f"W{layer}"], grads[f"b{layer}"] = self._high(dw, dout), self._high(db, dout)
        return self._high(dx, dout) if need_dx else None
