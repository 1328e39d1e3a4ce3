"""Compiled steps: one cache for the whole process, keyed by the model (weakly), the statics and the shapes.

A compiled step and accuracy count are made the first time a model trains
with a given ``Statics`` (``anynet.training.step``) and shapes, and kept
while the model lives: a later Solver of the same model reuses them, and
they go with the model (the cache holds models by weak reference, and the
compiled functions hold only the statics, never the model). A changed
constant (``model.reg = ...``) is another key, so nothing stale ever runs.
"""

from __future__ import annotations

import weakref

from .step import correct_count, train_step

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(statics, shapes): functions}


def functions(model, statics, shapes):
    """``(step, count)``: ``train_step`` and ``correct_count`` with ``statics``, compiled by the backend."""
    per_model = _cache.setdefault(model, {})
    key = (statics, shapes)
    found = per_model.get(key)
    if found is None:
        backend = statics.backend

        def step(state, X_train, y, idx):
            return train_step(statics, state, X_train, y, idx)

        def count(params, bn_state, X, y):
            return correct_count(statics, params, bn_state, X, y)

        # The state is replaced by the step's results: its buffers may be reused for them.
        found = per_model[key] = (backend.compile(step, donate=(0,)), backend.compile(count))
    return found


def cached(model):
    """How many compiled (step, count) pairs the cache holds for ``model``."""
    return len(_cache.get(model, {}))
