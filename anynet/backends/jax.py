"""JAX: immutable arrays on the CPU or a GPU; training steps compiled by ``jax.jit``.

JAX computes in 32 bits unless its 64-bit mode is on, and then casts float64
data to float32 without a word. Here float64 means float64: a float64 model,
or float64 data moved to a JAX device, turns the mode on (``enable_float64``),
with a warning the first time, since the mode is process-wide. Random numbers
come from keys carried as state, as JAX's own generator wants.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from .base import Backend, dtype_name, seed_sequence
from .tracing import compiled_call

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
        if name == "float64":
            self.enable_float64()
        return getattr(self.xp, name)

    def enable_float64(self):
        """Turn on JAX's 64-bit mode, which float64 needs, warning once: it is a setting of the whole process.

        Without it JAX silently computes float64 data in float32 (the course's
        float64 gradient checks then fail by 1e-2). An error would make every
        float64 check on JAX need a line of JAX configuration first; the mode
        changes only what arrays made without a dtype default to.
        """
        if self.jax.config.jax_enable_x64:
            return
        self.jax.config.update("jax_enable_x64", True)
        warnings.warn(
            "anynet turned on JAX's 64-bit mode (jax_enable_x64) for float64 arrays; for the rest of this process "
            "JAX arrays made without a dtype default to 64 bits (set JAX_ENABLE_X64=1 to start that way)",
            UserWarning, stacklevel=3,
        )

    def owns(self, x):
        return isinstance(x, self.jax.Array) and not isinstance(x, self.jax.core.Tracer) and x.devices() == {
            self.device
        }

    def asarray(self, host, dtype=None):
        host = np.asarray(host, dtype=dtype)
        if host.dtype == np.float64:
            self.enable_float64()
        return self.jax.device_put(host, self.device)

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
        key = self.jax.random.key(int(seed_sequence(seed).generate_state(1)[0]))
        return {"key": self.jax.device_put(key, self.device)}

    def rng_state_to_host(self, state):
        # A typed key array has no NumPy dtype: its data does.
        return {"key": np.asarray(self.jax.random.key_data(state["key"]))}

    def rng_state_from_host(self, host):
        return {"key": self.jax.device_put(self.jax.random.wrap_key_data(np.asarray(host["key"])), self.device)}

    def uniform(self, state, shape, dtype):
        key, sub = self.jax.random.split(state["key"])
        return self.jax.random.uniform(sub, tuple(shape), dtype=dtype), {"key": key}

    def compile(self, step, donate=()):
        """``jax.jit`` of the step, its donated arguments' buffers reused for the results."""
        def traced(*args):
            global _traces
            _traces += 1  # runs only while JAX traces, that is once per compilation
            return step(*args)

        return compiled_call(self.jax.jit(traced, donate_argnums=tuple(donate)))

    def compile_count(self):
        return _traces


# Fast paths of layers (see ``Backend.conv2d_forward``): XLA's convolution and window reduction; the backward
# passes are their vector-Jacobian products, which jax.vjp derives and XLA fuses.


def _conv(x, w, stride, pad):
    import jax

    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))


def _conv2d_forward(x, w, b, stride, pad):
    import jax

    out, vjp = jax.vjp(lambda x, w: _conv(x, w, stride, pad), x, w)
    return out + b[None, :, None, None], vjp


def _conv2d_backward(dout, vjp, need_dx=True):
    dx, dw = vjp(dout)  # an input gradient nobody uses is left out of a compiled step by XLA
    return (dx if need_dx else None), dw, dout.sum(axis=(0, 2, 3))


def _max_pool2d_forward(x, HH, WW, stride):
    import jax

    def pool(x):
        return jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 1, HH, WW), (1, 1, stride, stride), "VALID")

    return jax.vjp(pool, x)


def _max_pool2d_backward(dout, vjp):
    return vjp(dout)[0]


JaxBackend.bfloat16_of = staticmethod(lambda xp: xp.bfloat16)
JaxBackend.conv2d_forward = staticmethod(_conv2d_forward)
JaxBackend.conv2d_backward = staticmethod(_conv2d_backward)
JaxBackend.max_pool2d_forward = staticmethod(_max_pool2d_forward)
JaxBackend.max_pool2d_backward = staticmethod(_max_pool2d_backward)
