"""Seeded scenario simulator (also behind ``deploysignal simulate`` and ``deploysignal demo``)."""

from ._core import SCENARIOS, NoiseSpec, Regression, Simulation, simulate, simulate_streams
from ._patterns import Pattern, apply_pattern

__all__ = ["SCENARIOS", "NoiseSpec", "Pattern", "Regression", "Simulation", "apply_pattern", "simulate", "simulate_streams"]
