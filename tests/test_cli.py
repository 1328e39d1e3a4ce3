"""The ``anynet`` command and ``anynet.train`` end to end on a small generated CIFAR-10."""

import csv
import json
import os
import stat
import struct
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
from cifar_files import write_cifar10

import anynet
from anynet import cli
from anynet.checkpoint import load_npz
from anynet.data import get_cifar10_data
from anynet.train import DEFAULTS, applied_config, make_config, train
from benchmarks import bench

SIZES = ["--num-training", "150", "--num-validation", "50", "--num-test", "100"]
SMALL = ["--hidden-dims", "20", "--batch-size", "50", "--learning-rate", "1e-3", *SIZES]
FILES = ("metrics.json", "metrics.csv", "history.json", "loss.png", "accuracy.png", "weights.png", "checkpoint.npz",
         "model.npz")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A generated dataset: 200 training and 100 test images."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=40, n_test=100)
    return root


def anynet_cmd(*args, cwd=None):
    """Run ``python -m anynet ARGS``; return the completed process."""
    return subprocess.run([sys.executable, "-m", "anynet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_train_end_to_end(tmp_path, data_dir):
    out = tmp_path / "run"
    proc = anynet_cmd("train", "--data-dir", data_dir, *SMALL, "--epochs", "3", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    umask = os.umask(0o022)
    os.umask(umask)  # the child ran under this process's umask
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no temporary file left
    # One line per epoch with the accuracies and the speed, then the summary.
    assert "epoch 3/3: train acc" in proc.stderr and "images/s" in proc.stderr
    assert "val acc" in proc.stdout and "images/s" in proc.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert metrics["backend"] == "numpy" and metrics["device"] == "cpu"
    # Only what applied: epochs, and no "iterations: None" beside it.
    expected = {**DEFAULTS, "data_dir": str(data_dir), "hidden_dims": [20], "batch_size": 50,
                "epochs": 3, "num_training": 150, "num_validation": 50, "num_test": 100}
    del expected["iterations"]
    assert metrics["config"] == expected
    assert metrics["compile_seconds"] >= 0.0 and metrics["write_seconds"] >= 0.0
    assert metrics["iterations"] == 9 and metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0
    assert len(history["loss_history"]) == 9
    assert history["acc_iterations"] == [1, 3, 6, 9] and len(history["val_acc_history"]) == 4
    assert metrics["best_val_acc"] == max(history["val_acc_history"])
    # metrics.csv: one row per epoch; each loss is the mean of that epoch's losses in history.json.
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "iteration", "loss", "train_acc", "val_acc", "learning_rate", "seconds",
                             "images_per_second"]
    assert [(r["epoch"], int(r["iteration"])) for r in rows] == [("1", 3), ("2", 6), ("3", 9)]
    for e, row in enumerate(rows):
        assert float(row["loss"]) == pytest.approx(np.mean(history["loss_history"][3 * e:3 * e + 3]))
        assert float(row["learning_rate"]) == pytest.approx(1e-3 * 0.95**e)
        assert float(row["val_acc"]) == history["val_acc_history"][e + 1]
        assert float(row["seconds"]) > 0 and float(row["images_per_second"]) > 0
    # The generated classes are easy: training must have learned something.
    assert metrics["val_acc"] > 0.5 and metrics["test_acc"] > 0.5

    # Accuracies recomputed independently from the checkpoint and the data.
    model = anynet.load_model(out / "model.npz")
    d = get_cifar10_data(data_dir, 150, 50, 100, download=False)
    for split in ("val", "test"):
        scores = np.asarray(model.loss(d[f"X_{split}"]))
        assert metrics[f"{split}_acc"] == pytest.approx(np.mean(scores.argmax(axis=1) == d[f"y_{split}"]))

    proc = anynet_cmd("evaluate", out / "model.npz", "--num-test", "100")
    assert proc.returncode == 0, proc.stderr
    assert f"val acc {metrics['val_acc']:.4f} (50 images)" in proc.stdout
    assert f"test acc {metrics['test_acc']:.4f} (100 images)" in proc.stdout


def _corrupt_copy(tmp_path, data_dir):
    """A copy of the dataset with a truncated test batch."""
    folder = tmp_path / "bad" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for src in (data_dir / "cifar-10-batches-py").iterdir():
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:500])
    return folder.parent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size: expected a positive integer"),
        (["--learning-rate", "fast"], "--learning-rate/--lr: invalid positive number value: 'fast'"),
        (["--epochs", "2", "--iterations", "5"], "not allowed with argument"),
        (["--hidden-dims", "10", "10"], "--model two-layer takes one --hidden-dims value"),
        (["--batchnorm"], "--batchnorm needs --model fc"),
        (["--num-training", "190", "--num-validation", "20"], "num_training + num_validation must be at most 200"),
        (["--resume", "nowhere.npz"], "checkpoint nowhere.npz does not exist"),
        (["--data-dir", "CORRUPT"], "test_batch is truncated or corrupt"),
        (["--lr-decay", "2"], "lr_decay must be a number in (0, 1]"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, data_dir, args, message, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "CORRUPT" in args:
        args = [str(_corrupt_copy(tmp_path, data_dir)) if a == "CORRUPT" else a for a in args]
    else:
        args = ["--data-dir", str(data_dir), *SIZES, *args]
    assert cli.main(["train", *args, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_bad_flag_through_python_m(tmp_path):
    proc = anynet_cmd("train", "--batch-size", "-3", "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert proc.stderr == "anynet train: error: argument --batch-size: expected a positive integer; got -3 " \
        "(see anynet train --help)\n"


def test_unavailable_backend_exits_2(tmp_path, data_dir):
    missing = [b for b in anynet.BACKENDS if b not in anynet.available_backends()]
    if not missing:
        pytest.skip("every backend can run here")
    proc = anynet_cmd("train", "--backend", missing[0], "--data-dir", data_dir, *SMALL, "--out", tmp_path / "r")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"the {missing[0]} backend needs" in proc.stderr


def _final_state(out):
    """Checkpoint arrays and history of the run in ``out``."""
    with np.load(out / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return arrays, json.loads((out / "history.json").read_text())


def _assert_same_run(a, b):
    """Two runs ended with identical parameters, optimizer state and histories."""
    arrays_a, history_a = _final_state(a)
    arrays_b, history_b = _final_state(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for k in arrays_a:
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)
    assert history_a == history_b
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    for key in ("val_acc", "test_acc", "best_val_acc", "iterations"):
        assert metrics_a[key] == metrics_b[key]


FC = ["--model", "fc", "--hidden-dims", "16", "12", "--batchnorm", "--dropout", "0.3", "--update-rule", "adam",
      "--weight-scale", "1e-2", "--batch-size", "50", "--seed", "3", *SIZES, "--quiet"]


def test_resume_matches_an_uninterrupted_run(tmp_path, data_dir):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["train", "--data-dir", str(data_dir), *FC, "--epochs", "4", "--out", str(full)]) == 0
    assert cli.main(["train", "--data-dir", str(data_dir), *FC, "--epochs", "2", "--out", str(part)]) == 0
    # Resuming continues in the checkpoint's folder with the saved flags; only the length changes.
    assert cli.main(["train", "--resume", str(part / "checkpoint.npz"), "--epochs", "4", "--quiet"]) == 0
    _assert_same_run(full, part)
    assert len(json.loads((part / "history.json").read_text())["loss_history"]) == 12


def test_resume_from_a_run_that_stopped_mid_epoch(tmp_path, data_dir):
    # 3 iterations per epoch: a run of 5 iterations leaves the checkpoint of its last epoch end.
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--data-dir", str(data_dir), *SMALL, "--quiet"]
    assert cli.main(["train", *common, "--iterations", "8", "--out", str(full)]) == 0
    assert cli.main(["train", *common, "--iterations", "5", "--out", str(part)]) == 0
    assert load_npz(part / "checkpoint.npz")[1]["solver"]["t"] == 3
    assert cli.main(["train", "--resume", str(part / "checkpoint.npz"), "--iterations", "8", "--quiet"]) == 0
    _assert_same_run(full, part)


def test_resume_refuses_changed_flags(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data_dir), *SMALL, "--iterations", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    code = cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--learning-rate", "0.5", "--quiet"])
    assert code == 2
    assert "--learning-rate was 0.001 in" in capsys.readouterr().err


def test_train_function_with_loaded_data(data_dir, capsys):
    d = get_cifar10_data(data_dir, 150, 50, 0, download=False)
    metrics = train({"hidden_dims": 20, "batch_size": 50, "epochs": 2, "learning_rate": 1e-3}, data=d, quiet=True)
    assert capsys.readouterr() == ("", "")
    assert metrics["test_acc"] is None and metrics["checkpoint"] is None
    assert metrics["config"] == applied_config(make_config({"hidden_dims": [20], "batch_size": 50, "epochs": 2,
                                                            "learning_rate": 1e-3}))
    assert "iterations" not in metrics["config"]
    assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["iterations"] == 6
    with pytest.raises(ValueError, match="unknown config key"):
        train({"learning-rate": 1e-3}, data=d)


def test_subcommands_register_in_one_place():
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(cli.COMMANDS) <= set(choices)


def _python(code, **env):
    """Run ``code`` in a fresh interpreter; its stdout."""
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=environ).stdout.split()


def test_prepare_process_tells_openblas_to_sleep_before_numpy_loads_for_rules_with_state():
    code = ("import os, sys, anynet, anynet.cli; print('numpy' in sys.modules); anynet.cli.prepare_process({on}); "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(code.format(on=True)) == ["False", "4"]  # neither import loads NumPy
    assert _python(code.format(on=False)) == ["False", "None"]  # plain SGD would only pay the wake-ups
    assert _python(code.format(on=True), OPENBLAS_THREAD_TIMEOUT="20") == ["False", "20"]  # the user's value
    late = ("import numpy, os, anynet.cli; anynet.cli.prepare_process(True); "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(late) == ["None"]  # too late to matter: nothing set
    main = ("import os, anynet.cli\ntry:\n    anynet.cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(main.format(argv=["train", "--update-rule=rmsprop", "--help"]))[-1] == "4"
    assert _python(main.format(argv=["train", "--help"]))[-1] == "None"


def test_trains_with_state_reads_the_rule_or_the_resumed_checkpoint(tmp_path, data_dir):
    assert cli.trains_with_state(["train", "--update-rule", "adam"])
    assert not cli.trains_with_state(["train", "--update-rule", "sgd"])
    assert not cli.trains_with_state(["train", "--model", "fc"])  # the default rule is plain SGD
    assert cli.trains_with_state(["bench", "--model", "fc"]) and not cli.trains_with_state(["bench"])
    assert all(cli.trains_with_state(["bench", "--model", m]) == (rule != "sgd") for m, rule in bench.RULES.items())
    for rule, state in (("sgd", False), ("sgd_momentum", True)):
        out = tmp_path / rule
        assert cli.main(["train", "--update-rule", rule, "--out", str(out), "--epochs", "1", "--quiet",
                         "--data-dir", str(data_dir), *SMALL]) == 0
        assert cli.trains_with_state(["train", "--resume", str(out / "checkpoint.npz")]) == state
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert not cli.trains_with_state(["train", "--resume", str(tmp_path / "junk.npz")])
    assert not cli.trains_with_state(["train", "--resume", str(tmp_path / "missing.npz")])


def test_flag_value_reads_both_spellings_and_the_last_wins():
    assert cli.flag_value(["train", "--update-rule", "adam"], "--update-rule") == "adam"
    assert cli.flag_value(["--update-rule=adam", "--update-rule", "sgd"], "--update-rule") == "sgd"
    assert cli.flag_value(["--update-rule"], "--update-rule") is None
    assert cli.flag_value(["--update-rules", "x", "--model", "fc"], "--update-rule") is None
