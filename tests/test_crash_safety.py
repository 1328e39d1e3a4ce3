"""Crash safety: ``python -m anynet train`` killed with SIGKILL again and again, resumed each time; a sweep too.

The run is made of many tiny epochs so that a checkpoint is written every
few milliseconds. Half of the kills land at random moments (drawn from a
seeded generator); the other half wait until a checkpoint's temporary file
appears and kill the process while it is being written. The killed runs go
through a small launcher that makes ``numpy.savez`` write each checkpoint in
slow chunks, widening that window without changing a single number. After
every kill each checkpoint on disk must load and must not have gone back in
time; the run finished by the last ``--resume`` must equal an uninterrupted
run with the same seed: parameters, optimizer state and histories.
"""

import json
import signal
import subprocess
import sys
import time

import numpy as np
from cifar_files import write_cifar10

from anynet.training.checkpoint import load_npz

EPOCHS = 300
FLAGS = ["--num-training", "40", "--num-validation", "20", "--num-test", "20", "--batch-size", "10",
         "--hidden-dims", "8", "--update-rule", "sgd_momentum", "--learning-rate", "1e-3", "--seed", "5",
         "--epochs", str(EPOCHS), "--quiet"]
KILLS = 12

# Runs ``python -m anynet`` with numpy.savez writing in 8 chunks, 5 ms apart: a window that a kill aimed at it hits
# on a loaded machine too.
LAUNCHER = '''
import io, runpy, sys, time
import numpy as np
savez = np.savez
def slow_savez(file, *args, **kwargs):
    buffer = io.BytesIO()
    savez(buffer, *args, **kwargs)
    data = buffer.getvalue()
    step = len(data) // 8 + 1
    for start in range(0, len(data), step):
        file.write(data[start:start + step])
        file.flush()
        time.sleep(0.005)
np.savez = slow_savez
sys.argv[0] = "anynet"
runpy.run_module("anynet", run_name="__main__", alter_sys=True)
'''


