"""Reliability: bad input at every public entry point, numerical faults, disk faults, hostile files, determinism.

Every bad input must raise ``ValueError`` or ``TypeError`` whose message
names the argument, what was expected and what came (the command: one line
on stderr, exit code 2, no traceback). tests/RELIABILITY.md lists each case
with the test that checks it.
"""

import errno
import json
import math
import os
import zipfile

import numpy as np
import pytest
from cifar_files import write_cifar10

import anynet
from anynet import backends, files, layers, optim
from anynet.app import cli
from anynet.training import checkpoint
from anynet.training.checkpoint import CheckpointError, load_npz, save_npz

# --- helpers ----------------------------------------------------------------


def assert_message(exc_info, *parts):
    """The error message holds every one of ``parts`` (argument, expectation, what came)."""
    message = str(exc_info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def small_data(N=10, N_val=4, D=8, C=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"X_train": rng.standard_normal((N, D)), "y_train": rng.integers(0, C, N),
            "X_val": rng.standard_normal((N_val, D)), "y_val": rng.integers(0, C, N_val)}


def small_net(backend_name="numpy", **kwargs):
    return anynet.FullyConnectedNet([6], input_dim=8, num_classes=3, weight_scale=0.3, seed=0,
                                    backend=backend_name, **kwargs)


def host(x):
    return backends.to_numpy(x)


# --- models -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "parts"),
    [
        ({"hidden_dims": [10, 0]}, ValueError, ["hidden_dims", "positive integer", "got 0"]),
        ({"hidden_dims": [10, -3]}, ValueError, ["hidden_dims", "positive integer", "got -3"]),
        ({"hidden_dims": [10, 2.5]}, TypeError, ["hidden_dims", "positive integer", "got 2.5"]),
        ({"hidden_dims": "10"}, TypeError, ["hidden_dims", "sequence of positive integers", "'10'"]),
        ({"hidden_dims": [4], "input_dim": 0}, ValueError, ["input_dim", "positive integer", "got 0"]),
        ({"hidden_dims": [4], "num_classes": -2}, ValueError, ["num_classes", "positive integer", "got -2"]),
        ({"hidden_dims": [4], "dropout": 1.0}, ValueError, ["dropout", "[0.0, 1.0)", "got 1.0"]),
        ({"hidden_dims": [4], "dropout": -0.1}, ValueError, ["dropout", "[0.0, 1.0)", "got -0.1"]),
        ({"hidden_dims": [4], "dropout": float("nan")}, ValueError, ["dropout", "[0.0, 1.0)", "nan"]),
        ({"hidden_dims": [4], "dropout": "0.5"}, TypeError, ["dropout", "real number", "'0.5'"]),
        ({"hidden_dims": [4], "dtype": "float16"}, ValueError, ["dtype", "float32, float64", "'float16'"]),
        ({"hidden_dims": [4], "dtype": "int64"}, ValueError, ["dtype", "float32, float64", "'int64'"]),
        ({"hidden_dims": [4], "weight_scale": 0}, ValueError, ["weight_scale", "(0.0, inf)", "got 0"]),
        ({"hidden_dims": [4], "weight_scale": math.inf}, ValueError, ["weight_scale", "(0.0, inf)", "inf"]),
        ({"hidden_dims": [4], "reg": -1}, ValueError, ["reg", "[0.0, inf)", "-1"]),
        ({"hidden_dims": [4], "use_batchnorm": "yes"}, TypeError, ["use_batchnorm", "True or False", "'yes'"]),
        ({"hidden_dims": [4], "seed": -1}, ValueError, ["seed", "non-negative integer", "-1"]),
        ({"hidden_dims": [4], "backend": "tensorflow"}, ValueError, ["backend", "numpy", "jax", "'tensorflow'"]),
        ({"hidden_dims": [4], "device": "cuda:0"}, ValueError, ["device", "'cuda:0'", "numpy backend"]),
    ],
)
def test_model_constructor_names_bad_argument(kwargs, error, parts):
    with pytest.raises(error) as exc_info:
        anynet.FullyConnectedNet(**kwargs)
    assert_message(exc_info, *parts)


@pytest.mark.parametrize("hidden", [0, -5, [0], 3.0, None])
def test_two_layer_net_hidden_size(hidden):
    with pytest.raises((ValueError, TypeError)) as exc_info:
        anynet.TwoLayerNet(hidden_dims=hidden)
    assert_message(exc_info, "hidden_dims", "positive integer", repr(hidden if hidden != [0] else 0))


