"""The course's first, non-modular two-layer net (``nndl.neural_net.TwoLayerNet``), on any backend.

Its API is the first notebook's: weights ``W1`` of shape (H, D) and ``W2`` of
shape (C, H), ``loss(X, y=None, reg=0.0)``, a ``train`` method doing plain SGD
on minibatches drawn with replacement, and ``predict``. The arithmetic is
anynet's layers (which take weights as (in, out), so they see ``W1.T`` and
``W2.T``); the randomness is the course's, drawn on the host with NumPy, so
that ``np.random.seed(0)`` before building and training reproduces the numbers
the notebook prints.

Unlike the homework's code, ``reg`` enters the bias gradients nowhere: the
loss regularizes the weight matrices only, and the gradients are those of
that loss.
"""

from __future__ import annotations

import math

import numpy as np

from .. import backends
from ..backends import OnBackend
from ..nn import checks
from ..nn.gradient_check import register_parameters
from ..nn.layers import _affine_backward, affine_forward, relu_backward, relu_forward, softmax_loss

__all__ = ["TwoLayerNet"]

# ---------------------------------------------------------------------------------------------------------------
# Host-side randomness. The course draws its weights and minibatch indices from NumPy's global generator; these
# helpers are the only place this module calls NumPy, so that np.random.seed(...) reproduces the course's numbers.
# ---------------------------------------------------------------------------------------------------------------


def _host_generator(seed):
    """NumPy's global generator (``seed`` None), as the course draws, else a private ``RandomState(seed)``.

    ``RandomState`` rather than ``default_rng``: its ``randn`` and ``choice``
    are the global generator's algorithms, so ``seed=s`` gives the numbers of
    ``np.random.seed(s)`` followed by the same calls, without touching the
    global state.
    """
    return np.random if seed is None else np.random.RandomState(seed)


def _host_normal(rng, shape, std):
    """``std * rng.randn(*shape)``, float64 on the host, as the course initializes its weights."""
    return std * rng.randn(*shape)


def _host_minibatch(rng, num_train, batch_size):
    """``batch_size`` indices into ``range(num_train)``, drawn with replacement in one call, as the homework does."""
    return rng.choice(num_train, batch_size)


