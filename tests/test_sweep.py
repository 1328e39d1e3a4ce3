"""Sweeps: grids, the results table, and trials on a LocalCluster and on a real scheduler with workers."""

import csv
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from functools import partial

import numpy as np
import pytest
from cifar_files import write_cifar10

from anynet import load_model
from anynet.app.cli import main as cli_main
from anynet.app.sweep import run_trial, sweep
from anynet.app.sweep import trials as trials_module
from anynet.app.sweep.grid import LOG_KEYS, expand_grid, parse_grid, sample_grid
from anynet.app.sweep.results import map_cells, read_results, write_results
from anynet.app.sweep.search import Space, make_sampler
from anynet.app.train import Diverged, StopRun, train
from anynet.training.checkpoint import load_npz

try:
    import cloudpickle
    import distributed
except ImportError:  # the Dask tests skip; the rest need no Dask
    distributed = None
else:
    # Workers unpickle the trial functions below by value: they cannot import this test module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
needs_dask = pytest.mark.skipif(distributed is None, reason='needs Dask: pip install "anynet[sweep]"')
# Trials train on NumPy whatever the session, so the nox sessions of other backends leave this file to numpy's.
_WANTED = [b for b in os.environ.get("ANYNET_TEST_BACKENDS", "").split(",") if b]
pytestmark = pytest.mark.skipif(bool(_WANTED) and "numpy" not in _WANTED,
                                reason="backend-independent; runs in the numpy session")

GRID = ["learning-rate=5e-4,1.5e-3", "hidden-dims=5,40", "batch-size=50,1000"]


def _base(root):
    """A train config small enough that a trial takes well under a second."""
    return {
        "data_dir": str(root), "num_training": 150, "num_validation": 50, "num_test": 100, "hidden_dims": [20],
        "epochs": 1, "batch_size": 50, "dtype": "float64", "weight_scale": 1e-2,
    }


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A generated CIFAR-10 folder of 200 training and 100 test images."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_batch=40, n_test=100)
    return root


@pytest.fixture(scope="module")
def reference(data_root):
    """The rows of ``GRID`` run one after another in this process, without Dask."""
    return sweep(GRID, _base(data_root), workers=0)


@pytest.fixture(scope="module")
def small_reference(data_root):
    """The rows of the first two keys of ``GRID`` run in this process."""
    return sweep(GRID[:2], _base(data_root), workers=0)


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes on 127.0.0.1."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _results(rows):
    """What a trial's outcome is, without where or how fast it ran."""
    return [(r["trial"], r["status"], r["val_acc"], r["test_acc"]) for r in rows]


# ---- grids ------------------------------------------------------------------------------------------------------


def test_parse_grid_types_values_and_accepts_both_spellings():
    grid = parse_grid(["--learning-rate=1e-4,1e-3", "lr_decay=0.9", "hidden-dims=50,100x100",
                       "batchnorm=true,no", "update-rule=sgd,adam", "batch-size=100,2e2"])
    assert grid == {
        "learning_rate": [1e-4, 1e-3], "lr_decay": [0.9], "hidden_dims": [(50,), (100, 100)],
        "batchnorm": [True, False], "update_rule": ["sgd", "adam"], "batch_size": [100, 200],
    }
    assert all(isinstance(v, int) for v in grid["batch_size"])
    assert parse_grid({"learning-rate": 0.01, "hidden_dims": [100, 50]}) == {
        "learning_rate": [0.01], "hidden_dims": [(100, 50)]}


def test_parse_grid_takes_the_cnn_flags():
    grid = parse_grid(["widths=32x64x128,64x128x256", "label-smoothing=0,0.1", "weight-decay=5e-4",
                       "lr-schedule=none,cosine", "convs-per-stage=1,2", "augment=on", "warmup-epochs=1"])
    assert grid == {
        "widths": [(32, 64, 128), (64, 128, 256)], "label_smoothing": [0.0, 0.1], "weight_decay": [5e-4],
        "lr_schedule": ["none", "cosine"], "convs_per_stage": [1, 2], "augment": [True], "warmup_epochs": [1.0],
    }
    assert parse_grid({"widths": [16, 32]}) == {"widths": [(16, 32)]}  # one network, as for hidden_dims
    assert "weight_decay" in LOG_KEYS


@pytest.mark.parametrize("specs, words", [
    (["lr=1e-3"], "'lr' is not a train flag"),
    (["learning-rate"], "name=v1,v2"),
    (["reg=0.1", "reg=0.2"], "given twice"),
    (["reg=high"], "reg must be a number"),
    (["batch-size=1.5"], "batch_size must be an integer"),
    (["hidden-dims=100x0"], "widths joined by x"),
    (["reg="], "no values"),
    ([], "at least one flag"),
])
def test_parse_grid_names_what_is_wrong(specs, words):
    with pytest.raises(ValueError, match=words):
        parse_grid(specs)


def test_expand_grid_gives_every_combination_once():
    grid = parse_grid(["learning-rate=1e-4,1e-3,2e-3", "lr-decay=0.9,0.95", "reg=0.1,0.25"])
    points = expand_grid(grid)
    expected = {(a, b, c) for a in (1e-4, 1e-3, 2e-3) for b in (0.9, 0.95) for c in (0.1, 0.25)}
    assert len(points) == 12
    assert {(p["learning_rate"], p["lr_decay"], p["reg"]) for p in points} == expected


