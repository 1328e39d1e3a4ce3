"""Train a tied-weight linear autoencoder and compare its code space with PCA.

Minimizing ``L(W) = 1/2 sum_j ||W^T W x_j - x_j||^2`` over W of shape (m, n)
(``anynet.objectives.linear_autoencoder_loss``) with an anynet update rule
recovers the top-m principal subspace of the (centered) data: the rows of W
end up spanning the same subspace as the first m left singular vectors of X.
This script measures that with principal angles and the distance between the
two orthogonal projectors.

Run ``python examples/linear_autoencoder.py`` (synthetic low-rank data) or
``python examples/linear_autoencoder.py --data cifar`` (8x8 RGB patches of
CIFAR-10 from ``--data-dir``, default ``$ANYNET_DATA`` or ``~/.cache/anynet``). ``--backend`` picks any
anynet backend. ``main`` returns the measurements, so tests can call it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from anynet import backends, optim
from anynet.objectives import linear_autoencoder_loss


def synthetic_data(n=20, m=3, N=500, noise=0.05, seed=0):
    """(n, N) centered columns near an m-dimensional subspace, with distinct variances along it."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n, m)))
    scales = np.linspace(3.0, 1.0, m)  # a clear gap between the principal directions
    X = basis @ (scales[:, None] * rng.standard_normal((m, N))) + noise * rng.standard_normal((n, N))
    return X - X.mean(axis=1, keepdims=True)


def cifar_patches(folder, N=5000, size=8, seed=0):
    """(3 * size**2, N) centered random patches of the first CIFAR-10 training batch, scaled to [0, 1]."""
    from anynet.data import data_root, find_cifar10, load_batch

    found = find_cifar10(data_root(folder))
    if found is None:
        raise FileNotFoundError(f"no cifar-10-batches-py under {data_root(folder)}; see README for how to get it")
    images, _ = load_batch(found / "data_batch_1")
    rng = np.random.default_rng(seed)
    k = rng.integers(0, images.shape[0], N)
    r, c = rng.integers(0, 32 - size + 1, N), rng.integers(0, 32 - size + 1, N)
    patches = np.stack([images[k[i], r[i]:r[i] + size, c[i]:c[i] + size, :].ravel() for i in range(N)], axis=1)
    X = patches.astype(np.float64) / 255.0
    return X - X.mean(axis=1, keepdims=True)


def principal_subspace(X, m):
    """Orthonormal (n, m) basis of the top-m left singular vectors of ``X``."""
    U, _, _ = np.linalg.svd(X, full_matrices=False)
    return U[:, :m]


def compare_subspaces(W, U):
    """Principal angles (degrees) and projector distance between the row space of ``W`` and span ``U``.

    Returns
    -------
    dict
        ``max_angle_deg``: the largest principal angle; ``projector_distance``:
        ``||P_W - P_U||_F`` (0 for the same subspace, at most ``sqrt(2 m)``);
        ``orthonormality``: ``||W W^T - I||_F``, how close ``W^T W`` is to a projector.
    """
    Q, _ = np.linalg.qr(W.T)
    cosines = np.clip(np.linalg.svd(U.T @ Q, compute_uv=False), -1.0, 1.0)
    angles = np.degrees(np.arccos(cosines))
    m = W.shape[0]
    return {
        "max_angle_deg": float(angles.max()),
        "projector_distance": float(np.linalg.norm(Q @ Q.T - U @ U.T)),
        "orthonormality": float(np.linalg.norm(W @ W.T - np.eye(m))),
    }


def train(X, m, steps=2000, learning_rate=1e-2, update_rule="adam", backend="numpy", dtype="float64", seed=0,
          print_every=0):
    """Minimize the mean reconstruction loss over W (m, n) on backend ``backend``.

    The learning rate decays geometrically to 1% of its start, so the last
    steps settle instead of rattling around the minimum at a fixed step size.

    Returns
    -------
    W : ndarray, shape (m, n), on the host
    losses : list of float
        Mean loss per column, at the start and every ``print_every`` steps (or just the ends).
    """
    place = backends.get(backend)
    X_dev = place.to_device(X, place.dtype(dtype))
    N = X.shape[1]
    W = backends.Generator(seed, place).normal((m, X.shape[0]), 0.1, dtype)
    rule = optim.UPDATE_RULES[update_rule]
    config = {"learning_rate": learning_rate}
    decay = 0.01 ** (1.0 / steps)
    record = print_every or steps
    losses = []
    for t in range(steps + 1):
        loss, dW = linear_autoencoder_loss(W, X_dev)
        if t % record == 0:
            losses.append(float(loss) / N)  # one device sync per record, not per step
            if print_every:
                print(f"step {t:5d}  loss per column {losses[-1]:.6f}")
        if t == steps:
            break
        W, config = rule(W, dW / N, config)
        config["learning_rate"] *= decay
    return backends.to_numpy(W).astype(np.float64), losses


def main(argv=None):
    """Parse ``argv``, train, print and return the comparison with PCA (a dict)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["synthetic", "cifar"], default="synthetic")
    parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (for --data cifar)")
    parser.add_argument("-n", type=int, default=20, help="data dimension (synthetic)")
    parser.add_argument("-m", type=int, help="code dimension (default 3, or 4 for cifar)")
    parser.add_argument("-N", type=int, help="number of data columns (default 500, or 2000 for cifar)")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--update-rule", choices=sorted(optim.UPDATE_RULES), default="adam")
    parser.add_argument("--backend", choices=backends.BACKENDS, default="numpy")
    parser.add_argument("--dtype", choices=backends.DTYPES, default="float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-every", type=int, default=500)
    args = parser.parse_args(argv)
    cifar = args.data == "cifar"
    # On CIFAR patches the 4th and 5th principal variances differ by ~45%, a
    # gap that gradient descent resolves quickly; the 8th and 9th differ by 4%.
    args.m = args.m if args.m is not None else 4 if cifar else 3
    args.N = args.N if args.N is not None else 2000 if cifar else 500
    if not 0 < args.m < (3 * 64 if cifar else args.n):
        parser.error("need 0 < m < n")

    if cifar:
        X = cifar_patches(args.data_dir, N=args.N, seed=args.seed)
    else:
        X = synthetic_data(args.n, args.m, args.N, args.noise, args.seed)
    U = principal_subspace(X, args.m)
    start = time.perf_counter()
    W, losses = train(X, args.m, args.steps, args.learning_rate, args.update_rule, args.backend, args.dtype,
                      args.seed, args.print_every)
    seconds = time.perf_counter() - start
    result = compare_subspaces(W, U)
    # The best any rank-m reconstruction can do: the energy outside the top-m subspace.
    s = np.linalg.svd(X, compute_uv=False)
    result.update(
        final_loss=losses[-1],
        pca_loss=float(0.5 * np.sum(s[args.m:] ** 2) / X.shape[1]),
        seconds=seconds,
        shape=X.shape,
    )
    print(f"data {args.data} {X.shape}, m = {args.m}, {args.update_rule} on {args.backend} ({args.dtype}), "
          f"{args.steps} steps in {seconds:.2f} s")
    print(f"loss per column: autoencoder {result['final_loss']:.6f}, PCA optimum {result['pca_loss']:.6f}")
    print(f"largest principal angle to the top-{args.m} PCA subspace: {result['max_angle_deg']:.4f} degrees")
    print(f"||P_W - P_PCA||_F = {result['projector_distance']:.2e} (0 = same subspace, "
          f"{math.sqrt(2 * args.m):.2f} = orthogonal);  ||W W^T - I||_F = {result['orthonormality']:.2e}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
