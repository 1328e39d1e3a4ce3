"""The Solver: minibatch gradient descent on any model with ``loss(X, y) -> (loss, grads)``, the CS231n way.

Every step is ``anynet.training.step.train_step``, one pure function of the
state the Solver carries (parameters, optimizer state, running statistics,
random state), compiled by the backend where it can and run as it is
elsewhere: there is one training path.
"""

from __future__ import annotations

import math
import os
import time

from .. import backends
from ..backends import Generator
from . import compiled, options
from .accuracy import AccuracyChecks
from .checkpoint import restore_solver, save_solver
from .configs import ConfigsView
from .data import move_data
from .optimizer import Optimizer, is_builtin, resolve_rule
from .step import CourseModel, Statics, correct_count, train_step


class NonFiniteLoss(FloatingPointError):
    """Training stopped: the loss ``loss`` of iteration ``iteration`` (1-based) is not finite; ``last_finite_loss``
    is the one before it (None if there was none)."""

    def __init__(self, loss, iteration, last_finite_loss, where_saved):
        super().__init__(f"loss became {loss} at iteration {iteration}; last finite loss {last_finite_loss}. "
                         f"Lower the learning rate or the weight scale. {where_saved}")
        self.loss, self.iteration, self.last_finite_loss = loss, iteration, last_finite_loss


