"""Calibration compiler: baseline telemetry -> frozen, hashed CompiledConfig."""

from ._certificate import RECOMMENDATION, certificate, uncertified
from ._compiler import baseline_hash, compile_baseline
from ._config import SCHEMA_VERSION, Cell, CompiledConfig, CovarianceBlock, SignalMeta, canonical_json
from ._families import family_extras, median_heuristic
from ._model_check import CHECKS, FAMILY_LEVEL, model_check
from ._stack import SHARED_KEYS, stack_arrays
from ._transform import C_HI, C_LO, cell_keys, clip_scores, g_step_innovation, level_neighbour, transform_values

__all__ = [
    "C_HI",
    "C_LO",
    "CHECKS",
    "FAMILY_LEVEL",
    "RECOMMENDATION",
    "SCHEMA_VERSION",
    "SHARED_KEYS",
    "Cell",
    "CompiledConfig",
    "CovarianceBlock",
    "SignalMeta",
    "baseline_hash",
    "canonical_json",
    "certificate",
    "cell_keys",
    "clip_scores",
    "g_step_innovation",
    "compile_baseline",
    "family_extras",
    "level_neighbour",
    "median_heuristic",
    "model_check",
    "stack_arrays",
    "transform_values",
    "uncertified",
]
