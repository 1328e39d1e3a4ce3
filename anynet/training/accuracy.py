"""The Solver's accuracy checks: on a subsample of the training set and on the validation set, in chunks."""

from __future__ import annotations

from ..backends import Generator
from ..nn import checks


class AccuracyChecks:
    """What a ``Solver`` measures between steps: ``check_accuracy``, and the books of each measurement.

    Uses the Solver's ``model``, ``backend``, ``seed``, ``epoch``, ``t``, ``_functions``, ``_statics``,
    ``_params`` and ``_timed``.
    """

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of ``X`` the model labels as ``y``.

        Parameters
        ----------
        X, y : arrays
            Images and integer labels, NumPy or the model's backend.
        num_samples : int, optional
            Measure on a random subsample of this many images.
        batch_size : int
            Images per forward pass.

        Returns
        -------
        float
        """
        xp, backend = self.model.xp, self.backend
        batch_size = checks.integer("batch_size", batch_size)
        X = backend.to_device(X, getattr(self.model, "_dtype", None))
        y = backend.to_device(y)
        N = X.shape[0]
        if y.ndim != 1 or y.shape[0] != N:
            raise ValueError(f"y must have shape ({N},) to match X; got {tuple(y.shape)}")
        if num_samples is not None and num_samples < N:
            idx = Generator((self.seed, self.epoch, self.t), backend).sample(N, num_samples)
            X, y, N = backend.take_rows(X, idx), backend.take_rows(y, idx), num_samples
        count = self._functions(self._statics())[1]
        params = self._params()
        bn_state = self.model.bn_state() if hasattr(self.model, "bn_state") else []
        correct = xp.zeros((), dtype=y.dtype, device=backend.device)
        for start in range(0, N, batch_size):
            stop = min(start + batch_size, N)
            correct = correct + self._timed(count, params, bn_state, X[start:stop, ...], y[start:stop])
        return int(correct) / N

    def _record_accuracy(self):
        """Measure train and validation accuracy, keeping the best parameters."""
        # Chunks as large as a training batch (whose working memory the step already needs): on a GPU each
        # chunk launches every kernel of the forward pass, so small chunks dominate a large-batch epoch.
        chunk = max(self.batch_size, 100)
        train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples, chunk)
        val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples, chunk)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self.verbose:
            print(f"(Epoch {self.epoch} / {self.num_epochs_total}) train acc: {train_acc:f}; val_acc: {val_acc:f}")
        if val_acc > self.best_val_acc or not self.best_params:
            xp = self.model.xp
            self.best_val_acc = val_acc
            self.best_params = {k: xp.asarray(v, copy=True) for k, v in self.model.params.items()}
            # Copies: a compiled step may reuse the buffers of the state it is given (jax donates them).
            self.best_bn_stats = [
                {k: xp.asarray(v, copy=True) for k, v in bn.items() if k.startswith("running_")}
                for bn in getattr(self.model, "bn_params", [])
            ]
