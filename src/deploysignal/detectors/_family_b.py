"""Family B: structural rules for known archetypes. They spend no alpha and carry no guarantee."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..calibration import C_HI, CompiledConfig
from ..telemetry import INFRA_SIGNALS
from ._base import Evidence, Observation

__all__ = ["FamilyB", "RuleSettings"]

Action = Literal["rollback", "warn", "off"]


class RuleSettings(BaseModel):
    """Configuration of family B's rules.

    ``slowbleed``: at least ``slowbleed_min`` of the infrastructure signals have an EWMA (span
    ``slowbleed_span`` ticks) of their oriented standardised innovation beyond ``slowbleed_threshold``
    in their harmful direction (either direction for ``both`` signals). On an i.i.d. N(0,1) null the EWMA
    has sd ``sqrt(2/(span+1)/(2 - 2/(span+1)))`` = 0.091 for span 120, so the default threshold sits
    3.9 sd out per signal and four joint exceedances are negligible; the rule is a structural
    detector, not a test, and its false-fire rate is measured, not guaranteed.

    Static SLO thresholds (the checks of a classical deployment controller), evaluated per tick on the
    original scale against the baseline cell median (one-sample) or the control tick (two-sample):
    error rate above ``(1 + error_increase)`` x reference (reference floored at ``error_floor``),
    latency above ``latency_multiplier`` x reference, success rate below ``min_success``; the rule fires
    after ``consecutive`` consecutive failing ticks. Default action ``warn``: thresholds carry no error
    control (autocorrelated telemetry makes consecutive failures far likelier than independence suggests).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    slowbleed_signals: tuple[str, ...] = INFRA_SIGNALS
    slowbleed_min: int = 4
    slowbleed_span: int = 120
    slowbleed_threshold: float = 0.35
    slowbleed_action: Action = "rollback"
    error_signal: str = "downstream_error_rate"
    error_increase: float = 0.5
    error_floor: float = 1e-3
    latency_signal: str = "p99_latency_ms"
    latency_multiplier: float = 2.0
    success_signal: str = "tool_success_rate"
    min_success: float = 0.7
    consecutive: int = 5
    slo_action: Action = "warn"


class FamilyB:
    """Rules: slowbleed (>= 4 of 9 infrastructure signals drifting together) and static SLO thresholds.

    Evidence: ``statistic`` = number of slowbleed signals currently drifting; ``log_wealth`` is NaN
    (rules have no wealth); fires are sticky; ``action`` is ``rollback`` if a rule configured to roll
    back fired, else ``warn``.

    Examples
    --------
    >>> RuleSettings().slowbleed_min
    4
    """

    family = "B"
    alpha = 0.0

    def __init__(self, config: CompiledConfig, settings: RuleSettings | None = None, *, two_sample: bool = False) -> None:
        self.config = config
        self.settings = settings or RuleSettings()
        self.two_sample = two_sample
        names = config.names
        s = self.settings
        self._bleed_idx = np.array([names.index(n) for n in s.slowbleed_signals if n in names], dtype=int)
        self._bleed_two = config.arrays["two_sided"][self._bleed_idx]
        self._lam = 2.0 / (s.slowbleed_span + 1.0)
        self._bleed_on = s.slowbleed_action != "off" and self._bleed_idx.size >= s.slowbleed_min
        self._err = names.index(s.error_signal) if s.error_signal in names else None
        self._lat = names.index(s.latency_signal) if s.latency_signal in names else None
        self._succ = names.index(s.success_signal) if s.success_signal in names else None
        self._slo_on = s.slo_action != "off" and any(i is not None for i in (self._err, self._lat, self._succ))
        self._reset()

    def _reset(self) -> None:
        self._ewma = np.zeros(self._bleed_idx.size)
        self._streak = 0
        self._fired_rules: list[str] = []
        self._action = "warn"
        self._reason = ""

    def _slo_fail(self, obs: Observation) -> list[str]:
        s = self.settings
        raw = obs.raw
        if self.two_sample:
            if obs.control_raw is None:
                return []
            ref = obs.control_raw
        else:
            ref = self.config.arrays["raw_location"][obs.cell]
        out = []
        if self._err is not None and not (math.isnan(raw[self._err]) or math.isnan(ref[self._err])):
            if raw[self._err] > (1.0 + s.error_increase) * max(ref[self._err], s.error_floor):
                out.append(f"{s.error_signal} {raw[self._err]:.4g} > {1 + s.error_increase:g} x {max(ref[self._err], s.error_floor):.4g}")
        if self._lat is not None and not (math.isnan(raw[self._lat]) or math.isnan(ref[self._lat])):
            if raw[self._lat] > s.latency_multiplier * ref[self._lat]:
                out.append(f"{s.latency_signal} {raw[self._lat]:.4g} > {s.latency_multiplier:g} x {ref[self._lat]:.4g}")
        if self._succ is not None and not math.isnan(raw[self._succ]):
            if raw[self._succ] < s.min_success:
                out.append(f"{s.success_signal} {raw[self._succ]:.4g} < {s.min_success:g}")
        return out

    def update(self, obs: Observation) -> Evidence:
        s = self.settings
        drifting = 0
        if self._bleed_on:
            z = obs.z[self._bleed_idx]
            if self.two_sample:
                cz = obs.control_z[self._bleed_idx] if obs.control_z is not None else np.full(z.size, np.nan)
                z = (z - cz) / math.sqrt(2.0)
            z = np.clip(z, -C_HI, C_HI)
            ok = ~np.isnan(z)
            self._ewma = np.where(ok, (1 - self._lam) * self._ewma + self._lam * np.where(ok, z, 0.0), self._ewma)
            drift = np.where(self._bleed_two, np.abs(self._ewma), self._ewma) >= s.slowbleed_threshold
            drifting = int(drift.sum())
            if drifting >= s.slowbleed_min and "slowbleed" not in self._fired_rules:
                names = [self.config.names[i] for i in self._bleed_idx[drift]]
                self._fire("slowbleed", s.slowbleed_action, f"slowbleed: {drifting} infrastructure signals drifting ({', '.join(names)})")
        if self._slo_on and "slo" not in self._fired_rules:
            fails = self._slo_fail(obs)
            if fails:
                self._streak += 1
                if self._streak >= s.consecutive:
                    self._fire("slo", s.slo_action, f"static SLO failed {self._streak} consecutive ticks: {'; '.join(fails)}")
            elif not np.all(np.isnan(obs.raw)):
                self._streak = 0
        drivers = tuple(self.config.names[i] for i in self._bleed_idx[np.argsort(-self._ewma, kind="stable")[:3]]) if self._fired_rules else ()
        return Evidence(
            family="B",
            statistic=float(drifting),
            log_wealth=math.nan,
            log_threshold=math.nan,
            fired=bool(self._fired_rules),
            reason=self._reason,
            drivers=drivers,
            action=self._action,
        )

    def _fire(self, rule: str, action: str, reason: str) -> None:
        self._fired_rules.append(rule)
        if action == "rollback":
            self._action = "rollback"
        self._reason = (self._reason + " | " if self._reason else "") + f"[{action}] {reason}"

    def state(self) -> dict[str, Any]:
        return {"ewma": self._ewma.tolist(), "streak": self._streak, "fired_rules": list(self._fired_rules), "action": self._action, "reason": self._reason}

    def load_state(self, st: dict[str, Any]) -> FamilyB:
        self._ewma = np.array(st["ewma"], dtype=float)
        self._streak = int(st["streak"])
        self._fired_rules = list(st["fired_rules"])
        self._action = st["action"]
        self._reason = st["reason"]
        return self
