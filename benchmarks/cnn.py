"""anynet's ConvNet step against its twin written in ``torch.nn``, each contestant in a process of its own.

``python benchmarks/cnn.py --contestants anynet-torch twin`` starts one worker process per contestant. Each
builds its net and a training set of CIFAR-10's shape (random images, or the CIFAR-10 files of ``--data-dir``)
on the device, warms up (compiles, where it compiles), then waits. The parent asks the workers in turn, round
after round (alternating, so that the machine's drift hits both alike), to time ``--steps`` training steps,
and prints each contestant's median images/s and the median of the per-round ratios to the first contestant.
Only one worker computes at a time: an idle library's threads cannot slow the other down.

Contestants: ``anynet-torch`` (compiled by ``torch.compile``), ``anynet-torch-eager``, ``anynet-numpy``,
``anynet-jax`` (``jax.jit``), ``anynet-cupy``, ``anynet-torch-bf16`` (bfloat16 convolutions and products),
``twin`` (the same layers in the same order, the same widths, biases and pooling, in ``torch.nn``, trained in
PyTorch eager, with ``torch.optim.SGD(nesterov=True)``), ``twin-bf16`` (the twin under
``torch.autocast(bfloat16)``) and ``twin-compiled`` (the twin's module through ``torch.compile``).
``--device cuda`` puts every contestant on the GPU (``anynet-numpy`` excepted).

A step is what a training loop repeats: the minibatch gathered from the training set on the device, the
forward and backward pass and the update (Nesterov SGD with weight decay). anynet's is its Solver's step
(``anynet.training.step``), the same function ``Solver.train`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CONTESTANTS = ("anynet-torch", "anynet-torch-eager", "anynet-numpy", "anynet-jax", "anynet-cupy", "anynet-torch-bf16",
               "twin", "twin-bf16", "twin-compiled")


def _cpu():
    """The CPU's model name (Linux), for the report's header."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _data(args):
    """Training images (N, 3, 32, 32) float32 and labels, NumPy."""
    import numpy as np

    N = args.batch_size * args.steps
    if args.data_dir:
        from anynet.data import get_cifar10_data

        data = get_cifar10_data(args.data_dir, num_training=N, num_validation=args.batch_size, num_test=0,
                                dtype="float32")
        return data["X_train"], data["y_train"]
    rng = np.random.default_rng(0)
    return rng.standard_normal((N, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, N)


def _anynet(name, args):
    """A function that runs ``args.steps`` anynet Solver steps and waits for the device."""
    import anynet
    from anynet.models import ConvNet

    backend = name.split("-")[1]
    X, y = _data(args)
    device = None if backend == "numpy" else args.device
    model = ConvNet(widths=args.widths, convs_per_stage=args.convs_per_stage, pool_after=args.pool_after,
                    precision="bfloat16" if name.endswith("bf16") else "float32", seed=0, backend=backend,
                    device=device)
    compile = name != "anynet-torch-eager" and backend in ("torch", "jax")
    solver = anynet.Solver(model, {"X_train": X, "y_train": y, "X_val": X[:8], "y_val": y[:8]},
                           update_rule="nesterov_sgd", optim_config={"learning_rate": 0.01, "weight_decay": 5e-4},
                           batch_size=args.batch_size, num_epochs=10**6, verbose=False, seed=0, compile=compile)
    solver._start_epoch(0)

    def run():
        for k in range(args.steps):
            solver.t = k  # the same epoch's batches, round after round
            solver._step()
        return float(solver.last_loss)  # waits for the device

    return run


def _twin(name, args):
    """The same net in ``torch.nn``, eager; a function that runs ``args.steps`` steps."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers, channels = [], 3
    for width in args.widths:
        for j in range(1, args.convs_per_stage + 1):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
            if j == (args.pool_after or args.convs_per_stage):
                layers.append(nn.MaxPool2d(2))
    device = torch.device(args.device or "cpu")
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)).to(device)
    decay = [p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest}], lr=0.01, momentum=0.9,
                          nesterov=True)
    X, y = (torch.from_numpy(a).to(device) for a in _data(args))
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(X.shape[0], device=device)
    low = name.endswith("bf16")
    model = torch.compile(net) if name == "twin-compiled" else net

    def run():
        for k in range(args.steps):
            idx = order[k * args.batch_size:(k + 1) * args.batch_size]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low):
                loss = loss_fn(model(X.index_select(0, idx)).float(), y.index_select(0, idx))
            loss.backward()
            opt.step()
        return float(loss.detach())

    return run


def worker(name, args):
    """A contestant's process: build, warm up, then time a round at each line read."""
    run = _twin(name, args) if name.startswith("twin") else _anynet(name, args)
    start = time.perf_counter()
    run()
    run()
    print(json.dumps({"ready": time.perf_counter() - start}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        run()
        print(json.dumps({"images_per_second": args.batch_size * args.steps / (time.perf_counter() - start)}),
              flush=True)


def _start(name, argv):
    return subprocess.Popen([sys.executable, __file__, "--worker", name, *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)


def _ask(proc, line=None):
    if line is not None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    reply = proc.stdout.readline()
    if not reply:
        raise RuntimeError(f"a contestant's process ended early (exit code {proc.wait()})")
    return json.loads(reply)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contestants", nargs="+", choices=CONTESTANTS, default=["anynet-torch", "twin"])
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--convs-per-stage", type=int, default=1)
    parser.add_argument("--pool-after", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="training steps a round times")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 (default: random images of its shape)")
    parser.add_argument("--device", default=None, help="e.g. cuda (default: each library's default; the twin's cpu)")
    parser.add_argument("--worker", choices=CONTESTANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args)
        return 0
    shared = ["--widths", *map(str, args.widths), "--convs-per-stage", str(args.convs_per_stage),
              "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    if args.pool_after:
        shared += ["--pool-after", str(args.pool_after)]
    if args.data_dir:
        shared += ["--data-dir", args.data_dir]
    if args.device:
        shared += ["--device", args.device]
    print(f"# {_cpu()}, {os.cpu_count()} CPUs; widths {args.widths}, {args.convs_per_stage} conv(s) a stage, "
          f"pool after {args.pool_after or args.convs_per_stage}; batch {args.batch_size}, {args.steps} steps a round")
    procs = {}
    for name in args.contestants:  # one at a time: a compiling contestant would slow another's warm-up
        procs[name] = _start(name, shared)
        print(f"{name}: ready in {_ask(procs[name])['ready']:.1f} s", flush=True)
    rates = {name: [] for name in args.contestants}
    try:
        for r in range(args.rounds):
            order = args.contestants if r % 2 == 0 else args.contestants[::-1]
            for name in order:
                rates[name].append(_ask(procs[name], "run")["images_per_second"])
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    first = args.contestants[0]
    for name in args.contestants:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates[first], strict=True))
        print(f"{name:20s} median {statistics.median(rates[name]):7.1f} images/s   {ratio:.3f}x {first} "
              f"(rounds: {', '.join(f'{v:.0f}' for v in rates[name])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
