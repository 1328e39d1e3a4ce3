"""The generic backend: what the Array API standard leaves out, written once for any conforming library.

A ``Backend`` is one array library on one device. It turns host (NumPy)
arrays into device arrays and back, synchronizes, gathers minibatches, draws
random numbers from a carried state, and owns the fast paths a library may
override: how an optimizer lays out its updates (``update_layout``) and how a
training step is compiled (``compile``). The subclasses, one module per
library beside this one, override only what their library does better or
differently.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # NumPy loads when first needed: a command sets up its process first (numpy.prepare_process)
    import numpy as np

import array_api_compat

DTYPES = ("float32", "float64")


class BackendUnavailableError(RuntimeError):
    """A known backend that cannot run on this machine."""


def dtype_name(dtype) -> str:
    """``"float32"`` or ``"float64"`` for a dtype given as a string, a NumPy dtype or type, or any library's dtype.

    The course writes ``dtype=np.float64``; anynet's own code writes ``"float64"``.
    """
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None)
    if not isinstance(name, str):  # np.float64 (a type), torch.float64, jnp.float64
        name = getattr(dtype, "__name__", None) or str(dtype)
    name = name.rpartition(".")[2]
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (a string or a NumPy dtype); got {dtype!r}")
    return name


def seed_sequence(seed) -> np.random.SeedSequence:
    """A SeedSequence for ``seed`` (None, an int, or a sequence of ints)."""
    import numpy as np

    if seed is not None and not isinstance(seed, (int, np.integer, Sequence)):
        raise TypeError(f"seed must be None, an int or a sequence of ints; got {seed!r}")
    return np.random.SeedSequence(seed)


# The counter-based generator of ``Backend.uniform``: Mueller's 32-bit integer hash, each product of a value below
# 2**32 with a multiplier below 2**31 kept exact in int64, so every library computes the same bits.
_MASK = 0xFFFFFFFF
_MULT = 0x45D9F3B


def _mix(x):
    """One round of the hash, on int64 values in [0, 2**32)."""
    x = ((x >> 16) ^ x) * _MULT & _MASK
    x = ((x >> 16) ^ x) * _MULT & _MASK
    return (x >> 16) ^ x


class Backend:
    """One array library on one device.

    Parameters
    ----------
    device : optional
        A device of this library (see ``resolve_device``); None picks its default.

    Attributes
    ----------
    name : str
        The name users pass as ``backend=``.
    xp : namespace
        The library's Array API namespace.
    device
        The device arrays live on.
    """

    name = ""
    package = ""  # what must import for the backend to run
    namespace_module = ""  # the Array API namespace (array-api-compat's wrapper where the library needs one)
    install = ""  # the command that installs what is missing
    can_compile = False  # whether ``compile`` returns a compiled step
    mutable = True  # whether arrays can be assigned into in place (``x[i] = v``); JAX's cannot

    def __init__(self, device=None):
        why = self.why_unavailable()
        if why is not None:
            raise BackendUnavailableError(why)
        self.xp = importlib.import_module(self.namespace_module)
        try:
            self.device = self.resolve_device(device)
        except BackendUnavailableError:
            raise
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"device {device!r} is not a device of the {self.name} backend") from exc
        self._array_type = type(self.xp.empty(0, device=self.device))

    def __repr__(self):
        return f"{type(self).__name__}(device={self.device!r})"

    def __str__(self):
        return self.name

    # What the library needs and where it computes.

    @classmethod
    def why_unavailable(cls) -> str | None:
        """Why this backend cannot run here (with the install command), or None when it can."""
        try:
            importlib.import_module(cls.package)
        except ImportError:
            return f"the {cls.name} backend needs the package {cls.package!r}: {cls.install}"
        return None

    def resolve_device(self, device):
        """The device object ``device`` names; None picks the default. Raises ValueError for others."""
        if device is None or device == "cpu":
            return self.xp.asarray(0).device
        return device if isinstance(device, self.xp.Device) else self.xp.Device(device)

    @property
    def on_gpu(self) -> bool:
        """Whether arrays live on a GPU, where each operation costs a launch of fixed host time."""
        return False

    # Dtypes and moves between host and device.

    def dtype(self, dtype):
        """The library's floating dtype for ``dtype`` (a name, a NumPy dtype, ...)."""
        return getattr(self.xp, dtype_name(dtype))

    def asarray(self, host, dtype=None):
        """A host (NumPy) array as an array of this backend on its device."""
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def owns(self, x) -> bool:
        """Whether ``x`` is already an array of this backend on its device."""
        return type(x) is self._array_type and x.device == self.device

    def to_device(self, x, dtype=None):
        """``x`` (any backend's array, or host data) as an array of this backend on its device, in ``dtype``.

        No copy when ``x`` is already there in that dtype; otherwise one
        transfer, through the host when ``x`` lives on another library.
        """
        if self.owns(x) and (dtype is None or x.dtype == dtype):
            return x  # the common case, told in three attribute reads
        try:
            same = array_api_compat.array_namespace(x) is self.xp
        except TypeError:
            same = False
        if same:
            if array_api_compat.device(x) != self.device:
                x = array_api_compat.to_device(x, self.device)
            return x if dtype is None or x.dtype == dtype else self.xp.astype(x, dtype)
        from .registry import to_numpy  # another library's array: its own backend copies it to the host

        host = to_numpy(x)
        if host.dtype == object:
            raise TypeError(f"expected a numeric array; got {type(x).__name__} of objects")
        return self.asarray(host, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        """Copy ``x``, an array of this library, to the host."""
        import numpy as np

        return np.from_dlpack(x.to_device(self.xp.asarray(0).device))

    def synchronize(self):
        """Wait until the device has finished all work queued so far (nothing to wait for on a CPU)."""

    # Work the standard spells in several operations.

    def take_rows(self, x, indices):
        """``take(x, indices, axis=0)`` for non-negative ``indices``."""
        return self.xp.take(x, indices, axis=0)

    # Random numbers.

    def device_rng(self, seed: int):
        """This library's own generator for per-iteration draws (``Generator.uniform``); NumPy's by default."""
        import numpy as np

        return np.random.default_rng(seed)

    def device_uniform(self, rng, shape, dtype):
        """Draw U[0, 1) of ``shape`` and ``dtype`` (a name) with ``rng`` from ``device_rng``."""
        return self.asarray(rng.random(shape, dtype=dtype))

    def rng_state(self, seed):
        """The state of the counter-based generator that a pure training step carries (see ``uniform``)."""
        words = seed_sequence(seed).generate_state(1)
        return {"key": self.xp.asarray(int(words[0]), dtype=self.xp.int64, device=self.device),
                "counter": self.xp.zeros((), dtype=self.xp.int64, device=self.device)}

    def rng_state_to_host(self, state):
        """The carried random ``state`` as NumPy arrays (for a checkpoint)."""
        from .registry import to_numpy

        return {key: to_numpy(value) for key, value in state.items()}

    def rng_state_from_host(self, host):
        """The carried random state that ``rng_state_to_host`` gave ``host`` for, on this device."""
        return {key: self.asarray(value) for key, value in host.items()}

    def uniform(self, state, shape, dtype):
        """Draw U[0, 1) from the carried ``state``; return ``(values, next_state)``.

        A counter-based generator: value i of the draw is a hash of (key,
        counter + i), so the draw is a pure function of its state, and the
        same state gives the same numbers on every library and in compiled
        steps. 24 random bits per value.
        """
        xp = self.xp
        n = math.prod(shape)
        i = xp.arange(n, dtype=xp.int64, device=self.device) + state["counter"]
        bits = _mix(_mix(i & _MASK) ^ state["key"])
        values = xp.astype(bits >> 8, dtype) * (2.0**-24)
        return xp.reshape(values, tuple(shape)), {"key": state["key"], "counter": state["counter"] + n}

    # Fast paths.

    def update_layout(self) -> str:
        """How an elementwise update rule of several passes updates a model's parameters fastest here.

        ``"each"``: one rule call per parameter. ``"flat"``: one call on the
        concatenation of all parameters (on a GPU, where every array
        operation costs a launch of fixed host time, and a rule such as Adam
        makes about ten per parameter). ``"blocks"``: large parameters in row
        blocks on CPU threads (``block_map``). The numbers are the same
        every way: the rules are elementwise. ``anynet.training.optimizer``
        asks once, when it lays out a model's optimizer state.
        """
        if self.on_gpu:
            return "flat"
        return "blocks" if self.block_map() is not None else "each"

    def block_map(self):
        """A ``map(f, items) -> list`` on CPU threads where updating row blocks on them pays, else None."""
        return None

    def threads(self) -> int:
        """CPU threads this backend's own parallel work may use."""
        return 1

    def compile(self, step, donate=()):
        """``step`` compiled by this library, or None where it runs eagerly.

        ``donate`` names the positional arguments whose buffers the compiled
        step may reuse for its results.
        """
        return None

    def compile_pays(self) -> bool:
        """Whether ``Solver(compile="auto")`` compiles: where compiled steps measured faster than eager ones."""
        return self.can_compile

    def compile_count(self) -> int | None:
        """How many compilations this process has made (None where this library does not tell)."""
        return None

    # Layers the library computes faster than anynet's standard-only code (``anynet.nn`` asks through
    # ``registry.fast_path``). None: the standard path. Subclasses give functions of arrays alone (no device), so
    # that a layer finds them from its inputs, traced or not:
    #   conv2d_forward(x, w, b, stride, pad) -> (out, ctx); conv2d_backward(dout, ctx, need_dx) -> (dx, dw, db)
    #   max_pool2d_forward(x, HH, WW, stride) -> (out, ctx); max_pool2d_backward(dout, ctx) -> dx
    # and, beneath the standard im2col path, its two copying steps (``anynet.nn.conv``'s functions of the name):
    #   pad2d(x, top, bottom, left, right) -> x padded; col2im(dcols, H, W, HH, WW, stride, pad) -> dx
    conv2d_forward = None
    conv2d_backward = None
    max_pool2d_forward = None
    max_pool2d_backward = None
    pad2d = None
    col2im = None

    @staticmethod
    def bfloat16_of(xp):
        """The library's bfloat16 dtype (outside the standard: a capability), or None where it has none."""
        return None


class OnBackend:
    """Something that computes on ``self.backend`` (a ``Backend``): its namespace and device are the backend's."""

    @property
    def xp(self):
        """The Array API namespace of the backend."""
        return self.backend.xp

    @property
    def device(self):
        """The device arrays live on."""
        return self.backend.device
