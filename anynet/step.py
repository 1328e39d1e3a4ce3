"""The training step as one pure function of its state, which backends that can compile it do.

``TrainStep`` builds ``step(params, optim_state, bn_state, rng_state, X_train,
y_train, idx) -> (params, optim_state, bn_state, rng_state, loss)``: it
gathers the minibatch ``idx`` from the training set on the device, runs the
model's forward and backward pass and the update rule, and returns the new
state. Nothing in it branches on an array's value, reads an array on the host,
or changes an argument in place, so ``jax.jit`` and ``torch.compile`` trace it
whole, once per model, batch shape and set of constants (``TrainStep.constants``).
The state is kept as arrays only:

- ``optim_state``: per parameter, the rule's state arrays and, as 0-d arrays,
  the learning rate and step count (Python numbers there would be baked into
  the compiled step, and a decayed learning rate would compile it again);
- ``bn_state``: per batch normalization layer, (running mean, running variance);
- ``rng_state``: the backend's counter- or key-based generator (``Backend.uniform``).

Plain SGD with one learning rate takes a shorter way than the course's rule:
the step backpropagates ``-learning_rate * loss`` (``loss_and_grads(...,
scale=)``), whose gradients are the updates themselves, so each weight's new
value is ``w + x.T @ dout_scaled``, which a compiler makes one GEMM that
accumulates into ``w``. The result differs from ``sgd(w, dw)`` by rounding only.
"""

from __future__ import annotations

from . import optim


class _Draws:
    """Dropout's generator inside a step: ``uniform`` draws from carried state and advances it."""

    def __init__(self, backend, state):
        self.backend, self.state = backend, state

    def uniform(self, shape, dtype="float32"):
        values, self.state = self.backend.uniform(self.state, tuple(shape), self.backend.dtype(dtype))
        return values


