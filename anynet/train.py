"""The training job: one config turns into a model, a Solver and a folder of results.

``anynet train`` and the sweep both call ``train``; this module is the one
place that maps the command's flags onto models and the Solver.
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

from . import backend as _backend
from .checkpoint import CheckpointError, is_training_checkpoint, load_npz, save_model
from .files import write_atomic
from .models import FullyConnectedNet, TwoLayerNet
from .solver import Solver

DEFAULTS = {
    "backend": "numpy",
    "device": None,
    "model": "two-layer",
    "hidden_dims": [100],
    "update_rule": "sgd",
    "learning_rate": 1e-3,
    "lr_decay": 0.95,
    "reg": 0.0,
    "weight_scale": 1e-3,
    "dtype": "float32",
    "batch_size": 200,
    "epochs": 10,
    "iterations": None,
    "seed": 0,
    "data_dir": None,
    "num_training": 49000,
    "num_validation": 1000,
    "num_test": 1000,
    "batchnorm": False,
    "dropout": 0.0,
    "compile": "auto",
}
MODELS = ("two-layer", "fc")
COMPILE = {"auto": "auto", "on": True, "off": False}  # --compile -> the Solver's compile=
# Keys that shape the trajectory of a run: a resumed run must keep them.
_FIXED_ON_RESUME = (
    "model", "hidden_dims", "update_rule", "learning_rate", "lr_decay", "reg", "weight_scale", "dtype",
    "batch_size", "seed", "num_training", "num_validation", "batchnorm", "dropout",
)
CHECKPOINT = "checkpoint"
MODEL_FILE = "model.npz"
METRICS_CSV = "metrics.csv"
CSV_COLUMNS = ("epoch", "iteration", "loss", "train_acc", "val_acc", "learning_rate", "seconds", "images_per_second")
_LOSS_EVERY = 10
# history.json and the plots are rewritten at an epoch end once training has run this many times as long as
# their last writing took: a watched run, at a cost of at most about 1/_WRITE_EVERY of its time. Before the
# first writing its cost is taken to be _WRITE_GUESS seconds (0.4-0.5 s for a two-layer net, 1.6-2.4 s for
# [1024, 512], measured on a loaded 2-core Xeon), so runs of a few seconds write them at the end only.
_WRITE_EVERY = 10
_WRITE_GUESS = 0.5


class StopRun(Exception):
    """Raised by ``train``'s ``on_epoch`` callback to end the run at that epoch (a pruned sweep trial).

    ``train`` then finishes as at the end of a run (best parameters, files
    written) and its metrics say why in ``stopped``.
    """


def _flag(key):
    """The command-line flag of config key ``key``."""
    return "--" + key.replace("_", "-")


def make_config(config=None):
    """Return ``config`` with ``DEFAULTS`` filled in for missing keys, checking the keys.

    Raises
    ------
    TypeError
        If ``config`` is not a dict.
    ValueError
        If it has a key not in ``DEFAULTS``, or an invalid model choice.
    """
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; expected some of {', '.join(DEFAULTS)}")
    config = {**DEFAULTS, **config}
    hidden = config["hidden_dims"]
    config["hidden_dims"] = [hidden] if isinstance(hidden, int) else list(hidden)
    if config["model"] not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {config['model']!r}")
    if config["compile"] not in COMPILE:
        raise ValueError(f"compile must be one of {', '.join(COMPILE)}; got {config['compile']!r}")
    if config["model"] == "two-layer":
        if len(config["hidden_dims"]) != 1:
            raise ValueError(
                f"--model two-layer takes one --hidden-dims value; got {config['hidden_dims']} (use --model fc)"
            )
        if config["batchnorm"]:
            raise ValueError("--batchnorm needs --model fc")
    return config


def applied_config(config):
    """The full config ``config`` with only the keys that applied: ``epochs`` or ``iterations``, not both.

    ``iterations`` (when not None) decides a run's length; the ``epochs``
    default beside it did not apply and is left out, as is ``iterations:
    None`` beside ``epochs``.
    """
    config = dict(config)
    if config.get("iterations") is None:
        config.pop("iterations", None)
    else:
        config.pop("epochs", None)
    return config


def build_model(config):
    """Build the model a full config (see ``make_config``) describes."""
    common = {
        "weight_scale": config["weight_scale"], "reg": config["reg"], "dropout": config["dropout"],
        "dtype": config["dtype"], "seed": config["seed"], "backend": config["backend"], "device": config["device"],
    }
    if config["model"] == "two-layer":
        return TwoLayerNet(hidden_dims=config["hidden_dims"][0], **common)
    return FullyConnectedNet(config["hidden_dims"], use_batchnorm=config["batchnorm"], **common)


def resume_config(config, checkpoint):
    """The config to resume ``checkpoint`` with: the saved one, updated by ``config``.

    Keys in ``config`` may change where and how long the run goes on (epochs,
    iterations, backend, device, data_dir, num_test); changing one of the keys
    that shape the trajectory raises ``ValueError``.
    """
    config = dict(config or {})
    _, meta = load_npz(checkpoint)
    if not is_training_checkpoint(meta):
        raise CheckpointError(
            f"{checkpoint} is a saved model, not a training checkpoint: it holds no optimizer state or position "
            f"to resume from; resume from the run's {CHECKPOINT}.npz"
        )
    saved = meta.get("metadata", {}).get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {checkpoint} was not written by anynet train (it holds no config)")
    saved = make_config({k: v for k, v in saved.items() if k in DEFAULTS})
    given = make_config(config)
    for key in _FIXED_ON_RESUME:
        if key in config and given[key] != saved[key]:
            raise ValueError(
                f"{_flag(key)} was {saved[key]!r} in {checkpoint}; got {given[key]!r}. "
                "A resumed run keeps the flags of the run it continues"
            )
    if "epochs" in config and "iterations" not in config:
        config["iterations"] = None
    return make_config({**saved, **config})


def accuracy(model, X, y, batch_size=1000):
    """Fraction of images ``X`` that ``model`` labels as ``y`` (NumPy or device arrays); None when empty."""
    N = X.shape[0]
    if N == 0:
        return None
    xp = model.xp
    X = _backend.to_device(X, xp, model.device, getattr(model, "_dtype", None))
    y = _backend.to_device(y, xp, model.device)
    # Counted in the library's default integer type: int64, or int32 in JAX's default mode (no warning).
    count = xp.asarray(0, device=model.device).dtype
    correct = xp.zeros((), dtype=count, device=model.device)
    for start in range(0, N, batch_size):
        stop = min(start + batch_size, N)
        correct = correct + xp.sum(xp.astype(model.predict(X[start:stop, ...]) == y[start:stop], count))
    return int(correct) / N


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


def _acc_iterations(solver):
    """The iteration of each accuracy check the Solver made: the first, every epoch end, the last."""
    ipe, t = solver.iterations_per_epoch, solver.t
    points = {1, t} if t else set()
    points.update(k * ipe for k in range(1, t // ipe + 1))
    return sorted(points)


def _backend_name(model):
    """The name of the backend ``model`` computes on (models hold a backend object, or its name)."""
    return getattr(model.backend, "name", model.backend)


def _compile_seconds(solver):
    """Seconds the Solver has spent compiling so far (0.0 when it runs eagerly)."""
    return float(getattr(solver, "compile_seconds", 0.0))


def _learning_rate(config, solver):
    """The learning rate of the epoch that ends at ``solver.t``, without reading the Solver's optimizer state.

    The Solver multiplies the rate by ``lr_decay`` at each epoch end, so the
    epoch with index ``e`` (from 0) trains at ``learning_rate * lr_decay**e``.
    """
    epoch = max(solver.t - 1, 0) // solver.iterations_per_epoch
    return config["learning_rate"] * config["lr_decay"] ** epoch


class _Monitor:
    """Solver callback: a progress bar, one line per epoch, and the epoch's row for ``sinks``."""

    def __init__(self, solver, config, quiet, out=sys.stderr, sinks=()):
        self.solver, self.config, self.quiet, self.out = solver, config, quiet, out
        self.sinks = list(sinks)
        self.bar = None
        self.mark = (time.perf_counter(), solver.t)
        self.losses_seen = len(solver.loss_history)
        self.compiled = _compile_seconds(solver)

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
        now, t0 = time.perf_counter(), self.mark[1]
        compiled, self.compiled = self.compiled, _compile_seconds(solver)
        seconds = now - self.mark[0] - (self.compiled - compiled)  # compiling is not training
        rate = (solver.t - t0) * solver.batch_size / max(seconds, 1e-9)
        losses = solver.loss_history[self.losses_seen:]  # on the host: the Solver flushed them at the epoch end
        self.losses_seen = len(solver.loss_history)
        ipe = solver.iterations_per_epoch
        row = {
            "epoch": solver.t / ipe, "iteration": solver.t,
            "loss": math.fsum(losses) / len(losses) if losses else None,
            "train_acc": solver.train_acc_history[-1], "val_acc": solver.val_acc_history[-1],
            "learning_rate": _learning_rate(self.config, solver), "seconds": seconds, "images_per_second": rate,
        }
        for sink in self.sinks:
            sink(solver, row)
        # The next epoch's clock starts after the sinks: their cost is timed on its own (write_seconds).
        self.mark = (time.perf_counter(), solver.t)
        if self.quiet:
            return
        line = (
            f"epoch {_epochs(solver.t / ipe)}/{_epochs(solver.num_iterations / ipe)}: "
            f"train acc {row['train_acc']:.3f}, val acc {row['val_acc']:.3f}, {rate:,.0f} images/s"
        )
        if self.bar is not None:
            self.bar.write(line, file=self.out)
        else:
            print(line, file=self.out)


