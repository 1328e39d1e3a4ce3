"""Array operations per training step: what a launch-bound GPU pays for, counted on the CPU.

A small step on a GPU is bound by kernel launches, not arithmetic (see
``benchmarks/RESULTS.md``): CuPy launches one kernel per elementwise
operation, reduction, matrix product, gather or cast, each at a fixed cost of
host time. This counts those operations in ``Solver`` steps on NumPy through an
ndarray subclass that sees every ufunc call (operators, in-place ones,
reductions, products), every array function (``take``, ``where``, ``sum``, ...)
and every ``astype``. Views (reshape, transpose, slicing) launch nothing and
are not counted. The count is exact and repeatable, so it can be compared
between commits on any machine; it stands in for launches, which only a GPU
can time. It counts what NumPy is asked to do: where array-api-compat wraps a
function differently for another backend, that backend may do more (its
``sign`` sets NaNs through a boolean mask on CuPy and PyTorch, for one).

``python benchmarks/count_ops.py --model two-layer`` prints the total and a
breakdown; ``count_step_ops(...)`` returns them.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.bench

# Array functions that make views or only read metadata: no kernel on a GPU.
_FREE = {
    "reshape", "transpose", "permute_dims", "matrix_transpose", "expand_dims", "squeeze", "broadcast_to",
    "moveaxis", "swapaxes", "result_type", "can_cast", "shape", "ndim", "size", "may_share_memory",
    "shares_memory", "min_scalar_type", "iscomplexobj", "isrealobj",
}
_counts: Counter | None = None


def _record(name):
    """Count one operation while counting is on."""
    if _counts is not None:
        _counts[name] += 1


def _plain(a):
    """``a`` with every counted array in it turned back into a plain ndarray."""
    if isinstance(a, Counted):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_plain(v) for v in a)
    if isinstance(a, dict):
        return {k: _plain(v) for k, v in a.items()}
    return a


def _wrap(a):
    """Results as counted arrays; NumPy scalars become 0-d arrays, as a GPU backend returns."""
    if isinstance(a, np.generic):
        a = np.asarray(a)
    if isinstance(a, np.ndarray):
        return a.view(Counted)
    if isinstance(a, (tuple, list)):
        return type(a)(_wrap(v) for v in a)
    if isinstance(a, dict):
        return {k: _wrap(v) for k, v in a.items()}
    return a


@contextmanager
def counting():
    """Count the operations made on counted arrays inside the block; yields the ``Counter``."""
    global _counts
    _counts = Counter()
    try:
        yield _counts
    finally:
        _counts = None


def _steps(solver, n):
    """Run ``n`` Solver steps."""
    for _ in range(n):
        solver._step()
        solver.t += 1


class _LaidOut:
    """A backend that lays out update rules as ``layout`` says (``"flat"``: as on a GPU), otherwise itself.

    It compiles nothing, as CuPy's eager steps on a GPU: the optimizer keeps its learning rates and step counts
    as Python numbers, on every backend counted alike.
    """

    can_compile = False

    def __init__(self, backend, layout):
        self._backend, self._layout = backend, layout

    def update_layout(self):
        return self._layout

    def __getattr__(self, name):
        return getattr(self._backend, name)


def _lay_out(solver, layout):
    """Give ``solver`` an optimizer that updates in ``layout``, its state the same (``Solver.optim_configs``)."""
    from anynet.training.optimizer import Optimizer

    configs = {p: dict(c) for p, c in solver.optim_configs.items()}
    solver.optimizer = Optimizer(solver.update_rule, solver.optim_config, backend=_LaidOut(solver.backend, layout))
    solver.optim_configs = configs


class Counted(np.ndarray):
    """An ndarray that counts the operations made on it."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _record(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if out is not None:
            kwargs["out"] = _plain(out)
        result = getattr(ufunc, method)(*_plain(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ not in _FREE:
            _record(func.__name__)
        return _wrap(func(*_plain(args), **_plain(kwargs)))

    def astype(self, *args, **kwargs):
        _record("astype")
        return _wrap(self.view(np.ndarray).astype(*args, **kwargs))


def count_step_ops(model="two-layer", hidden=100, batch_size=200, reg=0.0, update_rule=None, steps=3, fuse=None,
                   backend="numpy"):
    """Array operations of one ``Solver`` step, as the Solver runs it on a GPU.

    Parameters
    ----------
    model : {"two-layer", "fc"}
        TwoLayerNet of width ``hidden`` with SGD, or FullyConnectedNet [512, 256]
        with batch normalization, dropout 0.25 and Adam (the benchmark models).
    hidden, batch_size : int
    reg : float
        L2 strength of the model.
    update_rule : str, optional
        Overrides the model's rule.
    steps : int
        Steps counted (the result is per step; steps are alike).
    fuse : bool, optional
        Whether the optimizer updates all parameters in one call (the
        ``"flat"`` layout); default: as it does on a GPU (every built-in rule
        but plain SGD, which always updates each parameter on its own).
    backend : {"numpy", "torch"}
        "numpy" counts what the standard's code asks for; "torch" counts the
        PyTorch operators a step dispatches (on the CPU, with PyTorch's
        profiler), array-api-compat's wrappers included: on CUDA each is a launch.

    Returns
    -------
    total : float
        Operations per step.
    by_name : dict
        Operations per step by NumPy function (or PyTorch operator) name, most frequent first.
    """
    from anynet.backends import Backend
    from anynet.models import FullyConnectedNet, TwoLayerNet
    from anynet.nn import checks
    from anynet.training.solver import Solver
    from benchmarks.bench import FC_DROPOUT, FC_HIDDEN

    if backend not in ("numpy", "torch"):
        raise ValueError(f"backend must be numpy or torch; got {backend!r}")
    if model == "fc":
        net = FullyConnectedNet(list(FC_HIDDEN), dropout=FC_DROPOUT, use_batchnorm=True, weight_scale=5e-2,
                                reg=reg, seed=0, backend=backend, device="cpu")
        rule = update_rule or "adam"
    else:
        net = TwoLayerNet(hidden_dims=hidden, reg=reg, dtype="float32", seed=0, backend=backend, device="cpu")
        rule = update_rule or "sgd"
    rng = np.random.default_rng(0)
    N = 4 * batch_size
    data = {
        "X_train": rng.standard_normal((N, net.input_dim), dtype=np.float32),
        "y_train": rng.integers(0, 10, N),
        "X_val": rng.standard_normal((batch_size, net.input_dim), dtype=np.float32),
        "y_val": rng.integers(0, 10, batch_size),
    }
    if backend == "numpy":
        from anynet.backends import registry

        # A counted array stands for NumPy's own: the layers may keep their small constants of it between steps.
        registry._eager_types.add(Counted)
        data = {k: v.view(Counted) for k, v in data.items()}
        net.params = {k: v.view(Counted) for k, v in net.params.items()}
    solver = Solver(net, data, update_rule=rule, optim_config={"learning_rate": 1e-4}, batch_size=batch_size,
                    num_epochs=1, verbose=False, seed=0, compile=False)
    _lay_out(solver, "flat" if fuse or fuse is None else "each")
    solver.train()  # the first steps make the cached constants
    solver._start_epoch(1)
    if backend == "numpy":
        # The optimizer's state (its rates and step counts are 0-d arrays) and the random state a step carries,
        # from which dropout masks are drawn on the device: their operations count too.
        solver._optim_state, solver._rng_state = _wrap(solver._optim_state), _wrap(solver._rng_state)
    # Host labels are range-checked at every step; a GPU's are not (the Solver checked them once). Masks are
    # drawn as on a GPU, by the counter-based hash (NumPy and PyTorch on a CPU have faster draws of their own).
    check_label_range, checks.check_label_range = checks.check_label_range, lambda *args: None
    library = type(solver.backend)
    draw = library.__dict__.get("uniform")
    library.uniform = Backend.uniform
    try:
        _steps(solver, 2)  # two steps to settle the fused layout, then the counted ones
        counts = _count_numpy(solver, steps) if backend == "numpy" else _count_torch(solver, steps)
    finally:
        checks.check_label_range = check_label_range
        if draw is None:
            del library.uniform
        else:
            library.uniform = draw
    by_name = {name: n / steps for name, n in counts.most_common()}
    return sum(counts.values()) / steps, by_name


# Functions of the namespace that make arrays from nothing counted: a GPU fills each with a kernel.
_CREATION = ("arange", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like")


def _count_numpy(solver, steps):
    """Counter of the NumPy operations of ``steps`` steps on counted arrays, and of the arrays they create."""
    xp = solver.backend.xp
    originals = {name: getattr(xp, name) for name in _CREATION}

    def counted(name, make):
        def create(*args, **kwargs):
            _record(name)
            return _wrap(make(*_plain(args), **_plain(kwargs)))
        return create

    with counting() as counts:
        try:
            for name, make in originals.items():
                setattr(xp, name, counted(name, make))
            _steps(solver, steps)
        finally:
            for name, make in originals.items():
                setattr(xp, name, make)
    return counts


# PyTorch operators that make views, read metadata or return their input: no kernel on a GPU.
_TORCH_FREE = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::_unsafe_view", "aten::t", "aten::transpose",
    "aten::permute", "aten::numpy_T", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze",
    "aten::expand", "aten::as_strided", "aten::alias", "aten::detach", "aten::lift_fresh", "aten::empty",
    "aten::empty_strided", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type",
}


def _count_torch(solver, steps):
    """Counter of the top-level PyTorch operators of ``steps`` steps (a ``to`` that copies nothing is free)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _steps(solver, steps)
    counts = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if not event.name.startswith("aten::") or parent is not None or event.name in _TORCH_FREE:
            continue
        if event.name == "aten::to" and not event.cpu_children:
            continue
        counts[event.name] += 1
    return counts


def main(argv=None):
    """Command line: print the operations of one step and their breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("two-layer", "fc"), default="two-layer")
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--reg", type=float, default=0.0)
    parser.add_argument("--update-rule", default=None)
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy",
                        help="numpy: what the code asks for; torch: the PyTorch operators it dispatches")
    args = parser.parse_args(argv)
    total, by_name = count_step_ops(args.model, args.hidden, args.batch_size, args.reg, args.update_rule,
                                    backend=args.backend)
    print(f"{args.model} (hidden {args.hidden}, reg {args.reg:g}, batch {args.batch_size}), {args.backend}: "
          f"{total:g} array operations per step")
    for name, n in by_name.items():
        print(f"  {n:5g}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
