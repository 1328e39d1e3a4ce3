"""A run resumed as a user would: on another backend or device, with the compiling the new backend can do.

And a run that diverges, on every backend: it keeps what it learned.

The tests that pair numpy with another backend take that backend from the
``backend_name`` fixture, so each runs in that backend's nox session (numpy is
always there); in numpy's own session they skip. Each trains a small fully
connected net with batch normalization for one epoch on one backend, then
goes on for a second epoch on the same backend and on the other one.
"""

import json
import shutil

import numpy as np
import pytest
from cifar_files import write_cifar10

from anynet import backends
from anynet.app import cli
from anynet.training.checkpoint import load_npz, save_npz

SIZES = ["--num-training", "150", "--num-validation", "50", "--num-test", "0", "--batch-size", "25"]
FC = ["--model", "fc", "--hidden-dims", "16", "12", "--batchnorm", "--update-rule", "sgd_momentum", "--weight-scale",
      "1e-2", "--dtype", "float32", "--seed", "4", *SIZES, "--quiet"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A generated dataset: 200 training and 20 test images."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=40, n_test=20)
    return root


@pytest.fixture
def no_plots(monkeypatch):
    """The runs draw no loss, accuracy and weight plots: most of the time of runs this small."""
    from anynet.data import vis

    monkeypatch.setattr(vis, "plot_history", lambda *args, **kwargs: None)
    monkeypatch.setattr(vis, "plot_weights", lambda *args, **kwargs: None)


def _pair(backend_name, direction):
    """(old backend, new backend) of a move between numpy and ``backend_name``."""
    if backend_name == "numpy":
        pytest.skip("pairs numpy with another backend: runs in that backend's session")
    return ("numpy", backend_name) if direction == "from numpy" else (backend_name, "numpy")


def _train_then_resume_on_both(data_dir, tmp_path, old, new, flags):
    """Train one epoch on ``old``; go on to two on ``old`` and, from a copy, on ``new``. Returns both folders."""
    first, same, moved = tmp_path / "first", tmp_path / "same", tmp_path / "moved"
    # Where the old backend compiles, the run records --compile on: the new one takes what it can of it.
    compiles = ["--compile", "on"] if backends.get(old).can_compile else []
    assert cli.main(["train", "--data-dir", str(data_dir), *flags, "--backend", old, *compiles, "--epochs", "1",
                     "--out", str(first)]) == 0
    shutil.copytree(first, same)
    shutil.copytree(first, moved)
    # On torch the run that goes on where it was runs eagerly: compiling its step again takes longer than its epoch
    # (jax's eager operations each compile on first use: there compiling the step is the cheaper).
    eager = ["--compile", "off"] if compiles and old == "torch" else []
    assert cli.main(["train", "--resume", str(same / "checkpoint.npz"), "--epochs", "2", *eager, "--quiet"]) == 0
    assert cli.main(["train", "--resume", str(moved / "checkpoint.npz"), "--backend", new, "--epochs", "2",
                     "--quiet"]) == 0
    return same, moved


def _state(folder):
    """The arrays of a run's checkpoint, its metrics and history."""
    arrays, _ = load_npz(folder / "checkpoint.npz")
    return (arrays, json.loads((folder / "metrics.json").read_text()),
            json.loads((folder / "history.json").read_text()))


@pytest.mark.parametrize("direction", ["from numpy", "to numpy"])
def test_a_run_resumed_on_another_backend_matches_one_resumed_on_its_own(backend_name, direction, data_dir, tmp_path,
                                                                         capsys, no_plots):
    old, new = _pair(backend_name, direction)
    same, moved = _train_then_resume_on_both(data_dir, tmp_path, old, new, [*FC, "--learning-rate", "5e-2"])
    err = capsys.readouterr().err
    arrays, metrics, history = _state(moved)
    ref_arrays, ref_metrics, ref_history = _state(same)
    assert metrics["backend"] == new and ref_metrics["backend"] == old
    assert metrics["iterations"] == ref_metrics["iterations"] == 12
    if backends.get(old).can_compile and not backends.get(new).can_compile:
        # The recorded --compile on became auto on the new backend, and one line said so before training.
        assert err.count("\n") == 1 and "was trained with --compile on; the numpy backend runs steps eagerly, so the " \
            "run goes on with --compile auto" in err, err
        assert metrics["config"]["compile"] == "auto"
    else:
        assert err == ""
    # Parameters, batch normalization statistics and optimizer state after one more epoch: float32 rounding apart.
    # (The biases before batch normalization hold rounding noise only, of about 1e-10: the absolute tolerance.)
    assert sorted(arrays) == sorted(ref_arrays)
    moved_state = [k for k in ref_arrays if k.startswith(("params/", "bn/", "optim/"))]
    assert any(k.startswith("bn/") for k in moved_state) and any(k.startswith("optim/") for k in moved_state)
    for key in moved_state:
        np.testing.assert_allclose(arrays[key], ref_arrays[key], rtol=1e-3, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(history["loss_history"], ref_history["loss_history"], rtol=1e-3)
    assert len(history["loss_history"]) == 12 and history["acc_iterations"] == ref_history["acc_iterations"]


def test_with_dropout_a_run_resumed_on_another_backend_goes_on_and_learns(backend_name, data_dir, tmp_path, no_plots):
    old, new = _pair(backend_name, "from numpy")
    same, moved = _train_then_resume_on_both(data_dir, tmp_path, old, new,
                                             [*FC, "--learning-rate", "5e-2", "--dropout", "0.3"])
    arrays, metrics, history = _state(moved)
    _, ref_metrics, _ = _state(same)
    # The masks of the second epoch come from the new backend's generator: another run, as good.
    assert metrics["backend"] == new and metrics["iterations"] == 12 and len(history["loss_history"]) == 12
    assert all(np.isfinite(history["loss_history"]))
    assert 0.25 <= metrics["val_acc"] and abs(metrics["val_acc"] - ref_metrics["val_acc"]) <= 0.2, \
        (metrics["val_acc"], ref_metrics["val_acc"])


def test_a_run_resumed_on_another_device_goes_on(data_dir, tmp_path, no_plots):
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data_dir), *FC, "--epochs", "1", "--out", str(out)]) == 0
    assert cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--device", "cpu", "--epochs", "2",
                     "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 12 and metrics["config"]["device"] == "cpu"


