"""A training config: the ``anynet train`` flags as a dict, with their defaults, checked.

Light on purpose: no array library loads with it, so the command line can
read a config (``--config``, a sweep's grid) before the process is set up
(``anynet.app.process``).

Some flags belong to some models only (``MODEL_DEFAULTS``): their default
here is None, "not given", and ``make_config`` puts in the chosen model's
default, or refuses a value given for a model that does not take it.
"""

from __future__ import annotations

DEFAULTS = {
    "backend": "numpy",
    "device": None,
    "model": "two-layer",
    "hidden_dims": None,  # the model's (MODEL_DEFAULTS), like every None below but device, data_dir, iterations
    "widths": None,
    "convs_per_stage": None,
    "pool_after": None,
    "filter_size": None,
    "update_rule": "sgd",
    "learning_rate": 1e-3,
    "lr_decay": None,  # 0.95, or 1.0 with an lr_schedule
    "lr_schedule": None,
    "warmup_epochs": 0.0,
    "weight_decay": 0.0,
    "reg": 0.0,
    "weight_scale": None,
    "label_smoothing": None,
    "precision": None,
    "dtype": "float32",
    "batch_size": 200,
    "epochs": 10,
    "iterations": None,
    "seed": 0,
    "data_dir": None,
    "num_training": 49000,
    "num_validation": 1000,
    "num_test": 1000,
    "augment": False,
    "flip_test": False,
    "translate_test": False,
    "keep": "best",
    "batchnorm": None,
    "dropout": None,
    "compile": "auto",
}
MODELS = ("two-layer", "fc", "cnn")
# The flags of some models only: the default of each model that takes them. A two-layer net takes
# batchnorm False only (it has none; older configs record it).
MODEL_DEFAULTS = {
    "hidden_dims": {"two-layer": [100], "fc": [100]},
    "dropout": {"two-layer": 0.0, "fc": 0.0},
    "batchnorm": {"two-layer": False, "fc": False, "cnn": True},
    "weight_scale": {"two-layer": 1e-3, "fc": 1e-3, "cnn": None},
    "widths": {"cnn": [32, 64, 128]},
    "convs_per_stage": {"cnn": 1},
    "pool_after": {"cnn": None},  # None: after each stage's last convolution
    "filter_size": {"cnn": 3},
    "label_smoothing": {"cnn": 0.0},
    "precision": {"cnn": "float32"},
}
# The library's choices, written again so that this module loads no array library; a test keeps them equal.
LR_SCHEDULES = ("none", "linear", "cosine")  # "none" (a grid value) is None
PRECISIONS = ("float32", "bfloat16")
KEEPS = ("best", "last")  # the Solver's keep=
COMPILE = {"auto": "auto", "on": True, "off": False}  # --compile -> the Solver's compile=
_CHOICES = {"compile": tuple(COMPILE), "lr_schedule": (None, *LR_SCHEDULES), "precision": (None, *PRECISIONS),
            "keep": KEEPS}
# Keys that shape the trajectory of a run: a resumed run must keep them.
FIXED_ON_RESUME = (
    "model", "hidden_dims", "widths", "convs_per_stage", "pool_after", "filter_size", "update_rule", "learning_rate",
    "lr_decay",
    "lr_schedule", "warmup_epochs", "weight_decay", "reg", "weight_scale", "label_smoothing", "precision", "dtype",
    "batch_size", "seed", "num_training", "num_validation", "augment", "flip_test", "translate_test", "batchnorm",
    "dropout",
)
# Keys that say where and how a run computes, not what it trains: a resumed run or sweep may change them.
PLACE_KEYS = ("backend", "device", "data_dir", "compile")


def flag(key):
    """The command-line flag of config key ``key``."""
    return "--" + key.replace("_", "-")


def make_config(config=None):
    """Return ``config`` with ``DEFAULTS`` filled in for missing keys, checking the keys.

    The keys of ``MODEL_DEFAULTS`` take the model's default when None, and
    stay None for a model that does not take them; ``lr_decay`` is 0.95, or
    1.0 with an ``lr_schedule``.

    Raises
    ------
    TypeError
        If ``config`` is not a dict.
    ValueError
        If it has a key not in ``DEFAULTS``, an invalid choice, or a flag the
        model does not take (the message names the flag and the model).
    """
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; expected some of {', '.join(DEFAULTS)}")
    config = {**DEFAULTS, **config}
    model = config["model"]
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {model!r}")
    for key, choices in _CHOICES.items():
        if config[key] not in choices:
            raise ValueError(f"{key} must be one of {', '.join(c for c in choices if c)}; got {config[key]!r}")
    if config["lr_schedule"] == "none":
        config["lr_schedule"] = None
    for key in ("hidden_dims", "widths"):
        value = config[key]
        config[key] = [value] if isinstance(value, int) else None if value is None else list(value)
    _apply_model_defaults(config)
    if config["lr_decay"] is None:
        config["lr_decay"] = 0.95 if config["lr_schedule"] is None else 1.0
    return config


def _apply_model_defaults(config):
    """Fill in the model's defaults of ``MODEL_DEFAULTS`` (in place); refuse a flag the model does not take."""
    model = config["model"]
    for key, defaults in MODEL_DEFAULTS.items():
        if model in defaults:
            config[key] = defaults[model] if config[key] is None else config[key]
        elif config[key] is not None:
            owners = " or ".join(m for m in MODELS if m in defaults)
            raise ValueError(f"{flag(key)} needs --model {owners}; --model {model} does not take it")
    if model == "two-layer":
        if config["batchnorm"]:
            raise ValueError("--batchnorm needs --model fc or cnn; --model two-layer does not take it")
        if len(config["hidden_dims"]) != 1:
            raise ValueError(
                f"--model two-layer takes one --hidden-dims value; got {config['hidden_dims']} (use --model fc)"
            )
    if config["precision"] == "bfloat16" and config["dtype"] != "float32":
        raise ValueError(f"--precision bfloat16 keeps float32 parameters: it needs --dtype float32; got "
                         f"{config['dtype']}")


def applied_config(config):
    """The full config ``config`` with only the keys that applied.

    ``iterations`` (when not None) decides a run's length; the ``epochs``
    default beside it did not apply and is left out, as is ``iterations:
    None`` beside ``epochs``. The flags of other models (``MODEL_DEFAULTS``,
    None here) are left out too.
    """
    config = {k: v for k, v in config.items() if not (k in MODEL_DEFAULTS and v is None
                                                      and config.get("model") not in MODEL_DEFAULTS[k])}
    if config.get("iterations") is None:
        config.pop("iterations", None)
    else:
        config.pop("epochs", None)
    return config
