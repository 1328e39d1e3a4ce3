"""The training step: one pure function of its state, run as it is (eager) or compiled by the backend.

``train_step(statics, state, X_train, y, idx) -> (state, loss)`` gathers
the minibatch ``idx`` from the training images on the device (a compiled
step picks ``idx`` and the labels itself: ``Statics.batch_size``), runs the
model's forward and backward pass and the optimizer's update, and returns
the new state. ``state`` holds arrays only:

- ``params``: the model's parameters;
- ``optim``: the optimizer's state (``anynet.training.optimizer``);
- ``bn``: per batch normalization layer, (running mean, running variance);
- ``rng``: the backend's counter- or key-based generator (``Backend.uniform``),
  which draws the dropout masks.

Everything else is ``Statics``, a frozen value: the model's spec, the
optimizer's plan, the backend. Nothing in the step branches on an array's
value, reads an array on the host, or changes an argument in place, so
``jax.jit`` and ``torch.compile`` trace it whole, once per statics and
shapes (``anynet.training.compiled``).

Plain SGD with one learning rate takes a shorter way than the course's rule:
the step backpropagates ``learning_rate * loss`` (``loss_and_grads(...,
scale=)``), whose gradients are the updates themselves, so each weight's new
value is ``w - x.T @ dout_scaled``, which a compiler makes one GEMM that
accumulates into ``w``. The result differs from ``sgd(w, dw)`` by rounding only.

A model of your own with only the course's ``loss(X, y) -> (loss, grads)``
runs through the same step, uncompiled (``CourseModel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..nn.augment import augmented_scores, random_crop_flip
from .optimizer import scheduled_rate, update


@dataclass(frozen=True)
class Statics:
    """What a step takes as constants: a change to any of them makes another compiled step.

    ``model`` is the model's ``Spec`` (``reg``, dropout, batch normalization,
    architecture), ``plan`` the optimizer's (rule, hyperparameters, layout),
    and ``scaled`` whether plain SGD backpropagates the loss times the
    learning rate (``Optimizer.single_rate``). ``augment`` is ``(pad, flip)``
    of the random crops and flips (``anynet.nn.augment``), or None;
    ``schedule`` is ``(kind, warmup, total)`` of a per-step learning-rate
    schedule (``rate_factor``), or None; ``flip_test`` and ``translate_test``
    choose the views of each image the accuracy count averages
    (``anynet.nn.augment.augmented_scores``); ``fast_paths`` is
    ``anynet.backends.fast_paths()`` (the layers traced depend on it).
    ``batch_size`` (a compiled step's): the step is given the whole
    training set's labels and the epoch's order of the images, and picks its
    minibatch itself, at the position ``state["batch"]`` it carries (no
    slicing outside it: an eager slice of a JAX array costs a dispatch per
    step); an eager step (``batch_size`` None) is given its minibatch's
    indices and labels.
    """

    model: Any
    plan: Any
    backend: Any
    scaled: bool
    augment: tuple | None = None
    schedule: tuple | None = None
    flip_test: bool = False
    translate_test: bool = False
    fast_paths: bool = True
    batch_size: int | None = None


class Draws:
    """Dropout's generator inside a step: ``uniform`` draws from carried state and advances it."""

    def __init__(self, backend, state):
        self.backend, self.state = backend, state

    def uniform(self, shape, dtype="float32"):
        values, self.state = self.backend.uniform(self.state, tuple(shape), self.backend.dtype(dtype))
        return values


def train_step(statics, state, X_train, y, idx):
    """``(state, loss)`` after one step on the minibatch ``idx`` of the training images, labelled ``y`` (see
    ``Statics.batch_size``: compiled, ``y`` and ``idx`` are the whole set's labels and the epoch's order)."""
    backend, spec = statics.backend, statics.model
    if statics.batch_size is not None:
        xp, B = backend.xp, statics.batch_size
        idx = backend.take_rows(idx, state["batch"] * B + xp.arange(B, dtype=state["batch"].dtype,
                                                                     device=backend.device))
        y = backend.take_rows(y, idx)
    X = backend.take_rows(X_train, idx)
    params, optim_state = state["params"], state["optim"]
    bn_params = spec.bn_params_of(state["bn"], "train")
    draws = Draws(backend, state["rng"])
    if statics.augment is not None:
        X = random_crop_flip(X, draws, *statics.augment)
    dropout_param = spec.dropout_param_of(draws)
    factor = None if statics.schedule is None else rate_factor(backend.xp, state["t"], *statics.schedule)
    if statics.scaled:
        # The gradients of learning_rate * loss are the steps themselves, and a weight's step is the product its
        # affine backward pass makes, which the compiler subtracts from the weight as the product is made.
        rate = scheduled_rate(optim_state[0]["learning_rate"], factor)
        loss, steps = spec.loss_and_grads(params, X, y, bn_params, dropout_param, scale=rate)
        next_params = {p: w - steps[p] for p, w in params.items()}
    else:
        loss, grads = spec.loss_and_grads(params, X, y, bn_params, dropout_param)
        next_params, optim_state = update(statics.plan, optim_state, params, grads, factor)
    next_state = {"params": next_params, "optim": optim_state, "bn": [(bn["running_mean"], bn["running_var"])
                                                                      for bn in bn_params], "rng": draws.state}
    for counter in ("t", "batch"):
        if counter in state:
            next_state[counter] = state[counter] + 1
    return next_state, loss


def rate_factor(xp, t, kind, warmup, total):
    """The learning rate's factor at step ``t`` (a 0-d array, from 0): a linear warm-up over ``warmup`` steps, then
    a ``"linear"`` or ``"cosine"`` decay to 0 at step ``total`` (``"constant"``: none). Array operations only:
    nothing recompiles as ``t`` grows."""
    # Bounds as arrays like t: a Python number beside an array takes array-api-compat's result_type, which
    # torch.compile cannot trace.
    one, zero = xp.ones_like(t), xp.zeros_like(t)
    warm = xp.minimum((t + 1.0) / max(warmup, 1), one) if warmup else one
    if kind == "constant":
        return warm
    progress = xp.minimum(xp.maximum((t - warmup) / max(total - warmup, 1), zero), one)
    if kind == "cosine":
        return warm * (0.5 * (1.0 + xp.cos(math.pi * progress)))
    return warm * (1.0 - progress)


def correct_count(statics, params, bn_state, X, y):
    """How many of ``X`` the model labels as ``y``: a 0-d integer array on the device (pure, compiled too).

    With ``statics.flip_test`` or ``statics.translate_test``, the scores are
    averaged over views of each image (``augmented_scores``).
    """
    xp = statics.backend.xp
    spec = statics.model
    bn_params = spec.bn_params_of(bn_state, "test")
    scores = augmented_scores(lambda views: spec.scores(params, views, bn_params), X, statics.flip_test,
                              statics.translate_test)
    # Counted in y's integer type: JAX's 32-bit mode has no int64.
    return xp.sum(xp.astype(xp.argmax(scores, axis=1) == y, y.dtype))


@dataclass(frozen=True, eq=False)
class CourseModel:
    """The spec of a model with only the course's ``loss(X, y)``: the step sets its parameters and calls it.

    Not pure (it changes ``model.params``), so it never compiles; the
    Solver's step writes the new parameters back into the model anyway.
    """

    model: Any
    dropout: tuple = ()
    bn: tuple = ()

    def bn_params_of(self, bn_state, mode):
        return []

    def dropout_param_of(self, rng):
        return None

    def loss_and_grads(self, params, X, y, bn_params, dropout_param=None, scale=None):
        self.model.params = dict(params)
        return self.model.loss(X, y)

    def scores(self, params, X, bn_params):
        self.model.params = dict(params)
        return self.model.loss(X)
