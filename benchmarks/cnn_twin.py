"""The CNN recipe's first epochs in PyTorch alone: the check of anynet's accuracy before a long run is spent.

``python benchmarks/cnn_twin.py --data-dir DIR --epochs 2`` trains the torch.nn twin of ``anynet train --model cnn``
(``benchmarks/cnn.py``'s twin: the same layers in the same order, widths, biases and pooling) with the same recipe
written in PyTorch: random crops of 4 pixels of padding and horizontal flips, each image its own, label smoothing,
Nesterov SGD with weight decay on the weights only, a linear warm-up then a cosine decay per step, the same
splits and mean-subtracted images as anynet's loader gives. It prints each epoch's validation accuracy, to be
read beside anynet's metrics.csv of the same flags. Its numbers are its own (other initial weights, other random
draws): what is compared is where the curves go, not their digits.
"""

from __future__ import annotations

import argparse
import math
import time


def build(widths, convs_per_stage, pool_after, device):
    """The twin of ``anynet.models.ConvNet`` (He-initialized convolutions, as anynet's)."""
    from torch import nn

    layers, channels = [], 3
    for width in widths:
        for j in range(1, convs_per_stage + 1):
            conv = nn.Conv2d(channels, width, 3, padding=1)
            nn.init.normal_(conv.weight, std=math.sqrt(2.0 / (channels * 9)))
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.BatchNorm2d(width, momentum=0.1), nn.ReLU()]
            channels = width
            if j == (pool_after or convs_per_stage):
                layers.append(nn.MaxPool2d(2))
    head = nn.Linear(channels, 10)
    nn.init.normal_(head.weight, std=math.sqrt(1.0 / channels))
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).to(device)


def augment(x, generator, pad=4):
    """Each image shifted by its own offset in [-pad, pad] (zeros coming in) and mirrored with probability 1/2."""
    import torch

    N, C, H, W = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (N,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (N,), generator=generator)
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None].expand(N, C, H, W + 2 * pad)
    out = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :].expand(N, C, H, W)
    out = torch.gather(out, 3, cols)
    flip = torch.rand(N, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--convs-per-stage", type=int, default=1)
    parser.add_argument("--pool-after", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--schedule-epochs", type=int, default=None, help="the cosine's length (default: --epochs)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.2)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from torch import nn

    from anynet.data import get_cifar10_data

    torch.manual_seed(0)
    data = get_cifar10_data(args.data_dir, num_training=49000, num_validation=1000, num_test=0, dtype="float32")
    X, y = torch.from_numpy(data["X_train"]), torch.from_numpy(data["y_train"])
    X_val, y_val = torch.from_numpy(data["X_val"]), torch.from_numpy(data["y_val"])
    net = build(args.widths, args.convs_per_stage, args.pool_after, "cpu")
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay}, {"params": rest}],
                          lr=args.learning_rate, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    steps = X.shape[0] // args.batch_size
    total, warmup = steps * (args.schedule_epochs or args.epochs), round(args.warmup_epochs * steps)
    generator = torch.Generator().manual_seed(0)
    t = 0
    for epoch in range(1, args.epochs + 1):
        start, order = time.perf_counter(), torch.randperm(X.shape[0], generator=generator)
        net.train()
        for k in range(steps):
            warm = min((t + 1) / warmup, 1.0) if warmup else 1.0
            progress = min(max((t - warmup) / max(total - warmup, 1), 0.0), 1.0)
            for group in opt.param_groups:
                group["lr"] = args.learning_rate * warm * 0.5 * (1 + math.cos(math.pi * progress))
            idx = order[k * args.batch_size:(k + 1) * args.batch_size]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = loss_fn(net(augment(X[idx], generator)).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t += 1
        net.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            val = (net(X_val).argmax(1) == y_val).float().mean().item()
        print(f"epoch {epoch}: loss {loss.item():.3f}, val acc {val:.3f}, "
              f"{steps * args.batch_size / (time.perf_counter() - start):.0f} images/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