def _epochs(x):
    """``x`` epochs as text: ``3`` or ``4.08``."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _json_text(obj):
    """``obj`` as indented JSON text."""
    return json.dumps(obj, indent=2) + "\n"


def _history(solver):
    """The run's losses and accuracies so far, as history.json holds them."""
    return {
        "loss_history": solver.loss_history,
        "train_acc_history": solver.train_acc_history,
        "val_acc_history": solver.val_acc_history,
        "acc_iterations": _acc_iterations(solver),
        "iterations_per_epoch": solver.iterations_per_epoch,
    }


def write_history(out_dir, history, model):
    """Write history.json, loss.png, accuracy.png and weights.png into ``out_dir``, each atomically."""
    from . import vis

    out_dir = Path(out_dir)
    write_atomic(out_dir / "history.json", _json_text(history))
    vis.plot_history(history, out_dir / "loss.png", kind="loss")
    vis.plot_history(history, out_dir / "accuracy.png", kind="accuracy")
    W1 = model.params["W1"]
    if W1.shape[0] == 3 * 32 * 32:
        vis.plot_weights(W1, out_dir / "weights.png")


def write_outputs(out_dir, metrics, history, model):
    """Write metrics.json, history.json, loss.png, accuracy.png and weights.png into ``out_dir``."""
    write_atomic(Path(out_dir) / "metrics.json", _json_text(metrics))
    write_history(out_dir, history, model)


