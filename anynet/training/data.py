"""The Solver's data: checked once and moved to the model's device once, before training."""

from __future__ import annotations

import math

from ..nn import checks

SPLITS = ("X_train", "y_train", "X_val", "y_val")


def move_data(model, backend, data):
    """Check the four splits once and move them to the model's device."""
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict with keys {', '.join(SPLITS)}; got {type(data).__name__}")
    missing = [k for k in SPLITS if k not in data]
    if missing:
        raise ValueError(f"data is missing {', '.join(missing)}")
    xp = backend.xp
    dtype = getattr(model, "_dtype", None)
    num_classes = getattr(model, "config", {}).get("num_classes")
    moved = []
    input_shape = getattr(model, "input_shape", None)
    input_dim = None if input_shape is None else math.prod(input_shape)
    for split in ("train", "val"):
        X = backend.to_device(checks.checked_array(f"X_{split}", data[f"X_{split}"]), dtype)
        y = backend.to_device(checks.checked_array(f"y_{split}", data[f"y_{split}"], "integral"))
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"X_{split} must have shape (N, ...) with N > 0; got {tuple(X.shape)}")
        if input_dim is not None and math.prod(X.shape[1:]) != input_dim:
            raise ValueError(
                f"X_{split} must have {input_dim} features per row, as the model; got shape {tuple(X.shape)}"
            )
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"y_{split} must have shape ({X.shape[0]},) to match X_{split}; got {tuple(y.shape)}"
            )
        # One synchronisation, here, instead of checks in the training loop.
        if num_classes is not None and bool(xp.any((y < 0) | (y >= num_classes))):
            raise ValueError(f"y_{split} holds labels outside [0, {num_classes})")
        # max and min propagate NaN (the standard says so) and meet any infinity: two reductions and no
        # temporary the size of the data (all(isfinite(X)) made one; PyTorch's isfinite makes an abs(X) too).
        if not bool(xp.isfinite(xp.max(X)) & xp.isfinite(xp.min(X))):
            raise ValueError(f"X_{split} holds NaN or infinite values")
        moved += [X, y]
    return moved