_LOSS_CASES = [
    # (X, y, error, parts)
    (np.ones(8), None, ValueError, ["X", "8 features per row", "(8,)"]),
    (np.ones((2, 7)), None, ValueError, ["X", "8 features per row", "(2, 7)"]),
    (np.ones((2, 2, 2, 2)), None, ValueError, ["X", "8 features per row", "(2, 2, 2, 2)"]),  # 8 but...
    (np.ones((0, 8)), None, ValueError, ["X", "N > 0", "(0, 8)"]),
    (np.full((2, 8), "a"), None, TypeError, ["X", "real numbers", "<U1"]),
    (None, None, TypeError, ["X", "real numbers", "None"]),
    (np.ones((2, 8), dtype=complex), None, TypeError, ["X", "real numbers", "complex128"]),
    (np.ones((2, 8), dtype=bool), None, TypeError, ["X", "real numbers", "bool"]),
    (np.ones((2, 8)), np.zeros(3, dtype=np.int64), ValueError, ["y", "shape (2,)", "(3,)"]),
    (np.ones((2, 8)), np.zeros((2, 1), dtype=np.int64), ValueError, ["y", "shape (2,)", "(2, 1)"]),
    (np.ones((2, 8)), np.zeros(2), TypeError, ["y", "integers", "float64"]),
    (np.ones((2, 8)), np.array(["a", "b"]), TypeError, ["y", "integers", "<U1"]),
    (np.ones((2, 8)), np.array([0, 3]), ValueError, ["y", "[0, 3)", "got 3"]),
    (np.ones((2, 8)), np.array([-1, 0]), ValueError, ["y", "[0, 3)", "got -1"]),
]


@pytest.mark.parametrize(("X", "y", "error", "parts"), _LOSS_CASES)
def test_model_loss_names_bad_input(backend_name, X, y, error, parts):
    model = small_net(backend_name)
    if X is not None and X.shape == (2, 2, 2, 2):
        # 2*2*2 = 8 features per row is fine: only the feature count matters.
        assert tuple(model.loss(X).shape) == (2, 3)
        return
    with pytest.raises(error) as exc_info:
        model.loss(X, y)
    assert_message(exc_info, *parts)


def test_model_loss_moves_other_backends_arrays(backend_name):
    """By design, inputs of another backend (or NumPy) move to the model's device; results agree with NumPy's."""
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((5, 8)), rng.integers(0, 3, 5)
    reference = small_net("numpy", dtype="float64")
    expected = float(reference.loss(X, y)[0])
    model = small_net(backend_name, dtype="float64")
    for other in anynet.available_backends():
        xp = backends.get(other).xp
        X_other, y_other = xp.asarray(X), xp.asarray(y)
        loss, grads = model.loss(X_other, y_other)
        assert backends.name_of(loss) == backend_name and backends.name_of(grads["W1"]) == backend_name
        if backends.to_numpy(X_other).dtype != np.float64:
            # JAX outside its 64-bit mode holds X in float32: the model computes on those values, cast to float64.
            assert other == "jax"
            expected_other = float(reference.loss(backends.to_numpy(X_other), backends.to_numpy(y_other))[0])
            assert math.isclose(float(loss), expected_other, rel_tol=1e-12)
            assert math.isclose(float(loss), expected, rel_tol=1e-5)
        else:
            assert math.isclose(float(loss), expected, rel_tol=1e-12)


def test_model_scores_of_magnitude_1e4_stay_finite(backend_name):
    for dtype in ("float32", "float64"):
        model = anynet.TwoLayerNet(input_dim=4, hidden_dims=5, num_classes=3, weight_scale=1.0, dtype=dtype,
                                   seed=2, backend=backend_name)
        X = np.random.default_rng(0).standard_normal((6, 4)) * 300
        scores = host(model.loss(X))
        assert np.abs(scores).max() > 1e3
        loss, grads = model.loss(X, np.arange(6) % 3)
        assert math.isfinite(float(loss))
        assert all(np.isfinite(host(g)).all() for g in grads.values())


# --- Solver -----------------------------------------------------------------

_DATA_CASES = [
    ({"y_train": np.full(10, 3)}, ValueError, ["y_train", "outside [0, 3)"]),
    ({"y_val": np.full(4, -1)}, ValueError, ["y_val", "outside [0, 3)"]),
    ({"X_train": np.full((10, 8), np.nan)}, ValueError, ["X_train", "NaN or infinite"]),
    ({"X_val": np.full((4, 8), -np.inf)}, ValueError, ["X_val", "NaN or infinite"]),
    ({"X_train": np.full((10, 8), "x")}, TypeError, ["X_train", "real numbers", "<U1"]),
    ({"X_train": None}, TypeError, ["X_train", "real numbers", "None"]),
    ({"X_val": np.full((4, 8), object())}, TypeError, ["X_val", "real numbers", "object"]),
    ({"y_train": np.zeros(10)}, TypeError, ["y_train", "integers", "float64"]),
    ({"y_train": np.zeros(10, dtype=bool)}, TypeError, ["y_train", "integers", "bool"]),
    ({"X_train": np.ones((0, 8)), "y_train": np.zeros(0, dtype=int)}, ValueError, ["X_train", "N > 0", "(0, 8)"]),
    ({"X_val": np.ones((0, 8)), "y_val": np.zeros(0, dtype=int)}, ValueError, ["X_val", "N > 0", "(0, 8)"]),
    ({"X_train": np.ones(10)}, ValueError, ["X_train", "(N, ...)", "(10,)"]),
    ({"X_val": np.ones((4, 7))}, ValueError, ["X_val", "8 features per row", "(4, 7)"]),
    ({"y_val": np.zeros(5, dtype=int)}, ValueError, ["y_val", "(4,)", "(5,)"]),
    ({"y_train": np.zeros((10, 1), dtype=int)}, ValueError, ["y_train", "(10,)", "(10, 1)"]),
]


