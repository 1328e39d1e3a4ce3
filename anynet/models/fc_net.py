"""The course's modular fully connected nets: ``FullyConnectedNet`` and ``TwoLayerNet``."""

from __future__ import annotations

from dataclasses import dataclass

from .. import backends
from ..backends import Generator, namespace
from ..nn import checks
from ..nn.layers import (
    _affine_backward,
    affine_forward,
    batchnorm_backward_alt,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
)
from ..nn.normalization import layernorm_backward, layernorm_forward
from .base import Model, Spec

NORMALIZATIONS = (None, "batchnorm", "layernorm")


def _dropout(dropout, keep_ratio):
    """The drop probability from ``dropout`` or the course's later ``dropout_keep_ratio`` (one of them)."""
    if keep_ratio is None:
        return checks.real("dropout", dropout, 0.0, 1.0)
    if dropout:
        raise ValueError(f"dropout={dropout!r} (drop) and dropout_keep_ratio={keep_ratio!r} (keep) say the same; "
                         "give one")
    return 1.0 - checks.real("dropout_keep_ratio", keep_ratio, 0.0, 1.0, low_open=True, high_open=False)


def _normalization(normalization, use_batchnorm):
    """``normalization`` checked against ``use_batchnorm`` (the course's first name for batchnorm)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of None, 'batchnorm', 'layernorm'; got {normalization!r}")
    if use_batchnorm and normalization not in (None, "batchnorm"):
        raise ValueError(f"use_batchnorm=True and normalization={normalization!r} disagree; give one")
    return "batchnorm" if use_batchnorm else normalization


class FullyConnectedNet(Model):
    """``{affine - [batchnorm or layernorm] - relu - [dropout]} x (L - 1) - affine - softmax``.

    Parameters
    ----------
    hidden_dims : sequence of int
        Width of each hidden layer.
    input_dim, num_classes : int
        D (inputs are flattened to it) and C.
    dropout : float
        Probability of dropping a hidden unit; 0 means no dropout layers.
    use_batchnorm : bool
        Batch normalization after each hidden affine layer (the course's first name for
        ``normalization="batchnorm"``).
    reg : float
        L2 strength: the loss gains ``0.5 * reg * sum(W * W)`` for every weight
        matrix (never biases, gammas or betas). May be changed after construction.
    weight_scale : float
        Weights are drawn from N(0, weight_scale**2); biases start at zero.
    dtype : {"float32", "float64"} or a NumPy dtype
        Parameters are kept, and inputs cast, in this dtype (``numpy.float64`` works too).
    seed : int, optional
        Seeds the weights and, outside a ``Solver``, fixes the dropout mask
        (as gradient checks need).
    backend, device : optional
        Where the model computes; default ``anynet.get_backend()``.
    normalization : {None, "batchnorm", "layernorm"}, keyword-only
        The course's later name: normalization after each hidden affine layer.
    dropout_keep_ratio : float, keyword-only
        The course's later name: the probability of KEEPING a unit (1: no
        dropout); ``dropout = 1 - dropout_keep_ratio``. Give one of the two.

    Attributes
    ----------
    params : dict
        ``W1, b1, ..., WL, bL`` and ``gamma_i, beta_i``; weights have shape (in, out).
    backend : anynet.backends.Backend
        The array library and device the model computes on (``str(model.backend)`` is its name).
    bn_params : list of dict
        One per hidden layer with batch normalization, holding running statistics.
    dropout_param : dict
        The course's: ``{"mode": ..., "p": dropout}`` (and ``seed``) when the net drops units, else empty.
    rng : anynet.backends.Generator or None
        Draws dropout masks in ``loss(X, y)``; None: a generator fixed by ``seed``.
        (A training step draws them from the random state it carries.)
    """

    def __init__(
        self,
        hidden_dims,
        input_dim=3 * 32 * 32,
        num_classes=10,
        dropout=0,
        use_batchnorm=False,
        reg=0.0,
        weight_scale=1e-2,
        dtype="float32",
        seed=None,
        backend=None,
        device=None,
        *,
        normalization=None,
        dropout_keep_ratio=None,
    ):
        if isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__"):
            raise TypeError(f"hidden_dims must be a sequence of positive integers; got {hidden_dims!r}")
        hidden_dims = [checks.integer("hidden_dims[i]", h) for h in hidden_dims]
        input_dim = checks.integer("input_dim", input_dim)
        num_classes = checks.integer("num_classes", num_classes)
        dropout = _dropout(dropout, dropout_keep_ratio)
        if not isinstance(use_batchnorm, bool):
            raise TypeError(f"use_batchnorm must be True or False; got {use_batchnorm!r}")
        normalization = _normalization(normalization, use_batchnorm)
        use_batchnorm = normalization == "batchnorm"
        weight_scale = checks.real("weight_scale", weight_scale, 0.0, low_open=True)
        seed = checks.seed(seed)
        self.reg = checks.real("reg", reg, 0.0)
        dtype = backends.dtype_name(dtype)
        self.backend = backends.get(backend, device)
        self.dtype = dtype
        self._dtype = self.backend.dtype(dtype)
        self.seed = seed
        self.config = {
            "hidden_dims": hidden_dims, "input_dim": input_dim, "num_classes": num_classes,
            "dropout": dropout, "use_batchnorm": use_batchnorm, "reg": self.reg,
            "weight_scale": weight_scale, "dtype": dtype, "seed": seed,
        }
        if normalization == "layernorm":
            self.config["normalization"] = normalization
        self.num_layers = len(hidden_dims) + 1
        self.use_batchnorm = use_batchnorm
        self.normalization = normalization
        self.dropout = dropout

        self._init_params([input_dim, *hidden_dims, num_classes], weight_scale)
        self.bn_params = [{"mode": "train"} for _ in hidden_dims] if use_batchnorm else []
        self.dropout_param = {}
        if dropout > 0:
            self.dropout_param = {"mode": "train", "p": dropout}
            if seed is not None:
                self.dropout_param["seed"] = seed
        self.rng = None
        self.bn_names = tuple(f"beta{i}" for i in range(1, len(self.bn_params) + 1))

    def _init_params(self, dims, weight_scale):
        """Weights from N(0, weight_scale**2), on the host from the seed; zero biases; gammas 1 and betas 0."""
        rng = Generator(self.seed, self.backend)
        xp, dt, dev = self.xp, self._dtype, self.device
        self.params = {}
        for i in range(1, self.num_layers + 1):
            d_in, d_out = dims[i - 1], dims[i]
            self.params[f"W{i}"] = rng.normal((d_in, d_out), weight_scale, self.dtype)
            self.params[f"b{i}"] = xp.zeros(d_out, dtype=dt, device=dev)
            if self.normalization and i < self.num_layers:
                self.params[f"gamma{i}"] = xp.ones(d_out, dtype=dt, device=dev)
                self.params[f"beta{i}"] = xp.zeros(d_out, dtype=dt, device=dev)

    @property
    def weight_names(self):
        """The weight matrices ``W1, ..., WL``: what ``reg`` and decoupled weight decay apply to."""
        return tuple(f"W{i}" for i in range(1, self.num_layers + 1))

    @property
    def input_dim(self):
        """D, the number of input features."""
        return self.config["input_dim"]

    def spec(self):
        """The net but its arrays (see ``FCSpec``)."""
        return FCSpec(**self._spec_fields(), num_layers=self.num_layers, normalization=self.normalization)


class TwoLayerNet(FullyConnectedNet):
    """``affine - relu - affine - softmax``: a ``FullyConnectedNet`` with one hidden layer.

    ``hidden_dims`` (or ``hidden_dim``, the course's later name) is the width H of the one hidden layer; the other
    parameters are those of ``FullyConnectedNet``, but ``dtype`` defaults to
    float64: the course's modular TwoLayerNet has no dtype and computes in
    NumPy's float64 (its FullyConnectedNet defaults to float32, as here).
    """

    def __init__(
        self,
        input_dim=3 * 32 * 32,
        hidden_dims=100,
        num_classes=10,
        dropout=0,
        weight_scale=1e-3,
        reg=0.0,
        dtype="float64",
        seed=None,
        backend=None,
        device=None,
        *,
        hidden_dim=None,
    ):
        if hidden_dim is not None:  # the course's later name
            if hidden_dims != 100 and hidden_dims != hidden_dim:
                raise ValueError(f"hidden_dim={hidden_dim!r} is another name for hidden_dims={hidden_dims!r}; give one")
            hidden_dims = hidden_dim
        if isinstance(hidden_dims, (list, tuple)) and len(hidden_dims) == 1:
            hidden_dims = hidden_dims[0]
        super().__init__(
            [checks.integer("hidden_dims", hidden_dims)],
            input_dim=input_dim,
            num_classes=num_classes,
            dropout=dropout,
            reg=reg,
            weight_scale=weight_scale,
            dtype=dtype,
            seed=seed,
            backend=backend,
            device=device,
        )
        del self.config["use_batchnorm"]
        self.config["hidden_dims"] = self.config["hidden_dims"][0]


@dataclass(frozen=True, kw_only=True)
class FCSpec(Spec):
    """A ``FullyConnectedNet`` but its arrays: ``num_layers`` affine layers, normalization or not."""

    num_layers: int
    normalization: str | None

    def scores(self, params, X, bn_params):
        """Test-mode scores (N, C) of ``X`` (on the device, in the model's dtype) under ``params``.

        A pure function of its arguments: what training and compiled
        accuracy checks call, with no input checks and no host round trip.
        """
        return self._forward(params, X, bn_params, None, "test")[0]

    def _forward(self, params, X, bn_params, dropout_param, mode):
        L = self.num_layers
        if dropout_param:
            dropout_param = {**dropout_param, "mode": mode}
        h, caches = X, []
        for i in range(1, L):
            h, fc_cache = affine_forward(h, params[f"W{i}"], params[f"b{i}"])
            bn_cache = drop_cache = None
            if self.normalization == "batchnorm":
                bn_param = bn_params[i - 1]
                bn_param["mode"] = mode
                h, bn_cache = batchnorm_forward(h, params[f"gamma{i}"], params[f"beta{i}"], bn_param)
            elif self.normalization == "layernorm":
                h, bn_cache = layernorm_forward(h, params[f"gamma{i}"], params[f"beta{i}"], {})
            h, relu_cache = relu_forward(h)
            if dropout_param:
                h, drop_cache = dropout_forward(h, dropout_param)
            caches.append((fc_cache, bn_cache, relu_cache, drop_cache))
        scores, fc_cache = affine_forward(h, params[f"W{L}"], params[f"b{L}"])
        return scores, fc_cache, caches

    def loss_and_grads(self, params, X, y, bn_params, dropout_param=None, scale=None):
        """Training-mode loss and gradients of ``params`` on a batch already on the device.

        A pure function of its arguments but for what it writes into them:
        the running statistics into the dicts of ``bn_params`` and the
        dropout generator ``dropout_param["rng"]`` advanced. No input checks,
        no Python branch on an array's value, no host round trip: a compiled
        training step calls it while tracing.

        ``scale`` (a number or 0-d array) makes ``grads`` the gradients of
        ``scale * loss``: every backward pass is linear in its upstream
        gradient, so scaling the scores' gradient (N x C numbers) scales them
        all. The loss returned is not scaled.

        Returns
        -------
        loss : 0-d array
        grads : dict keyed like ``params``
        """
        L = self.num_layers
        scores, fc_cache, caches = self._forward(params, X, bn_params, dropout_param, "train")
        loss, dout = softmax_loss(scores, y)
        if scale is not None:
            dout = dout * scale
        grads = {}
        for i in range(L, 0, -1):
            if i < L:
                fc_cache, bn_cache, relu_cache, drop_cache = caches[i - 1]
                if drop_cache is not None:
                    dout = dropout_backward(dout, drop_cache)
                dout = relu_backward(dout, relu_cache)
                if bn_cache is not None:
                    backward = batchnorm_backward_alt if self.normalization == "batchnorm" else layernorm_backward
                    dout, grads[f"gamma{i}"], grads[f"beta{i}"] = backward(dout, bn_cache)
            # Nobody needs the gradient with respect to the input images.
            dout, grads[f"W{i}"], grads[f"b{i}"] = _affine_backward(dout, fc_cache, need_dx=i > 1)
        if self.reg:
            # sum(w * w) as the dot product of the flattened weights: one operation, no temporary the size
            # of w, and the terms of all layers scaled and added to the loss once.
            squares = None
            reg = self.reg if scale is None else self.reg * scale
            for i in range(1, L + 1):
                w = params[f"W{i}"]
                w_flat = namespace(w).reshape(w, (-1,))
                squares = w_flat @ w_flat if squares is None else squares + w_flat @ w_flat
                grads[f"W{i}"] += reg * w  # in place on the gradient _affine_backward just made
            loss = loss + 0.5 * self.reg * squares
        return loss, grads

