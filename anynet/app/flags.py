"""The training flags: how the command line, a config file and the environment make a training config.

``add_train_flags`` adds the flags of ``anynet train`` (``anynet sweep``
takes them too); ``config_from_args`` turns what was typed into a config,
filled in from ``$ANYNET_BACKEND``/``$ANYNET_DEVICE`` and the file of
``--config``, whose values are checked as if they had been typed.
``trains_with_state`` tells, before NumPy loads, whether a command line
trains with a rule that keeps state (``anynet.app.process.prepare_process``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import zipfile
from pathlib import Path

from .config import DEFAULTS, KEEPS, LR_SCHEDULES, MODEL_DEFAULTS, MODELS, PRECISIONS

# Environment variables that stand for a flag of every subcommand that has it (the flag wins).
ENVIRONMENT = {"backend": "ANYNET_BACKEND", "device": "ANYNET_DEVICE"}


def positive_int(text):
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {text}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text}")
    return value


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative number; got {text}")
    return value


for _fn, _name in ((positive_int, "positive integer"), (non_negative_int, "non-negative integer"),
                   (positive_float, "positive number"), (non_negative_float, "non-negative number")):
    _fn.__name__ = _name  # argparse names the type in "invalid <type> value" messages


def odd_positive_int(text):
    """argparse type: an odd integer > 0."""
    value = int(text)
    if value <= 0 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd positive integer; got {text}")
    return value


odd_positive_int.__name__ = "odd positive integer"


def add_train_flags(parser):
    """Add the training flags of ``anynet train`` to ``parser`` (the sweep reuses them).

    Flags the user does not give stay out of the parsed namespace, so
    ``config_from_args`` returns only what was typed and ``anynet.app.train``
    fills in its ``DEFAULTS`` (or, with ``--resume``, the checkpoint's config).
    """
    from ..backends import BACKENDS, DTYPES
    from ..nn.optim import UPDATE_RULES

    def add(*names, key, help, **kwargs):
        """One flag, shown with its default, absent from the namespace unless given."""
        default = DEFAULTS[key]
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        suffix = "" if default is None or default is False or "(default:" in help else f" (default: {shown})"
        parser.add_argument(*names, dest=key, default=argparse.SUPPRESS, help=help + suffix, **kwargs)

    add("--backend", key="backend", choices=BACKENDS,
        help="array library to compute with; cupy needs an NVIDIA GPU (default: $ANYNET_BACKEND, else numpy)")
    add("--device", key="device", help="device of the backend, e.g. cuda:1 for torch or 1 for cupy "
        "(default: $ANYNET_DEVICE, else the backend's)")
    add("--model", key="model", choices=MODELS,
        help="TwoLayerNet, FullyConnectedNet or ConvNet")
    _add_model_flags(add)
    add("--update-rule", key="update_rule", choices=tuple(UPDATE_RULES), help="optimizer")
    add("--learning-rate", "--lr", key="learning_rate", type=positive_float, metavar="LR",
        help="initial learning rate")
    add("--lr-decay", key="lr_decay", type=positive_float, metavar="F",
        help="learning rate multiplier at each epoch end, in (0, 1] (default: 0.95; 1 with --lr-schedule)")
    add("--lr-schedule", key="lr_schedule", choices=LR_SCHEDULES,
        help="also scale the learning rate at every step, down to 0 at the last one (default: none)")
    add("--warmup-epochs", key="warmup_epochs", type=non_negative_float, metavar="F",
        help="raise the learning rate linearly from about 0 over the first F epochs of the data")
    add("--weight-decay", key="weight_decay", type=non_negative_float, metavar="F",
        help="decoupled weight decay, applied by the update rule to the weights only (not to biases and "
             "batch normalization)")
    add("--reg", key="reg", type=non_negative_float, help="L2 regularization strength")
    add("--weight-scale", key="weight_scale", type=positive_float, metavar="S",
        help="standard deviation of the initial weights (default: 0.001; cnn: He's sqrt(2 / fan_in))")
    add("--dtype", key="dtype", choices=DTYPES, help="floating point type of parameters and images")
    add("--batch-size", key="batch_size", type=positive_int, metavar="N", help="images per minibatch")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", dest="epochs", type=positive_int, metavar="N", default=argparse.SUPPRESS,
                        help=f"passes over the training images (default: {DEFAULTS['epochs']})")
    length.add_argument("--iterations", dest="iterations", type=positive_int, metavar="N",
                        default=argparse.SUPPRESS, help="minibatch steps, instead of --epochs")
    add("--seed", key="seed", type=non_negative_int, help="seeds weights, minibatch order and dropout")
    add("--data-dir", key="data_dir", metavar="DIR",
        help="folder holding cifar-10-batches-py, or that folder itself (default: $ANYNET_DATA, "
             "else ~/.cache/anynet; downloaded there on first use)")
    add("--num-training", key="num_training", type=positive_int, metavar="N", help="training images")
    add("--num-validation", key="num_validation", type=positive_int, metavar="N",
        help="validation images, taken right after the training images")
    add("--num-test", key="num_test", type=non_negative_int, metavar="N", help="test images (at most 10000)")
    add("--augment", key="augment", action="store_true",
        help="random crops (padding 4) and horizontal flips of the training images, drawn at every step")
    add("--flip-test", key="flip_test", action="store_true",
        help="measure accuracy on the mean of the scores of each image and its mirror image")
    add("--translate-test", key="translate_test", action="store_true",
        help="measure accuracy on the mean of the scores of each image and of it shifted one pixel "
             "down-right and up-left (weights 1/2, 1/4, 1/4)")
    add("--keep", key="keep", choices=KEEPS,
        help="the parameters a run ends with: those of the best validation check (default), or the last step's")
    add("--compile", key="compile", choices=("auto", "on", "off"),
        help="compile the training step where the backend can (auto: where it pays)")


def _add_model_flags(add):
    """The flags of some models only (``anynet.app.config.MODEL_DEFAULTS``), through ``add_train_flags``'s ``add``."""
    add("--hidden-dims", key="hidden_dims", type=positive_int, nargs="+", metavar="N",
        help="(two-layer, fc) hidden layer widths, one for two-layer (default: 100)")
    add("--dropout", key="dropout", type=non_negative_float, metavar="P",
        help="(two-layer, fc) probability of dropping a hidden unit (default: 0)")
    add("--widths", key="widths", type=positive_int, nargs="+", metavar="N",
        help="(cnn) filters of each stage; each stage has a 2x2 max pool (default: 32 64 128)")
    add("--convs-per-stage", key="convs_per_stage", type=positive_int, metavar="K",
        help="(cnn) convolutions in each stage (default: 1)")
    add("--pool-after", key="pool_after", type=positive_int, metavar="J",
        help="(cnn) the convolution of each stage its 2x2 max pool follows; 1 with --convs-per-stage 2 is "
             "airbench's conv-pool-conv block (default: the last)")
    add("--filter-size", key="filter_size", type=odd_positive_int, metavar="F",
        help="(cnn) height and width of the filters, odd (default: 3)")
    add("--batchnorm", key="batchnorm", action=argparse.BooleanOptionalAction,
        help="(fc, cnn) batch normalization after each hidden layer or convolution (default: off for fc, on for "
             "cnn)")
    add("--label-smoothing", key="label_smoothing", type=non_negative_float, metavar="F",
        help="(cnn) label smoothing of the softmax loss, in [0, 1) (default: 0)")
    add("--precision", key="precision", choices=PRECISIONS,
        help="(cnn) bfloat16: convolutions and matrix products in bfloat16, the rest in float32; needs --backend "
             "torch or jax (default: float32)")


def environment_defaults():
    """``{"backend": ..., "device": ...}`` from ``$ANYNET_BACKEND`` and ``$ANYNET_DEVICE`` (those set, non-empty).

    Raises
    ------
    ValueError
        If ``$ANYNET_BACKEND`` names no backend.
    """
    from ..backends import BACKENDS

    found = {key: os.environ[var] for key, var in ENVIRONMENT.items() if os.environ.get(var)}
    if found.get("backend") not in (None, *BACKENDS):
        raise ValueError(f"ANYNET_BACKEND must be one of {', '.join(BACKENDS)}; got {found['backend']!r}")
    return found


def from_environment(given):
    """The values of ``environment_defaults()`` for the keys the flags in ``given`` leave open."""
    return {k: v for k, v in environment_defaults().items() if given.get(k) is None}


def config_from_args(args):
    """The config keys given on the command line, as a dict for ``anynet.app.train.train``.

    ``$ANYNET_BACKEND`` and ``$ANYNET_DEVICE`` fill in ``backend`` and
    ``device`` when the flags are absent; the config file of ``--config``
    (when the command has that flag) fills in what neither gives.
    """
    given = {key: value for key, value in vars(args).items() if key in DEFAULTS}
    config = {**environment_defaults(), **given}
    path = getattr(args, "config", None)
    if path is not None:
        saved = read_config_file(path)
        # One length applies: a length flag replaces the file's, whichever of epochs or iterations it has.
        if "epochs" in given or "iterations" in given:
            saved = {k: v for k, v in saved.items() if k not in ("epochs", "iterations")}
        # The file's device belongs to the file's backend (a GPU worker's "cuda:0", say), not to another one.
        if config.get("backend", saved.get("backend")) != saved.get("backend"):
            saved.pop("device", None)
        # Likewise the flags of the file's model (its hidden layers, say) stay with it when --model changes.
        saved_model = saved.get("model", DEFAULTS["model"])
        if config.get("model", saved_model) != saved_model:
            saved = {k: v for k, v in saved.items() if k not in MODEL_DEFAULTS}
        config = {**saved, **config}
    return config


def read_config_file(path):
    """The training config in ``path``: a run's metrics.json or a sweep's best.json (``{"config": {...}}``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not JSON, holds no ``config`` object, or that has keys
        ``anynet train`` does not know; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--config {path} is a folder; give its metrics.json (a run) or best.json (a sweep)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path} is not a text file; give a metrics.json or best.json") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path} is not valid JSON ({exc})") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"--config {path} holds no \"config\" object; give a run's metrics.json or a sweep's "
                         "best.json")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {', '.join(unknown)} in its config")
    if config.get("iterations") is not None:
        config = {k: v for k, v in config.items() if k != "epochs"}  # older files hold both; iterations applied
    return _checked_as_flags(path, config)


class _FileValueParser(argparse.ArgumentParser):
    """The train flags, parsed from a config file's values: a bad value raises ``ValueError`` naming the file.

    Takes no flag by a prefix, as the command's own parser (``anynet.app.cli.ArgumentParser``).
    """

    def __init__(self, path):
        super().__init__(prog="anynet train", add_help=False, allow_abbrev=False)
        self.path = path

    def error(self, message):
        raise ValueError(f"--config {self.path}: {message}")


def _checked_as_flags(path, config):
    """``config`` checked and converted exactly as the same values typed as flags would be."""
    parser = _FileValueParser(path)
    add_train_flags(parser)
    argv = []
    for key, value in config.items():
        if value is None or value is False:
            continue  # the default: no flag
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv.append(f"{flag}={value}")
    checked = vars(parser.parse_args(argv))
    return {key: checked.get(key, value) for key, value in config.items()}


def check_place(config):
    """Check that ``config``'s backend and device can run here (before any folder is made or data loaded).

    Raises
    ------
    BackendUnavailableError
        If the backend's package or the GPU it needs is missing (the message
        says what to install).
    ValueError
        If the device is not one of the backend's.
    """
    from .. import backends

    backends.get(config.get("backend") or "numpy", config.get("device"))


@contextlib.contextmanager
def blame_environment(used):
    """Add "(set by ANYNET_BACKEND=...)" to a backend or device error when those variables chose them.

    ``used`` maps config keys to the values the command took from the
    environment (``environment_defaults()`` less what flags overrode).
    """
    from ..backends import BackendUnavailableError

    try:
        yield
    except (BackendUnavailableError, ValueError) as exc:
        text = str(exc)
        blamed = [f"{ENVIRONMENT[key]}={value}" for key, value in used.items()
                  if repr(value) in text or f"the {value} backend" in text]
        if not blamed:
            raise
        raise type(exc)(f"{text} (set by {' and '.join(blamed)})") from None


def flag_value(argv, name):
    """The value given to flag ``name`` in ``argv`` (``name VALUE`` or ``name=VALUE``; the last wins), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            value = arg.partition("=")[2]
        elif arg == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def trains_with_state(argv):
    """Whether the command line (``argv`` without the program name) trains with a rule that keeps state.

    Every rule but plain SGD keeps some. Told before NumPy loads:
    ``--update-rule`` says, else the config file ``--config`` names, else the
    optimizer state stored in the checkpoint ``--resume`` names (the default
    rule is plain SGD). ``anynet bench`` sets up its own process
    (``benchmarks/bench.py``).
    """
    rule = flag_value(argv, "--update-rule")
    if rule is not None:
        return rule != "sgd"
    config_file = flag_value(argv, "--config")
    if config_file is not None:
        try:
            rule = read_config_file(config_file).get("update_rule", "sgd")
        except (OSError, ValueError):
            return False  # the command itself will say what is wrong with the file
        return rule != "sgd"
    checkpoint = flag_value(argv, "--resume")
    if checkpoint is None:
        return False
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            return any(name.startswith("optim/") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False  # the command itself will say what is wrong with the file