@pytest.mark.parametrize(("change", "error", "parts"), _DATA_CASES)
def test_solver_names_bad_data(change, error, parts):
    with pytest.raises(error) as exc_info:
        anynet.Solver(small_net(), {**small_data(), **change}, batch_size=2, verbose=False)
    assert_message(exc_info, *parts)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (5, 3), (9, 7)])
def test_solver_finds_one_non_finite_value_on_every_backend(backend_name, bad, where):
    """One bad value among finite ones, first, inside or last: the check reduces with max/min, which must see it."""
    data = small_data()
    X = np.array(data["X_train"], copy=True)
    X[where] = bad
    with pytest.raises(ValueError, match="X_train holds NaN or infinite values"):
        anynet.Solver(small_net(backend_name), {**data, "X_train": X}, batch_size=2, verbose=False)
    anynet.Solver(small_net(backend_name), data, batch_size=2, verbose=False)  # finite data passes


def test_solver_names_missing_or_wrong_data_container():
    data = small_data()
    del data["y_val"]
    with pytest.raises(ValueError) as exc_info:
        anynet.Solver(small_net(), data)
    assert_message(exc_info, "data is missing", "y_val")
    with pytest.raises(TypeError) as exc_info:
        anynet.Solver(small_net(), [data])
    assert_message(exc_info, "data must be a dict", "X_train", "got list")
    with pytest.raises(TypeError) as exc_info:
        anynet.Solver(object(), small_data())
    assert_message(exc_info, "model must have", "'params'", "object")


_SOLVER_CASES = [
    ({"update_rule": "adamax"}, ValueError, ["update_rule", "sgd_momentum", "'adamax'"]),
    ({"update_rule": 3}, ValueError, ["update_rule", "callable", "got 3"]),
    ({"batch_size": 0}, ValueError, ["batch_size", "positive integer", "got 0"]),
    ({"batch_size": -4}, ValueError, ["batch_size", "positive integer", "got -4"]),
    ({"batch_size": 2.0}, TypeError, ["batch_size", "positive integer", "got 2.0"]),
    ({"batch_size": 11}, ValueError, ["batch_size (11)", "larger than the training set", "10 images"]),
    ({"num_epochs": 0}, ValueError, ["num_epochs", "positive integer", "got 0"]),
    ({"num_iterations": 0}, ValueError, ["num_iterations", "positive integer", "got 0"]),
    ({"num_iterations": -5}, ValueError, ["num_iterations", "positive integer", "got -5"]),
    ({"optim_config": {"learning_rate": 0}}, ValueError, ["learning_rate", "(0.0, inf)", "got 0"]),
    ({"optim_config": {"learning_rate": -1e-3}}, ValueError, ["learning_rate", "(0.0, inf)", "got -0.001"]),
    ({"optim_config": {"learning_rate": math.nan}}, ValueError, ["learning_rate", "(0.0, inf)", "got nan"]),
    ({"optim_config": {"learning_rate": "fast"}}, ValueError, ["learning_rate", "number", "'fast'"]),
    ({"optim_config": {"learning_rat": 1e-3}}, ValueError, ["unknown key", "'learning_rat'", "learning_rate"]),
    ({"update_rule": "sgd_momentum", "optim_config": {"momentum": 1.5}}, ValueError,
     ["'sgd_momentum'", "momentum", "[0.0, 1.0)", "1.5"]),
    ({"update_rule": "adam", "optim_config": {"beta2": 1.0}}, ValueError, ["beta2", "[0.0, 1.0)", "1.0"]),
    ({"optim_config": [("learning_rate", 1)]}, TypeError, ["optim_config", "dict", "list"]),
    ({"lr_decay": 0}, ValueError, ["lr_decay", "(0, 1]", "got 0"]),
    ({"lr_decay": 1.5}, ValueError, ["lr_decay", "(0, 1]", "1.5"]),
    ({"learning_rate": 1e-3}, ValueError, ["unknown Solver argument", "learning_rate", "optim_config"]),
    ({"checkpoint_name": 5}, TypeError, ["checkpoint_name", "path", "got 5"]),
    ({"callback": "print"}, TypeError, ["callback", "callable", "'print'"]),
    ({"seed": -1}, ValueError, ["seed", "non-negative integer", "-1"]),
    ({"print_every": 0}, ValueError, ["print_every", "positive integer", "got 0"]),
    ({"num_train_samples": 0}, ValueError, ["num_train_samples", "positive integer", "got 0"]),
]


@pytest.mark.parametrize(("kwargs", "error", "parts"), _SOLVER_CASES)
def test_solver_names_bad_argument(kwargs, error, parts):
    with pytest.raises(error) as exc_info:
        anynet.Solver(small_net(), small_data(), **{"batch_size": 2, "verbose": False, **kwargs})
    assert_message(exc_info, *parts)


