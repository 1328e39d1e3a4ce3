"""Update rules with the signature ``rule(w, dw, config=None) -> (next_w, config)``.

``config`` holds the hyperparameters (missing ones take the defaults below)
and the rule's state, created lazily with ``zeros_like`` on the parameter's
device. The caller's dict and arrays are never modified: each call returns a
new config to pass to the next call.

Every rule here is elementwise: updating the concatenation of several
parameters (and of their gradients and state) gives exactly the updates of
each. The ``Solver`` relies on it to update all parameters in one call on a GPU.
"""

from __future__ import annotations

import math
from numbers import Real

from .backends import namespace

# name -> (low, high, low bound included); values must lie within.
_BOUNDS = {
    "learning_rate": (0.0, math.inf, False),
    "momentum": (0.0, 1.0, True),
    "decay_rate": (0.0, 1.0, True),
    "beta1": (0.0, 1.0, True),
    "beta2": (0.0, 1.0, True),
    "epsilon": (0.0, math.inf, False),
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
    unknown = sorted(set(config) - set(defaults) - set(state), key=str)
    if unknown:
        expected = ", ".join([*defaults, *(f"{name} (state)" for name in state)])
        raise ValueError(f"config has unknown key(s) {', '.join(map(repr, unknown))}; expected some of {expected}")
    config = {**defaults, **config}
    for name in defaults:
        value, bounds = config[name], _BOUNDS.get(name)
        # A 0-d array is a compiled step's learning rate: its value was checked before training, not here.
        if bounds is None or _is_array(value):
            continue
        low, high, closed = bounds
        ok = isinstance(value, Real) and not isinstance(value, bool)
        if not ok or not ((low <= value) if closed else (low < value)) or not value < high:
            interval = f"{'[' if closed else '('}{low}, {high})"
            raise ValueError(f"config[{name!r}] must be a number in {interval}; got {value!r}")
    return config


def _state(config, name, w):
    """The state array ``name`` of ``config``, zeros like ``w`` on first use."""
    value = config.get(name)
    return namespace(w).zeros_like(w) if value is None else value


def _hyper(config, *names):
    """The hyperparameters ``names`` as Python floats, which keep the arrays' dtype (a NumPy float64 would not).

    0-d arrays (a compiled step's learning rate) stay arrays: reading them would wait on the device.
    """
    return [config[name] if _is_array(config[name]) else float(config[name]) for name in names]


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
    config = _config(config, learning_rate=1e-2)
    (lr,) = _hyper(config, "learning_rate")
    return _add_to(dw * -lr, w), config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: ``v = momentum * v - learning_rate * dw; w + v``.

    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity``.
    """
    config = _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    lr, mu = _hyper(config, "learning_rate", "momentum")
    v = dw * -lr
    v += mu * _state(config, "velocity", w)
    config["velocity"] = v
    return w + v, config


def nesterov_momentum(w, dw, config=None):
    """Nesterov momentum in the look-ahead-free form of Bengio et al. (2012).

    ``v' = momentum * v - learning_rate * dw``;
    ``w - momentum * v + (1 + momentum) * v'``.
    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity``.
    """
    config = _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    lr, mu = _hyper(config, "learning_rate", "momentum")
    g = dw * -lr
    next_v = _state(config, "velocity", w) * mu
    next_v += g
    config["velocity"] = next_v
    # (1 + mu) * next_v - mu * v == mu * next_v - lr * dw, which needs no copy of v.
    step = next_v * mu
    step += g
    return _add_to(step, w), config


def rmsprop(w, dw, config=None):
    """RMSProp: divide the step by a running root mean square of gradients.

    ``cache = decay_rate * cache + (1 - decay_rate) * dw**2``;
    ``w - learning_rate * dw / (sqrt(cache) + epsilon)``.
    config: ``learning_rate`` (1e-2), ``decay_rate`` (0.99), ``epsilon`` (1e-8), state ``cache``.
    """
    config = _config(config, ("cache",), learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8)
    xp = namespace(w, dw)
    lr, rho, eps = _hyper(config, "learning_rate", "decay_rate", "epsilon")
    cache = _running_mean(_state(config, "cache", w), dw * dw, rho, fresh=True)
    config["cache"] = cache
    step = xp.sqrt(cache)
    step += eps
    step = dw / step
    step *= -lr
    return _add_to(step, w), config


def adam(w, dw, config=None):
    """Adam (Kingma & Ba, 2015) with bias correction.

    config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999),
    ``epsilon`` (1e-8), state ``m``, ``v`` and the step count ``t`` (0).
    """
    config = _config(config, ("m", "v", "t"), learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
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
    return _add_to(step, w), config


UPDATE_RULES = {
    rule.__name__: rule for rule in (sgd, sgd_momentum, nesterov_momentum, rmsprop, adam)
}
# The state each rule keeps: arrays shaped like the parameter, and counters.
STATE = {"sgd": (), "sgd_momentum": ("velocity",), "nesterov_momentum": ("velocity",), "rmsprop": ("cache",),
         "adam": ("m", "v", "t")}
COUNTERS = ("t",)
