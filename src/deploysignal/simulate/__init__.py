"""Seeded scenario simulator (also behind ``deploysignal simulate`` and ``deploysignal demo``)."""

from ._core import SCENARIOS, NoiseSpec, Regression, Simulation, simulate, simulate_streams

__all__ = ["SCENARIOS", "NoiseSpec", "Regression", "Simulation", "simulate", "simulate_streams"]
