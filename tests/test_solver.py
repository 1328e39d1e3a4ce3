"""The Solver: overfitting, bookkeeping, determinism, resume and validation, on every backend."""

from pathlib import Path

import numpy as np
import pytest

import anynet
from anynet import backends


def _images(N, seed=0, C=10):
    """CIFAR-shaped, mean-subtracted random images with integer labels."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 255, (N, 3, 32, 32)).astype(np.float32)
    return X - X.mean(axis=0), rng.integers(0, C, N)


def _small_data(N=50, N_val=20):
    X, y = _images(N)
    X_val, y_val = _images(N_val, seed=1)
    return {"X_train": X, "y_train": y, "X_val": X_val, "y_val": y_val}


def _eight_features():
    """60 training and 20 validation rows of 8 random features, 3 classes."""
    rng = np.random.default_rng(0)
    return {"X_train": rng.standard_normal((60, 8)), "y_train": rng.integers(0, 3, 60),
            "X_val": rng.standard_normal((20, 8)), "y_val": rng.integers(0, 3, 20)}


def _small_problem(backend_name, dropout=0, **solver_kwargs):
    """A small net and Solver on 8-feature data, cheap enough for many runs."""
    model = anynet.FullyConnectedNet([16], input_dim=8, num_classes=3, weight_scale=0.3, seed=0, dropout=dropout,
                                     backend=backend_name)
    kwargs = dict(optim_config={"learning_rate": 0.1}, batch_size=10, num_epochs=4, verbose=False, seed=0)
    return model, anynet.Solver(model, _eight_features(), **{**kwargs, **solver_kwargs})


def test_three_layer_net_overfits_fifty_images(backend_name):
    model = anynet.FullyConnectedNet([100, 100], weight_scale=1e-2, seed=0, backend=backend_name)
    solver = anynet.Solver(model, _small_data(), update_rule="sgd", optim_config={"learning_rate": 1e-2},
                           num_epochs=20, batch_size=25, verbose=False, seed=0)
    solver.train()
    assert solver.train_acc_history[-1] == 1.0
    assert solver.loss_history[-1] < 0.1 * solver.loss_history[0]


def test_histories_and_learning_rate_decay(backend_name):
    model, solver = _small_problem(backend_name, lr_decay=0.5, num_train_samples=None)
    solver.train()
    assert solver.iterations_per_epoch == 6 and solver.num_iterations == 24
    assert len(solver.loss_history) == 24 and all(isinstance(v, float) for v in solver.loss_history)
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 5  # first iteration + 4 epoch ends
    assert all(c["learning_rate"] == 0.1 * 0.5**4 for c in solver.optim_configs.values())
    assert solver.best_val_acc == max(solver.val_acc_history)
    for k, v in model.params.items():
        np.testing.assert_array_equal(backends.to_numpy(v), backends.to_numpy(solver.best_params[k]))


def test_num_iterations_overrides_epochs(backend_name):
    _, solver = _small_problem(backend_name, num_iterations=9)
    solver.train()
    assert len(solver.loss_history) == 9
    assert len(solver.val_acc_history) == 3  # first iteration, one epoch end, last iteration


def test_same_seed_same_run(backend_name):
    runs = []
    for _ in range(2):
        model, solver = _small_problem(backend_name)
        solver.train()
        runs.append((solver.loss_history, solver.val_acc_history, backends.to_numpy(model.params["W1"])))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


def test_data_moves_to_the_device_once(xp, backend_name):
    _, solver = _small_problem(backend_name)
    assert backends.name_of(solver.X_train) == backend_name
    assert solver.X_train.dtype == xp.float32 and xp.isdtype(solver.y_train.dtype, "integral")


class _Stop(Exception):
    pass


@pytest.mark.parametrize("update_rule", ["sgd", "adam"])
def test_resume_equals_uninterrupted_run(tmp_path, backend_name, update_rule):
    model, solver = _small_problem(backend_name, update_rule=update_rule)
    solver.train()

    def stop_after_two_epochs(s, event):
        if event == "epoch" and s.epoch == 2:
            raise _Stop

    ckpt = tmp_path / "run"
    _, first = _small_problem(backend_name, update_rule=update_rule, checkpoint_name=ckpt,
                              callback=stop_after_two_epochs)
    with pytest.raises(_Stop):
        first.train()
    resumed_model, resumed = _small_problem(backend_name, update_rule=update_rule, seed=123)
    resumed.load_checkpoint(tmp_path / "run.npz")
    assert resumed.t == 12 and resumed.epoch == 2 and resumed.seed == solver.seed
    resumed.train()
    assert resumed.loss_history == solver.loss_history
    assert resumed.val_acc_history == solver.val_acc_history
    for k in model.params:
        np.testing.assert_array_equal(backends.to_numpy(resumed_model.params[k]), backends.to_numpy(model.params[k]))


def _stop_at(t):
    """A callback that stops training after iteration ``t``."""
    def callback(solver, event):
        if event == "iteration" and solver.t == t:
            raise _Stop
    return callback


def test_resume_from_a_checkpoint_written_inside_an_epoch(tmp_path, backend_name):
    # save_checkpoint is public: a callback may write one mid-epoch. The epoch's minibatch order is drawn
    # again from (seed, epoch), so a net without dropout ends exactly as the uninterrupted run.
    model, solver = _small_problem(backend_name)
    solver.train()

    def save_at_nine(s, event):
        if event == "iteration" and s.t == 9:  # 6 steps an epoch: inside the second one
            s.save_checkpoint(tmp_path / "mid.npz")
            raise _Stop

    _, first = _small_problem(backend_name, callback=save_at_nine)
    with pytest.raises(_Stop):
        first.train()
    resumed_model, resumed = _small_problem(backend_name)
    resumed.load_checkpoint(tmp_path / "mid.npz")
    assert resumed.t == 9 and resumed.epoch == 1
    resumed.train()
    assert resumed.loss_history == solver.loss_history
    for k in model.params:
        np.testing.assert_array_equal(backends.to_numpy(resumed_model.params[k]), backends.to_numpy(model.params[k]))


def test_resume_inside_an_epoch_with_dropout_goes_on_with_the_same_masks(tmp_path, backend_name):
    """A checkpoint written inside an epoch holds the random state the rest of the epoch draws from: on the same
    backend the resumed run draws the uninterrupted run's very dropout masks."""
    model, solver = _small_problem(backend_name, dropout=0.3)
    solver.train()

    def save_at_nine(s, event):
        if event == "iteration" and s.t == 9:
            s.save_checkpoint(tmp_path / "mid.npz")
            raise _Stop

    _, first = _small_problem(backend_name, dropout=0.3, callback=save_at_nine)
    with pytest.raises(_Stop):
        first.train()
    resumed_model, resumed = _small_problem(backend_name, dropout=0.3)
    resumed.load_checkpoint(tmp_path / "mid.npz")
    resumed.train()
    assert resumed.loss_history == solver.loss_history
    for k in model.params:
        np.testing.assert_array_equal(backends.to_numpy(resumed_model.params[k]), backends.to_numpy(model.params[k]))