def test_solver_moves_arrays_of_any_backend_to_the_model(backend_name):
    """Data of another backend is moved to the model's device once, by design; training then matches NumPy data."""
    histories = []
    for other in anynet.available_backends():
        xp = backends.get(other).xp
        data = {k: xp.asarray(v) for k, v in small_data().items()}
        model = small_net(backend_name)
        solver = anynet.Solver(model, data, batch_size=5, num_epochs=2, optim_config={"learning_rate": 0.1},
                               verbose=False, seed=0)
        assert backends.name_of(solver.X_train) == backend_name and backends.name_of(solver.y_val) == backend_name
        solver.train()
        histories.append((other, solver.loss_history, host(model.params["W1"])))
    # numpy and float64 inputs cast to the model's float32 identically, whatever their backend.
    for other, losses, w in histories[1:]:
        assert losses == histories[0][1], other
        np.testing.assert_array_equal(w, histories[0][2])


# --- optimizers and layers --------------------------------------------------

_HYPER = {
    "sgd": {"learning_rate": "(0.0, inf)"},
    "sgd_momentum": {"learning_rate": "(0.0, inf)", "momentum": "[0.0, 1.0)"},
    "nesterov_momentum": {"learning_rate": "(0.0, inf)", "momentum": "[0.0, 1.0)"},
    "rmsprop": {"learning_rate": "(0.0, inf)", "decay_rate": "[0.0, 1.0)", "epsilon": "(0.0, inf)"},
    "adam": {"learning_rate": "(0.0, inf)", "beta1": "[0.0, 1.0)", "beta2": "[0.0, 1.0)", "epsilon": "(0.0, inf)"},
}


@pytest.mark.parametrize("rule", sorted(_HYPER))
def test_update_rules_name_bad_hyperparameters(rule):
    w = np.ones(3)
    for name, interval in _HYPER[rule].items():
        low_bad = 0.0 if interval.startswith("(") else -0.5
        high_bad = 1.0 if interval.endswith("1.0)") else math.inf
        for bad in (low_bad, high_bad, math.nan, True, "0.1", None):
            with pytest.raises(ValueError) as exc_info:
                optim.UPDATE_RULES[rule](w, w, {name: bad})
            assert_message(exc_info, f"config[{name!r}]", interval, repr(bad))
    with pytest.raises(ValueError) as exc_info:
        optim.UPDATE_RULES[rule](w, w, {"lr": 0.1})
    assert_message(exc_info, "unknown key", "'lr'", "learning_rate")
    with pytest.raises(TypeError) as exc_info:
        optim.UPDATE_RULES[rule](w, w, [("learning_rate", 0.1)])
    assert_message(exc_info, "config", "dict", "list")


def test_update_rules_accept_their_own_state():
    """A config returned by a rule (hyperparameters and state) is accepted back, so unknown-key checks never bite."""
    w = np.ones(3)
    for rule in optim.UPDATE_RULES.values():
        _, config = rule(w, w, None)
        _, again = rule(w, w, config)
        assert set(again) == set(config)


@pytest.mark.parametrize(
    ("call", "error", "parts"),
    [
        (lambda: layers.affine_forward(np.ones((2, 3)), np.ones((4, 2)), np.ones(2)), ValueError,
         ["x has 3 features", "w expects 4", "(4, 2)"]),
        (lambda: layers.softmax_loss(np.ones(3), np.zeros(1, dtype=int)), ValueError, ["x", "2 dimension", "(3,)"]),
        (lambda: layers.svm_loss(np.ones((2, 3)), np.zeros(3, dtype=int)), ValueError,
         ["same length", "2 and 3"]),
        (lambda: layers.softmax_loss(np.ones((2, 3)), np.zeros(2)), TypeError, ["y", "integer", "float64"]),
        (lambda: layers.batchnorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), {"mode": "eval"}), ValueError,
         ['bn_param["mode"]', '"train" or "test"', "'eval'"]),
        (lambda: layers.batchnorm_forward(np.ones((2, 3)), np.ones(4), np.zeros(3), {"mode": "train"}),
         ValueError, ["gamma and beta", "shape (3,)", "(4,) and (3,)"]),
        (lambda: layers.dropout_forward(np.ones(3), {"p": 1.0, "mode": "train"}), ValueError,
         ['dropout_param["p"]', "[0, 1)", "1.0"]),
        (lambda: layers.dropout_forward(np.ones(3), {"p": 0.5, "mode": "eval"}), ValueError,
         ['dropout_param["mode"]', "'eval'"]),
    ],
)
def test_layers_name_bad_input(call, error, parts):
    with pytest.raises(error) as exc_info:
        call()
    assert_message(exc_info, *parts)


def test_backend_functions_name_bad_input():
    with pytest.raises(ValueError) as exc_info:
        anynet.set_backend("tensorflow")
    assert_message(exc_info, "backend", "array_api_strict", "'tensorflow'")
    with pytest.raises(ValueError) as exc_info:
        backends.get("numpy", "cuda")
    assert_message(exc_info, "device", "'cuda'", "numpy")


# --- numerical faults -------------------------------------------------------


