"""Sweep results: the table of trials, written atomically as it grows, its best entry and its plot."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from ...files import write_atomic
from .grid import LOG_KEYS, format_value

# Columns every row has, after the swept flags; anything else but "config" is a flag.
METRICS = ("val_acc", "test_acc", "train_seconds", "images_per_second")
COLUMNS = (*METRICS, "worker", "attempts", "status", "run_dir", "error")
STATUSES = ("ok", "pruned", "error", "lost", "diverged")
# Trials that finished with a validation accuracy that counts: a diverged one has its best parameters' accuracy.
SCORED = ("ok", "diverged")
# Trials that ran to an end: a resumed sweep keeps them and never runs them again (``lost`` ones it does).
FINISHED = ("ok", "pruned", "error", "diverged")
_NOT_FLAGS = ("trial", "config", "traceback")
RESULTS_JSON, RESULTS_CSV, BEST_JSON, PLOT_PNG = "results.json", "results.csv", "best.json", "val_acc.png"
MAP_PNG = "val_acc_map.png"


def canonical(config: dict) -> str:
    """A string that is equal for equal configs, whichever way they were built."""
    return json.dumps(jsonable(config), sort_keys=True)


def jsonable(value):
    """Return ``value`` with tuples as lists and paths as strings, as JSON would read it back."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return value.item()
    return value


def flag_names(rows) -> list[str]:
    """The flag columns of ``rows``, in order of first appearance."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key not in COLUMNS and key not in _NOT_FLAGS:
                names.setdefault(key)
    return list(names)


def scored(rows):
    """The rows of trials that finished with a validation accuracy: ``ok``, and ``diverged`` (their best one)."""
    return [r for r in rows if r.get("status") in SCORED and isinstance(r.get("val_acc"), (int, float))]


def best_row(rows):
    """The scored row (see ``scored``) with the highest ``val_acc`` (the earliest on ties), or None."""
    done = scored(rows)
    return max(done, key=lambda r: (r["val_acc"], -r["trial"]), default=None)


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half of one."""
    write_atomic(path, text)


def _csv_text(rows) -> str:
    """The rows as CSV: trial, the flags, then the metrics and bookkeeping."""
    header = ["trial", *flag_names(rows), *COLUMNS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = []
        for name in header:
            value = row.get(name)
            cells.append("" if value is None else format_value(value) if name not in COLUMNS else value)
        writer.writerow(cells)
    return out.getvalue()


def write_results(out_dir, rows) -> None:
    """Write ``results.json``, ``results.csv`` and ``best.json`` under ``out_dir``, each atomically.

    Parameters
    ----------
    out_dir : str or path
        An existing directory.
    rows : list of dict
        The trials finished so far, one dict each.
    """
    out_dir = Path(out_dir)
    rows = sorted(rows, key=lambda r: r["trial"])
    _atomic_write(out_dir / RESULTS_JSON, json.dumps(jsonable(rows), indent=1) + "\n")
    _atomic_write(out_dir / RESULTS_CSV, _csv_text(rows))
    best = best_row(rows)
    if best is not None:
        summary = {
            "trial": best["trial"],
            "status": best["status"],
            "val_acc": best["val_acc"],
            "test_acc": best.get("test_acc"),
            "flags": {k: best[k] for k in flag_names([best])},
            "run_dir": best.get("run_dir"),
            "config": best.get("config", {}),
        }
        _atomic_write(out_dir / BEST_JSON, json.dumps(jsonable(summary), indent=1) + "\n")


def read_results(out_dir) -> list[dict]:
    """Read the rows a previous sweep wrote to ``out_dir`` (an empty list when there are none).

    Raises
    ------
    ValueError
        If ``results.json`` is there but is not a list of trial rows.
    """
    path = Path(out_dir) / RESULTS_JSON
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); move it away to start afresh") from None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("config"), dict) and r.get("status") in STATUSES for r in rows
    ):
        raise ValueError(f"{path} is not a table of sweep trials; move it away to start afresh")
    return rows


