"""The first notebook's CIFAR-10 experiments on ``anynet.neural_net.TwoLayerNet``: the sub-optimal net, then the search.

As in the notebook: ``load_CIFAR10``, the first ``--num-training`` images for
training and the next ``--num-validation`` for validation, the mean training
image subtracted, images flattened to rows. Then

1. the sub-optimal net (hidden 50, learning rate 1e-4, decay 0.95, reg 0.25,
   1000 iterations of batch 200), whose validation accuracy the course puts
   at 28-29%; and
2. the course's search over learning rates and decays for hidden size 50
   (reg 0.25, 1000 iterations of batch 200 each; plain SGD through
   ``TwoLayerNet.train``), keeping the net with the best validation accuracy
   (the goal: 50% or more), and its test accuracy.

``python examples/two_layer_search.py --data-dir DIR`` runs the whole thing
(30 nets: a few minutes on a 2-core CPU). For a quick run shrink the budgets:
``--num-iters 200 --rates 1e-3 1.6e-3 --decays 0.93``. ``--seed`` seeds NumPy's
global generator, which draws the weights and minibatches as in the course.
``main`` returns the measurements, so tests can call it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from anynet import backends
from anynet.data import data_root, load_CIFAR10
from anynet.neural_net import TwoLayerNet

RATES = (9e-4, 1e-3, 1.1e-3, 1.2e-3, 1.4e-3, 1.5e-3, 1.6e-3, 1.8e-3, 2e-3, 1e-4)
DECAYS = (0.91, 0.92, 0.93)


def get_cifar10_rows(folder, num_training=49000, num_validation=1000, num_test=1000):
    """The notebook's ``get_CIFAR10_data``: float64 rows (N, 3072) with the mean training image subtracted."""
    X_train, y_train, X_test, y_test = load_CIFAR10(folder)
    if num_training + num_validation > X_train.shape[0] or num_test > X_test.shape[0]:
        raise ValueError(
            f"asked for {num_training} + {num_validation} training and {num_test} test images; the data holds "
            f"{X_train.shape[0]} and {X_test.shape[0]}"
        )
    val = slice(num_training, num_training + num_validation)
    X_val, y_val = X_train[val], y_train[val]
    X_train, y_train = X_train[:num_training], y_train[:num_training]
    X_test, y_test = X_test[:num_test], y_test[:num_test]
    mean_image = np.mean(X_train, axis=0)
    X_train -= mean_image
    X_val -= mean_image
    X_test -= mean_image
    return (X_train.reshape(num_training, -1), y_train, X_val.reshape(num_validation, -1), y_val,
            X_test.reshape(num_test, -1), y_test)


def accuracy(net, X, y):
    """Fraction of ``X`` that ``net`` labels as ``y``."""
    return float(np.mean(backends.to_numpy(net.predict(X)) == y))


def parse_args(argv):
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py (default $ANYNET_DATA or ~/.cache/anynet)")
    p.add_argument("--num-training", type=int, default=49000)
    p.add_argument("--num-validation", type=int, default=1000)
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--hidden-size", type=int, default=50)
    p.add_argument("--num-iters", type=int, default=1000, help="SGD iterations per net (the course: 1000)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--reg", type=float, default=0.25)
    p.add_argument("--std", type=float, default=1e-4, help="initial weight scale (the notebook: the default, 1e-4)")
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES), help="learning rates to try")
    p.add_argument("--decays", type=float, nargs="+", default=list(DECAYS), help="learning-rate decays to try")
    p.add_argument("--no-subopt", action="store_true", help="skip the sub-optimal net")
    p.add_argument("--seed", type=int, default=0, help="np.random.seed before the first net (default 0)")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--verbose", action="store_true", help="print the loss every 100 iterations, as the notebook")
    return p.parse_args(argv)


def main(argv=None):
    """Run the experiments; return a dict of the measured accuracies and the best hyperparameters."""
    args = parse_args(argv)
    folder = data_root(args.data_dir)
    start = time.perf_counter()
    X_train, y_train, X_val, y_val, X_test, y_test = get_cifar10_rows(
        folder, args.num_training, args.num_validation, args.num_test)
    print(f"data: {X_train.shape[0]} training, {X_val.shape[0]} validation, {X_test.shape[0]} test rows "
          f"of {X_train.shape[1]} ({time.perf_counter() - start:.1f} s)")
    np.random.seed(args.seed)  # noqa: NPY002 - the course's nets draw from NumPy's global generator
    D, H, C = X_train.shape[1], args.hidden_size, 10

    def train(rate, decay):
        net = TwoLayerNet(D, H, C, std=args.std, backend=args.backend)
        net.train(X_train, y_train, X_val, y_val, num_iters=args.num_iters, batch_size=args.batch_size,
                  learning_rate=rate, learning_rate_decay=decay, reg=args.reg, verbose=args.verbose)
        return net, accuracy(net, X_val, y_val)

    result = {}
    if not args.no_subopt:
        t = time.perf_counter()
        _, result["subopt_val_acc"] = train(1e-4, 0.95)
        print(f"sub-optimal net (learning rate 1e-4, decay 0.95): validation accuracy {result['subopt_val_acc']:.3f} "
              f"({time.perf_counter() - t:.1f} s)")

    best, best_net = None, None
    t = time.perf_counter()
    for decay in args.decays:
        for rate in args.rates:
            net, val_acc = train(rate, decay)
            print(f"validation accuracy {val_acc:.3f} for learning rate {rate:g} and decay {decay:g}")
            if best is None or val_acc > best[0]:
                best, best_net = (val_acc, rate, decay), net
    result.update(best_val_acc=best[0], best_rate=best[1], best_decay=best[2],
                  test_acc=accuracy(best_net, X_test, y_test), search_seconds=time.perf_counter() - t)
    print(f"best validation accuracy {best[0]:.3f} for learning rate {best[1]:g} and decay {best[2]:g}; "
          f"its test accuracy {result['test_acc']:.3f} "
          f"({len(args.rates) * len(args.decays)} nets in {result['search_seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"two_layer_search.py: {exc}")
