"""The optional packages a sweep needs (Dask, and Optuna for a search), and the one error that names them."""

from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install "anynet[sweep]"'


class MissingDependency(ImportError):
    """A sweep needs a package that is not installed; the message says how to install it."""


def require(module: str, what: str):
    """Import ``module`` or raise ``MissingDependency`` naming ``what`` needs it and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module}, which is not installed: {INSTALL_HINT}") from None
