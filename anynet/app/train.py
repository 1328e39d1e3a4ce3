"""The training job: one config turns into a model, a Solver and a folder of results.

``anynet train`` and the sweep both call ``train``; this module is the one
place that maps the command's flags onto models and the Solver. The config
itself is ``anynet.app.config``'s; what a run writes while it trains,
``anynet.app.runs``'s.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import backends
from ..models import ConvNet, FullyConnectedNet, TwoLayerNet
from ..nn import checks
from ..nn.augment import augmented_scores
from ..training.checkpoint import CheckpointError, is_training_checkpoint, load_npz, save_model
from ..training.solver import Solver
from .config import COMPILE, DEFAULTS, FIXED_ON_RESUME, MODELS, applied_config, flag, make_config
from .runs import CHECKPOINT, MODEL_FILE, Monitor, RunFolder, TensorBoard, compile_seconds, history_of, write_outputs

__all__ = [
    "COMPILE", "DEFAULTS", "MODELS", "Diverged", "StopRun", "accuracy", "applied_config", "build_model",
    "make_config", "resume_config", "train",
]


class StopRun(Exception):
    """Raised by ``train``'s ``on_epoch`` callback to end the run at that epoch (a pruned sweep trial).

    ``train`` then finishes as at the end of a run (best parameters, files
    written) and its metrics say why in ``stopped``.
    """


class Diverged(FloatingPointError):
    """Raised by ``train`` when the loss became non-finite, once the run's folder holds what it learned.

    ``metrics`` is what metrics.json holds: ``status`` "diverged",
    ``diverged`` (the ``iteration`` of the first non-finite loss, that
    ``loss`` and the ``last_finite_loss``), and the accuracies of the best
    parameters so far, which the model holds and model.npz keeps (``model``
    is None when there were none: the very first loss was not finite).
    """

    def __init__(self, message, metrics):
        super().__init__(message)
        self.metrics = metrics


def build_model(config):
    """Build the model a full config (see ``make_config``) describes."""
    common = {
        "weight_scale": config["weight_scale"], "reg": config["reg"], "dtype": config["dtype"], "seed": config["seed"],
        "backend": config["backend"], "device": config["device"],
    }
    if config["model"] == "cnn":
        _check_precision(config)
        return ConvNet(config["widths"], config["convs_per_stage"], config["filter_size"],
                       batchnorm=config["batchnorm"], label_smoothing=config["label_smoothing"],
                       precision=config["precision"], pool_after=config["pool_after"], **common)
    if config["model"] == "two-layer":
        return TwoLayerNet(hidden_dims=config["hidden_dims"][0], dropout=config["dropout"], **common)
    return FullyConnectedNet(config["hidden_dims"], use_batchnorm=config["batchnorm"], dropout=config["dropout"],
                             **common)


def _check_precision(config):
    """Refuse ``--precision bfloat16`` on a backend without bfloat16, in the command's words."""
    if config["precision"] != "bfloat16":
        return
    backend = backends.get(config["backend"], config["device"])
    if backend.bfloat16_of(backend.xp) is None:
        raise ValueError(f"--precision bfloat16 needs a backend with bfloat16 (--backend torch or jax); the "
                         f"{backend} backend has none")


def _check_before_data(model, config, data):
    """What the Solver would refuse once the data is loaded, refused before it is (loading CIFAR-10 takes a while)."""
    checks.real("lr_decay", config["lr_decay"], 0, 1, low_open=True, high_open=False)
    if config["compile"] == "on" and not model.backend.can_compile:
        raise ValueError(f"--compile on cannot be honoured: the {model.backend} backend runs steps eagerly")
    if data is None and config["batch_size"] > config["num_training"]:
        raise ValueError(f"batch_size ({config['batch_size']}) is larger than the training set "
                         f"({config['num_training']} images)")


def resume_config(config, checkpoint, notes=None):
    """The config to resume ``checkpoint`` with: the saved one, updated by ``config``.

    Keys in ``config`` may change where and how long the run goes on (epochs,
    iterations, backend, device, data_dir, num_test, compile); changing one of
    the keys that shape the trajectory raises ``ValueError``, and so does
    changing the length of a run with an ``lr_schedule`` (which reaches 0 at
    its end). On another backend the saved device is dropped (it names one of
    the old backend's) and a saved ``compile: on`` becomes ``auto`` where the
    backend cannot compile; a line saying so is appended to the list ``notes``.
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
    if "epochs" in config and "iterations" not in config:
        config["iterations"] = None
    moved = config.get("backend", saved["backend"]) != saved["backend"]
    given = make_config({**saved, **({"device": None} if moved else {}), **config})
    for key in FIXED_ON_RESUME:
        if key in config and given[key] != saved[key]:
            raise ValueError(
                f"{flag(key)} was {saved[key]!r} in {checkpoint}; got {given[key]!r}. "
                "A resumed run keeps the flags of the run it continues"
            )
    if saved["lr_schedule"] is not None and _length(given) != _length(saved):
        raise ValueError(
            f"--lr-schedule {saved['lr_schedule']} of {checkpoint} runs to 0 at the end of its "
            f"{_length(saved)[0]} {_length(saved)[1]}; a resumed run keeps that length (got {_length(given)[0]} "
            f"{_length(given)[1]})"
        )
    if given["compile"] == "on" and "compile" not in config and not _can_compile(given):
        given["compile"] = "auto"
        if notes is not None:
            notes.append(f"{checkpoint} was trained with --compile on; the {given['backend']} backend runs steps "
                         "eagerly, so the run goes on with --compile auto")
    return given


def _can_compile(config):
    """Whether ``config``'s backend compiles steps (True when it cannot run here: building the model says why)."""
    try:
        return backends.get(config["backend"], config["device"]).can_compile
    except (backends.BackendUnavailableError, ValueError):
        return True


