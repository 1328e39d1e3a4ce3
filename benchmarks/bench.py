"""Side by side: anynet's Solver, PyTorch eager and the GEMM floor, in one process.

The three train the same model (same widths, batch size, dtype float32 and
thread count) on the same data, taking turns, and the medians of their
images-per-second figures are compared. anynet and PyTorch do the same work:
PyTorch's loop also keeps the Solver's books (losses, accuracy at the same
steps on as many images, a copy of the best parameters). The GEMM floor times
only the matrix products one training step needs (for L affine layers: L
forward, L weight gradients and L - 1 input gradients, since nobody needs the
gradient with respect to the images), through the BLAS of the backend's own
library; no training loop can beat it.

For the two-layer net on a CPU a fourth contestant, ``numpy_loop``, trains it
with a hand-written NumPy loop (the same work again): ``anynet/numpy_loop`` is
what the library's layers, model and Solver cost over plain NumPy.

A program: ``python benchmarks/bench.py --help`` (what ``anynet bench`` runs,
in a source checkout; ``benchmarks/compare.py`` too), with the flag names of
``anynet train``. Run so, it sets up its own process before NumPy loads, as
``anynet train`` sets up its own for the update rule of the model it trains
(``trains_with_state``), and keeps freed memory for every contestant. As a
module, ``compare(...)`` returns the figures as a dict. It lives beside the
package, not in it: an installed anynet has no benchmark harness.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

# Update rule of each model: a rule that keeps state updates in row blocks, which OpenBLAS's spinning threads
# would slow (anynet.app.process.prepare_process); told before NumPy loads.
RULES = {"two-layer": "sgd", "fc": "adam"}


def trains_with_state(argv):
    """Whether the command line ``argv`` benchmarks a model whose update rule keeps state (not plain SGD)."""
    from anynet.app.flags import flag_value  # NumPy-free, as everything this program runs before NumPy loads

    return RULES.get(flag_value(argv, "--model") or "two-layer", "sgd") != "sgd"


def _prepare_process(argv):
    """Set up this process for the benchmark ``argv`` asks for; before NumPy loads.

    Without threadpoolctl the BLAS's thread count can only be set through
    the environment before NumPy is imported: ``--threads N`` is exported
    first. Then OpenBLAS is told what ``anynet train`` tells it for the
    model's rule.
    """
    from anynet.app.flags import flag_value
    from anynet.app.process import prepare_process

    threads = flag_value(argv, "--threads")
    if threads and threads.isdigit():
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = threads
    prepare_process(trains_with_state(argv))


if __name__ == "__main__":  # run as a program, by anynet bench or compare.py: this checkout's anynet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _prepare_process(sys.argv[1:])

import numpy as np  # noqa: E402

from anynet import backends  # noqa: E402
from anynet.app.info import cpu_model  # noqa: E402
from anynet.app.process import keep_freed_memory, limit_threads  # noqa: E402
from anynet.data import find_cifar10 as _find_cifar10  # noqa: E402
from anynet.data import load_batch  # noqa: E402
from anynet.data.download import TRAIN_BATCHES  # noqa: E402
from anynet.nn import checks  # noqa: E402

MODELS = ("two-layer", "fc")
FC_HIDDEN = (512, 256)
FC_DROPOUT = 0.25
COMPILE = {"auto": "auto", "on": True, "off": False}  # --compile -> the Solver's compile=
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def set_threads(n):
    """Limit NumPy's BLAS, anynet's own threads and PyTorch to ``n`` threads; return how BLAS was limited."""
    try:
        import torch  # noqa: F401  (loaded now, so that its contestant is limited too)
    except ImportError:
        pass
    return limit_threads(n)


def blas_info():
    """One line per BLAS NumPy loaded (library, version, kernel, threads), when threadpoolctl can tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed: BLAS kernel unknown"]
    return [
        f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} threads={i.get('num_threads')}"
        for i in threadpool_info() if i.get("user_api") == "blas"
    ]


