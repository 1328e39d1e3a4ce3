"""How a rule call covers parameters: one parameter, several glued into one flat array, or one in row blocks.

The update rules of ``anynet.nn.optim`` are elementwise, so a parameter's
update can be cut up or glued to others' and the numbers stay those of one
call per parameter. ``anynet.training.optimizer`` chooses, once, which of
these each group of parameters takes:

- **flat** (a GPU): the group's parameters, gradients and state concatenated,
  so each array operation of the rule is one launch for all of them;
- **blocks** (NumPy on several cores): a large parameter's rows cut into one
  block per thread, each block updated with its own rows of gradient and
  state on a thread (NumPy lets go of the GIL inside an operation), so a
  rule's passes over a large weight share the cores and their memory
  bandwidth. Each block's state stays a block of its own between steps.
"""

from __future__ import annotations

import math

from ..backends import namespace

# Parameters with fewer elements are updated in one piece: below this size handing a block to a thread costs
# more than it saves (benchmarks/RESULTS.md, "updates in row blocks").
MIN_SIZE = 2**19


# Flat: several arrays as views of one.


def spans(shapes):
    """``[(start, stop, shape)]`` placing arrays of ``shapes`` one after the other in one flat array."""
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append((start, start + size, tuple(shape)))
        start += size
    return out


def flatten(arrays):
    """The arrays, raveled and concatenated in order."""
    xp = namespace(*arrays)
    return xp.concat([xp.reshape(a, (-1,)) for a in arrays])


def unflatten(flat, layout):
    """Views of ``flat``, one per span of ``layout`` (from ``spans``), each in its own shape."""
    xp = namespace(flat)
    return [xp.reshape(flat[start:stop], shape) for start, stop, shape in layout]


# Blocks: one parameter's rows on threads.


def row_blocks(shape, threads):
    """Row ranges ``(start, stop)`` to update a parameter of ``shape`` in, one per thread; None for one piece.

    One piece below ``MIN_SIZE`` elements or with one thread. Blocks keep at
    least ``MIN_SIZE // 2`` elements each, so that the rule's Python, which
    the threads take turns at, stays small beside its arithmetic.
    """
    n, size = shape[0] if shape else 1, math.prod(shape)
    k = min(threads, n, size // (MIN_SIZE // 2))
    if size < MIN_SIZE or k < 2:
        return None
    cuts = [n * i // k for i in range(k + 1)]
    return tuple((cuts[i], cuts[i + 1]) for i in range(k))


def update_in_blocks(rule, w, dw, configs, rows, map, mutable=True):
    """``rule`` applied to each block ``rows`` of ``w`` with that block's config, the blocks handed to ``map``.

    Returns the new ``w`` (a fresh array) and the blocks' new configs. Equal,
    bit for bit, to one call of ``rule`` on the whole parameter and its whole
    state, for an elementwise rule. The new parameter is only written once
    every block has succeeded: a block that raises leaves nothing changed.
    """
    xp = namespace(w, dw)
    blocks = [slice(start, stop) for start, stop in rows]
    if not mutable:  # JAX: no writes into an array; the new blocks are concatenated
        results = map(lambda i: rule(w[blocks[i], ...], dw[blocks[i], ...], configs[i]), range(len(blocks)))
        return xp.concat([block_w for block_w, _ in results], axis=0), [config for _, config in results]
    # The rule's result promotes as its inputs do: a float32 parameter with a float64 gradient becomes float64.
    arrays = [w, dw, *(v for v in configs[0].values() if hasattr(v, "dtype") and hasattr(v, "shape"))]
    next_w = xp.empty(w.shape, dtype=xp.result_type(*arrays), device=w.device)

    def block(i):
        block_w, config = rule(w[blocks[i], ...], dw[blocks[i], ...], configs[i])
        next_w[blocks[i], ...] = block_w  # on the block's thread: the copy is spread over the cores too
        return config

    return next_w, map(block, range(len(blocks)))
