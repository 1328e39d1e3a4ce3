"""asv benchmarks: CIFAR-10-shaped training throughput, step time and peak memory.

Per backend (numpy, torch eager and compiled, and jax.jit on the CPU; cupy,
torch and jax on CUDA when a GPU is there, skipped otherwise) and per model: TwoLayerNet of width 50 and 200, and
FullyConnectedNet [512, 256] with batch normalization, dropout 0.25 and Adam;
float32, batch 200. The data is the real CIFAR-10 when ``$ANYNET_DATA`` holds
it, otherwise random images of the same shape: the ``data`` parameter says
which. GPU work is synchronized inside every timed region; on GPUs the peak
device memory is tracked too. The array operations of a step (a GPU's kernel
launches) are counted on NumPy, a figure that does not depend on the machine,
and anynet's own cost per step is tracked against the same step written inline
in NumPy.

``$ANYNET_BENCH_SMOKE=1`` shrinks every benchmark to a few steps on a few
images, so that a test can run each one once and see it still runs
(``tests/test_bench.py``); the figures of such a run mean nothing.
"""

import os

from anynet import backends
from benchmarks.bench import AnynetRun, find_cifar10, load_data, peak_device_bytes

BACKENDS = ["numpy", "torch", "torch-compiled", "jax", "cupy", "torch-cuda", "torch-cuda-compiled", "jax-cuda"]
MODELS = ["two-layer-50", "two-layer-200", "fc-512-256-bn-dropout-adam"]
DATA = ["cifar10" if find_cifar10() else "random"]
SMOKE = os.environ.get("ANYNET_BENCH_SMOKE", "") not in ("", "0")
BATCH = 20 if SMOKE else 200
ITERATIONS = 2 if SMOKE else 20
NUM_TRAIN = 2 * BATCH if SMOKE else 2000
OVERHEAD_STEPS = 3 if SMOKE else 200
UPDATE_SHAPE = (1024, 512) if SMOKE else (3072, 512)  # the FC net's first layer; the smallest cut in blocks


def _where(name):
    """anynet backend, device and ``--compile`` of benchmark backend ``name``; NotImplementedError (asv: skip)."""
    backend, _, rest = name.partition("-")
    device = "cuda" if rest.startswith("cuda") else None
    compile = "on" if rest.endswith("compiled") else "auto"
    try:
        return backend, backends.get(backend, device).device, compile
    except (backends.BackendUnavailableError, ValueError) as exc:
        raise NotImplementedError(str(exc)) from None


def _run(name, model, iterations):
    """An ``AnynetRun`` (Solver, model, data on the device) of benchmark parameters."""
    backend, device, compile = _where(name)
    data, _ = load_data(NUM_TRAIN, BATCH)
    kind, hidden = ("fc", 0) if model.startswith("fc") else ("two-layer", int(model.rsplit("-", 1)[1]))
    return AnynetRun(data, backend, device, kind, hidden or 100, BATCH, iterations, compile=compile)


class Training:
    """Training through the public ``Solver``."""

    params = (BACKENDS, MODELS, DATA)
    param_names = ["backend", "model", "data"]
    timeout = 300

    def setup(self, name, model, data):
        self.run = _run(name, model, ITERATIONS)
        self.run()  # warm up: first-call costs (allocator pools, kernels, compilation) are not the steady state

    def track_images_per_s(self, name, model, data):
        """Median throughput of three ``Solver.train()`` runs of ``ITERATIONS`` minibatches (device synchronized)."""
        rates = sorted(BATCH * ITERATIONS / self.run() for _ in range(3))
        return rates[1]

    track_images_per_s.unit = "images/s"


class Launches:
    """Array operations of one Solver step (kernel launches on a GPU), counted on NumPy: exact, any machine.

    A batch-200 step on a GPU is bound by its launches, not its arithmetic; this tracks their number.
    """

    params = (MODELS, ["reg 0", "reg 0.01"])
    param_names = ["model", "reg"]

    def track_array_ops_per_step(self, model, reg):
        from .count_ops import count_step_ops

        kind, hidden = ("fc", 0) if model.startswith("fc") else ("two-layer", int(model.rsplit("-", 1)[1]))
        total, _ = count_step_ops(kind, hidden or 100, BATCH, reg=float(reg.split()[1]))
        return total

    track_array_ops_per_step.unit = "operations"


class Step:
    """One forward and backward pass, ``model.loss(X, y)``, of one minibatch."""

    params = (BACKENDS, MODELS, DATA)
    param_names = ["backend", "model", "data"]

    def setup(self, name, model, data):
        run = _run(name, model, 1)
        self.model, self.sync = run.model, run.sync
        solver = run.solver
        self.X = solver.X_train[:BATCH, ...]
        self.y = solver.y_train[:BATCH]
        self.model.rng = backends.Generator(0, self.model.backend)
        self.model.loss(self.X, self.y)
        self.sync()

    def time_forward_backward(self, name, model, data):
        self.model.loss(self.X, self.y)
        self.sync()


