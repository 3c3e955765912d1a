"""Detector families A..E and their shared types."""

from ._base import Evidence, FamilyDetector, Observation, log_threshold
from ._family_a import FamilyA
from ._family_b import FamilyB, RuleSettings

__all__ = ["Evidence", "FamilyA", "FamilyB", "FamilyDetector", "Observation", "RuleSettings", "log_threshold"]
