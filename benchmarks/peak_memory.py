"""Peak device memory and end-to-end speed of a full CIFAR-10-sized training run.

``python benchmarks/peak_memory.py --backend cupy`` trains through the public
``Solver`` on 49,000 training and 1,000 validation images of CIFAR-10's shape
(the real data when ``$ANYNET_DATA`` holds it, random images otherwise), with
per-epoch accuracy checks, and prints the wall time, images/s and the peak
memory the backend's allocator held on the device: CuPy's memory pool (it keeps
every block it ever allocated, so its size at the end is its peak) or
``torch.cuda.max_memory_allocated``. On the CPU it prints the peak resident
memory of the process instead.
"""

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for benchmarks.bench


def main(argv=None):
    """Run one training and print its figures; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--device", default=None)
    parser.add_argument("--model", choices=("two-layer", "fc"), default="two-layer")
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=49_000)
    args = parser.parse_args(argv)

    from anynet import backends
    from benchmarks.bench import AnynetRun, load_data, peak_device_bytes

    data, source = load_data(args.num_train, 1000)
    device = backends.get(args.backend, args.device).device
    iterations = args.epochs * (args.num_train // args.batch_size)
    run = AnynetRun(data, args.backend, device, args.model, args.hidden, args.batch_size, iterations)
    run.solver.num_train_samples = run.solver.num_val_samples = 1000  # the course's accuracy checks
    del data
    seconds = run()
    peak = peak_device_bytes(args.backend, run.model.device)
    train_bytes = args.num_train * 3 * 32 * 32 * 4
    where = f"{args.backend} on {run.model.device}"
    what = f"two-layer (hidden {args.hidden})" if args.model == "two-layer" else "fc [512, 256] bn dropout adam"
    print(f"{where}: {what}, batch {args.batch_size}, {args.epochs} epochs of "
          f"{args.num_train} images ({source} data), float32: {seconds:.2f} s, "
          f"{iterations * args.batch_size / seconds:,.0f} images/s including per-epoch accuracy checks")
    if peak is not None:
        print(f"peak device memory held by the allocator: {peak / 2**20:,.0f} MiB "
              f"(training set {train_bytes / 2**20:,.0f} MiB, held once)")
    print(f"peak resident host memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
