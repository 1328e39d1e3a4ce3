"""Sweep grids: parse ``name=v1,v2`` specs, expand them, or sample points from them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..config import DEFAULTS

# Flags sampled log-uniformly by ``sample_grid``: they matter by orders of magnitude.
LOG_KEYS = frozenset({"learning_rate", "reg", "weight_scale", "weight_decay"})

# How the text of a grid value turns into a config value, per ``train`` flag.
_KINDS = {
    "learning_rate": float,
    "lr_decay": float,
    "reg": float,
    "weight_scale": float,
    "dropout": float,
    "batch_size": int,
    "epochs": int,
    "iterations": int,
    "seed": int,
    "num_training": int,
    "num_validation": int,
    "num_test": int,
    "weight_decay": float,
    "warmup_epochs": float,
    "label_smoothing": float,
    "convs_per_stage": int,
    "pool_after": int,
    "filter_size": int,
    "batchnorm": bool,
    "augment": bool,
    "flip_test": bool,
    "translate_test": bool,
    "keep": str,
    "hidden_dims": tuple,
    "widths": tuple,
    "lr_schedule": str,
    "precision": str,
    "backend": str,
    "device": str,
    "model": str,
    "update_rule": str,
    "dtype": str,
    "data_dir": str,
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def flag_key(name: str) -> str:
    """Return the config key of a flag name: ``--learning-rate`` -> ``learning_rate``."""
    return name.strip().lstrip("-").replace("-", "_")


def known_keys() -> list[str]:
    """The config keys a grid may sweep: the train flags."""
    return sorted(DEFAULTS)


def _kind(key: str):
    """Return the Python type a value of ``key`` takes."""
    if key in _KINDS:
        return _KINDS[key]
    default = DEFAULTS.get(key)
    return type(default) if isinstance(default, (bool, int, float, str)) else str


def convert_value(key: str, text):
    """Turn one grid value (text, or already a value) into the type flag ``key`` takes.

    ``hidden_dims`` and ``widths`` values list widths joined by ``x``: ``100x100`` is two layers of 100.
    """
    kind = _kind(key)
    if not isinstance(text, str):
        if kind is tuple and isinstance(text, (int, np.integer)):
            return (int(text),)
        if kind is tuple and isinstance(text, Sequence):
            return tuple(int(v) for v in text)
        if kind is float and isinstance(text, (int, float, np.integer, np.floating)) and not isinstance(text, bool):
            return float(text)
        return text
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if kind is tuple:
            dims = tuple(int(part) for part in text.lower().split("x"))
            if not dims or min(dims) <= 0:
                raise ValueError
            return dims
        if kind is int:
            value = float(text) if any(c in text for c in ".eE") else int(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
    except ValueError:
        expected = {bool: "true or false", tuple: "widths joined by x, like 100x100", int: "an integer",
                    float: "a number"}[kind]
        raise ValueError(f"grid value for {key} must be {expected}; got {text!r}") from None
    if not text:
        raise ValueError(f"grid value for {key} must not be empty")
    return text


def parse_grid(specs) -> dict[str, list]:
    """Parse grid specs into ``{config key: [values]}``.

    Parameters
    ----------
    specs : sequence of str, or mapping
        Strings ``name=v1,v2,...`` where ``name`` is a ``train`` flag, with
        dashes or underscores (``learning-rate=1e-4,1e-3``); or a mapping from
        such names to a value or a list of values.

    Returns
    -------
    dict
        Keys in the order given, each with a non-empty list of typed values.

    Raises
    ------
    ValueError
        A spec without ``=``, an unknown flag, a flag given twice, or a value
        of the wrong type; the message names it.
    """
    if isinstance(specs, Mapping):
        items = [(name, values) for name, values in specs.items()]
    elif isinstance(specs, Sequence) and not isinstance(specs, str):
        items = []
        for spec in specs:
            if not isinstance(spec, str) or "=" not in spec:
                raise ValueError(f"grid entries must look like name=v1,v2,...; got {spec!r}")
            name, _, values = spec.partition("=")
            items.append((name, [v for v in values.split(",") if v.strip()]))
    else:
        raise TypeError(f"grid must be a mapping or a list of 'name=v1,v2' strings; got {type(specs).__name__}")
    known = set(known_keys())
    grid: dict[str, list] = {}
    for name, values in items:
        key = flag_key(str(name))
        if key not in known:
            raise ValueError(
                f"grid key {name!r} is not a train flag; expected one of "
                f"{', '.join(k.replace('_', '-') for k in sorted(known))}"
            )
        if key in grid:
            raise ValueError(f"grid key {name!r} is given twice")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            values = [values]
        if _kind(key) is tuple and values and all(isinstance(v, (int, np.integer)) for v in values):
            # A flat list of ints for hidden_dims or widths is one network, not several.
            values = [values]
        if len(values) == 0:
            raise ValueError(f"grid key {name!r} has no values")
        grid[key] = [convert_value(key, v) for v in values]
    if not grid:
        raise ValueError("grid must name at least one flag")
    return grid


def expand_grid(grid: Mapping[str, Sequence]) -> list[dict]:
    """Return every point of ``grid``, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _round(value: float, digits: int = 3) -> float:
    """Round ``value`` to ``digits`` significant digits, so tables stay readable."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def sample_grid(grid: Mapping[str, Sequence], n: int, seed=0) -> list[dict]:
    """Draw ``n`` random points from the ranges ``grid`` spans.

    A numeric flag with several values is drawn from ``[min, max]`` of them:
    log-uniformly for ``LOG_KEYS`` (learning rate, reg, weight scale),
    uniformly otherwise (integers stay integers); floats are rounded to three
    significant digits. Any other flag picks one of its listed values.

    Parameters
    ----------
    grid : mapping
        As returned by ``parse_grid``.
    n : int
        How many points.
    seed : int
        The same seed draws the same points.

    Raises
    ------
    ValueError
        ``n`` not positive, or a log-uniform flag whose range is not positive.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"the number of random points must be a positive integer; got {n!r}")
    for key in LOG_KEYS & set(grid):
        values = grid[key]
        if len(values) > 1 and min(values) <= 0:
            raise ValueError(
                f"{key} is sampled log-uniformly, so its range must be positive; got {min(values)}..{max(values)}"
            )
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(int(n)):
        point = {}
        for key, values in grid.items():
            kind = _kind(key)
            if len(values) == 1:
                point[key] = values[0]
            elif kind is float and key in LOG_KEYS:
                low, high = math.log(min(values)), math.log(max(values))
                point[key] = _round(math.exp(rng.uniform(low, high)))
            elif kind is float:
                point[key] = _round(float(rng.uniform(min(values), max(values))))
            elif kind is int:
                point[key] = int(rng.integers(min(values), max(values), endpoint=True))
            else:
                point[key] = values[int(rng.integers(len(values)))]
        points.append(point)
    return points


def format_value(value) -> str:
    """Write a config value the way a grid spec would: ``100x100`` for hidden dims and widths."""
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)