def find_cifar10(data_dir=None):
    """The cifar-10-batches-py folder under ``data_dir`` (default ``$ANYNET_DATA``), or None.

    Unlike training, a benchmark never looks in the default cache folder nor downloads: without the data it
    times random images of the same shape.
    """
    data_dir = data_dir or os.environ.get("ANYNET_DATA")
    return _find_cifar10(data_dir) if data_dir else None


def load_data(num_train, num_val, data_dir=None, seed=0):
    """Training and validation data of CIFAR-10's shape, float32 on the host.

    The real CIFAR-10 (mean-subtracted, scaled) when ``data_dir`` or
    ``$ANYNET_DATA`` holds it, else standard-normal images with random labels.

    Returns
    -------
    data : dict
        ``X_train, y_train, X_val, y_val`` as NumPy arrays.
    source : str
        "cifar10" or "random".
    """
    folder = find_cifar10(data_dir)
    if folder is None:
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((num_train + num_val, *IMAGE_SHAPE), dtype=np.float32)
        y = rng.integers(0, NUM_CLASSES, num_train + num_val)
        source = "random"
    else:
        parts, have = [], 0
        for name in TRAIN_BATCHES:
            if have >= num_train + num_val:
                break
            parts.append(load_batch(folder / name))
            have += parts[-1][0].shape[0]
        X = np.concatenate([p[0] for p in parts])[: num_train + num_val]
        X = X.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # channels first, as get_cifar10_data
        y = np.concatenate([p[1] for p in parts])[: num_train + num_val]
        X -= X[:num_train].mean(axis=0)
        X /= 64.0
        source = "cifar10"
    if X.shape[0] < num_train + num_val:
        raise ValueError(f"the data holds {X.shape[0]} images; {num_train + num_val} were asked for")
    data = {
        "X_train": X[:num_train], "y_train": y[:num_train],
        "X_val": X[num_train:], "y_val": y[num_train:],
    }
    return data, source


def _layer_dims(model, hidden):
    """[D, hidden..., C] for ``model``."""
    widths = list(FC_HIDDEN) if model == "fc" else [hidden]
    return [int(np.prod(IMAGE_SHAPE)), *widths, NUM_CLASSES]


def check_steps(iterations, per_epoch):
    """The steps after which ``Solver.train()`` measures accuracy: the first, each epoch's last, the last."""
    return {1, iterations, *range(per_epoch, iterations + 1, per_epoch)}


def _synchronizer(backend, device):
    """A function that waits for the device of ``backend`` (a no-op on the CPU)."""
    if backend == "cupy":
        import cupy

        return lambda: cupy.cuda.get_current_stream().synchronize()
    if backend == "torch" and str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def peak_device_bytes(backend, device):
    """Peak bytes the allocator of ``backend`` has held on ``device``; None on the CPU.

    CuPy's memory pool keeps every block it ever allocated, so its size is its
    peak; PyTorch reports ``max_memory_allocated``.
    """
    if backend == "cupy":
        import cupy

        return cupy.get_default_memory_pool().total_bytes()
    if backend == "torch" and str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device)
    return None


