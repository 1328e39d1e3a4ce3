"""Sweeps that search: an Optuna study picks each trial's flags and a median pruner stops the bad ones.

The sweep's own process (the client) is the only one that touches the study.
Trials run on Dask workers as in a grid sweep (``trials``), or here one after
another; at each epoch end a pruned sweep's trials ask the study whether to
stop (``pruning``). The study lives in ``OUT/study.db`` (Optuna's RDB
storage on SQLite): every report and result is a committed transaction, so a
sweep killed at any moment leaves a study that ``--resume`` continues.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import PLACE_KEYS
from .dependencies import require
from .grid import LOG_KEYS, _kind, _round, format_value
from .pruning import Answerer, LocalPruning, RemotePruning
from .results import canonical, jsonable
from .trials import execute, outcome, submit

STUDY_DB = "study.db"
STUDY_NAME = "anynet-sweep"
_POLL = 0.05


def _encode(value):
    """A grid value as an Optuna categorical choice (tuples of widths become ``100x100``)."""
    return value if isinstance(value, (bool, int, float, str)) or value is None else format_value(value)


class Space:
    """The search space of a grid: Optuna distributions for the swept flags, fixed values for the rest.

    For ``grid``, every flag with several values is a categorical of exactly
    those values (Optuna's ``GridSampler`` visits each combination once). For
    ``random`` and ``tpe``, a numeric flag spans ``[min, max]`` of its values,
    on a log scale for ``LOG_KEYS`` (learning rate, reg, weight scale);
    other flags pick one of their values.
    """

    def __init__(self, grid: dict, sampler: str):
        import optuna

        dist = optuna.distributions
        self.grid, self.sampler = grid, sampler
        self.fixed, self.distributions, self.choices = {}, {}, {}
        for key, values in grid.items():
            kind = _kind(key)
            if len(values) == 1:
                self.fixed[key] = values[0]
            elif sampler != "grid" and kind in (int, float):
                low, high = min(values), max(values)
                log = key in LOG_KEYS
                if log and low <= 0:
                    raise ValueError(
                        f"{key} is sampled on a log scale, so its range must be positive; got {low}..{high}"
                    )
                self.distributions[key] = (dist.IntDistribution(int(low), int(high)) if kind is int
                                           else dist.FloatDistribution(float(low), float(high), log=log))
            else:
                self.choices[key] = list(values)
                self.distributions[key] = dist.CategoricalDistribution([_encode(v) for v in values])

    def grid_space(self) -> dict:
        """The swept flags and their encoded values, for ``GridSampler``."""
        return {key: [_encode(v) for v in values] for key, values in self.choices.items()}

    def point(self, params: dict) -> dict:
        """The flags of the trial whose Optuna params are ``params``."""
        point = {}
        for key in self.grid:
            if key in self.fixed:
                point[key] = self.fixed[key]
            elif key in self.choices:
                encoded = [_encode(v) for v in self.choices[key]]
                point[key] = self.choices[key][encoded.index(params[key])]
            elif _kind(key) is int:
                point[key] = int(params[key])
            else:
                point[key] = _round(float(params[key]))
        return point


def make_sampler(space: Space, seed: int, trials: int):
    """The Optuna sampler ``space.sampler`` names, seeded with ``seed``, for a study of ``trials`` trials."""
    import optuna

    if space.sampler == "grid":

        class GridSampler(optuna.samplers.GridSampler):
            """Optuna's grid sampler without its ``study.stop()`` once the grid is done, which only works
            inside ``study.optimize``: this sweep asks and tells, and stops after its number of trials."""

            def after_trial(self, study, trial, state, values):
                pass

        return GridSampler(space.grid_space(), seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=_startup(trials))


def _startup(trials: int) -> int:
    """Trials drawn at random before TPE starts to use the results (the median pruner waits for at most 5).

    Optuna's defaults (10 and 5) assume hundreds of trials; a sweep of nine
    would then be a random search, unpruned. A third of the budget, from 1 to 10.
    """
    return max(1, min(10, trials // 3))


def open_study(out_dir, space: Space, trials: int, prune: bool, seed: int, resume: bool, base: dict):
    """Create the study of a search sweep (in ``out_dir/study.db``, or in memory), or load it to resume.

    Raises
    ------
    ValueError
        ``out_dir`` holds a study and ``resume`` is false, or it holds the
        study of another search (other sampler, grid, pruning or shared flags).
    MissingDependency
        optuna is not installed.
    """
    optuna = require("optuna", f"--sampler {space.sampler}" + (" --prune" if prune else ""))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = {"sampler": space.sampler, "prune": bool(prune), "grid": canonical(space.grid), "base": _trained(base)}
    storage = None
    if out_dir is not None:
        path = Path(out_dir) / STUDY_DB
        if path.exists() and not resume:
            raise ValueError(
                f"{out_dir} already holds a study ({STUDY_DB}); resume it (--resume) or choose another output folder"
            )
        storage = f"sqlite:///{path.resolve()}"
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=min(_startup(trials), 5), n_warmup_steps=0) if prune
              else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=seed), pruner=pruner)
    saved = study.user_attrs.get("plan")
    if saved is None:
        study.set_user_attr("plan", plan)
    elif isinstance(saved, dict) and isinstance(saved.get("base"), str):
        saved = {**saved, "base": _trained(json.loads(saved["base"]))}  # older studies recorded the place too
    if saved is not None and saved != plan:
        changed = [name for name in ("sampler", "prune", "grid", "base") if saved.get(name) != plan[name]]
        raise ValueError(
            f"--resume continues the study in {out_dir} with the flags it was started with; these differ: "
            f"{', '.join('the train flags' if c == 'base' else '--' + c for c in changed)}"
        )
    # Seeded afresh past the trials already there: a resumed random search must not draw its first points again.
    # Not the grid: its seed orders the grid, and the trials in the study name their points by that order.
    study.sampler = make_sampler(space, seed if space.sampler == "grid" else seed + len(study.trials), trials)
    return study


def _trained(base: dict) -> str:
    """The shared flags that decide what the trials train (not where or how they compute), as comparable text."""
    return canonical({k: v for k, v in base.items() if k not in PLACE_KEYS})


def settle_stale(study, rows) -> list:
    """Close the study's trials left running by a sweep that stopped: with their result when one was recorded.

    A trial whose row was written just before the crash keeps its result; one
    that was still training counts as failed, and its point is queued to be
    trained again (the grid sampler would otherwise count it as visited).
    Returns ``(number, params)`` of each of those, for the table to say so.
    """
    import optuna

    by_trial = {row["trial"]: row for row in rows}
    stale = []
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        tell(study, frozen.number, by_trial.get(frozen.number), frozen.params)
        if frozen.number not in by_trial:
            stale.append((frozen.number, dict(frozen.params)))
    return stale


def tell(study, number: int, row, params) -> None:
    """Tell the study how trial ``number`` ended, from its row (None: it did not finish).

    A diverged trial counts with the validation accuracy of its best
    parameters, so that the sampler learns what its region is worth. A trial
    that did not finish, or whose workers kept dying (``lost``), fails in the
    study and its ``params`` are queued for a trial to come.
    """
    import optuna

    state = optuna.trial.TrialState
    status = None if row is None else row.get("status")
    if status in ("ok", "diverged") and row.get("val_acc") is not None:
        study.tell(number, float(row["val_acc"]), skip_if_finished=True)
    elif status == "pruned":
        study.tell(number, state=state.PRUNED, skip_if_finished=True)
    else:
        study.tell(number, state=state.FAIL, skip_if_finished=True)
        if status in (None, "lost"):
            study.enqueue_trial(dict(params))


def run_study(study, space: Space, base: dict, todo: int, client, trial, sweep_id: str, retries: int, record, bar,
              run_dir) -> None:
    """Run ``todo`` trials of ``study``: here one after another (``client`` None), or on ``client``'s workers.

    On Dask as many trials run at once as the cluster has worker threads; each
    next one is asked of the study when one finishes, so TPE learns from every
    result it can. ``record(number, flags, config, row, attempts)`` writes a
    finished trial's row before the study is told of it: a crash in between
    leaves a row that ``settle_stale`` tells the study on ``--resume``.
    """
    import optuna

    prune = not isinstance(study.pruner, optuna.pruners.NopPruner)
    if client is not None:
        _run_on(client, study, space, base, todo, prune, trial, sweep_id, retries, record, bar, run_dir)
        return
    for _ in range(todo):
        t, flags, config = _ask(study, space, base)
        row = execute(trial, config, sweep_id, t.number, run_dir(t.number)[0], LocalPruning(t) if prune else None)
        record(t.number, flags, config, row, 1)
        tell(study, t.number, row, t.params)


def _ask(study, space: Space, base: dict):
    """The next trial of the study, with its flags and full config."""
    t = study.ask(space.distributions)
    flags = jsonable(space.point(t.params))
    return t, flags, jsonable({**base, **flags})


def _run_on(client, study, space, base, todo, prune, trial, sweep_id, retries, record, bar, run_dir) -> None:
    """``run_study`` on ``client``'s workers, as many trials at once as they have threads."""
    answerer = Answerer(client, sweep_id) if prune else None
    running = {}  # future -> (trial number, flags, config, Optuna params)
    asked = 0
    try:
        while asked < todo or running:
            if asked < todo and len(running) < max(1, sum(client.nthreads().values())):
                t, flags, config = _ask(study, space, base)
                asked += 1
                if answerer is not None:
                    answerer.trials[t.number] = t
                on_epoch = RemotePruning(sweep_id, t.number) if prune else None
                future = submit(client, trial, config, sweep_id, t.number, retries, run_dir(t.number)[0], on_epoch)
                running[future] = (t.number, flags, config, t.params)
                continue
            answered = answerer.poll() if answerer is not None else 0
            done = [future for future in running if future.done()]
            for future in done:
                number, flags, config, params = running.pop(future)
                row, attempts = outcome(client, future, sweep_id, number, bar)
                record(number, flags, config, row, attempts)
                tell(study, number, row, params)
                if answerer is not None:
                    answerer.done(number)
                future.release()
            if not answered and not done:
                time.sleep(_POLL)
    finally:
        client.cancel(list(running))
        if answerer is not None:
            answerer.close()
