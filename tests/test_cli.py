"""The ``anynet`` command and ``anynet.app.train`` end to end on a small generated CIFAR-10."""

import csv
import json
import os
import re
import shlex
import stat
import struct
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from cifar_files import write_cifar10

import anynet
from anynet.app import bench as bench_command
from anynet.app import cli, commands, flags, runs
from anynet.app.config import DEFAULTS, applied_config, make_config
from anynet.app.train import train
from anynet.data import get_cifar10_data
from anynet.training.checkpoint import load_npz
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
    # Only what applied: epochs, and no "iterations: None" beside it; the model's defaults, not other models' flags.
    expected = {**DEFAULTS, "data_dir": str(data_dir), "hidden_dims": [20], "batch_size": 50,
                "epochs": 3, "num_training": 150, "num_validation": 50, "num_test": 100, "weight_scale": 1e-3,
                "lr_decay": 0.95, "batchnorm": False, "dropout": 0.0}
    for key in ("iterations", "widths", "convs_per_stage", "pool_after", "filter_size", "label_smoothing", "precision"):
        del expected[key]
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
        (["--num-training", "190", "--num-validation", "20", "--batch-size", "50"],
         "num_training + num_validation must be at most 200"),
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


def test_resume_matches_an_uninterrupted_run(tmp_path, data_dir, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["train", "--data-dir", str(data_dir), *FC, "--epochs", "4", "--out", str(full)]) == 0
    assert re.search(r"^trained 4\.00 epochs \(12 iterations\) in ", capsys.readouterr().out, re.M)
    assert cli.main(["train", "--data-dir", str(data_dir), *FC, "--epochs", "2", "--out", str(part)]) == 0
    # Resuming continues in the checkpoint's folder with the saved flags; only the length changes.
    assert cli.main(["train", "--resume", str(part / "checkpoint.npz"), "--epochs", "4", "--quiet"]) == 0
    # The time it reports is its own, so it names the epochs it trained.
    assert re.search(r"^trained epochs 2\.00 to 4\.00 \(iterations 7 to 12\) in ", capsys.readouterr().out, re.M)
    assert json.loads((part / "metrics.json").read_text())["start_iteration"] == 6
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
    # metrics.csv: the row of the partial epoch (iteration 5) gave way to those trained after the checkpoint.
    rows = {name: list(csv.DictReader(open(out / "metrics.csv", newline=""))) for name, out in
            (("full", full), ("part", part))}
    assert [r["iteration"] for r in rows["part"]] == [r["iteration"] for r in rows["full"]] == ["3", "6", "8"]
    assert [r["epoch"] for r in rows["part"]] == ["1", "2", "2.67"]
    for a, b in zip(rows["full"], rows["part"], strict=True):
        assert [a[k] for k in ("loss", "train_acc", "val_acc", "learning_rate")] == \
            [b[k] for k in ("loss", "train_acc", "val_acc", "learning_rate")]


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


