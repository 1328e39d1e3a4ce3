"""Whether a compiled step is being traced: module-level caches must not keep arrays made while it is.

A compiled step's intermediate arrays belong to its graph (JAX tracers,
dynamo's fake tensors); a cache that kept one would hand it out after the
trace ended. Code that caches arrays (``anynet.nn.layers``' constants) asks
``tracing()`` first; ``compiled_call`` raises the flag around every call of a
compiled function, which is when it traces.
"""

from __future__ import annotations

_tracing = False


def tracing() -> bool:
    """Whether a compiled step is being traced (or run): caches must not keep arrays made now."""
    return _tracing


def compiled_call(fn):
    """Wrap the compiled ``fn`` so that ``tracing()`` is true while it runs (and so while it is traced)."""

    def call(*args):
        global _tracing
        _tracing = True
        try:
            return fn(*args)
        finally:
            _tracing = False

    call.compiled = fn
    return call
