"""``anynet.checks``: the argument checks every public entry point uses."""

import math

import numpy as np
import pytest

from anynet.nn import checks


@pytest.mark.parametrize(("value", "low", "error"), [
    (0, 1, ValueError), (-3, 0, ValueError), (2.0, 1, TypeError), (True, 0, TypeError), ("3", 1, TypeError),
    (None, 1, TypeError),
])
def test_integer_refuses(value, low, error):
    with pytest.raises(error, match=f"^n must be .*; got {value!r}$"):
        checks.integer("n", value, low)


def test_integer_accepts_and_returns_a_python_int():
    assert checks.integer("n", np.int64(3)) == 3 and type(checks.integer("n", np.int64(3))) is int
    assert checks.integer("n", 0, low=0) == 0
    assert checks.integer("n", None, optional=True) is None


@pytest.mark.parametrize(("value", "kwargs", "ok"), [
    (0.0, {"low": 0.0}, True), (0.0, {"low": 0.0, "low_open": True}, False),
    (1.0, {"high": 1.0}, False), (1.0, {"high": 1.0, "high_open": False}, True),
    (math.nan, {}, False), (math.inf, {}, False), (-math.inf, {"low": -math.inf}, True),
])
def test_real_bounds(value, kwargs, ok):
    if ok:
        assert checks.real("x", value, **kwargs) == value
    else:
        with pytest.raises(ValueError, match="^x must be a number in "):
            checks.real("x", value, **kwargs)


def test_real_names_the_interval_and_refuses_non_numbers():
    with pytest.raises(ValueError, match=r"lr_decay must be a number in \(0, 1\]; got 1.5"):
        checks.real("lr_decay", 1.5, 0, 1, low_open=True, high_open=False)
    for value in (True, "0.5", None):
        with pytest.raises(TypeError, match="x must be a real number"):
            checks.real("x", value)


def test_seed():
    assert checks.seed(None) is None and checks.seed(np.uint32(7)) == 7
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="seed must be None or a non-negative integer"):
            checks.seed(bad)