def test_prepare_process_tells_openblas_to_sleep_before_numpy_loads_for_rules_with_state(tmp_path):
    code = ("import os, sys, anynet, anynet.app.cli, anynet.app.process; print('numpy' in sys.modules); "
            "anynet.app.process.prepare_process({on}); print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(code.format(on=True)) == ["False", "4"]  # neither import loads NumPy
    assert _python(code.format(on=False)) == ["False", "None"]  # plain SGD would only pay the wake-ups
    assert _python(code.format(on=True), OPENBLAS_THREAD_TIMEOUT="20") == ["False", "20"]  # the user's value
    late = ("import numpy, os, anynet.app.process; anynet.app.process.prepare_process(True); "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(late) == ["None"]  # too late to matter: nothing set
    main = ("import os, anynet.app.cli\ntry:\n    anynet.app.cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert _python(main.format(argv=["train", "--update-rule=rmsprop", "--help"]))[-1] == "4"
    assert _python(main.format(argv=["train", "--help"]))[-1] == "None"
    # A config file's rule is read before NumPy loads too.
    (tmp_path / "best.json").write_text(json.dumps({"config": {"update_rule": "adam"}}))
    assert _python(main.format(argv=["train", "--config", str(tmp_path / "best.json"), "--help"]))[-1] == "4"


def test_bench_sets_up_its_own_process_for_the_rule_its_model_trains_with():
    # anynet bench runs benchmarks/bench.py as a program: that process, not anynet's, is set up for its model.
    script = str(Path(bench.__file__).resolve())
    code = ("import os, runpy, sys\nsys.argv = ['bench.py', *{argv!r}]\ntry:\n"
            "    runpy.run_path({script!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    assert bench.trains_with_state(["--model", "fc"]) and not bench.trains_with_state([])
    for model, rule in bench.RULES.items():
        assert bench.trains_with_state(["--model", model]) == (rule != "sgd")
        assert _python(code.format(argv=["--model", model, "--help"], script=script))[-1] == (
            "4" if rule != "sgd" else "None")


def test_trains_with_state_reads_the_rule_or_the_resumed_checkpoint(tmp_path, data_dir):
    assert flags.trains_with_state(["train", "--update-rule", "adam"])
    assert not flags.trains_with_state(["train", "--update-rule", "sgd"])
    assert not flags.trains_with_state(["train", "--model", "fc"])  # the default rule is plain SGD
    for rule, state in (("sgd", False), ("sgd_momentum", True)):
        out = tmp_path / rule
        assert cli.main(["train", "--update-rule", rule, "--out", str(out), "--epochs", "1", "--quiet",
                         "--data-dir", str(data_dir), *SMALL]) == 0
        assert flags.trains_with_state(["train", "--resume", str(out / "checkpoint.npz")]) == state
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert not flags.trains_with_state(["train", "--resume", str(tmp_path / "junk.npz")])
    assert not flags.trains_with_state(["train", "--resume", str(tmp_path / "missing.npz")])


def test_flag_value_reads_both_spellings_and_the_last_wins():
    assert flags.flag_value(["train", "--update-rule", "adam"], "--update-rule") == "adam"
    assert flags.flag_value(["--update-rule=adam", "--update-rule", "sgd"], "--update-rule") == "sgd"
    assert flags.flag_value(["--update-rule"], "--update-rule") is None
    assert flags.flag_value(["--update-rules", "x", "--model", "fc"], "--update-rule") is None


# --- flags: no prefixes, one name per concept -------------------------------------------------------------------


def _exit_code(argv):
    """Exit code of ``anynet ARGV``: returned, or raised by argparse as ``SystemExit``."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--lr-d", "0.9"],  # once read as --lr-decay
        ["train", "--learning", "1e-3"],
        ["train", "--hidden", "10"],
        ["evaluate", "model.npz", "--num-t", "5"],
        ["sweep", "--gri", "learning-rate=1e-3"],
        ["bench", "--iter", "3"],
        ["--vers"],
    ],
)
def test_no_subcommand_takes_a_flag_by_its_prefix(argv, capfd):
    assert _exit_code(argv) == 2
    err = capfd.readouterr().err  # anynet bench's own process writes to the file descriptor
    assert err.count("\n") == 1 and ("unrecognized arguments" in err or "required" in err), err


def test_lr_is_an_alias_of_learning_rate_not_a_prefix_of_lr_decay():
    args = cli.build_parser().parse_args(["train", "--lr", "3e-3"])
    assert flags.config_from_args(args) == {"learning_rate": 3e-3}


def _options(parser, command):
    sub = parser._subparsers._group_actions[0].choices[command]
    return {s for action in sub._actions for s in action.option_strings}


def _bench_options():
    """The flags of anynet bench: those of benchmarks/bench.py, the program it runs."""
    return {s for action in bench.build_parser()._actions for s in action.option_strings}


def test_subcommands_share_flag_names():
    parser = cli.build_parser()
    train_flags = _options(parser, "train")
    shared = {"--backend", "--device", "--hidden-dims", "--batch-size", "--iterations", "--seed", "--data-dir",
              "--num-training", "--compile", "--model"}
    assert shared <= train_flags and shared <= _bench_options()
    assert train_flags - {"--config", "--out", "--resume", "--tensorboard"} <= _options(parser, "sweep")
    assert {"--backend", "--device", "--data-dir", "--num-test"} <= _options(parser, "evaluate")
    every = set().union(_bench_options(), *(_options(parser, c) for c in ("train", "sweep", "evaluate")))
    assert not every & {"--hidden", "--data", "--num-train"}  # the old names of the same things


def test_compile_flag_is_recorded_and_checked(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data_dir), *SMALL, "--iterations", "3", "--compile", "off",
                     "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["compile"] == "off" and metrics["compile_seconds"] == 0.0
    assert "compiled in" not in capsys.readouterr().out  # only a run that compiled says so
    assert _exit_code(["train", "--compile", "maybe"]) == 2
    assert "--compile: invalid choice: 'maybe'" in capsys.readouterr().err


# --- the environment: ANYNET_BACKEND and ANYNET_DEVICE -----------------------------------------------------------


def test_anynet_backend_chooses_the_backend_and_a_flag_wins(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("ANYNET_BACKEND", "array_api_strict")
    common = ["train", "--data-dir", str(data_dir), *SMALL, "--iterations", "3", "--quiet"]
    assert cli.main([*common, "--out", str(tmp_path / "env")]) == 0
    assert json.loads((tmp_path / "env" / "metrics.json").read_text())["backend"] == "array_api_strict"
    assert cli.main([*common, "--backend", "numpy", "--out", str(tmp_path / "flag")]) == 0
    assert json.loads((tmp_path / "flag" / "metrics.json").read_text())["backend"] == "numpy"


def test_anynet_backend_and_device_reach_evaluate(tmp_path, trained, monkeypatch, capsys):
    monkeypatch.setenv("ANYNET_BACKEND", "array_api_strict")
    assert cli.main(["evaluate", str(trained / "model.npz")]) == 0
    assert "on array_api_strict " in capsys.readouterr().out
    assert cli.main(["evaluate", str(trained / "model.npz"), "--backend", "numpy"]) == 0
    assert "on numpy cpu" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("env", "parts"),
    [
        ({"ANYNET_BACKEND": "mxnet"}, ["ANYNET_BACKEND must be one of", "'mxnet'"]),
        ({"ANYNET_DEVICE": "cuda:7"}, ["'cuda:7'", "numpy", "ANYNET_DEVICE=cuda:7"]),
        ({"ANYNET_BACKEND": "UNAVAILABLE"}, ["pip install", "ANYNET_BACKEND="]),
    ],
)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_or_unavailable_backend_from_the_environment_is_one_line(env, parts, command, tmp_path, trained,
                                                                       monkeypatch, capsys):
    if env.get("ANYNET_BACKEND") == "UNAVAILABLE":
        missing = [b for b in anynet.BACKENDS if b not in anynet.available_backends()]
        if not missing:
            pytest.skip("every backend can run here")
        env = {"ANYNET_BACKEND": missing[0]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = (["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")] if command == "train"
            else ["evaluate", str(trained / "model.npz")])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)
    assert not (tmp_path / "run").exists()


# --- --version and info -----------------------------------------------------------------------------------------


def test_version_comes_from_the_installed_metadata(capsys, monkeypatch):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out == f"anynet {version('anynet')}\n"
    assert anynet.__version__ == version("anynet")
    proc = anynet_cmd("--version")
    assert proc.returncode == 0 and proc.stdout == f"anynet {anynet.__version__}\n"

    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert anynet._installed_version() == "0+unknown"


def test_info_lists_versions_backends_gpus_and_threads(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"anynet {anynet.__version__}"
    assert any(line.startswith("Python ") for line in lines)
    assert f"numpy {version('numpy')}" in out
    available = anynet.available_backends()
    for name in anynet.BACKENDS:
        (line,) = [line for line in lines if line.startswith(f"  {name} ")]
        if name in available:
            assert "yes, on" in line, line
        else:
            assert "no: " in line and ("pip install" in line or "GPU" in line), line  # the package, or a GPU
    assert any(line.startswith(("GPU 0: ", "GPUs: none visible")) for line in lines)
    assert any(line.startswith("CPU: ") for line in lines)
    assert any(line.startswith("threads: anynet ") for line in lines)


# --- bad input: one line, exit code 2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A finished run of 3 iterations (one epoch)."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["train", "--data-dir", str(data_dir), *SMALL, "--iterations", "3", "--quiet",
                     "--out", str(out)]) == 0
    return out


def test_resume_of_something_that_is_not_a_checkpoint_names_it(tmp_path, trained, capsys):
    good = (trained / "checkpoint.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    np.savez(tmp_path / "foreign.npz", w=np.ones(3))
    (tmp_path / "folder").mkdir()
    cases = {
        trained / "model.npz": "is a saved model, not a training checkpoint",
        trained / "metrics.json": "it is a JSON file",
        tmp_path / "truncated.npz": "it is a zip archive that is truncated or damaged",
        tmp_path / "foreign.npz": "is a .npz file that anynet did not write",
        tmp_path / "folder": "is a folder, not a checkpoint file",
        trained: f"did you mean {trained / 'checkpoint.npz'}",
    }
    for path, what in cases.items():
        assert cli.main(["train", "--resume", str(path), "--quiet"]) == 2, path
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and what in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "foreign.npz", "truncated.npz"]


def test_evaluate_refuses_a_model_of_another_input_size(tmp_path, capsys):
    path = tmp_path / "small.npz"
    anynet.save_model(anynet.TwoLayerNet(input_dim=100, hidden_dims=5), path)
    assert cli.main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "100 inputs per image" in err and "3072" in err


def test_the_light_configs_choices_are_the_librarys():
    from anynet.app import config
    from anynet.models import cnn
    from anynet.training import options

    assert config.KEEPS == options.KEEPS and config.DEFAULTS["keep"] == options.DEFAULTS["keep"]
    assert config.LR_SCHEDULES == ("none", *options.SCHEDULES)
    assert config.PRECISIONS == cnn.PRECISIONS


def test_keep_last_saves_and_measures_the_last_steps_parameters(tmp_path, data_dir, capsys):
    out = tmp_path / "last"
    assert cli.main(["train", "--data-dir", str(data_dir), *SMALL, "--learning-rate", "0.05", "--epochs", "3",
                     "--keep", "last", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["keep"] == "last"
    kept, last = anynet.load_model(out / "model.npz"), anynet.load_model(out / "checkpoint.npz", params="last")
    best = anynet.load_model(out / "checkpoint.npz")
    assert not all(np.array_equal(best.params[k], last.params[k]) for k in last.params)  # two different sets
    for k in last.params:
        np.testing.assert_array_equal(kept.params[k], last.params[k])
    data = get_cifar10_data(data_dir, 150, 50, 100)  # SIZES
    assert metrics["test_acc"] == float(np.mean(last.predict(data["X_test"]) == data["y_test"]))
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "checkpoint.npz"), "--params", "last"]) == 0
    assert f"test acc {metrics['test_acc']:.4f}" in capsys.readouterr().out
    assert cli.main(["evaluate", str(out / "model.npz"), "--params", "last"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a saved model: it holds one set of parameters" in err
    assert cli.main(["train", "--data-dir", str(data_dir), *SMALL, "--keep", "final", "--out", str(tmp_path)]) == 2
    assert "--keep: invalid choice: 'final'" in capsys.readouterr().err


def test_sweep_without_dask_names_the_extra(tmp_path, data_dir, monkeypatch, capsys):
    for name in ("dask", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    code = cli.main(["sweep", "--grid", "learning-rate=1e-3,2e-3", "--data-dir", str(data_dir), *SIZES,
                     "--out", str(tmp_path / "sweep"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "anynet[sweep]"' in err and "Traceback" not in err


def test_tensorboard_without_tensorboardx_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    assert cli.main(["train", "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "anynet[tensorboard]"' in err
    assert not (tmp_path / "run").exists()


def test_bench_outside_a_source_checkout_says_so(monkeypatch, capsys):
    monkeypatch.setattr(bench_command, "bench_script", lambda: None)
    assert cli.main(["bench", "--iterations", "3"]) == 2
    assert capsys.readouterr().err == ("anynet bench: error: anynet bench needs a source checkout of anynet "
                                       "(benchmarks/bench.py)\n")


# --- --config: retrain a run or a sweep's best trial ------------------------------------------------------------


def test_config_from_metrics_json_with_flags_that_override_it(tmp_path, trained, data_dir):
    source = json.loads((trained / "metrics.json").read_text())["config"]
    assert source["iterations"] == 3 and "epochs" not in source
    out = tmp_path / "longer"
    assert cli.main(["train", "--config", str(trained / "metrics.json"), "--iterations", "6", "--quiet",
                     "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"] == {**source, "iterations": 6}
    # A length flag of the other kind replaces the file's: epochs, and no iterations.
    out = tmp_path / "epochs"
    assert cli.main(["train", "--config", str(trained / "metrics.json"), "--epochs", "2", "--lr", "2e-3",
                     "--quiet", "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    expected = {k: v for k, v in source.items() if k != "iterations"}
    assert config == {**expected, "epochs": 2, "learning_rate": 2e-3}


def test_config_from_a_sweeps_best_json(tmp_path, data_dir):
    config = {"hidden_dims": [12], "learning_rate": 2e-3, "batch_size": 50, "epochs": 1, "num_training": 150,
              "num_validation": 50, "num_test": 0, "data_dir": str(data_dir), "update_rule": "sgd_momentum"}
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"trial": 4, "val_acc": 0.5, "test_acc": None,
                                "flags": {"learning_rate": 2e-3}, "config": config}))
    assert flags.trains_with_state(["train", "--config", str(best)])  # sgd_momentum keeps state
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(best), "--quiet", "--out", str(out)]) == 0
    recorded = json.loads((out / "metrics.json").read_text())["config"]
    assert {k: recorded[k] for k in config} == config
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 3


@pytest.mark.parametrize(
    ("content", "parts"),
    [
        (None, ["--config", "missing.json", "does not exist"]),
        ("{not json", ["--config", "bad.json", "is not valid JSON"]),
        ('{"val_acc": 0.5}', ["bad.json", 'holds no "config" object']),
        ('[1, 2]', ["bad.json", 'holds no "config" object']),
        ('{"config": {"learning-rate": 0.1}}', ["bad.json", "unknown key(s) learning-rate"]),
        ('{"config": {"batch_size": "big"}}', ["bad.json", "--batch-size: invalid positive integer value: 'big'"]),
        ('{"config": {"learning_rate": -1}}', ["bad.json", "--learning-rate", "expected a positive number"]),
        ("FOLDER", ["is a folder", "metrics.json"]),
    ],
)
def test_bad_config_files_are_one_line(content, parts, tmp_path, capsys):
    path = tmp_path / ("missing.json" if content is None else "bad.json")
    if content == "FOLDER":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)


def test_config_and_resume_together_are_refused(trained, capsys):
    assert cli.main(["train", "--config", str(trained / "metrics.json"), "--resume",
                     str(trained / "checkpoint.npz")]) == 2
    assert "give one of them" in capsys.readouterr().err


# --- a run you can watch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("every", "written_at"), [(0, [3, 6, 9, 9]), (1e9, [9])])
def test_history_and_plots_are_rewritten_at_epoch_ends_when_cheap(every, written_at, tmp_path, data_dir,
                                                                  monkeypatch):
    monkeypatch.setattr(runs, "_WRITE_EVERY", every)
    real = runs.write_history
    seen = []

    def spy(out_dir, history, model):
        seen.append(len(history["loss_history"]))
        real(out_dir, history, model)
        # What a watcher reads mid-run: whole files, the history so far.
        assert json.loads((out_dir / "history.json").read_text())["loss_history"] == history["loss_history"]

    monkeypatch.setattr(runs, "write_history", spy)
    d = get_cifar10_data(data_dir, 150, 50, 0, download=False)
    metrics = train({"hidden_dims": 20, "batch_size": 50, "epochs": 3}, out_dir=tmp_path, data=d, quiet=True)
    # Every epoch when writing is cheap next to training (every=0), else at the end only.
    assert seen == written_at
    assert metrics["write_seconds"] >= 0.0
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", newline="")))
    assert [int(r["iteration"]) for r in rows] == [3, 6, 9]  # metrics.csv gets every epoch regardless


def _read_events(folder):
    """``{tag: [(step, value)]}`` from the TensorBoard event files in ``folder`` (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_tensorboard_gets_every_loss_and_each_epochs_figures(tmp_path, data_dir):
    pytest.importorskip("tensorboardX")
    d = get_cifar10_data(data_dir, 150, 50, 0, download=False)
    board = tmp_path / "tb"
    train({"hidden_dims": 20, "batch_size": 50, "epochs": 2}, out_dir=tmp_path / "run", data=d, quiet=True,
          tensorboard=board)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    events = _read_events(board)
    assert [step for step, _ in events["train/loss"]] == list(range(1, 7))
    assert [v for _, v in events["train/loss"]] == pytest.approx(history["loss_history"], rel=1e-6)
    assert [step for step, _ in events["accuracy/val"]] == [3, 6]
    assert [v for _, v in events["accuracy/val"]] == pytest.approx(history["val_acc_history"][1:], rel=1e-6)
    assert [v for _, v in events["train/learning_rate"]] == pytest.approx([1e-3, 0.95e-3])


def test_config_of_an_older_metrics_json_keeps_the_length_that_applied(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"config": {**DEFAULTS, "epochs": 10, "iterations": 300}}))
    config = flags.read_config_file(path)
    assert config["iterations"] == 300 and "epochs" not in config
    assert config == {k: v for k, v in DEFAULTS.items() if k not in ("epochs", "iterations")} | {"iterations": 300}


def test_required_flags_say_so_in_help():
    parser = cli.build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.required and action.option_strings:  # positionals are required by their nature
                assert action.help.endswith("(required)"), (name, action.option_strings)
    demo = cli.ArgumentParser(prog="demo")
    demo.add_argument("--must", required=True, help="a flag")
    assert "a flag (required)" in demo.format_help()


def test_unknown_flags_are_reported_by_their_subcommand(capsys):
    assert cli.main(["evaluate", "model.npz", "--frobnicate"]) == 2
    assert capsys.readouterr().err == ("anynet evaluate: error: unrecognized arguments: --frobnicate "
                                       "(see anynet evaluate --help)\n")


def _readme_commands():
    """Every ``anynet SUBCOMMAND FLAGS...`` the README shows, in bash blocks or inline code, as argv lists."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"(?:^|\s)anynet ((?:train|evaluate|sweep|bench|info)\b[^#]*)", line)
            if match:
                found.append(match.group(1))
    found += re.findall(r"`anynet ((?:train|evaluate|sweep|bench|info)\b[^`]*)`", text)
    # A choice written as {auto,on,off} stands for each of its values: the first is parsed.
    return [[re.sub(r"^\{([^,}]*)[,}].*$", r"\1", token) for token in shlex.split(command)] for command in found]


def test_readme_commands_use_flags_the_parser_knows(capsys):
    commands = [argv for argv in _readme_commands() if len(argv) > 1 and "--help" not in argv and "..." not in argv]
    assert len(commands) >= 12 and {argv[0] for argv in commands} >= {"train", "evaluate", "sweep", "bench"}
    parser = cli.build_parser()
    for argv in commands:
        try:  # anynet bench passes its arguments to benchmarks/bench.py, whose parser takes them
            bench.build_parser().parse_args(argv[1:]) if argv[0] == "bench" else parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: anynet {' '.join(argv)}: {capsys.readouterr().err.strip()}")


def test_the_gpu_check_trains_with_flags_the_parser_knows():
    # The device run is rare and short: a flag renamed since would cost its whole recipe step.
    script = (Path(__file__).resolve().parents[1] / "backends" / "gpu-check.sh").read_text(encoding="utf-8")
    commands = re.findall(r"-m anynet (train .*?)(?<!\\)\n", script.replace("\\\n", " "), re.S)
    assert len(commands) == 1
    argv = ["DIR" if token.startswith("$") else token for token in shlex.split(commands[0])]  # shell variables
    args = vars(cli.build_parser().parse_args(argv))
    assert args["model"] == "cnn" and args["device"] == "cuda" and args["translate_test"] is True


def test_the_best_trial_of_a_sweep_trains_again_with_one_command(tmp_path, data_dir, capsys):
    sweep = tmp_path / "sweep"
    assert cli.main(["sweep", "--grid", "learning-rate=1e-3,2e-3", "--workers", "0", "--data-dir", str(data_dir),
                     *SIZES, "--hidden-dims", "12", "--batch-size", "50", "--iterations", "3", "--out", str(sweep),
                     "--quiet"]) == 0
    best = json.loads((sweep / "best.json").read_text())
    out = tmp_path / "again"
    assert cli.main(["train", "--config", str(sweep / "best.json"), "--iterations", "6", "--quiet",
                     "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["learning_rate"] == best["config"]["learning_rate"] and config["hidden_dims"] == [12]
    assert config["iterations"] == 6 and "epochs" not in config


def test_packaging_one_version_a_license_and_py_typed():
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["version"] == version("anynet") == anynet.__version__
    assert "__version__ = \"" not in (root / "anynet" / "__init__.py").read_text(encoding="utf-8")  # one source
    assert project["project"]["license"] == {"text": "MIT"}
    license_text = (root / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 anynet developers\n")
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["anynet"]
    assert (root / "anynet" / "py.typed").is_file()
    extras = project["project"]["optional-dependencies"]
    assert {"jax", "jax-cuda12", "jax-cuda13", "tensorboard", "sweep"} <= set(extras)
    assert any(req.startswith("optuna") for req in extras["sweep"])


def test_a_config_files_device_stays_with_its_backend(tmp_path, data_dir):
    config = {"backend": "torch", "device": "cuda:0", "hidden_dims": [12], "batch_size": 50, "iterations": 3,
              "num_training": 150, "num_validation": 50, "num_test": 0, "data_dir": str(data_dir)}
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"config": config}))
    out = tmp_path / "run"
    # Retrained on the CPU with a flag: the GPU worker's device is left behind with its backend.
    assert cli.main(["train", "--config", str(path), "--backend", "numpy", "--quiet", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "numpy" and metrics["config"]["device"] is None


def test_resume_drops_a_metrics_row_torn_by_a_crash(tmp_path, data_dir):
    out = tmp_path / "run"
    common = ["--data-dir", str(data_dir), *SMALL, "--quiet"]
    assert cli.main(["train", *common, "--iterations", "3", "--out", str(out)]) == 0
    header, row = (out / "metrics.csv").read_text().splitlines()
    assert row.startswith("1,3,")
    # Killed while appending the row of the epoch its checkpoint holds: the row is cut short.
    (out / "metrics.csv").write_text(f"{header}\n{row[:8]}")
    assert cli.main(["train", "--resume", str(out / "checkpoint.npz"), "--iterations", "6", "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv", newline="")))
    assert [r["iteration"] for r in rows] == ["6"] and None not in rows[0].values() and rows[0]["val_acc"]


def test_ctrl_c_outside_training_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_info", interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err == "anynet info: interrupted\n"


# --- --model cnn: a ConvNet from the command line -------------------------------------------------------------

CNN = ["--model", "cnn", "--widths", "4", "8", "--num-training", "40", "--num-validation", "20", "--num-test", "20",
       "--batch-size", "20", "--learning-rate", "0.05", "--quiet"]
# Every recipe flag: 2 iterations per epoch, so --warmup-epochs 1.5 is 3 warm-up iterations.
RECIPE = ["--augment", "--label-smoothing", "0.1", "--update-rule", "nesterov_sgd", "--lr-schedule", "cosine",
          "--warmup-epochs", "1.5", "--weight-decay", "1e-3", "--flip-test", "--translate-test"]


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, data_dir):
    """A ConvNet trained for 2 epochs (4 iterations) with every recipe flag."""
    out = tmp_path_factory.mktemp("cnn")
    assert cli.main(["train", "--data-dir", str(data_dir), *CNN, *RECIPE, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_cnn_trains_from_the_command_line_and_evaluates(cnn_run, capsys):
    assert sorted(p.name for p in cnn_run.iterdir()) == sorted(FILES)
    metrics = json.loads((cnn_run / "metrics.json").read_text())
    config = metrics["config"]
    assert {k: config[k] for k in ("model", "widths", "convs_per_stage", "filter_size", "batchnorm", "augment",
                                   "label_smoothing", "update_rule", "lr_schedule", "warmup_epochs", "weight_decay",
                                   "precision", "flip_test", "translate_test", "lr_decay", "weight_scale")} == {
        "model": "cnn", "widths": [4, 8], "convs_per_stage": 1, "filter_size": 3, "batchnorm": True, "augment": True,
        "label_smoothing": 0.1, "update_rule": "nesterov_sgd", "lr_schedule": "cosine", "warmup_epochs": 1.5,
        "weight_decay": 1e-3, "precision": "float32", "flip_test": True, "translate_test": True, "lr_decay": 1.0,
        "weight_scale": None}
    assert "hidden_dims" not in config and "dropout" not in config  # the FC nets' flags did not apply
    # The rate of each epoch's last step: warm-up over 3 steps, then the cosine over the last one.
    rows = list(csv.DictReader(open(cnn_run / "metrics.csv", newline="")))
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.05 * 2 / 3, 0.05])
    model = anynet.load_model(cnn_run / "model.npz")
    assert type(model).__name__ == "ConvNet" and model.params["W1"].shape == (4, 3, 3, 3)
    from matplotlib.image import imread

    assert min(imread(cnn_run / "weights.png").shape[:2]) > 100  # the 4 filters, enlarged
    capsys.readouterr()
    assert cli.main(["evaluate", str(cnn_run / "model.npz")]) == 0  # with the test-time views of training
    out = capsys.readouterr().out
    assert f"val acc {metrics['val_acc']:.4f} (20 images)" in out and f"test acc {metrics['test_acc']:.4f}" in out


def _view_accuracy(model, X, y, flip, translate):
    """NumPy reference of the accuracy on test-time views: mirror images, one-pixel shifts with zeros coming in."""
    def mirrored(images):
        scores = np.asarray(model.loss(images))
        return scores + np.asarray(model.loss(images[..., ::-1].copy())) if flip else scores

    scores = mirrored(X)
    if translate:
        padded = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
        scores = 2 * scores + mirrored(padded[..., :-2, :-2]) + mirrored(padded[..., 2:, 2:])
    return float(np.mean(scores.argmax(axis=1) == y))


def test_evaluate_averages_the_views_of_training_or_those_asked_for(cnn_run, trained, data_dir, capsys):
    from anynet.app.evaluate import evaluate

    data = get_cifar10_data(data_dir, 40, 20, 20)
    X, y = data["X_test"], data["y_test"]
    model = anynet.load_model(cnn_run / "model.npz")
    assert evaluate(cnn_run / "model.npz")["test_acc"] == _view_accuracy(model, X, y, True, True)
    plain = evaluate(cnn_run / "model.npz", flip_test=False, translate_test=False)["test_acc"]
    assert plain == _view_accuracy(model, X, y, False, False)
    with pytest.raises(TypeError, match="translate_test must be True, False or None; got 1"):
        evaluate(cnn_run / "model.npz", translate_test=1)
    # A run trained without them, asked on the command line.
    model = anynet.load_model(trained / "model.npz")
    data = get_cifar10_data(data_dir, 150, 50, 100)  # SIZES
    X, y = data["X_test"], data["y_test"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(trained / "model.npz"), "--flip-test", "--translate-test"]) == 0
    assert f"test acc {_view_accuracy(model, X, y, True, True):.4f}" in capsys.readouterr().out


def test_cnn_resumes_as_if_never_stopped(tmp_path, data_dir, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    flags = ["--data-dir", str(data_dir), *CNN, "--augment", "--weight-decay", "1e-3", "--update-rule", "adamw"]
    assert cli.main(["train", *flags, "--iterations", "4", "--out", str(full)]) == 0
    assert cli.main(["train", *flags, "--iterations", "2", "--out", str(part)]) == 0
    assert cli.main(["train", "--resume", str(part / "checkpoint.npz"), "--iterations", "4", "--quiet"]) == 0
    _assert_same_run(full, part)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(part / "checkpoint.npz"), "--widths", "4", "16", "--quiet"]) == 2
    assert "--widths was [4, 8] in" in capsys.readouterr().err


def test_a_cnn_schedule_keeps_its_length_on_resume(cnn_run, capsys):
    assert cli.main(["train", "--resume", str(cnn_run / "checkpoint.npz"), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr-schedule cosine of" in err and "keeps that length" in err


def test_config_of_a_cnn_run_and_of_an_fc_run_as_a_cnn(cnn_run, trained, tmp_path):
    source = json.loads((cnn_run / "metrics.json").read_text())["config"]
    out = tmp_path / "again"
    assert cli.main(["train", "--config", str(cnn_run / "metrics.json"), "--iterations", "1", "--quiet",
                     "--out", str(out)]) == 0
    expected = {k: v for k, v in source.items() if k != "epochs"}
    assert json.loads((out / "metrics.json").read_text())["config"] == {**expected, "iterations": 1}
    # A two-layer run's file with --model cnn: its hidden layers stay behind with its model.
    out = tmp_path / "fc-as-cnn"
    assert cli.main(["train", "--config", str(trained / "metrics.json"), "--model", "cnn", "--widths", "4",
                     "--quiet", "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["widths"] == [4] and "hidden_dims" not in config and config["batchnorm"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "fc", "--widths", "8"], "--widths needs --model cnn; --model fc does not take it"),
        (["--convs-per-stage", "2"], "--convs-per-stage needs --model cnn; --model two-layer does not take it"),
        (["--model", "cnn", "--hidden-dims", "10"], "--hidden-dims needs --model two-layer or fc; --model cnn"),
        (["--model", "cnn", "--dropout", "0.5"], "--dropout needs --model two-layer or fc; --model cnn"),
        (["--model", "fc", "--label-smoothing", "0.1"], "--label-smoothing needs --model cnn; --model fc"),
        (["--model", "cnn", "--precision", "bfloat16", "--backend", "numpy"],
         "--precision bfloat16 needs a backend with bfloat16 (--backend torch or jax); the numpy backend has none"),
        (["--model", "cnn", "--precision", "bfloat16", "--dtype", "float64"], "it needs --dtype float32"),
        (["--model", "cnn", "--filter-size", "4"], "--filter-size: expected an odd positive integer; got 4"),
        (["--model", "cnn", "--widths", "8", "8", "8", "8", "8", "8"], "they must be multiples of 64"),
        (["--model", "cnn", "--compile", "on", "--backend", "numpy"], "--compile on cannot be honoured"),
        (["--model", "cnn", "--label-smoothing", "1"], "label_smoothing must be a number in [0.0, 1.0)"),
    ],
)
def test_flags_a_model_does_not_take_are_one_line_before_any_data(args, message, tmp_path, capsys):
    # An empty data folder: the flags are refused before the data would be looked for (or downloaded).
    assert _exit_code(["train", "--data-dir", str(tmp_path), *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert sorted(tmp_path.iterdir()) == []


def _readme_recipe():
    """The flags of the README's CNN recipe (its command after "### The recipe"), without ``--data-dir DIR``."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("### The recipe"):].split("```bash\n", 1)[1].split("```", 1)[0]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:2] == ["anynet", "train"] and argv[-2:] == ["--data-dir", "DIR"], argv
    return argv[2:-2]


def test_the_readme_cnn_recipe_parses_and_builds_its_model(data_dir, capsys):
    recipe = _readme_recipe()
    config = make_config(flags.config_from_args(cli.build_parser().parse_args(["train", *recipe])))
    assert config["lr_decay"] == 1.0 and config["batchnorm"] is True and config["augment"] is True
    assert config["weight_decay"] > 0 and config["pool_after"] == 1 and config["precision"] == "bfloat16"
    model = anynet.app.train.build_model({**config, "backend": "numpy", "precision": "float32", "device": None})
    assert model.params["W4"].shape == (128, 128, 3, 3) and len(model.weight_names) == 7
    # On numpy (which compiles nothing, in float32) and for one step, every other flag passes and only the tiny
    # data is too small.
    drop = {"--epochs": 1, "--compile": 1, "--precision": 1}
    argv = [a for i, a in enumerate(recipe) if a not in drop and recipe[i - 1] not in drop]
    argv[argv.index("torch")] = "numpy"
    assert cli.main(["train", *argv, "--iterations", "1", "--num-training", "512", "--data-dir", str(data_dir),
                     "--quiet"]) == 2
    assert "num_training + num_validation must be at most 200" in capsys.readouterr().err


def test_evaluate_refuses_a_cnn_of_other_images(tmp_path, capsys):
    path = tmp_path / "gray.npz"
    anynet.save_model(anynet.models.ConvNet(widths=(2,), input_dim=(1, 32, 32)), path)
    assert cli.main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a model of 1x32x32 images; CIFAR-10 images are 3x32x32" in err
