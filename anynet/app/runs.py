"""A run you can watch: its folder, the progress on the terminal, and what is written there as it trains.

``Monitor`` is the Solver's callback: a progress bar, one line per epoch,
and each epoch's row handed to the sinks: ``RunFolder`` (metrics.csv,
history.json and the plots, rewritten while training when that is cheap),
``TensorBoard``, and a caller's ``on_epoch``. Every file is written
atomically (``anynet.files``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

from ..files import write_atomic

CHECKPOINT = "checkpoint"
MODEL_FILE = "model.npz"
METRICS_CSV = "metrics.csv"
CSV_COLUMNS = ("epoch", "iteration", "loss", "train_acc", "val_acc", "learning_rate", "seconds", "images_per_second")
_LOSS_EVERY = 10
# history.json and the plots are rewritten at an epoch end once training has run this many times as long as
# their last writing took: a watched run, at a cost of at most about 1/_WRITE_EVERY of its time. Before the
# first writing its cost is taken to be _WRITE_GUESS seconds, about what a two-layer net's plots take
# (benchmarks/RESULTS.md, "Run folders"), so that runs of a few seconds write them at the end only.
_WRITE_EVERY = 10
_WRITE_GUESS = 0.5


def new_run_dir(base="runs"):
    """Create and return a fresh folder ``base/YYYYmmdd-HHMMSS[-n]``."""
    base = Path(base)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new run folder under {base}")


def compile_seconds(solver):
    """Seconds the Solver has spent compiling so far (0.0 when it runs eagerly)."""
    return float(getattr(solver, "compile_seconds", 0.0))


def _acc_iterations(solver):
    """The iteration of each accuracy check the Solver made: the first, every epoch end, the last."""
    ipe, t = solver.iterations_per_epoch, solver.t
    points = {1, t} if t else set()
    points.update(k * ipe for k in range(1, t // ipe + 1))
    return sorted(points)


def _learning_rate(config, solver):
    """The learning rate of the last step before ``solver.t``, without reading the Solver's optimizer state.

    The Solver multiplies the rate by ``lr_decay`` at each epoch end, so the
    epoch with index ``e`` (from 0) trains at ``learning_rate * lr_decay**e``;
    a warm-up or an ``lr_schedule`` scales that at each step (``rate_factor``).
    """
    step = max(solver.t - 1, 0)
    rate = config["learning_rate"] * config["lr_decay"] ** (step // solver.iterations_per_epoch)
    kind, warmup = getattr(solver, "lr_schedule", None), getattr(solver, "warmup_iterations", 0)
    if kind is None and not warmup:
        return rate
    import numpy as np

    from ..training.step import rate_factor

    return rate * float(rate_factor(np, np.float64(step), kind or "constant", warmup, solver.num_iterations))


def _epochs(x):
    """``x`` epochs as text: ``3`` or ``4.08``."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


class Monitor:
    """Solver callback: a progress bar, one line per epoch, and the epoch's row for ``sinks``."""

    def __init__(self, solver, config, quiet, out=sys.stderr, sinks=()):
        self.solver, self.config, self.quiet, self.out = solver, config, quiet, out
        self.sinks = list(sinks)
        self.bar = None
        self.mark = (time.perf_counter(), solver.t)
        self.losses_seen = len(solver.loss_history)
        self.compiled = compile_seconds(solver)

    def start(self):
        """Open the progress bar (unless quiet)."""
        if not self.quiet:
            from tqdm import tqdm

            s = self.solver
            self.bar = tqdm(total=s.num_iterations, initial=s.t, unit="it", file=self.out, dynamic_ncols=True,
                            leave=False)
        self.mark = (time.perf_counter(), self.solver.t)

    def close(self):
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, solver, event):
        """Called by the Solver after each iteration and each epoch."""
        if event == "iteration":
            if self.bar is not None:
                self.bar.update(1)
                # Reading the loss waits on the device, so only every few iterations.
                if solver.t % _LOSS_EVERY == 0 or solver.t == solver.num_iterations:
                    self.bar.set_postfix_str(f"loss {float(solver.last_loss):.4f}", refresh=False)
            if solver.t == solver.num_iterations and solver.t % solver.iterations_per_epoch:
                self.report(solver)  # the last, partial epoch
        elif event == "epoch":
            self.report(solver)

    def report(self, solver):
        """Hand the row of the epoch that just ended to the sinks and write its line."""
        row = self._row(solver)
        for sink in self.sinks:
            sink(solver, row)
        # The next epoch's clock starts after the sinks: their cost is timed on its own (write_seconds).
        self.mark = (time.perf_counter(), solver.t)
        if self.quiet:
            return
        ipe = solver.iterations_per_epoch
        line = (
            f"epoch {_epochs(solver.t / ipe)}/{_epochs(solver.num_iterations / ipe)}: "
            f"train acc {row['train_acc']:.3f}, val acc {row['val_acc']:.3f}, {row['images_per_second']:,.0f} "
            "images/s"
        )
        if self.bar is not None:
            self.bar.write(line, file=self.out)
        else:
            print(line, file=self.out)

    def _row(self, solver):
        """The row of the epoch that just ended: the columns of metrics.csv."""
        now, t0 = time.perf_counter(), self.mark[1]
        compiled, self.compiled = self.compiled, compile_seconds(solver)
        seconds = now - self.mark[0] - (self.compiled - compiled)  # compiling is not training
        rate = (solver.t - t0) * solver.batch_size / max(seconds, 1e-9)
        losses = solver.loss_history[self.losses_seen:]  # on the host: the Solver flushed them at the epoch end
        self.losses_seen = len(solver.loss_history)
        return {
            "epoch": solver.t / solver.iterations_per_epoch, "iteration": solver.t,
            "loss": math.fsum(losses) / len(losses) if losses else None,
            "train_acc": solver.train_acc_history[-1], "val_acc": solver.val_acc_history[-1],
            "learning_rate": _learning_rate(self.config, solver), "seconds": seconds, "images_per_second": rate,
        }