def _poison_after_epoch(epoch, snapshots):
    """Callback: record the checkpoint and best parameters at each epoch end, then put NaN into W1 at ``epoch``."""

    def callback(solver, event):
        if event != "epoch":
            return
        path = f"{solver.checkpoint_name}.npz"
        snapshots[solver.epoch] = (open(path, "rb").read(),
                                   {k: host(v).copy() for k, v in solver.best_params.items()})
        if solver.epoch == epoch:
            xp = solver.model.xp
            solver.model.params["W1"] = solver.model.params["W1"] * xp.nan

    return callback


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_stops_naming_iteration_and_keeps_saved_state(tmp_path, backend_name):
    snapshots = {}
    ckpt = tmp_path / "run"
    model = small_net(backend_name)
    solver = anynet.Solver(model, small_data(), batch_size=5, num_epochs=5, optim_config={"learning_rate": 0.1},
                           checkpoint_name=ckpt, callback=_poison_after_epoch(2, snapshots), verbose=False, seed=0)
    with pytest.raises(FloatingPointError) as exc_info:
        solver.train()
    # 2 iterations per epoch: the first step after epoch 2 sees the NaN.
    assert len(solver.loss_history) == 4 and all(math.isfinite(v) for v in solver.loss_history)
    assert_message(exc_info, "loss became nan at iteration 5", f"last finite loss {solver.loss_history[-1]}",
                   f"{ckpt}.npz", "intact", "best_params")
    error = exc_info.value  # the same facts, for programs (anynet train's metrics.json)
    assert math.isnan(error.loss) and error.iteration == 5 and error.last_finite_loss == solver.loss_history[-1]
    saved_bytes, best = snapshots[2]
    assert (tmp_path / "run.npz").read_bytes() == saved_bytes
    for k, v in best.items():
        np.testing.assert_array_equal(host(solver.best_params[k]), v)
        assert np.isfinite(v).all()
    loaded = anynet.load_model(tmp_path / "run.npz", backend=backend_name)
    for k, v in best.items():
        np.testing.assert_array_equal(host(loaded.params[k]), v)
    # The run can go on from the intact checkpoint.
    resumed = anynet.Solver(small_net(backend_name), small_data(), batch_size=5, num_epochs=5,
                            optim_config={"learning_rate": 0.1}, verbose=False, seed=0)
    resumed.load_checkpoint(tmp_path / "run.npz")
    resumed.train()
    assert resumed.t == 10 and resumed.loss_history[:4] == solver.loss_history


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exploding_learning_rate_stops_training(backend_name):
    solver = anynet.Solver(small_net(backend_name), small_data(), batch_size=5, num_epochs=50,
                           optim_config={"learning_rate": 1e30}, verbose=False, seed=0)
    with pytest.raises(FloatingPointError) as exc_info:
        solver.train()
    t = len(solver.loss_history) + 1
    assert_message(exc_info, f"at iteration {t}", "last finite loss", "Lower the learning rate")
    assert solver.best_params and all(np.isfinite(host(v)).all() for v in solver.best_params.values())


# --- disk faults while saving a checkpoint -----------------------------------


def _folder_state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _save(path, value):
    save_npz(path, {"w": np.full(3, value)}, {"note": value})


def _disk_full_savez(file, **arrays):
    """np.savez that writes a little, then finds the disk full."""
    file.write(b"PK\x03\x04 partial")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


@pytest.mark.parametrize(
    ("target", "fault", "reason"),
    [
        ("np.savez", _disk_full_savez, "No space left on device"),
        ("os.replace", _denied, "Permission denied"),
        ("tempfile.mkstemp", _denied, "Permission denied"),
        ("os.fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, os.strerror(errno.EIO))),
         "Input/output error"),
    ],
)
def test_save_fault_gives_clear_error_and_keeps_previous_checkpoint(tmp_path, monkeypatch, target, fault, reason):
    path = tmp_path / "ckpt.npz"
    _save(path, 1.0)
    before = _folder_state(tmp_path)
    module, name = target.split(".")
    # np is checkpoint's; os and tempfile are those of anynet.files, the one writer every file goes through
    monkeypatch.setattr(getattr(checkpoint if module == "np" else files, module), name, fault)
    with pytest.raises(CheckpointError) as exc_info:
        _save(path, 2.0)
    monkeypatch.undo()
    assert_message(exc_info, str(path), reason, "previous checkpoint there is intact")
    assert _folder_state(tmp_path) == before  # no temporary file left behind
    arrays, meta = load_npz(path)
    assert meta["note"] == 1.0 and (arrays["w"] == 1.0).all()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_gives_clear_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    _save(path, 1.0)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError) as exc_info:
            _save(path, 2.0)
    finally:
        tmp_path.chmod(0o755)
    assert_message(exc_info, str(path), "Permission denied")
    assert load_npz(path)[1]["note"] == 1.0


