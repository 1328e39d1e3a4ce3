"""Update rules with the signature ``rule(w, dw, config=None) -> (next_w, config)``.

``config`` holds the hyperparameters (missing ones take the defaults below)
and the rule's state, created lazily with ``zeros_like`` on the parameter's
device. As the course's rules do, each call writes the defaults it used and
the new state into the caller's dict and returns that dict (the course's
notebooks read ``config['velocity']`` after a call). The arrays passed in are
never modified. A training step passes fresh dicts, so nothing compiled
depends on that.

Every rule also takes ``weight_decay`` (0 unless said): decoupled weight
decay (Loshchilov & Hutter), ``w - learning_rate * weight_decay * w`` before
the rule's own step, which a Solver applies to the weights only, beside the
course's L2 ``reg`` in the loss.

Every rule here is elementwise: updating the concatenation of several
parameters (and of their gradients and state) gives exactly the updates of
each. The ``Solver`` relies on it to update all parameters in one call on a GPU.
"""

from __future__ import annotations

import math
from numbers import Real

from ..backends import namespace

__all__ = ["sgd", "sgd_momentum", "nesterov_momentum", "rmsprop", "adam", "adamw", "nesterov_sgd", "UPDATE_RULES"]

# name -> (low, high, low bound included); values must lie within.
_BOUNDS = {
    "learning_rate": (0.0, math.inf, False),
    "momentum": (0.0, 1.0, True),
    "decay_rate": (0.0, 1.0, True),
    "beta1": (0.0, 1.0, True),
    "beta2": (0.0, 1.0, True),
    "epsilon": (0.0, math.inf, False),
    "weight_decay": (0.0, math.inf, True),
}


def _config(config, state=(), **defaults):
    """Return a new config: ``defaults`` updated by ``config``, hyperparameters checked.

    A key that is neither a hyperparameter in ``defaults`` nor a ``state`` name
    is refused: a misspelt ``learning_rate`` would otherwise fall silently back
    to the default.
    """
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None; got {type(config).__name__}")
    defaults = {**defaults, "weight_decay": defaults.get("weight_decay", 0.0)}
    unknown = sorted(set(config) - set(defaults) - set(state), key=str)
    if unknown:
        expected = ", ".join([*defaults, *(f"{name} (state)" for name in state)])
        raise ValueError(f"config has unknown key(s) {', '.join(map(repr, unknown))}; expected some of {expected}")
    config = {**defaults, **config}
    for name in defaults:
        value, bounds = config[name], _BOUNDS.get(name)
        # A 0-d array is a compiled step's learning rate: its value was checked before training, not here.
        if bounds is None or (type(value) is not float and _is_array(value)):
            continue
        low, high, closed = bounds
        # type() first: the abstract Real's isinstance costs a microsecond, at every call of every rule.
        ok = type(value) in (float, int) or (isinstance(value, Real) and not isinstance(value, bool))
        if not ok or not ((low <= value) if closed else (low < value)) or not value < high:
            interval = f"{'[' if closed else '('}{low}, {high})"
            raise ValueError(f"config[{name!r}] must be a number in {interval}; got {value!r}")
    return config


def _done(caller, config):
    """The config to return: the caller's dict with ``config`` written into it, as the course's rules do."""
    if isinstance(caller, dict):
        caller.update(config)
        return caller
    return config


def _decayed(w, config, lr):
    """``w - lr * weight_decay * w`` (a new array), or ``w`` itself without weight decay."""
    (weight_decay,) = _hyper(config, "weight_decay")
    if not _is_array(weight_decay) and weight_decay == 0:
        return w
    return w - (lr * weight_decay) * w


def _state(config, name, w):
    """The state array ``name`` of ``config``, zeros like ``w`` on first use."""
    value = config.get(name)
    return namespace(w).zeros_like(w) if value is None else value


def _hyper(config, *names):
    """The hyperparameters ``names`` as Python floats, which keep the arrays' dtype (a NumPy float64 would not).

    0-d arrays (a compiled step's learning rate) stay arrays: reading them would wait on the device.
    """
    return [value if type(value) is float else value if _is_array(value) else float(value)
            for value in (config[name] for name in names)]


def _is_array(value) -> bool:
    """Whether a config value is an array (has a shape) rather than a Python or NumPy number."""
    return hasattr(value, "shape") and not isinstance(value, Real)


def _sqrt(x):
    """Square root of a Python number or of a 0-d array (a compiled step's step count makes one)."""
    return namespace(x).sqrt(x) if _is_array(x) else math.sqrt(x)


def _add_to(step, w):
    """``w + step``, written into ``step`` (a fresh array of this module) when the dtypes agree."""
    if step.dtype != w.dtype or step.shape != w.shape:
        return w + step
    # In place: saves one allocation and one pass over every parameter at every step.
    step += w
    return step


