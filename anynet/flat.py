"""Many arrays as views of one flat array, so an elementwise update touches them all in one call.

On a GPU each array operation costs a kernel launch of fixed host time, and
an optimizer such as Adam makes about ten per parameter: a net with ten
parameters spends most of its step launching them. Updating the concatenation
costs one launch per operation instead (``anynet.optim``'s rules are
elementwise, so the numbers are the same).
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace, is_array_api_obj


def layout(arrays):
    """``[(name, start, stop, shape)]`` placing each of the dict ``arrays`` in one flat array."""
    spans, start = [], 0
    for name, a in arrays.items():
        size = math.prod(a.shape)
        spans.append((name, start, start + size, tuple(a.shape)))
        start += size
    return spans


def flatten(arrays, spans):
    """Concatenate the arrays of dict ``arrays``, raveled, in the order of ``spans``."""
    xp = array_namespace(*arrays.values())
    return xp.concat([xp.reshape(arrays[name], (-1,)) for name, *_ in spans])


def unflatten(flat, spans):
    """Dict of views of ``flat``, one per span, each in its own shape (no copies)."""
    xp = array_namespace(flat)
    return {name: xp.reshape(flat[start:stop], shape) for name, start, stop, shape in spans}


def flatten_configs(configs, spans):
    """One update-rule config for all parameters: state arrays concatenated, hyperparameters shared.

    Returns None when the configs cannot be merged: different keys, or
    hyperparameters (learning rate, step count) that differ between parameters.
    """
    first = configs[spans[0][0]]
    names = [name for name, *_ in spans]
    if any(configs[name].keys() != first.keys() for name in names):
        return None
    arrays = [key for key, value in first.items() if is_array_api_obj(value)]
    for key, value in first.items():
        same_kind = all(is_array_api_obj(configs[name][key]) == (key in arrays) for name in names)
        if not same_kind or (key not in arrays and any(configs[name][key] != value for name in names)):
            return None
    merged = dict(first)
    merged.update({key: flatten({name: configs[name][key] for name in names}, spans) for key in arrays})
    return merged


def unflatten_config(config, spans):
    """Per-parameter configs of a merged ``config``: views of its state arrays, copies of its hyperparameters."""
    views = {key: unflatten(value, spans) for key, value in config.items() if is_array_api_obj(value)}
    return {
        name: {key: views[key][name] if key in views else value for key, value in config.items()}
        for name, *_ in spans
    }