def test_disk_full_during_training_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    snapshots = {}
    solver = anynet.Solver(small_net(), small_data(), batch_size=5, num_epochs=5, checkpoint_name=tmp_path / "run",
                           callback=_poison_after_epoch(99, snapshots), optim_config={"learning_rate": 0.1},
                           verbose=False, seed=0)
    real_savez = np.savez
    calls = []

    def savez_until_full(file, **arrays):
        calls.append(1)
        if len(calls) > 2:
            _disk_full_savez(file, **arrays)
        real_savez(file, **arrays)

    monkeypatch.setattr(checkpoint.np, "savez", savez_until_full)
    with pytest.raises(CheckpointError) as exc_info:
        solver.train()
    assert_message(exc_info, f"{tmp_path / 'run'}.npz", "No space left on device", "intact")
    assert (tmp_path / "run.npz").read_bytes() == snapshots[2][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
    assert load_npz(tmp_path / "run.npz")[1]["solver"]["epoch"] == 2


# --- hostile and damaged checkpoints ----------------------------------------


class _Payload:
    """Unpickling this would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    meta = np.frombuffer(json.dumps({"format": checkpoint.FORMAT}).encode(), dtype=np.uint8)
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    np.savez(path, __meta__=meta, **{"params/W1": evil})
    for load in (load_npz, anynet.load_model):
        with pytest.raises(CheckpointError) as exc_info:
            load(path)
        assert_message(exc_info, str(path), "not a readable anynet checkpoint")
    assert not marker.exists()


def test_truncated_and_bit_flipped_checkpoints_never_load_wrong_data(tmp_path):
    path = tmp_path / "good.npz"
    save_npz(path, {"w": np.arange(64, dtype=np.float32)}, {"note": 1})
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as exc_info:
            load_npz(bad)
        assert_message(exc_info, str(bad))
    rng = np.random.default_rng(0)
    errors = 0
    for position in rng.choice(len(data), size=40, replace=False):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(flipped))
        try:
            arrays, meta = load_npz(bad)
        except CheckpointError as exc:
            assert str(bad) in str(exc)
            errors += 1
        else:
            # Only bytes no reader looks at (zip timestamps, say) may change silently.
            np.testing.assert_array_equal(arrays["w"], np.arange(64, dtype=np.float32))
            assert meta["note"] == 1
    assert errors > 20
    with pytest.raises(CheckpointError) as exc_info:
        load_npz(tmp_path / "missing.npz")
    assert_message(exc_info, "missing.npz", "does not exist")
    not_anynet = tmp_path / "other.npz"
    np.savez(not_anynet, w=np.ones(2))
    with pytest.raises(CheckpointError) as exc_info:
        load_npz(not_anynet)
    assert_message(exc_info, str(not_anynet))
    assert zipfile.is_zipfile(path)


# --- determinism ------------------------------------------------------------


def _full_run(backend_name, dropout=0.3, update_rule="adam"):
    """A run that uses every source of randomness: init, minibatch order, dropout, accuracy subsamples."""
    rng = np.random.default_rng(7)
    data = {"X_train": rng.standard_normal((40, 8)), "y_train": rng.integers(0, 3, 40),
            "X_val": rng.standard_normal((12, 8)), "y_val": rng.integers(0, 3, 12)}
    model = anynet.FullyConnectedNet([10, 7], input_dim=8, num_classes=3, dropout=dropout, use_batchnorm=True,
                                     reg=1e-3, weight_scale=0.2, seed=4, backend=backend_name)
    solver = anynet.Solver(model, data, update_rule=update_rule, optim_config={"learning_rate": 1e-2}, batch_size=8,
                           num_epochs=3, num_train_samples=20, num_val_samples=8, verbose=False, seed=11)
    solver.train()
    params = {k: host(v) for k, v in model.params.items()}
    stats = [{k: host(v) for k, v in bn.items() if k.startswith("running_")} for bn in model.bn_params]
    return params, stats, solver.loss_history, solver.train_acc_history, solver.val_acc_history


def test_same_seed_same_backend_is_bit_for_bit(backend_name, device):
    """numpy, array_api_strict and torch on the CPU repeat bit for bit; on a GPU, within float32 rounding.

    anynet itself draws nothing nondeterministic on a GPU (no atomics, no
    scatter-add), but cuBLAS may pick a split-K kernel that sums in another
    order from one process to the next: see RELIABILITY.md.
    """
    a, b = _full_run(backend_name), _full_run(backend_name)
    on_gpu = backend_name == "cupy" or "cuda" in str(device)
    if on_gpu:
        np.testing.assert_allclose(a[2], b[2], rtol=1e-5)
        for k in a[0]:
            np.testing.assert_allclose(a[0][k], b[0][k], rtol=1e-4, atol=1e-6, err_msg=k)
        return
    assert a[2] == b[2] and a[3] == b[3] and a[4] == b[4]
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k], err_msg=k)
    for sa, sb in zip(a[1], b[1], strict=True):
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])


def test_backends_agree_within_tolerance(backend_name):
    """The same seeded run on another backend follows NumPy's within float32 rounding.

    Without dropout, whose masks come from each backend's own device generator, and
    without Adam, which scales the rounding noise in the (exactly zero) gradient
    of a bias feeding batch normalization up to full-size steps.
    """
    expected = _full_run("numpy", dropout=0, update_rule="sgd_momentum")
    got = _full_run(backend_name, dropout=0, update_rule="sgd_momentum")
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-4)
    for k in expected[0]:
        np.testing.assert_allclose(got[0][k], expected[0][k], rtol=1e-3, atol=1e-5, err_msg=k)


# --- the command ------------------------------------------------------------

SIZES = ["--num-training", "40", "--num-validation", "20", "--num-test", "20", "--batch-size", "10",
         "--hidden-dims", "8", "--quiet"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=20, n_test=20)
    return root


def run_cli(argv):
    """Exit code of the command: returned, or raised by argparse as ``SystemExit``."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--backend", "mxnet"], ["--backend", "invalid choice", "'mxnet'"]),
        (["--model", "resnet"], ["--model", "invalid choice", "'resnet'"]),
        (["--update-rule", "adamax"], ["--update-rule", "invalid choice", "'adamax'"]),
        (["--frobnicate"], ["unrecognized arguments", "--frobnicate"]),
        (["--dtype", "float16"], ["--dtype", "invalid choice", "'float16'"]),
        (["--batch-size", "0"], ["--batch-size", "positive integer", "0"]),
        (["--learning-rate", "-1"], ["--learning-rate", "positive number", "-1"]),
        (["--learning-rate", "nan"], ["--learning-rate", "positive number", "nan"]),
        (["--epochs", "0"], ["--epochs", "positive integer", "0"]),
        (["--iterations", "-2"], ["--iterations", "positive integer", "-2"]),
        (["--hidden-dims", "0"], ["--hidden-dims", "positive integer", "0"]),
        (["--hidden-dims", "ten"], ["--hidden-dims", "'ten'"]),
        (["--reg", "-0.5"], ["--reg", "non-negative", "-0.5"]),
        (["--seed", "-1"], ["--seed", "non-negative integer", "-1"]),
    ],
)
def test_command_refuses_bad_flags(args, parts, capsys, tmp_path):
    assert run_cli(["train", *args, "--out", str(tmp_path / "run")]) == 2
    err = _one_line_error(capsys)
    for part in parts:
        assert part in err, (part, err)


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--dropout", "1.5"], ["dropout", "[0.0, 1.0)", "1.5"]),
        (["--lr-decay", "1.5"], ["lr_decay", "(0, 1]", "1.5"]),
        (["--batch-size", "100"], ["batch_size (100)", "larger than the training set", "40 images"]),
        (["--device", "cuda:3"], ["device", "'cuda:3'", "numpy"]),
        (["--resume", "MISSING"], ["MISSING", "does not exist"]),
        (["--resume", "GARBAGE"], ["GARBAGE", "not a readable anynet checkpoint"]),
    ],
)
def test_command_refuses_bad_values_in_one_line(args, parts, capsys, tmp_path, data_dir):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(200))
    subs = {"MISSING": str(tmp_path / "missing.npz"), "GARBAGE": str(garbage)}
    args = [subs.get(a, a) for a in args]
    parts = [subs.get(p, p) for p in parts]
    code = cli.main(["train", "--data-dir", str(data_dir), *SIZES, *args, "--out", str(tmp_path / "run")])
    assert code == 2
    err = _one_line_error(capsys)
    for part in parts:
        assert part in err, (part, err)


