"""The optimizer: an update rule and its state over a model's parameters, kept the way optax keeps it.

``init(params) -> state`` makes the state once; ``update(state, params,
grads) -> (params, state)`` is a pure function of its arguments, which the
training step calls (and compiles). The state is arrays only: per group of
parameters, the rule's state arrays, its step count and its learning rate
(as a 0-d array, so that a decayed rate changes no compiled constant).
Everything else the rule takes (momentum, betas, ...) is static, in the
``Plan`` that ``init`` chooses once:

- which parameters share a rule call, and how (``anynet.training.layouts``):
  one call each; one call on their concatenation (a GPU); or a large one in
  row blocks on CPU threads (NumPy). The backend says which pays
  (``Backend.update_layout``); the numbers are the same every way.
- hyperparameters may differ between parameters (a learning rate or weight
  decay per parameter group): only parameters with equal ones share a call.

The course's per-parameter config dicts (``Solver.optim_configs``,
checkpoints) are a view of this state: ``configs`` reads it in that form and
``init_from_configs`` makes it from that form. Nothing else converts.

An update rule of your own (any ``rule(w, dw, config)``) is called once per
parameter, its state the course's config dicts themselves: it runs eagerly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backends import namespace
from ..nn import optim
from . import layouts

(COUNTER,) = optim.COUNTERS  # the step count, beside the state arrays shaped like the parameter


@dataclass(frozen=True)
class Group:
    """Parameters updated by one call of the rule, and how.

    ``layout`` is ``"each"`` (one parameter), ``"flat"`` (several, on their
    concatenation; ``shapes`` and ``dtype`` are theirs), ``"blocks"`` (one, in the row
    ranges ``rows`` on threads) or ``"course"`` (one, a rule of your own with
    a config dict as its state).
    """

    names: tuple[str, ...]
    layout: str
    hyper: tuple[tuple[str, Any], ...] = ()
    rows: tuple[tuple[int, int], ...] | None = None
    shapes: tuple[tuple[int, ...], ...] = ()
    dtype: Any = None


@dataclass(frozen=True)
class Plan:
    """The static part of an optimizer's state: its rule, groups and thread map (hashable: a compile key).

    ``scalars`` says how the state holds each group's learning rate and step count: ``"arrays"`` (0-d arrays
    of the group's dtype, which a compiled step takes as inputs) or ``"python"`` (numbers, for a backend that
    never compiles: each operation on a 0-d array would cost a library call, on a GPU a launch).
    """

    rule: Any
    groups: tuple[Group, ...]
    map: Any = None
    mutable: bool = True
    scalars: str = "arrays"

    def group_of(self, name):
        """``(index, group)`` of the group that updates parameter ``name``."""
        for i, group in enumerate(self.groups):
            if name in group.names:
                return i, group
        raise KeyError(name)


def resolve_rule(update_rule):
    """``update_rule`` (a name in ``anynet.nn.optim.UPDATE_RULES`` or a function) as a function."""
    if callable(update_rule):
        return update_rule
    if update_rule not in optim.UPDATE_RULES:
        raise ValueError(
            f"update_rule must be a callable or one of {', '.join(optim.UPDATE_RULES)}; got {update_rule!r}"
        )
    return optim.UPDATE_RULES[update_rule]


def is_builtin(rule) -> bool:
    """Whether ``rule`` is one of ``anynet.nn.optim``'s rules (whose state this module lays out itself)."""
    return optim.UPDATE_RULES.get(getattr(rule, "__name__", None)) is rule