def _length(config):
    """``("--iterations", N)`` or ``("--epochs", N)``: what decides the length of a run of ``config``."""
    return ("--epochs", config["epochs"]) if config["iterations"] is None else ("--iterations", config["iterations"])


def accuracy(model, X, y, batch_size=1000, flip=False, translate=False):
    """Fraction of images ``X`` that ``model`` labels as ``y`` (NumPy or device arrays); None when empty.

    With ``flip`` or ``translate``, the scores are averaged over views of each image, as the Solver's
    ``flip_test`` and ``translate_test`` do (``anynet.nn.augment.augmented_scores``).
    """
    N = X.shape[0]
    if N == 0:
        return None
    xp = model.xp
    X = model.backend.to_device(X, getattr(model, "_dtype", None))
    y = model.backend.to_device(y)
    # Counted in the library's default integer type: int64, or int32 in JAX's default mode (no warning).
    count = xp.asarray(0, device=model.device).dtype
    correct = xp.zeros((), dtype=count, device=model.device)
    for start in range(0, N, batch_size):
        stop = min(start + batch_size, N)
        batch = X[start:stop, ...]
        if flip or translate:
            labels = xp.argmax(augmented_scores(model.loss, batch, flip, translate), axis=1)
        else:
            labels = model.predict(batch)
        correct = correct + xp.sum(xp.astype(labels == y[start:stop], count))
    return int(correct) / N


def test_views(config):
    """``accuracy``'s ``flip`` and ``translate`` as a run's ``config`` chose them."""
    return {"flip": config["flip_test"], "translate": config["translate_test"]}


