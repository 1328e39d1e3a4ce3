"""The Solver lives in ``anynet.training.solver``; this name keeps ``from anynet.solver import Solver`` working."""

from .training.solver import Solver

__all__ = ["Solver"]
