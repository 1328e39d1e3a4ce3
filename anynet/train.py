"""The training job: one config turns into a model, a Solver and a folder of results.

``anynet train`` and the sweep both call ``train``; this module is the one
place that maps the command's flags onto models and the Solver.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

from . import backend as _backend
from .checkpoint import CheckpointError, load_npz, save_model
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
}
MODELS = ("two-layer", "fc")
# Keys that shape the trajectory of a run: a resumed run must keep them.
_FIXED_ON_RESUME = (
    "model", "hidden_dims", "update_rule", "learning_rate", "lr_decay", "reg", "weight_scale", "dtype",
    "batch_size", "seed", "num_training", "num_validation", "batchnorm", "dropout",
)
CHECKPOINT = "checkpoint"
MODEL_FILE = "model.npz"
_LOSS_EVERY = 10


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
    if config["model"] == "two-layer":
        if len(config["hidden_dims"]) != 1:
            raise ValueError(
                f"--model two-layer takes one --hidden-dims value; got {config['hidden_dims']} (use --model fc)"
            )
        if config["batchnorm"]:
            raise ValueError("--batchnorm needs --model fc")
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
    correct = xp.zeros((), dtype=xp.int64, device=model.device)
    for start in range(0, N, batch_size):
        stop = min(start + batch_size, N)
        correct = correct + xp.sum(xp.astype(model.predict(X[start:stop, ...]) == y[start:stop], xp.int64))
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


class _Monitor:
    """Solver callback: a progress bar and one line per epoch."""

    def __init__(self, solver, quiet, out=sys.stderr):
        self.solver, self.quiet, self.out = solver, quiet, out
        self.bar = None
        self.mark = (time.perf_counter(), solver.t)

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
        """Write the line of the epoch that just ended."""
        now, t0 = time.perf_counter(), self.mark[1]
        rate = (solver.t - t0) * solver.batch_size / max(now - self.mark[0], 1e-9)
        self.mark = (now, solver.t)
        if self.quiet:
            return
        ipe = solver.iterations_per_epoch
        line = (
            f"epoch {_epochs(solver.t / ipe)}/{_epochs(solver.num_iterations / ipe)}: "
            f"train acc {solver.train_acc_history[-1]:.3f}, val acc {solver.val_acc_history[-1]:.3f}, "
            f"{rate:,.0f} images/s"
        )
        if self.bar is not None:
            self.bar.write(line, file=self.out)
        else:
            print(line, file=self.out)


def _epochs(x):
    """``x`` epochs as text: ``3`` or ``4.08``."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path``."""
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def write_outputs(out_dir, metrics, history, model):
    """Write metrics.json, history.json, loss.png, accuracy.png and weights.png into ``out_dir``."""
    from . import vis

    out_dir = Path(out_dir)
    _write_json(out_dir / "metrics.json", metrics)
    _write_json(out_dir / "history.json", history)
    vis.plot_history(history, out_dir / "loss.png", kind="loss")
    vis.plot_history(history, out_dir / "accuracy.png", kind="accuracy")
    W1 = model.params["W1"]
    if W1.shape[0] == 3 * 32 * 32:
        vis.plot_weights(W1, out_dir / "weights.png")


def train(config, out_dir=None, data=None, quiet=False, resume=None):
    """Train the model ``config`` describes on CIFAR-10 and measure it.

    Parameters
    ----------
    config : dict
        Keys of ``DEFAULTS`` (the ``anynet train`` flags with underscores);
        missing keys take the defaults. ``iterations`` (when not None)
        overrides ``epochs``.
    out_dir : str or path, optional
        Where to write metrics.json, history.json, loss.png, accuracy.png,
        weights.png, checkpoint.npz (the whole training state, saved at every
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

    Returns
    -------
    dict
        The metrics written to metrics.json: ``val_acc``, ``test_acc`` (of the
        best parameters; None without test images), ``best_val_acc``,
        ``final_train_acc``, ``train_seconds`` and ``images_per_second`` (of
        this call), ``iterations``, ``epochs``, ``backend``, ``device``,
        ``config``, ``checkpoint`` and ``model`` (paths, or None).
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
    )
    if resume is not None:
        solver.load_checkpoint(resume)
    solver.metadata = {"config": config}
    monitor = _Monitor(solver, quiet)
    solver.callback = monitor
    start_t = solver.t
    monitor.start()
    start = time.perf_counter()
    try:
        solver.train()
    finally:
        monitor.close()
    seconds = time.perf_counter() - start
    X_test, y_test = data.get("X_test"), data.get("y_test")
    metrics = {
        "val_acc": accuracy(model, data["X_val"], data["y_val"]),
        "test_acc": accuracy(model, X_test, y_test) if X_test is not None else None,
        "best_val_acc": solver.best_val_acc,
        "final_train_acc": solver.train_acc_history[-1] if solver.train_acc_history else None,
        "train_seconds": seconds,
        "images_per_second": (solver.t - start_t) * solver.batch_size / seconds if seconds > 0 else None,
        "iterations": solver.t,
        "epochs": solver.t / solver.iterations_per_epoch,
        "backend": model.backend,
        "device": str(model.device),
        "config": config,
        "checkpoint": f"{checkpoint_name}.npz" if checkpoint_name else None,
        "model": str(out_dir / MODEL_FILE) if out_dir is not None else None,
    }
    if out_dir is not None:
        history = {
            "loss_history": solver.loss_history,
            "train_acc_history": solver.train_acc_history,
            "val_acc_history": solver.val_acc_history,
            "acc_iterations": _acc_iterations(solver),
            "iterations_per_epoch": solver.iterations_per_epoch,
        }
        write_outputs(out_dir, metrics, history, model)
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
    config = make_config({k: v for k, v in meta.get("metadata", {}).get("config", {}).items() if k in DEFAULTS})
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
        "backend": model.backend,
        "device": str(model.device),
    }
    return result