def backend_name(model):
    """The name of the backend ``model`` computes on (models hold a backend object, or its name)."""
    return getattr(model.backend, "name", model.backend)


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
        ``iterations``, ``epochs`` (in all), ``start_iteration`` (where this
        call began: 0, or the checkpoint's on ``resume``), ``backend``,
        ``device``, ``config`` (the
        keys that applied: see ``applied_config``), ``checkpoint`` and
        ``model`` (paths, or None), ``stopped`` (the message of the
        ``StopRun`` that ended the run early, or None), ``status`` ("ok": the
        run ended at its length or at a ``StopRun``) and ``diverged`` (None).

    Raises
    ------
    Diverged
        The loss became non-finite: the folder got metrics.json (``status``
        "diverged"), the history and plots up to the fault and model.npz (the
        best parameters so far); the exception holds those metrics.
    """
    config = resume_config(config, resume) if resume is not None else make_config(config)
    model = build_model(config)  # before loading data, so bad values fail fast
    _check_before_data(model, config, data)
    data = _data(config, data)
    out_dir = None if out_dir is None else Path(out_dir)
    solver = _solver(model, data, config, out_dir, resume)
    start_t = solver.t
    folder = RunFolder(out_dir, solver, resumed=resume is not None) if out_dir is not None else None
    seconds, stopped, fault = _run(solver, config, quiet, folder, tensorboard, on_epoch)
    kept = fault is None or bool(solver.best_params)  # diverged at the first loss: nothing learned to keep
    metrics = {"status": "ok" if fault is None else "diverged",
               **_metrics(solver, data, config, out_dir, seconds, start_t, stopped, kept),
               "diverged": None if fault is None else _divergence(solver, fault)}
    if folder is not None:
        metrics["write_seconds"] = folder.write_seconds
        write_outputs(out_dir, metrics, history_of(solver), model if kept else None)
        if kept:
            save_model(model, out_dir / MODEL_FILE, metadata={"config": config})
    if fault is not None:
        raise Diverged(_diverged_message(metrics, kept), metrics) from fault
    return metrics


def _diverged_message(metrics, kept):
    """What ``Diverged`` says: where the loss stopped being finite and where the best parameters are."""
    where = metrics["diverged"]
    text = (f"loss became {where['loss'] or 'non-finite'} at iteration {where['iteration']}; last finite loss "
            f"{where['last_finite_loss']}. Lower the learning rate or the weight scale. ")
    if not kept:
        return text + "It learned nothing to keep."
    return text + (f"The best parameters so far (val acc {metrics['best_val_acc']:g}) are in "
                   f"{metrics['model'] or 'the model'}.")


def _divergence(solver, fault):
    """Where the loss of a run stopped by ``fault`` (the Solver's FloatingPointError) stopped being finite."""
    finite = solver.loss_history  # every loss up to the first non-finite one
    loss = getattr(fault, "loss", None)  # a NonFiniteLoss's; as text, which JSON holds for inf and nan too
    return {"iteration": len(finite) + 1, "loss": None if loss is None else str(loss),
            "last_finite_loss": finite[-1] if finite else None}


def _data(config, data):
    """``data``, or the splits ``config`` names loaded from its ``data_dir`` when None."""
    if data is None:
        from ..data import get_cifar10_data

        data = get_cifar10_data(
            config["data_dir"], config["num_training"], config["num_validation"], config["num_test"],
            dtype=config["dtype"],
        )
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict of splits or None; got {type(data).__name__}")
    return data


def _solver(model, data, config, out_dir, resume):
    """The Solver of a run (its checkpoint in ``out_dir``), at the checkpoint ``resume`` when given."""
    checkpoint_name = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint_name = str(out_dir / CHECKPOINT)
    optim_config = {"learning_rate": config["learning_rate"]}
    if config["weight_decay"]:
        optim_config["weight_decay"] = config["weight_decay"]
    # Warm-up is given in epochs of the data, whatever decides the run's length.
    per_epoch = max(data["X_train"].shape[0] // config["batch_size"], 1)
    solver = Solver(
        model, data, update_rule=config["update_rule"], optim_config=optim_config, lr_decay=config["lr_decay"],
        batch_size=config["batch_size"], num_epochs=config["epochs"], num_iterations=config["iterations"],
        checkpoint_name=checkpoint_name, verbose=False, seed=config["seed"], compile=COMPILE[config["compile"]],
        augment=True if config["augment"] else None, lr_schedule=config["lr_schedule"],
        warmup_iterations=round(config["warmup_epochs"] * per_epoch), flip_test=config["flip_test"],
        translate_test=config["translate_test"], keep=config["keep"],
    )
    if resume is not None:
        solver.load_checkpoint(resume)
    solver.metadata = {"config": config}
    return solver


def _run(solver, config, quiet, folder, tensorboard, on_epoch):
    """Train ``solver`` under a ``Monitor`` feeding the sinks; return (training seconds, why it stopped or None)."""
    sinks = [] if folder is None else [folder]
    board = TensorBoard(tensorboard, solver) if tensorboard is not None else None
    if board is not None:
        sinks.append(board)
    if on_epoch is not None:
        sinks.append(lambda solver, row: on_epoch(dict(row)))  # last: the row is written before a StopRun
    monitor = Monitor(solver, config, quiet, sinks=sinks)
    solver.callback = monitor
    monitor.start()
    start = time.perf_counter()
    stopped = fault = None
    try:
        solver.train()
    except StopRun as exc:
        stopped = str(exc) or "stopped"
        solver._keep_final()  # as train() does at the end of a run
    except FloatingPointError as exc:  # a non-finite loss: the model goes back to the best parameters so far
        fault = exc
        solver._restore_best()
    finally:
        monitor.close()
        if board is not None:
            board.close()
    return time.perf_counter() - start - compile_seconds(solver), stopped, fault


def _metrics(solver, data, config, out_dir, seconds, start_t, stopped, kept=True):
    """What metrics.json holds, measured on the model's (best) parameters now (none when not ``kept``)."""
    model = solver.model
    X_test, y_test = data.get("X_test"), data.get("y_test")
    measure = kept and X_test is not None
    views = test_views(config)
    return {
        "val_acc": accuracy(model, data["X_val"], data["y_val"], **views) if kept else None,
        "test_acc": accuracy(model, X_test, y_test, **views) if measure else None,
        "best_val_acc": solver.best_val_acc,
        "final_train_acc": solver.train_acc_history[-1] if solver.train_acc_history else None,
        "train_seconds": seconds,
        "compile_seconds": compile_seconds(solver),
        "images_per_second": (solver.t - start_t) * solver.batch_size / seconds if seconds > 0 else None,
        "iterations": solver.t,
        "epochs": solver.t / solver.iterations_per_epoch,
        "start_iteration": start_t,
        "backend": backend_name(model),
        "device": str(model.device),
        "config": applied_config(config),
        "checkpoint": f"{out_dir / CHECKPOINT}.npz" if out_dir is not None else None,
        "model": str(out_dir / MODEL_FILE) if out_dir is not None and kept else None,
        "stopped": stopped,
    }