class Solver(AccuracyChecks):
    """Train a model by minibatch gradient descent, the CS231n way.

    Parameters
    ----------
    model : object
        Has ``params`` (a dict of arrays), ``loss(X, y) -> (loss, grads)``,
        ``xp`` and ``device``: the course's interface. The models of
        ``anynet.models`` also give a pure ``spec()``, which lets steps compile.
    data : dict
        ``X_train, y_train, X_val, y_val``: NumPy arrays or arrays of the
        model's backend. They move to the model's device once, here.
    update_rule : str or callable
        A name in ``anynet.optim.UPDATE_RULES`` or a function ``rule(w, dw, config)``
        (called once per parameter, eagerly).
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
        Seeds minibatch order, accuracy subsamples and dropout masks (from
        the random state each step carries: ``Backend.uniform``); one is
        drawn (and saved in checkpoints) when not given.
    callback : callable, optional
        Called as ``callback(solver, event)`` after each iteration
        (``event == "iteration"``) and after each epoch's bookkeeping
        (``event == "epoch"``).
    compile : "auto", True or False
        Every step is one pure function of its state (``anynet.training.step``);
        compiled, it runs (with the accuracy checks) as one compiled
        function: ``jax.jit`` on jax, ``torch.compile`` on torch. ``"auto"`` compiles where it measured faster
        (``Backend.compile_pays``); True raises ``ValueError`` where the
        backend, the model or the update rule cannot be compiled (a rule of
        your own, say). A run compiles once per model and batch shape. On
        jax the compiled step reuses the buffers of the parameters it is
        given: an array taken from ``model.params`` before a step is deleted
        by it (copy it to keep it).

    augment : None, True or dict
        Random crops and flips of the training images inside each step
        (``anynet.nn.augment``), each image its own: True is ``{"pad": 4,
        "flip": True}``, torchvision's ``RandomCrop(32, padding=4)`` and
        ``RandomHorizontalFlip()``.
    lr_schedule : None, "linear" or "cosine"
        Scale every learning rate at each step, from 1 down to 0 at the last
        iteration, on top of ``lr_decay``'s per-epoch decay.
    warmup_iterations : int
        Raise the learning rates linearly from 1/warmup_iterations to 1 over
        the first steps (with or without ``lr_schedule``).
    flip_test : bool
        Measure accuracy on the average of each image's scores and its
        mirror image's.
    translate_test : bool
        Measure accuracy on the average of each image's scores and those of
        it shifted one pixel down-right and up-left (weights 1/2, 1/4, 1/4;
        images (N, C, H, W) only), as airbench's test-time augmentation.
    keep : "best" or "last"
        The parameters the model ends training with: those of the best
        validation check, as the course's Solver does, or the last step's. A
        schedule that anneals the learning rate to zero ends with the trained
        parameters, where a small validation split picks among epochs that it
        cannot tell apart.

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
    optim_configs : mapping
        One update-rule config per parameter, in the course's form: a view
        that reads and writes the optimizer's state (``anynet.training.configs``).
    compiled : bool
        Whether steps run compiled (see ``compile``).
    compile_seconds : float
        Wall time spent compiling (the first calls of each compiled function), apart from training.
    """

    def __init__(self, model, data, **kwargs):
        opts = options.checked(kwargs)
        for attr in ("params", "loss", "xp", "device"):
            if not hasattr(model, attr):
                raise TypeError(f"model must have a {attr!r} attribute; got {type(model).__name__}")
        self.model = model
        self.backend = options.backend_of(model)
        self.update_rule = resolve_rule(opts["update_rule"])
        self.optim_config = dict(opts["optim_config"] or {})
        for name in options.KEPT:
            setattr(self, name, opts[name])
        self.metadata = {}
        self.compiled = self._wants_compile(opts["compile"])
        self.compile_seconds = 0.0
        # Decoupled weight decay, like the course's reg, applies to the weights only (not to biases, gammas or
        # betas) where the model says which parameters are weights.
        weights = getattr(model, "weight_names", None) if is_builtin(self.update_rule) else None
        no_decay = {} if weights is None else {p: {"weight_decay": 0.0} for p in model.params if p not in weights}
        # A compiled step takes the learning rates and step counts as 0-d arrays (numbers would be compiled in);
        # an eager one as Python numbers (an operation on a 0-d array costs a library call, on a GPU a launch).
        self.optimizer = Optimizer(self.update_rule, self.optim_config, no_decay, backend=self.backend,
                                   scalars="arrays" if self.compiled else "python")
        self.X_train, self.y_train, self.X_val, self.y_val = move_data(model, self.backend, data)
        N = self.X_train.shape[0]
        if self.batch_size > N:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than the training set ({N} images)")
        self.iterations_per_epoch = max(N // self.batch_size, 1)
        if self.num_iterations is None:
            self.num_iterations = self.num_epochs * self.iterations_per_epoch
        self._reset()

    def _wants_compile(self, compile):
        """Whether to compile the step: ``compile`` checked against what the backend, model and rule allow."""
        if compile not in ("auto", True, False):
            raise ValueError(f'compile must be "auto", True or False; got {compile!r}')
        why = None
        if not self.backend.can_compile:
            why = f"the {self.backend} backend runs steps eagerly"
        elif not hasattr(self.model, "spec"):
            why = f"{type(self.model).__name__} has no pure spec() (only the course's loss)"
        elif not is_builtin(self.update_rule):
            why = "only the update rules of anynet.optim are compiled"
        if compile is True and why is not None:
            raise ValueError(f"compile=True cannot be honoured: {why}")
        if why is not None or compile is False:
            return False
        return compile is True or self.backend.compile_pays()

    def _reset(self):
        """Set up the bookkeeping of a fresh run."""
        self._written = {}  # the parameters the last step wrote into the model
        self._batch = None
        self._last = None  # (statics, compiled functions) of the last step
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
        try:
            self._optim_state = self.optimizer.init(self._params())
        except (TypeError, ValueError) as exc:
            name = getattr(self.update_rule, "__name__", repr(self.update_rule))
            raise type(exc)(f"optim_config of update rule {name!r}: {exc}") from None
        self._drawn = None  # (seed, epoch) of the minibatch order and random state in hand
        self._rng_state = None
        self._count = None  # the step count the learning-rate schedule reads, on the device

    # The optimizer's state, in the course's form.

    @property
    def optim_configs(self):
        """Dict of one update-rule config per parameter: hyperparameters and state (velocity, Adam's m, v)."""
        return ConfigsView(self)

    @optim_configs.setter
    def optim_configs(self, configs):
        self._optim_state = self.optimizer.init_from_configs({p: dict(c) for p, c in configs.items()},
                                                             self._params())

    # One step.

    def _params(self):
        """The model's parameters on its device, in its dtype (arrays assigned by hand are moved there).

        The arrays the last step wrote into the model are taken as they are (an identity check each): asking
        the library where an array lives costs microseconds of Python per parameter at every step.
        """
        to_device, dtype = self.backend.to_device, getattr(self.model, "_dtype", None)
        written = self._written
        return {name: w if written.get(name) is w else to_device(w, dtype) for name, w in self.model.params.items()}

    def _statics(self):
        """The step's constants as they are now: the model's spec, the optimizer's plan, the schedule."""
        spec = self.model.spec() if hasattr(self.model, "spec") else CourseModel(self.model)
        schedule = None
        if self.lr_schedule is not None or self.warmup_iterations:
            schedule = (self.lr_schedule or "constant", self.warmup_iterations, self.num_iterations)
        return Statics(spec, self.optimizer.plan, self.backend, self.optimizer.single_rate(), self.augment, schedule,
                       self.flip_test, self.translate_test, backends.fast_paths(),
                       self.batch_size if self.compiled else None)

    def _functions(self, statics):
        """``(step, count)`` of ``statics``: compiled (once per model, statics and shapes) or as they are."""
        if not self.compiled:
            return (lambda *args: train_step(statics, *args)), (lambda *args: correct_count(statics, *args))
        if self._last is not None and self._last[0] == statics:  # the common case: nothing changed since
            return self._last[1]
        shapes = (tuple((p, tuple(w.shape), w.dtype) for p, w in self.model.params.items()),
                  tuple(self.X_train.shape), self.batch_size)
        functions = compiled.functions(self.model, statics, shapes)
        self._last = (statics, functions)
        return functions

    def _timed(self, fn, *args):
        """``fn(*args)``; the time of a call that compiled counts as compile time, apart from training."""
        if not self.compiled:
            return fn(*args)
        start = time.perf_counter()  # before the count: the first asks loads the compiler (torch._dynamo)
        count = self.backend.compile_count()
        out = fn(*args)
        if self.backend.compile_count() != count:
            self.backend.synchronize()  # once per compilation, never in the steady loop
            self.compile_seconds += time.perf_counter() - start
        return out

    def _step(self):
        """One minibatch update; never waits on the device."""
        k = self.t % self.iterations_per_epoch
        model = self.model
        bn_state = model.bn_state() if hasattr(model, "bn_state") else []
        state = {"params": self._params(), "optim": self._optim_state, "bn": bn_state, "rng": self._rng_state}
        statics = self._statics()
        if statics.schedule is not None:
            if self._count is None:  # the step count on the device, carried from here on (never read back)
                self._count = self.backend.xp.asarray(float(self.t), device=self.backend.device)
            state["t"] = self._count
        if self.compiled:  # the step picks its batch itself, at the position it carries (Statics.batch_size)
            if self._batch is None or self._batch[1] != k:  # the batch's position on the device, carried on
                self._batch = (self.backend.xp.asarray(k, device=self.backend.device), k)
            state["batch"] = self._batch[0]
            idx, y = self._order, self.y_train
        else:  # a slice of the ordered labels is a view: no launch on a GPU
            batch = slice(k * self.batch_size, (k + 1) * self.batch_size)
            idx, y = self._order[batch], self._y_order[batch]
        step = self._functions(statics)[0]
        state, loss = self._timed(step, state, self.X_train, y, idx)
        model.params.update(state["params"])
        self._written = state["params"]
        if bn_state:
            model.set_bn_state(state["bn"])
        self._optim_state, self._rng_state = state["optim"], state["rng"]
        self._count = state.get("t")
        self._batch = (state["batch"], k + 1) if self.compiled else None
        self.last_loss = loss
        self._pending_losses.append(loss)

    def _start_epoch(self, epoch):
        """Draw this epoch's minibatch order and random state from (seed, epoch)."""
        self._order = Generator((self.seed, epoch), self.backend).permutation(self.X_train.shape[0])
        if not self.compiled:
            # The labels are small: put them in this epoch's order once, so that an eager step slices them (a
            # view) instead of gathering them (a launch on a GPU). The images would need a second copy of the set.
            self._y_order = self.backend.take_rows(self.y_train, self._order)
        self._rng_state = self.backend.rng_state((self.seed, epoch))
        self._drawn = (self.seed, epoch)
        self._batch = None  # (the next step's position in the order on the device, and on the host)

    def _flush_losses(self):
        """Copy pending losses to the host in one transfer; stop on a non-finite one."""
        if not self._pending_losses:
            return
        xp = self.model.xp
        values = backends.to_numpy(xp.stack(self._pending_losses)).tolist()
        start = len(self.loss_history)
        self._pending_losses = []
        for i, value in enumerate(values):
            if not math.isfinite(value):
                last = next((v for v in reversed(self.loss_history) if math.isfinite(v)), None)
                raise NonFiniteLoss(value, start + i + 1, last, self._where_saved())
            self.loss_history.append(value)

    def _where_saved(self):
        """Say where the best parameters and the last checkpoint (written before the fault) are."""
        where = f"The best parameters so far (val acc {self.best_val_acc:g}) are in solver.best_params"
        path = None if self.checkpoint_name is None else f"{self.checkpoint_name}.npz"
        if path is not None and os.path.exists(path):
            return f"{where}; the last checkpoint, {path}, is intact (resume from it, or load_model it)."
        return where + "."

    @property
    def num_epochs_total(self):
        """Number of epochs this run spans (the last may be partial)."""
        return math.ceil(self.num_iterations / self.iterations_per_epoch)

    # The loop.

    def train(self):
        """Run the optimization; at the end the model holds the best parameters (or the last, with ``keep``)."""
        try:
            while self.t < self.num_iterations:
                if self._drawn != (self.seed, self.epoch):
                    # At each epoch's start, and when resuming from a checkpoint written inside an epoch
                    # (the order is the epoch's again; the random state starts the epoch over).
                    self._start_epoch(self.epoch)
                first = self.t == 0
                self._step()
                self.t += 1
                self._after_step(first)
        finally:
            self._flush_pending_quietly()
        self._keep_final()

    def _after_step(self, first):
        """The books after a step: printing, the decay and accuracy at epoch ends, checkpoints, the callback."""
        if self.verbose and (self.t - 1) % self.print_every == 0:
            self._flush_losses()
            print(f"(Iteration {self.t} / {self.num_iterations}) loss: {self.loss_history[-1]:f}")
        epoch_end = self.t % self.iterations_per_epoch == 0
        if epoch_end:
            self.epoch += 1
            if self.lr_decay != 1.0:
                self._optim_state = self.optimizer.scale_rates(self._optim_state, self.lr_decay)
        if first or epoch_end or self.t == self.num_iterations:
            self._flush_losses()
            self._record_accuracy()
        if epoch_end and self.checkpoint_name is not None:
            self.save_checkpoint(f"{self.checkpoint_name}.npz")
        if self.callback is not None:
            self.callback(self, "iteration")
            if epoch_end:
                self.callback(self, "epoch")

    def _flush_pending_quietly(self):
        """Keep finite losses of an interrupted run without raising a second error."""
        try:
            self._flush_losses()
        except FloatingPointError:
            pass

    def _keep_final(self):
        """Leave the model with the parameters ``keep`` names at the end of a run (the last step's are there)."""
        if self.keep == "best":
            self._restore_best()

    def _restore_best(self):
        """Put the best parameters (and their running statistics) into the model."""
        if self.best_params:
            # Copies: a compiled step may reuse the buffers of the parameters it is given (jax donates them),
            # and best_params must outlive a train() called again.
            xp = self.model.xp
            self.model.params = {k: xp.asarray(v, copy=True) for k, v in self.best_params.items()}
            for bn, stats in zip(getattr(self.model, "bn_params", []), self.best_bn_stats, strict=False):
                bn.update({k: xp.asarray(v, copy=True) for k, v in stats.items()})

    def save_checkpoint(self, path):
        """Write the whole training state to ``path`` (.npz, atomically)."""
        self._flush_losses()  # written inside an epoch, the checkpoint still holds every loss so far
        save_solver(self, path)

    def load_checkpoint(self, path):
        """Restore the training state saved by ``save_checkpoint``; ``train`` then continues."""
        restore_solver(self, path)