def _json_text(obj):
    """``obj`` as indented JSON text."""
    return json.dumps(obj, indent=2) + "\n"


def history_of(solver):
    """The run's losses and accuracies so far, as history.json holds them.

    A run stopped by a non-finite loss measured no accuracy at the iteration
    it stopped at: its ``acc_iterations`` end with its last measurement.
    """
    return {
        "loss_history": solver.loss_history,
        "train_acc_history": solver.train_acc_history,
        "val_acc_history": solver.val_acc_history,
        "acc_iterations": _acc_iterations(solver)[:len(solver.val_acc_history)],
        "iterations_per_epoch": solver.iterations_per_epoch,
    }


def write_history(out_dir, history, model):
    """Write history.json, loss.png, accuracy.png and weights.png (not when ``model`` is None), each atomically."""
    from ..data import vis

    out_dir = Path(out_dir)
    write_atomic(out_dir / "history.json", _json_text(history))
    vis.plot_history(history, out_dir / "loss.png", kind="loss")
    vis.plot_history(history, out_dir / "accuracy.png", kind="accuracy")
    if model is None:
        return
    W1 = model.params["W1"]
    if W1.ndim == 2 and W1.shape[0] == 3 * 32 * 32:
        vis.plot_weights(W1, out_dir / "weights.png")
    elif W1.ndim == 4 and W1.shape[1] == 3:  # a convolutional net's first filters, on colour images
        vis.plot_filters(W1, out_dir / "weights.png")


def write_outputs(out_dir, metrics, history, model):
    """Write metrics.json, history.json, loss.png, accuracy.png and weights.png (with a ``model``) into ``out_dir``."""
    write_atomic(Path(out_dir) / "metrics.json", _json_text(metrics))
    write_history(out_dir, history, model)


class RunFolder:
    """Epoch-end writes into a run's folder, so that a long run can be watched.

    Each epoch appends a row to metrics.csv (flushed at once). history.json
    and the plots are rewritten at an epoch end when the training since their
    last writing took ``_WRITE_EVERY`` times as long as that writing did
    (``_WRITE_GUESS`` seconds before the first): every epoch when epochs are
    long, every k epochs when an epoch is shorter than plotting, and always
    at the end of the run (``anynet.app.train.train``).
    """

    def __init__(self, out_dir, solver, resumed):
        self.out_dir = Path(out_dir)
        self.csv = self.out_dir / METRICS_CSV
        self.write_seconds = 0.0  # spent on history.json and the plots during training
        self._last_write = _WRITE_GUESS  # seconds the last writing of them took
        self._since = 0.0  # training seconds since then
        self._start_csv(solver.t if resumed else None)

    def _start_csv(self, keep_until):
        """Start metrics.csv afresh, or keep a resumed run's rows up to its checkpoint's iteration."""
        rows = []
        if keep_until is not None and self.csv.is_file():
            with open(self.csv, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if None in row.values() or None in row:
                        continue  # a row cut short (or run on) by a crash mid-write
                    try:
                        if int(row["iteration"]) <= keep_until:  # later rows are trained again now
                            rows.append(row)
                    except (KeyError, ValueError):
                        continue
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.csv, text.getvalue())

    def __call__(self, solver, row):
        """Append ``row`` to metrics.csv; rewrite history.json and the plots when that is cheap enough."""
        cells = [_epochs(row["epoch"]), *("" if row[k] is None else row[k] for k in CSV_COLUMNS[1:])]
        with open(self.csv, "a", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerow(cells)
        self._since += row["seconds"]
        if self._since >= _WRITE_EVERY * self._last_write:
            start = time.perf_counter()
            write_history(self.out_dir, history_of(solver), solver.model)
            self._last_write = time.perf_counter() - start
            self.write_seconds += self._last_write
            self._since = 0.0


class TensorBoard:
    """Epoch-end scalars for TensorBoard through tensorboardX: every iteration's loss, accuracies, rate."""

    def __init__(self, logdir, solver):
        from tensorboardX import SummaryWriter  # ModuleNotFoundError: the command names the extra to install

        self.writer = SummaryWriter(logdir=str(logdir))
        self.logged = len(solver.loss_history)

    def __call__(self, solver, row):
        """Log the epoch's losses (they reach the host once an epoch) and its row."""
        t = row["iteration"]
        for i, loss in enumerate(solver.loss_history[self.logged:], start=self.logged + 1):
            self.writer.add_scalar("train/loss", loss, i)
        self.logged = len(solver.loss_history)
        for tag, key in (("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"),
                         ("train/learning_rate", "learning_rate"), ("speed/images_per_second", "images_per_second")):
            self.writer.add_scalar(tag, row[key], t)
        self.writer.flush()

    def close(self):
        """Flush and close the event file."""
        self.writer.close()
