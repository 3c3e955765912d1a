"""Detector families A..E and their shared types."""

from ._base import Evidence, FamilyDetector, Observation, log_threshold

__all__ = ["Evidence", "FamilyDetector", "Observation", "log_threshold"]
