"""Helpers shared by the tests of the convolutional, pooling and normalization layers."""

import numpy as np

from anynet.backends import to_numpy


def put(xp, device, a):
    """Host ``a`` as a float64 array of ``xp`` on ``device``."""
    return xp.asarray(np.asarray(a, dtype=np.float64), device=device)


def rel_error(x, y):
    """The course's ``rel_error``, on the host: anynet's computes where the arrays are, and on JAX that compiles
    its operations again for every new shape."""
    x, y = to_numpy(x), to_numpy(y)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def float32_pass(backend_name, forward, backward, *args, rest=()):
    """The output and gradients of ``forward(*args[:-1], *rest)`` and its ``backward`` given ``dout = args[-1]``.

    On JAX the pass runs under ``jax.jit``, one compiled program: eager, every operation would compile again for
    float32. Tracing sees the dtypes the eager pass would make.
    """

    def step(*arrays):
        out, cache = forward(*arrays[:-1], *rest)
        grads = backward(arrays[-1], cache)
        return (out, *(grads if isinstance(grads, tuple) else (grads,)))

    if backend_name == "jax":
        import jax

        step = jax.jit(step)
    return step(*args)