def test_train_called_again_inside_an_epoch_goes_on_exactly(backend_name):
    # Stopped by an exception inside an epoch and called again, train() continues the epoch's minibatch
    # order and its dropout stream (it used to fall back to the model's fixed-seed masks).
    model, solver = _small_problem(backend_name, dropout=0.3)
    solver.train()
    stopped_model, stopped = _small_problem(backend_name, dropout=0.3, callback=_stop_at(9))
    with pytest.raises(_Stop):
        stopped.train()
    stopped.callback = None
    stopped.train()
    assert stopped.loss_history == solver.loss_history
    for k in model.params:
        np.testing.assert_array_equal(backends.to_numpy(stopped_model.params[k]), backends.to_numpy(model.params[k]))


def test_load_model_gives_best_parameters(tmp_path, backend_name):
    model, solver = _small_problem(backend_name, checkpoint_name=tmp_path / "ckpt")
    solver.train()
    loaded = anynet.load_model(tmp_path / "ckpt.npz", backend=backend_name)
    X = np.random.default_rng(5).standard_normal((7, 8))
    np.testing.assert_array_equal(backends.to_numpy(loaded.predict(X)), backends.to_numpy(model.predict(X)))


def test_keep_last_ends_with_the_last_steps_parameters(tmp_path, backend_name):
    best_model, best = _small_problem(backend_name, checkpoint_name=tmp_path / "best")
    best.train()
    assert best.val_acc_history[-1] < best.best_val_acc  # the last epoch is not the best: the two sets differ
    last_model, last = _small_problem(backend_name, checkpoint_name=tmp_path / "last", keep="last")
    last.train()
    X = np.random.default_rng(5).standard_normal((7, 8))

    def scores(model):
        return backends.to_numpy(model.predict(X))

    last_of_best = anynet.load_model(tmp_path / "best.npz", backend=backend_name, params="last")
    np.testing.assert_array_equal(scores(last_model), scores(last_of_best))
    np.testing.assert_array_equal(scores(best_model), scores(anynet.load_model(tmp_path / "last.npz",
                                                                               backend=backend_name)))
    assert not np.array_equal(scores(best_model), scores(last_model))
    with pytest.raises(ValueError, match="keep must be one of best, last; got 'final'"):
        _small_problem(backend_name, keep="final")
    with pytest.raises(ValueError, match="params must be one of best, last; got 'final'"):
        anynet.load_model(tmp_path / "best.npz", params="final")
    anynet.save_model(best_model, tmp_path / "model.npz")
    with pytest.raises(anynet.CheckpointError, match="is a saved model: it holds one set of parameters"):
        anynet.load_model(tmp_path / "model.npz", params="last")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_stops_with_iteration(tmp_path, backend_name):
    model, solver = _small_problem(backend_name, optim_config={"learning_rate": 1e30},
                                   checkpoint_name=tmp_path / "c")
    with pytest.raises(FloatingPointError, match=r"iteration \d+; last finite loss"):
        solver.train()
    assert all(np.isfinite(backends.to_numpy(v)).all() for v in solver.best_params.values())