def test_a_recorded_compile_on_becomes_auto_where_the_backend_cannot_compile(data_dir, tmp_path, capsys, no_plots):
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data_dir), *FC, "--epochs", "1", "--out", str(out)]) == 0
    # As a run on a compiling backend records it (torch or jax need not be installed here).
    ckpt = out / "checkpoint.npz"
    arrays, meta = load_npz(ckpt)
    meta["metadata"]["config"].update(backend="jax", device="TFRT_CPU_0", compile="on")
    save_npz(ckpt, arrays, meta)
    capsys.readouterr()
    # Given again by hand, --compile on is refused on numpy in one line, as for a new run.
    assert cli.main(["train", "--resume", str(ckpt), "--backend", "numpy", "--compile", "on", "--quiet"]) == 2
    assert "--compile on cannot be honoured: the numpy backend runs steps eagerly" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(ckpt), "--backend", "numpy", "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err == (f"anynet train: {ckpt} was trained with --compile on; the numpy backend runs steps eagerly, so "
                   "the run goes on with --compile auto\n")
    metrics = json.loads((out / "metrics.json").read_text())
    # The jax device went with the jax backend; the run went on on numpy's.
    assert metrics["config"]["compile"] == "auto" and metrics["backend"] == "numpy" and metrics["device"] == "cpu"
    assert metrics["config"]["device"] is None and metrics["iterations"] == 12


def test_a_run_that_diverges_keeps_what_it_learned(backend_name, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    model = out / "model.npz"
    # As a user found it (jax, compiled: --compile auto compiles there), with a learning rate far too large.
    code = cli.main(["train", "--data-dir", str(data_dir), "--backend", backend_name, "--hidden-dims", "16",
                     "--learning-rate", "1e4", *SIZES, "--epochs", "2", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("anynet train: failed: loss became ") and f"anynet evaluate {model}; train again " \
        "with a lower --learning-rate (was 10000)" in err, err
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert metrics["status"] == "diverged" and metrics["backend"] == backend_name and metrics["model"] == str(model)
    assert metrics["diverged"]["iteration"] == len(history["loss_history"]) + 1 <= 12
    assert metrics["best_val_acc"] == max(history["val_acc_history"]) and (out / "loss.png").is_file()
    assert cli.main(["evaluate", str(model), "--backend", backend_name]) == 0
    assert f"val acc {metrics['val_acc']:.4f}" in capsys.readouterr().out
