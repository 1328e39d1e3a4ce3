"""What a sweep runs: its arguments checked, its trials planned up front, and those its folder already holds.

A grid sweep, or random points drawn from its ranges, is planned here in
full: one ``(flags, config)`` per trial. A search asks its study for each
trial instead (``search``). Resuming keeps the trials the folder's table
already holds and runs the rest.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..config import DEFAULTS, PLACE_KEYS, make_config
from .grid import expand_grid, flag_key, format_value, sample_grid
from .manifest import MANIFEST
from .results import FINISHED, canonical, jsonable, read_results
from .search import STUDY_DB

SAMPLERS = ("grid", "random", "tpe")


def check_args(sampler, trials, workers, trial, random):
    """Check the sweep's arguments; return (sampler, trials) with the deprecated ``random=N`` applied."""
    if random is not None:
        if sampler not in (None, "random") or trials not in (None, random):
            raise ValueError(f"random={random!r} is short for sampler='random', trials={random!r}; give one of them")
        warnings.warn("sweep(random=N) is deprecated; use sampler='random', trials=N", DeprecationWarning,
                      stacklevel=3)
        sampler, trials = "random", random
    sampler = "grid" if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials <= 0):
        raise ValueError(f"trials must be a positive integer; got {trials!r}")
    if trials is None and sampler != "grid":
        raise ValueError(f"sampler {sampler!r} needs the number of trials (--trials N)")
    if not callable(trial):
        raise TypeError(f"trial must be callable; got {type(trial).__name__}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a non-negative integer; got {workers!r}")
    return sampler, trials


def shared_config(base_config) -> dict:
    """The shared train config with every key a train flag, checked."""
    base = {flag_key(k): v for k, v in dict(base_config or {}).items()}
    unknown = sorted(set(base) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"base_config has unknown key(s) {', '.join(unknown)}; expected train flags: {', '.join(sorted(DEFAULTS))}"
        )
    return {**DEFAULTS, **base}


def previous_rows(out_dir, resume, search, sampler, prune) -> list[dict]:
    """The rows a sweep in ``out_dir`` already recorded, after checking that this sweep may go on from them.

    Creates ``out_dir``. Raises ``ValueError`` where it holds results and
    ``resume`` is false, or a sweep of the other kind (a study, or none).
    """
    if out_dir is None:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = read_results(out_dir)
    if previous and not resume:
        raise ValueError(
            f"{out_dir} already holds the results of a sweep; resume it (--resume) or choose another output folder"
        )
    if (out_dir / MANIFEST).exists() and not resume:
        raise ValueError(f"{out_dir} already holds a sweep ({MANIFEST}); resume it (--resume) or choose another "
                         "output folder")
    if (out_dir / STUDY_DB).exists() and not search:
        raise ValueError(f"{out_dir} holds an Optuna study ({STUDY_DB}); resume it with the --sampler and "
                         "--prune it was started with")
    if search and previous and not (out_dir / STUDY_DB).exists():
        raise ValueError(f"{out_dir} holds a sweep without an Optuna study; it cannot be resumed as "
                         f"--sampler {sampler}" + (" --prune" if prune else ""))
    return previous


def plan(grid, base, sampler, trials, random_seed, first=None):
    """The list of (flags, full config) of every trial of a planned sweep: the grid, a part of it, or random points.

    ``first`` is the number of trials a grid sweep of fewer trials than points
    was started with (default ``trials``): resumed with more, it keeps those
    points, under the same numbers, and adds more after them.
    """
    if sampler == "random":
        points = sample_grid(grid, trials, seed=random_seed)  # drawn one after another: more trials, same first ones
    else:
        points = expand_grid(grid)
        started = trials if first is None else first
        if trials is not None and started < len(points):  # part of the grid, or so it started
            points = [points[i] for i in _grid_subset(len(points), trials, random_seed, first)]
    return [(jsonable(point), jsonable({**base, **point})) for point in points]


def _grid_subset(size, trials, seed, first):
    """The indices of ``trials`` of ``size`` grid points: a seeded choice of ``first`` in grid order, then more."""
    first = trials if first is None else min(first, trials)
    rng = np.random.default_rng(seed)
    keep = sorted(int(i) for i in rng.choice(size, size=first, replace=False))
    if trials > first:
        rest = np.array([i for i in range(size) if i not in set(keep)])
        keep += sorted(int(i) for i in rng.permutation(rest)[:trials - first])
    return keep


def _what(config) -> str:
    """What decides what a trial of ``config`` trains (not where or how it computes), as comparable text."""
    return canonical({k: v for k, v in config.items() if k not in PLACE_KEYS})


def match_previous(previous, trials):
    """Split the plan into finished rows (renumbered to their plan index) and the indices still to run.

    A recorded trial counts as finished when it ended ``ok``, ``error`` or
    ``diverged``; ``lost`` trials (their workers kept dying) run again.
    Backend, device, data folder and compiling aside, the configs must be
    equal. Rows that are not in the plan are kept, numbered after it.
    """
    by_config: dict[str, list] = {}
    for row in previous:
        if row.get("status") in FINISHED:
            by_config.setdefault(_what(row["config"]), []).append(row)
    done, pending = [], []
    for index, (_, config) in enumerate(trials):
        matches = by_config.get(_what(config))
        if matches:
            done.append({**matches.pop(0), "trial": index})
        else:
            pending.append(index)
    extra = [row for rows in by_config.values() for row in rows]
    for offset, row in enumerate(sorted(extra, key=lambda r: r.get("trial", 0))):
        done.append({**row, "trial": len(trials) + offset})
    return done, pending


def check_points(points, base):
    """Refuse, before any trial runs, a point that no trial could train: a flag its model does not take, say.

    ``points`` are dicts of swept flags (a planned sweep's, or for a search
    each grid value on its own); each is checked on top of ``base`` with
    ``make_config``. Values only training can judge (a batch larger than the
    data) are left to the trials, whose rows record them.
    """
    for point in points:
        try:
            make_config({**base, **point})
        except ValueError as exc:
            where = ", ".join(f"{k.replace('_', '-')}={format_value(v)}" for k, v in point.items())
            raise ValueError(f"{exc} (in the trial of {where})" if where else str(exc)) from None
