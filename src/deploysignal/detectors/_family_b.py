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
from ._drivers import DRIVERS_RULE, MOST
from ._kernels import as_rows, check_cell, check_cells, family_b_run, family_b_step

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
        self, config: CompiledConfig | Sequence[CompiledConfig], settings: RuleSettings | None = None, *, two_sample: bool = False,
        drivers_rule: int = DRIVERS_RULE,
    ) -> None:
        first = config if isinstance(config, CompiledConfig) else config[0]
        if drivers_rule not in (1, 2):
            raise ValueError(f"drivers_rule must be 1 or 2, got {drivers_rule!r}")
        #: how a fire names its drivers (:mod:`deploysignal.detectors._drivers`; 1 = before issue 25)
        self.drivers_rule = int(drivers_rule)
        self.settings = settings or RuleSettings()
        self.two_sample = two_sample
        arr = stack_arrays(config)
        self._raw_location = np.ascontiguousarray(arr["raw_location"], dtype=float)  # (P, cells, k)
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
        self._err_res = np.zeros(self._P) if self._err is None else np.ascontiguousarray(arr["resolution"][:, self._err], dtype=float)
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
        self._fire_drivers: tuple[str, ...] = ()  # rule 2: frozen at the slowbleed fire

    def _kernel_args(self) -> tuple[Any, ...]:
        s = self.settings
        return (
            self.two_sample, C_HI, self._bleed_on, self._bleed_idx, self._bleed_two, self._lam, s.slowbleed_threshold,
            s.slowbleed_min, self._slo_on, -1 if self._err is None else self._err, -1 if self._lat is None else self._lat,
            -1 if self._succ is None else self._succ, self._err_res, s.error_floor, s.error_increase, s.latency_multiplier,
            s.min_success, s.consecutive, self._raw_location, self._ewma, self._streak, self._bleed_fired, self._slo_fired,
        )

    def _inputs(self, z: np.ndarray, raw: np.ndarray, control_z: np.ndarray | None, control_raw: np.ndarray | None, n: int) -> tuple[np.ndarray, ...]:
        shape = (n, len(self._names))
        z, raw = as_rows(z, shape, "z"), as_rows(raw, shape, "raw")
        cz = z if not self.two_sample else (as_rows(control_z, shape, "control_z") if control_z is not None else np.full(shape, np.nan))
        craw = raw if not self.two_sample else (as_rows(control_raw, shape, "control_raw") if control_raw is not None else np.full(shape, np.nan))
        return z, raw, cz, craw

    def _reasons(self, newly: int, drifting: int, ewma: np.ndarray) -> None:
        """Explain the rules that newly fired (1 slowbleed, 2 SLO, 3 both) from the state of that tick."""
        s = self.settings
        if newly & 1:
            harm = np.where(self._bleed_two, np.abs(ewma), ewma)
            on = harm >= s.slowbleed_threshold
            names = [self._names[i] for i in self._bleed_idx[on]]
            self._add_reason(s.slowbleed_action, f"slowbleed: {drifting} infrastructure signals drifting ({', '.join(names)})")
            # rule 2's drivers: the same drifting signals, largest first, frozen with the reason
            self._fire_drivers = tuple(self._names[self._bleed_idx[i]] for i in np.argsort(-harm, kind="stable") if on[i])[:MOST]
        if newly & 2:
            self._add_reason(s.slo_action, f"static SLO checks failed {self._streak[0]} consecutive ticks")

    def _rollback(self, bleed: np.ndarray, slo: np.ndarray) -> np.ndarray:
        s = self.settings
        return (bleed & (s.slowbleed_action == "rollback")) | (slo & (s.slo_action == "rollback"))

    def step(
        self, z: np.ndarray, raw: np.ndarray, cell: int, control_z: np.ndarray | None = None, control_raw: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance ``P`` streams; return (drifting count, fired, fired-with-rollback-action), each (P,).

        Compiled kernel :func:`~deploysignal.detectors._kernels.family_b_step`; a single stream's newly
        fired rules are explained in ``reason``."""
        z, raw, cz, craw = self._inputs(z, raw, control_z, control_raw, self._P)
        cell = check_cell(cell, self._raw_location.shape[1])
        drifting, newly = np.empty(self._P, dtype=np.int64), np.empty(self._P, dtype=np.int64)
        family_b_step(z, raw, cz, craw, cell, *self._kernel_args(), drifting, newly)
        if self._P == 1 and newly[0]:
            self._reasons(int(newly[0]), int(drifting[0]), self._ewma[0])
        fired = self._bleed_fired | self._slo_fired
        return drifting, fired, self._rollback(self._bleed_fired, self._slo_fired)

    def run(
        self, z: np.ndarray, raw: np.ndarray, cells: np.ndarray, control_z: np.ndarray | None = None, control_raw: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], list[tuple[str, ...]]]:
        """Advance a single stream over ``T`` ticks, as ``T`` calls of :meth:`step` would.

        Returns per tick: drifting count, fired (any rule), fired with the rollback action, the slowbleed
        EWMAs after the tick (T, n), the ``reason`` text as it stood after the tick and the drivers
        :meth:`update` would name after it (``()`` while nothing has fired).
        """
        if self._P != 1:
            raise ValueError("run() advances a single stream; use step() for several")
        T = np.shape(z)[0]
        z, raw, cz, craw = self._inputs(z, raw, control_z, control_raw, T)
        cells = check_cells(cells, T, self._raw_location.shape[1])
        drift, fired, ewma = np.empty(T, dtype=np.int64), np.empty(T, dtype=bool), np.empty((T, self._bleed_idx.size))
        bleed, slo = np.empty(T, dtype=bool), np.empty(T, dtype=bool)
        reasons = [""] * T
        frozen: list[tuple[str, ...]] = [()] * T
        start = 0
        while start < T:
            b0, s0 = bool(self._bleed_fired[0]), bool(self._slo_fired[0])
            done, newly = family_b_run(z, raw, cz, craw, cells, *self._kernel_args(), start, drift, fired, ewma)
            bleed[start:done], slo[start:done] = b0, s0  # the flags before a newly fired tick
            reasons[start:done] = [self._reason] * (done - start)
            frozen[start:done] = [self._fire_drivers] * (done - start)
            if newly:
                t = done - 1
                self._reasons(int(newly), int(drift[t]), ewma[t])
                bleed[t], slo[t], reasons[t], frozen[t] = bool(self._bleed_fired[0]), bool(self._slo_fired[0]), self._reason, self._fire_drivers
            start = done
        if self.drivers_rule == 1:  # rule 1 named the largest EWMAs of each fired tick
            frozen = [self.drivers(e) if on else () for e, on in zip(ewma, fired.tolist())]
        return drift, fired, self._rollback(bleed, slo), ewma, reasons, frozen

    def drivers(self, ewma: np.ndarray) -> tuple[str, ...]:
        """The slowbleed signals named as drivers of a fire (:mod:`deploysignal.detectors._drivers`).

        Rule 2: those drifting at the tick the slowbleed rule fired (EWMA beyond ``slowbleed_threshold``
        in the harmful direction, either direction for two-sided signals), largest first, at most
        :data:`~deploysignal.detectors._drivers.MOST`, frozen at the fire (``ewma`` is not used); none
        while only the SLO checks have fired. Rule 1 (audit logs written before it): the three with the
        largest ``ewma`` (the current tick's), drifting or not."""
        if self.drivers_rule == 1:
            return tuple(self._names[i] for i in self._bleed_idx[np.argsort(-ewma, kind="stable")[:3]])
        return self._fire_drivers

    def _add_reason(self, action: str, reason: str) -> None:
        self._reason = (self._reason + " | " if self._reason else "") + f"[{action}] {reason}"

    def update(self, obs: Observation) -> Evidence:
        """One tick of a single stream."""
        cz = None if obs.control_z is None else obs.control_z[None]
        craw = None if obs.control_raw is None else obs.control_raw[None]
        drifting, fired, rollback = self.step(obs.z[None], obs.raw[None], obs.cell, cz, craw)
        drivers = self.drivers(self._ewma[0]) if fired[0] else ()
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
        if self.drivers_rule != 1:  # rule 1's drivers are recomputed each tick (its states keep their bytes)
            st["drivers"] = list(self._fire_drivers)
        return st

    def load_state(self, st: dict[str, Any]) -> FamilyB:
        for name in self._ARRAYS:
            cur = getattr(self, "_" + name)
            arr = np.array(st[name], dtype=cur.dtype)
            if arr.shape != cur.shape:
                raise ValueError(f"state array {name} has shape {arr.shape}, expected {cur.shape}")
            setattr(self, "_" + name, arr)
        self._reason = st["reason"]
        self._fire_drivers = tuple(st.get("drivers", ()))
        return self
