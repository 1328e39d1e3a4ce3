"""What a sweep was started with, kept in its folder (``sweep.json``), and what ``--resume`` may change of it.

``sweep`` writes the record when it starts: grid, sampler, trials, seed,
pruning, the train flags the trials share, and where they ran. ``anynet
sweep --resume DIR`` then needs nothing else (``resumed_settings``): flags
given beside it may repeat the record, raise ``--trials``, or change where
and how the trials run (``--workers``, ``--scheduler``, ``--backend``,
``--device``, ``--data-dir``, ``--quiet``); any other is refused, naming the
flag and its recorded value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ...files import write_atomic
from ..config import DEFAULTS, flag
from .grid import flag_key, format_value, parse_grid
from .results import RESULTS_JSON, canonical, jsonable

MANIFEST = "sweep.json"
_FORMAT = "anynet-sweep/1"
# Train flags a resumed sweep may change: where its trials run and read their data.
PLACE_FLAGS = ("backend", "device", "data_dir")
_MAY_CHANGE = "--trials (more), --workers, --scheduler, --backend, --device, --data-dir or --quiet"


def write_manifest(out_dir, *, grid, base_config, sampler, trials, first_trials, prune, random_seed, workers,
                   scheduler) -> None:
    """Write ``out_dir/sweep.json`` (atomically): what the sweep is run with now."""
    record = {
        "format": _FORMAT, "grid": grid, "sampler": sampler, "trials": trials, "first_trials": first_trials,
        "prune": bool(prune), "random_seed": random_seed,
        "train_flags": {flag_key(k): v for k, v in dict(base_config or {}).items()},
        "workers": workers, "scheduler": scheduler,
    }
    write_atomic(Path(out_dir) / MANIFEST, json.dumps(jsonable(record), indent=1) + "\n")


def read_manifest(out_dir) -> dict | None:
    """The record in ``out_dir/sweep.json``, or None where there is none (a new folder, or an older sweep's).

    Raises
    ------
    ValueError
        If the file is there but is not such a record; the message names it.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it should record how the sweep was started") from None
    if not (isinstance(record, dict) and record.get("format") == _FORMAT and isinstance(record.get("grid"), dict)
            and isinstance(record.get("train_flags"), dict)):
        raise ValueError(f"{path} is not an anynet sweep's record of how it was started")
    return record


def first_trials(record, grid, sampler, trials, random_seed):
    """How many trials a grid sweep of part of its grid was first started with, when ``record`` is that sweep's."""
    if record is None or sampler != "grid" or trials is None or record.get("first_trials") is None:
        return trials
    same = (record.get("sampler") == "grid" and record.get("random_seed") == random_seed
            and canonical(record["grid"]) == canonical(jsonable(grid)))
    return record["first_trials"] if same else trials


def resumed_settings(given: dict, out_dir) -> dict:
    """The settings ``anynet sweep --resume`` runs with: those recorded in ``out_dir``, the flags ``given`` checked.

    ``given`` holds what the command line gave (None, or False for
    ``prune``, where a flag was not given): ``grid``, ``sampler``,
    ``trials``, ``prune``, ``random_seed``, ``workers``, ``scheduler`` and
    ``base`` (the train flags typed, and the environment's backend and
    device). A folder without a record is resumed with the flags given, as
    before there were records, if they include ``--grid``.

    Raises
    ------
    ValueError
        A flag other than those a resumed sweep may change, whose value
        differs from the recorded one (the message names both); or a folder
        without a record and no ``--grid``.
    """
    record = read_manifest(out_dir)
    if record is None:
        if given["grid"] is None:
            raise ValueError(_no_record(out_dir))
        return {**given, "random_seed": 0 if given["random_seed"] is None else given["random_seed"]}
    _refuse_changes(given, record, out_dir)
    total = record["trials"]
    if given["trials"] is not None and given["trials"] > (_grid_size(record) if total is None else total):
        total = given["trials"]  # more than a whole grid: refused by ``sweep`` in its own words
    place = given["workers"] is not None or given["scheduler"] is not None
    return {
        "grid": record["grid"], "sampler": record["sampler"], "trials": total, "prune": record["prune"],
        "random_seed": record["random_seed"],
        "base": {**record["train_flags"], **{k: v for k, v in given["base"].items() if k in PLACE_FLAGS}},
        "workers": given["workers"] if place else record.get("workers"),
        "scheduler": given["scheduler"] if place else record.get("scheduler"),
    }


def _no_record(out_dir) -> str:
    """Why ``--resume DIR`` alone cannot go on in ``out_dir``, which holds no record."""
    if (Path(out_dir) / RESULTS_JSON).exists():
        return (f"{out_dir} holds a sweep started by an older anynet, which did not record its flags ({MANIFEST}); "
                "resume it with the flags it was started with: --grid, --sampler, --trials and its train flags")
    return f"{out_dir} holds no sweep to resume (no {MANIFEST}); start one there with --grid ... --out {out_dir}"


def _refused(name, recorded, got, out_dir) -> ValueError:
    """The one-line refusal of flag ``name``: its recorded value and the one given."""
    return ValueError(f"{name} was {recorded} when the sweep in {out_dir} started; got {got}. A resumed sweep "
                      f"keeps its flags: beside --resume give only {_MAY_CHANGE}")


def _grid_size(record) -> int:
    return math.prod(len(values) for values in record["grid"].values())


def _grid_text(grid) -> str:
    return " ".join(f"{k.replace('_', '-')}={','.join(format_value(v) for v in values)}" for k, values in grid.items())


def _refuse_changes(given, record, out_dir) -> None:
    """Raise ``ValueError`` for the first flag in ``given`` that changes what ``record`` says the sweep trains."""
    if given["grid"] is not None:
        grid = parse_grid(given["grid"])
        if canonical(jsonable(grid)) != canonical(jsonable(parse_grid(record["grid"]))):
            raise _refused("--grid", _grid_text(parse_grid(record["grid"])), _grid_text(grid), out_dir)
    if given["sampler"] is not None and given["sampler"] != record["sampler"]:
        raise _refused("--sampler", record["sampler"], given["sampler"], out_dir)
    total = record["trials"] if record["trials"] is not None else _grid_size(record)
    if given["trials"] is not None and given["trials"] < total:
        raise _refused("--trials", total, f"{given['trials']} (it may only grow)", out_dir)
    if given["prune"] and not record["prune"]:
        raise _refused("--prune", "not given", "--prune", out_dir)
    if given["random_seed"] is not None and given["random_seed"] != record["random_seed"]:
        raise _refused("--random-seed", record["random_seed"], given["random_seed"], out_dir)
    recorded = record["train_flags"]
    for key, value in given["base"].items():
        if key in PLACE_FLAGS:
            continue
        other = {"epochs": "iterations", "iterations": "epochs"}.get(key)
        if other is not None and recorded.get(other) is not None:
            raise _refused(flag(other), recorded[other], f"{flag(key)} {value}", out_dir)
        before = recorded.get(key, DEFAULTS.get(key))
        if _same_value(key, value) != _same_value(key, before):
            shown = "not given" if key not in recorded else format_value(before)
            raise _refused(flag(key), shown, format_value(value), out_dir)


def _same_value(key, value):
    """``value`` of train flag ``key`` in one spelling: ``none`` as None, one hidden layer's width as a list."""
    if key == "lr_schedule" and value == "none":
        return None
    if key in ("hidden_dims", "widths") and isinstance(value, int):
        return [value]
    return jsonable(value)