def test_evaluate_refuses_bad_checkpoint(capsys, tmp_path):
    garbage = tmp_path / "model.npz"
    garbage.write_bytes(b"PK\x03\x04" + os.urandom(100))
    assert cli.main(["evaluate", str(garbage)]) == 2
    assert str(garbage) in _one_line_error(capsys)
    assert run_cli(["fly"]) == 2
    assert "invalid choice: 'fly'" in _one_line_error(capsys)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def _nan_loss_after(monkeypatch, steps):
    """Make every training loss after the first ``steps`` NaN (the gradients stay finite)."""
    real_loss = anynet.models.fc_net.softmax_loss
    calls = []

    def nan_after(x, y):
        calls.append(1)
        loss, dx = real_loss(x, y)
        return (loss * float("nan"), dx) if len(calls) > steps else (loss, dx)

    monkeypatch.setattr(anynet.models.fc_net, "softmax_loss", nan_after)


def test_a_diverged_run_keeps_what_it_learned_and_says_what_to_change(capsys, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    _nan_loss_after(monkeypatch, 8)  # 4 iterations per epoch: the loss of iteration 9 is the first NaN
    code = cli.main(["train", "--data-dir", str(data_dir), *SIZES, "--epochs", "4", "--out", str(out)])
    assert code == 1
    err = _one_line_error(capsys)
    model = out / "model.npz"
    for part in ("anynet train: failed: loss became nan at iteration 9", "last finite loss", str(model),
                 f"anynet evaluate {model}", "--learning-rate (was 0.001)"):
        assert part in err, (part, err)
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert metrics["status"] == "diverged" and metrics["model"] == str(model)
    assert metrics["diverged"] == {"iteration": 9, "loss": "nan", "last_finite_loss": history["loss_history"][-1]}
    # The history and plots up to the fault: 8 finite losses, accuracies at iterations 1, 4 and 8.
    assert len(history["loss_history"]) == 8 and history["acc_iterations"] == [1, 4, 8]
    assert len(history["val_acc_history"]) == 3 and metrics["best_val_acc"] == max(history["val_acc_history"])
    assert all((out / name).stat().st_size > 0 for name in ("loss.png", "accuracy.png", "weights.png"))
    assert [row.split(",")[1] for row in (out / "metrics.csv").read_text().splitlines()[1:]] == ["4", "8"]
    # model.npz is the best parameters so far, which the intact checkpoint of iteration 8 holds too.
    arrays, meta = load_npz(out / "checkpoint.npz")
    assert meta["solver"]["t"] == 8
    saved = anynet.load_model(model)
    for name, value in saved.params.items():
        np.testing.assert_array_equal(value, arrays[f"best/{name}"], err_msg=name)
    assert cli.main(["evaluate", str(model)]) == 0
    assert f"val acc {metrics['val_acc']:.4f}" in capsys.readouterr().out
    # With the fault gone, the run resumes from the intact checkpoint and finishes: status ok.
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 16 and metrics["status"] == "ok" and metrics["diverged"] is None


def test_a_run_diverged_from_its_first_loss_keeps_nothing_and_says_so(capsys, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    _nan_loss_after(monkeypatch, 0)
    assert cli.main(["train", "--data-dir", str(data_dir), *SIZES, "--epochs", "2", "--out", str(out)]) == 1
    err = _one_line_error(capsys)
    assert "loss became nan at iteration 1 (no finite loss); it learned nothing to keep" in err
    assert "--weight-scale (was 0.001) or --learning-rate (was 0.001)" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["model"] is None and metrics["val_acc"] is None
    assert metrics["diverged"] == {"iteration": 1, "loss": "nan", "last_finite_loss": None}
    assert not (out / "model.npz").exists() and (out / "loss.png").exists()


def test_command_reports_disk_full_in_one_line(capsys, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint.np, "savez", _disk_full_savez)
    code = cli.main(["train", "--data-dir", str(data_dir), *SIZES, "--epochs", "2", "--out", str(out)])
    assert code in (1, 2)
    err = _one_line_error(capsys)
    assert "No space left on device" in err and str(out / "checkpoint.npz") in err
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


# --- data files (the loader's own tests are in test_data.py) ----------------


def test_bit_flipped_batch_names_the_file_or_loads_valid_data(tmp_path):
    """A flipped bit either breaks the pickle (an error naming the file) or changes a pixel or label in range.

    The official batches carry no checksum (the archive's MD5 guards downloads),
    so a flip inside the pixel bytes cannot be seen; it can never smuggle in
    another shape, dtype, out-of-range label or code.
    """
    from anynet.data import DatasetError, load_batch

    folder, _ = write_cifar10(tmp_path / "src", n_per_batch=10, n_test=10)
    data = (folder / "data_batch_1").read_bytes()
    bad = tmp_path / "data_batch_1"
    rng = np.random.default_rng(3)
    # Flips in the pickle's framing (the first and last few hundred bytes), then anywhere.
    positions = [*rng.integers(0, 300, 30), *rng.integers(len(data) - 300, len(data), 30),
                 *rng.integers(0, len(data), 30)]
    errors = 0
    for position in positions:
        flipped = bytearray(data)
        flipped[int(position)] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(flipped))
        try:
            X, y = load_batch(bad)
        except DatasetError as exc:
            assert "data_batch_1" in str(exc)
            errors += 1
        else:
            assert X.shape == (10, 32, 32, 3) and X.dtype == np.uint8
            assert y.shape == (10,) and ((0 <= y) & (y < 10)).all()
    assert errors > 10


def test_interrupted_extraction_leaves_no_half_dataset(tmp_path, monkeypatch):
    import hashlib
    import tarfile

    from cifar_files import write_archive

    from anynet import data

    folder, _ = write_cifar10(tmp_path / "src", n_per_batch=10, n_test=10)
    archive = write_archive(folder, tmp_path / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "data"
    real_extract = tarfile.TarFile.extract
    extracted = []

    def extract_then_interrupt(self, member, *args, **kwargs):
        if len(extracted) == 3:
            raise KeyboardInterrupt  # Ctrl-C halfway through the archive
        extracted.append(member)
        return real_extract(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", extract_then_interrupt)
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda self, path, filter=None: [
        self.extract(m, path, filter=filter) for m in self.getmembers()])
    with pytest.raises(KeyboardInterrupt):
        data.download_cifar10(root, url=archive, md5=md5, quiet=True)
    assert len(extracted) == 3 and list(root.iterdir()) == []
    # A SIGKILL leaves a staging folder behind: it is never taken for the dataset.
    staging = root / ".cifar-10-batches-py.killed" / "cifar-10-batches-py"
    staging.mkdir(parents=True)
    (staging / "data_batch_1").write_bytes((folder / "data_batch_1").read_bytes())
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_cifar10(root)
    monkeypatch.undo()
    assert data.download_cifar10(root, url=archive, md5=md5, quiet=True) == root / "cifar-10-batches-py"
    assert len(data.load_cifar10(root)[0]) == 50


def test_command_interrupted_says_how_to_resume(capsys, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    real_step = anynet.Solver._step
    steps = []

    def step_then_ctrl_c(self):
        steps.append(1)
        if len(steps) == 10:
            raise KeyboardInterrupt
        real_step(self)

    monkeypatch.setattr(anynet.Solver, "_step", step_then_ctrl_c)
    assert cli.main(["train", "--data-dir", str(data_dir), *SIZES, "--epochs", "4", "--out", str(out)]) == 130
    err = _one_line_error(capsys)
    assert f"anynet train --resume {out / 'checkpoint.npz'}" in err
    assert load_npz(out / "checkpoint.npz")[1]["solver"]["t"] == 8
