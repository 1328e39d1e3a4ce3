"""Shared fixtures: every test that takes ``xp`` runs once per backend that can run here."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from anynet import backends

# Only the named backends run when ANYNET_TEST_BACKENDS is set (the nox sessions
# and the GPU check use it); otherwise every backend that can run here does.
_WANTED = [b for b in os.environ.get("ANYNET_TEST_BACKENDS", "").split(",") if b]
_PARAMS = _WANTED or list(backends.BACKENDS)
# Hypothesis explores in the session that runs numpy (or every backend); the sessions of the other backends check
# the same compute code on fewer draws: JAX compiles each operation again at every new shape the draws bring.
FEWER_DRAWS = bool(_WANTED) and "numpy" not in _WANTED


def _skip_reason(name):
    """Why backend ``name`` cannot be tested here, or None."""
    try:
        backends.get(name)
    except backends.BackendUnavailableError as exc:
        return str(exc)
    return None


@pytest.fixture(params=_PARAMS)
def backend_name(request):
    """Name of a backend that can run here; skipped (with the reason) otherwise."""
    name = request.param
    why = _skip_reason(name)
    if why is not None:
        if name in _WANTED and name != "cupy":
            pytest.fail(f"backend {name} was asked for but cannot run: {why}")
        pytest.skip(why)
    if name == "jax":
        # JAX computes in 32 bits until something asks for float64 (a float64 model does, through the backend's
        # dtype), then for the rest of the process. Tests build float64 arrays directly, and their outcome must
        # not hang on whether an earlier test made a float64 model: 64-bit mode on from the first JAX test.
        import jax

        jax.config.update("jax_enable_x64", True)  # set here, so that anynet's one-time warning never says it
    return name


@pytest.fixture
def xp(backend_name):
    """The Array API namespace of ``backend_name``."""
    return backends.get(backend_name).xp


@pytest.fixture
def device(backend_name):
    """The default device of ``backend_name``."""
    return backends.get(backend_name).device


def tolerance(dtype_name):
    """Relative tolerance for comparisons between backends in ``dtype_name``."""
    return {"float64": 1e-10, "float32": 1e-5}[dtype_name]


def pytest_collection_modifyitems(config, items):
    """In a session for backends other than numpy, run only the tests parametrized by backend."""
    if _WANTED and "numpy" not in _WANTED:
        keep = [item for item in items if "backend_name" in getattr(item, "fixturenames", ())]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


@pytest.fixture
def repo_script():
    """Import a script of this repository (``"benchmarks/count_ops.py"``, say) from its file: it is not installed."""

    def load(relative_path):
        path = Path(__file__).resolve().parents[1] / relative_path
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def param_loss(model, name, X, y, **loss_kwargs):
    """``f`` for a numerical gradient check of ``model.params[name]``: the loss of ``model`` on ``X, y``.

    Where arrays are mutable it is the course's ``lambda _: model.loss(X, y)[0]``: the check perturbs the
    parameter where it lies. JAX's arrays are immutable, so there ``f`` computes from its argument, put in
    ``model.params[name]`` for the one call and the parameter restored afterwards.
    """
    if model.backend.mutable:
        return lambda _: model.loss(X, y, **loss_kwargs)[0]
    original = model.params[name]

    def f(W):
        model.params[name] = W
        try:
            return model.loss(X, y, **loss_kwargs)[0]
        finally:
            model.params[name] = original

    return f


def reference_fc_net(params, X, y, reg, L):
    """Scores, loss and gradients of an {affine - relu} x (L - 1) - affine - softmax net, W (in, out), in float64
    NumPy: the reference the models' tests derive their expected numbers from."""
    h, hs = X.reshape(len(X), -1), []
    for i in range(1, L):
        hs.append(h)
        h = np.maximum(h @ params[f"W{i}"] + params[f"b{i}"], 0)
    hs.append(h)
    scores = h @ params[f"W{L}"] + params[f"b{L}"]
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    N = len(y)
    loss = -np.log(p[np.arange(N), y]).mean() + 0.5 * reg * sum((params[f"W{i}"] ** 2).sum() for i in range(1, L + 1))
    dout = p
    dout[np.arange(N), y] -= 1
    dout /= N
    grads = {}
    for i in range(L, 0, -1):
        grads[f"W{i}"] = hs[i - 1].T @ dout + reg * params[f"W{i}"]
        grads[f"b{i}"] = dout.sum(axis=0)
        dout = (dout @ params[f"W{i}"].T) * (hs[i - 1] > 0)
    return scores, loss, grads
