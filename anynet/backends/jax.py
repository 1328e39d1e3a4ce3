"""JAX: immutable arrays on the CPU or a GPU; training steps compiled by ``jax.jit``.

JAX computes in 32 bits unless its 64-bit mode is on; a model that asks for
float64 turns it on (``dtype``), so float64 means float64. Random numbers
come from keys carried as state, as JAX's own generator wants.
"""

from __future__ import annotations

import importlib

import numpy as np

from .base import Backend, dtype_name

_traces = 0  # compiled steps traced (so compiled) in this process


class JaxBackend(Backend):
    """JAX arrays; ``device`` is ``"cpu"``, ``"gpu"``, ``"cuda"``, ``"cuda:N"`` or a ``jax.Device``."""

    name = "jax"
    package = "jax"
    namespace_module = "jax.numpy"
    install = 'pip install "anynet[jax]" (CPU), or "anynet[jax-cuda12]" / "anynet[jax-cuda13]" for NVIDIA GPUs'
    can_compile = True
    mutable = False

    def __init__(self, device=None):
        self.jax = importlib.import_module("jax")
        super().__init__(device)

    def resolve_device(self, device):
        jax = self.jax
        if device is None:
            return jax.devices()[0]
        if isinstance(device, jax.Device):
            return device
        if not isinstance(device, str):
            raise TypeError(f"expected a device name such as 'cpu' or 'cuda:0'; got {device!r}")
        kind, _, index = device.partition(":")
        kind = {"cuda": "gpu"}.get(kind, kind)
        if kind not in ("cpu", "gpu"):
            raise ValueError(f"unknown JAX device kind {kind!r}")
        try:
            devices = jax.devices(kind)
        except RuntimeError as exc:
            from .base import BackendUnavailableError

            raise BackendUnavailableError(f"jax device {device!r} is not available here ({exc})") from None
        return devices[int(index or 0)]

    @property
    def on_gpu(self):
        return self.device.platform == "gpu"

    def dtype(self, dtype):
        name = dtype_name(dtype)
        if name == "float64" and not self.jax.config.jax_enable_x64:
            self.jax.config.update("jax_enable_x64", True)
        return getattr(self.xp, name)

    def owns(self, x):
        return isinstance(x, self.jax.Array) and not isinstance(x, self.jax.core.Tracer) and x.devices() == {
            self.device
        }

    def asarray(self, host, dtype=None):
        return self.jax.device_put(np.asarray(host, dtype=dtype), self.device)

    def to_numpy(self, x):
        return np.asarray(x)

    def synchronize(self):
        # JAX runs a device's work in order: once a new computation is ready, so is everything before it.
        self.jax.device_put(0, self.device).block_until_ready()

    def device_rng(self, seed):
        return [self.jax.random.key(seed % 2**32)]

    def device_uniform(self, rng, shape, dtype):
        rng[0], key = self.jax.random.split(rng[0])
        return self.jax.random.uniform(key, shape, dtype=self.dtype(dtype))

    def rng_state(self, seed):
        from .base import seed_sequence

        key = self.jax.random.key(int(seed_sequence(seed).generate_state(1)[0]))
        return {"key": self.jax.device_put(key, self.device)}

    def uniform(self, state, shape, dtype):
        key, sub = self.jax.random.split(state["key"])
        return self.jax.random.uniform(sub, tuple(shape), dtype=dtype), {"key": key}

    def compile(self, step, donate=()):
        """``jax.jit`` of the step, its donated arguments' buffers reused for the results."""
        from . import compiled_call

        def traced(*args):
            global _traces
            _traces += 1  # runs only while JAX traces, that is once per compilation
            return step(*args)

        return compiled_call(self.jax.jit(traced, donate_argnums=tuple(donate)))

    def compile_count(self):
        return _traces
