"""The gate: per-tick fusion of detector families into proceed / extend / rollback."""

from ._gate import FAMILY_BUILDERS, VERDICTS, BatchResult, Decision, Gate, Standardizer, check_paired
from ._settings import DEFAULT_SHARES, GateSettings

__all__ = ["DEFAULT_SHARES", "FAMILY_BUILDERS", "VERDICTS", "BatchResult", "Decision", "Gate", "GateSettings", "Standardizer", "check_paired"]
