"""Migration planning: simulate the phased protocol for an incumbent / challenger pair described by numbers.

Before a migration a user knows (or expects) each agent's accuracy, median and p99 latency and safety
violation rate.  :func:`simulate_plan` draws seeded paired query streams from that description and runs
:class:`~deploysignal.migration.MigrationProtocol` on them, so the user sees how likely promotion and
rollback are and how long each takes (``deploysignal migrate plan``).

Model of one paired query (all draws from one ``numpy`` Generator seeded by ``seed``):

* correctness: incumbent right when ``u < accuracy_i``; the challenger sees the same query difficulty
  ``u`` with probability 0.8 (else a fresh uniform), right when ``u_c < accuracy_c``;
* semantic grade: 2 (exact) with probability 0.7 when right, shared by both agents with probability 0.8,
  else 1; 0 when wrong; the score is the sign of the grade difference;
* latency: lognormal per agent with the given median and p99 (``sigma = log(p99 / median) / z_0.99``),
  the two log-latencies Gaussian with correlation 0.8 (shared load); score ``(L_c - L_i) / SLA``
  clipped to [-1, 1], and the challenger's SLA exceedance ``L_c > SLA``;
* safety: independent violations with the given rates;
* arrivals: Poisson at ``queries_per_day``; every query is shadowed (a paired observation) and the
  challenger answers the live user with the protocol's exposure.

This is a model, not a guarantee: the promotion probability and times it reports hold for streams like
these (independent queries, stationary agents); the protocol's own error guarantees hold regardless.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from .._exceptions import InputError
from ._protocol import PHASES, PROMOTED, ROLLED_BACK, MigrationProtocol, ProtocolSettings

__all__ = ["AgentProfile", "PlanResult", "simulate_plan"]

DAY = 86_400.0
_Z99 = float(stats.norm.ppf(0.99))
#: the paper's workload: about 12,000 queries over 45 days
PAPER_QUERIES_PER_DAY = 12_000 / 45
_FIELDS = ("accuracy", "latency_ms", "p99_ms", "violations")


@dataclass(frozen=True)
class AgentProfile:
    """What a plan knows of one agent: accuracy (fraction right), median and p99 latency (ms), violation rate."""

    accuracy: float
    latency_ms: float
    p99_ms: float
    violations: float

    def check(self, role: str) -> None:
        """Raise :class:`InputError` naming ``role.field`` for a value out of range."""
        for f in _FIELDS:
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise InputError(f"{role} {f} must be a finite number, got {v!r}", column=f"{role}.{f}")
        if not 0.0 < self.accuracy < 1.0:
            raise InputError(f"{role} accuracy must lie in (0, 1) (a fraction, 0.842 not 84.2), got {self.accuracy}",
                             column=f"{role}.accuracy")
        if not 0.0 <= self.violations < 1.0:
            raise InputError(f"{role} violations must lie in [0, 1) (a fraction, 0.004 not 0.4), got {self.violations}",
                             column=f"{role}.violations")
        if not self.latency_ms > 0.0:
            raise InputError(f"{role} latency_ms must be > 0, got {self.latency_ms}", column=f"{role}.latency_ms")
        if not self.p99_ms > self.latency_ms:
            raise InputError(f"{role} p99_ms must exceed latency_ms (the median), got p99_ms={self.p99_ms} "
                             f"latency_ms={self.latency_ms}", column=f"{role}.p99_ms")

    @classmethod
    def parse(cls, text: str, role: str) -> AgentProfile:
        """Parse ``accuracy=0.842,latency_ms=38,p99_ms=140,violations=0.004`` (all four fields, any order).

        >>> AgentProfile.parse("accuracy=0.9,latency_ms=40,p99_ms=150,violations=0.001", "challenger").p99_ms
        150.0
        """
        vals: dict[str, float] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep:
                raise InputError(f"{role}: expected field=value, got {part!r}", column=role)
            if key not in _FIELDS:
                raise InputError(f"{role}: unknown field {key!r} (fields: {', '.join(_FIELDS)})", column=f"{role}.{key}")
            if key in vals:
                raise InputError(f"{role}: field {key!r} given twice", column=f"{role}.{key}")
            try:
                v = float(raw)
            except ValueError:
                raise InputError(f"{role} {key} must be a number, got {raw.strip()!r}", column=f"{role}.{key}") from None
            vals[key] = v
        missing = [f for f in _FIELDS if f not in vals]
        if missing:
            raise InputError(f"{role}: missing field(s) {', '.join(missing)}", column=f"{role}.{missing[0]}")
        p = cls(**vals)
        p.check(role)
        return p

    @property
    def sigma(self) -> float:
        """Log-scale spread of the lognormal latency with this median and p99."""
        return math.log(self.p99_ms / self.latency_ms) / _Z99

    def sla_exceedance(self, sla_ms: float) -> float:
        """``P(latency > sla_ms)`` under the lognormal model."""
        return float(stats.norm.sf(math.log(sla_ms / self.latency_ms) / self.sigma))


@dataclass(frozen=True)
class PlanResult:
    """Outcome of :func:`simulate_plan` (fractions of runs; days from the start of the shadow phase)."""

    runs: int
    seed: int
    promoted: float
    rolled_back: float
    undecided: float
    promoted_ci99: tuple[float, float]
    rolled_back_ci99: tuple[float, float]
    median_days_to_promotion: float | None
    median_days_to_cutover: float | None
    median_days_to_rollback: float | None
    median_days_in_shadow: float | None
    rollback_reasons: dict[str, int]
    rollback_dimensions: dict[str, int]
    phase_days: dict[str, float | None]
    challenger_sla_exceedance: float
    incumbent_sla_exceedance: float
    expected_differences: dict[str, float]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _cp99(k: int, n: int) -> tuple[float, float]:
    """Exact two-sided 98 % Clopper-Pearson interval, i.e. one-sided 99 % bounds each side."""
    lo = float(stats.beta.ppf(0.01, k, n - k + 1)) if k > 0 else 0.0
    hi = float(stats.beta.ppf(0.99, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def _median(v: np.ndarray) -> float | None:
    return float(np.median(v)) if v.size else None


#: most seeded runs one plan simulates (its arrays are held per run; 10^8 runs exhausted memory)
MAX_PLAN_RUNS = 100_000


def simulate_plan(incumbent: AgentProfile, challenger: AgentProfile, *, sla_ms: float,
                  queries_per_day: float = PAPER_QUERIES_PER_DAY, runs: int = 200, seed: int = 0,
                  max_days: float = 45.0, settings: ProtocolSettings | None = None) -> PlanResult:
    """Run the protocol on ``runs`` seeded paired streams of the described pair for up to ``max_days``.

    Deterministic per ``seed``. Raises :class:`InputError` naming the field for bad input.
    """
    incumbent.check("incumbent")
    challenger.check("challenger")
    for name, v, lo in (("sla_ms", sla_ms, 0.0), ("queries_per_day", queries_per_day, 0.0), ("max_days", max_days, 0.0)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > lo):
            raise InputError(f"{name} must be a positive number, got {v!r}", column=name)
    if not isinstance(runs, int) or not 1 <= runs <= MAX_PLAN_RUNS:
        raise InputError(f"runs must be an integer in [1, {MAX_PLAN_RUNS:,}], got {runs!r} (memory grows with runs)",
                         column="runs")
    if queries_per_day * max_days > 5_000_000:
        raise InputError(f"queries_per_day * max_days = {queries_per_day * max_days:.0f} queries per run is more than "
                         "the 5,000,000 a plan simulates", column="queries_per_day")
    st = settings or ProtocolSettings()
    rng = np.random.default_rng(seed)
    proto = MigrationProtocol(st, batch=runs)
    horizon = max_days * DAY
    t = np.zeros(runs)
    # each run's state when it passes the horizon (or when it is decided)
    final = np.full(runs, -1, dtype=np.int64)
    phase_entry = {ph: np.full(runs, np.nan) for ph in PHASES}
    phase_entry[PHASES[int(proto.phase[0])]][:] = 0.0
    rho = 0.8
    si, sc = incumbent.sigma, challenger.sigma
    while True:
        t = t + rng.exponential(DAY / queries_per_day, runs)
        open_ = final < 0
        past = open_ & (t > horizon)
        final[past] = proto.phase[past]
        open_ &= ~past
        if not open_.any():
            break
        u = rng.random(runs)
        u_c = np.where(rng.random(runs) < 0.8, u, rng.random(runs))
        ok_i, ok_c = u < incumbent.accuracy, u_c < challenger.accuracy
        ex = rng.random(runs) < 0.7
        ex_c = np.where(rng.random(runs) < 0.8, ex, rng.random(runs) < 0.7)
        g_i = np.where(ok_i, np.where(ex, 2, 1), 0)
        g_c = np.where(ok_c, np.where(ex_c, 2, 1), 0)
        z = rng.standard_normal(runs)
        z_c = rho * z + math.sqrt(1 - rho * rho) * rng.standard_normal(runs)
        l_i = incumbent.latency_ms * np.exp(si * z)
        l_c = challenger.latency_ms * np.exp(sc * z_c)
        v_i = rng.random(runs) < incumbent.violations
        v_c = rng.random(runs) < challenger.violations
        x = np.stack([ok_i.astype(float) - ok_c, np.clip((l_c - l_i) / sla_ms, -1.0, 1.0),
                      np.sign(g_i - g_c).astype(float), v_c.astype(float) - v_i], axis=1)
        # columns in DIMENSIONS order: correctness, latency, semantic, safety (positive = challenger worse)
        served = rng.random(runs) < proto.exposure()
        before = proto.phase.copy()
        proto.update(t, x, open_, served & open_, np.where(open_, (l_c > sla_ms).astype(float), np.nan),
                     np.where(open_, (l_i > sla_ms).astype(float), np.nan))
        moved = open_ & (proto.phase != before)
        for k in np.flatnonzero(moved):
            phase_entry[PHASES[int(proto.phase[k])]][k] = t[k]
        done = open_ & (proto.phase >= PROMOTED)
        final[done] = proto.phase[done]
    prom, rb = final == PROMOTED, final == ROLLED_BACK
    reasons: dict[str, int] = {}
    dims: dict[str, int] = {}
    for k in np.flatnonzero(rb):
        r, d = proto.rollback_reason(int(k)), proto.rollback_dimension(int(k))
        reasons[r] = reasons.get(r, 0) + 1
        dims[d] = dims.get(d, 0) + 1
    npro, nrb = int(prom.sum()), int(rb.sum())
    days = {ph: (_median(phase_entry[ph][np.isfinite(phase_entry[ph])] / DAY)) for ph in PHASES}
    shadow_days = phase_entry["canary"] - phase_entry["shadow"]
    exp_diff = {"correctness": incumbent.accuracy - challenger.accuracy,
                "latency_ms_mean": challenger.latency_ms * math.exp(sc * sc / 2) - incumbent.latency_ms * math.exp(si * si / 2),
                "violations": challenger.violations - incumbent.violations}
    return PlanResult(
        runs=runs, seed=seed, promoted=npro / runs, rolled_back=nrb / runs, undecided=1.0 - (npro + nrb) / runs,
        promoted_ci99=_cp99(npro, runs), rolled_back_ci99=_cp99(nrb, runs),
        median_days_to_promotion=_median(proto.end_time[prom] / DAY),
        median_days_to_cutover=_median(proto.cutover_time[prom] / DAY),
        median_days_to_rollback=_median(proto.end_time[rb] / DAY),
        median_days_in_shadow=_median(shadow_days[np.isfinite(shadow_days)] / DAY),
        rollback_reasons=dict(sorted(reasons.items())), rollback_dimensions=dict(sorted(dims.items())),
        phase_days=days, challenger_sla_exceedance=challenger.sla_exceedance(sla_ms),
        incumbent_sla_exceedance=incumbent.sla_exceedance(sla_ms), expected_differences=exp_diff)

