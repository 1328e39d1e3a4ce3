"""The subcommands ``anynet train``, ``anynet evaluate`` and ``anynet info``: their flags and what they print.

Each ``add_*_parser(subparsers)`` adds one subcommand and sets
``run=callable(args) -> exit code`` as its default (``anynet.app.cli``
lists them in ``COMMANDS``). The work is done elsewhere: ``train``,
``evaluate`` and ``info``; errors are raised, and ``cli.main`` reports them.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

from .config import KEEPS
from .flags import (
    ENVIRONMENT,
    add_train_flags,
    blame_environment,
    check_place,
    config_from_args,
    from_environment,
    non_negative_int,
)


def add_train_parser(subparsers):
    """Add ``anynet train``."""
    parser = subparsers.add_parser(
        "train", help="train a network on CIFAR-10",
        description="Train a network on CIFAR-10 and write metrics, history, plots and a checkpoint. "
        "--model cnn trains a ConvNet (stages of convolutions with batch normalization, each ending in a max pool, "
        "then global average pooling); the flags marked (fc), (cnn), ... belong to those models and are refused for "
        "others. $ANYNET_BACKEND and $ANYNET_DEVICE stand for --backend and --device.",
    )
    add_train_flags(parser)
    parser.add_argument("--config", metavar="FILE",
                        help="start from the config in FILE, a run's metrics.json or a sweep's best.json; the "
                             "flags you give replace its values")
    parser.add_argument("--out", metavar="DIR", help="folder for the results (default: a new folder under runs/; "
                        "with --resume, the checkpoint's folder)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue the run saved in CHECKPOINT (flags you give may only change its length, "
                             "backend, device, data folder and test images)")
    parser.add_argument("--tensorboard", metavar="DIR",
                        help='also log losses, accuracies and speed for TensorBoard into DIR (needs '
                             'pip install "anynet[tensorboard]")')
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    parser.set_defaults(run=run_train)
    return parser


def run_train(args):
    """Run ``anynet train``; return the exit code (1, with one line, when the loss diverged)."""
    from .runs import new_run_dir
    from .train import Diverged, resume_config, train

    if args.config is not None and args.resume is not None:
        raise ValueError("--config starts a new run and --resume continues one; give one of them")
    config = config_from_args(args)
    used = from_environment(vars(args))
    notes = []
    with blame_environment(used):
        if args.resume is not None:  # the saved config with the flags given, refused before anything is written
            config = resume_config(config, args.resume, notes)
        check_place(config)
    for note in notes:
        print(f"anynet train: {note}", file=sys.stderr)
    if args.tensorboard is not None:
        importlib.import_module("tensorboardX")  # missing: one line naming the extra, before training
    fresh = args.out is None and args.resume is None
    if args.out is not None:
        out = Path(args.out)
    elif args.resume is not None:
        out = Path(args.resume).parent
    else:
        out = new_run_dir("runs")
    try:
        with blame_environment(used), warnings.catch_warnings():
            # NumPy's warnings of overflowing arithmetic: a loss that diverges is reported once, in one line, below.
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
            metrics = train(config, out_dir=out, quiet=args.quiet, resume=args.resume, tensorboard=args.tensorboard)
    except KeyboardInterrupt:
        ckpt = out / "checkpoint.npz"
        hint = f"; continue with: anynet train --resume {ckpt}" if ckpt.exists() else ""
        print(f"anynet train: interrupted{hint}", file=sys.stderr)
        return 130
    except Diverged as exc:
        print(_diverged_line(exc.metrics), file=sys.stderr)
        return 1
    except BaseException:
        if fresh and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder
        raise
    _print_run(metrics, out)
    return 0


def _diverged_line(metrics):
    """The line ``anynet train`` ends a diverged run with: where it failed, what it kept, which flag to change."""
    where, config = metrics["diverged"], metrics["config"]
    last = where["last_finite_loss"]
    failed = (f"anynet train: failed: loss became {where['loss'] or 'non-finite'} at iteration {where['iteration']}"
              f" ({'no finite loss' if last is None else f'last finite loss {last:.4g}'})")
    lower = f"--learning-rate (was {config['learning_rate']:g})"
    if metrics["model"] is None:
        scale = config.get("weight_scale")
        flag = lower if scale is None else f"--weight-scale (was {scale:g}) or {lower}"
        return f"{failed}; it learned nothing to keep; train again with a lower {flag}"
    return (f"{failed}; its best parameters (val acc {metrics['best_val_acc']:.4f}) are in {metrics['model']}: "
            f"anynet evaluate {metrics['model']}; train again with a lower {lower}")


def _print_run(metrics, out):
    """The lines ``anynet train`` ends with: accuracies, compile time, speed and the folder."""
    test = "n/a" if metrics["test_acc"] is None else f"{metrics['test_acc']:.4f}"
    print(f"val acc {metrics['val_acc']:.4f}, test acc {test} "
          f"(best val acc during training {metrics['best_val_acc']:.4f})")
    if metrics.get("compile_seconds"):
        print(f"compiled in {metrics['compile_seconds']:.1f} s (not counted in the training time)")
    rate, start = metrics["images_per_second"], metrics["start_iteration"]
    # A resumed run's time is this call's: say which epochs it covers.
    done = (f"{metrics['epochs']:.2f} epochs ({metrics['iterations']} iterations)" if start == 0 else
            f"epochs {start * metrics['epochs'] / metrics['iterations']:.2f} to {metrics['epochs']:.2f} "
            f"(iterations {start + 1} to {metrics['iterations']})")
    print(f"trained {done} in {metrics['train_seconds']:.1f} s, {rate or 0:,.0f} images/s on {metrics['backend']} "
          f"{metrics['device']}")
    print(f"results in {out}")


def add_evaluate_parser(subparsers):
    """Add ``anynet evaluate``."""
    from ..backends import BACKENDS

    parser = subparsers.add_parser(
        "evaluate", help="validation and test accuracy of a saved model",
        description="Print the validation and test accuracy of the model in a checkpoint. "
        "$ANYNET_BACKEND and $ANYNET_DEVICE stand for --backend and --device.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="model.npz (the trained model) or checkpoint.npz of an anynet train run")
    parser.add_argument("--data-dir", metavar="DIR", help="folder holding cifar-10-batches-py "
                        "(default: the training run's, else $ANYNET_DATA, else ~/.cache/anynet)")
    parser.add_argument("--num-test", type=non_negative_int, metavar="N",
                        help="test images (default: as in training)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="array library (default: $ANYNET_BACKEND, else as in training)")
    parser.add_argument("--device", help="device of the backend (default: $ANYNET_DEVICE, else as in training)")
    parser.add_argument("--flip-test", action="store_true", default=None,
                        help="average each image's scores with its mirror image's (default: as in training)")
    parser.add_argument("--translate-test", action="store_true", default=None,
                        help="average each image's scores with those of it shifted one pixel down-right and "
                             "up-left (default: as in training)")
    parser.add_argument("--params", choices=KEEPS, default="best",
                        help="from checkpoint.npz, the parameters of the best validation check (default) or of "
                             "the last step")
    parser.set_defaults(run=run_evaluate)
    return parser


def run_evaluate(args):
    """Run ``anynet evaluate``; return the exit code."""
    from .evaluate import evaluate

    used = from_environment(vars(args))
    place = {**used, **{k: getattr(args, k) for k in ENVIRONMENT if getattr(args, k) is not None}}
    with blame_environment(used):
        if "backend" in place:
            check_place(place)
        result = evaluate(args.checkpoint, data_dir=args.data_dir, num_test=args.num_test,
                          backend=place.get("backend"), device=place.get("device"), flip_test=args.flip_test,
                          translate_test=args.translate_test, params=args.params)
    print(f"val acc {result['val_acc']:.4f} ({result['num_val']} images)")
    test = "n/a" if result["test_acc"] is None else f"{result['test_acc']:.4f}"
    print(f"test acc {test} ({result['num_test']} images)")
    print(f"on {result['backend']} {result['device']}")
    return 0


def add_info_parser(subparsers):
    """Add ``anynet info``."""
    parser = subparsers.add_parser(
        "info", help="versions, backends, GPUs and threads of this machine",
        description="Print anynet's version, Python's and each array library's, which backends can run here "
                    "(and what to install for the others), the GPUs, the BLAS library and the thread counts.",
    )
    parser.set_defaults(run=run_info)
    return parser


def run_info(args):
    """Run ``anynet info``; return the exit code."""
    from .info import report

    print(report())
    return 0
