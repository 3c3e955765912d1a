"""Family B: structural rules for known archetypes. They spend no alpha and carry no guarantee."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..calibration import C_HI, CompiledConfig, stack_arrays
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
    error rate above ``(1 + error_increase)`` x reference (reference = baseline cell mean for rates,
    floored at ``error_floor`` and at the baseline's resolution, one error at the baseline volume),
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

    def __init__(
        self, config: CompiledConfig | Sequence[CompiledConfig], settings: RuleSettings | None = None, *, two_sample: bool = False
    ) -> None:
        first = config if isinstance(config, CompiledConfig) else config[0]
        self.settings = settings or RuleSettings()
        self.two_sample = two_sample
        arr = stack_arrays(config)
        self._raw_location = arr["raw_location"]  # (P, cells, k)
        self._P = self._raw_location.shape[0]
        names = self._names = first.names
        s = self.settings
        self._bleed_idx = np.array([names.index(n) for n in s.slowbleed_signals if n in names], dtype=int)
        self._bleed_two = arr["two_sided"][self._bleed_idx]
        self._lam = 2.0 / (s.slowbleed_span + 1.0)
        self._bleed_on = s.slowbleed_action != "off" and self._bleed_idx.size >= s.slowbleed_min
        self._err = names.index(s.error_signal) if s.error_signal in names else None
        # a discrete error rate (errors / requests) cannot rise by less than one error: its reference is
        # floored at the baseline's resolution, i.e. the rate of one error at the baseline volume
        self._err_res = 0.0 if self._err is None else arr["resolution"][:, self._err]
        self._lat = names.index(s.latency_signal) if s.latency_signal in names else None
        self._succ = names.index(s.success_signal) if s.success_signal in names else None
        self._slo_on = s.slo_action != "off" and any(i is not None for i in (self._err, self._lat, self._succ))
        self._reset()

    def _reset(self) -> None:
        P = self._P
        self._ewma = np.zeros((P, self._bleed_idx.size))
        self._streak = np.zeros(P, dtype=int)
        self._bleed_fired = np.zeros(P, dtype=bool)
        self._slo_fired = np.zeros(P, dtype=bool)
        self._reason = ""

    def _slo_checks(self, raw: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per stream: did a check fail, and did any check see data."""
        s = self.settings
        fail = np.zeros(raw.shape[0], dtype=bool)
        seen = np.zeros(raw.shape[0], dtype=bool)
        with np.errstate(invalid="ignore"):
            if self._err is not None:
                v, r = raw[:, self._err], np.maximum(np.maximum(ref[:, self._err], s.error_floor), self._err_res)
                fail |= v > (1.0 + s.error_increase) * r
                seen |= ~(np.isnan(v) | np.isnan(r))
            if self._lat is not None:
                v, r = raw[:, self._lat], ref[:, self._lat]
                fail |= v > s.latency_multiplier * r
                seen |= ~(np.isnan(v) | np.isnan(r))
            if self._succ is not None:
                v = raw[:, self._succ]
                fail |= v < s.min_success
                seen |= ~np.isnan(v)
        return fail, seen

    def step(
        self, z: np.ndarray, raw: np.ndarray, cell: int, control_z: np.ndarray | None = None, control_raw: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance ``P`` streams; return (drifting count, fired, fired-with-rollback-action), each (P,)."""
        s = self.settings
        drifting = np.zeros(self._P, dtype=int)
        if self._bleed_on:
            zb = z[:, self._bleed_idx]
            if self.two_sample:
                cz = control_z[:, self._bleed_idx] if control_z is not None else np.full_like(zb, np.nan)
                zb = (zb - cz) / math.sqrt(2.0)
            zb = np.clip(zb, -C_HI, C_HI)
            ok = ~np.isnan(zb)
            self._ewma = np.where(ok, (1 - self._lam) * self._ewma + self._lam * np.where(ok, zb, 0.0), self._ewma)
            drift = np.where(self._bleed_two, np.abs(self._ewma), self._ewma) >= s.slowbleed_threshold
            drifting = drift.sum(axis=1)
            newly = ~self._bleed_fired & (drifting >= s.slowbleed_min)
            if newly.any() and self._P == 1:
                names = [self._names[i] for i in self._bleed_idx[drift[0]]]
                self._add_reason(s.slowbleed_action, f"slowbleed: {drifting[0]} infrastructure signals drifting ({', '.join(names)})")
            self._bleed_fired |= newly
        if self._slo_on:
            if self.two_sample:
                ref = control_raw if control_raw is not None else np.full_like(raw, np.nan)
            else:
                ref = self._raw_location[:, cell]
            fail, seen = self._slo_checks(raw, ref)
            self._streak = np.where(fail, self._streak + 1, np.where(seen, 0, self._streak))
            newly = ~self._slo_fired & (self._streak >= s.consecutive)
            if newly.any() and self._P == 1:
                self._add_reason(s.slo_action, f"static SLO checks failed {self._streak[0]} consecutive ticks")
            self._slo_fired |= newly
        fired = self._bleed_fired | self._slo_fired
        rollback = (self._bleed_fired & (s.slowbleed_action == "rollback")) | (self._slo_fired & (s.slo_action == "rollback"))
        return drifting, fired, rollback

    def _add_reason(self, action: str, reason: str) -> None:
        self._reason = (self._reason + " | " if self._reason else "") + f"[{action}] {reason}"

    def update(self, obs: Observation) -> Evidence:
        """One tick of a single stream."""
        cz = None if obs.control_z is None else obs.control_z[None]
        craw = None if obs.control_raw is None else obs.control_raw[None]
        drifting, fired, rollback = self.step(obs.z[None], obs.raw[None], obs.cell, cz, craw)
        drivers = tuple(self._names[i] for i in self._bleed_idx[np.argsort(-self._ewma[0], kind="stable")[:3]]) if fired[0] else ()
        return Evidence(
            family="B",
            statistic=float(drifting[0]),
            log_wealth=math.nan,
            log_threshold=math.nan,
            fired=bool(fired[0]),
            reason=self._reason if fired[0] else "",
            drivers=drivers,
            action="rollback" if rollback[0] else "warn",
        )

    _ARRAYS = ("ewma", "streak", "bleed_fired", "slo_fired")

    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = {name: getattr(self, "_" + name).tolist() for name in self._ARRAYS}
        st["reason"] = self._reason
        return st

    def load_state(self, st: dict[str, Any]) -> FamilyB:
        for name in self._ARRAYS:
            cur = getattr(self, "_" + name)
            arr = np.array(st[name], dtype=cur.dtype)
            if arr.shape != cur.shape:
                raise ValueError(f"state array {name} has shape {arr.shape}, expected {cur.shape}")
            setattr(self, "_" + name, arr)
        self._reason = st["reason"]
        return self
