"""CuPy: arrays on an NVIDIA GPU (``device`` is an integer id or ``"cuda:N"``)."""

from __future__ import annotations

import importlib

from .base import Backend


class CupyBackend(Backend):
    """CuPy arrays on one GPU. Steps run eagerly: anynet has no CUDA-graph capture for CuPy yet."""

    name = "cupy"
    package = "cupy"
    namespace_module = "array_api_compat.cupy"
    install = 'pip install "anynet[cuda12]" (or "anynet[cuda13]", matching your CUDA driver)'

    def __init__(self, device=None):
        self.cupy = importlib.import_module("cupy")
        super().__init__(device)

    @classmethod
    def why_unavailable(cls):
        why = super().why_unavailable()
        if why is not None:
            return why
        cupy = importlib.import_module("cupy")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CuPy raises its own CUDA errors without a driver
            return f"the cupy backend needs an NVIDIA GPU and driver ({exc})"
        if count == 0:
            return "the cupy backend needs an NVIDIA GPU; none is visible"
        return None

    def resolve_device(self, device):
        cupy = self.cupy
        if device is None:
            return cupy.cuda.Device()
        if isinstance(device, str) and device.startswith("cuda"):
            device = device.partition(":")[2] or 0
        device = device if isinstance(device, cupy.cuda.Device) else cupy.cuda.Device(int(device))
        # CuPy accepts any id here and fails only at first use, with its own error.
        if not 0 <= device.id < cupy.cuda.runtime.getDeviceCount():
            raise ValueError(f"no CUDA device {device.id}")
        return device

    @property
    def on_gpu(self):
        return True

    def owns(self, x):
        return isinstance(x, self.cupy.ndarray) and x.device == self.device

    def to_numpy(self, x):
        return x.get()

    def synchronize(self):
        self.device.synchronize()

    def device_rng(self, seed):
        with self.device:
            return self.cupy.random.default_rng(seed)

    def device_uniform(self, rng, shape, dtype):
        with self.device:
            return rng.random(shape, dtype=getattr(self.cupy, dtype))
