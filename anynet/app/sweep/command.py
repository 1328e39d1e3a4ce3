"""The ``anynet sweep`` command: its flags, and the summary it prints of the sweep it ran."""

from __future__ import annotations

import sys
from pathlib import Path

from ..flags import add_train_flags, config_from_args, positive_int
from .dependencies import MissingDependency
from .grid import format_value
from .manifest import MANIFEST, resumed_settings
from .plan import SAMPLERS
from .results import best_row, flag_names
from .runner import sweep


def add_parser(subparsers):
    """Add ``anynet sweep`` to the ``anynet`` command's subparsers and return its parser.

    It takes every ``anynet train`` flag, for the config the trials share.
    """
    parser = subparsers.add_parser(
        "sweep",
        help="train over a grid of hyperparameters, or search it, on Dask workers",
        description="Train one model per point of a grid of train flags, or per point a search picks, on a local "
        "pool of worker processes or a Dask cluster. Each trial gets a run folder under --out/trials; the table "
        "goes to results.csv and results.json, the best trial to best.json, the plots to val_acc.png (and "
        "val_acc_map.png when two or more flags are swept). Any train flag given outside --grid applies to "
        "every trial.",
    )
    parser.add_argument("--grid", nargs="+", metavar="FLAG=V1,V2",
                        help="train flags to sweep and their values, e.g. learning-rate=1e-4,1e-3 lr-decay=0.9,0.95 "
                        "(hidden-dims and widths values join widths with x: 100x100, 32x64x128); for random and tpe a "
                        "number flag's values give its range (required unless --resume continues a sweep)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="grid: every point of the grid (default); random: --trials points drawn from its "
                        "ranges (log-uniform for learning rate, reg and weight scale); tpe: an Optuna study that "
                        "picks each trial from the results so far (needs optuna)")
    parser.add_argument("--trials", type=positive_int, metavar="N",
                        help="how many trials (needed for random and tpe; for grid, at most the grid's size: that "
                        "many points chosen at random); with --resume, the total")
    parser.add_argument("--prune", action="store_true",
                        help="stop a trial whose validation accuracy at an epoch end is below the median of earlier "
                        "trials' at that epoch (Optuna's median pruner; the sweep becomes an Optuna study)")
    parser.add_argument("--random", type=positive_int, metavar="N",
                        help="deprecated: --sampler random --trials N")
    parser.add_argument("--random-seed", type=int, metavar="S", help="seed of the sampler's draws (default 0)")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="local worker processes, one thread each (default: one per core; 0: run in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="send trials to this Dask scheduler (tcp://host:8786)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                        help=f"continue the sweep in DIR (default: --out) with the flags it recorded there "
                        f"({MANIFEST}): its finished trials are kept, a search continues its study. Flags given beside "
                        "it may raise --trials or change --workers, --scheduler, --backend, --device, --data-dir and "
                        "--quiet")
    parser.add_argument("--out", metavar="DIR", help="folder for the results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_train_flags(parser)
    parser.set_defaults(run=main)
    return parser


def main(args) -> int:
    """Run ``anynet sweep`` from parsed ``args``; print the best trial and return the exit code."""
    if args.grid is None and args.resume is None:
        raise ValueError("the following arguments are required: --grid (or --resume DIR, to continue a sweep)")
    out = _out_dir(args)
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more; got {args.workers}")
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("--workers starts a local cluster and --scheduler names another; give one")
    sampler, trials = args.sampler, args.trials
    if args.random is not None:
        if sampler not in (None, "random") or trials not in (None, args.random):
            raise ValueError(f"--random {args.random} is short for --sampler random --trials {args.random}; give one")
        print(f"anynet sweep: --random is deprecated; use --sampler random --trials {args.random}", file=sys.stderr)
        sampler, trials = "random", args.random
    settings = {"grid": args.grid, "base": config_from_args(args), "sampler": sampler, "trials": trials,
                "prune": args.prune, "random_seed": args.random_seed, "workers": args.workers,
                "scheduler": args.scheduler}
    if args.resume is not None:
        settings = resumed_settings(settings, out)
        _compile_where_it_can(settings["base"], out)
    try:
        rows = sweep(
            settings["grid"], settings["base"], scheduler=settings["scheduler"], workers=settings["workers"],
            out_dir=out, sampler=settings["sampler"], trials=settings["trials"], prune=settings["prune"],
            random_seed=settings["random_seed"] or 0, resume=args.resume is not None, progress=not args.quiet,
        )
    except MissingDependency as exc:
        print(f"anynet sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anynet sweep: interrupted; finished trials are in {out}, continue with: anynet sweep --resume {out}",
              file=sys.stderr)
        return 130
    return _report(rows, out, settings["prune"])


def _compile_where_it_can(base, out):
    """Make a recorded ``--compile on`` ``auto`` where the backend a resumed sweep runs on cannot compile; say so."""
    from ... import backends

    if base.get("compile") != "on":
        return
    try:
        if backends.get(base.get("backend") or "numpy", base.get("device")).can_compile:
            return
    except (backends.BackendUnavailableError, ValueError):
        return  # the trials say why
    base["compile"] = "auto"
    print(f"anynet sweep: the sweep in {out} was started with --compile on; the {base.get('backend') or 'numpy'} "
          "backend runs steps eagerly, so its trials go on with --compile auto", file=sys.stderr)


def _out_dir(args):
    """The sweep's folder: ``--out``, or the folder ``--resume DIR`` names (the same one, if both are given)."""
    out = args.out
    if isinstance(args.resume, str):
        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--resume {args.resume} and --out {out} name different folders; give one")
        out = args.resume
    if out is None:
        raise ValueError("--out DIR is required: the folder where results go")
    return out


def _report(rows, out, prune) -> int:
    """Print how the sweep went and its best trial; the exit code (1 when no trial finished)."""
    count = {status: sum(row["status"] == status for row in rows) for status in ("pruned", "diverged")}
    failed = sum(row["status"] in ("error", "lost") for row in rows)
    note = f", {count['pruned']} pruned" if prune else ""
    note += f", {count['diverged']} diverged" if count["diverged"] else ""
    print(f"{len(rows)} trials, {failed} failed{note}; results in {Path(out) / 'results.csv'}")
    best = best_row(rows)
    if best is None:
        print("no trial finished", file=sys.stderr)
        return 1
    flags = " ".join(f"{k.replace('_', '-')}={format_value(best[k])}" for k in flag_names([best]))
    test = "n/a" if best["test_acc"] is None else f"{best['test_acc']:.4f}"
    diverged = " (diverged; these are its best parameters')" if best["status"] == "diverged" else ""
    print(f"best: trial {best['trial']}, val acc {best['val_acc']:.4f}, test acc {test}{diverged}: {flags}")
    if best.get("run_dir"):
        print(f"its run folder: {Path(out) / best['run_dir']}; "
              f"train it again: anynet train --config {Path(out) / 'best.json'}")
    return 0
