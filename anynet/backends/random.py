"""Seeded random generators: weights and permutations drawn on the host, the same on every library.

Weights, minibatch orders and accuracy subsamples are drawn with NumPy on the
host from the seed and moved once, so every backend starts from the same
weights and sees the same batches. Per-iteration draws inside a training step
come from the state it carries instead (``Backend.uniform``).
"""

from __future__ import annotations

from .base import OnBackend, dtype_name, seed_sequence
from .registry import Backend, get, of


class Generator(OnBackend):
    """A seeded random generator producing arrays of one backend on one device.

    Parameters
    ----------
    seed : None, int or sequence of int
        The same seed gives the same numbers run after run.
    backend : str or Backend, optional
        A name in ``BACKENDS`` or a backend object; default ``get_backend()``,
        or the backend of ``like``.
    device : optional
        A device of that backend.
    like : array, optional
        Take backend and device from this array.
    """

    def __init__(self, seed=None, backend=None, device=None, *, like=None):
        import numpy as np

        if like is not None:
            backend = of(like)
        elif not isinstance(backend, Backend) or device is not None:
            backend = get(backend, device)
        self._np = np
        self.backend = backend
        self.seed = seed
        host_seq, device_seq = seed_sequence(seed).spawn(2)
        self._host = np.random.default_rng(host_seq)
        self._device_seed = int(device_seq.generate_state(1, np.uint64)[0] >> 1)
        self._device_rng = None

    def _put(self, host):
        return self.backend.asarray(host)

    def normal(self, shape, scale=1.0, dtype="float32"):
        """Draw from N(0, scale**2), drawn on the host in float64 then cast."""
        x = self._host.standard_normal(shape) * scale
        return self._put(x.astype(dtype_name(dtype)))

    def integers(self, high, shape):
        """Draw int64 integers uniformly from [0, high)."""
        return self._put(self._host.integers(0, high, size=shape, dtype=self._np.int64))

    def permutation(self, n):
        """Return a random permutation of ``range(n)`` as an int64 array."""
        return self._put(self._host.permutation(n).astype(self._np.int64))

    def sample(self, n, k):
        """Return ``k`` distinct integers from ``range(n)`` in random order, as an int64 array."""
        return self._put(self._host.choice(n, k, replace=False).astype(self._np.int64))

    def uniform(self, shape, dtype="float32"):
        """Draw from U[0, 1) on the device, without a host round trip (the library's own generator)."""
        if self._device_rng is None:  # created on first use: CuPy's takes milliseconds to set up
            self._device_rng = self.backend.device_rng(self._device_seed)
        return self.backend.device_uniform(self._device_rng, tuple(shape), dtype_name(dtype))
