"""Models: ``loss(X)`` gives scores, ``loss(X, y)`` gives ``(loss, grads)``."""

from __future__ import annotations

import math

from . import backends, checks
from .backends.base import OnBackend
from .layers import (
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


class FullyConnectedNet(OnBackend):
    """``{affine - [batchnorm] - relu - [dropout]} x (L - 1) - affine - softmax``.

    Parameters
    ----------
    hidden_dims : sequence of int
        Width of each hidden layer.
    input_dim, num_classes : int
        D (inputs are flattened to it) and C.
    dropout : float
        Probability of dropping a hidden unit; 0 means no dropout layers.
    use_batchnorm : bool
        Batch normalization after each hidden affine layer.
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
    rng : backend.Generator or None
        Draws dropout masks; the ``Solver`` sets it so resumed runs repeat exactly.
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
    ):
        if isinstance(hidden_dims, (str, bytes)) or not hasattr(hidden_dims, "__iter__"):
            raise TypeError(f"hidden_dims must be a sequence of positive integers; got {hidden_dims!r}")
        hidden_dims = [checks.integer("hidden_dims[i]", h) for h in hidden_dims]
        input_dim = checks.integer("input_dim", input_dim)
        num_classes = checks.integer("num_classes", num_classes)
        dropout = checks.real("dropout", dropout, 0.0, 1.0)
        if not isinstance(use_batchnorm, bool):
            raise TypeError(f"use_batchnorm must be True or False; got {use_batchnorm!r}")
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
        self.num_layers = len(hidden_dims) + 1
        self.use_batchnorm = use_batchnorm
        self.dropout = dropout

        rng = self.backend.generator(seed)
        dims = [input_dim, *hidden_dims, num_classes]
        xp, dt, dev = self.xp, self._dtype, self.device
        self.params = {}
        for i in range(1, self.num_layers + 1):
            d_in, d_out = dims[i - 1], dims[i]
            self.params[f"W{i}"] = rng.normal((d_in, d_out), weight_scale, dtype)
            self.params[f"b{i}"] = xp.zeros(d_out, dtype=dt, device=dev)
            if use_batchnorm and i < self.num_layers:
                self.params[f"gamma{i}"] = xp.ones(d_out, dtype=dt, device=dev)
                self.params[f"beta{i}"] = xp.zeros(d_out, dtype=dt, device=dev)
        self.bn_params = [{"mode": "train"} for _ in hidden_dims] if use_batchnorm else []
        self.dropout_param = {}
        if dropout > 0:
            self.dropout_param = {"mode": "train", "p": dropout}
            if seed is not None:
                self.dropout_param["seed"] = seed
        self.rng = None

    @property
    def input_dim(self):
        """D, the number of input features."""
        return self.config["input_dim"]

    def _input(self, X):
        """Return ``X`` on the model's device and dtype, checking its shape."""
        X = self.backend.to_device(checks.checked_array("X", X), self._dtype)
        D = math.prod(X.shape[1:])
        if X.ndim < 2 or D != self.input_dim or X.shape[0] == 0:
            raise ValueError(
                f"X must have shape (N, ...) with N > 0 and {self.input_dim} features per row; "
                f"got shape {tuple(X.shape)}"
            )
        return X

    def _labels(self, y, N):
        """Return labels ``y`` as an int64 array on the model's device."""
        y = checks.checked_array("y (integer labels)", y, "integral")
        if y.ndim != 1 or y.shape[0] != N:
            raise ValueError(f"y must have shape ({N},) to match X; got shape {tuple(y.shape)}")
        checks.check_label_range("y", y, self.config["num_classes"])
        return self.backend.to_device(y)

    def _param(self, name):
        """The parameter ``name`` on the model's device; hand-assigned arrays are moved there."""
        return self.backend.to_device(self.params[name], self._dtype)

    def _dropout_rng(self):
        """The generator for dropout masks: the Solver's, else one fixed by ``seed``."""
        if self.rng is not None:
            return self.rng
        return self.backend.generator(None if self.seed is None else (self.seed, 1))

    def loss(self, X, y=None):
        """Scores, or loss and gradients.

        Parameters
        ----------
        X : array, shape (N, d_1, ..., d_k)
            Inputs with ``d_1 * ... * d_k == input_dim``, of this model's
            backend or NumPy; cast to the model's dtype.
        y : array, shape (N,), optional
            Integer labels. Without them the net runs in test mode.

        Returns
        -------
        scores : array, shape (N, C)
            When ``y`` is None.
        loss, grads : 0-d array and dict
            When ``y`` is given; ``grads`` is keyed like ``params``.
        """
        X = self._input(X)
        params = {name: self._param(name) for name in self.params}
        dropout_param = self.dropout_param
        if dropout_param:
            dropout_param["mode"] = "test" if y is None else "train"
            if y is not None:
                dropout_param = {**dropout_param, "rng": self._dropout_rng()}
        if y is None:
            return self.scores(params, X, self.bn_params, dropout_param)
        return self.loss_and_grads(params, X, self._labels(y, X.shape[0]), self.bn_params, dropout_param)

    def scores(self, params, X, bn_params, dropout_param=None):
        """Test-mode scores (N, C) of ``X`` (on the device, in the model's dtype) under ``params``.

        A pure function of its arguments: what training and compiled
        accuracy checks call, with no input checks and no host round trip.
        """
        return self._forward(params, X, bn_params, dropout_param, "test")[0]

    def _forward(self, params, X, bn_params, dropout_param, mode):
        L = self.num_layers
        if dropout_param:
            dropout_param = {**dropout_param, "mode": mode}
        h, caches = X, []
        for i in range(1, L):
            h, fc_cache = affine_forward(h, params[f"W{i}"], params[f"b{i}"])
            bn_cache = drop_cache = None
            if self.use_batchnorm:
                bn_param = bn_params[i - 1]
                bn_param["mode"] = mode
                h, bn_cache = batchnorm_forward(h, params[f"gamma{i}"], params[f"beta{i}"], bn_param)
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
        xp = self.xp
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
                    dout, grads[f"gamma{i}"], grads[f"beta{i}"] = batchnorm_backward_alt(dout, bn_cache)
            # Nobody needs the gradient with respect to the input images.
            dout, grads[f"W{i}"], grads[f"b{i}"] = _affine_backward(dout, fc_cache, need_dx=i > 1)
        if self.reg:
            # sum(w * w) as the dot product of the flattened weights: one operation, no temporary the size
            # of w, and the terms of all layers scaled and added to the loss once.
            squares = None
            reg = self.reg if scale is None else self.reg * scale
            for i in range(1, L + 1):
                w = params[f"W{i}"]
                w_flat = xp.reshape(w, (-1,))
                squares = w_flat @ w_flat if squares is None else squares + w_flat @ w_flat
                grads[f"W{i}"] += reg * w  # in place on the gradient _affine_backward just made
            loss = loss + 0.5 * self.reg * squares
        return loss, grads

    def predict(self, X):
        """Return the predicted integer labels of ``X``, shape (N,)."""
        return self.xp.argmax(self.loss(X), axis=1)


class TwoLayerNet(FullyConnectedNet):
    """``affine - relu - affine - softmax``: a ``FullyConnectedNet`` with one hidden layer.

    ``hidden_dims`` is the width H of the one hidden layer; the other
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
    ):
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


MODELS = {"TwoLayerNet": TwoLayerNet, "FullyConnectedNet": FullyConnectedNet}
