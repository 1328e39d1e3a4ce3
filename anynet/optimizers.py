"""Optimizers: an update rule of ``anynet.optim`` that owns its state over a model's parameters.

The course's rules stay plain functions, ``rule(w, dw, config) -> (next_w,
config)``; an ``Optimizer`` keeps one config per parameter and applies the
rule at each ``step``. How it applies it is its backend's choice
(``Backend.optimizer``): the generic ``Optimizer`` calls the rule once per
parameter; ``FlatOptimizer`` (GPUs) updates every parameter in one call, on
views of one flat buffer; ``BlockOptimizer`` (NumPy) updates large parameters
in row blocks on threads. The rules are elementwise, so all three give the
same numbers. The Solver sees only ``step`` and ``configs``.
"""

from __future__ import annotations

from . import blocks, flat


class Optimizer:
    """An update rule and one config (hyperparameters and state) per parameter; one rule call per parameter.

    Parameters
    ----------
    rule : callable
        ``rule(w, dw, config) -> (next_w, config)``, as those of ``anynet.optim``.
    config : dict, optional
        The hyperparameters every parameter starts with.

    Attributes
    ----------
    configs : dict
        Parameter name -> its config, in the course's form. Read it, change it,
        or replace it between steps (checkpoints and learning-rate decay do);
        fast paths convert their own layout back and forth on demand.
    """

    def __init__(self, rule, config=None):
        self.rule = rule
        self.config = dict(config or {})
        self._configs: dict = {}

    def reset(self, params):
        """Start every parameter of ``params`` from ``config``, with no state."""
        self.configs = {p: dict(self.config) for p in params}

    @property
    def configs(self):
        self._unmerge()  # the next fast step merges them again, with any change made to them
        return self._configs

    @configs.setter
    def configs(self, configs):
        self._forget()
        self._configs = configs

    def step(self, params, grads):
        """Update the dict ``params`` in place with gradients ``grads``; the new arrays replace the old."""
        configs = self.configs
        for p, w in params.items():
            params[p], configs[p] = self.rule(w, grads[p], configs[p])

    def _unmerge(self):
        """Bring ``_configs`` up to date from a fast path's own layout of the state."""

    def _forget(self):
        """Drop a fast path's layout of the state (``_configs`` was replaced)."""


class FlatOptimizer(Optimizer):
    """All parameters updated in one call of the rule, on views of one flat array (``anynet.flat``).

    On a GPU each array operation costs a launch of fixed host time and a rule
    such as Adam makes about ten per parameter: one call on the concatenation
    launches each operation once. Falls back to one call per parameter when
    the parameters cannot be merged (mixed dtypes or libraries, configs whose
    hyperparameters differ).
    """

    def __init__(self, rule, config=None):
        super().__init__(rule, config)
        self.fuse = True
        self._flat = None  # (spans, flat parameters, their views in params) while fused
        self._flat_config = None  # the merged config while fused; None when _configs is current

    def _unmerge(self):
        if self._flat_config is not None:
            self._configs = flat.unflatten_config(self._flat_config, self._flat[0])
            self._flat_config = None

    def _forget(self):
        self._flat_config = None

    def step(self, params, grads):
        if not (self.fuse and self._update_all(params, grads)):
            super().step(params, grads)

    def _update_all(self, params, grads):
        """Update every parameter in one call of the rule, on one flat array; False if they cannot be merged."""
        if self._flat is None or self._flat[2].keys() != params.keys() or any(
            params[p] is not view for p, view in self._flat[2].items()
        ):
            first = next(iter(params.values()))
            if any(a.dtype != first.dtype or type(a) is not type(first) for a in params.values()):
                self.fuse = False  # hand-made parameters of mixed dtypes or libraries: one call each
                self._unmerge()
                return False
            self._unmerge()  # the new parameters may come in another order: state goes by name
            spans = flat.layout(params)
            w = flat.flatten(params, spans)
        else:
            spans, w, _ = self._flat
        if self._flat_config is None:
            self._flat_config = flat.flatten_configs(self._configs, spans)
            if self._flat_config is None:
                self._flat = None
                return False
        w, self._flat_config = self.rule(w, flat.flatten(grads, spans), self._flat_config)
        views = flat.unflatten(w, spans)
        params.update(views)
        self._flat = (spans, w, views)
        return True


class BlockOptimizer(Optimizer):
    """Large parameters updated in row blocks, one per CPU thread (``anynet.blocks``); the others in one piece.

    Parameters
    ----------
    rule, config
        As ``Optimizer``.
    map : callable
        ``map(f, items) -> list`` running the calls on threads.
    threads : callable
        Returns how many threads to cut each parameter's rows for (asked once a step).
    """

    def __init__(self, rule, config, map, threads):
        super().__init__(rule, config)
        self.map, self.threads = map, threads
        self._blocks = {}  # parameter name -> (row blocks, their configs) while updated in blocks

    def _unmerge(self):
        for p, (_, configs) in self._blocks.items():
            self._configs[p] = blocks.join_configs(configs)
        self._blocks = {}

    def _forget(self):
        self._blocks = {}

    def step(self, params, grads):
        configs, threads = self._configs, self.threads()
        for p, w in params.items():
            rows = None
            if threads > 1 and grads[p].dtype == w.dtype:  # else the rule's result promotes
                rows = blocks.row_blocks(tuple(w.shape), threads)
            if rows is not None:
                params[p] = self._update_in_blocks(p, w, grads[p], rows)
                continue
            if p in self._blocks:  # a parameter replaced by a smaller one
                configs[p] = blocks.join_configs(self._blocks.pop(p)[1])
            params[p], configs[p] = self.rule(w, grads[p], configs[p])

    def _update_in_blocks(self, p, w, dw, rows):
        """The new parameter ``p``, updated in blocks ``rows`` on threads; its state stays in blocks."""
        held = self._blocks.get(p)
        if held is None or held[0] != rows:
            if held is not None:  # the parameter changed shape, or the thread count changed
                self._configs[p] = blocks.join_configs(held[1])
            held = (rows, blocks.split_config(self._configs[p], tuple(w.shape), rows))
        next_w, configs = blocks.update(self.rule, w, dw, held[1], rows, self.map)
        self._blocks[p] = (rows, configs)
        return next_w
