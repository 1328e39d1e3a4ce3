"""Two versions of anynet side by side, in one process: did a change pay?

``python benchmarks/ab.py --base 3333148 --backend cupy`` copies the package
as it was at that commit (``git archive``) into a temporary folder under the
name ``anynet_base``, then trains the same models with both versions through
their ``Solver``, alternating, and prints the median images/s of each and the
median of the per-round ratios (new / base), which cancels the machine's drift.
Where git is not available (a GPU machine given a copy of the working tree),
``--base-dir DIR`` names a folder that holds the base version's ``anynet``
package instead.

Models: TwoLayerNet hidden 100 with SGD at batch 200 and 4096, and the
[512, 256] FullyConnectedNet with batchnorm, dropout 0.25 and Adam at batch
200; random data of CIFAR-10's shape, float32, at least 12 steps an epoch.
``$ANYNET_BENCH_SMOKE=1`` makes every case a few steps on a few images, to
see that the script still runs (``tests/test_bench.py``).
"""

import argparse
import atexit
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: its anynet, and benchmarks.bench

from anynet.app.process import keep_freed_memory, prepare_process  # noqa: E402

prepare_process(True)  # as ``anynet train`` does for Adam (the fc case), for both versions alike
import numpy as np  # noqa: E402

SMOKE = os.environ.get("ANYNET_BENCH_SMOKE", "") not in ("", "0")
CASES = (("two-layer", 20, 2), ("fc", 20, 2)) if SMOKE else (
    ("two-layer", 200, 100), ("two-layer", 4096, 48), ("fc", 200, 60))


def load_base(base=None, base_dir=None):
    """Import the base version of the package as ``anynet_base``."""
    folder = Path(tempfile.mkdtemp(prefix="anynet-ab-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    if base_dir is not None:
        shutil.copytree(Path(base_dir) / "anynet", folder / "anynet_base")
    else:
        root = Path(__file__).resolve().parents[1]
        archive = subprocess.run(["git", "-C", str(root), "archive", base, "anynet"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        (folder / "anynet").rename(folder / "anynet_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("anynet_base")  # its imports are relative: it stays apart from anynet


def _to_numpy(pkg):
    """``to_numpy`` of package ``pkg``: in ``backends`` now, in ``backend`` in versions before the backend objects."""
    try:
        return importlib.import_module(f"{pkg.__name__}.backends").to_numpy
    except ModuleNotFoundError:
        return importlib.import_module(f"{pkg.__name__}.backend").to_numpy


def _trainer(pkg, data, backend, device, model, batch_size, iterations, sync, compile="auto"):
    """A function that times one ``Solver.train()`` of ``iterations`` steps with package ``pkg``."""
    kw = {"seed": 0, "backend": backend, "device": device, "dtype": "float32"}
    if model == "fc":
        net = pkg.FullyConnectedNet([512, 256], dropout=0.25, use_batchnorm=True, weight_scale=5e-2, **kw)
        rule = "adam"
    else:
        net = pkg.TwoLayerNet(hidden_dims=100, weight_scale=1e-3, **kw)
        rule = "sgd"
    on_device = pkg.Solver(net, data, batch_size=batch_size, num_iterations=1, verbose=False)
    data = {k: getattr(on_device, k) for k in data}  # moved once; later Solvers reuse it
    # On the host: a backend that donates parameter buffers to a compiled step (jax) deletes the arrays a run
    # started from, and every run starts from the same weights.
    initial = {k: _to_numpy(pkg)(v).copy() for k, v in net.params.items()}

    def run():
        net.params = {k: net.xp.asarray(v, device=net.device) for k, v in initial.items()}
        solver = pkg.Solver(net, data, update_rule=rule, optim_config={"learning_rate": 1e-3},
                            batch_size=batch_size, num_iterations=iterations, num_train_samples=batch_size,
                            num_val_samples=batch_size, verbose=False, seed=0, compile=compile)
        sync()
        start = time.perf_counter()
        solver.train()
        sync()
        return batch_size * iterations / (time.perf_counter() - start)

    return run


def main(argv=None):
    """Run the comparison and print one line per model; returns the exit status."""
    from anynet.app.info import cpu_model
    from benchmarks.bench import COMPILE, _synchronizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--base", help="git commit of the base version")
    where.add_argument("--base-dir", help="folder holding the base version's anynet package")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", choices=tuple(COMPILE), default="auto",
                        help="whether both versions' Solvers compile their steps, as anynet train --compile")
    parser.add_argument("--model", choices=("two-layer", "fc"), help="only this model's cases (default: all)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (by default freed memory is kept for reuse)")
    args = parser.parse_args(argv)

    import anynet

    # Two versions in one process share glibc's heap: whether a freed minibatch goes back to the OS, and the
    # next one faults in, then depends on the interleaving, not on either version (seen for code that runs
    # alike on its own: benchmarks/RESULTS.md, "Third session"). Kept memory takes that luck out, as in
    # `anynet train`.
    kept = not args.default_malloc and keep_freed_memory()
    base = load_base(args.base, args.base_dir)
    device = anynet.backends.get(args.backend, args.device).device
    sync = _synchronizer(args.backend, device)
    print(f"base {args.base or args.base_dir} vs working tree; backend {args.backend} on {device}, compile "
          f"{args.compile}; {'glibc keeps freed memory' if kept else 'default malloc'}; {cpu_model()}")
    for model, batch_size, iterations in CASES:
        if args.model not in (None, model):
            continue
        rng = np.random.default_rng(0)
        N = 2 * batch_size if SMOKE else max(10_000, 12 * batch_size)
        X = rng.standard_normal((N + batch_size, 3, 32, 32), dtype=np.float32)
        y = rng.integers(0, 10, N + batch_size)
        data = {"X_train": X[:N], "y_train": y[:N], "X_val": X[N:], "y_val": y[N:]}
        runs = {name: _trainer(pkg, data, args.backend, device, model, batch_size, iterations, sync,
                               COMPILE[args.compile])
                for name, pkg in (("base", base), ("new", anynet))}
        for run in runs.values():
            run()  # warm-up; a compiled step is compiled here, and later Solvers of the model reuse it
        rates = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                rates[name].append(run())
        paired = statistics.median(n / b for n, b in zip(rates["new"], rates["base"], strict=True))
        what = "fc [512, 256] bn dropout adam" if model == "fc" else "two-layer hidden 100 sgd"
        print(f"{what}, batch {batch_size}: base {statistics.median(rates['base']):,.0f}, "
              f"new {statistics.median(rates['new']):,.0f} images/s; new/base (paired median) {paired:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