class Optimizer:
    """An update rule with its hyperparameters, laid out over a model's parameters by ``init``.

    Parameters
    ----------
    rule : str or callable
        A name in ``anynet.nn.optim.UPDATE_RULES`` or ``rule(w, dw, config) -> (next_w, config)``.
    config : dict, optional
        The hyperparameters of every parameter.
    param_configs : dict, optional
        Parameter name -> hyperparameters that replace ``config``'s for it.
    backend : anynet.backends.Backend, optional
        Where the parameters live: it chooses the layout (``Backend.update_layout``).
    scalars : {None, "arrays", "python"}
        How the state holds learning rates and step counts (``Plan.scalars``); None: arrays where the backend
        can compile, Python numbers elsewhere.

    Attributes
    ----------
    plan : Plan
        The layout ``init`` chose; None before.
    rates : dict
        Parameter name -> its exact learning rate (the state holds each as an
        array of the parameter's dtype, which may round it; decays compound
        on these).
    """

    def __init__(self, rule, config=None, param_configs=None, backend=None, scalars=None):
        if scalars not in (None, "arrays", "python"):
            raise ValueError(f'scalars must be None, "arrays" or "python"; got {scalars!r}')
        self.scalars = scalars
        self.rule = resolve_rule(rule)
        self.config = dict(config or {})
        self.param_configs = {name: dict(c) for name, c in (param_configs or {}).items()}
        self.backend = backend
        self.plan = None
        self.rates = {}

    def init(self, params):
        """The state of a fresh start for the dict ``params``: zero state, the configured hyperparameters."""
        return self.init_from_configs({p: {**self.config, **self.param_configs.get(p, {})} for p in params}, params)

    def init_from_configs(self, configs, params):
        """The state that per-parameter ``configs`` in the course's form describe (choosing the plan anew)."""
        if set(configs) != set(params):
            raise ValueError(f"optimizer configs name parameters {sorted(configs)}; the model has {sorted(params)}")
        if not is_builtin(self.rule):
            self.plan = Plan(self.rule, tuple(Group((p,), "course") for p in params))
            self.rates = {p: c["learning_rate"] for p, c in configs.items() if "learning_rate" in c}
            return [dict(configs[p]) for p in params]
        entries = {p: _entry(self.rule, configs[p], params[p]) for p in params}
        self.rates = {p: entry["rate"] for p, entry in entries.items()}
        layout, threads = self._layout(), self.backend.threads() if self.backend is not None else 1
        scalars = self.scalars or ("python" if self.backend is not None and not self.backend.can_compile
                                   else "arrays")
        self.plan = Plan(self.rule, tuple(_groups(layout, threads, entries, params)), *self._threads(), scalars)
        return [self._group_state(group, entries, params) for group in self.plan.groups]

    def _layout(self):
        """``"each"``, ``"flat"`` or ``"blocks"``: the backend's choice, for rules of several passes."""
        if self.rule is optim.sgd or self.backend is None:  # plain SGD's two passes gain nothing from either
            return "each"
        return self.backend.update_layout()

    def _threads(self):
        """The plan's thread map and whether arrays can be written into (for blocks)."""
        if self._layout() != "blocks":
            return None, True
        return self.backend.block_map(), self.backend.mutable

    def _group_state(self, group, entries, params):
        """The arrays of one group: its learning rate, step count and state, in the group's layout."""
        first = entries[group.names[0]]
        w = params[group.names[0]]
        xp = namespace(w)
        arrays = self.plan.scalars == "arrays"
        rate = first["rate"]
        state = {"learning_rate": xp.asarray(rate, dtype=w.dtype, device=w.device) if arrays else rate}
        for key in optim.STATE[self.rule.__name__]:
            if key == COUNTER:
                t = first["t"]
                state[key] = xp.asarray(float(t), dtype=w.dtype, device=w.device) if arrays else t
            elif group.layout == "flat":
                state[key] = layouts.flatten([entries[p]["state"][key] for p in group.names])
            elif group.layout == "blocks":
                state[key] = [first["state"][key][start:stop, ...] for start, stop in group.rows]
            else:
                state[key] = first["state"][key]
        return state

    def update(self, state, params, grads):
        """``(params, state)`` after one update of the dict ``params`` by ``grads`` (see ``update``)."""
        return update(self.plan, state, params, grads)

    # Host-side: the learning rates, and the course's view of the state.

    def single_rate(self):
        """Whether the rule is plain SGD with one learning rate for every parameter and no weight decay.

        Then a step can backpropagate ``learning_rate * loss`` and subtract the
        gradients to the parameters (``anynet.training.step``), the rate
        being any group's (``state[0]["learning_rate"]``).
        """
        return (self.rule is optim.sgd and len(set(self.rates.values())) == 1
                and all(dict(group.hyper).get("weight_decay", 0) == 0 for group in self.plan.groups))

    def scale_rates(self, state, factor):
        """``state`` with every learning rate multiplied by ``factor`` (a decay), the exact rates on the host too."""
        self.rates = {p: rate * factor for p, rate in self.rates.items()}
        if self.plan.groups[0].layout == "course":
            return [{**c, "learning_rate": c["learning_rate"] * factor} if "learning_rate" in c else c for c in state]
        return [self._with_rate(group_state, self.rates[group.names[0]])
                for group, group_state in zip(self.plan.groups, state, strict=True)]

    @staticmethod
    def _with_rate(group_state, rate):
        lr = group_state["learning_rate"]
        if not hasattr(lr, "dtype"):  # a Python number (Plan.scalars)
            return {**group_state, "learning_rate": rate}
        xp = namespace(lr)
        return {**group_state, "learning_rate": xp.asarray(rate, dtype=lr.dtype, device=lr.device)}

    def configs(self, state):
        """Parameter name -> its config in the course's form (hyperparameters, state arrays, step count).

        Reads the step count on the host: for checkpoints and ``Solver.optim_configs``, never the hot loop.
        """
        out = {}
        for group, group_state in zip(self.plan.groups, state, strict=True):
            for p in group.names:
                out[p] = self.config_of(p, group, group_state)
        return out

    def config_of(self, p, group, group_state):
        """Parameter ``p``'s config in the course's form."""
        if group.layout == "course":
            return group_state
        config = {**dict(group.hyper), "learning_rate": self.rates[p]}
        for key, value in group_state.items():
            if key == COUNTER:
                config[key] = int(float(value))
            elif key != "learning_rate":
                config[key] = self._member(group, value, p)
        return config

    def _member(self, group, value, p):
        """Parameter ``p``'s part of the state array (or blocks) ``value`` of ``group``."""
        if group.layout == "blocks":
            return namespace(*value).concat(value, axis=0)
        if group.layout == "flat":
            i = group.names.index(p)
            start, stop, shape = layouts.spans(group.shapes)[i]
            return namespace(value).reshape(value[start:stop], shape)
        return value

    def set_rate(self, state, p, rate):
        """``state`` with parameter ``p``'s learning rate set, where ``p`` has a group of its own; else None."""
        i, group = self.plan.group_of(p)
        if len(group.names) > 1:
            return None
        self.rates[p] = float(rate)
        new = {**state[i], "learning_rate": self.rates[p]} if group.layout == "course" else self._with_rate(
            state[i], self.rates[p])
        return [*state[:i], new, *state[i + 1:]]