class TrainStep:
    """The pure step of one model and update rule, with the conversions from and to the Solver's state.

    Parameters
    ----------
    model : FullyConnectedNet or TwoLayerNet
        Has ``backend``, ``loss_and_grads``, ``scores``, ``bn_params`` and ``dropout_param``.
    rule_name : str
        A name in ``anynet.optim.UPDATE_RULES``.
    compile : bool
        Compile the step (and the accuracy count) with the backend's compiler.
    """

    def __init__(self, model, rule_name, compile):
        self.model = model
        self.backend = model.backend
        self.rule = optim.UPDATE_RULES[rule_name]
        self.state_keys = optim.STATE[rule_name]
        self.compiled = compile
        self.hyper, self.learning_rates = {}, {}
        self.scaled = False  # see _step; decided by split_configs
        self._compiled = {}  # constants of the step -> (step, count) compiled with them

    def constants(self):
        """What a compiled step takes as constants: the model's ``reg``, dropout and batch normalization
        hyperparameters, and the rule's. A change to any of them (``model.reg = ...``) compiles anew
        instead of running a step made with the old value."""
        model = self.model
        dropout = tuple(sorted((k, v) for k, v in model.dropout_param.items() if k not in ("mode", "rng", "seed")))
        bn = tuple(tuple((k, bn.get(k)) for k in ("eps", "momentum")) for bn in model.bn_params)
        hyper = tuple((p, tuple(sorted(h.items()))) for p, h in self.hyper.items())
        return float(model.reg), dropout, bn, hyper, self.scaled

    def _functions(self):
        """The step and the accuracy count for the constants of now: compiled once for each set of them."""
        if not self.compiled:
            return self._step, self._count
        key = self.constants()
        functions = self._compiled.get(key)
        if functions is None:
            # Parameters and optimizer state are replaced by the step's results: their buffers may be reused.
            functions = self._compiled[key] = (self.backend.compile(self._step, donate=(0, 1)),
                                               self.backend.compile(self._count))
        return functions

    def step(self, params, optim_state, bn_state, rng_state, X_train, y_train, idx):
        """``(params, optim_state, bn_state, rng_state, loss)`` after one step on the minibatch ``idx``."""
        return self._functions()[0](params, optim_state, bn_state, rng_state, X_train, y_train, idx)

    def count(self, params, bn_state, X, y):
        """How many of ``X`` the model labels as ``y``: a 0-d integer array on the device."""
        return self._functions()[1](params, bn_state, X, y)

    @classmethod
    def of(cls, model, rule_name):
        """The compiled step of ``model`` and ``rule_name``, kept on the model: later Solvers reuse its compilations."""
        steps = model.__dict__.setdefault("_train_steps", {})
        step = steps.get(rule_name)
        if step is None:
            step = steps[rule_name] = cls(model, rule_name, compile=True)
        return step

    def _step(self, params, optim_state, bn_state, rng_state, X_train, y_train, idx):
        backend, model = self.backend, self.model
        X = backend.take_rows(X_train, idx)
        y = backend.take_rows(y_train, idx)
        bn_params = self._bn_params(bn_state, "train")
        draws = _Draws(backend, rng_state)
        dropout_param = {**model.dropout_param, "rng": draws} if model.dropout_param else None
        if self.scaled:
            # Plain SGD with one learning rate: the gradients of -learning_rate * loss are the steps themselves,
            # and a weight's step is the product its affine backward pass makes, which the compiler adds to the
            # weight as the product is made (a GEMM that accumulates, instead of a GEMM and a pass reading it).
            learning_rate = next(iter(optim_state.values()))["learning_rate"]
            loss, steps = model.loss_and_grads(params, X, y, bn_params, dropout_param, scale=-learning_rate)
            next_params = {p: w + steps[p] for p, w in params.items()}
            next_state = {p: dict(state) for p, state in optim_state.items()}
        else:
            loss, grads = model.loss_and_grads(params, X, y, bn_params, dropout_param)
            next_params, next_state = {}, {}
            for p, w in params.items():
                next_params[p], config = self.rule(w, grads[p], {**self.hyper[p], **optim_state[p]})
                next_state[p] = {k: config[k] for k in optim_state[p]}
        next_bn = [(bn["running_mean"], bn["running_var"]) for bn in bn_params]
        return next_params, next_state, next_bn, draws.state, loss

    def _count(self, params, bn_state, X, y):
        xp = self.backend.xp
        scores = self.model.scores(params, X, self._bn_params(bn_state, "test"))
        # Counted in y's integer type: JAX's 32-bit mode has no int64.
        return xp.sum(xp.astype(xp.argmax(scores, axis=1) == y, y.dtype))

    def _bn_params(self, bn_state, mode):
        """Fresh ``bn_param`` dicts of the model's layers holding ``bn_state``: the layers write into these."""
        return [
            {**{k: bn[k] for k in ("eps", "momentum") if k in bn}, "mode": mode, "running_mean": mean,
             "running_var": var}
            for bn, (mean, var) in zip(self.model.bn_params, bn_state, strict=True)
        ]

    # Conversions between the Solver's per-parameter configs (the course's form) and the step's state.

    def split_configs(self, configs, params):
        """The step's ``optim_state`` of per-parameter ``configs``; their constants go to ``hyper``.

        The rule's missing state starts as zeros, so the step's state has
        the same arrays from the first step on (no second compilation).
        """
        backend, xp = self.backend, self.backend.xp
        self.hyper, self.learning_rates, state = {}, {}, {}
        for p, config in configs.items():
            w = params[p]
            hyper = {k: v for k, v in config.items() if k not in self.state_keys and k != "learning_rate"}
            # The step reads the learning rate as an array (a number would be compiled in); the host keeps the
            # exact number, which the array's dtype may round, for join_configs and the decays to come.
            rate = self.learning_rates[p] = float(config.get("learning_rate", 1e-2))
            arrays = {"learning_rate": xp.asarray(rate, dtype=w.dtype, device=backend.device)}
            for key in self.state_keys:
                value = config.get(key)
                if key in optim.COUNTERS:
                    value = xp.asarray(float(value or 0), dtype=w.dtype, device=backend.device)
                elif value is None:
                    value = xp.zeros_like(w)
                arrays[key] = value
            self.hyper[p], state[p] = hyper, arrays
        self.scaled = self.rule is optim.sgd and len(set(self.learning_rates.values())) == 1
        return state

    def join_configs(self, optim_state):
        """Per-parameter configs of the step's state, in the course's form (reads the step count on the host)."""
        configs = {}
        for p, arrays in optim_state.items():
            config = dict(self.hyper[p])
            for key, value in arrays.items():
                if key in optim.COUNTERS:
                    config[key] = int(float(value))
                elif key == "learning_rate":
                    config[key] = self.learning_rates[p]
                else:
                    config[key] = value
            configs[p] = config
        return configs

    def bn_state(self):
        """The model's running statistics as the step's ``bn_state`` (created as the layer would on first use)."""
        xp, model = self.backend.xp, self.model
        state = []
        for bn, p in zip(model.bn_params, _bn_widths(model), strict=True):
            w = model.params[p]
            mean = bn.get("running_mean")
            var = bn.get("running_var")
            if mean is None:
                mean = xp.zeros(w.shape, dtype=w.dtype, device=self.backend.device)
            if var is None:
                var = xp.ones(w.shape, dtype=w.dtype, device=self.backend.device)
            state.append((mean, var))
        return state


def _bn_widths(model):
    """The parameter whose shape each batch normalization layer's statistics take (its beta)."""
    return [f"beta{i}" for i in range(1, len(model.bn_params) + 1)]

