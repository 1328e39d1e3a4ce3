"""Update rules with the signature ``rule(w, dw, config=None) -> (next_w, config)``.

``config`` holds the hyperparameters (missing ones take the defaults below)
and the rule's state, created lazily with ``zeros_like`` on the parameter's
device. The caller's dict and arrays are never modified: each call returns a
new config to pass to the next call.
"""

from __future__ import annotations

import math
from numbers import Real

from array_api_compat import array_namespace

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
        if bounds is None:
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
    return array_namespace(w).zeros_like(w) if value is None else value


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: ``w - learning_rate * dw``.

    config: ``learning_rate`` (1e-2).
    """
    config = _config(config, learning_rate=1e-2)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: ``v = momentum * v - learning_rate * dw; w + v``.

    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity``.
    """
    config = _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    v = config["momentum"] * _state(config, "velocity", w) - config["learning_rate"] * dw
    config["velocity"] = v
    return w + v, config


def nesterov_momentum(w, dw, config=None):
    """Nesterov momentum in the look-ahead-free form of Bengio et al. (2012).

    ``v' = momentum * v - learning_rate * dw``;
    ``w - momentum * v + (1 + momentum) * v'``.
    config: ``learning_rate`` (1e-2), ``momentum`` (0.9), state ``velocity``.
    """
    config = _config(config, ("velocity",), learning_rate=1e-2, momentum=0.9)
    mu = config["momentum"]
    v = _state(config, "velocity", w)
    next_v = mu * v - config["learning_rate"] * dw
    config["velocity"] = next_v
    return w - mu * v + (1 + mu) * next_v, config


def rmsprop(w, dw, config=None):
    """RMSProp: divide the step by a running root mean square of gradients.

    ``cache = decay_rate * cache + (1 - decay_rate) * dw**2``;
    ``w - learning_rate * dw / (sqrt(cache) + epsilon)``.
    config: ``learning_rate`` (1e-2), ``decay_rate`` (0.99), ``epsilon`` (1e-8), state ``cache``.
    """
    config = _config(config, ("cache",), learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8)
    xp = array_namespace(w, dw)
    rho = config["decay_rate"]
    cache = rho * _state(config, "cache", w) + (1 - rho) * (dw * dw)
    config["cache"] = cache
    return w - config["learning_rate"] * dw / (xp.sqrt(cache) + config["epsilon"]), config


def adam(w, dw, config=None):
    """Adam (Kingma & Ba, 2015) with bias correction.

    config: ``learning_rate`` (1e-3), ``beta1`` (0.9), ``beta2`` (0.999),
    ``epsilon`` (1e-8), state ``m``, ``v`` and the step count ``t`` (0).
    """
    config = _config(config, ("m", "v", "t"), learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8)
    xp = array_namespace(w, dw)
    b1, b2 = config["beta1"], config["beta2"]
    t = config.get("t", 0) + 1
    m = b1 * _state(config, "m", w) + (1 - b1) * dw
    v = b2 * _state(config, "v", w) + (1 - b2) * (dw * dw)
    config.update(m=m, v=v, t=t)
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return w - config["learning_rate"] * m_hat / (xp.sqrt(v_hat) + config["epsilon"]), config


UPDATE_RULES = {
    rule.__name__: rule for rule in (sgd, sgd_momentum, nesterov_momentum, rmsprop, adam)
}
