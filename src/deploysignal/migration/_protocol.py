"""Confidence-gated phased migration: shadow -> canary -> progressive steps -> monitoring tail.

The protocol consumes paired scores (see :class:`~deploysignal.migration.PairScores`, positive =
challenger worse) with their timestamps; it does no I/O and reads no clock.  It is vectorised over a
batch of independent migrations (the simulation runs hundreds at once; a live migration is ``batch=1``).

Decisions
---------
* **Promotion out of shadow** (conjunctive): for every dimension ``d`` the non-inferiority null
  ``H0_d: E[x_d] >= margin_d`` is rejected by Holm at ``alpha_promote`` over anytime-valid p-values.
  Holm needs no assumption on the dependence between dimensions.
* **Rollback** (any phase, disjunctive): (a) Holm rejects some harm null at ``share_harm * alpha_rollback``:
  for dimension ``d`` the null is ``E[x_d] <= harm_tolerances[d]`` ("worse than the incumbent by more
  than the tolerance" is harm, a smaller difference is not), and for ``latency`` it is the intersection
  of that null and "the challenger's answers exceed the SLA with probability at most ``1 - sla_quantile``"
  (its ``sla_quantile`` latency quantile within the SLA), tested by the Bonferroni combination
  ``min(1, 2 min(p_tolerance, p_sla))`` (the paper's two-sided latency check: slower by more than a
  tolerance, or the p99 beyond the SLA); (b) an e-SR change detector per dimension (Bonferroni,
  ``share_detector * alpha_rollback / D``, horizon ``horizon_pairs``, pre-change null
  ``E[x_d] <= harm_tolerances[d]``) fires; (c) the error budget of the
  current progressive step is shown exceeded (betting test of ``E[x_correctness] <= error_budget``
  on challenger-served pairs of the step at ``share_budget * alpha_rollback / steps``).
* Under the joint null "at every time, given the past, no dimension is worse than the incumbent by more
  than its tolerance, the challenger exceeds the SLA with probability at most ``1 - sla_quantile``, and
  the challenger-served correctness difference is at most ``error_budget``" the probability of any
  rollback is at most ``alpha_rollback`` (union bound of Ville, Holm, Bonferroni and Doob's
  finite-horizon bound over the first ``horizon_pairs`` pairs). A challenger exactly at every tolerance
  is the boundary of this null. The SLA observations are optional (``sla`` in :meth:`MigrationProtocol.update`;
  NaN = not observed): without them only the tolerance part of the latency test has evidence.

The harm, non-inferiority and error-budget e-processes bet adaptively by default (``bettor="agrapa"``,
see :class:`~deploysignal.migration.BettingEProcess`); ``bettor="grid"`` averages fixed fractions.
Each adaptive non-inferiority test also bets for a design alternative (``ni_design_difference``, by
default equal quality), averaged with the adaptive bet. All are valid for any predictable bet; they
differ in power only.

Strategies: ``shadow`` (full protocol), ``canary`` (no shadow gate, start at the canary),
``direct`` (cut over at once and keep the monitoring tail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .._exceptions import InputError
from ._quality import DIMENSIONS
from ._sequential import BettingEProcess, ESRDetector, holm

__all__ = ["PHASES", "MigrationProtocol", "ProtocolSettings"]

PHASES = ("shadow", "canary", "progressive", "tail", "promoted", "rolled_back")
SHADOW, CANARY, PROGRESSIVE, TAIL, PROMOTED, ROLLED_BACK = range(6)
ROLLBACK_REASONS = ("", "harm", "detector", "error_budget")


@dataclass(frozen=True)
class ProtocolSettings:
    """Knobs of the phased migration (times in seconds, fractions of traffic in (0, 1])."""

    strategy: Literal["shadow", "canary", "direct"] = "shadow"
    alpha_promote: float = 0.05
    alpha_rollback: float = 0.04
    share_harm: float = 0.4
    share_detector: float = 0.4
    share_budget: float = 0.2
    margins: tuple[float, float, float, float] = (0.02, 0.05, 0.03, 0.005)
    #: harm tolerance per dimension (same units as the scores): rollback for harm needs evidence that the
    #: challenger is worse than the incumbent by more than this. Defaults: no tolerance on correctness,
    #: semantic grade and safety (any shown degradation is harm, as before); latency 0.05 SLA units (10 ms
    #: under the paper's 200 ms p99 SLA), equal to the latency non-inferiority margin, so the paper's
    #: example challenger (median 38 -> 43 ms) is neither harmful nor blocked, and a challenger at the
    #: margin is the boundary of both tests.
    harm_tolerances: tuple[float, float, float, float] = (0.0, 0.05, 0.0, 0.0)
    #: latency quantile the SLA bounds (the paper's p99 under 200 ms): harm when the challenger's answers
    #: exceed the SLA more often than ``1 - sla_quantile``.
    sla_quantile: float = 0.99
    #: SLA harm relative to the incumbent (default): the SLA part of the latency harm test rejects only when
    #: the challenger exceeds the SLA more often than ``1 - sla_quantile`` AND more often than the incumbent
    #: on the same queries by more than ``sla_relative_tolerance`` (paired test of
    #: ``1[L_chal > SLA] - 1[L_inc > SLA]``; intersection-union, p = the larger of the two p-values), so an
    #: incumbent already over the SLA does not make an equal or better challenger "harmful". False = the
    #: absolute check alone (opt-in: harm whenever the challenger's own exceedance is over ``1 - sla_quantile``,
    #: whatever the incumbent does).
    sla_relative: bool = True
    #: how much more often than the incumbent (fraction of pairs) the challenger may exceed the SLA before
    #: the relative SLA part counts it as harm (``sla_relative=True`` only).
    sla_relative_tolerance: float = 0.0
    min_shadow_pairs: int = 200
    canary_fraction: float = 0.05
    canary_dwell_s: float = 86_400.0
    steps: tuple[float, ...] = (0.10, 0.25, 0.50, 1.00)
    step_dwell_s: float = 43_200.0
    error_budget: float = 0.01
    tail_s: float = 86_400.0
    horizon_pairs: int = 20_000
    bettor: Literal["agrapa", "grid"] = "agrapa"
    #: true difference ``E[x_d]`` at which the non-inferiority tests are powered (0 = equal quality, the
    #: usual design alternative of a non-inferiority trial), one value for every dimension or one per
    #: dimension (each below its margin): with ``bettor="agrapa"`` each test averages the adaptive bet and
    #: the Kelly bet for this alternative; None = the adaptive bet alone. The grid bettor's fixed fractions
    #: have no design alternative and ignore it.
    ni_design_difference: float | tuple[float, ...] | None = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha_promote", "alpha_rollback", "canary_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise InputError(f"{name} must lie in (0, 1), got {v}", column=name)
        for name in ("share_harm", "share_detector", "share_budget"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
                raise InputError(f"{name} must lie in (0, 1), got {v!r}", column=name)
        if abs(self.share_harm + self.share_detector + self.share_budget - 1.0) > 1e-9:
            raise InputError("share_harm + share_detector + share_budget must be 1", column="share_harm")
        if len(self.margins) != len(DIMENSIONS) or any(not 0.0 < m < 1.0 for m in self.margins):
            raise InputError(f"margins must be {len(DIMENSIONS)} values in (0, 1)", column="margins")
        if len(self.harm_tolerances) != len(DIMENSIONS) or any(
                not (isinstance(v, (int, float)) and 0.0 <= v < 1.0) for v in self.harm_tolerances):
            raise InputError(f"harm_tolerances must be {len(DIMENSIONS)} values in [0, 1), got {self.harm_tolerances}",
                             column="harm_tolerances")
        if not (isinstance(self.sla_quantile, (int, float)) and 0.5 <= self.sla_quantile < 1.0):
            raise InputError(f"sla_quantile must lie in [0.5, 1), got {self.sla_quantile!r}", column="sla_quantile")
        if not isinstance(self.sla_relative, bool):
            raise InputError(f"sla_relative must be true or false, got {self.sla_relative!r}", column="sla_relative")
        if not (isinstance(self.sla_relative_tolerance, (int, float)) and 0.0 <= self.sla_relative_tolerance < 1.0):
            raise InputError(f"sla_relative_tolerance must lie in [0, 1), got {self.sla_relative_tolerance!r}",
                             column="sla_relative_tolerance")
        for name in ("canary_dwell_s", "step_dwell_s", "tail_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < float("inf"):
                raise InputError(f"{name} must be a finite number of seconds >= 0, got {v!r}", column=name)
        if not self.steps or any(not 0.0 < s <= 1.0 for s in self.steps) or list(self.steps) != sorted(self.steps) \
                or self.steps[-1] != 1.0:
            raise InputError("steps must increase within (0, 1] and end at 1.0", column="steps")
        if self.strategy not in ("shadow", "canary", "direct"):
            raise InputError(f"strategy must be one of shadow, canary, direct; got {self.strategy!r}", column="strategy")
        if self.bettor not in ("agrapa", "grid"):
            raise InputError(f"bettor must be 'agrapa' or 'grid'; got {self.bettor!r}", column="bettor")
        if self.ni_design_difference is not None:
            d = self.design_differences()
            if len(d) != len(DIMENSIONS) or any(not -1.0 < dk < mk for dk, mk in zip(d, self.margins)):
                raise InputError(f"ni_design_difference must be one value or {len(DIMENSIONS)}, each in (-1, margin); "
                                 f"got {self.ni_design_difference}", column="ni_design_difference")
        if not 0.0 < self.error_budget < 1.0:
            raise InputError("error_budget must lie in (0, 1)", column="error_budget")

    def design_differences(self) -> tuple[float, ...]:
        """``ni_design_difference`` per dimension (empty when None)."""
        d = self.ni_design_difference
        if d is None:
            return ()
        return tuple(float(v) for v in d) if isinstance(d, (tuple, list)) else (float(d),) * len(DIMENSIONS)


@dataclass
class _Events:
    """Per-update transitions (batch-shaped boolean arrays) returned by :meth:`MigrationProtocol.update`."""

    promoted_from_shadow: NDArray[np.bool_]
    rolled_back: NDArray[np.bool_]
    finished: NDArray[np.bool_]
    reasons: list[str] = field(default_factory=list)


class MigrationProtocol:
    """State machine of a paired migration, batch-vectorised.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = MigrationProtocol(ProtocolSettings(min_shadow_pairs=50), batch=1)
    >>> t = 0.0
    >>> while p.phase[0] == SHADOW and t < 1e7:
    ...     t += 60.0
    ...     x = np.zeros((1, 4)); x[0, 0] = rng.choice([-1, 0, 1], p=[0.04, 0.93, 0.03])
    ...     _ = p.update(np.array([t]), x, np.array([True]))
    >>> p.phase_name(0)
    'canary'
    """

    def __init__(self, settings: ProtocolSettings | None = None, *, batch: int = 1) -> None:
        self.settings = s = settings or ProtocolSettings()
        self.batch = b = int(batch)
        dd = len(DIMENSIONS)
        # harm: one test per dimension of E[x_d] <= tolerance_d, and the SLA test of P(latency > SLA) <= 1 - q
        self._harm = [BettingEProcess(m=float(tol), lo=-1.0, hi=1.0, batch=b, bettor=s.bettor) for tol in s.harm_tolerances]
        self._sla = BettingEProcess(m=1.0 - s.sla_quantile, lo=0.0, hi=1.0, batch=b, bettor=s.bettor)
        # relative SLA part: paired 1[L_chal > SLA] - 1[L_inc > SLA], null E <= sla_relative_tolerance
        self._sla_rel = BettingEProcess(m=float(s.sla_relative_tolerance), lo=-1.0, hi=1.0, batch=b, bettor=s.bettor)
        design = s.design_differences() if s.bettor == "agrapa" else ()
        # the tests run on -x: null E[-x] <= -margin, design alternative E[-x] = -difference
        self._ni = [BettingEProcess(m=-mg, lo=-1.0, hi=1.0, batch=b, bettor=s.bettor, target=-design[k] if design else None)
                    for k, mg in enumerate(s.margins)]
        self._det = [ESRDetector(m=float(tol), lo=-1.0, hi=1.0, horizon=s.horizon_pairs,
                                 alpha=s.share_detector * s.alpha_rollback / dd, batch=b) for tol in s.harm_tolerances]
        self._budget = BettingEProcess(m=s.error_budget, lo=-1.0, hi=1.0, batch=b, bettor=s.bettor)
        self._budget_logthr = np.log(len(s.steps) / (s.share_budget * s.alpha_rollback))
        start = {"shadow": SHADOW, "canary": CANARY, "direct": TAIL}[s.strategy]
        self.phase = np.full(b, start, dtype=np.int64)
        self.step = np.zeros(b, dtype=np.int64)
        self.phase_start = np.full(b, np.nan)
        self.pairs = np.zeros(b, dtype=np.int64)
        self.reason = np.zeros(b, dtype=np.int64)
        self.rollback_dim = np.full(b, -1, dtype=np.int64)
        self.end_time = np.full(b, np.nan)
        self.cutover_time = np.full(b, np.nan)

    def phase_name(self, i: int) -> str:
        return PHASES[int(self.phase[i])]

    def dimension_evidence(self, i: int = 0) -> dict[str, list[float]]:
        """Log-evidence per dimension (:data:`DIMENSIONS` order) of stream ``i``, read only: ``non_inferiority``,
        the log-wealth of each dimension's non-inferiority test, and ``non_inferiority_max``, its running
        maximum, ``-log`` of the anytime-valid p-value that Holm tests for promotion out of shadow;
        ``harm``, the log-wealth of each dimension's harm test (``E[x_d] <= harm_tolerances[d]``), and
        ``harm_max``, ``-log`` of the p-value Holm tests for rollback (:meth:`harm_p_values`; for latency
        it combines the tolerance and the SLA tests); ``sla`` and ``sla_max``, the SLA test's log-wealth
        and running maximum (one value, part of ``latency``); ``detector``,
        the change detector's log statistic (rollback at ``detector_log_threshold``; ``-inf`` as ``None``);
        ``error_budget``, the log-wealth of the current progressive step's error-budget test (one value,
        for ``correctness``; rollback at :meth:`decision_levels` ``error_budget_log``)."""
        det = [float(d.log_statistic()[i]) for d in self._det]
        return {"non_inferiority": [float(e.log_wealth()[i]) for e in self._ni],
                "non_inferiority_max": [max(0.0, float(-np.log(e.p_value()[i]))) for e in self._ni],
                "harm": [float(e.log_wealth()[i]) for e in self._harm],
                "harm_max": [max(0.0, float(-np.log(p))) for p in self.harm_p_values()[i]],
                "sla": [float(self._sla.log_wealth()[i])],
                "sla_max": [max(0.0, float(-np.log(self.sla_p_value()[i])))],
                "detector": [v if np.isfinite(v) else None for v in det],  # type: ignore[misc]
                "error_budget": [float(self._budget.log_wealth()[i])]}

    def sla_p_value(self) -> NDArray[np.float64]:
        """Anytime-valid p-value of the SLA part of the latency harm test, ``(batch,)``: the absolute test's
        (``P(L_chal > SLA) <= 1 - sla_quantile``) and, with ``sla_relative`` (default), the larger of it and the
        paired test's (``P(L_chal > SLA) - P(L_inc > SLA) <= sla_relative_tolerance``). The larger of two
        anytime-valid p-values is anytime-valid for the union of their nulls (intersection-union test):
        whichever null holds, its own p-value bounds the crossing probability (Ville)."""
        p = self._sla.p_value()
        return np.maximum(p, self._sla_rel.p_value()) if self.settings.sla_relative else p

    def harm_p_values(self) -> NDArray[np.float64]:
        """Anytime-valid p-values of the harm nulls, ``(batch, 4)`` in :data:`DIMENSIONS` order (Holm tests
        them for rollback); latency's is ``min(1, 2 min(p_tolerance, p_sla))`` (Bonferroni of its two parts)."""
        p = np.stack([e.p_value() for e in self._harm], axis=1)
        k = DIMENSIONS.index("latency")
        p[:, k] = np.minimum(1.0, 2.0 * np.minimum(p[:, k], self.sla_p_value()))
        return p

    def decision_levels(self) -> dict[str, float]:
        """The levels the protocol decides at: ``promote_alpha`` (Holm over the non-inferiority p-values),
        ``harm_alpha`` (Holm over the harm p-values), ``detector_log`` (:attr:`detector_log_threshold`)
        and ``error_budget_log`` (the error-budget test's log-wealth level)."""
        s = self.settings
        return {"promote_alpha": float(s.alpha_promote), "harm_alpha": float(s.share_harm * s.alpha_rollback),
                "detector_log": self.detector_log_threshold, "error_budget_log": float(self._budget_logthr)}

    @property
    def detector_log_threshold(self) -> float:
        """The change detector's alarm level (log scale)."""
        return float(self._det[0].log_threshold)

    def rollback_reason(self, i: int) -> str:
        return ROLLBACK_REASONS[int(self.reason[i])]

    def rollback_dimension(self, i: int) -> str:
        """The dimension whose evidence rolled stream ``i`` back: for a harm rollback the one with the
        smallest harm p-value (``latency_sla`` when latency's came from its SLA test), for a detector the
        first that fired, ``correctness`` for the error budget; ``""`` when not rolled back."""
        k = int(self.rollback_dim[i])
        return "" if k < 0 else (*DIMENSIONS, "latency_sla")[k]

    def exposure(self) -> NDArray[np.float64]:
        """Fraction of live traffic the challenger answers, per stream."""
        s = self.settings
        steps = np.asarray(s.steps)
        out = np.zeros(self.batch)
        out[self.phase == CANARY] = s.canary_fraction
        prog = self.phase == PROGRESSIVE
        out[prog] = steps[np.minimum(self.step[prog], len(steps) - 1)]
        out[(self.phase == TAIL) | (self.phase == PROMOTED)] = 1.0
        return out

    def update(self, t: NDArray[np.float64], x: NDArray[np.float64], paired: NDArray[np.bool_],
               served: NDArray[np.bool_] | None = None, sla: NDArray[np.float64] | None = None,
               sla_incumbent: NDArray[np.float64] | None = None) -> _Events:
        """Advance every stream by one query.

        Parameters
        ----------
        t : (batch,) float
            Query timestamps (seconds, non-decreasing per stream).
        x : (batch, 4) float
            Paired scores in [-1, 1], positive = challenger worse; NaN = dimension missing.
        paired : (batch,) bool
            True when both agents answered this query (a paired observation exists).
        served : (batch,) bool, optional
            True when the challenger answered the live user (counts for the step error budget).
        sla : (batch,) float, optional
            1.0 when the challenger's answer of this pair exceeded the latency SLA, 0.0 when within it,
            NaN (or ``sla`` omitted) = not observed.
        sla_incumbent : (batch,) float, optional
            The same for the incumbent's answer of the pair (the relative SLA part, ``sla_relative``, uses the
            pairs where both are observed; without it that part has no evidence and, with ``sla_relative``,
            the SLA part cannot reject: only the tolerance part of the latency test can roll back).
        """
        s, b, dd = self.settings, self.batch, len(DIMENSIONS)
        t = np.asarray(t, dtype=float).reshape(b)
        x = np.asarray(x, dtype=float).reshape(b, dd)
        paired = np.asarray(paired, dtype=bool).reshape(b)
        served = np.zeros(b, dtype=bool) if served is None else np.asarray(served, dtype=bool).reshape(b)
        if np.any(np.isnan(t)):
            raise InputError("timestamp is NaN", row=int(np.flatnonzero(np.isnan(t))[0]), column="t")
        self.phase_start = np.where(np.isnan(self.phase_start), t, self.phase_start)
        self.cutover_time = np.where(np.isnan(self.cutover_time) & (self.phase == TAIL), t, self.cutover_time)
        active = paired & (self.phase < PROMOTED)
        fired_k = np.zeros((b, dd), dtype=bool)
        for k in range(dd):
            m = active & np.isfinite(x[:, k])
            self._harm[k].update(x[:, k], m)
            fired_k[:, k] = self._det[k].update(x[:, k], m)
            self._ni[k].update(-x[:, k], m)
        if sla is not None:
            y = np.asarray(sla, dtype=float).reshape(b)
            bad = np.isfinite(y) & (y != 0.0) & (y != 1.0)
            if np.any(bad):
                raise InputError(f"sla must be 0, 1 or NaN, got {y[bad][0]}", row=int(np.flatnonzero(bad)[0]), column="sla")
            self._sla.update(y, active & np.isfinite(y))
            if sla_incumbent is not None:
                yi = np.asarray(sla_incumbent, dtype=float).reshape(b)
                bad = np.isfinite(yi) & (yi != 0.0) & (yi != 1.0)
                if np.any(bad):
                    raise InputError(f"sla_incumbent must be 0, 1 or NaN, got {yi[bad][0]}",
                                     row=int(np.flatnonzero(bad)[0]), column="sla_incumbent")
                both = np.isfinite(y) & np.isfinite(yi)
                self._sla_rel.update(np.where(both, y - yi, 0.0), active & both)
        self.pairs += active
        live = self.phase < PROMOTED
        fired = fired_k.any(axis=1)
        hp = self.harm_p_values()
        harm_rej = holm(hp, s.share_harm * s.alpha_rollback).any(axis=1)
        prog = self.phase == PROGRESSIVE
        self._budget.update(x[:, 0], prog & active & served & np.isfinite(x[:, 0]))
        over = prog & (self._budget.log_wealth() >= self._budget_logthr)
        rb = live & (harm_rej | fired | over)
        self.reason[rb] = np.where(harm_rej[rb], 1, np.where(fired[rb], 2, 3))
        # the dimension that showed the harm: smallest harm p-value, else the first detector that fired
        lat = DIMENSIONS.index("latency")
        by_sla = self.sla_p_value() < np.stack([e.p_value() for e in self._harm], axis=1)[:, lat]
        dim = np.where(harm_rej, np.argmin(hp, axis=1), np.where(fired, np.argmax(fired_k, axis=1), 0))
        self.rollback_dim[rb] = np.where(harm_rej[rb] & (dim[rb] == lat) & by_sla[rb], len(DIMENSIONS), dim[rb])
        self.phase[rb] = ROLLED_BACK
        self.end_time[rb] = t[rb]
        # promotion out of shadow: conjunctive, Holm over non-inferiority p-values
        ni_p = np.stack([e.p_value() for e in self._ni], axis=1)
        go = (self.phase == SHADOW) & (self.pairs >= s.min_shadow_pairs) & holm(ni_p, s.alpha_promote).all(axis=1)
        self._enter(go, CANARY, t)
        dwell = t - self.phase_start
        c_done = (self.phase == CANARY) & (dwell >= s.canary_dwell_s)
        self.step[c_done] = 0
        self._enter(c_done, PROGRESSIVE, t)
        p_done = (self.phase == PROGRESSIVE) & (dwell >= s.step_dwell_s) & ~c_done
        self._budget.reset_rows(p_done | c_done)
        last = p_done & (self.step >= len(s.steps) - 1)
        self.step[p_done & ~last] += 1
        self.phase_start[p_done & ~last] = t[p_done & ~last]
        self._enter(last, TAIL, t)
        self.cutover_time[last] = t[last]
        t_done = (self.phase == TAIL) & (dwell >= s.tail_s) & ~last
        self.phase[t_done] = PROMOTED
        self.end_time[t_done] = t[t_done]
        return _Events(go, rb, t_done)

    def _enter(self, rows: NDArray[np.bool_], phase: int, t: NDArray[np.float64]) -> None:
        self.phase[rows] = phase
        self.phase_start[rows] = t[rows]