def test_sample_grid_is_seeded_and_stays_in_range():
    grid = parse_grid(["learning-rate=1e-4,1e-2", "lr-decay=0.9,0.99", "batch-size=50,400",
                       "update-rule=sgd,adam", "reg=0.1"])
    points = sample_grid(grid, 50, seed=3)
    assert points == sample_grid(grid, 50, seed=3)
    assert points != sample_grid(grid, 50, seed=4)
    for p in points:
        assert 1e-4 <= p["learning_rate"] <= 1e-2 and 0.9 <= p["lr_decay"] <= 0.99
        assert isinstance(p["batch_size"], int) and 50 <= p["batch_size"] <= 400
        assert p["update_rule"] in ("sgd", "adam") and p["reg"] == 0.1


def test_sample_grid_is_log_uniform_for_rates_and_uniform_otherwise():
    assert {"learning_rate", "reg", "weight_scale"} <= LOG_KEYS and "lr_decay" not in LOG_KEYS
    low, high = 1e-5, 1e-1
    points = sample_grid(parse_grid([f"learning-rate={low},{high}", "lr-decay=0.5,1.0"]), 4000, seed=0)
    lr = np.array([p["learning_rate"] for p in points])
    decay = np.array([p["lr_decay"] for p in points])
    # Under log-uniform draws each decade holds a quarter of the points; uniform draws put ~90% in the top one.
    for lo in (1e-5, 1e-4, 1e-3, 1e-2):
        share = np.mean((lr >= lo) & (lr < lo * 10))
        assert abs(share - 0.25) < 0.03, (lo, share)
    for q in (0.6, 0.75, 0.9):
        assert abs(np.mean(decay < q) - (q - 0.5) / 0.5) < 0.03


def test_sample_grid_refuses_a_log_range_through_zero():
    with pytest.raises(ValueError, match="reg is sampled log-uniformly"):
        sample_grid(parse_grid(["reg=0,0.5"]), 3)
    with pytest.raises(ValueError, match="positive integer"):
        sample_grid(parse_grid(["reg=0.1,0.5"]), 0)


# ---- the results table ------------------------------------------------------------------------------------------


def _row(trial, lr, val_acc, status="ok"):
    """A finished row as the sweep records it."""
    config = {"learning_rate": lr, "hidden_dims": [50]}
    return {"trial": trial, "learning_rate": lr, "hidden_dims": [50], "val_acc": val_acc, "test_acc": 0.5,
            "train_seconds": 1.5, "images_per_second": 1000.0, "worker": "w", "attempts": 1, "status": status,
            "error": "" if status == "ok" else "ValueError: no", "config": config}


def test_results_files_hold_every_row_and_the_best(tmp_path):
    rows = [_row(2, 1e-3, 0.4), _row(0, 1e-4, 0.3), _row(1, 3e-3, None, status="error")]
    write_results(tmp_path, rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "results.csv", "results.json"]
    assert read_results(tmp_path) == sorted(rows, key=lambda r: r["trial"])
    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == ["0", "1", "2"]
    assert [r["learning_rate"] for r in table] == ["0.0001", "0.003", "0.001"]
    assert table[0]["hidden_dims"] == "50" and table[1]["val_acc"] == "" and table[1]["status"] == "error"
    assert float(table[2]["val_acc"]) == 0.4
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["trial"] == 2 and best["val_acc"] == 0.4 and best["config"]["learning_rate"] == 1e-3