def update(plan, state, params, grads, rate_factor=None):
    """``(params, state)`` after one update of the dict ``params`` by ``grads``: a pure function of its arguments.

    ``rate_factor`` (a 0-d array, or None) multiplies every learning rate for
    this update (a per-step schedule); the state keeps the rates unscaled.
    The arguments are never changed; the new parameters and state are fresh
    arrays (or views of fresh ones).
    """
    next_params, next_state = dict(params), []
    for group, group_state in zip(plan.groups, state, strict=True):
        next_state.append(_update_group(plan, group, group_state, params, grads, next_params, rate_factor))
    return next_params, next_state


def scheduled_rate(rate, rate_factor):
    """A group's learning rate ``rate`` (a 0-d array or a number: ``Plan.scalars``) times the schedule's
    ``rate_factor`` (a 0-d array, or None: no schedule)."""
    if rate_factor is None:
        return rate
    return rate * (namespace(rate).astype(rate_factor, rate.dtype) if hasattr(rate, "dtype") else rate_factor)


def _update_group(plan, group, state, params, grads, out, rate_factor=None):
    """Group ``group``'s parameters updated into ``out``; returns the group's new state."""
    rule = plan.rule
    if group.layout == "course":
        (p,) = group.names
        out[p], config = rule(params[p], grads[p], dict(state))
        return config
    config = {**dict(group.hyper), "learning_rate": scheduled_rate(state["learning_rate"], rate_factor)}
    if COUNTER in state:
        config[COUNTER] = state[COUNTER]
    keys = [k for k in state if k not in config]
    if group.layout == "blocks":
        (p,) = group.names
        blocks = [{**config, **{k: state[k][i] for k in keys}} for i in range(len(group.rows))]
        out[p], blocks = layouts.update_in_blocks(rule, params[p], grads[p], blocks, group.rows, plan.map,
                                                  plan.mutable)
        return _kept(state, {**blocks[0], **{k: [b[k] for b in blocks] for k in keys}})
    ws = [params[p] for p in group.names]
    if group.layout == "flat" and all(w.dtype == group.dtype for w in ws):
        w, config = rule(layouts.flatten(ws), layouts.flatten([grads[p] for p in group.names]),
                         {**config, **{k: state[k] for k in keys}})
        out.update(zip(group.names, layouts.unflatten(w, layouts.spans([w.shape for w in ws])), strict=True))
        return _kept(state, config)
    if group.layout == "flat":  # a parameter that changed dtype: one call each, on views of the flat state
        return _update_members(rule, group, state, config, keys, params, grads, out)
    (p,) = group.names
    out[p], config = rule(params[p], grads[p], {**config, **{k: state[k] for k in keys}})
    return _kept(state, config)