def _running_mean(old, new, keep, fresh=False):
    """``keep * old + (1 - keep) * new`` as ``old + (1 - keep) * (new - old)``: one new array, no temporaries.

    With ``fresh`` (``new`` is a temporary the caller made) the result is written into ``new``: no new array.
    """
    if fresh and new.dtype == old.dtype and new.shape == old.shape:
        new -= old
        out = new
    else:
        out = new - old
    out *= 1.0 - keep
    out += old
    return out


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: ``w - learning_rate * dw``.

    config: ``learning_rate`` (1e-2).
    """
    caller, config = config, _config(config, learning_rate=1e-2)
    (lr,) = _hyper(config, "learning_rate")
    return _add_to(dw * -lr, _decayed(w, config, lr)), _done(caller, config)


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: ``v = momentum * v - learning_rate * dw; w + v``.

    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity``.
    """
    caller, config = config, _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    lr, mu = _hyper(config, "learning_rate", "momentum")
    v = dw * -lr
    v += mu * _state(config, "velocity", w)
    config["velocity"] = v
    return _decayed(w, config, lr) + v, _done(caller, config)


def nesterov_momentum(w, dw, config=None):
    """Nesterov momentum in the look-ahead-free form of Bengio et al. (2012).

    ``v' = momentum * v - learning_rate * dw``;
    ``w - momentum * v + (1 + momentum) * v'``.
    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity``.
    """
    caller, config = config, _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    lr, mu = _hyper(config, "learning_rate", "momentum")
    g = dw * -lr
    next_v = _state(config, "velocity", w) * mu
    next_v += g
    config["velocity"] = next_v
    # (1 + mu) * next_v - mu * v == mu * next_v - lr * dw, which needs no copy of v.
    step = next_v * mu
    step += g
    return _add_to(step, _decayed(w, config, lr)), _done(caller, config)


def nesterov_sgd(w, dw, config=None):
    """SGD with Nesterov momentum in PyTorch's form (``torch.optim.SGD(nesterov=True)``, no dampening).

    ``v' = momentum * v + dw``; ``w - learning_rate * (dw + momentum * v')``.
    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), ``weight_decay`` (0, decoupled), state ``velocity``.
    """
    caller, config = config, _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    lr, mu = _hyper(config, "learning_rate", "momentum")
    next_v = _state(config, "velocity", w) * mu
    next_v += dw
    config["velocity"] = next_v
    step = next_v * mu
    step += dw
    step *= -lr
    return _add_to(step, _decayed(w, config, lr)), _done(caller, config)


def rmsprop(w, dw, config=None):
    """RMSProp: divide the step by a running root mean square of gradients.

    ``cache = decay_rate * cache + (1 - decay_rate) * dw**2``;
    ``w - learning_rate * dw / (sqrt(cache) + epsilon)``.
    config: ``learning_rate`` (1e-2), ``decay_rate`` (0.99), ``epsilon`` (1e-8), state ``cache``.
    """
    caller, config = config, _config(config, ("cache",), learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8)
    xp = namespace(w, dw)
    lr, rho, eps = _hyper(config, "learning_rate", "decay_rate", "epsilon")
    cache = _running_mean(_state(config, "cache", w), dw * dw, rho, fresh=True)
    config["cache"] = cache
    step = xp.sqrt(cache)
    step += eps
    step = dw / step
    step *= -lr
    return _add_to(step, _decayed(w, config, lr)), _done(caller, config)


def adam(w, dw, config=None):
    """Adam (Kingma & Ba, 2015) with bias correction.

    config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999),
    ``epsilon`` (1e-8), state ``m``, ``v`` and the step count ``t`` (0).
    """
    caller, config = config, _config(config, ("m", "v", "t"), learning_rate=1e-3, beta1=0.9, beta2=0.999,
                                     epsilon=1e-8)
    return _adam(w, dw, caller, config)


def adamw(w, dw, config=None):
    """AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    config: those of ``adam``, and ``weight_decay`` (1e-2).
    """
    caller, config = config, _config(config, ("m", "v", "t"), learning_rate=1e-3, beta1=0.9, beta2=0.999,
                                     epsilon=1e-8, weight_decay=1e-2)
    return _adam(w, dw, caller, config)


def _adam(w, dw, caller, config):
    """Adam's step with ``config`` already completed and checked."""
    xp = namespace(w, dw)
    lr, b1, b2, eps = _hyper(config, "learning_rate", "beta1", "beta2", "epsilon")
    t = config.get("t", 0) + 1
    m = _running_mean(_state(config, "m", w), dw, b1)
    v = _running_mean(_state(config, "v", w), dw * dw, b2, fresh=True)
    config.update(m=m, v=v, t=t)
    # lr * m_hat / (sqrt(v_hat) + eps) with the bias corrections folded into two
    # scalars: lr * sqrt(c2) / c1 * m / (sqrt(v) + eps * sqrt(c2)); no m_hat, v_hat arrays.
    root_c2 = _sqrt(1.0 - b2**t)
    step = xp.sqrt(v)
    step += eps * root_c2
    step = m / step
    step *= -lr * root_c2 / (1.0 - b1**t)
    return _add_to(step, _decayed(w, config, lr)), _done(caller, config)


UPDATE_RULES = {
    rule.__name__: rule for rule in (sgd, sgd_momentum, nesterov_momentum, rmsprop, adam, adamw, nesterov_sgd)
}
# The state each rule keeps: arrays shaped like the parameter, and counters.
STATE = {"sgd": (), "sgd_momentum": ("velocity",), "nesterov_momentum": ("velocity",), "rmsprop": ("cache",),
         "adam": ("m", "v", "t"), "adamw": ("m", "v", "t"), "nesterov_sgd": ("velocity",)}
COUNTERS = ("t",)