def _start(args, launcher=None):
    command = [sys.executable, *([str(launcher)] if launcher else ["-m", "anynet"]), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _temporary_files(out):
    return {p.name for p in out.glob(".*.tmp")} if out.exists() else set()


def _signature(path):
    """(mtime, size) of ``path``, or None: changes whenever the file is rewritten in place."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def _wait_for_a_write(proc, out, known, timeout=10.0):
    """Poll until a checkpoint write begins (a new temporary file, or checkpoint.npz itself changing).

    Returns False if the process ended first.
    """
    ckpt = out / "checkpoint.npz"
    before = _signature(ckpt)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _temporary_files(out) - known or _signature(ckpt) != before:
            return True
        time.sleep(0.0002)
    return False


def _check_checkpoints(out, last_t):
    """Every .npz in ``out`` loads; the training checkpoint never goes back in time. Returns its iteration."""
    t = last_t
    for path in sorted(out.glob("*.npz")):
        arrays, meta = load_npz(path)  # raises CheckpointError on a torn file
        assert arrays and all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"), path
        if path.name == "checkpoint.npz":
            t = meta["solver"]["t"]
            assert t >= last_t, f"checkpoint went back from iteration {last_t} to {t}"
    return t


def _final_state(out):
    with np.load(out / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    return arrays, json.loads((out / "history.json").read_text()), json.loads((out / "metrics.json").read_text())


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    write_cifar10(data, n_per_batch=20, n_test=20)
    flags = ["--data-dir", data, *FLAGS]
    launcher = tmp_path / "slow_savez_launcher.py"
    launcher.write_text(LAUNCHER)

    reference = tmp_path / "reference"
    proc = _start(["train", *flags, "--out", reference])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err

    out = tmp_path / "killed"
    ckpt = out / "checkpoint.npz"
    rng = np.random.default_rng(2024)
    kills = mid_write = 0
    last_t = 0
    rounds = 0
    # An aimed kill can still miss on a machine busy with other work (the write ends before the poll sees it): the
    # kills go on until three have landed mid-write.
    while kills < KILLS or mid_write < 3:
        rounds += 1
        assert rounds < 4 * KILLS, f"{kills} kills in {rounds} rounds, {mid_write} during a checkpoint write"
        args = ["train", "--resume", ckpt, "--quiet"] if ckpt.exists() else ["train", *flags, "--out", out]
        known = _temporary_files(out)
        proc = _start(args, launcher)
        if kills % 2:
            # Aim at a checkpoint write: wait for its temporary file, then kill within its few chunks.
            if _wait_for_a_write(proc, out, known):
                time.sleep(rng.uniform(0, 0.01))
        else:
            time.sleep(rng.uniform(0.05, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            # A temporary file the killed process left behind means it died mid-write.
            mid_write += bool(_temporary_files(out) - known)
        else:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        last_t = _check_checkpoints(out, last_t) if out.exists() else last_t

    print(f"{kills} kills in {rounds} rounds, {mid_write} during a checkpoint write; last checkpoint at "
          f"iteration {last_t} of {4 * EPOCHS}")
    assert last_t < 4 * EPOCHS, "the kills never left work to resume"
    proc = _start(["train", "--resume", ckpt, "--quiet"] if ckpt.exists() else ["train", *flags, "--out", out])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _check_checkpoints(out, last_t)

    arrays, history, metrics = _final_state(out)
    ref_arrays, ref_history, ref_metrics = _final_state(reference)
    assert sorted(arrays) == sorted(ref_arrays)
    for k in ref_arrays:
        np.testing.assert_array_equal(arrays[k], ref_arrays[k], err_msg=k)
    assert history == ref_history
    assert len(history["loss_history"]) == 4 * EPOCHS
    for key in ("val_acc", "test_acc", "best_val_acc", "iterations", "config"):
        assert metrics[key] == ref_metrics[key], key
    # Leftover temporary files are the torn writes themselves: never read, never mistaken for a checkpoint.
    # Each is named after a file the run writes atomically: the checkpoint, and the epoch-end outputs of train.
    atomic = ("checkpoint.npz", "history.json", "metrics.json", "metrics.csv", "loss.png", "accuracy.png",
              "weights.png")
    leftovers = _temporary_files(out)
    assert all(any(name.startswith(f".{kept}.") for kept in atomic) for name in leftovers), leftovers


SWEEP_FLAGS = ["--grid", "learning-rate=1e-3,2e-3", "--num-training", "40", "--num-validation", "20", "--num-test",
               "20", "--batch-size", "10", "--hidden-dims", "8", "--update-rule", "sgd_momentum", "--seed", "5",
               "--epochs", "4", "--workers", "0", "--quiet"]
# Runs ``python -m anynet`` drawing no plots (matplotlib would be most of each process's time); with "stall" as
# its first argument, trial 1 waits after writing its second epoch's row, to be killed there.
NO_PLOTS = '''
import runpy, sys, time
from anynet.app import runs
from anynet.app.sweep import runner
from anynet.data import vis
vis.plot_history = vis.plot_weights = runner.plot_results = lambda *args, **kwargs: None
if sys.argv[1] == "stall":
    del sys.argv[1]
    write_row = runs.RunFolder.__call__
    def stalling(self, solver, row):
        write_row(self, solver, row)
        if self.out_dir.name == "0001" and row["epoch"] >= 2:
            time.sleep(60)
    runs.RunFolder.__call__ = stalling
sys.argv[0] = "anynet"
runpy.run_module("anynet", run_name="__main__", alter_sys=True)
'''


def _csv_rows(path):
    """The rows of a metrics.csv, as text."""
    return path.read_text().splitlines()[1:]


def test_a_sweep_killed_mid_trial_resumes_from_its_folder_alone_and_that_trial_from_its_checkpoint(tmp_path,
                                                                                                  monkeypatch):
    from anynet.app import cli
    from anynet.app.sweep import runner
    from anynet.data import vis

    data = tmp_path / "data"
    write_cifar10(data, n_per_batch=20, n_test=20)
    launcher = tmp_path / "no_plots_launcher.py"
    launcher.write_text(NO_PLOTS)
    out = tmp_path / "killed"
    ckpt, rows_csv = out / "trials" / "0001" / "checkpoint.npz", out / "trials" / "0001" / "metrics.csv"
    killed = _start(["stall", "sweep", *SWEEP_FLAGS, "--data-dir", data, "--out", out], launcher)
    deadline = time.monotonic() + 60
    # Killed once trial 1 has written the rows of two epochs (and the checkpoint of the second before them).
    while killed.poll() is None and time.monotonic() < deadline and (
            not rows_csv.exists() or len(_csv_rows(rows_csv)) < 2):
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    rows = json.loads((out / "results.json").read_text())
    t = load_npz(ckpt)[1]["solver"]["t"]
    assert [r["trial"] for r in rows] == [0] and t == 8
    kept = _csv_rows(rows_csv)
    assert [row.split(",")[1] for row in kept] == ["4", "8"]
    # The folder alone: its record holds the grid, the train flags and --workers 0.
    proc = _start(["sweep", "--resume", out], launcher)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "2 trials, 0 failed" in stdout
    # The same sweep, uninterrupted (here, drawing no plots either).
    reference = tmp_path / "reference"
    for module, name in ((vis, "plot_history"), (vis, "plot_weights"), (runner, "plot_results")):
        monkeypatch.setattr(module, name, lambda *args, **kwargs: None)
    assert cli.main(["sweep", *SWEEP_FLAGS, "--data-dir", str(data), "--out", str(reference)]) == 0
    rows = json.loads((out / "results.json").read_text())
    ref_rows = json.loads((reference / "results.json").read_text())
    assert [(r["trial"], r["status"], r["val_acc"]) for r in rows] == [
        (r["trial"], r["status"], r["val_acc"]) for r in ref_rows]
    # Trial 1 went on from its checkpoint: its rows up to it are those written before the kill, timings and all
    # (a trial trained again from the start would have written them anew), and it ends as the uninterrupted one.
    after = _csv_rows(rows_csv)
    assert after[:2] == kept and [row.split(",")[1] for row in after] == ["4", "8", "12", "16"]
    arrays, history, _ = _final_state(out / "trials" / "0001")
    ref_arrays, ref_history, _ = _final_state(reference / "trials" / "0001")
    assert sorted(arrays) == sorted(ref_arrays) and history == ref_history
    for k in ref_arrays:
        np.testing.assert_array_equal(arrays[k], ref_arrays[k], err_msg=k)
