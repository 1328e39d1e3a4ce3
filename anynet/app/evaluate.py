"""A saved model measured again: validation and test accuracy on the data it was trained for (``anynet evaluate``)."""

from __future__ import annotations

from ..training.checkpoint import load_model, load_npz
from .config import DEFAULTS, make_config
from .train import accuracy, backend_name, test_views


def evaluate(checkpoint, data_dir=None, num_test=None, backend=None, device=None, data=None, flip_test=None,
             translate_test=None, params="best"):
    """Validation and test accuracy of the model saved in ``checkpoint``.

    The validation split and the mean image come from the checkpoint's config
    (``num_training``, ``num_validation``), as in training, and so does
    ``flip_test`` and ``translate_test`` (the views of each image whose scores
    are averaged), unless given here.

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
    flip_test, translate_test : bool, optional
        Average each image's scores with its mirror image's, and with those of
        it shifted by a pixel; default as in training.
    params : "best" or "last"
        From checkpoint.npz, the parameters of the best validation check
        (those model.npz holds after a run that kept them) or of the last step.

    Returns
    -------
    dict
        ``val_acc``, ``test_acc`` (None without test images), ``num_val``, ``num_test``, ``backend``, ``device``.
    """
    _, meta = load_npz(checkpoint)
    saved = meta.get("metadata", {}).get("config", {})
    config = make_config({k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in DEFAULTS})
    if data is None:
        _check_inputs(checkpoint, (meta.get("model_config") or {}).get("input_dim", 3 * 32 * 32))
    for name, value in (("flip_test", flip_test), ("translate_test", translate_test)):
        if value is not None:
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True, False or None; got {value!r}")
            config[name] = value
    if num_test is not None:
        config["num_test"] = num_test
    if data_dir is not None:
        config["data_dir"] = data_dir
    if backend is None:
        backend = config["backend"]
        device = config["device"] if device is None else device
    model = load_model(checkpoint, backend=backend, device=device, params=params)
    if data is None:
        from ..data import get_cifar10_data

        data = get_cifar10_data(config["data_dir"], config["num_training"], config["num_validation"],
                                config["num_test"], dtype=model.dtype)
    return {
        "val_acc": accuracy(model, data["X_val"], data["y_val"], **test_views(config)),
        "test_acc": accuracy(model, data["X_test"], data["y_test"], **test_views(config)),
        "num_val": int(data["X_val"].shape[0]),
        "num_test": int(data["X_test"].shape[0]),
        "backend": backend_name(model),
        "device": str(model.device),
    }


def _check_inputs(checkpoint, inputs):
    """Refuse a model whose inputs are not CIFAR-10 images: 3072 values (a flat net) or [3, 32, 32] (a conv net)."""
    if isinstance(inputs, (list, tuple)):
        if list(inputs) != [3, 32, 32]:
            shape = "x".join(map(str, inputs))
            raise ValueError(f"{checkpoint} holds a model of {shape} images; CIFAR-10 images are 3x32x32")
    elif inputs != 3 * 32 * 32:
        raise ValueError(
            f"{checkpoint} holds a model of {inputs} inputs per image; CIFAR-10 images have 3072 (3x32x32)"
        )