class _RunFolder:
    """Epoch-end writes into a run's folder, so that a long run can be watched.

    Each epoch appends a row to metrics.csv (flushed at once). history.json
    and the plots are rewritten at an epoch end when the training since their
    last writing took ``_WRITE_EVERY`` times as long as that writing did
    (``_WRITE_GUESS`` seconds before the first): every epoch when epochs are
    long, every k epochs when an epoch is shorter than plotting, and always
    at the end of the run (``train``).
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
            write_history(self.out_dir, _history(solver), solver.model)
            self._last_write = time.perf_counter() - start
            self.write_seconds += self._last_write
            self._since = 0.0


class _TensorBoard:
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


def train(config, out_dir=None, data=None, quiet=False, resume=None, tensorboard=None, on_epoch=None):
    """Train the model ``config`` describes on CIFAR-10 and measure it.

    Parameters
    ----------
    config : dict
        Keys of ``DEFAULTS`` (the ``anynet train`` flags with underscores);
        missing keys take the defaults. ``iterations`` (when not None)
        overrides ``epochs``.
    out_dir : str or path, optional
        Where to write metrics.json, metrics.csv (a row per epoch, appended
        as it ends), history.json and loss.png, accuracy.png, weights.png
        (rewritten at epoch ends while training, when that is cheap, and at
        the end), checkpoint.npz (the whole training state, saved at every
        epoch end: what ``resume`` takes) and model.npz (the trained model,
        best parameters, written at the end: what ``evaluate`` and
        ``anynet.load_model`` take). Nothing is written when None.
    data : dict, optional
        Already loaded splits, as ``anynet.data.get_cifar10_data`` returns
        them (``X_test``/``y_test`` optional); loaded from ``data_dir`` when None.
    quiet : bool
        No progress bar and no per-epoch lines.
    resume : str or path, optional
        A checkpoint written by an earlier run: training continues from it,
        with its config updated by ``config`` (see ``resume_config``), and
        ends as an uninterrupted run would (bit for bit on NumPy).
    tensorboard : str or path, optional
        A folder for TensorBoard event files (needs tensorboardX:
        ``pip install "anynet[tensorboard]"``).
    on_epoch : callable, optional
        Called as ``on_epoch(row)`` at each epoch end (and after a last,
        partial epoch) with the epoch's row: ``epoch``, ``iteration``,
        ``loss``, ``train_acc``, ``val_acc``, ... (the columns of
        metrics.csv). Raising ``StopRun`` ends the run there.

    Returns
    -------
    dict
        The metrics written to metrics.json: ``val_acc``, ``test_acc`` (of the
        best parameters; None without test images), ``best_val_acc``,
        ``final_train_acc``, ``train_seconds`` (of this call, compiling
        excluded), ``compile_seconds``, ``images_per_second``,
        ``iterations``, ``epochs``, ``backend``, ``device``, ``config`` (the
        keys that applied: see ``applied_config``), ``checkpoint`` and
        ``model`` (paths, or None), ``stopped`` (the message of the
        ``StopRun`` that ended the run early, or None).
    """
    config = resume_config(config, resume) if resume is not None else make_config(config)
    model = build_model(config)  # before loading data, so bad values fail fast
    if data is None:
        from .data import get_cifar10_data

        data = get_cifar10_data(
            config["data_dir"], config["num_training"], config["num_validation"], config["num_test"],
            dtype=config["dtype"],
        )
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict of splits or None; got {type(data).__name__}")
    checkpoint_name = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_name = str(out_dir / CHECKPOINT)
    solver = Solver(
        model, data, update_rule=config["update_rule"], optim_config={"learning_rate": config["learning_rate"]},
        lr_decay=config["lr_decay"], batch_size=config["batch_size"], num_epochs=config["epochs"],
        num_iterations=config["iterations"], checkpoint_name=checkpoint_name, verbose=False, seed=config["seed"],
        compile=COMPILE[config["compile"]],
    )
    if resume is not None:
        solver.load_checkpoint(resume)
    solver.metadata = {"config": config}
    sinks = []
    folder = _RunFolder(out_dir, solver, resumed=resume is not None) if out_dir is not None else None
    if folder is not None:
        sinks.append(folder)
    board = _TensorBoard(tensorboard, solver) if tensorboard is not None else None
    if board is not None:
        sinks.append(board)
    if on_epoch is not None:
        sinks.append(lambda solver, row: on_epoch(dict(row)))  # last: the row is written before a StopRun
    monitor = _Monitor(solver, config, quiet, sinks=sinks)
    solver.callback = monitor
    start_t = solver.t
    monitor.start()
    start = time.perf_counter()
    stopped = None
    try:
        solver.train()
    except StopRun as exc:
        stopped = str(exc) or "stopped"
        solver._restore_best()  # as train() does at the end of a run: the model ends with its best parameters
    finally:
        monitor.close()
        if board is not None:
            board.close()
    compile_seconds = _compile_seconds(solver)
    seconds = time.perf_counter() - start - compile_seconds
    X_test, y_test = data.get("X_test"), data.get("y_test")
    metrics = {
        "val_acc": accuracy(model, data["X_val"], data["y_val"]),
        "test_acc": accuracy(model, X_test, y_test) if X_test is not None else None,
        "best_val_acc": solver.best_val_acc,
        "final_train_acc": solver.train_acc_history[-1] if solver.train_acc_history else None,
        "train_seconds": seconds,
        "compile_seconds": compile_seconds,
        "images_per_second": (solver.t - start_t) * solver.batch_size / seconds if seconds > 0 else None,
        "iterations": solver.t,
        "epochs": solver.t / solver.iterations_per_epoch,
        "backend": _backend_name(model),
        "device": str(model.device),
        "config": applied_config(config),
        "checkpoint": f"{checkpoint_name}.npz" if checkpoint_name else None,
        "model": str(out_dir / MODEL_FILE) if out_dir is not None else None,
        "stopped": stopped,
    }
    if folder is not None:
        metrics["write_seconds"] = folder.write_seconds
    if out_dir is not None:
        write_outputs(out_dir, metrics, _history(solver), model)
        save_model(model, out_dir / MODEL_FILE, metadata={"config": config})
    return metrics


def evaluate(checkpoint, data_dir=None, num_test=None, backend=None, device=None, data=None):
    """Validation and test accuracy of the model saved in ``checkpoint``.

    The validation split and the mean image come from the checkpoint's config
    (``num_training``, ``num_validation``), as in training.

    Parameters
    ----------
    checkpoint : str or path
        model.npz or checkpoint.npz of an ``anynet train`` run.
    data_dir : str or path, optional
        Default: the checkpoint's ``data_dir``, else as in ``anynet.data.data_root``.
    num_test : int, optional
        Test images to use; default the checkpoint's ``num_test``.
    backend, device : optional
        Where to run; default the checkpoint's backend (numpy when unknown).
    data : dict, optional
        Already loaded splits.

    Returns
    -------
    dict
        ``val_acc``, ``test_acc`` (None without test images), ``num_val``, ``num_test``, ``backend``, ``device``.
    """
    from .checkpoint import load_model

    _, meta = load_npz(checkpoint)
    saved = meta.get("metadata", {}).get("config", {})
    config = make_config({k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in DEFAULTS})
    inputs = (meta.get("model_config") or {}).get("input_dim", 3 * 32 * 32)
    if data is None and inputs != 3 * 32 * 32:
        raise ValueError(
            f"{checkpoint} holds a model of {inputs} inputs per image; CIFAR-10 images have 3072 (3x32x32)"
        )
    if num_test is not None:
        config["num_test"] = num_test
    if data_dir is not None:
        config["data_dir"] = data_dir
    if backend is None:
        backend = config["backend"]
        device = config["device"] if device is None else device
    model = load_model(checkpoint, backend=backend, device=device)
    if data is None:
        from .data import get_cifar10_data

        data = get_cifar10_data(config["data_dir"], config["num_training"], config["num_validation"],
                                config["num_test"], dtype=model.dtype)
    result = {
        "val_acc": accuracy(model, data["X_val"], data["y_val"]),
        "test_acc": accuracy(model, data["X_test"], data["y_test"]),
        "num_val": int(data["X_val"].shape[0]),
        "num_test": int(data["X_test"].shape[0]),
        "backend": _backend_name(model),
        "device": str(model.device),
    }
    return result
