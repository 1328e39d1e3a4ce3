"""A parameter's update in blocks of rows, one per CPU thread.

NumPy runs each array operation on one core. The rules of ``anynet.optim``
are elementwise, so updating a parameter is updating each block of its rows
with that block's gradient and state: the numbers are the same. With the
blocks on threads (NumPy lets go of the GIL inside an operation) a rule's
passes over a large weight share the cores and their memory bandwidth; Adam
on a 3072x512 float32 weight takes 2.1 ms instead of 3.8 ms on two cores.

Each block keeps its own state between steps (``split_config`` and
``join_configs`` convert), so the only copy a step makes is of each block's
new rows into the new parameter. Whether there are threads to run blocks on
is ``anynet.backend.block_map``'s call.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace, is_array_api_obj

from . import backends

# Parameters with fewer elements are updated in one piece. Two cores, float32 (benchmarks/RESULTS.md):
# Adam gains nothing on 3072x100 (307k) and loses on 512x256 (dispatching to a thread costs ~0.1 ms);
# it gains 26% on 1024x512 (524k) and 45% on 3072x512.
MIN_SIZE = 2**19


def row_blocks(shape, threads):
    """Row slices to update a parameter of ``shape`` in, one per thread; None to update it in one piece.

    One piece below ``MIN_SIZE`` elements or with one thread. Blocks keep at
    least ``MIN_SIZE // 2`` elements each, so that the rule's Python, which
    the threads take turns at, stays small beside its arithmetic.
    """
    n, size = shape[0] if shape else 1, math.prod(shape)
    k = min(threads, n, size // (MIN_SIZE // 2))
    if size < MIN_SIZE or k < 2:
        return None
    cuts = [n * i // k for i in range(k + 1)]
    return [slice(cuts[i], cuts[i + 1]) for i in range(k)]


def split_config(config, shape, rows):
    """One config per block of ``rows``: views of the state arrays shaped like the parameter, the rest shared."""
    shape = tuple(shape)
    state = {key for key, value in config.items() if is_array_api_obj(value) and tuple(value.shape) == shape}
    return [{key: value[block, ...] if key in state else value for key, value in config.items()} for block in rows]


def join_configs(configs):
    """The config of the whole parameter: each state array is the concatenation of the blocks' along the rows."""
    joined = dict(configs[0])
    for key, value in joined.items():
        if is_array_api_obj(value):
            joined[key] = array_namespace(value).concat([config[key] for config in configs], axis=0)
    return joined


def update(rule, w, dw, configs, rows, map):
    """``rule`` applied to each block of ``rows`` of ``w``, the blocks handed to ``map``.

    Returns the new ``w`` (a fresh array) and the blocks' new configs. Equal,
    bit for bit, to ``rule(w, dw, join_configs(configs))`` for an elementwise rule.
    """
    xp = array_namespace(w, dw)
    if not backends.of(w).mutable:  # JAX: no writes into a shared output; the new blocks are concatenated
        results = map(lambda i: rule(w[rows[i], ...], dw[rows[i], ...], configs[i]), range(len(rows)))
        return xp.concat([rule_w for rule_w, _ in results], axis=0), [config for _, config in results]
    next_w = xp.empty_like(w)

    def block(i):
        rule_w, config = rule(w[rows[i], ...], dw[rows[i], ...], configs[i])
        next_w[rows[i], ...] = rule_w
        return config

    return next_w, map(block, range(len(rows)))
