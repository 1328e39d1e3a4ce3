"""array-api-strict: NumPy underneath, but anything outside the standard is an error."""

from __future__ import annotations

from .base import Backend


class StrictBackend(Backend):
    """array-api-strict arrays, on its CPU device or its extra test devices (``Device("device1")``)."""

    name = "array_api_strict"
    package = "array_api_strict"
    namespace_module = "array_api_strict"
    install = 'pip install "anynet[strict]"'

    def block_map(self):
        """Threads pay as they do on NumPy, which computes underneath."""
        from .numpy import NumpyBackend

        return NumpyBackend.block_map(self)

    def threads(self):
        from .numpy import threads

        return threads()
