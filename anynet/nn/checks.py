"""Argument checks of the public entry points.

Each returns the value it was given (as a plain ``int`` or ``float``, or an
array) or raises ``TypeError`` (wrong kind) or ``ValueError`` (out of range),
naming the argument, what was expected and what it got.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from array_api_compat import array_namespace, is_array_api_obj

from .. import backends as _backends


def integer(name, value, low=1, optional=False):
    """Return ``value`` as an int if it is an integer >= ``low`` (booleans are not), else raise.

    With ``optional``, None is accepted and returned.
    """
    if optional and value is None:
        return None
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be {what}; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return int(value)


def real(name, value, low=-math.inf, high=math.inf, low_open=False, high_open=True):
    """Return ``value`` as a float if it lies between ``low`` and ``high`` (each end open or closed), else raise.

    NaN lies nowhere.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    above = low < value if low_open else low <= value
    below = value < high if high_open else value <= high
    if not (above and below):
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {bounds}; got {value!r}")
    return value


def seed(value, name="seed"):
    """Return ``value`` if it is None or a non-negative integer (as an int), else raise."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < 0):
        raise ValueError(f"{name} must be None or a non-negative integer; got {value!r}")
    return None if value is None else int(value)


_REAL = ("integral", "real floating")


def checked_array(name, x, kinds=_REAL):
    """Return ``x`` as an array (lists become NumPy arrays), raising ``TypeError`` unless its dtype is of ``kinds``.

    Strings, objects, complex numbers and booleans (for ``kinds`` the default,
    real numbers) would otherwise be cast silently or fail deep inside a backend
    with a message that does not name the argument.
    """
    try:
        x = x if is_array_api_obj(x) else _backends.to_numpy(x)
        ok = array_namespace(x).isdtype(x.dtype, kinds)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        what = "integers" if kinds == "integral" else "real numbers"
        got = f"an array of dtype {x.dtype}" if hasattr(x, "dtype") else repr(x)[:60]
        raise TypeError(f"{name} must be an array of {what}; got {got}")
    return x


def check_label_range(name, y, num_classes):
    """Raise ``ValueError`` if host (NumPy) labels ``y`` fall outside [0, num_classes).

    Device arrays are not checked: that would wait on the device at every
    minibatch (the ``Solver`` checks its labels once, up front).
    """
    if _backends.name_of(y) != "numpy" or y.size == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"{name} must hold labels in [0, {num_classes}); got {bad}")
