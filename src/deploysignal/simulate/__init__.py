"""Seeded scenario simulator (also behind ``deploysignal simulate`` and ``deploysignal demo``), including
per-request logs of a randomised canary split (:func:`simulate_split`)."""

from ._core import SCENARIOS, NoiseSpec, Regression, Simulation, simulate, simulate_streams
from ._patterns import Pattern, apply_pattern
from ._split import SPLIT_EFFECTS, SPLIT_METRICS, SPLIT_WORLDS, SplitRequests, simulate_split, split_signals, write_split

__all__ = [
    "SCENARIOS", "SPLIT_EFFECTS", "SPLIT_METRICS", "SPLIT_WORLDS", "NoiseSpec", "Pattern", "Regression", "Simulation", "SplitRequests",
    "apply_pattern", "simulate", "simulate_split", "simulate_streams", "split_signals", "write_split",
]