def test_custom_update_rule_callable(backend_name):
    calls = []

    def halve(w, dw, config):
        calls.append(1)
        return w * 0.5, config

    model, solver = _small_problem(backend_name, update_rule=halve, num_iterations=2)
    solver.train()
    assert len(calls) == 2 * len(model.params)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"learning_rat": 1}, ValueError, "unknown Solver argument"),
        ({"update_rule": "sgdd"}, ValueError, "update_rule"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 1000}, ValueError, "larger than the training set"),
        ({"num_epochs": 2.5}, TypeError, "num_epochs"),
        ({"lr_decay": 0}, ValueError, "lr_decay"),
    ],
)
def test_solver_validates_arguments(change, error, match):
    with pytest.raises(error, match=match):
        _small_problem("numpy", **change)


def test_solver_validates_data():
    model = anynet.FullyConnectedNet([4], input_dim=8, num_classes=3)
    rng = np.random.default_rng(0)
    good = {"X_train": rng.standard_normal((10, 8)), "y_train": rng.integers(0, 3, 10),
            "X_val": rng.standard_normal((4, 8)), "y_val": rng.integers(0, 3, 4)}
    cases = [
        ({"y_train": np.full(10, 3)}, ValueError, r"outside \[0, 3\)"),
        ({"y_val": np.zeros(5, dtype=np.int64)}, ValueError, "y_val must have shape"),
        ({"X_train": np.full((10, 8), np.nan)}, ValueError, "NaN"),
        ({"y_train": np.zeros(10)}, TypeError, "integer"),
    ]
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            anynet.Solver(model, {**good, **change}, verbose=False)
    with pytest.raises(ValueError, match="missing X_val"):
        anynet.Solver(model, {k: v for k, v in good.items() if k != "X_val"})