def _kept(state, config):
    """The group's new state: the rule's new arrays and step count; its learning rate, unscaled, as it was."""
    return {k: state[k] if k == "learning_rate" else config[k] for k in state}


def _update_members(rule, group, state, config, keys, params, grads, out):
    """A flat group updated one parameter at a time (its parameters no longer share a dtype)."""
    layout = layouts.spans([params[p].shape for p in group.names])
    views = {k: layouts.unflatten(state[k], layout) for k in keys}
    new = {k: [] for k in keys}
    for i, p in enumerate(group.names):
        out[p], member = rule(params[p], grads[p], {**config, **{k: views[k][i] for k in keys}})
        for k in keys:
            new[k].append(member[k])
    return _kept(state, {**member, **{k: layouts.flatten(new[k]) for k in keys}})


def _entry(rule, config, w):
    """One parameter's config resolved: hyperparameters with the rule's defaults, rate, step count, state arrays.

    The rule checks the hyperparameters (a ``ValueError`` naming the key) on a
    one-element array, so that a bad value fails here, before any step.
    """
    keys = optim.STATE[rule.__name__]
    xp = namespace(w)
    probe = xp.zeros(1, dtype=w.dtype, device=w.device)
    resolved = rule(probe, probe, {k: v for k, v in config.items() if k not in keys})[1]
    hyper = tuple(sorted((k, v) for k, v in resolved.items() if k not in keys and k != "learning_rate"))
    state = {}
    for key in keys:
        value = config.get(key)
        if key != COUNTER:
            state[key] = xp.zeros_like(w) if value is None else xp.asarray(value, dtype=w.dtype, device=w.device)
    return {"hyper": hyper, "rate": float(resolved["learning_rate"]), "t": int(config.get(COUNTER) or 0),
            "state": state, "dtype": w.dtype}


def _groups(layout, threads, entries, params):
    """The plan's groups: one per parameter (in row blocks where ``layout`` is blocks and the parameter is
    large), or (flat) one per set of parameters whose dtype, hyperparameters, rate and step count agree."""
    if layout != "flat":
        for p, entry in entries.items():
            rows = layouts.row_blocks(tuple(params[p].shape), threads) if layout == "blocks" else None
            yield Group((p,), "blocks" if rows else "each", entry["hyper"], rows)
        return
    together: dict = {}
    for p, entry in entries.items():
        together.setdefault((str(entry["dtype"]), entry["hyper"], entry["rate"], entry["t"]), []).append(p)
    for names in together.values():
        if len(names) == 1:
            yield Group(tuple(names), "each", entries[names[0]]["hyper"])
        else:
            yield Group(tuple(names), "flat", entries[names[0]]["hyper"],
                        shapes=tuple(tuple(params[p].shape) for p in names), dtype=entries[names[0]]["dtype"])
