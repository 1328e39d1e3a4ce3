"""Numerical gradients by centered differences, on any backend.

These perturb ``x`` in place, one element at a time, and put each element
back afterwards, so ``f`` may close over ``x`` (``x = model.params["W1"]``).
They synchronize the device once per element: they are for float64 checks on
small sizes, never for training.
"""

from __future__ import annotations

import functools
import itertools
import math

from array_api_compat import array_namespace

from . import backend as _backend


def _indices(shape):
    """Every multi-index of an array of ``shape``."""
    return itertools.product(*(range(n) for n in shape))


def _centered(f, x, ix, h, read):
    """``(read(f(x + h e_ix)), read(f(x - h e_ix)))``, with ``x[ix]`` put back afterwards."""
    old = float(x[ix])
    x[ix] = old + h
    plus = read(f(x))
    x[ix] = old - h
    minus = read(f(x))
    x[ix] = old
    return plus, minus


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Numerical gradient of a scalar function ``f`` at ``x``.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar (a Python number or 0-d array).
    x : array
        Perturbed in place, element by element, and restored.
    verbose : bool
        Print each index and its gradient.
    h : float
        Step of the centered difference.

    Returns
    -------
    array like ``x``
    """
    xp = array_namespace(x)
    grad = xp.zeros_like(x)
    for ix in _indices(x.shape):
        fxph, fxmh = _centered(f, x, ix, h, float)
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            print(ix, float(grad[ix]))
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Numerical gradient of ``sum(f(x) * df)`` at ``x``, for array-valued ``f``.

    ``df`` is the upstream gradient, shaped like ``f(x)``; ``x`` is perturbed
    in place and restored, as in ``eval_numerical_gradient``.
    """
    xp = array_namespace(x, df)
    grad = xp.zeros_like(x)
    # f may return a view of x: copy each output before x changes again.
    copy = functools.partial(xp.asarray, copy=True)
    for ix in _indices(x.shape):
        pos, neg = _centered(f, x, ix, h, copy)
        grad[ix] = xp.sum((pos - neg) * df) / (2 * h)
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None):
    """Compare ``analytic_grad`` with numerical gradients at ``num_checks`` random elements.

    Prints one line per element and returns the list of relative errors.
    """
    rng = _backend.Generator(seed, like=x)
    flat = _backend.to_numpy(rng.integers(math.prod(x.shape), (num_checks,))).tolist()
    errors = []
    for k in flat:
        ix = tuple(int(i) for i in _unravel(k, x.shape))
        fxph, fxmh = _centered(f, x, ix, h, float)
        numerical = (fxph - fxmh) / (2 * h)
        analytic = float(analytic_grad[ix])
        error = abs(numerical - analytic) / max(abs(numerical) + abs(analytic), 1e-300)
        errors.append(error)
        print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {error:e}")
    return errors


def _unravel(k, shape):
    """Multi-index of flat C-order index ``k``."""
    ix = []
    for n in reversed(shape):
        k, r = divmod(k, n)
        ix.append(r)
    return reversed(ix)


def rel_error(x, y):
    """Largest relative error ``|x - y| / max(1e-8, |x| + |y|)``, as a float."""
    xp = array_namespace(x, y)
    return float(xp.max(xp.abs(x - y) / xp.clip(xp.abs(x) + xp.abs(y), min=1e-8)))