# What waits on a GPU: copies to the host, Python scalars from arrays, and masked writes or reads, whose
# nonzero() must know the count on the host.
_WAITS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__setitem__",
          "nonzero")


@pytest.mark.parametrize("kind", ["two-layer, reg, sgd", "fc, batchnorm, dropout, fused adam"])
def test_a_training_step_asks_nothing_that_waits_on_the_device(backend_name, kind, monkeypatch):
    # Checked through PyTorch's tensor methods (on the CPU here): a step must not call any of them, not even
    # inside array-api-compat, or it would synchronize on CUDA (compat's sign() on PyTorch sets NaNs through
    # a mask, for one). benchmarks/sync_check.py checks the same on a GPU.
    if backend_name != "torch":
        pytest.skip("checked through PyTorch's tensor methods")
    import torch

    if kind.startswith("fc"):
        # The GPU path: one fused update (the backend's update_layout is "flat" on a GPU).
        monkeypatch.setattr(type(backends.get("torch")), "on_gpu", property(lambda self: True))
        model = anynet.FullyConnectedNet([16, 12], input_dim=8, num_classes=3, dropout=0.2, use_batchnorm=True,
                                         weight_scale=0.3, seed=0, backend="torch")
        rule = "adam"
    else:
        model = anynet.TwoLayerNet(input_dim=8, hidden_dims=16, num_classes=3, reg=0.1, seed=0, backend="torch")
        rule = "sgd"
    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((60, 8)), "y_train": rng.integers(0, 3, 60),
            "X_val": rng.standard_normal((20, 8)), "y_val": rng.integers(0, 3, 20)}
    # Eager steps, checked operation by operation (on_gpu, patched, would otherwise make compile="auto" compile).
    solver = anynet.Solver(model, data, update_rule=rule, optim_config={"learning_rate": 0.01}, batch_size=10,
                           num_epochs=1, verbose=False, seed=0, compile=False)
    solver.train()  # the first steps make cached constants and, fused, the flat layout
    solver._start_epoch(1)

    def waits(*args, **kwargs):
        raise AssertionError("a training step waited on the device")

    with monkeypatch.context() as patch:
        for name in _WAITS:
            patch.setattr(torch.Tensor, name, waits)
        patch.setattr(torch, "nonzero", waits)
        for _ in range(3):
            solver._step()
            solver.t += 1
    fused = any(group.layout == "flat" for group in solver.optimizer.plan.groups)
    assert fused == kind.startswith("fc")


def test_a_checkpoint_written_before_the_optimizer_state_was_redesigned_loads_and_continues():
    """tests/data/checkpoint-before-0.2.npz was written by anynet before this version (the course's per-parameter
    configs, Adam at t=10, two of four epochs); the -resumed file holds what that version's own resumed run
    ended with. This version continues from the old file to the same numbers."""
    from blobs import blobs

    data = Path(__file__).parent / "data"
    model = anynet.FullyConnectedNet([8, 5], input_dim=6, num_classes=3, weight_scale=0.3, seed=2, dtype="float64",
                                     use_batchnorm=True, backend="numpy")
    solver = anynet.Solver(model, blobs(), update_rule="adam", optim_config={"learning_rate": 1e-2}, lr_decay=0.8,
                           batch_size=20, num_epochs=4, verbose=False, seed=3)
    solver.load_checkpoint(data / "checkpoint-before-0.2.npz")
    assert solver.t == 10 and solver.optim_configs["W1"]["t"] == 10
    assert solver.optim_configs["b3"]["learning_rate"] == pytest.approx(1e-2 * 0.8**2)
    solver.train()
    expected = np.load(data / "checkpoint-before-0.2-resumed.npz")
    np.testing.assert_allclose(solver.loss_history, expected["loss_history"], rtol=1e-12)
    for k, w in model.params.items():
        np.testing.assert_allclose(w, expected[k], rtol=1e-10, atol=1e-12, err_msg=k)
