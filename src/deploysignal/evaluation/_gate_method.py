"""The deploysignal gate as an evaluated method."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibration import compile_baseline
from ..gate import Gate, GateSettings
from ..telemetry import Frame
from ._method import MethodResult

__all__ = ["GateMethod"]


@dataclass
class GateMethod:
    """Compile the baseline, run :class:`~deploysignal.gate.Gate` tick by tick until its verdict is final.

    One-sample mode when no control is given, two-sample mode (same settings otherwise) when it is.
    The trace is :math:`\\max_f \\log W_{f,t} / \\log(1/\\alpha_f)` over the families with alpha: the
    gate rolls back (for a family with alpha) exactly when it reaches 1. Rules (family B) may also roll
    back; they have no wealth and do not appear in the trace.

    ``compile_kwargs`` go to :func:`~deploysignal.calibration.compile_baseline`; by default the MCD robust
    covariance is skipped (``robust_covariance=False``) because no family of the gate reads it at this
    revision and it dominates compile time in Monte-Carlo runs; the model check is skipped too
    (``check_model=False``): the evaluation scores verdicts, which do not depend on it.
    """

    settings: GateSettings = field(default_factory=GateSettings)
    seed: int = 0
    compile_kwargs: dict[str, Any] = field(default_factory=lambda: {"robust_covariance": False, "check_model": False})
    name: str = "gate"

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult:
        config = compile_baseline(baseline, seed=self.seed, **self.compile_kwargs)
        settings = self.settings
        if control is not None and settings.mode != "two-sample":
            settings = settings.model_copy(update={"mode": "two-sample"})
        elif control is None and settings.mode != "one-sample":
            settings = settings.model_copy(update={"mode": "one-sample"})
        gate = Gate(config, settings)
        names = config.names
        cv = canary.select(names)
        ctl = control.select(names).values if control is not None else None
        n = len(cv)
        trace = np.full(n, np.nan)
        for i in range(n):
            cohort = None if cv.cohort is None else str(cv.cohort[i])
            d = gate.update(cv.timestamps[i], cv.values[i], cohort=cohort, control=None if ctl is None else ctl[i])
            ratios = [ev.log_wealth / ev.log_threshold for ev in d.evidence if math.isfinite(ev.log_wealth) and ev.log_threshold > 0]
            trace[i] = max(ratios) if ratios else np.nan
            if d.final:
                if d.verdict == "rollback":
                    return MethodResult(i, "rollback", i, trace, 1.0, "log-wealth / log-bound")
                if d.verdict == "proceed":
                    return MethodResult(None, "proceed", i, trace, 1.0, "log-wealth / log-bound")
                return MethodResult(None, "extend", i, trace, 1.0, "log-wealth / log-bound")
        return MethodResult(None, "extend", None, trace, 1.0, "log-wealth / log-bound")
