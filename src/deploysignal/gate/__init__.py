"""The gate: per-tick fusion of detector families into proceed / extend / rollback."""

from ._backtest import BACKTEST_LEVEL, backtest, certification_status, certify_baseline
from ._gate import FAMILY_BUILDERS, VERDICTS, BatchResult, Decision, Gate, Standardizer, check_paired
from ._runtime_check import RUNTIME_COMPONENTS, RuntimeCheck, clipped_centre, exceedance_bound, runtime_certification
from ._settings import DEFAULT_SHARES, GateSettings

__all__ = [
    "BACKTEST_LEVEL",
    "DEFAULT_SHARES",
    "FAMILY_BUILDERS",
    "VERDICTS",
    "BatchResult",
    "Decision",
    "Gate",
    "GateSettings",
    "RUNTIME_COMPONENTS",
    "RuntimeCheck",
    "Standardizer",
    "backtest",
    "certification_status",
    "certify_baseline",
    "check_paired",
    "clipped_centre",
    "exceedance_bound",
    "runtime_certification",
]
