"""The ``anynet`` command: ``anynet train``, ``anynet evaluate`` and the subcommands registered in ``COMMANDS``.

Each entry of ``COMMANDS`` names a function ``add_parser(subparsers)`` that
adds one subcommand and sets ``run=callable(args) -> exit code`` as its
default; it is imported only when the command line is parsed. Errors the
user can fix (bad flags or values, missing files or packages) print one
line on stderr and exit with code 2, without a traceback. No flag is taken
by a prefix of its name (``--lr`` is an alias of ``--learning-rate``, not a
guess). ``$ANYNET_BACKEND`` and ``$ANYNET_DEVICE`` stand for ``--backend``
and ``--device`` when those are not given.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import zipfile
from pathlib import Path

# Nothing above loads NumPy (nor does ``import anynet``), so that ``main`` can set up the process first.

# name -> "module:function"; a new subcommand is one line here.
COMMANDS = {
    "train": "anynet.cli:add_train_parser",
    "evaluate": "anynet.cli:add_evaluate_parser",
    "sweep": "anynet.sweep:add_parser",
    "bench": "anynet.cli:add_bench_parser",
    "info": "anynet.cli:add_info_parser",
}
# Environment variables that stand for a flag of every subcommand that has it (the flag wins).
ENVIRONMENT = {"backend": "ANYNET_BACKEND", "device": "ANYNET_DEVICE"}
# Optional packages -> the extra that installs them and what needs them.
EXTRAS = {
    "dask": ("sweep", "anynet sweep needs Dask"),
    "distributed": ("sweep", "anynet sweep needs Dask's distributed scheduler"),
    "optuna": ("sweep", "this sweep needs Optuna"),
    "tensorboardX": ("tensorboard", "--tensorboard needs tensorboardX"),
}


def prepare_process(updates_in_blocks):
    """The NumPy backend's process settings (``anynet.backends.numpy.prepare_process``); call before NumPy loads."""
    from .backends.numpy import prepare_process

    prepare_process(updates_in_blocks)