class Overhead:
    """anynet's own cost per training step, over the same step written inline in NumPy.

    A Solver step of TwoLayerNet 16-100-10 (batch 200) minus a step of ``benchmarks/bench.py``'s ``NumpyLoop``, which
    keeps the same books. With 16 inputs the matrix products are negligible, so the difference is the
    library's Python, input checks and extra passes: on a CPU the margin that decides TwoLayerNet 100
    against PyTorch eager (benchmarks/RESULTS.md), on a GPU host time added to every step.
    """

    timeout = 120
    steps = OVERHEAD_STEPS

    def setup(self):
        import numpy as np

        from benchmarks.bench import NumpyLoop

        rng = np.random.default_rng(0)
        N = 100 * BATCH + BATCH  # 100 steps an epoch, as many books as a CIFAR-10 run keeps, or fewer
        X, y = rng.standard_normal((N, 16), dtype=np.float32), rng.integers(0, 10, N)
        data = {"X_train": X[:-BATCH], "y_train": y[:-BATCH], "X_val": X[-BATCH:], "y_val": y[-BATCH:]}
        self.anynet = AnynetRun(data, "numpy", None, "two-layer", 100, BATCH, self.steps)
        self.loop = NumpyLoop(data, 100, BATCH, self.steps)
        self.anynet(), self.loop()  # warm up

    def track_library_us_per_step(self):
        """Median of five alternating pairs of runs: (anynet - loop) seconds per step, in microseconds."""
        differences = sorted(self.anynet() - self.loop() for _ in range(5))
        return differences[2] / self.steps * 1e6

    track_library_us_per_step.unit = "us"


class DeviceMemory:
    """Peak GPU memory of a short training run: the training set (2,000 images) plus working memory."""

    params = (["cupy", "torch-cuda"], MODELS, DATA)
    param_names = ["backend", "model", "data"]
    timeout = 300  # as Training: the first run compiles where the backend does

    def setup(self, name, model, data):
        self.run = _run(name, model, ITERATIONS)

    def track_peak_device_mib(self, name, model, data):
        """MiB the backend's allocator held at its peak (CuPy's pool, or torch's max_memory_allocated)."""
        self.run()
        return peak_device_bytes(self.run.model.backend, self.run.model.device) / 2**20

    track_peak_device_mib.unit = "MiB"


class Memory:
    """Peak resident memory of the process over a short training run (host memory)."""

    params = (BACKENDS, MODELS, DATA)
    param_names = ["backend", "model", "data"]
    timeout = 300  # as Training: the run compiles its step first (torch-compiled: Inductor's C++ build)

    def setup(self, name, model, data):
        self.run = _run(name, model, ITERATIONS)

    def peakmem_train(self, name, model, data):
        self.run()


class _Blocks:
    """The NumPy backend, updating in row blocks on its threads whatever OpenBLAS does (no product runs here)."""

    def __init__(self, backend):
        self._backend = backend

    def update_layout(self):
        return "blocks"

    def block_map(self):
        from anynet.backends.numpy import map_on_threads

        return map_on_threads

    def __getattr__(self, name):
        return getattr(self._backend, name)


class Update:
    """One update of a 3072x512 float32 weight (the FC net's first layer) on NumPy through the public
    ``Optimizer``: in one piece, or in row blocks on this machine's threads as the Solver lays it out on NumPy
    (``anynet.training.layouts``). No matrix product runs before it, so OpenBLAS's idle threads play no part
    here (see benchmarks/RESULTS.md): the blocks are timed whether or not the Solver would choose them in this
    process. Freed memory is kept, as in ``anynet train``: otherwise each fresh temporary of the size of the
    weight faults in and the page faults are what is timed."""

    params = (["adam", "sgd_momentum"], ["one-piece", "blocks"])
    param_names = ["rule", "layout"]

    def setup(self, rule, layout):
        import numpy as np

        from anynet.app.process import keep_freed_memory
        from anynet.training.layouts import row_blocks
        from anynet.training.optimizer import Optimizer

        keep_freed_memory()  # this benchmark's own process
        numpy_backend = backends.get("numpy")
        if layout == "blocks" and row_blocks(UPDATE_SHAPE, numpy_backend.threads()) is None:
            raise NotImplementedError("one CPU thread: no blocks")
        rng = np.random.default_rng(0)
        w, dw = (rng.standard_normal(UPDATE_SHAPE, dtype=np.float32) for _ in range(2))
        # Without a backend the optimizer updates each parameter in one call.
        self.optimizer = Optimizer(rule, {"learning_rate": 1e-3},
                                   backend=_Blocks(numpy_backend) if layout == "blocks" else None)
        self.params, self.grads = {"W1": w}, {"W1": dw}
        self.state = self.optimizer.init(self.params)
        self.time_update(rule, layout)  # the state exists from here on, as after a first step

    def time_update(self, rule, layout):
        self.params, self.state = self.optimizer.update(self.state, self.params, self.grads)
