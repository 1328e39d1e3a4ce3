"""Check that anynet's training loop never waits on the GPU inside an epoch.

``python benchmarks/sync_check.py --backend cupy`` (or ``--backend torch``)
runs ``Solver`` minibatch steps under the library's own "no implicit
synchronization" switch (``cupyx.allow_synchronize(False)``,
``torch.cuda.set_sync_debug_mode("error")``): any host-device wait in a step
raises. Prints the number of steps checked; exits 1 on a synchronization.
"""

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.bench

from benchmarks.bench import AnynetRun, load_data  # noqa: E402


def main(argv=None):
    """Run the check; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("cupy", "torch"), default="cupy")
    parser.add_argument("--model", choices=("two-layer", "fc"), default="fc")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    data, source = load_data(max(10 * args.batch_size, 2000), args.batch_size)
    run = AnynetRun(data, args.backend, "cuda", args.model, 100, args.batch_size, args.steps)
    solver = run.solver
    solver._start_epoch(0)  # the per-epoch host work (drawing the order) is allowed to wait
    solver._step()
    run.sync()
    if args.backend == "cupy":
        import cupyx

        guard = cupyx.allow_synchronize(False)
    else:
        import contextlib

        import torch

        @contextlib.contextmanager
        def _no_sync():
            torch.cuda.set_sync_debug_mode("error")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")

        guard = _no_sync()
    steps = min(args.steps, solver.iterations_per_epoch - 1)
    start = time.perf_counter()
    try:
        with guard:
            for _ in range(steps):
                solver._step()
                solver.t += 1
    except Exception as exc:  # the libraries raise their own error types on a synchronization
        print(f"SYNC in a training step ({args.backend}, {args.model}): {type(exc).__name__}: {exc}")
        for frame in traceback.extract_tb(exc.__traceback__)[-4:]:
            print(f"  at {frame.filename}:{frame.lineno} {frame.line}")
        return 1
    run.sync()
    seconds = time.perf_counter() - start
    print(f"no host-device synchronization in {steps} steps ({args.backend}, {args.model}, "
          f"batch {args.batch_size}, data {source}); {steps * args.batch_size / seconds:,.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
