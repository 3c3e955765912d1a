"""Gate settings: alpha budget, mode, window and verdict policy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from ..detectors import RuleSettings

__all__ = ["DEFAULT_SHARES", "GateSettings"]

#: DESIGN.md alpha shares; the remaining 20% is the reserve, which pays for early proceed.
DEFAULT_SHARES = {"A": 0.4, "C": 0.2, "D": 0.1, "E": 0.1}


class GateSettings(BaseModel):
    """How a gate decides.

    Attributes
    ----------
    alpha : float
        Total false-rollback budget. Families combine by Bonferroni (valid under any dependence):
        family f fires at level ``shares[f] * alpha``.
    mode : {"one-sample", "two-sample"}
        Against the compiled baseline, or against a live control stream given beside the canary.
    window : int
        Planned observation window in ticks; at its end the gate says proceed or extend.
    max_extensions : int
        Extra windows the gate may run after an ``extend``; the e-detector's horizon is
        ``window * (1 + max_extensions)``.
    shares : dict
        Alpha share per family; families absent from the gate are simply not run. Sum must be <= 1.
    early_proceed, tau, min_proceed_fraction : bool, float, float
        Proceed before the window ends once every harmful shift is shown below ``tau`` (score sd units),
        but not before ``min_proceed_fraction * window`` ticks. Error budget: ``proceed_share * alpha``
        from the reserve: P(early proceed while some channel's harm >= tau) <= that budget (Ville;
        Monte-Carlo checked at the boundary in ``tests/montecarlo/test_validity_proceed.py``) for a
        harm that is constant from the canary's first tick. Off by default: a regression that is still
        growing (a slow ramp), or one that shrinks, can be proceeded early; turn it on where regressions
        are steps. In one-sample mode a canary must beat ``tau`` by more than the baseline's
        uncertainty allows (each cell's estimated level, the day-to-day variation and
        ``drift_allowance``) before it can proceed early.
    min_valid_fraction : float
        Share of ticks that must be valid (at least half the signals present; control present in
        two-sample mode) to proceed; below it the gate says extend. Missing data never rolls back.
    suggestive_fraction : float
        At window end, a family whose running-max log-wealth reached this fraction of its log bound
        makes the verdict extend instead of proceed.
    drift_allowance : float
        Global baseline-to-canary drift (score sd) treated as null in one-sample mode. With
        ``a_nuisance="mixture"`` its square joins the day-offset variance ``v_g``, which caps family
        A's evidence for a persistent shift ``Delta`` at about ``Delta^2 / (2 v_g)`` nats: family A
        then never detects a persistent shift below about ``4.2 sqrt(v_g)`` score sd (12 signals,
        alpha_A 0.02), e.g. about 2.1 sd with ``drift_allowance=0.5``.
    a_nuisance : {"learned", "band", "capped", "mixture"}
        How family A treats its nuisance terms (cell levels, day offset, AR(1) error). ``learned``
        (default, 0.4.0's treatment) centres each bet on their posterior mean learnt from the canary:
        it detects moderate shifts, but a gross harmful shift can be explained away as nuisance and
        its evidence is not monotone in harm (issue 22). ``band`` tests against the upper edge of the
        band the baseline justifies: no harmful shift is explained away and the evidence is monotone
        in harm, but a shift counts only beyond the band, so moderate shifts are detected later or
        not at all (docs/one-sample.md gives the measured cost). ``capped`` centres on the learned
        mean capped at the band's upper edge: gross shifts as with the band, moderate ones somewhat
        later than ``learned``; monotone in harm in the property test, not by proof. ``mixture``
        integrates the level nuisance out of a Gaussian likelihood ratio (monotone in harm by
        construction for one-sided signals; its validity is approximate, not proved: the per-tick
        factor on the compiler's clipped Gaussian score is above 1, and an innovation variance above
        1 or autocorrelation in the canary's scores makes it false-alarm above alpha_A, where
        ``band`` does not) and adds the band's change detector
        (:mod:`deploysignal.detectors._nuisance_mixture`). A certified config covers only the
        treatment its backtest ran (``calibrate --a-nuisance``). Left out of
        :meth:`model_dump` when ``learned``: settings written before the key existed mean ``learned``
        and keep their bytes.
    out_of_domain : {"reject", "missing"}
        What a value outside its signal's domain (declared range, :mod:`deploysignal.telemetry._domain`)
        does: ``reject`` the batch naming row and signal (default; checked on new input only), or
        ``missing``: only that signal of that tick is taken as missing (whichever side it lies on),
        recorded in ``schema_continuity``, the tick not counted as valid. Left out of :meth:`model_dump` when ``reject``: settings written
        before the field existed mean ``reject`` and keep their bytes.
    d_max_period : int
        Longest period (ticks) of family D's filter bank (2..``d_max_period``). 48 since issue 22 (a period-30
        oscillation went undetected with 24). Left out of :meth:`model_dump` when 24, so audit headers and
        stored specs written before the field existed keep their bytes: where settings are read back
        (``replay``, the service's stored specs) a missing key means 24; new input without it means 48.
    drivers_rule : {1, 2}
        How a fired family names its drivers (:mod:`deploysignal.detectors._drivers`): 2 (default since
        issue 25) names only signals whose own evidence supports the verdict; 1, the rule before it,
        named the largest three whether they had changed or not. Explanation only: evidence and
        verdicts do not depend on it. Left out of :meth:`model_dump` when 1, so audit headers and stored
        specs written before the field existed keep their bytes: where settings are read back a missing
        key means 1; new input without it means 2.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    mode: Literal["one-sample", "two-sample"] = "one-sample"
    window: int = Field(480, ge=1)
    max_extensions: int = Field(1, ge=0)
    shares: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SHARES))
    proceed_share: float = Field(0.2, ge=0.0, le=1.0)
    early_proceed: bool = False
    tau: float = Field(0.3, gt=0.0)
    min_proceed_fraction: float = Field(0.5, ge=0.0, le=1.0)
    min_valid_fraction: float = Field(0.8, ge=0.0, le=1.0)
    suggestive_fraction: float = Field(0.25, gt=0.0, le=1.0)
    drift_allowance: float = Field(0.0, ge=0.0)
    a_nuisance: Literal["learned", "band", "capped", "mixture"] = "learned"
    rules: RuleSettings = Field(default_factory=RuleSettings)
    out_of_domain: Literal["reject", "missing"] = "reject"
    d_max_period: int = Field(48, ge=2, le=1440)
    drivers_rule: int = Field(2, ge=1, le=2)

    @model_serializer(mode="wrap")
    def _omit_default_policy(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if out.get("out_of_domain") == "reject":
            del out["out_of_domain"]
        if out.get("a_nuisance") == "learned":  # settings (audit headers, stored specs) written before the key keep their bytes
            del out["a_nuisance"]
        if out.get("d_max_period") == 24:  # likewise: the bank before issue 22 (written 24 is read back as 24)
            del out["d_max_period"]
        if out.get("drivers_rule") == 1:  # likewise: drivers named by the rule before issue 25
            del out["drivers_rule"]
        return out

    @model_validator(mode="after")
    def _check_shares(self) -> GateSettings:
        bad = set(self.shares) - {"A", "C", "D", "E"}
        if bad:
            raise ValueError(f"shares for unknown families {sorted(bad)}; valid: A, C, D, E")
        if any(v <= 0 for v in self.shares.values()):
            raise ValueError("each alpha share must be > 0 (drop the family instead)")
        if sum(self.shares.values()) + self.proceed_share > 1.0 + 1e-12:
            raise ValueError("alpha shares plus proceed_share must not exceed 1")
        return self

    @property
    def horizon(self) -> int:
        return self.window * (1 + self.max_extensions)
