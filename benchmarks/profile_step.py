"""Where the time of a training step goes, on one backend.

``python benchmarks/profile_step.py --backend cupy`` prints two tables:

1. the host time of each array operation a TwoLayerNet step is made of, called
   through the namespace anynet uses (array-api-compat) and, where it differs,
   through the library itself, at the shapes of a batch-200 step (device
   synchronized once after many calls, so a launch-bound GPU shows its per-call
   cost);
2. a cProfile of ``Solver`` steps, sorted by own time.

On a GPU a step is usually bound by these per-call costs, not by the arithmetic.
``$ANYNET_BENCH_SMOKE=1`` times a few calls on a few images, to see that the
script still runs (``tests/test_bench.py``).
"""

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.bench

SMOKE = os.environ.get("ANYNET_BENCH_SMOKE", "") not in ("", "0")


def _ops(xp, raw, device, B, D, H, C):
    """Named zero-argument callables, one per operation of a two-layer step."""
    from array_api_compat import array_namespace

    def rand(*shape):
        return xp.asarray(__import__("numpy").random.default_rng(0).standard_normal(shape), dtype=xp.float32,
                          device=device)

    X_train = rand(4 * B, D)
    idx = xp.asarray(__import__("numpy").arange(B, dtype="int64")[::-1].copy(), device=device)
    x, w, b, h, s = rand(B, D), rand(D, H), rand(H), rand(B, H), rand(B, C)
    y = xp.asarray(__import__("numpy").arange(B, dtype="int64") % C, device=device)
    zero = xp.zeros((), dtype=xp.float32, device=device)
    mask = h > 0
    grads = [rand(D, H), rand(H), rand(H, C), rand(C)]
    losses = [xp.sum(s) for _ in range(50)]
    ops = {
        "array_namespace(x, w, b)": lambda: array_namespace(x, w, b),
        "take(X_train, idx, axis=0)": lambda: xp.take(X_train, idx, axis=0),
        "x @ w": lambda: x @ w,
        "h += b (in place)": lambda: h.__iadd__(b),
        "h + b": lambda: h + b,
        "zeros(())": lambda: xp.zeros((), dtype=xp.float32, device=device),
        "maximum(h, zero)": lambda: xp.maximum(h, zero),
        "h > 0": lambda: h > 0,
        "astype(mask, float32)": lambda: xp.astype(mask, xp.float32),
        "h * h": lambda: h * h,
        "where(mask, h, zero)": lambda: xp.where(mask, h, zero),
        "max(s, axis=1, keepdims)": lambda: xp.max(s, axis=1, keepdims=True),
        "exp(s)": lambda: xp.exp(s),
        "sum(s, axis=1, keepdims)": lambda: xp.sum(s, axis=1, keepdims=True),
        "sum(h, axis=0)": lambda: xp.sum(h, axis=0),
        "take_along_axis(s, y[:, None])": lambda: xp.take_along_axis(s, y[:, None], axis=1),
        "mean(s)": lambda: xp.mean(s),
        "sum(s)": lambda: xp.sum(s),
        "arange(C)": lambda: xp.arange(C, dtype=y.dtype, device=device),
        "y[:, None] == arange[None, :]": lambda: y[:, None] == xp.arange(C, dtype=y.dtype, device=device)[None, :],
        "x.T @ h": lambda: x.T @ h,
        "h @ w.T": lambda: h @ w[:H, :].T,
        "w * -lr": lambda: w * -1e-3,
        "stack(50 losses)": lambda: xp.stack(losses),
        "concat(4 grads, flattened)": lambda: xp.concat([xp.reshape(g, (-1,)) for g in grads]),
        "reshape(x, (B, -1))": lambda: xp.reshape(x, (B, -1)),
    }
    if raw is not None and raw is not xp:
        ops.update({
            "[raw] take(X_train, idx, axis=0)": lambda: raw.take(X_train, idx, axis=0),
            "[raw] maximum(h, zero)": lambda: raw.maximum(h, zero),
            "[raw] sum(h, axis=0)": lambda: raw.sum(h, axis=0),
            "[raw] max(s, axis=1, keepdims)": lambda: raw.max(s, axis=1, keepdims=True),
            "[raw] take_along_axis(s, y[:, None])": lambda: raw.take_along_axis(s, y[:, None], axis=1),
            "[raw] zeros(())": lambda: raw.zeros((), dtype=raw.float32),
            "[raw] reshape(x, (B, -1))": lambda: raw.reshape(x, (B, -1)),
        })
    return ops


def op_table(backend, device, B=200, D=3072, H=100, C=10, calls=3 if SMOKE else 300):
    """Median microseconds per call of each operation (three timed batches of ``calls``)."""
    from anynet import backends
    from benchmarks.bench import _synchronizer

    place = backends.get(backend, device)
    xp, dev = place.xp, place.device
    raw = {"cupy": "cupy", "torch": "torch", "numpy": "numpy"}.get(backend)
    raw = __import__(raw) if raw else None
    if backend == "torch":
        raw = None  # torch's own functions take other arguments (dim=); compare through compat only
    sync = _synchronizer(backend, dev)
    rows = []
    for name, op in _ops(xp, raw, dev, B, D, H, C).items():
        op()
        sync()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(calls):
                op()
            sync()
            times.append((time.perf_counter() - start) / calls * 1e6)
        rows.append((name, sorted(times)[1]))
    return rows


def profile(backend, device, model, batch_size, steps, top):
    """cProfile text of ``steps`` Solver steps (one epoch start included), sorted by own time."""
    from benchmarks.bench import AnynetRun, load_data

    data, _ = load_data(2 * steps * batch_size if SMOKE else max(10_000, 2 * steps * batch_size), batch_size)
    run = AnynetRun(data, backend, device, model, 100, batch_size, steps)
    run()  # warm up
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(run.solver.train)
    run.sync()
    seconds = time.perf_counter() - start
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return f"{steps} steps in {seconds:.3f} s under cProfile ({seconds / steps * 1e3:.3f} ms/step)\n" + out.getvalue()


def main(argv=None):
    """Print the operation table and the profile; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default=None)
    parser.add_argument("--model", choices=("two-layer", "fc"), default="two-layer")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-ops", action="store_true", help="skip the operation table")
    args = parser.parse_args(argv)
    if not args.no_ops:
        print(f"host time per call, {args.backend}, shapes of a batch-{args.batch_size} two-layer step:")
        for name, us in op_table(args.backend, args.device, B=args.batch_size):
            print(f"  {us:9.1f} us  {name}")
    print(profile(args.backend, args.device, args.model, args.batch_size, args.steps, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