class TwoLayerNet(OnBackend):
    """``affine - relu - affine - softmax`` with the first notebook's API.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        D, H and C.
    std : float
        Weights start as ``std * np.random.randn(H, D)`` and
        ``std * np.random.randn(C, H)`` (drawn in that order, on the host, in
        float64); biases start at zero.
    seed : int, optional
        Draw the weights and ``train``'s minibatches from a private
        ``np.random.RandomState(seed)`` instead of NumPy's global generator.
    dtype : {"float64", "float32"} or NumPy type
        Parameters are kept, and inputs cast, in this dtype. float64 (the
        course computes in NumPy's default) by default.
    backend, device : optional
        Where the net computes: a backend name (default ``anynet.get_backend()``)
        or object, and one of its devices.

    Attributes
    ----------
    params : dict
        ``W1`` (H, D), ``b1`` (H,), ``W2`` (C, H), ``b2`` (C,), arrays of the
        backend on the device. Arrays assigned by hand (NumPy, say) are moved
        there when used.
    """

    def __init__(self, input_size, hidden_size, output_size, std=1e-4, *, seed=None, dtype="float64", backend=None,
                 device=None):
        D = checks.integer("input_size", input_size)
        H = checks.integer("hidden_size", hidden_size)
        C = checks.integer("output_size", output_size)
        std = checks.real("std", std, 0.0)
        self.seed = checks.seed(seed)
        register_parameters(self)  # the course's gradient checks of net.params work on JAX too
        self.dtype = backends.dtype_name(dtype)
        self.backend = backends.get(backend, device)
        self._dtype = self.backend.dtype(self.dtype)
        self.input_size, self.hidden_size, self.output_size = D, H, C
        self._rng = _host_generator(self.seed)
        # Both weight matrices are drawn before either moves, in the course's order.
        W1 = _host_normal(self._rng, (H, D), std)
        W2 = _host_normal(self._rng, (C, H), std)
        zeros = self.xp.zeros
        self.params = {
            "W1": self._to_device(W1),
            "b1": zeros(H, dtype=self._dtype, device=self.device),
            "W2": self._to_device(W2),
            "b2": zeros(C, dtype=self._dtype, device=self.device),
        }

    def _to_device(self, x):
        """``x`` as an array of this net's backend, device and dtype (no copy when it already is one)."""
        return self.backend.to_device(x, self._dtype)

    def _input(self, name, X):
        """Images ``X`` on the device, checked to have ``input_size`` features per row."""
        X = self._to_device(checks.checked_array(name, X))
        if X.ndim < 2 or X.shape[0] == 0 or math.prod(X.shape[1:]) != self.input_size:
            raise ValueError(
                f"{name} must have shape (N, {self.input_size}) with N > 0 (or (N, ...) with {self.input_size} "
                f"features per row); got shape {tuple(X.shape)}"
            )
        return X

    def _labels(self, name, y, N):
        """Integer labels ``y`` on the device, checked against ``N`` rows and ``output_size`` classes."""
        y = checks.checked_array(f"{name} (integer labels)", y, "integral")
        if y.ndim != 1 or y.shape[0] != N:
            raise ValueError(f"{name} must have shape ({N},) to match the images; got shape {tuple(y.shape)}")
        checks.check_label_range(name, y, self.output_size)
        return self.backend.to_device(y)

    def _weights(self):
        """``W1, b1, W2, b2`` on the device; hand-assigned arrays are moved there."""
        return tuple(self._to_device(self.params[k]) for k in ("W1", "b1", "W2", "b2"))

    def _scores(self, X):
        """Scores (N, C) of device images ``X`` and the caches of the forward pass."""
        W1, b1, W2, b2 = self._weights()
        # anynet's affine layer takes w as (in, out): the transposes are views, not copies.
        h, fc1_cache = affine_forward(X, W1.T, b1)
        a, relu_cache = relu_forward(h)
        scores, fc2_cache = affine_forward(a, W2.T, b2)
        return scores, (W1, W2, fc1_cache, relu_cache, fc2_cache)

    def _loss(self, X, y, reg):
        """Loss and gradients on device arrays, unchecked: ``train`` checks its data once, up front."""
        xp = self.xp
        scores, (W1, W2, fc1_cache, relu_cache, fc2_cache) = self._scores(X)
        loss, dscores = softmax_loss(scores, y)
        da, dW2, db2 = _affine_backward(dscores, fc2_cache, need_dx=True)
        dh = relu_backward(da, relu_cache)
        _, dW1, db1 = _affine_backward(dh, fc1_cache, need_dx=False)  # nobody needs d(loss)/dX
        grads = {"W1": dW1.T, "b1": db1, "W2": dW2.T, "b2": db2}
        if reg:
            w1, w2 = xp.reshape(W1, (-1,)), xp.reshape(W2, (-1,))
            loss = loss + 0.5 * reg * (w1 @ w1 + w2 @ w2)
            grads["W1"] = grads["W1"] + reg * W1
            grads["W2"] = grads["W2"] + reg * W2
        return loss, grads

    def loss(self, X, y=None, reg=0.0):
        """Scores, or loss and gradients.

        Parameters
        ----------
        X : array, shape (N, D)
            Inputs, NumPy or this net's backend; cast to the net's dtype.
        y : array, shape (N,), optional
            Integer labels in ``[0, C)``. Without them only scores are computed.
        reg : float
            L2 strength: the loss gains ``0.5 * reg * (sum(W1**2) + sum(W2**2))``.
            Biases are not regularized.

        Returns
        -------
        scores : array, shape (N, C)
            When ``y`` is None.
        loss, grads : 0-d array and dict
            When ``y`` is given; ``grads`` has the keys and shapes of ``params``.
        """
        X = self._input("X", X)
        reg = checks.real("reg", reg, 0.0)
        if y is None:
            return self._scores(X)[0]
        return self._loss(X, self._labels("y", y, X.shape[0]), reg)

    def predict(self, X):
        """Predicted integer labels of ``X`` (N, D), shape (N,), on this net's backend."""
        return self.xp.argmax(self._scores(self._input("X", X))[0], axis=1)

    def train(self, X, y, X_val, y_val, learning_rate=1e-3, learning_rate_decay=0.95, reg=1e-5, num_iters=100,
              batch_size=200, verbose=False):
        """Train by stochastic gradient descent, exactly as the homework's ``train`` does.

        Each iteration draws ``batch_size`` training rows with replacement
        (one ``np.random.choice`` call, or the private generator's when the net
        has a ``seed``) and steps every parameter by ``-learning_rate * grad``.
        Whenever ``it % iterations_per_epoch == 0``, with
        ``iterations_per_epoch = max(N / batch_size, 1)`` (a true division, as
        in the homework), the accuracy on that minibatch and on the validation
        set is recorded and the learning rate is multiplied by
        ``learning_rate_decay``.

        Parameters
        ----------
        X, y : arrays, shapes (N, D) and (N,)
            Training data, NumPy or this net's backend; moved to the device once.
        X_val, y_val : arrays, shapes (N_val, D) and (N_val,)
        learning_rate, learning_rate_decay, reg : float
        num_iters, batch_size : int
            ``batch_size`` may exceed N: rows are drawn with replacement.
        verbose : bool
            Print ``iteration i / num_iters: loss L`` every 100 iterations.

        Returns
        -------
        dict
            ``loss_history`` (one float per iteration), ``train_acc_history``
            and ``val_acc_history`` (floats).
        """
        learning_rate = checks.real("learning_rate", learning_rate, 0.0, low_open=True)
        learning_rate_decay = checks.real("learning_rate_decay", learning_rate_decay, 0.0, low_open=True)
        reg = checks.real("reg", reg, 0.0)
        num_iters = checks.integer("num_iters", num_iters, low=0)
        batch_size = checks.integer("batch_size", batch_size)
        if not isinstance(verbose, bool):
            raise TypeError(f"verbose must be True or False; got {verbose!r}")
        xp, backend = self.xp, self.backend
        X = self._input("X", X)
        y = self._labels("y", y, X.shape[0])
        X_val = self._input("X_val", X_val)
        y_val = self._labels("y_val", y_val, X_val.shape[0])
        for k in self.params:
            self.params[k] = self._to_device(self.params[k])
        params = self.params

        num_train = X.shape[0]
        iterations_per_epoch = max(num_train / batch_size, 1)
        # 0-d device values, read in one transfer each at epoch ends and at the end: the loop never waits on the
        # device (except to print, when verbose).
        losses, pending = [], []
        train_correct, val_correct = [], []

        def flush():
            if pending:
                losses.extend(backend.to_numpy(xp.stack(pending)).tolist())
                pending.clear()

        for it in range(num_iters):
            idx = backend.asarray(_host_minibatch(self._rng, num_train, batch_size))
            X_batch, y_batch = backend.take_rows(X, idx), backend.take_rows(y, idx)
            loss, grads = self._loss(X_batch, y_batch, reg)
            pending.append(loss)
            for k, w in params.items():
                # Not in place (the homework: += -lr * grads[k]): the same numbers, and JAX arrays are immutable.
                params[k] = w - learning_rate * grads[k]
            if verbose and it % 100 == 0:
                print(f"iteration {it} / {num_iters}: loss {float(loss)}")
            if it % iterations_per_epoch == 0:
                # After the step, as the homework measures: the minibatch just trained on, and the validation set.
                train_correct.append(self._count_correct(X_batch, y_batch))
                val_correct.append(self._count_correct(X_val, y_val))
                learning_rate *= learning_rate_decay
                flush()
        flush()
        return {
            "loss_history": losses,
            "train_acc_history": self._fractions(train_correct, batch_size),
            "val_acc_history": self._fractions(val_correct, X_val.shape[0]),
        }

    def _count_correct(self, X, y):
        """0-d integer device count of the rows of device images ``X`` predicted as ``y``."""
        return self.xp.count_nonzero(self.xp.argmax(self._scores(X)[0], axis=1) == y)

    def _fractions(self, counts, N):
        """Device counts over ``N`` as Python floats, read in one transfer: ``mean(pred == y)`` to the last bit."""
        if not counts:
            return []
        return [c / N for c in self.backend.to_numpy(self.xp.stack(counts)).tolist()]