class AnynetRun:
    """Trains with ``anynet.Solver``; ``__call__`` times one run of ``iterations`` steps."""

    def __init__(self, data, backend, device, model, hidden, batch_size, iterations, seed=0, compile="auto"):
        from anynet.models import FullyConnectedNet, TwoLayerNet

        D = int(np.prod(data["X_train"].shape[1:]))  # CIFAR-10's 3072, or what smaller benchmarks hand in
        if model == "fc":
            net = FullyConnectedNet(
                list(FC_HIDDEN), input_dim=D, dropout=FC_DROPOUT, use_batchnorm=True, weight_scale=5e-2,
                dtype="float32", seed=seed, backend=backend, device=device,
            )
        else:
            net = TwoLayerNet(
                input_dim=D, hidden_dims=hidden, weight_scale=1e-3, dtype="float32", seed=seed,
                backend=backend, device=device,
            )
        self.rule, self.optim_config = RULES[model], {"learning_rate": 1e-3}
        self.model = net
        # On the host: a backend that donates parameter buffers to a compiled step (jax) deletes the arrays
        # one run started from, and every run starts from the same weights.
        self.initial = {k: backends.to_numpy(v).copy() for k, v in net.params.items()}
        self.data = data
        self.batch_size, self.iterations, self.seed = batch_size, iterations, seed
        if compile not in COMPILE:
            raise ValueError(f"compile must be one of {', '.join(COMPILE)}; got {compile!r}")
        self.compile = COMPILE[compile]
        self.sync = _synchronizer(backend, net.device)
        self.solver = None
        self._prepare()

    def _prepare(self):
        """Build the next run's Solver outside the timed region (it moves and checks the data once)."""
        from anynet.training.solver import Solver

        xp, device = self.model.xp, self.model.device
        self.model.params = {k: xp.asarray(v, device=device) for k, v in self.initial.items()}
        for bn in self.model.bn_params:
            bn.clear()
            bn["mode"] = "train"
        self.solver = Solver(
            self.model, self.data, update_rule=self.rule, optim_config=dict(self.optim_config),
            batch_size=self.batch_size, num_iterations=self.iterations, num_train_samples=self.batch_size,
            num_val_samples=self.batch_size, verbose=False, seed=self.seed, compile=self.compile,
        )
        # Later Solvers reuse the arrays already on the device: no transfer, no copy.
        self.data = {k: getattr(self.solver, k) for k in ("X_train", "y_train", "X_val", "y_val")}
        self.sync()

    def __call__(self):
        """Seconds for one ``Solver.train()`` of ``iterations`` steps; compiling is not counted (reported apart)."""
        start = time.perf_counter()
        self.solver.train()
        self.sync()
        seconds = time.perf_counter() - start - self.solver.compile_seconds
        self.compile_seconds = self.solver.compile_seconds
        self._prepare()
        return seconds