def test_in_process_sweep_records_failures_writes_everything_and_resumes(data_root, reference, tmp_path):
    calls = []

    def counting(config, **kwargs):
        calls.append(config["learning_rate"])
        return run_trial(config, **kwargs)

    out = tmp_path / "sweep"
    rows = sweep(GRID[:2], _base(data_root), workers=0, out_dir=out, trial=counting)
    assert len(calls) == 4 and [r["status"] for r in rows] == ["ok"] * 4
    assert [r["worker"] for r in rows] == ["in-process"] * 4
    assert (out / "val_acc.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "val_acc_map.png").read_bytes()[:4] == b"\x89PNG"  # two flags swept: the map too
    # Every trial trained into its own run folder, with what anynet train writes.
    assert [r["run_dir"] for r in rows] == [f"trials/{i:04d}" for i in range(4)]
    for row in rows:
        folder = out / row["run_dir"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["val_acc"] == row["val_acc"] and metrics["config"]["learning_rate"] == row["learning_rate"]
        assert {"history.json", "metrics.csv", "checkpoint.npz"} <= {p.name for p in folder.iterdir()}
    best = json.loads((out / "best.json").read_text())
    model = load_model(out / best["run_dir"] / "model.npz")
    assert model.params["W1"].shape[1] == best["config"]["hidden_dims"][0] == best["flags"]["hidden_dims"][0]
    assert best["config"] == rows[best["trial"]]["config"]
    # best.json is a config for anynet train: the best trial trains again to the same accuracy.
    assert cli_main(["train", "--config", str(out / "best.json"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["val_acc"] == best["val_acc"]
    with pytest.raises(ValueError, match="already holds the results"):
        sweep(GRID[:2], _base(data_root), workers=0, out_dir=out)
    # Resuming the full grid runs only the trials not yet recorded, and numbers them as the grid does.
    calls.clear()
    rows = sweep(GRID, _base(data_root), workers=0, out_dir=out, trial=counting, resume=True)
    assert len(calls) == 4
    assert _results(rows) == _results(reference)
    failed = [r for r in rows if r["status"] == "error"]
    assert [r["config"]["batch_size"] for r in failed] == [1000] * 4
    assert all("batch_size" in r["error"] and r["val_acc"] is None for r in failed)
    assert _results(read_results(out)) == _results(reference)
    best = json.loads((out / "best.json").read_text())
    ok = [r for r in reference if r["status"] == "ok"]
    assert best["val_acc"] == max(r["val_acc"] for r in ok)


def test_the_command_runs_a_sweep_and_reports_mistakes_in_one_line(data_root, small_reference, tmp_path, capsys):
    out = tmp_path / "cli"
    flags = ["--data-dir", str(data_root), "--num-training", "150", "--num-validation", "50", "--num-test", "100",
             "--hidden-dims", "20", "--epochs", "1", "--batch-size", "50", "--dtype", "float64",
             "--weight-scale", "1e-2"]
    code = cli_main(["sweep", "--grid", *GRID[:2], "--workers", "0", "--quiet",
                     "--out", str(out), *flags])
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 trials, 0 failed" in printed and "best: trial" in printed
    rows = read_results(out)
    assert [r["config"]["hidden_dims"] for r in rows] == [[5], [40]] * 2
    assert all(r["config"]["weight_scale"] == 1e-2 for r in rows)
    assert _results(rows) == _results(small_reference)
    # Resuming a finished sweep trains nothing and reports the same table.
    mtime = (out / "results.json").stat().st_mtime_ns
    code = cli_main(["sweep", "--grid", *GRID[:2], "--workers", "0", "--quiet", "--resume", str(out), *flags])
    assert code == 0 and "4 trials, 0 failed" in capsys.readouterr().out
    assert (out / "results.json").stat().st_mtime_ns == mtime
    code = cli_main(["sweep", "--grid", "lr=1", "--workers", "0", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'lr' is not a train flag" in err


def test_random_points_are_trained_seeded_and_inside_the_grid(data_root):
    grid = ["learning-rate=1e-4,1e-2", "hidden-dims=5,40"]
    rows = sweep(grid, _base(data_root), workers=0, sampler="random", trials=3, random_seed=7)
    with pytest.warns(DeprecationWarning, match="sampler='random', trials=N"):
        again = sweep(grid, _base(data_root), workers=0, random=3, random_seed=7)
    assert len(rows) == 3 and _results(rows) == _results(again)
    assert [r["learning_rate"] for r in rows] == [r["learning_rate"] for r in again]
    assert all(1e-4 <= r["learning_rate"] <= 1e-2 and r["hidden_dims"] in ([5], [40]) for r in rows)
    assert all(r["config"]["learning_rate"] == r["learning_rate"] for r in rows)
    assert len({r["learning_rate"] for r in rows}) == 3


# ---- Dask -------------------------------------------------------------------------------------------------------


def _anynet_threads():
    """On a worker: the CPU threads anynet's own parallel work may use there."""
    from anynet.backends import numpy as numpy_backend

    return numpy_backend.threads()


def _data_loads():
    """How often this worker process loaded each data config."""
    return dict(trials_module._DATA_LOADS)


@needs_dask
def test_local_cluster_matches_in_process_and_loads_data_once_per_worker(client, data_root, reference, tmp_path):
    client.wait_for_workers(2, timeout=30)
    rows = sweep(GRID, _base(data_root), client=client, out_dir=tmp_path)
    assert _results(rows) == _results(reference)
    assert sum(r["status"] == "error" for r in rows) == 4
    workers = set(client.scheduler_info()["workers"])
    assert {r["worker"] for r in rows} <= workers
    assert all(r["attempts"] == 1 for r in rows)
    assert _results(read_results(tmp_path)) == _results(reference)
    loads = client.run(_data_loads)
    assert loads and all(count == 1 for per_worker in loads.values() for count in per_worker.values())
    assert set(client.run(_anynet_threads).values()) == {1}  # no update threads beside the other workers'


def _stall_once(marker, config):
    """Run the trial; but the first run of the trial at learning rate 1.5e-3, 40 hidden units waits to be killed.

    Takes the config alone, as trials did before they had run folders: the sweep still calls it.
    """
    if config["learning_rate"] == 1.5e-3 and config["hidden_dims"] == [40] and not os.path.exists(marker):
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        time.sleep(60)
        raise RuntimeError("this worker should have been killed")
    return run_trial(config)


@needs_dask
def test_killing_a_worker_mid_trial_reruns_its_trial_elsewhere(client, data_root, small_reference, tmp_path):
    client.wait_for_workers(2, timeout=30)
    marker = str(tmp_path / "pid")
    killed = []

    def kill_when_stalled():
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.path.exists(marker):
            pid = int(open(marker).read())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    killer.start()
    grid = GRID[:2]
    rows = sweep(grid, _base(data_root), client=client, trial=partial(_stall_once, marker))
    killer.join(timeout=5)
    assert len(killed) == 1
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert _results(rows) == _results(small_reference)
    stalled = rows[3]
    assert (stalled["learning_rate"], stalled["hidden_dims"]) == (1.5e-3, [40])
    assert stalled["attempts"] == 2
    # A trial that finished on the killed worker just before, its result not yet fetched, is run again too.
    assert all(r["attempts"] in (1, 2) for r in rows[:3])


# ---- a real scheduler and workers -------------------------------------------------------------------------------


def _free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log):
    """Start ``python -m dask ...`` in its own process group, logging to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc):
    """Stop ``proc`` and its children: SIGTERM, then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@needs_dask
def test_sweep_by_address_on_a_dask_scheduler_and_two_dask_workers(data_root, small_reference, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    log = open(tmp_path / "dask.log", "wb")
    procs = []
    try:
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                             "--no-dashboard"], log))
        for name in ("a", "b"):
            procs.append(_start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--name", name,
                                 "--no-dashboard"], log))
        with distributed.Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
            workers = set(c.scheduler_info()["workers"])
        grid = GRID[:2]
        rows = sweep(grid, _base(data_root), scheduler=address, out_dir=tmp_path / "out")
        assert _results(rows) == _results(small_reference)
        assert {r["worker"] for r in rows} <= workers
        assert len(read_results(tmp_path / "out")) == 4
    except BaseException:
        log.flush()
        print((tmp_path / "dask.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        for proc in reversed(procs):
            _stop(proc)
        log.close()
    assert all(proc.poll() is not None for proc in procs)


def test_rows_are_finite_and_rates_positive(reference):
    ok = [r for r in reference if r["status"] == "ok"]
    assert ok and all(math.isfinite(r["val_acc"]) and 0 <= r["val_acc"] <= 1 for r in ok)
    assert all(r["train_seconds"] > 0 and r["images_per_second"] > 0 for r in ok)


# ---- search: Optuna samplers and the median pruner ------------------------------------------------------------

needs_optuna = pytest.mark.skipif(importlib.util.find_spec("optuna") is None,
                                  reason='needs optuna: pip install "anynet[sweep]"')


def test_train_stops_at_the_epoch_on_epoch_says_and_keeps_what_it_has(data_root, tmp_path):
    seen = []

    def stop_after_first(row):
        seen.append(row)
        if row["epoch"] >= 1:
            raise StopRun("enough")

    metrics = train({**_base(data_root), "epochs": 3}, out_dir=tmp_path, data=None, quiet=True,
                    on_epoch=stop_after_first)
    assert metrics["stopped"] == "enough" and metrics["iterations"] == 3 and metrics["epochs"] == 1
    assert [(r["epoch"], r["iteration"]) for r in seen] == [(1, 3)]
    assert 0 <= seen[0]["val_acc"] <= 1 and seen[0]["train_acc"] is not None
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["stopped"] == "enough" and saved["epochs"] == 1
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["val_acc_history"][-1] == seen[0]["val_acc"]
    assert load_model(tmp_path / "model.npz").params["W1"].shape == (3072, 20)
    assert train({**_base(data_root), "epochs": 2}, quiet=True, on_epoch=seen.append)["stopped"] is None


@pytest.fixture
def no_run_plots(monkeypatch):
    """Trials in this process draw no loss, accuracy and weight plots: most of a tiny trial's time."""
    from anynet.data import vis

    monkeypatch.setattr(vis, "plot_history", lambda *args, **kwargs: None)
    monkeypatch.setattr(vis, "plot_weights", lambda *args, **kwargs: None)


@pytest.fixture
def no_plots(no_run_plots, monkeypatch):
    """No plots at all: neither the trials' nor the sweep's (for tests that run many small sweeps)."""
    from anynet.app.sweep import runner

    monkeypatch.setattr(runner, "plot_results", lambda *args, **kwargs: None)


def _fake_trial(config, out_dir=None, on_epoch=None):
    """A trial of 3 epochs whose validation accuracy is its learning rate; train_seconds counts the epochs run."""
    value, epochs, stopped = config["learning_rate"], 0, None
    try:
        for epoch in (1, 2, 3):
            epochs = epoch
            if on_epoch is not None:
                on_epoch({"epoch": epoch, "iteration": 10 * epoch, "val_acc": value, "train_acc": value, "loss": 1.0})
    except StopRun as exc:
        stopped = str(exc)
    return {"val_acc": value, "test_acc": value, "train_seconds": float(epochs), "images_per_second": 1.0,
            "stopped": stopped}


def _check_pruning(rows, out_dir, sequential):
    """Pruned trials stopped below the median of the finished trials; the study holds what each trial reported.

    Run one after another, a trial meets the pruner at epoch 1 only once the
    first third of the trials have finished, and stops there if it is below
    their median. In parallel the trials finished at each decision vary, so
    it may stop at any epoch, below the median of those finished by then.
    """
    import optuna

    study = optuna.load_study(study_name="anynet-sweep", storage=f"sqlite:///{out_dir / 'study.db'}")
    frozen = {t.number: t for t in study.trials}
    assert {r["trial"] for r in rows} == set(frozen)
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and max(rows, key=lambda r: r["learning_rate"])["status"] == "ok"
    for row in rows:
        t = frozen[row["trial"]]
        epochs = int(row["train_seconds"])
        assert epochs == 3 if row["status"] == "ok" else f"pruned at epoch {epochs} " in row["error"]
        # The values reached the study from wherever the trial ran, one per epoch it trained.
        assert t.intermediate_values == {step: row["learning_rate"] for step in range(1, epochs + 1)}
        assert t.state.name == ("PRUNED" if row["status"] == "pruned" else "COMPLETE")
    for row in pruned:
        before = [r["learning_rate"] for r in rows if r["status"] == "ok"
                  and frozen[r["trial"]].datetime_complete < frozen[row["trial"]].datetime_complete]
        assert before and row["learning_rate"] < float(np.median(before))
        if sequential:
            assert row["train_seconds"] == 1


@needs_optuna
def test_median_pruner_stops_trials_below_the_median_in_process(tmp_path):
    grid = ["learning-rate=0.9,0.8,0.3,0.25,0.2,0.15,0.1"]
    rows = sweep(grid, {}, workers=0, sampler="grid", prune=True, trial=_fake_trial, out_dir=tmp_path, plot=False)
    assert sorted(r["learning_rate"] for r in rows) == [0.1, 0.15, 0.2, 0.25, 0.3, 0.8, 0.9]
    _check_pruning(rows, tmp_path, sequential=True)


@needs_optuna
@needs_dask
def test_pruning_decisions_reach_trials_on_two_dask_workers(client, tmp_path):
    client.wait_for_workers(2, timeout=30)
    grid = ["learning-rate=0.9,0.8,0.3,0.25,0.2,0.15,0.1"]
    rows = sweep(grid, {}, client=client, sampler="grid", prune=True, trial=_fake_trial, out_dir=tmp_path, plot=False)
    assert len(rows) == 7 and {r["worker"] for r in rows} <= set(client.scheduler_info()["workers"])
    _check_pruning(rows, tmp_path, sequential=False)
    # The queues that carried the reports and decisions are gone from the scheduler.
    assert client.run_on_scheduler(_sweep_queues) == []


def _sweep_queues(dask_scheduler):
    """The names of the anynet sweep queues the scheduler holds."""
    return [name for name in dask_scheduler.extensions["queues"].queues if name.startswith("anynet-sweep-")]


@needs_optuna
def test_resuming_a_search_that_crashed_settles_the_trials_it_left_running(tmp_path):
    import optuna

    grid = ["learning-rate=0.9,0.8,0.3,0.2"]
    sweep(grid, {}, workers=0, sampler="grid", prune=True, trials=2, trial=_fake_trial, out_dir=tmp_path,
          plot=False)
    # A crash: trial 2 was training, and trial 3 had its row written but the study not yet told.
    space = Space(parse_grid(grid), "grid")
    study = optuna.load_study(study_name="anynet-sweep", storage=f"sqlite:///{tmp_path / 'study.db'}",
                              sampler=make_sampler(space, seed=0, trials=4))
    study.ask(space.distributions)
    finished = study.ask(space.distributions)
    rows = read_results(tmp_path)
    rows.append({**rows[0], "trial": finished.number, "learning_rate": finished.params["learning_rate"],
                 "val_acc": finished.params["learning_rate"]})
    write_results(tmp_path, rows)
    rows = sweep(grid, {}, workers=0, sampler="grid", prune=True, trials=4, trial=_fake_trial, out_dir=tmp_path,
                 resume=True, plot=False)
    # Trial 2 is not dropped: its row says lost and points to its folder; its point trained again as trial 4.
    assert [r["trial"] for r in rows] == [0, 1, 2, 3, 4]
    lost = rows[2]
    assert lost["status"] == "lost" and lost["run_dir"] == "trials/0002" and "queued to train again" in lost["error"]
    assert lost["learning_rate"] == rows[4]["learning_rate"]
    assert sorted(r["learning_rate"] for r in rows if r["status"] != "lost") == [0.2, 0.3, 0.8, 0.9]
    assert read_results(tmp_path) == rows
    states = {t.number: t.state.name for t in optuna.load_study(
        study_name="anynet-sweep", storage=f"sqlite:///{tmp_path / 'study.db'}").trials}
    assert states[2] == "FAIL" and states[3] == "COMPLETE" and "RUNNING" not in states.values()


@needs_optuna
def test_tpe_search_trains_in_the_ranges_keeps_pruned_runs_and_resumes_its_study(data_root, tmp_path, no_run_plots):
    grid = ["learning-rate=1e-5,1e-2", "reg=1e-3,1", "hidden-dims=20"]
    base = {**_base(data_root), "epochs": 2}
    calls = []

    def counting(config, **kwargs):
        calls.append(config)
        return run_trial(config, **kwargs)

    rows = sweep(grid, base, workers=0, sampler="tpe", trials=4, prune=True, out_dir=tmp_path, trial=counting,
                 random_seed=1)
    assert len(calls) == 4 and (tmp_path / "study.db").exists()
    assert [r["trial"] for r in rows] == list(range(4))
    for r in rows:
        assert 1e-5 <= r["learning_rate"] <= 1e-2 and 1e-3 <= r["reg"] <= 1 and r["hidden_dims"] == [20]
        assert r["config"]["learning_rate"] == r["learning_rate"] and r["config"]["epochs"] == 2
    pruned = [r for r in rows if r["status"] == "pruned"]
    assert pruned and rows[0]["status"] == "ok"  # the first one sets the median
    for r in pruned:
        metrics = json.loads((tmp_path / r["run_dir"] / "metrics.json").read_text())
        assert metrics["stopped"] == r["error"] and metrics["epochs"] < 2
        assert (tmp_path / r["run_dir"] / "model.npz").exists()
    assert (tmp_path / "val_acc_map.png").read_bytes()[:4] == b"\x89PNG"
    # --resume continues the study up to the new total; the same search with other flags is refused.
    calls.clear()
    more = sweep(grid, base, workers=0, sampler="tpe", trials=5, prune=True, out_dir=tmp_path, trial=counting,
                 resume=True, random_seed=1)
    assert len(calls) == 1 and [r["trial"] for r in more] == list(range(5))
    assert _results(more[:4]) == _results(rows)
    with pytest.raises(ValueError, match="these differ: --sampler"):
        sweep(grid, base, workers=0, sampler="random", trials=9, prune=True, out_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="holds an Optuna study"):
        sweep(grid[:2], base, workers=0, out_dir=tmp_path, resume=True)


def test_map_cells_are_the_best_of_each_grid_cell_and_none_for_scattered_points():
    rows = [dict(_row(i, lr, acc), reg=reg) for i, (lr, reg, acc) in enumerate(
        [(1e-3, 0.1, 0.4), (1e-3, 0.5, 0.3), (1e-4, 0.1, 0.2), (1e-4, 0.1, 0.25), (1e-4, 0.5, None)])]
    rows[4]["status"] = "error"
    xs, ys, acc, notes = map_cells(rows, "learning_rate", "reg")
    assert xs == ["0.0001", "0.001"] and ys == ["0.1", "0.5"]
    assert acc[0] == [0.25, 0.4] and acc[1][1] == 0.3 and math.isnan(acc[1][0])
    assert notes == [["", ""], ["error", ""]]
    scattered = [dict(_row(i, 10.0 ** -i, 0.1 * i), reg=0.1 * i) for i in range(1, 6)]
    assert map_cells(scattered, "learning_rate", "reg") is None


def test_sweep_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_results(tmp_path, [_row(0, 1e-3, 0.4)])
    finally:
        os.umask(old)
    for name in ("results.csv", "results.json", "best.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("module, args", [
    ("distributed", ["--workers", "1"]),
    ("optuna", ["--workers", "0", "--sampler", "tpe", "--trials", "2"]),
    ("optuna", ["--workers", "0", "--prune"]),
])
def test_a_missing_dependency_is_one_line_naming_the_extra(module, args, data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    code = cli_main(["sweep", "--grid", "learning-rate=1e-3,2e-3", "--data-dir", str(data_root),
                     "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install "anynet[sweep]"' in err and module in err
    assert not (tmp_path / "out" / "results.json").exists()


@needs_optuna
def test_the_command_checks_sampler_flags_and_keeps_random_as_an_alias(data_root, tmp_path, capsys, no_run_plots):
    flags = ["--data-dir", str(data_root), "--num-training", "150", "--num-validation", "50", "--num-test", "100",
             "--hidden-dims", "20", "--epochs", "1", "--batch-size", "50", "--workers", "0", "--quiet"]
    grid = ["--grid", "learning-rate=1e-4,1e-2"]
    assert cli_main(["sweep", *grid, "--sampler", "tpe", "--out", str(tmp_path / "a"), *flags]) == 2
    assert "needs the number of trials (--trials N)" in capsys.readouterr().err
    assert cli_main(["sweep", *grid, "--trials", "3", "--out", str(tmp_path / "b"), *flags]) == 2
    assert "at most the grid's 2 points" in capsys.readouterr().err
    assert cli_main(["sweep", *grid, "--random", "2", "--out", str(tmp_path / "c"), *flags]) == 0
    out = capsys.readouterr()
    assert "--random is deprecated; use --sampler random --trials 2" in out.err and "2 trials, 0 failed" in out.out
    rows = read_results(tmp_path / "c")
    assert (tmp_path / "c" / "val_acc.png").exists() and not (tmp_path / "c" / "val_acc_map.png").exists()
    assert cli_main(["sweep", *grid, "--sampler", "tpe", "--trials", "2", "--prune", "--out", str(tmp_path / "d"),
                     *flags]) == 0
    assert re.search(r"^2 trials, 0 failed, [012] pruned; results in ", capsys.readouterr().out, re.M)
    assert len(read_results(tmp_path / "d")) == 2 and (tmp_path / "d" / "study.db").exists()
    again = sweep(["learning-rate=1e-4,1e-2"], {**_base(data_root), "hidden_dims": [20]}, workers=0,
                  sampler="random", trials=2)
    assert [r["learning_rate"] for r in rows] == [r["learning_rate"] for r in again]


# ---- ConvNets ---------------------------------------------------------------------------------------------------


def test_a_cnn_sweep_runs_and_its_best_trial_trains_again(data_root, tmp_path, capsys):
    out = tmp_path / "cnn"
    flags = ["--model", "cnn", "--data-dir", str(data_root), "--num-training", "40", "--num-validation", "20",
             "--num-test", "0", "--batch-size", "20", "--iterations", "2", "--learning-rate", "0.05"]
    assert cli_main(["sweep", "--grid", "widths=4x8,8", "weight-decay=1e-3", "--workers", "0", "--quiet",
                     "--out", str(out), *flags]) == 0
    assert "2 trials, 0 failed" in capsys.readouterr().out
    rows = read_results(out)
    assert [r["config"]["widths"] for r in rows] == [[4, 8], [8]]
    assert all(r["config"]["model"] == "cnn" and r["config"]["weight_decay"] == 1e-3 for r in rows)
    assert all((out / r["run_dir"] / "weights.png").is_file() for r in rows)
    assert cli_main(["train", "--config", str(out / "best.json"), "--iterations", "1", "--out", str(tmp_path / "again"),
                     "--quiet"]) == 0
    config = json.loads((tmp_path / "again" / "metrics.json").read_text())["config"]
    assert config["widths"] == json.loads((out / "best.json").read_text())["config"]["widths"]
    # A flag the model does not take is refused before any trial runs.
    assert cli_main(["sweep", "--grid", "hidden-dims=10,20", "--workers", "0", "--out", str(tmp_path / "x"),
                     *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hidden-dims needs --model two-layer or fc; --model cnn" in err
    assert not (tmp_path / "x").exists()


# ---- resuming from the folder alone, and trials that diverged or were cut short --------------------------------


def _flags(root):
    """``_base`` as command-line flags."""
    return ["--data-dir", str(root), "--num-training", "150", "--num-validation", "50", "--num-test", "100",
            "--hidden-dims", "20", "--epochs", "1", "--batch-size", "50", "--dtype", "float64", "--weight-scale",
            "1e-2"]


def test_resume_dir_alone_goes_on_with_what_the_sweep_recorded(data_root, tmp_path, capsys, no_plots):
    out = tmp_path / "sweep"
    started = ["--grid", *GRID[:2], "--trials", "2", "--random-seed", "3", *_flags(data_root)]
    assert cli_main(["sweep", *started, "--workers", "0", "--quiet", "--out", str(out)]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["grid"] == {"learning_rate": [5e-4, 1.5e-3], "hidden_dims": [[5], [40]]}
    assert (record["sampler"], record["trials"], record["random_seed"], record["workers"]) == ("grid", 2, 3, 0)
    assert record["train_flags"]["hidden_dims"] == [20] and record["train_flags"]["data_dir"] == str(data_root)
    first = read_results(out)
    capsys.readouterr()
    # What would change what the sweep trains is refused in one line naming the flag and its recorded value.
    for extra, part in [(["--hidden-dims", "30"], "--hidden-dims was 20 when the sweep in"),
                        (["--grid", "learning-rate=1e-3"], "--grid was learning-rate=0.0005,0.0015 hidden-dims=5,40"),
                        (["--trials", "1"], "--trials was 2"), (["--sampler", "random"], "--sampler was grid"),
                        (["--random-seed", "4"], "--random-seed was 3"), (["--reg", "0.5"], "--reg was not given"),
                        (["--iterations", "3"], "--epochs was 1"), (["--prune"], "--prune was not given")]:
        assert cli_main(["sweep", "--resume", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and part in err and "beside --resume give only --trials (more)" in err, err
    assert read_results(out) == first
    # The whole command again, as before sweeps kept a record, goes on too (here with nothing left to train).
    assert cli_main(["sweep", *started, "--workers", "0", "--quiet", "--resume", str(out)]) == 0
    assert "2 trials, 0 failed" in capsys.readouterr().out
    # More trials, reading the data from elsewhere: the trials done keep their points and numbers; two more train.
    elsewhere = tmp_path / "data"
    shutil.copytree(data_root, elsewhere)
    assert cli_main(["sweep", "--resume", str(out), "--trials", "4", "--data-dir", str(elsewhere), "--quiet"]) == 0
    assert "4 trials, 0 failed" in capsys.readouterr().out
    rows = read_results(out)
    assert rows[:2] == first and [r["trial"] for r in rows] == [0, 1, 2, 3]
    assert [r["config"]["data_dir"] for r in rows] == [str(data_root)] * 2 + [str(elsewhere)] * 2
    assert sorted((r["learning_rate"], r["hidden_dims"]) for r in rows) == sorted(
        (p["learning_rate"], list(p["hidden_dims"])) for p in expand_grid(parse_grid(GRID[:2])))
    record = json.loads((out / "sweep.json").read_text())
    assert (record["trials"], record["first_trials"], record["train_flags"]["data_dir"]) == (4, 2, str(elsewhere))
    # And then --resume DIR alone: the sweep is done.
    assert cli_main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert "4 trials, 0 failed" in capsys.readouterr().out and read_results(out) == rows


def test_a_folder_without_a_record_resumes_only_with_the_flags_it_was_started_with(data_root, tmp_path, capsys,
                                                                                 no_plots):
    out = tmp_path / "older"
    started = ["--grid", GRID[0], *_flags(data_root), "--workers", "0", "--quiet"]
    assert cli_main(["sweep", *started, "--out", str(out)]) == 0
    (out / "sweep.json").unlink()  # as an older anynet left it
    capsys.readouterr()
    assert cli_main(["sweep", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "started by an older anynet, which did not record its flags (sweep.json)" in err
    assert "resume it with the flags it was started with: --grid" in err
    assert cli_main(["sweep", *started, "--resume", str(out)]) == 0 and (out / "sweep.json").is_file()
    assert cli_main(["sweep", "--resume", str(tmp_path / "nothing")]) == 2
    assert "holds no sweep to resume (no sweep.json)" in capsys.readouterr().err
    # A sweep that died before its first trial finished left its record only: without --resume it is refused.
    (out / "results.json").unlink()
    assert cli_main(["sweep", *started, "--out", str(out)]) == 2
    assert "already holds a sweep (sweep.json); resume it (--resume)" in capsys.readouterr().err
    assert cli_main(["sweep", "--out", str(tmp_path / "x")]) == 2
    assert "required: --grid (or --resume DIR, to continue a sweep)" in capsys.readouterr().err


def _killed_after_epoch_1(learning_rate):
    """A trial that trains, but whose run at ``learning_rate`` dies as a killed sweep would, after epoch 1."""

    def trial(config, out_dir=None, on_epoch=None):
        def die(row):
            if config["learning_rate"] == learning_rate and row["epoch"] == 1:
                raise KeyboardInterrupt  # after the checkpoint of epoch 1 was written
        return run_trial(config, out_dir=out_dir, on_epoch=die)

    return trial


def _final_arrays(folder):
    arrays, _ = load_npz(folder / "checkpoint.npz")
    return arrays, json.loads((folder / "history.json").read_text())


def test_the_trial_a_sweep_was_training_when_it_died_goes_on_from_its_checkpoint(data_root, tmp_path, no_run_plots):
    base = {**_base(data_root), "epochs": 2}
    reference = sweep(GRID[:1], base, workers=0, out_dir=tmp_path / "reference", plot=False)
    out = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt):
        sweep(GRID[:1], base, workers=0, out_dir=out, trial=_killed_after_epoch_1(1.5e-3), plot=False)
    assert [r["trial"] for r in read_results(out)] == [0]
    assert load_npz(out / "trials" / "0001" / "checkpoint.npz")[1]["solver"]["t"] == 3
    continued = []

    def watched(config, out_dir=None, on_epoch=None):
        continued.append(trials_module.continued_checkpoint(config, out_dir))
        return run_trial(config, out_dir=out_dir, on_epoch=on_epoch)

    rows = sweep(GRID[:1], base, workers=0, out_dir=out, trial=watched, resume=True, plot=False)
    # Trial 1 ran again under its own number, from the checkpoint of its first epoch, to where the uninterrupted
    # sweep's trial 1 ended: bit for bit on NumPy.
    assert [str(path) for path in continued] == [str((out / "trials" / "0001" / "checkpoint.npz").resolve())]
    assert _results(rows) == _results(reference)
    arrays, history = _final_arrays(out / "trials" / "0001")
    ref_arrays, ref_history = _final_arrays(tmp_path / "reference" / "trials" / "0001")
    assert sorted(arrays) == sorted(ref_arrays) and history == ref_history
    for key in ref_arrays:
        np.testing.assert_array_equal(arrays[key], ref_arrays[key], err_msg=key)
    # A checkpoint of another config (a folder reused) is not continued: the trial trains afresh over it.
    assert trials_module.continued_checkpoint({**rows[1]["config"], "reg": 0.5}, out / "trials" / "0001") is None
    assert trials_module.continued_checkpoint({**rows[1]["config"], "backend": "numpy", "device": "cpu"},
                                              out / "trials" / "0001") is not None


def test_a_diverged_trial_is_finished_with_what_it_learned_and_never_trained_again(data_root, tmp_path,
                                                                                  no_run_plots):
    base = {**_base(data_root), "dtype": "float32", "epochs": 3}
    out = tmp_path / "sweep"
    rows = sweep(["learning-rate=1e-3,1e4"], base, workers=0, out_dir=out, plot=False)
    ok, diverged = rows
    assert ok["status"] == "ok" and diverged["status"] == "diverged"
    assert re.fullmatch(r"loss became (nan|inf) at iteration \d+ \(last finite loss .*\); its val_acc is that of "
                        r"its best parameters", diverged["error"]), diverged["error"]
    metrics = json.loads((out / diverged["run_dir"] / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and diverged["val_acc"] == metrics["val_acc"] is not None
    assert diverged["test_acc"] == metrics["test_acc"] and (out / diverged["run_dir"] / "model.npz").is_file()
    best = json.loads((out / "best.json").read_text())
    winner = max(rows, key=lambda r: (r["val_acc"], -r["trial"]))
    assert (best["trial"], best["status"]) == (winner["trial"], winner["status"])
    calls = []
    again = sweep(["learning-rate=1e-3,1e4"], base, workers=0, out_dir=out, resume=True,
                  trial=lambda config, **kwargs: calls.append(config))
    assert calls == [] and _results(again) == _results(rows)


def _diverging_trial(config, out_dir=None, on_epoch=None):
    """``_fake_trial``, but a learning rate of 0.9 or 0.2 diverges, keeping a validation accuracy equal to it."""
    value = config["learning_rate"]
    if value in (0.9, 0.2):
        raise Diverged(f"loss became inf at iteration 7; last finite loss 2.5. lr {value}", {
            "val_acc": value, "test_acc": value, "train_seconds": 1.0, "images_per_second": 1.0, "model": None,
            "diverged": {"iteration": 7, "loss": "inf", "last_finite_loss": 2.5}})
    return _fake_trial(config, out_dir, on_epoch)


@needs_optuna
def test_a_search_is_told_what_a_diverged_trial_reached_and_a_resumed_one_keeps_it(tmp_path):
    import optuna

    grid = ["learning-rate=0.9,0.5,0.2"]
    rows = sweep(grid, {}, workers=0, sampler="grid", prune=True, trial=_diverging_trial, out_dir=tmp_path,
                 plot=False)
    diverged = {r["learning_rate"]: r for r in rows if r["status"] == "diverged"}
    assert sorted(diverged) == [0.2, 0.9] and all(r["val_acc"] == lr for lr, r in diverged.items())
    study = optuna.load_study(study_name="anynet-sweep", storage=f"sqlite:///{tmp_path / 'study.db'}")
    for row in diverged.values():
        frozen = study.trials[row["trial"]]
        assert frozen.state.name == "COMPLETE" and frozen.value == row["val_acc"]
    # The best is the diverged trial of 0.9: it reached the highest accuracy of all.
    best = json.loads((tmp_path / "best.json").read_text())
    assert (best["trial"], best["status"], best["val_acc"]) == (diverged[0.9]["trial"], "diverged", 0.9)
    # Resumed with the trials on another device: nothing trains again, and the study goes on.
    calls = []
    again = sweep(grid, {"device": "cpu"}, workers=0, sampler="grid", prune=True, out_dir=tmp_path, resume=True,
                  plot=False, trial=lambda config, **kwargs: calls.append(config))
    assert calls == [] and _results(again) == _results(rows)
