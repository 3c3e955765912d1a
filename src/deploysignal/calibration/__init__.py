"""Calibration compiler: baseline telemetry -> frozen, hashed CompiledConfig."""

from ._compiler import baseline_hash, compile_baseline
from ._config import SCHEMA_VERSION, Cell, CompiledConfig, CovarianceBlock, SignalMeta, canonical_json
from ._families import family_extras, median_heuristic
from ._stack import SHARED_KEYS, stack_arrays
from ._transform import C_HI, C_LO, cell_keys, clip_scores, g_step_innovation, level_neighbour, transform_values

__all__ = [
    "C_HI",
    "C_LO",
    "SCHEMA_VERSION",
    "SHARED_KEYS",
    "Cell",
    "CompiledConfig",
    "CovarianceBlock",
    "SignalMeta",
    "baseline_hash",
    "canonical_json",
    "cell_keys",
    "clip_scores",
    "g_step_innovation",
    "compile_baseline",
    "family_extras",
    "level_neighbour",
    "median_heuristic",
    "stack_arrays",
    "transform_values",
]
