"""Crash safety: ``python -m anynet train`` killed with SIGKILL again and again, resumed each time.

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

# Runs ``python -m anynet`` with numpy.savez writing in 8 chunks, 2 ms apart.
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
        time.sleep(0.002)
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
    while kills < KILLS:
        rounds += 1
        assert rounds < 3 * KILLS, "the run kept finishing before it could be killed"
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
    assert mid_write >= 3, f"only {mid_write} of {kills} kills landed during a checkpoint write"
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