def trains_with_state(argv):
    """Whether the command line (``argv`` without the program name) trains with a rule that keeps state.

    Every rule but plain SGD keeps some. Told before NumPy loads: ``anynet
    bench`` trains its fc model with Adam (``benchmarks/bench.py``'s
    ``RULES``) and the others with SGD; otherwise ``--update-rule`` says, else
    the config file ``--config`` names, else the optimizer state stored in the
    checkpoint ``--resume`` names (the default rule is plain SGD).
    """
    if argv[:1] == ["bench"]:
        return flag_value(argv, "--model") == "fc"
    rule = flag_value(argv, "--update-rule")
    if rule is not None:
        return rule != "sgd"
    config_file = flag_value(argv, "--config")
    if config_file is not None:
        try:
            rule = read_config_file(config_file).get("update_rule", "sgd")
        except (OSError, ValueError):
            return False  # the command itself will say what is wrong with the file
        return rule != "sgd"
    checkpoint = flag_value(argv, "--resume")
    if checkpoint is None:
        return False
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            return any(name.startswith("optim/") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False  # the command itself will say what is wrong with the file


def flag_value(argv, name):
    """The value given to flag ``name`` in ``argv`` (``name VALUE`` or ``name=VALUE``; the last wins), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            value = arg.partition("=")[2]
        elif arg == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def user_errors():
    """Errors caused by what the user typed or pointed at: one line, exit code 2."""
    from .backend import BackendUnavailableError
    from .checkpoint import CheckpointError

    return (ValueError, TypeError, BackendUnavailableError, CheckpointError, FileNotFoundError,
            NotADirectoryError, IsADirectoryError, PermissionError)


def missing_extra(exc):
    """The one-line message for an optional package ``exc`` (an ImportError) names, or None."""
    top = (getattr(exc, "name", None) or "").partition(".")[0]
    if top not in EXTRAS:
        return None
    extra, need = EXTRAS[top]
    return f'{need} ({top} is not installed): pip install "anynet[{extra}]"'


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` that takes no flag by a prefix and reports errors in one line, exit code 2.

    Subparsers are made of the same class (argparse's default), so every
    subcommand refuses ``--lr-d`` for ``--lr-decay`` too.
    """

    def __init__(self, *args, allow_abbrev=False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def add_argument(self, *args, **kwargs):
        """``argparse``'s ``add_argument``; a required flag says so in ``--help`` (usage alone shows it unbracketed)."""
        if kwargs.get("required") and kwargs.get("help") not in (None, argparse.SUPPRESS):
            kwargs["help"] = f"{kwargs['help']} (required)"
        return super().add_argument(*args, **kwargs)

    def error(self, message):
        """Print ``prog: error: message`` and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text):
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {text}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text}")
    return value


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number; got {text}")
    return value


for _fn, _name in ((positive_int, "positive integer"), (non_negative_int, "non-negative integer"),
                   (positive_float, "positive number"), (non_negative_float, "non-negative number")):
    _fn.__name__ = _name  # argparse names the type in "invalid <type> value" messages


def add_train_flags(parser):
    """Add the training flags of ``anynet train`` to ``parser`` (the sweep reuses them).

    Flags the user does not give stay out of the parsed namespace, so
    ``config_from_args`` returns only what was typed and ``anynet.train``
    fills in its ``DEFAULTS`` (or, with ``--resume``, the checkpoint's config).
    """
    from .backend import BACKENDS, DTYPES
    from .optim import UPDATE_RULES
    from .train import DEFAULTS

    def add(*names, key, help, **kwargs):
        """One flag, shown with its default, absent from the namespace unless given."""
        default = DEFAULTS[key]
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        suffix = "" if default is None or default is False or "(default:" in help else f" (default: {shown})"
        parser.add_argument(*names, dest=key, default=argparse.SUPPRESS, help=help + suffix, **kwargs)

    add("--backend", key="backend", choices=BACKENDS,
        help="array library to compute with; cupy needs an NVIDIA GPU (default: $ANYNET_BACKEND, else numpy)")
    add("--device", key="device", help="device of the backend, e.g. cuda:1 for torch or 1 for cupy "
        "(default: $ANYNET_DEVICE, else the backend's)")
    add("--model", key="model", choices=("two-layer", "fc"), help="TwoLayerNet or FullyConnectedNet")
    add("--hidden-dims", key="hidden_dims", type=positive_int, nargs="+", metavar="N",
        help="hidden layer widths (one for two-layer)")
    add("--update-rule", key="update_rule", choices=tuple(UPDATE_RULES), help="optimizer")
    add("--learning-rate", "--lr", key="learning_rate", type=positive_float, metavar="LR",
        help="initial learning rate")
    add("--lr-decay", key="lr_decay", type=positive_float, metavar="F",
        help="learning rate multiplier at each epoch end, in (0, 1]")
    add("--reg", key="reg", type=non_negative_float, help="L2 regularization strength")
    add("--weight-scale", key="weight_scale", type=positive_float, metavar="S",
        help="standard deviation of the initial weights")
    add("--dtype", key="dtype", choices=DTYPES, help="floating point type of parameters and images")
    add("--batch-size", key="batch_size", type=positive_int, metavar="N", help="images per minibatch")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", dest="epochs", type=positive_int, metavar="N", default=argparse.SUPPRESS,
                        help=f"passes over the training images (default: {DEFAULTS['epochs']})")
    length.add_argument("--iterations", dest="iterations", type=positive_int, metavar="N",
                        default=argparse.SUPPRESS, help="minibatch steps, instead of --epochs")
    add("--seed", key="seed", type=non_negative_int, help="seeds weights, minibatch order and dropout")
    add("--data-dir", key="data_dir", metavar="DIR",
        help="folder holding cifar-10-batches-py, or that folder itself (default: $ANYNET_DATA, "
             "else ~/.cache/anynet; downloaded there on first use)")
    add("--num-training", key="num_training", type=positive_int, metavar="N", help="training images")
    add("--num-validation", key="num_validation", type=positive_int, metavar="N",
        help="validation images, taken right after the training images")
    add("--num-test", key="num_test", type=non_negative_int, metavar="N", help="test images (at most 10000)")
    add("--batchnorm", key="batchnorm", action="store_true", help="batch normalization after hidden layers (fc)")
    add("--dropout", key="dropout", type=non_negative_float, metavar="P", help="probability of dropping a hidden unit")
    add("--compile", key="compile", choices=("auto", "on", "off"),
        help="compile the training step where the backend can (auto: where it pays)")


def environment_defaults():
    """``{"backend": ..., "device": ...}`` from ``$ANYNET_BACKEND`` and ``$ANYNET_DEVICE`` (those set, non-empty).

    Raises
    ------
    ValueError
        If ``$ANYNET_BACKEND`` names no backend.
    """
    from .backend import BACKENDS

    found = {key: os.environ[var] for key, var in ENVIRONMENT.items() if os.environ.get(var)}
    if found.get("backend") not in (None, *BACKENDS):
        raise ValueError(f"ANYNET_BACKEND must be one of {', '.join(BACKENDS)}; got {found['backend']!r}")
    return found


def config_from_args(args):
    """The config keys given on the command line, as a dict for ``anynet.train.train``.

    ``$ANYNET_BACKEND`` and ``$ANYNET_DEVICE`` fill in ``backend`` and
    ``device`` when the flags are absent; the config file of ``--config``
    (when the command has that flag) fills in what neither gives.
    """
    from .train import DEFAULTS

    given = {key: value for key, value in vars(args).items() if key in DEFAULTS}
    config = {**environment_defaults(), **given}
    path = getattr(args, "config", None)
    if path is not None:
        saved = read_config_file(path)
        # One length applies: a length flag replaces the file's, whichever of epochs or iterations it has.
        if "epochs" in given or "iterations" in given:
            saved = {k: v for k, v in saved.items() if k not in ("epochs", "iterations")}
        # The file's device belongs to the file's backend (a GPU worker's "cuda:0", say), not to another one.
        if config.get("backend", saved.get("backend")) != saved.get("backend"):
            saved.pop("device", None)
        config = {**saved, **config}
    return config


def read_config_file(path):
    """The training config in ``path``: a run's metrics.json or a sweep's best.json (``{"config": {...}}``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not JSON, holds no ``config`` object, or that has keys
        ``anynet train`` does not know; the message names the file.
    """
    from .train import DEFAULTS

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--config {path} is a folder; give its metrics.json (a run) or best.json (a sweep)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path} is not a text file; give a metrics.json or best.json") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path} is not valid JSON ({exc})") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"--config {path} holds no \"config\" object; give a run's metrics.json or a sweep's "
                         "best.json")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {', '.join(unknown)} in its config")
    if config.get("iterations") is not None:
        config = {k: v for k, v in config.items() if k != "epochs"}  # older files hold both; iterations applied
    return _checked_as_flags(path, config)


class _FileValueParser(ArgumentParser):
    """The train flags, parsed from a config file's values: a bad value raises ``ValueError`` naming the file."""

    def __init__(self, path):
        super().__init__(prog="anynet train", add_help=False)
        self.path = path

    def error(self, message):
        raise ValueError(f"--config {self.path}: {message}")


def _checked_as_flags(path, config):
    """``config`` checked and converted exactly as the same values typed as flags would be."""
    parser = _FileValueParser(path)
    add_train_flags(parser)
    argv = []
    for key, value in config.items():
        if value is None or value is False:
            continue  # the default: no flag
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv.append(f"{flag}={value}")
    checked = vars(parser.parse_args(argv))
    return {key: checked.get(key, value) for key, value in config.items()}


def check_place(config):
    """Check that ``config``'s backend and device can run here (before any folder is made or data loaded).

    Raises
    ------
    BackendUnavailableError
        If the backend's package or the GPU it needs is missing (the message
        says what to install).
    ValueError
        If the device is not one of the backend's.
    """
    from .backend import resolve_device

    resolve_device(config.get("backend") or "numpy", config.get("device"))


@contextlib.contextmanager
def blame_environment(used):
    """Add "(set by ANYNET_BACKEND=...)" to a backend or device error when those variables chose them.

    ``used`` maps config keys to the values the command took from the
    environment (``environment_defaults()`` less what flags overrode).
    """
    from .backend import BackendUnavailableError

    try:
        yield
    except (BackendUnavailableError, ValueError) as exc:
        text = str(exc)
        blamed = [f"{ENVIRONMENT[key]}={value}" for key, value in used.items()
                  if repr(value) in text or f"the {value} backend" in text]
        if not blamed:
            raise
        raise type(exc)(f"{text} (set by {' and '.join(blamed)})") from None


def _from_environment(given):
    """The values of ``environment_defaults()`` for the keys the flags in ``given`` leave open."""
    return {k: v for k, v in environment_defaults().items() if given.get(k) is None}


def add_train_parser(subparsers):
    """Add ``anynet train``."""
    parser = subparsers.add_parser(
        "train", help="train a network on CIFAR-10",
        description="Train a network on CIFAR-10 and write metrics, history, plots and a checkpoint. "
        "$ANYNET_BACKEND and $ANYNET_DEVICE stand for --backend and --device.",
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
    """Run ``anynet train``; return the exit code."""
    from .train import new_run_dir, train

    if args.config is not None and args.resume is not None:
        raise ValueError("--config starts a new run and --resume continues one; give one of them")
    config = config_from_args(args)
    used = _from_environment(vars(args))
    if args.resume is None or "backend" in config:
        with blame_environment(used):
            check_place(config)
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
        with blame_environment(used):
            metrics = train(config, out_dir=out, quiet=args.quiet, resume=args.resume, tensorboard=args.tensorboard)
    except KeyboardInterrupt:
        ckpt = out / "checkpoint.npz"
        hint = f"; continue with: anynet train --resume {ckpt}" if ckpt.exists() else ""
        print(f"anynet train: interrupted{hint}", file=sys.stderr)
        return 130
    except BaseException:
        if fresh and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder
        raise
    test = "n/a" if metrics["test_acc"] is None else f"{metrics['test_acc']:.4f}"
    print(f"val acc {metrics['val_acc']:.4f}, test acc {test} "
          f"(best val acc during training {metrics['best_val_acc']:.4f})")
    if metrics.get("compile_seconds"):
        print(f"compiled in {metrics['compile_seconds']:.1f} s (not counted in the training time)")
    rate = metrics["images_per_second"]
    print(f"trained {metrics['epochs']:.2f} epochs ({metrics['iterations']} iterations) in "
          f"{metrics['train_seconds']:.1f} s, {rate or 0:,.0f} images/s on {metrics['backend']} {metrics['device']}")
    print(f"results in {out}")
    return 0


def add_evaluate_parser(subparsers):
    """Add ``anynet evaluate``."""
    from .backend import BACKENDS

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
    parser.set_defaults(run=run_evaluate)
    return parser


def run_evaluate(args):
    """Run ``anynet evaluate``; return the exit code."""
    from .train import evaluate

    used = _from_environment(vars(args))
    place = {**used, **{k: getattr(args, k) for k in ENVIRONMENT if getattr(args, k) is not None}}
    with blame_environment(used):
        if "backend" in place:
            check_place(place)
        result = evaluate(args.checkpoint, data_dir=args.data_dir, num_test=args.num_test,
                          backend=place.get("backend"), device=place.get("device"))
    print(f"val acc {result['val_acc']:.4f} ({result['num_val']} images)")
    test = "n/a" if result["test_acc"] is None else f"{result['test_acc']:.4f}"
    print(f"test acc {test} ({result['num_test']} images)")
    print(f"on {result['backend']} {result['device']}")
    return 0


def bench_script():
    """benchmarks/bench.py of the source checkout this package lives in, or None (an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "bench.py"
    return script if script.is_file() and (root / "pyproject.toml").is_file() else None


def load_bench():
    """Import benchmarks/bench.py of the source checkout as ``benchmarks.bench``; None without a checkout."""
    script = bench_script()
    if script is None:
        return None
    root = str(script.parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("benchmarks.bench")


def add_bench_parser(subparsers):
    """Add ``anynet bench``: a thin entry point to the harness in benchmarks/bench.py."""
    bench = load_bench()
    if bench is not None:
        return bench.add_parser(subparsers)
    # Listed in --help; main answers "anynet bench ..." before parsing its flags (NO_BENCH).
    return subparsers.add_parser("bench", help="anynet vs PyTorch eager vs the GEMM floor (needs a source checkout)")


NO_BENCH = "anynet bench needs a source checkout of anynet (benchmarks/bench.py)"


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


def version():
    """anynet's version, as ``anynet.__version__`` gives it."""
    from . import __version__

    return __version__


def build_parser():
    """The ``anynet`` parser with every subcommand in ``COMMANDS``."""
    parser = ArgumentParser(prog="anynet", description="CS231n-style neural networks on any Array API backend.")
    parser.add_argument("--version", action="version", version=f"anynet {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for target in COMMANDS.values():
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv=None):
    """Entry point of the ``anynet`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and bench_script() is None:
        print(f"anynet bench: error: {NO_BENCH}", file=sys.stderr)
        return 2
    # Process-wide settings, made before NumPy loads (parsing the command line loads it).
    prepare_process(trains_with_state(argv))
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, --version, or a flag argparse rejected (already reported)
        return exc.code
    if unknown:  # reported by the subcommand, whose --help lists its flags
        print(f"anynet {args.command}: error: unrecognized arguments: {' '.join(unknown)} "
              f"(see anynet {args.command} --help)", file=sys.stderr)
        return 2
    if args.command == "train":
        from .backend import keep_freed_memory

        keep_freed_memory()  # this process only trains: NumPy's temporaries are reused instead of faulting in
    prog = f"anynet {args.command}"
    try:
        return args.run(args)
    except ImportError as exc:
        # A known optional package by name, or an error that already says what to install (the sweep's).
        message = missing_extra(exc) or (_one_line(exc) if "pip install" in str(exc) else None)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except user_errors() as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as exc:
        print(f"{prog}: failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # train and sweep say how to go on; elsewhere there is nothing to keep
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc):
    """The message of ``exc`` on one line."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
