"""What the modular models share: checked inputs, the course's ``loss(X, y)``, and the pure interface.

A model keeps its parameters (``params``), its batch normalization layers'
running statistics (``bn_params``, the course's dicts) and its dropout
settings (``dropout_param``). Training compiles what ``spec()`` returns: a
frozen, hashable description of everything but the arrays, whose
``loss_and_grads`` and ``scores`` are pure functions of parameters, inputs
and statistics. ``loss`` and ``predict`` are the course's API on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..backends import Generator, OnBackend
from ..nn import checks
from ..nn.gradient_check import register_parameters


@dataclass(frozen=True)
class Spec:
    """A model but its arrays: frozen and hashable, so that a compiled step can be keyed by it.

    Subclasses add their architecture and define ``scores(params, X,
    bn_params)`` and ``loss_and_grads(params, X, y, bn_params, dropout_param,
    scale=None)``, written against the standard with the course's layers.
    Both are pure but for what they write into the dicts they are given (the
    running statistics into ``bn_params``, the dropout generator advanced);
    a training step gives them fresh dicts (``bn_params_of``, ``dropout_param_of``).

    Attributes
    ----------
    reg : float
        L2 strength on the weights.
    dropout : tuple
        The dropout layers' settings, ``(("p", p),)``, or () for none.
    bn : tuple
        Per batch normalization layer, its ``(("eps", e), ("momentum", m))`` as given (empty for the defaults).
    """

    reg: float
    dropout: tuple
    bn: tuple

    def bn_params_of(self, bn_state, mode):
        """Fresh ``bn_param`` dicts holding the running statistics ``bn_state``: the layers write into these."""
        return [{**dict(hyper), "mode": mode, "running_mean": mean, "running_var": var}
                for hyper, (mean, var) in zip(self.bn, bn_state, strict=True)]

    def dropout_param_of(self, rng):
        """A fresh training-mode ``dropout_param`` drawing its masks from ``rng``; None without dropout."""
        return {**dict(self.dropout), "mode": "train", "rng": rng} if self.dropout else None


class Model(OnBackend):
    """The shared part of ``FullyConnectedNet`` and the convolutional nets; subclasses define ``spec``.

    Subclasses set ``backend``, ``dtype``, ``_dtype`` (the library's),
    ``seed``, ``config`` (with ``num_classes``), ``params``, ``bn_params``,
    ``dropout_param`` and ``rng``, and list in ``bn_names`` the parameter
    whose shape each batch normalization layer's statistics take.
    """

    bn_names: tuple[str, ...] = ()

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        register_parameters(self)  # the course's gradient checks of model.params work on JAX too
        return self

    def spec(self):
        """The frozen, hashable ``Spec`` of the model as it is now (``reg`` may change between steps)."""
        raise NotImplementedError

    def _spec_fields(self):
        """The ``Spec`` fields every model has: ``reg``, dropout's and batch normalization's settings."""
        dropout = tuple(sorted((k, v) for k, v in self.dropout_param.items() if k not in ("mode", "rng", "seed")))
        bn = tuple(tuple((k, bn[k]) for k in ("eps", "momentum") if k in bn) for bn in self.bn_params)
        return {"reg": float(self.reg), "dropout": dropout, "bn": bn}

    @property
    def input_shape(self):
        """The shape of one input: ``(D,)`` for flat inputs, ``(C, H, W)`` for images."""
        return (self.config["input_dim"],)

    def _input(self, X):
        """Return ``X`` on the model's device and dtype, checking its shape."""
        X = self.backend.to_device(checks.checked_array("X", X), self._dtype)
        D = math.prod(self.input_shape)
        if X.ndim < 2 or math.prod(X.shape[1:]) != D or X.shape[0] == 0:
            raise ValueError(
                f"X must have shape (N, ...) with N > 0 and {D} features per row; got shape {tuple(X.shape)}"
            )
        return X

    def _labels(self, y, N):
        """Return labels ``y`` as an integer array on the model's device."""
        y = checks.checked_array("y (integer labels)", y, "integral")
        if y.ndim != 1 or y.shape[0] != N:
            raise ValueError(f"y must have shape ({N},) to match X; got shape {tuple(y.shape)}")
        checks.check_label_range("y", y, self.config["num_classes"])
        return self.backend.to_device(y)

    def _dropout_rng(self):
        """The generator for dropout masks outside training: the one set in ``rng``, else one fixed by ``seed``."""
        if self.rng is not None:
            return self.rng
        return Generator(None if self.seed is None else (self.seed, 1), self.backend)

    def loss(self, X, y=None):
        """Scores, or loss and gradients.

        Parameters
        ----------
        X : array, shape (N, ...)
            Inputs with ``input_shape`` features per row, of this model's
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
        params = {name: self.backend.to_device(w, self._dtype) for name, w in self.params.items()}
        spec = self.spec()
        dropout_param = self.dropout_param
        if dropout_param:
            dropout_param["mode"] = "test" if y is None else "train"
            if y is not None:
                dropout_param = {**dropout_param, "rng": self._dropout_rng()}
        if y is None:
            return spec.scores(params, X, self.bn_params)
        return spec.loss_and_grads(params, X, self._labels(y, X.shape[0]), self.bn_params, dropout_param)

    def loss_and_grads(self, params, X, y, bn_params, dropout_param=None, scale=None):
        """``self.spec().loss_and_grads(...)``: training-mode loss and gradients of ``params`` on device arrays."""
        return self.spec().loss_and_grads(params, X, y, bn_params, dropout_param, scale)

    def scores(self, params, X, bn_params, dropout_param=None):
        """``self.spec().scores(...)``: test-mode scores of device inputs ``X`` under ``params``."""
        return self.spec().scores(params, X, bn_params)

    def predict(self, X):
        """Return the predicted integer labels of ``X``, shape (N,)."""
        return self.xp.argmax(self.loss(X), axis=1)

    # Batch normalization's running statistics as explicit state (what a training step carries).

    def bn_state(self):
        """The running statistics as a list of ``(mean, var)``, one per layer; zeros and ones before any training."""
        xp, state = self.xp, []
        for bn, name in zip(self.bn_params, self.bn_names, strict=True):
            like = self.params[name]
            mean, var = bn.get("running_mean"), bn.get("running_var")
            if mean is None:
                mean = xp.zeros(like.shape, dtype=like.dtype, device=self.device)
            if var is None:
                var = xp.ones(like.shape, dtype=like.dtype, device=self.device)
            state.append((mean, var))
        return state

    def set_bn_state(self, state):
        """Put running statistics ``[(mean, var), ...]`` into ``bn_params``."""
        for bn, (mean, var) in zip(self.bn_params, state, strict=True):
            bn["running_mean"], bn["running_var"] = mean, var
