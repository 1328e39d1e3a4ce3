"""Numerical gradients by centered differences, on any backend.

On a backend whose arrays can change in place (NumPy, PyTorch, CuPy,
array-api-strict) these perturb ``x`` in place, one element at a time, and
put each element back afterwards, so ``f`` may close over ``x``
(``x = model.params["W1"]``), as the course's checks do.

JAX arrays are immutable: there ``f`` is handed a perturbed copy of ``x`` and
must compute from its argument. An ``f`` that ignores it (a closure over the
array that ``x`` was taken from) would give a gradient of zero, so that case is
an error: ``f`` is first evaluated at ``x``, at ``x`` moved far in both
directions and at an array of NaN, and when all four values are equal a
``ValueError`` says how to write ``f`` instead.

They synchronize the device once per element: they are for float64 checks on
small sizes, never for training.
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref

from array_api_compat import array_namespace
from array_api_compat import device as _device

from .. import backends as _backends

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "grad_check_sparse", "rel_error"]


def _indices(shape):
    """Every multi-index of an array of ``shape``."""
    return itertools.product(*(range(n) for n in shape))


def _mutable(x) -> bool:
    """Whether ``x`` belongs to a library whose arrays can be assigned into in place."""
    return _backends.of(x).mutable


def _centered(f, x, ix, h, read):
    """``(read(f(x + h e_ix)), read(f(x - h e_ix)))``.

    In place where arrays are mutable, ``x[ix]`` put back afterwards;
    otherwise ``f`` gets perturbed copies and ``x`` is never touched.
    """
    if _mutable(x):
        old = float(x[ix])
        x[ix] = old + h
        plus = read(f(x))
        x[ix] = old - h
        minus = read(f(x))
        x[ix] = old
        return plus, minus
    xp = array_namespace(x)
    k = sum(i * math.prod(x.shape[d + 1:]) for d, i in enumerate(ix))  # C-order flat index of ix
    mask = xp.reshape(xp.arange(math.prod(x.shape), device=_device(x)) == k, x.shape)
    return read(f(xp.where(mask, x + h, x))), read(f(xp.where(mask, x - h, x)))


def _check_f_reads_its_argument(f, x, name="f"):
    """On an immutable backend, raise ``ValueError`` if ``f`` evidently ignores its argument.

    Such an ``f`` closes over the array ``x`` came from, and the perturbed
    copies of ``x`` would never reach what it computes: every difference, so
    the gradient, would be zero. ``f`` is evaluated at ``x``, at ``x`` moved
    far in every element both ways, and at an array of NaN; the same value
    from all four means ``f`` never read them. (Equal values at the moved
    points alone do not: a bias before batch normalization changes nothing,
    bit for bit, but NaN flows through.)
    """
    if _mutable(x):
        return
    xp = array_namespace(x)
    n = math.prod(x.shape)
    shift = 1.0 + float(xp.max(xp.abs(x))) if n else 1.0
    # A different step in every element, each at least ``shift`` (past every kink of a ReLU or a hinge), so that
    # no invariance of a loss (softmax's and the SVM's to one shift of a whole row) hides the change.
    spread = xp.reshape(xp.arange(n, dtype=x.dtype, device=_device(x)) * 0.6180339887 % 1.0, x.shape)
    d = shift * (1.0 + spread)
    at_x = xp.asarray(f(x), copy=True)
    for probe in (x + d, x - d, xp.full_like(x, math.nan)):
        try:
            value = xp.asarray(f(probe), copy=True)
        except Exception:  # noqa: BLE001 - f failed on the probe, so the probe reached its computation
            return
        if not bool(xp.all(value == at_x)):
            return
    raise ValueError(
        f"{name} must compute from its argument: it returned the same value at x, at x moved by {shift:g} to "
        f"{2 * shift:g} in every element, and at an array of NaN. Arrays of the {_backends.name_of(x)} backend "
        f"are immutable, so the gradient check hands {name} perturbed copies of x and cannot change the array "
        f"{name} closes over; write {name} to use its argument, e.g. lambda W: net.loss(X, y)[0] with "
        f"net.params['W1'] = W set first (a function that truly does not depend on x has a zero gradient: "
        f"use zeros_like(x))"
    )


# Objects whose ``params`` dict holds arrays a check may be asked about (models register themselves): the course
# checks a model as ``f = lambda _: model.loss(X, y)[0]; eval_numerical_gradient(f, model.params[name])``, an f
# that reads the parameter from the model, not from its argument. On JAX, whose arrays cannot change in place,
# the check puts each perturbed copy into the model's dict for the call instead.
_holders: weakref.WeakSet = weakref.WeakSet()


def register_parameters(holder):
    """Let gradient checks find arrays of ``holder.params`` (a model) and swap perturbed copies into it."""
    try:
        _holders.add(holder)
    except TypeError:  # an object that cannot be weakly referenced: checks just do not find it
        pass


def _through_holder(f, x):
    """``f``, or where ``x`` is a registered model's parameter on an immutable backend, a function that puts its
    argument in that parameter's place for the call of ``f`` and puts ``x`` back after."""
    if _mutable(x):
        return f
    for holder in list(_holders):
        params = getattr(holder, "params", None)
        name = next((k for k, v in params.items() if v is x), None) if isinstance(params, dict) else None
        if name is None:
            continue

        def swapped(v, holder=holder, name=name):
            holder.params[name] = v
            try:
                return f(v)
            finally:
                holder.params[name] = x

        return swapped
    return f


