"""The Solver: minibatch gradient descent on any model with ``loss(X, y) -> (loss, grads)``."""

from __future__ import annotations

import math
import os
import secrets
import time

from . import backend as _backend
from . import checks, optim
from .optimizers import Optimizer
from .step import TrainStep

_DEFAULTS = {
    "update_rule": "sgd",
    "optim_config": None,
    "lr_decay": 1.0,
    "batch_size": 100,
    "num_epochs": 10,
    "num_iterations": None,
    "num_train_samples": 1000,
    "num_val_samples": None,
    "checkpoint_name": None,
    "print_every": 10,
    "verbose": True,
    "seed": None,
    "callback": None,
    "compile": "auto",
}
_SPLITS = ("X_train", "y_train", "X_val", "y_val")


class Solver:
    """Train a model by minibatch gradient descent, the CS231n way.

    Parameters
    ----------
    model : object
        Has ``params`` (a dict of arrays), ``loss(X, y) -> (loss, grads)``,
        ``xp``, ``device`` and ``predict``; the models in ``anynet.models`` do.
    data : dict
        ``X_train, y_train, X_val, y_val``: NumPy arrays or arrays of the
        model's backend. They move to the model's device once, here.
    update_rule : str or callable
        A name in ``anynet.optim.UPDATE_RULES`` or a function ``rule(w, dw, config)``.
    optim_config : dict
        Hyperparameters given to the update rule (each parameter gets its own copy).
    lr_decay : float
        Every learning rate is multiplied by this at each epoch end.
    batch_size : int
    num_epochs : int
        Ignored when ``num_iterations`` is given.
    num_iterations : int, optional
        Total minibatch steps, instead of ``num_epochs``.
    num_train_samples : int or None
        Training images used to measure training accuracy (None: all).
    num_val_samples : int or None
        Validation images used to measure validation accuracy (None: all).
    checkpoint_name : str or path, optional
        At every epoch end the whole training state is written, atomically, to
        ``{checkpoint_name}.npz``; ``load_checkpoint`` resumes from it.
    print_every : int
        Print the loss every this many iterations (when ``verbose``).
    verbose : bool
    seed : int, optional
        Seeds minibatch order, accuracy subsamples and dropout masks; one is
        drawn (and saved in checkpoints) when not given.
    callback : callable, optional
        Called as ``callback(solver, event)`` after each iteration
        (``event == "iteration"``) and after each epoch's bookkeeping
        (``event == "epoch"``).
    compile : "auto", True or False
        Run each training step (and the accuracy checks) as one compiled
        function: ``jax.jit`` on jax, ``torch.compile`` on torch
        (``anynet.step``). ``"auto"`` compiles where it measured faster
        (``Backend.compile_pays``); True raises ``ValueError`` where the
        backend, the model or the update rule cannot be compiled (a rule of
        your own, say). A run compiles once per model and batch shape. On
        jax the compiled step reuses the buffers of the parameters it is
        given: an array taken from ``model.params`` before a step is deleted
        by it (copy it to keep it).

    Attributes
    ----------
    loss_history : list of float
        One loss per iteration, filled at each epoch end (and when printing),
        so training never waits on the device mid-epoch.
    train_acc_history, val_acc_history : list of float
        Measured at the first iteration, every epoch end and the last iteration.
    best_val_acc : float
    metadata : dict
        JSON-serializable facts saved with every checkpoint (the command's flags, say).
    best_params : dict
        Copies of the parameters that gave ``best_val_acc``; put into the model
        when ``train`` ends.
    compiled : bool
        Whether steps run compiled (see ``compile``).
    compile_seconds : float
        Wall time spent compiling (the first calls of each compiled function), apart from training.
    """

    def __init__(self, model, data, **kwargs):
        unknown = sorted(set(kwargs) - set(_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown Solver argument(s) {', '.join(unknown)}; expected some of {', '.join(_DEFAULTS)}"
            )
        opts = {**_DEFAULTS, **kwargs}
        for attr in ("params", "loss", "xp", "device"):
            if not hasattr(model, attr):
                raise TypeError(f"model must have a {attr!r} attribute; got {type(model).__name__}")
        self.model = model
        self.update_rule = self._rule(opts["update_rule"])
        if not isinstance(opts["optim_config"], (dict, type(None))):
            raise TypeError(f"optim_config must be a dict or None; got {type(opts['optim_config']).__name__}")
        self.optim_config = dict(opts["optim_config"] or {})
        if isinstance(opts["update_rule"], str):
            self._check_optim_config(opts["update_rule"])
        self.lr_decay = checks.real("lr_decay", opts["lr_decay"], 0, 1, low_open=True, high_open=False)
        self.batch_size = checks.integer("batch_size", opts["batch_size"])
        self.num_epochs = checks.integer("num_epochs", opts["num_epochs"])
        self.num_iterations = checks.integer("num_iterations", opts["num_iterations"], optional=True)
        self.num_train_samples = checks.integer("num_train_samples", opts["num_train_samples"], optional=True)
        self.num_val_samples = checks.integer("num_val_samples", opts["num_val_samples"], optional=True)
        self.checkpoint_name = opts["checkpoint_name"]
        if self.checkpoint_name is not None and not isinstance(self.checkpoint_name, (str, os.PathLike)):
            raise TypeError(f"checkpoint_name must be a path or None; got {self.checkpoint_name!r}")
        self.print_every = checks.integer("print_every", opts["print_every"])
        self.verbose = bool(opts["verbose"])
        seed = checks.seed(opts["seed"])
        self.seed = secrets.randbits(32) if seed is None else seed
        self.callback = opts["callback"]
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable(solver, event) or None; got {self.callback!r}")
        self.metadata = {}
        self.compiled = self._wants_compile(opts["compile"], opts["update_rule"])
        self.compile_seconds = 0.0
        self._train_step = None  # the pure step (anynet.step) when compiled
        self._optim_state = None  # the compiled step's optimizer state; None when optim_configs is current

        # How the rule updates the parameters (one call each, fused into one buffer on a GPU, in row blocks
        # on threads on NumPy) is the backend's choice; the numbers are the same.
        backend = getattr(model, "backend", None)
        make = getattr(backend, "optimizer", None)
        self.optimizer = make(self.update_rule, self.optim_config) if make else Optimizer(
            self.update_rule, self.optim_config)
        self.X_train, self.y_train, self.X_val, self.y_val = self._move_data(data)
        N = self.X_train.shape[0]
        if self.batch_size > N:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than the training set ({N} images)")
        self.iterations_per_epoch = max(N // self.batch_size, 1)
        if self.num_iterations is None:
            self.num_iterations = self.num_epochs * self.iterations_per_epoch
        self._reset()

    def _wants_compile(self, compile, update_rule):
        """Whether to compile the step: ``compile`` checked against what the backend, model and rule allow."""
        if compile not in ("auto", True, False):
            raise ValueError(f'compile must be "auto", True or False; got {compile!r}')
        backend = getattr(self.model, "backend", None)
        why = None
        if not getattr(backend, "can_compile", False):
            why = f"the {backend} backend runs steps eagerly"
        elif not hasattr(self.model, "loss_and_grads"):
            why = f"{type(self.model).__name__} has no pure loss_and_grads"
        elif not isinstance(update_rule, str):
            why = "only the update rules of anynet.optim (given by name) are compiled"
        if compile is True and why is not None:
            raise ValueError(f"compile=True cannot be honoured: {why}")
        if why is not None or compile is False:
            return False
        return compile is True or backend.compile_pays()

    @staticmethod
    def _rule(update_rule):
        """Resolve ``update_rule`` to a function."""
        if callable(update_rule):
            return update_rule
        if update_rule not in optim.UPDATE_RULES:
            raise ValueError(
                f"update_rule must be a callable or one of {', '.join(optim.UPDATE_RULES)}; got {update_rule!r}"
            )
        return optim.UPDATE_RULES[update_rule]

    def _check_optim_config(self, name):
        """Let the named update rule check ``optim_config`` now, on one number, rather than at the first step."""
        w = self.model.xp.zeros(1, device=self.model.device)
        try:
            self.update_rule(w, w, dict(self.optim_config))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"optim_config of update rule {name!r}: {exc}") from None

    def _move_data(self, data):
        """Check the four splits once and move them to the model's device."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict with keys {', '.join(_SPLITS)}; got {type(data).__name__}")
        missing = [k for k in _SPLITS if k not in data]
        if missing:
            raise ValueError(f"data is missing {', '.join(missing)}")
        model, xp = self.model, self.model.xp
        dtype = getattr(model, "_dtype", None)
        num_classes = getattr(model, "config", {}).get("num_classes")
        moved = []
        input_dim = getattr(model, "input_dim", None)
        for split in ("train", "val"):
            X = _backend.to_device(checks.checked_array(f"X_{split}", data[f"X_{split}"]), xp, model.device, dtype)
            y = _backend.to_device(checks.checked_array(f"y_{split}", data[f"y_{split}"], "integral"), xp, model.device)
            if X.ndim < 2 or X.shape[0] == 0:
                raise ValueError(f"X_{split} must have shape (N, ...) with N > 0; got {tuple(X.shape)}")
            if input_dim is not None and math.prod(X.shape[1:]) != input_dim:
                raise ValueError(
                    f"X_{split} must have {input_dim} features per row, as the model; got shape {tuple(X.shape)}"
                )
            if y.ndim != 1 or y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"y_{split} must have shape ({X.shape[0]},) to match X_{split}; got {tuple(y.shape)}"
                )
            # One synchronisation, here, instead of checks in the training loop.
            if num_classes is not None and bool(xp.any((y < 0) | (y >= num_classes))):
                raise ValueError(f"y_{split} holds labels outside [0, {num_classes})")
            # max and min propagate NaN (the standard says so) and meet any infinity: two reductions and no
            # temporary the size of the data (all(isfinite(X)) made one; PyTorch's isfinite makes an abs(X) too).
            if not bool(xp.isfinite(xp.max(X)) & xp.isfinite(xp.min(X))):
                raise ValueError(f"X_{split} holds NaN or infinite values")
            moved += [X, y]
        return moved

    def _reset(self):
        """Set up the bookkeeping of a fresh run."""
        self.epoch = 0
        self.t = 0
        self.best_val_acc = 0.0
        self.best_params = {}
        self.best_bn_stats = []
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self._pending_losses = []
        self.last_loss = None
        self._optim_state = None
        self.optimizer.reset(self.model.params)
        self._drawn = None  # (seed, epoch) of the minibatch order in hand

    def _start_epoch(self, epoch):
        """Draw this epoch's minibatch order and dropout stream from (seed, epoch)."""
        rng = _backend.Generator((self.seed, epoch), self.model.backend, self.model.device)
        self._order = rng.permutation(self.X_train.shape[0])
        # The labels are small: put them in this epoch's order once, so that a step slices them (a view)
        # instead of gathering them (a launch on a GPU). The images would need a second copy of the set.
        self._y_order = _backend.take_rows(self.y_train, self._order)
        self._rng = self.model.rng = rng
        self._drawn = (self.seed, epoch)
        if self.compiled:
            self._rng_state = self.model.backend.rng_state((self.seed, epoch))

    def _unmerge(self):
        """Bring the optimizer's configs up to date from the compiled step's state."""
        if self._optim_state is not None:
            state, self._optim_state = self._optim_state, None
            self.optimizer.configs = self._train_step.join_configs(state)

    @property
    def optim_configs(self):
        """Dict of one update-rule config per parameter: hyperparameters and state (velocity, Adam's m, v)."""
        self._unmerge()  # the next compiled step takes them up again, with any change made to them
        return self.optimizer.configs

    @optim_configs.setter
    def optim_configs(self, configs):
        self._optim_state = None
        self.optimizer.configs = configs

    def _compiled(self, fn, *args):
        """``fn(*args)`` of the compiled step; the time of a call that compiled counts as compile time."""
        backend = self.model.backend
        start = time.perf_counter()  # before the count: the first asks loads the compiler (torch._dynamo: ~1 s)
        count = backend.compile_count()
        out = fn(*args)
        if backend.compile_count() != count:
            backend.synchronize()  # once per compilation, never in the steady loop
            self.compile_seconds += time.perf_counter() - start
        return out

    def _pure_step(self, batch):
        """One minibatch update through the pure (compiled) step of ``anynet.step``."""
        model, ts = self.model, self._train_step
        if ts is None:
            ts = self._train_step = TrainStep.of(model, self.update_rule.__name__)
        if self._optim_state is None:
            self._optim_state = ts.split_configs(self.optimizer.configs, model.params)
        params, self._optim_state, bn_state, self._rng_state, loss = self._compiled(
            ts.step, dict(model.params), self._optim_state, ts.bn_state(), self._rng_state,
            self.X_train, self.y_train, self._order[batch],
        )
        model.params.update(params)
        for bn, (mean, var) in zip(model.bn_params, bn_state, strict=True):
            bn["running_mean"], bn["running_var"] = mean, var
        self.last_loss = loss
        self._pending_losses.append(loss)

    def _step(self):
        """One minibatch update; never waits on the device."""
        k = self.t % self.iterations_per_epoch
        batch = slice(k * self.batch_size, (k + 1) * self.batch_size)
        if self.compiled:
            return self._pure_step(batch)
        X_batch = _backend.take_rows(self.X_train, self._order[batch])
        y_batch = self._y_order[batch]
        loss, grads = self.model.loss(X_batch, y_batch)
        self.last_loss = loss
        self._pending_losses.append(loss)
        self.optimizer.step(self.model.params, grads)

    def _flush_losses(self):
        """Copy pending losses to the host in one transfer; stop on a non-finite one."""
        if not self._pending_losses:
            return
        xp = self.model.xp
        values = _backend.to_numpy(xp.stack(self._pending_losses)).tolist()
        start = len(self.loss_history)
        self._pending_losses = []
        for i, value in enumerate(values):
            if not math.isfinite(value):
                last = next((v for v in reversed(self.loss_history) if math.isfinite(v)), None)
                raise FloatingPointError(
                    f"loss became {value} at iteration {start + i + 1}; last finite loss {last}. "
                    f"Lower the learning rate or the weight scale. {self._where_saved()}"
                )
            self.loss_history.append(value)

    def _where_saved(self):
        """Say where the best parameters and the last checkpoint (written before the fault) are."""
        where = f"The best parameters so far (val acc {self.best_val_acc:g}) are in solver.best_params"
        path = None if self.checkpoint_name is None else f"{self.checkpoint_name}.npz"
        if path is not None and os.path.exists(path):
            return f"{where}; the last checkpoint, {path}, is intact (resume from it, or load_model it)."
        return where + "."

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
        model, xp = self.model, self.model.xp
        batch_size = checks.integer("batch_size", batch_size)
        X = _backend.to_device(X, xp, model.device, getattr(model, "_dtype", None))
        y = _backend.to_device(y, xp, model.device)
        N = X.shape[0]
        if y.ndim != 1 or y.shape[0] != N:
            raise ValueError(f"y must have shape ({N},) to match X; got {tuple(y.shape)}")
        if num_samples is not None and num_samples < N:
            rng = _backend.Generator((self.seed, self.epoch, self.t), model.backend, model.device)
            idx = rng.sample(N, num_samples)  # not a permutation of all N: 20x less host time at N = 49,000
            X, y, N = _backend.take_rows(X, idx), _backend.take_rows(y, idx), num_samples
        correct = xp.zeros((), dtype=y.dtype, device=model.device)
        if self._train_step is not None:  # compiled: the forward pass of each chunk is one call
            ts = self._train_step
            params, bn_state = dict(model.params), ts.bn_state()
            for start in range(0, N, batch_size):
                stop = min(start + batch_size, N)
                correct = correct + self._compiled(ts.count, params, bn_state, X[start:stop, ...], y[start:stop])
            return int(correct) / N
        for start in range(0, N, batch_size):
            stop = min(start + batch_size, N)
            pred = model.predict(X[start:stop, ...])
            correct = correct + xp.sum(xp.astype(pred == y[start:stop], y.dtype))
        return int(correct) / N

    def _record_accuracy(self):
        """Measure train and validation accuracy, keeping the best parameters."""
        # Chunks as large as a training batch (whose working memory the step already needs): on a GPU each
        # chunk launches every kernel of the forward pass, so 100-image chunks dominate a large-batch epoch.
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
            self.best_bn_stats = [
                {k: v for k, v in bn.items() if k.startswith("running_")}
                for bn in getattr(self.model, "bn_params", [])
            ]

    @property
    def num_epochs_total(self):
        """Number of epochs this run spans (the last may be partial)."""
        return math.ceil(self.num_iterations / self.iterations_per_epoch)

    def train(self):
        """Run the optimization; at the end the model holds the best parameters."""
        if self._drawn == (self.seed, self.epoch):
            self.model.rng = self._rng  # train() called again inside an epoch: its dropout stream goes on
        try:
            while self.t < self.num_iterations:
                if self._drawn != (self.seed, self.epoch):
                    # At each epoch's start, and when resuming from a checkpoint written inside an epoch
                    # (the order is the epoch's again; the dropout stream starts over).
                    self._start_epoch(self.epoch)
                first = self.t == 0
                self._step()
                self.t += 1
                if self.verbose and (self.t - 1) % self.print_every == 0:
                    self._flush_losses()
                    print(f"(Iteration {self.t} / {self.num_iterations}) loss: {self.loss_history[-1]:f}")
                epoch_end = self.t % self.iterations_per_epoch == 0
                if epoch_end:
                    self.epoch += 1
                    for config in self.optim_configs.values():
                        if "learning_rate" in config:
                            config["learning_rate"] *= self.lr_decay
                if first or epoch_end or self.t == self.num_iterations:
                    self._flush_losses()
                    self._record_accuracy()
                if epoch_end and self.checkpoint_name is not None:
                    self.save_checkpoint(f"{self.checkpoint_name}.npz")
                if self.callback is not None:
                    self.callback(self, "iteration")
                    if epoch_end:
                        self.callback(self, "epoch")
        finally:
            self._flush_pending_quietly()
            self.model.rng = None
        self._restore_best()

    def _flush_pending_quietly(self):
        """Keep finite losses of an interrupted run without raising a second error."""
        try:
            self._flush_losses()
        except FloatingPointError:
            pass

    def _restore_best(self):
        """Put the best parameters (and their running statistics) into the model."""
        if self.best_params:
            # Copies: a compiled step may reuse the buffers of the parameters it is given (jax donates them),
            # and best_params must outlive a train() called again.
            xp = self.model.xp
            self.model.params = {k: xp.asarray(v, copy=True) for k, v in self.best_params.items()}
            for bn, stats in zip(getattr(self.model, "bn_params", []), self.best_bn_stats, strict=False):
                bn.update(stats)

    def save_checkpoint(self, path):
        """Write the whole training state to ``path`` (.npz, atomically)."""
        from .checkpoint import save_solver

        self._flush_losses()  # written inside an epoch, the checkpoint still holds every loss so far
        save_solver(self, path)

    def load_checkpoint(self, path):
        """Restore the training state saved by ``save_checkpoint``; ``train`` then continues."""
        from .checkpoint import restore_solver

        restore_solver(self, path)