def plot_results(out_dir, rows, keys) -> Path | None:
    """Plot validation accuracy against each swept flag into ``out_dir/val_acc.png``, and over two into a map.

    One panel per flag in ``keys``; learning rate, reg and weight scale get a
    log axis, flags with non-numeric values one tick per value. Returns the
    path, or None when no trial finished. Uses matplotlib's Agg canvas
    directly, so it works without a display and leaves pyplot's state alone.
    When two or more of ``keys`` vary, ``val_acc_map.png`` shows validation
    accuracy over the first two of them (``plot_map``).
    """
    done = scored(rows)
    keys = [k for k in keys if any(k in r for r in done)]
    if not done or not keys:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(keys), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    best = best_row(done)
    for ax, key in zip(axes, keys, strict=True):
        values = [r.get(key) for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = values
        else:
            labels = sorted({format_value(v) for v in values})
            xs = [labels.index(format_value(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels)
        ax.scatter(xs, [r["val_acc"] for r in done], alpha=0.7)
        bx = xs[done.index(best)]
        ax.scatter([bx], [best["val_acc"]], marker="*", s=160, color="tab:red", label="best")
        if numeric and key in LOG_KEYS and min(values) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(key.replace("_", "-"))
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    path = Path(out_dir) / PLOT_PNG
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    varied = [k for k in keys if len({format_value(r.get(k)) for r in done}) > 1]
    if len(varied) >= 2:
        plot_map(out_dir, rows, *varied[:2])
    return path


def map_cells(rows, x_key, y_key):
    """The trials of ``rows`` as a grid over two flags, when they form one; else None.

    Returns ``(xs, ys, acc, notes)``: the distinct values of each flag among
    the trials that ran (sorted), the best validation accuracy of the finished
    trials at each (y, x) cell (NaN where none finished), and at each cell
    where none finished the status of those that ran there (``error``,
    ``pruned``; empty where nothing ran). Points drawn from ranges rarely
    share values: when the grid would be more than half empty, None
    (``plot_map`` then draws a scatter).
    """
    ran = [r for r in rows if r.get("status") in FINISHED and x_key in r and y_key in r]
    done = scored(ran)
    labels = {}
    for key in (x_key, y_key):
        values = {format_value(r[key]): r[key] for r in ran}
        labels[key] = sorted(values, key=lambda t: (_sort_key(values[t]), t))
    xs, ys = labels[x_key], labels[y_key]
    filled = {(format_value(r[x_key]), format_value(r[y_key])) for r in ran}
    if not done or len(filled) * 2 < len(xs) * len(ys):
        return None
    acc = [[math.nan] * len(xs) for _ in ys]
    notes = [[""] * len(xs) for _ in ys]
    for r in ran:
        i, j = ys.index(format_value(r[y_key])), xs.index(format_value(r[x_key]))
        if r in done:
            acc[i][j] = r["val_acc"] if math.isnan(acc[i][j]) else max(acc[i][j], r["val_acc"])
        elif not notes[i][j] or r["status"] == "pruned":
            notes[i][j] = r["status"]
    for i, line in enumerate(acc):
        for j, value in enumerate(line):
            if not math.isnan(value):
                notes[i][j] = ""
    return xs, ys, acc, notes


def _sort_key(value):
    """Numbers in numeric order, before anything else."""
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def plot_map(out_dir, rows, x_key, y_key) -> Path | None:
    """Draw validation accuracy over two flags into ``out_dir/val_acc_map.png``, as CS231n draws lr x reg.

    Trials on a grid fill its cells (the best when several share one, the
    value written in each, or ``error`` or ``pruned`` where no trial
    finished); points drawn from ranges are a scatter coloured by accuracy,
    on log axes for learning rate, reg and weight scale, pruned trials as grey
    crosses. The best trial is framed or starred. Returns the path, or None when no trial finished.
    """
    done = scored(rows)
    if not done:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    best = best_row(done)
    cells = map_cells(rows, x_key, y_key)
    if cells is not None:
        from matplotlib.patches import Rectangle

        xs, ys, acc, notes = cells
        image = ax.imshow(acc, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        middle = (image.norm.vmin + image.norm.vmax) / 2
        for i, line in enumerate(acc):
            for j, value in enumerate(line):
                text = notes[i][j] if math.isnan(value) else f"{value:.3f}"
                dark = math.isnan(value) or value > middle  # dark text on the bright end of viridis and on blanks
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if dark else "white")
        bx, by = xs.index(format_value(best[x_key])), ys.index(format_value(best[y_key]))
        ax.add_patch(Rectangle((bx - 0.5, by - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=2.5,
                               label="best"))
    else:
        image = ax.scatter([r[x_key] for r in done], [r[y_key] for r in done], c=[r["val_acc"] for r in done],
                           cmap="viridis", s=60, edgecolors="none")
        stopped = [r for r in rows if r.get("status") == "pruned" and x_key in r and y_key in r]
        if stopped:
            ax.scatter([r[x_key] for r in stopped], [r[y_key] for r in stopped], marker="x", color="0.5",
                       label="pruned")
        for key, set_scale in ((x_key, ax.set_xscale), (y_key, ax.set_yscale)):
            if key in LOG_KEYS and min(r[key] for r in done) > 0:
                set_scale("log")
        ax.scatter([best[x_key]], [best[y_key]], marker="*", s=220, color="tab:red", edgecolors="white",
                   label="best")
    ax.set_xlabel(x_key.replace("_", "-"))
    ax.set_ylabel(y_key.replace("_", "-"))
    ax.set_title("validation accuracy")
    ax.legend(loc="best")
    fig.colorbar(image, ax=ax, label="validation accuracy")
    path = Path(out_dir) / MAP_PNG
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path
