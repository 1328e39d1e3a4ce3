"""PyTorch: tensors on the CPU or a CUDA GPU; training steps compiled by ``torch.compile``."""

from __future__ import annotations

import importlib
import math
import os
import types

from .base import Backend
from .tracing import compiled_call, tracing

# Spreads the generator keys of consecutive counters apart (2**64 / the golden ratio, odd).
_GOLDEN = 0x9E3779B97F4A7C15


class TorchBackend(Backend):
    """PyTorch tensors; ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (default: cuda when visible)."""

    name = "torch"
    package = "torch"
    namespace_module = "array_api_compat.torch"
    install = 'pip install "anynet[torch]"'
    can_compile = True

    def __init__(self, device=None):
        self.torch = importlib.import_module("torch")
        super().__init__(device)

    def resolve_device(self, device):
        torch = self.torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            from .base import BackendUnavailableError

            raise BackendUnavailableError(f"torch device {str(device)!r} needs a CUDA GPU; none is visible")
        if device.type == "cuda" and device.index is None:
            # Tensors report "cuda:0", never "cuda": name the index so device checks compare equal.
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    @property
    def on_gpu(self):
        return self.device.type == "cuda"

    def owns(self, x):
        return isinstance(x, self.torch.Tensor) and x.device == self.device

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def synchronize(self):
        if self.on_gpu:
            self.torch.cuda.synchronize(self.device)

    def take_rows(self, x, indices):
        # array-api-compat's take first maps negative indices: three more launches on a GPU for indices that
        # are never negative.
        return self.torch.index_select(x, 0, indices)

    def device_rng(self, seed):
        rng = self.torch.Generator(device=self.device)
        rng.manual_seed(seed)
        return rng

    def device_uniform(self, rng, shape, dtype):
        return self.torch.rand(shape, generator=rng, device=self.device, dtype=getattr(self.torch, dtype))

    def uniform(self, state, shape, dtype):
        """Eagerly on a CPU, PyTorch's own generator seeded from the carried state (its integer operations,
        which the counter-based hash is made of, run far slower there than ``torch.rand``:
        benchmarks/RESULTS.md); traced by
        ``torch.compile`` (one fused kernel) or on a GPU (no host read of the state), ``Backend.uniform``'s hash.
        The state advances the same way either way."""
        if tracing() or self.on_gpu:
            return super().uniform(state, shape, dtype)
        n = math.prod(shape)
        seed = (int(state["key"]) * _GOLDEN + int(state["counter"])) % 2**63
        rng = self.torch.Generator(device=self.device)
        rng.manual_seed(seed)
        values = self.torch.rand(tuple(shape), generator=rng, device=self.device, dtype=dtype)
        return values, {"key": state["key"], "counter": state["counter"] + n}

    def compile(self, step, donate=()):
        """``torch.compile`` of the whole step as one graph (a graph break is an error, not a silent split)."""
        # On a GPU, CUDA graphs ("reduce-overhead") replay the step's launches as one; the GPU check compares
        # it with plain compilation through $ANYNET_TORCH_COMPILE_MODE (benchmarks/RESULTS.md).
        mode = os.environ.get("ANYNET_TORCH_COMPILE_MODE") or ("reduce-overhead" if self.on_gpu else None)
        # $ANYNET_TORCH_COMPILE_BACKEND=aot_eager traces the step as Inductor would get it but runs it without
        # generating code: the test sessions use it where tracing is what a test checks (a cold Inductor build
        # of a step is seconds of C++ compilation: benchmarks/RESULTS.md).
        backend = os.environ.get("ANYNET_TORCH_COMPILE_BACKEND") or "inductor"
        # On a CPU, Inductor's wrapper around the kernels is Python unless it is asked for C++: cpp_wrapper takes
        # a third off a step's host time, at no cost in compile time (benchmarks/RESULTS.md).
        options = None if mode or self.on_gpu else {"cpp_wrapper": True}
        if backend != "inductor":
            mode = options = None  # Inductor's settings
        return compiled_call(self.torch.compile(_own_code(step), fullgraph=True, dynamic=False, backend=backend,
                                                mode=mode, options=options))

    def compile_pays(self):
        """On a GPU, where an eager step is dozens of launches paced by the host. On a CPU compiling takes
        seconds and saves little of a small net's step, which pays only after thousands of steps
        (benchmarks/RESULTS.md)."""
        return self.on_gpu

    def compile_count(self):
        from torch._dynamo.utils import counters

        return counters["stats"]["unique_graphs"]


def _own_code(fn):
    """``fn`` (a function or bound method) with a code object of its own.

    Dynamo keeps its compiled graphs per code object, at most eight: every
    model's step is the same method (``TrainStep._step``), so without this the
    ninth model of a process would find the cache full. A copy of the code
    gives each step its own cache.
    """
    func = getattr(fn, "__func__", fn)
    copy = types.FunctionType(func.__code__.replace(), func.__globals__, func.__name__, func.__defaults__,
                              func.__closure__)
    return types.MethodType(copy, fn.__self__) if hasattr(fn, "__self__") else copy


# Fast paths of layers (see ``Backend.conv2d_forward``): PyTorch's own convolution and pooling kernels, forward and
# backward, as ATen operators, which torch.compile traces.


def _conv2d_forward(x, w, b, stride, pad):
    import torch

    out = torch.nn.functional.conv2d(x, w, b, stride=stride, padding=pad)
    return out, (x, w, stride, pad)


def _conv2d_backward(dout, ctx, need_dx=True):
    import torch

    x, w, stride, pad = ctx
    dx, dw, db = torch.ops.aten.convolution_backward(
        dout, x, w, [w.shape[0]], [stride, stride], [pad, pad], [1, 1], False, [0, 0], 1, [need_dx, True, True])
    return dx, dw, db


def _max_pool2d_forward(x, HH, WW, stride):
    import torch

    out, indices = torch.ops.aten.max_pool2d_with_indices(x, [HH, WW], [stride, stride])
    return out, (x, indices, HH, WW, stride)


def _max_pool2d_backward(dout, ctx):
    import torch

    x, indices, HH, WW, stride = ctx
    return torch.ops.aten.max_pool2d_with_indices_backward(dout, x, [HH, WW], [stride, stride], [0, 0], [1, 1],
                                                           False, indices)


TorchBackend.bfloat16_of = staticmethod(lambda xp: xp.bfloat16)
TorchBackend.conv2d_forward = staticmethod(_conv2d_forward)
TorchBackend.conv2d_backward = staticmethod(_conv2d_backward)
TorchBackend.max_pool2d_forward = staticmethod(_max_pool2d_forward)
TorchBackend.max_pool2d_backward = staticmethod(_max_pool2d_backward)
