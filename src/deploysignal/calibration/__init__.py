"""Calibration compiler: baseline telemetry -> frozen, hashed CompiledConfig."""

from .._lazy import lazy_attributes
from ._certificate import RECOMMENDATION, certificate, uncertified
from ._config import SCHEMA_VERSION, Cell, CompiledConfig, CovarianceBlock, SignalMeta, canonical_json
from ._stack import SHARED_KEYS, stack_arrays
from ._transform import C_HI, C_LO, cell_keys, clip_scores, g_step_innovation, level_neighbour, transform_values

# the compiler and the model check import scipy.stats and statsmodels (seconds): loaded on first use, so
# that a gate on a compiled config starts without them
__getattr__ = lazy_attributes(__name__, {
    "baseline_hash": "._compiler", "compile_baseline": "._compiler", "family_extras": "._families",
    "median_heuristic": "._families", "CHECKS": "._model_check", "FAMILY_LEVEL": "._model_check", "model_check": "._model_check",
})

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
