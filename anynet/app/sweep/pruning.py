"""Pruning: at each epoch end a trial asks the study whether to stop, here or from a Dask worker.

The sweep's own process (the client) is the only one that touches the
study. A trial in this process asks it directly (``LocalPruning``); a trial
on a Dask worker sends its validation accuracy back to the client through a
``distributed.Queue`` and waits for the client's answer on a queue of its
own (``RemotePruning``), which the client's ``Answerer`` gives: report it to
the study and ask the pruner. The workers never open the study's storage,
because they may run on machines that cannot see the sweep folder, and
SQLite's file locks are unreliable on the network file systems they would
share; a queue is ordered and needs nothing but the scheduler the trials
already go through.
"""

from __future__ import annotations

import math
import time
import warnings

# How long a trial waits for the client's pruning decision before it trains on without one.
_REPLY_TIMEOUT = 120.0


def decide(trial, step: int, value) -> bool:
    """Report ``value`` at ``step`` of the Optuna ``trial`` and return whether the pruner stops it."""
    if value is None:
        return False
    with warnings.catch_warnings():
        # A trial run again after its worker died reports its first epochs a second time; Optuna keeps the first.
        warnings.simplefilter("ignore")
        trial.report(float(value), step)
    return trial.should_prune()


def epoch_step(row: dict) -> int:
    """The Optuna step of an epoch-end row of ``train``: the epoch number (a last partial epoch counts as one)."""
    return max(1, math.ceil(row["epoch"] - 1e-9))


def _report_queue(sweep_id: str) -> str:
    return f"anynet-sweep-{sweep_id}-reports"


def _reply_queue(sweep_id: str, index: int) -> str:
    return f"anynet-sweep-{sweep_id}-reply-{index}"


class LocalPruning:
    """``on_epoch`` of a trial run in this process: ask the study directly."""

    def __init__(self, trial):
        self.trial = trial

    def __call__(self, row):
        """Stop the run (``StopRun``) when the pruner says so."""
        step = epoch_step(row)
        if decide(self.trial, step, row.get("val_acc")):
            from ..train import StopRun

            raise StopRun(f"pruned at epoch {step} (val acc {row['val_acc']:.4f} below the median)")


class RemotePruning:
    """``on_epoch`` of a trial on a Dask worker: send the epoch's val_acc to the client and wait for its decision.

    Picklable; the queues are looked up by name on the worker, once per
    attempt, and released by ``close`` when the trial ends (a scheduler that
    outlives many sweeps keeps no queue of theirs).
    """

    def __init__(self, sweep_id: str, index: int):
        self.sweep_id, self.index = sweep_id, index
        self._queues = None

    def __getstate__(self):
        return {"sweep_id": self.sweep_id, "index": self.index, "_queues": None}

    def __call__(self, row):
        """Report, wait for the answer to this very step, and stop the run (``StopRun``) if it says prune."""
        from distributed import Queue

        if self._queues is None:
            self._queues = (Queue(_report_queue(self.sweep_id)), Queue(_reply_queue(self.sweep_id, self.index)))
        reports, replies = self._queues
        step = epoch_step(row)
        value = row.get("val_acc")
        reports.put({"trial": self.index, "step": step, "value": value})
        reply = self._reply(replies, step)
        if reply is not None and reply.get("prune"):
            from ..train import StopRun

            raise StopRun(f"pruned at epoch {step} (val acc {value:.4f} below the median)")

    @staticmethod
    def _reply(replies, step):
        """The client's reply to ``step``, or None when none comes in time (the client is gone or stuck)."""
        deadline = time.monotonic() + _REPLY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None  # no answer: train on rather than stop a good trial
            try:
                reply = replies.get(timeout=left)
            except TimeoutError:
                return None
            # Replies to an earlier attempt of this trial (its worker died) may still wait in the queue.
            if reply.get("step") == step:
                return reply

    def close(self):
        """Release this attempt's hold on the queues."""
        for queue in self._queues or ():
            queue.close()
        self._queues = None


class Answerer:
    """Client side of ``RemotePruning``: read the reports waiting in the queue and answer each one."""

    def __init__(self, client, sweep_id: str):
        from distributed import Queue

        self.client, self.sweep_id = client, sweep_id
        self.reports = Queue(_report_queue(sweep_id), client=client)
        self.trials = {}  # trial number -> Optuna trial, while it runs
        self.replies = {}  # trial number -> its reply queue, once it reported

    def poll(self) -> int:
        """Answer every report waiting now; return how many there were."""
        from distributed import Queue

        messages = self.reports.get(batch=True)
        for msg in messages:
            number = msg["trial"]
            trial = self.trials.get(number)
            prune = trial is not None and decide(trial, msg["step"], msg["value"])
            if number not in self.replies:
                self.replies[number] = Queue(_reply_queue(self.sweep_id, number), client=self.client)
            self.replies[number].put({"step": msg["step"], "prune": bool(prune)})
        return len(messages)

    def done(self, number: int) -> None:
        """Trial ``number`` has finished: forget it and release its reply queue."""
        self.trials.pop(number, None)
        queue = self.replies.pop(number, None)
        if queue is not None:
            queue.close()

    def close(self) -> None:
        """Release every queue this sweep still holds."""
        for number in list(self.replies):
            self.done(number)
        self.reports.close()
