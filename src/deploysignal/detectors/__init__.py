"""Detector families A..E and their shared types."""

from ._base import Evidence, FamilyDetector, Observation, log_threshold
from ._family_a import FamilyA
from ._family_b import FamilyB, RuleSettings
from ._family_c import FamilyC, build_family_c
from ._family_d import FamilyD, build_family_d
from ._family_e import FamilyE, build_family_e

__all__ = [
    "Evidence",
    "FamilyA",
    "FamilyB",
    "FamilyC",
    "FamilyD",
    "FamilyDetector",
    "FamilyE",
    "Observation",
    "RuleSettings",
    "build_family_c",
    "build_family_d",
    "build_family_e",
    "log_threshold",
]