class TorchRun:
    """The same model written the way a PyTorch user writes it: eager, batches by tensor indexing."""

    def __init__(self, data, device, model, hidden, batch_size, iterations, seed=0):
        import torch
        from torch import nn

        self.torch = torch
        self.device = torch.device(device)
        torch.manual_seed(seed)
        dims = _layer_dims(model, hidden)
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                if model == "fc":
                    layers.append(nn.BatchNorm1d(dims[i + 1]))
                layers.append(nn.ReLU())
                if model == "fc":
                    layers.append(nn.Dropout(FC_DROPOUT))
        self.net = nn.Sequential(*layers).to(self.device).train()
        if model == "fc":
            self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        else:
            self.opt = torch.optim.SGD(self.net.parameters(), lr=1e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        self.X, self.y = self._tensors(data["X_train"], data["y_train"])
        self.X_val, self.y_val = self._tensors(data["X_val"], data["y_val"])
        self.batch_size, self.iterations = batch_size, iterations
        self.per_epoch = max(self.X.shape[0] // batch_size, 1)
        self.checks = check_steps(iterations, self.per_epoch)
        self.sync = _synchronizer("torch", self.device)

    def _tensors(self, X, y):
        """Images as (N, D) float32 and labels as int64, on the device."""
        torch = self.torch
        X = torch.from_numpy(np.ascontiguousarray(X)).reshape(X.shape[0], -1)
        return X.to(self.device), torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)

    def __call__(self):
        """Seconds for ``iterations`` training steps, epochs drawn by ``randperm``.

        It keeps the books a ``Solver`` keeps, at the same steps: the losses, the accuracy on as many
        training and validation images, a copy of the best parameters.
        """
        torch, B = self.torch, self.batch_size
        self.pending, self.loss_history, self.acc_history, self.best_val_acc, self.best = [], [], [], -1.0, None
        start = time.perf_counter()
        for t in range(self.iterations):
            k = t % self.per_epoch
            if k == 0:
                order = torch.randperm(self.X.shape[0], device=self.device)
            idx = order[k * B:(k + 1) * B]
            loss = self.loss_fn(self.net(self.X[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.pending.append(loss.detach())
            if t + 1 in self.checks:
                self._record_accuracy()
        self.sync()
        return time.perf_counter() - start

    def _accuracy(self, X, y):
        """Accuracy on ``batch_size`` images of ``X`` drawn without replacement (all, if no more)."""
        if X.shape[0] > self.batch_size:
            idx = self.torch.randperm(X.shape[0], device=self.device)[: self.batch_size]
            X, y = X[idx], y[idx]
        return (self.net(X).argmax(dim=1) == y).sum().item() / X.shape[0]

    def _record_accuracy(self):
        """What ``Solver._record_accuracy`` does, written the PyTorch way."""
        self.loss_history += self.torch.stack(self.pending).tolist()  # one transfer, as the Solver's flush
        self.pending = []
        with self.torch.no_grad():
            self.net.eval()
            train_acc, val_acc = self._accuracy(self.X, self.y), self._accuracy(self.X_val, self.y_val)
            self.net.train()
        self.acc_history.append((train_acc, val_acc))
        if val_acc > self.best_val_acc or self.best is None:
            self.best_val_acc = val_acc
            self.best = {k: v.clone() for k, v in self.net.state_dict().items()}


class NumpyLoop:
    """TwoLayerNet trained by a hand-written NumPy loop: what anynet's layers, model and Solver cost over it.

    The step is written inline the way a NumPy user who knows the tricks writes it (fancy indexing,
    updates in place, no checks), and it keeps the same books as the Solver at the same steps (losses,
    accuracy, a copy of the best parameters), so that the two do the same work.
    """

    def __init__(self, data, hidden, batch_size, iterations, seed=0):
        def flat(X):
            return np.ascontiguousarray(X, dtype=np.float32).reshape(X.shape[0], -1)

        self.X, self.y = flat(data["X_train"]), np.asarray(data["y_train"], dtype=np.int64)
        self.X_val, self.y_val = flat(data["X_val"]), np.asarray(data["y_val"], dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        D, H, C = self.X.shape[1], hidden, NUM_CLASSES
        # TwoLayerNet's start: weights from N(0, 1e-3 ** 2), zero biases.
        self.initial = {
            "W1": (self.rng.standard_normal((D, H)) * 1e-3).astype(np.float32), "b1": np.zeros(H, np.float32),
            "W2": (self.rng.standard_normal((H, C)) * 1e-3).astype(np.float32), "b2": np.zeros(C, np.float32),
        }
        self.lr = np.float32(1e-3)
        self.batch_size, self.iterations = batch_size, iterations
        self.per_epoch = max(self.X.shape[0] // batch_size, 1)
        self.checks = check_steps(iterations, self.per_epoch)

    def __call__(self):
        """Seconds for ``iterations`` training steps, one permutation an epoch."""
        p = {k: v.copy() for k, v in self.initial.items()}
        B, N = self.batch_size, self.X.shape[0]
        self.loss_history, self.acc_history, self.best_val_acc, self.best = [], [], -1.0, None
        start = time.perf_counter()
        for t in range(self.iterations):
            k = t % self.per_epoch
            if k == 0:
                order = self.rng.permutation(N)
            idx = order[k * B:(k + 1) * B]
            self.loss_history.append(self.step(p, self.X[idx], self.y[idx]))
            if t + 1 in self.checks:
                self._record_accuracy(p)
        return time.perf_counter() - start

    def step(self, p, x, y):
        """One SGD step on the batch ``x, y``, updating ``p`` in place; returns the loss."""
        B = x.shape[0]
        h = x @ p["W1"]
        h += p["b1"]
        np.maximum(h, 0, out=h)
        s = h @ p["W2"]
        s += p["b2"]
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        z = e.sum(axis=1, keepdims=True)
        rows = np.arange(B)
        loss = float(np.log(z).mean() - s[rows, y].mean())
        ds = e / z
        ds[rows, y] -= 1
        ds /= B
        dh = ds @ p["W2"].T
        dh *= h > 0
        grads = {"W1": x.T @ dh, "b1": dh.sum(axis=0), "W2": h.T @ ds, "b2": ds.sum(axis=0)}
        for name, dw in grads.items():
            dw *= self.lr
            p[name] -= dw
        return loss

    def _accuracy(self, p, X, y):
        """Accuracy on ``batch_size`` images of ``X`` drawn without replacement (all, if no more)."""
        if X.shape[0] > self.batch_size:
            idx = self.rng.choice(X.shape[0], self.batch_size, replace=False)
            X, y = X[idx], y[idx]
        scores = np.maximum(X @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]
        return float(np.mean(scores.argmax(axis=1) == y))

    def _record_accuracy(self, p):
        """What ``Solver._record_accuracy`` does, in plain NumPy."""
        train_acc, val_acc = self._accuracy(p, self.X, self.y), self._accuracy(p, self.X_val, self.y_val)
        self.acc_history.append((train_acc, val_acc))
        if val_acc > self.best_val_acc or self.best is None:
            self.best_val_acc = val_acc
            self.best = {k: v.copy() for k, v in p.items()}


class GemmFloor:
    """Only the matrix products of one training step, into preallocated outputs."""

    def __init__(self, backend, device, model, hidden, batch_size, iterations, seed=0):
        dims = _layer_dims(model, hidden)
        if backend == "cupy":
            import cupy as lib

            self.where = f"cupy (cuBLAS) on GPU {lib.cuda.Device().id}"
            rng = lib.random.default_rng(seed)

            def normal(shape):
                return rng.standard_normal(shape, dtype=lib.float32)
        elif backend == "torch":
            import torch as lib

            dev = lib.device(device)
            self.where = f"torch on {dev}"
            gen = lib.Generator(device=dev)
            gen.manual_seed(seed)

            def normal(shape):
                return lib.randn(shape, generator=gen, device=dev, dtype=lib.float32)
        else:
            lib = np
            self.where = "numpy"
            rng = np.random.default_rng(seed)

            def normal(shape):
                return rng.standard_normal(shape, dtype=np.float32)
        self.matmul = lib.matmul
        B = batch_size
        self.a = [normal((B, d)) for d in dims]  # a[0] is the batch, a[i] layer i's output
        self.w = [None] + [normal((dims[i - 1], dims[i])) for i in range(1, len(dims))]
        self.da = [normal((B, d)) for d in dims]
        self.dw = [None] + [normal(w.shape) for w in self.w[1:]]
        self.iterations = iterations
        self.sync = _synchronizer(backend, device)

    def __call__(self):
        """Seconds for ``iterations`` steps' worth of products."""
        mm, a, w, da, dw = self.matmul, self.a, self.w, self.da, self.dw
        L = len(w) - 1
        start = time.perf_counter()
        for _ in range(self.iterations):
            for i in range(1, L + 1):
                mm(a[i - 1], w[i], out=a[i])
            for i in range(L, 0, -1):
                mm(a[i - 1].T, da[i], out=dw[i])
                if i > 1:
                    mm(da[i], w[i].T, out=da[i - 1])
        self.sync()
        return time.perf_counter() - start


def compare(
    backend="numpy", device=None, model="two-layer", hidden=100, batch_size=200, threads=None,
    repeats=5, iterations=100, num_train=None, data_dir=None, seed=0, torch_device=None, log=None,
    keep_memory=True, compile="auto",
):
    """Train one model three ways (four: the two-layer net on a CPU), taking turns, and return the figures.

    Parameters
    ----------
    backend : str
        anynet's backend: numpy, torch, cupy or array_api_strict.
    device : optional
        anynet's device ("cuda", "cuda:1", 0 ...); default the backend's.
    model : {"two-layer", "fc"}
        TwoLayerNet of width ``hidden`` with SGD, or FullyConnectedNet
        [512, 256] with batch normalization, dropout 0.25 and Adam.
    hidden : int
        Hidden width of the two-layer net.
    batch_size, iterations, repeats : int
        Each timed run trains ``iterations`` minibatches; ``repeats`` runs each.
    threads : int, optional
        CPU threads for NumPy's BLAS and PyTorch (default: all cores).
    num_train : int, optional
        Training images (default max(10000, 12 * batch_size)).
    data_dir : str, optional
        Folder holding cifar-10-batches-py (default ``$ANYNET_DATA``); random data otherwise.
    torch_device : str, optional
        PyTorch's device; default cuda for GPU backends, else cpu.
    log : callable, optional
        Receives progress lines.
    keep_memory : bool
        Call ``anynet.app.process.keep_freed_memory()`` first (glibc; the whole process, so every
        contestant, as ``anynet train`` does for itself). With glibc's default the heap's history decides
        whose freed minibatches go back to the OS and fault in again, so the same code runs at different
        speeds from one process to the next (benchmarks/RESULTS.md, "glibc's heap history").
    compile : {"auto", "on", "off"}
        Whether anynet's Solver compiles its step (``anynet train --compile``).

    Returns
    -------
    dict
        ``images_per_s`` (contestant -> list of runs), ``median``, ``ratios``
        and a description of the setup, whose ``gc`` counts the garbage
        collections inside each contestant's timed runs (the collector also
        runs before each of them, off the clock).
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
    for name, value in (("hidden", hidden), ("batch_size", batch_size), ("repeats", repeats),
                        ("iterations", iterations)):
        checks.integer(name, value)
    log = log or (lambda line: None)
    threads = threads or os.cpu_count() or 1
    thread_control = set_threads(threads)
    kept = keep_memory and keep_freed_memory()
    place = backends.get(backend, device)
    dev, on_gpu = place.device, place.on_gpu
    if torch_device is None:
        torch_device = "cuda" if on_gpu else "cpu"
    # At least 12 steps an epoch (CIFAR-10's 49,000 images at batch 4096), so the Solver's per-epoch
    # bookkeeping (accuracy checks, the epoch's order) weighs as it does in a real run.
    num_train = num_train or max(10_000, 12 * batch_size)
    data, source = load_data(num_train, batch_size, data_dir, seed)

    contestants = {"anynet": AnynetRun(data, backend, dev, model, hidden, batch_size, iterations, seed, compile)}
    if model == "two-layer" and not on_gpu:
        contestants["numpy_loop"] = NumpyLoop(data, hidden, batch_size, iterations, seed)
    notes = []
    try:
        import torch

        if torch_device.startswith("cuda") and not torch.cuda.is_available():
            notes.append("PyTorch sees no GPU: its contestant was left out")
        else:
            contestants["torch"] = TorchRun(data, torch_device, model, hidden, batch_size, iterations, seed)
    except ImportError:
        notes.append("PyTorch is not installed: its contestant was left out")
    floor_backend = backend if backend in ("cupy", "torch") else "numpy"
    contestants["gemm_floor"] = GemmFloor(floor_backend, dev, model, hidden, batch_size, iterations, seed)

    for name, run in contestants.items():  # warm-up: caches, allocator pools, lazy init
        run()
        log(f"warmed up {name}")
    runs = {name: [] for name in contestants}
    gc_watch = _GcWatch(contestants)
    with gc_watch:
        for r in range(repeats):
            for name, run in contestants.items():
                gc.collect()  # what the last run left is not collected on the next one's clock
                gc_watch.who = name
                runs[name].append(batch_size * iterations / run())
                gc_watch.who = None
            log(f"round {r + 1}/{repeats}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in runs.items()))
    median = {name: statistics.median(v) for name, v in runs.items()}
    notes += unsteady(runs)
    pairs = [("anynet", "torch"), ("anynet", "gemm_floor"), ("torch", "gemm_floor"), ("anynet", "numpy_loop"),
             ("numpy_loop", "torch")]
    pairs = [(a, b) for a, b in pairs if a in median and b in median]
    ratios = {f"{a}/{b}": median[a] / median[b] for a, b in pairs}
    # The machine's speed drifts between rounds; a ratio within each round cancels the drift.
    ratios.update({
        f"{a}/{b} (paired)": statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))
        for a, b in pairs
    })
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for lib in ("torch", "cupy", "array_api_compat"):
        module = sys.modules.get(lib)
        if module is not None:
            versions[lib] = getattr(module, "__version__", "?")
    import anynet

    versions["anynet"] = getattr(anynet, "__version__", "?")
    setup = {
        "backend": backend, "device": str(dev), "torch_device": torch_device if "torch" in runs else None,
        "model": model if model == "fc" else f"two-layer hidden {hidden}", "compile": compile,
        "batch_size": batch_size, "dtype": "float32", "iterations": iterations, "repeats": repeats,
        "threads": threads, "thread_control": thread_control, "data": source, "num_train": num_train,
        "malloc": "glibc keeps freed memory (mallopt)" if kept else "default glibc malloc",
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores", "blas": blas_info(), "floor": contestants["gemm_floor"].where,
        "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M"), "notes": notes,
        "gc": gc_watch.totals,
    }
    if on_gpu:
        setup["gpu"] = _gpu_name(backend)
    return {"images_per_s": runs, "median": median, "ratios": ratios, "setup": setup}


def unsteady(runs, spread=1.25):
    """A note for each contestant whose fastest run was more than ``spread`` times its slowest.

    Some machines switch speed for seconds to minutes (a shared VM: memory-bound work much slower in one
    state). Paired ratios cancel a drift between rounds but not a change of state within a run; such a run
    is worth repeating before its figures are quoted. ``spread`` sits just above what steady runs spread by
    (benchmarks/RESULTS.md, "The slow state is per process").
    """
    notes = []
    for name, rates in runs.items():
        if len(rates) > 1 and max(rates) > spread * min(rates):
            notes.append(f"{name}'s runs span {max(rates) / min(rates):.2f}x (slowest to fastest): the machine "
                         "changed speed during the run; repeat it before quoting these figures")
    return notes


class _GcWatch:
    """Garbage collections, and their time, inside each contestant's timed runs (``who`` says whose run it is).

    With PyTorch imported a full collection takes about as long as a whole timed run of a small model on a
    GPU (benchmarks/RESULTS.md), so one that lands in a run makes that run an outlier.
    """

    def __init__(self, names):
        self.totals = {name: {"full": 0, "collections": 0, "ms": 0.0} for name in names}
        self.who = None
        self._start = None

    def _callback(self, phase, info):
        if self.who is None:
            return
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            total = self.totals[self.who]
            total["collections"] += 1
            total["full"] += info["generation"] == 2
            total["ms"] += (time.perf_counter() - self._start) * 1e3
            self._start = None

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)


def _gpu_name(backend):
    """The name of the current CUDA device."""
    try:
        if backend == "cupy":
            import cupy

            return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
        import torch

        return torch.cuda.get_device_name()
    except Exception as exc:  # the name is a nicety: never fail a benchmark over it
        return f"unknown GPU ({exc})"


def format_report(result):
    """The figures of ``compare`` as text, one fact a line."""
    s = result["setup"]
    lines = [
        f"date {s['date']}; {s['cpu']}" + (f"; GPU {s['gpu']}" if "gpu" in s else ""),
        f"model {s['model']}, batch {s['batch_size']}, {s['dtype']}, {s['iterations']} iterations x "
        f"{s['repeats']} alternating runs, {s['threads']} threads ({s['thread_control']}), data {s['data']} "
        f"({s['num_train']} training images), {s['malloc']}",
        f"anynet backend {s['backend']} on {s['device']}; torch on {s['torch_device']}; floor {s['floor']}",
        "BLAS: " + "; ".join(s["blas"]),
        "versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items()),
    ]
    lines += [f"note: {n}" for n in s["notes"]]
    lines.append(f"{'':12s} {'median images/s':>16s}   runs")
    for name, runs in result["images_per_s"].items():
        lines.append(
            f"{name:12s} {result['median'][name]:16,.0f}   " + " ".join(f"{v:,.0f}" for v in runs)
        )
    lines += [f"{k:18s} {v:.3f}" for k, v in result["ratios"].items()]
    lines.append("garbage collection in the timed runs: " + "; ".join(
        f"{name} {g['collections']} ({g['full']} full), {g['ms']:.1f} ms" for name, g in s["gc"].items()))
    return "\n".join(lines)


def build_parser(prog=None):
    """The parser of this program (``anynet bench``, ``benchmarks/compare.py``); ``prog`` names it in messages.

    Flags shared with ``anynet train`` have its names (``--hidden-dims``,
    ``--data-dir``, ``--num-training``, ``--compile``); ``$ANYNET_BACKEND`` and
    ``$ANYNET_DEVICE`` stand for ``--backend`` and ``--device``. Errors are
    ``anynet train``'s: one line, exit code 2.
    """
    from anynet.app.cli import ArgumentParser
    from anynet.app.flags import non_negative_int, positive_int
    from anynet.backends import BACKENDS

    parser = ArgumentParser(
        prog=prog,
        description="Train the same model three ways in one process, alternating, and print the median images/s "
        "and their ratios: anynet through the Solver, PyTorch eager, and only the matrix products of a step "
        "(and, for the two-layer net on a CPU, a hand-written NumPy loop).",
    )
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="anynet's backend (default: $ANYNET_BACKEND, else numpy)")
    parser.add_argument("--device", default=None,
                        help="anynet's device, e.g. cpu, cuda, cuda:1 (default: $ANYNET_DEVICE, else the backend's)")
    parser.add_argument("--torch-device", default=None, help="PyTorch's device (default: cuda on a GPU run, else cpu)")
    parser.add_argument("--model", choices=MODELS, default="two-layer",
                        help=f"two-layer (SGD), or fc: {' '.join(map(str, FC_HIDDEN))} with batchnorm, dropout "
                             f"{FC_DROPOUT} and Adam (default: two-layer)")
    parser.add_argument("--hidden-dims", dest="hidden", type=positive_int, default=100, metavar="N",
                        help="hidden width of the two-layer net (default: 100)")
    parser.add_argument("--batch-size", type=positive_int, default=200, metavar="N", help="images per minibatch "
                        "(default: 200)")
    parser.add_argument("--compile", choices=tuple(COMPILE), default="auto",
                        help="whether anynet's Solver compiles its step, as anynet train --compile (default: auto)")
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=positive_int, default=5, metavar="N",
                        help="alternating timed runs of each (median; default: 5)")
    parser.add_argument("--iterations", type=positive_int, default=100, metavar="N",
                        help="training steps per timed run (default: 100)")
    parser.add_argument("--num-training", dest="num_train", type=positive_int, default=None, metavar="N",
                        help="training images (default: max(10000, 12 x batch))")
    parser.add_argument("--data-dir", dest="data", default=None, metavar="DIR",
                        help="folder holding cifar-10-batches-py (default: $ANYNET_DATA; random images without it)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--default-malloc", dest="keep_memory", action="store_false",
                        help="leave glibc's malloc as it is; by default freed memory is kept for reuse, for every "
                             "contestant, as anynet train does: otherwise the heap's history decides whose "
                             "minibatches fault in afresh, and ratios swing from run to run")
    parser.set_defaults(keep_memory=True)
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    return parser


def run_from_args(args):
    """Run ``compare`` with parsed ``args``, print the report and return the exit status."""
    from anynet.app.flags import environment_defaults

    place = environment_defaults()
    backend = args.backend or place.get("backend", "numpy")
    device = args.device if args.device is not None else place.get("device")
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = compare(
        backend=backend, device=device, model=args.model, hidden=args.hidden,
        batch_size=args.batch_size, threads=args.threads, repeats=args.repeats, iterations=args.iterations,
        num_train=args.num_train, data_dir=args.data, seed=args.seed, torch_device=args.torch_device, log=log,
        keep_memory=args.keep_memory, compile=args.compile,
    )
    print(format_report(result))
    return 0


def main(argv=None, prog=None):
    """Command-line entry point; returns the exit status (2, with one line on stderr, for what the user can fix)."""
    from anynet.app.cli import guarded

    parser = build_parser(prog)
    args = parser.parse_args(argv)
    return guarded(parser.prog, run_from_args, args)


if __name__ == "__main__":
    sys.exit(main(prog=os.environ.get("ANYNET_PROG")))