def _gradient(x, values):
    """An array like ``x`` holding ``values`` (Python floats or 0-d arrays), one per element in C order."""
    xp = array_namespace(x)
    flat = xp.stack([xp.asarray(v, dtype=x.dtype, device=_device(x)) for v in values])
    return xp.reshape(flat, x.shape)


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Numerical gradient of a scalar function ``f`` at ``x``.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar (a Python number or 0-d array).
    x : array
        Perturbed in place, element by element, and restored; on JAX, whose
        arrays are immutable, ``f`` gets perturbed copies and must compute
        from its argument (``ValueError`` when it evidently does not).
    verbose : bool
        Print each index and its gradient.
    h : float
        Step of the centered difference.

    Returns
    -------
    array like ``x``
    """
    xp = array_namespace(x)
    if not _mutable(x):
        f = _through_holder(f, x)
        _check_f_reads_its_argument(f, x)
        values = []
        for ix in _indices(x.shape):
            fxph, fxmh = _centered(f, x, ix, h, float)
            values.append((fxph - fxmh) / (2 * h))
            if verbose:
                print(ix, float(xp.asarray(values[-1], dtype=x.dtype)))
        return _gradient(x, values)
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
    in place and restored, or (JAX) ``f`` gets perturbed copies, as in ``eval_numerical_gradient``.
    """
    xp = array_namespace(x, df)
    # f may return a view of x: copy each output before x changes again.
    copy = functools.partial(xp.asarray, copy=True)
    if not _mutable(x):
        f = _through_holder(f, x)
        _check_f_reads_its_argument(f, x)
        values = []
        for ix in _indices(x.shape):
            pos, neg = _centered(f, x, ix, h, copy)
            values.append(xp.sum((pos - neg) * df) / (2 * h))
        return _gradient(x, values)
    grad = xp.zeros_like(x)
    for ix in _indices(x.shape):
        pos, neg = _centered(f, x, ix, h, copy)
        grad[ix] = xp.sum((pos - neg) * df) / (2 * h)
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None):
    """Compare ``analytic_grad`` with numerical gradients at ``num_checks`` random elements.

    Prints one line per element and returns the list of relative errors.
    """
    f = _through_holder(f, x)
    _check_f_reads_its_argument(f, x)
    rng = _backends.Generator(seed, like=x)
    flat = _backends.to_numpy(rng.integers(math.prod(x.shape), (num_checks,))).tolist()
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
