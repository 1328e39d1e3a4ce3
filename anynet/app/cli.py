"""The ``anynet`` command: ``main``, its parser, and how errors end it.

Each entry of ``COMMANDS`` names a function ``add_parser(subparsers)`` that
adds one subcommand and sets ``run=callable(args) -> exit code`` as its
default; it is imported only when the command line is parsed. ``anynet
bench`` is a program of its own (``anynet.app.bench``). Errors the user can
fix (bad flags or values, missing files or packages) print one line on
stderr and exit with code 2, without a traceback. No flag is taken by a
prefix of its name (``--lr`` is an alias of ``--learning-rate``, not a
guess). ``$ANYNET_BACKEND`` and ``$ANYNET_DEVICE`` stand for ``--backend``
and ``--device`` when those are not given.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Nothing here loads NumPy (nor does ``import anynet``), so that ``main`` can set up the process first.
from .bench import run_bench
from .flags import trains_with_state
from .process import keep_freed_memory, prepare_process

# name -> "module:function"; a new subcommand is one line here.
COMMANDS = {
    "train": "anynet.app.commands:add_train_parser",
    "evaluate": "anynet.app.commands:add_evaluate_parser",
    "sweep": "anynet.app.sweep.command:add_parser",
    "bench": "anynet.app.bench:add_bench_parser",
    "info": "anynet.app.commands:add_info_parser",
}
# Optional packages -> the extra that installs them and what needs them.
EXTRAS = {
    "dask": ("sweep", "anynet sweep needs Dask"),
    "distributed": ("sweep", "anynet sweep needs Dask's distributed scheduler"),
    "optuna": ("sweep", "this sweep needs Optuna"),
    "tensorboardX": ("tensorboard", "--tensorboard needs tensorboardX"),
}


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


def user_errors():
    """Errors caused by what the user typed or pointed at: one line, exit code 2."""
    from ..backends import BackendUnavailableError
    from ..training.checkpoint import CheckpointError

    return (ValueError, TypeError, BackendUnavailableError, CheckpointError, FileNotFoundError,
            NotADirectoryError, IsADirectoryError, PermissionError)


def missing_extra(exc):
    """The one-line message for an optional package ``exc`` (an ImportError) names, or None."""
    top = (getattr(exc, "name", None) or "").partition(".")[0]
    if top not in EXTRAS:
        return None
    extra, need = EXTRAS[top]
    return f'{need} ({top} is not installed): pip install "anynet[{extra}]"'


def one_line(exc):
    """The message of ``exc`` on one line."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def guarded(prog, run, args):
    """``run(args)``, its exit code; the errors it raises end it in one line on stderr with their exit code.

    What the user can fix is ``prog: error: ...``, code 2 (a missing
    optional package names the extra that installs it); a run that fails
    while working (non-finite loss, disk error) ``prog: failed: ...``, code
    1; Ctrl-C ``prog: interrupted``, code 130. Anything else is a bug, and
    keeps its traceback.
    """
    try:
        return run(args)
    except ImportError as exc:
        # A known optional package by name, or an error that already says what to install (the sweep's).
        message = missing_extra(exc) or (one_line(exc) if "pip install" in str(exc) else None)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except user_errors() as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as exc:
        print(f"{prog}: failed: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # train and sweep say how to go on; elsewhere there is nothing to keep
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def version():
    """anynet's version, as ``anynet.__version__`` gives it."""
    from .. import __version__

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
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])  # a program of its own, which sets up its own process
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
        keep_freed_memory()  # this process only trains: NumPy's temporaries are reused instead of faulting in
    return guarded(f"anynet {args.command}", args.run, args)
