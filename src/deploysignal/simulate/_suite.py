"""The evaluation scenario suite: healthy nulls and regression archetypes over the 12-signal catalogue.

Every scenario is drawn from the process of :mod:`deploysignal.simulate._core` (per signal
``level + sd * (diurnal + AR(1) noise)``, rates kept in [0, 1]) and then changed by a documented effect
on the canary stream only; the control stream is an independent draw of the same process without the
effect. Magnitudes are in *marginal* standard deviations of the signal. All randomness flows from
``numpy.random.default_rng(seed)``: the same (scenario, seed) gives identical frames.

Healthy nulls (expected verdict ``proceed``; any rollback is a false rollback):

``null_iid``       i.i.d. Gaussian noise, no diurnal cycle.
``null_ar1``       AR(1) phi = 0.85 with a doubled diurnal cycle (strong autocorrelation).
``null_diurnal``   default AR(1) with a tripled diurnal cycle (the canary starts at another hour).
``null_heavy``     Student-t(3) innovations.
``null_gappy``     5% of cells missing, 3% of ticks dropped (timestamp gaps), in baseline and canary.

Regressions (expected verdict ``rollback``; ``onset`` = first affected canary tick):

``step``           p99 latency and TTFT step up 0.5 sd at tick 60.
``slow_ramp``      eval score ramps down to 0.6 sd below normal over 480 ticks from tick 0.
``refusal_creep``  refusal rate ramps up 0.8 sd over 360 ticks from tick 30.
``tail_widening``  from tick 60 the upper half of TTFT and p99 latency deviations from their diurnal
                   centre is stretched x2.5: the median is unchanged, the upper tail (and the mean) moves up.
``joint_shift``    equicorrelated noise (rho 0.6); from tick 60 TTFT rises 0.3 sd while p99 latency falls
                   0.3 sd, against their correlation: small marginally, large jointly.
``oscillation``    from tick 60 p99 latency oscillates +-1 sd with a 30-tick period (flapping), mean 0.
``error_bursts``   from tick 30, bursts of 5 ticks in which the downstream error rate is +4 sd start
                   with probability 1/60 per tick.
``cohort_dip``     rows carry a tier (free / pro / enterprise, round robin); from tick 30 the eval score
                   of the enterprise tier alone drops 1.2 sd (0.4 sd on the pooled stream).
``slowbleed``      five infrastructure signals (TTFT, cost, HBM spill, collective ops, MFU) drift 0.45 sd
                   together over 120 ticks from tick 40.
``postmortem_2025``  hourly reconstruction of Anthropic's public postmortem of three overlapping
                   infrastructure bugs (August-September 2025), see :func:`postmortem_effects`.

References
----------
Anthropic (2025). "A postmortem of three recent issues", engineering blog, 17 September 2025.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from .._exceptions import InputError
from ..telemetry import Frame
from ._core import _PROFILE, NoiseSpec, Simulation, simulate_streams

__all__ = ["SUITE", "NULL_SCENARIOS", "REGRESSION_SCENARIOS", "SuiteScenario", "postmortem_effects", "simulate_suite"]

SIGNALS: tuple[str, ...] = tuple(_PROFILE)
_SD = {s: _PROFILE[s][1] for s in SIGNALS}
_LEVEL = {s: _PROFILE[s][0] for s in SIGNALS}
_RATES = ("eval_score", "tool_success_rate", "refusal_rate", "downstream_error_rate", "kv_cache_util", "mfu", "hbm_spill_rate")

Effect = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class SuiteScenario:
    """One scenario of the suite.

    ``window`` is the planned observation window (ticks) methods are configured with; ``canary_ticks``
    the length of the canary stream (the gate may extend once, so twice the window by default).
    """

    name: str
    description: str
    expected: str
    onset: int | None
    noise: NoiseSpec
    effect: Effect | None = None
    window: int = 480
    canary_ticks: int = 960
    baseline_ticks: int = 4320
    tick_seconds: float = 60.0
    start: float = 1_700_000_000.0
    drop_rows: float = 0.0
    tiers: tuple[str, ...] | None = None


def _col(name: str) -> int:
    return SIGNALS.index(name)


def _shift(vals: np.ndarray, name: str, sd_units: np.ndarray | float) -> None:
    vals[:, _col(name)] += np.asarray(sd_units) * _SD[name]


def _ramp(n: int, onset: int, length: int) -> np.ndarray:
    return np.clip((np.arange(n) - onset) / max(length, 1), 0.0, 1.0)


def _step(n: int, onset: int) -> np.ndarray:
    return (np.arange(n) >= onset).astype(float)


def _eff_step(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = _step(len(v), 60)
    _shift(v, "p99_latency_ms", 0.5 * p)
    _shift(v, "ttft_ms", 0.5 * p)
    return v


def _eff_slow_ramp(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _shift(v, "eval_score", -0.6 * _ramp(len(v), 0, 480))
    return v


def _eff_refusal(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _shift(v, "refusal_rate", 0.8 * _ramp(len(v), 30, 360))
    return v


def _eff_tail(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    on = _step(len(v), 60).astype(bool)
    phase = np.sin(2 * np.pi * (ts % 86400.0) / 86400.0)
    for name in ("ttft_ms", "p99_latency_ms"):
        j = _col(name)
        centre = _LEVEL[name] + _SD[name] * _PROFILE[name][2] * phase  # the process's diurnal centre
        dev = v[:, j] - centre
        v[:, j] = np.where(on & (dev > 0), centre + 2.5 * dev, v[:, j])
    return v


def _eff_joint(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = _step(len(v), 60)
    _shift(v, "ttft_ms", 0.3 * p)
    _shift(v, "p99_latency_ms", -0.3 * p)
    return v


def _eff_oscillation(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(len(v))
    _shift(v, "p99_latency_ms", _step(len(v), 60) * np.sin(2 * np.pi * (t - 60) / 30.0))
    return v


def _eff_bursts(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(v)
    starts = np.flatnonzero((rng.random(n) < 1 / 60) & (np.arange(n) >= 30))
    on = np.zeros(n)
    for s in starts:
        on[s : s + 5] = 1.0
    _shift(v, "downstream_error_rate", 4.0 * on)
    return v


def _eff_slowbleed(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = _ramp(len(v), 40, 120)
    for name in ("ttft_ms", "cost_per_request", "hbm_spill_rate", "collective_ops_ms"):
        _shift(v, name, 0.45 * r)
    _shift(v, "mfu", -0.45 * r)
    return v


_TIERS = ("free", "pro", "enterprise")


def _eff_cohort(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(v)
    ent = (np.arange(n) % 3 == 2) & (np.arange(n) >= 30)
    _shift(v, "eval_score", -1.2 * ent)
    return v


#: Postmortem calendar (UTC): canary stream starts 5 Aug 2025 00:00, hourly ticks.
PM_START = datetime(2025, 8, 5, tzinfo=timezone.utc).timestamp()


def _hour(month: int, day: int, hour: int = 0) -> int:
    return int((datetime(2025, month, day, hour, tzinfo=timezone.utc).timestamp() - PM_START) // 3600)


def postmortem_effects(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-hour fractions of affected requests in the 2025 postmortem reconstruction.

    Returns ``routing``, ``corruption`` and ``topk`` arrays of length ``n`` (hourly ticks from
    5 Aug 2025 00:00 UTC). The public account gives the anchors; the shapes between them are assumptions
    of this reconstruction, stated here:

    * **Context-window routing bug**: 0.8% of requests misrouted to servers configured for a different
      context window from 5 Aug. A load-balancing change on 29 Aug raises the share, reaching its worst
      hour (16%) on 31 Aug; assumed: linear growth from 29 Aug 00:00 to the worst hour at 31 Aug 12:00,
      then a plateau around 12% until fixes from 4 Sep. Routing is *sticky* (a conversation stays on the
      server it reached), modelled as an AR(1) (phi 0.9 per hour) multiplicative wobble of +-15% on the
      share, so affected hours cluster.
    * **TPU output corruption**: a misconfiguration on TPU servers from 25 Aug corrupts a share of
      outputs (odd characters in the wrong language) until the rollback on 2 Sep; assumed 0.5% of
      requests, active in 70% of hours (it depended on the serving configuration).
    * **Approximate top-k miscompilation**: an XLA:TPU compiler bug in approximate top-k that only showed
      for some batch sizes and configurations; assumed active from 25 Aug in a random 15% of hours,
      degrading 3% of requests in those hours.

    Examples
    --------
    >>> eff = postmortem_effects(31 * 24, np.random.default_rng(0))
    >>> round(float(eff["routing"][0]), 3), round(float(eff["routing"].max()), 2)
    (0.008, 0.16)
    """
    t = np.arange(n)
    base = np.full(n, 0.008)
    grow0, worst = _hour(8, 29), _hour(8, 31, 12)
    fix = _hour(9, 4)
    frac = np.where(t < grow0, base, np.where(t <= worst, base + (0.16 - 0.008) * (t - grow0) / (worst - grow0), 0.12))
    frac = np.where(t >= fix, 0.0, frac)
    wobble = np.empty(n)
    w = 0.0
    noise = rng.standard_normal(n)
    for i in range(n):
        w = 0.9 * w + math.sqrt(1 - 0.81) * noise[i]
        wobble[i] = w
    routing = np.minimum(frac * np.clip(1.0 + 0.15 * wobble, 0.5, 1.5), 0.16)
    if 0 <= worst < n:
        routing[worst] = 0.16  # the reported worst hour
    c_on, c_off = _hour(8, 25), _hour(9, 2)
    corruption = np.where((t >= c_on) & (t < c_off) & (rng.random(n) < 0.7), 0.005, 0.0)
    topk = np.where((t >= c_on) & (rng.random(n) < 0.15), 0.03, 0.0)
    return {"routing": routing, "corruption": corruption, "topk": topk}


def _eff_postmortem(v: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    eff = postmortem_effects(len(v), rng)
    r, c, k = eff["routing"], eff["corruption"], eff["topk"]
    # quality loss per affected request (absolute, on the rate scale): misrouted 0.25, corrupted 0.6,
    # top-k miscompiled 0.15; tool calls fail on 30% / 50% / 10% of affected requests; corrupted output
    # breaks downstream parsers half the time; refusals rise a little on misrouted long contexts.
    v[:, _col("eval_score")] -= 0.25 * r + 0.6 * c + 0.15 * k
    v[:, _col("tool_success_rate")] -= 0.30 * r + 0.5 * c + 0.10 * k
    v[:, _col("downstream_error_rate")] += 0.02 * r + 0.5 * c + 0.02 * k
    v[:, _col("refusal_rate")] += 0.02 * r
    return v


SUITE: dict[str, SuiteScenario] = {
    s.name: s
    for s in (
        SuiteScenario("null_iid", "healthy, i.i.d. Gaussian, no diurnal cycle", "proceed", None, NoiseSpec(phi=0.0, diurnal=0.0)),
        SuiteScenario("null_ar1", "healthy, AR(1) phi 0.85, doubled diurnal cycle", "proceed", None, NoiseSpec(phi=0.85, diurnal=2.0)),
        SuiteScenario("null_diurnal", "healthy, tripled diurnal cycle", "proceed", None, NoiseSpec(diurnal=3.0)),
        SuiteScenario("null_heavy", "healthy, Student-t(3) innovations", "proceed", None, NoiseSpec(kind="t3")),
        SuiteScenario("null_gappy", "healthy, 5% cells missing, 3% ticks dropped", "proceed", None, NoiseSpec(missing=0.05), drop_rows=0.03),
        SuiteScenario("step", "p99 latency and TTFT step up 0.5 sd at tick 60", "rollback", 60, NoiseSpec(), _eff_step),
        SuiteScenario("slow_ramp", "eval score ramps down to -0.6 sd over 480 ticks", "rollback", 0, NoiseSpec(), _eff_slow_ramp),
        SuiteScenario("refusal_creep", "refusal rate creeps up 0.8 sd over 360 ticks from tick 30", "rollback", 30, NoiseSpec(), _eff_refusal),
        SuiteScenario("tail_widening", "upper half of TTFT / p99 deviations x2.5 from tick 60, median flat", "rollback", 60, NoiseSpec(), _eff_tail),
        SuiteScenario("joint_shift", "TTFT +0.3 sd, p99 -0.3 sd against correlation 0.6, tick 60", "rollback", 60, NoiseSpec(correlation=0.6), _eff_joint),
        SuiteScenario("oscillation", "p99 latency oscillates +-1 sd, period 30 ticks, from tick 60", "rollback", 60, NoiseSpec(), _eff_oscillation),
        SuiteScenario("error_bursts", "5-tick +4 sd error-rate bursts, rate 1/60 per tick, from tick 30", "rollback", 30, NoiseSpec(), _eff_bursts),
        SuiteScenario("cohort_dip", "enterprise-tier eval score -1.2 sd from tick 30", "rollback", 30, NoiseSpec(), _eff_cohort, tiers=_TIERS),
        SuiteScenario("slowbleed", "5 infra signals drift 0.45 sd over 120 ticks from tick 40", "rollback", 40, NoiseSpec(), _eff_slowbleed),
        SuiteScenario(
            "postmortem_2025",
            "hourly: routing bug 0.8% from 5 Aug -> 16% worst hour 31 Aug; TPU corruption 25 Aug-2 Sep; top-k",
            "rollback",
            0,
            NoiseSpec(),
            _eff_postmortem,
            window=720,
            canary_ticks=31 * 24,
            baseline_ticks=30 * 24,
            tick_seconds=3600.0,
            start=PM_START - 30 * 24 * 3600.0,
        ),
    )
}
NULL_SCENARIOS: tuple[str, ...] = tuple(n for n, s in SUITE.items() if s.expected == "proceed")
REGRESSION_SCENARIOS: tuple[str, ...] = tuple(n for n, s in SUITE.items() if s.expected == "rollback")


def _clip_rates(vals: np.ndarray) -> np.ndarray:
    for name in _RATES:
        j = _col(name)
        vals[..., j] = np.clip(vals[..., j], 0.0, 1.0)
    return vals


def simulate_suite(name: str, seed: int = 0, *, canary_ticks: int | None = None, baseline_ticks: int | None = None) -> Simulation:
    """Draw one scenario of :data:`SUITE`.

    Parameters
    ----------
    name : str
        Scenario name.
    seed : int
        Seed of ``numpy.random.default_rng``; the effect's own randomness comes from the same generator.
    canary_ticks, baseline_ticks : int, optional
        Override the scenario's lengths (e.g. shorter runs for tests).

    Returns
    -------
    Simulation
        ``baseline``, ``canary``, ``control`` frames and a ``truth`` dict (``expected``, ``onset_tick``,
        ``window``, ``description``, ...).

    Examples
    --------
    >>> sim = simulate_suite("step", seed=1, canary_ticks=200, baseline_ticks=1440)
    >>> len(sim.baseline), len(sim.canary), sim.truth["expected"], sim.truth["onset_tick"]
    (1440, 200, 'rollback', 60)
    """
    if name not in SUITE:
        raise InputError(f"unknown scenario {name!r}; choose from {', '.join(SUITE)}")
    sc = SUITE[name]
    m = int(canary_ticks or sc.canary_ticks)
    nb = int(baseline_ticks or sc.baseline_ticks)
    rng = np.random.default_rng(seed)
    ts, vals = simulate_streams(rng, 2, nb + m, start=sc.start, tick_seconds=sc.tick_seconds, noise=sc.noise, signals=SIGNALS)
    base_v, can_v, ctl_v = vals[0, :nb].copy(), vals[0, nb:].copy(), vals[1, nb:].copy()
    can_ts = ts[nb:]
    if sc.effect is not None:
        can_v = sc.effect(can_v, can_ts, rng)
    base_v, can_v, ctl_v = _clip_rates(base_v), _clip_rates(can_v), _clip_rates(ctl_v)
    cohort_b = cohort_c = None
    if sc.tiers is not None:
        cohort_b = np.array([sc.tiers[i % len(sc.tiers)] for i in range(nb)])
        cohort_c = np.array([sc.tiers[i % len(sc.tiers)] for i in range(m)])
    base = Frame(ts[:nb], base_v, SIGNALS, cohort_b)
    canary = Frame(can_ts, can_v, SIGNALS, cohort_c)
    control = Frame(can_ts, ctl_v, SIGNALS, cohort_c)
    if sc.drop_rows > 0:
        keep_b = rng.random(nb) >= sc.drop_rows
        keep_c = rng.random(m) >= sc.drop_rows
        base = Frame(base.timestamps[keep_b], base.values[keep_b], SIGNALS)
        canary = Frame(canary.timestamps[keep_c], canary.values[keep_c], SIGNALS)
        control = Frame(control.timestamps[keep_c], control.values[keep_c], SIGNALS)
    truth = {
        "scenario": name,
        "description": sc.description,
        "seed": seed,
        "expected": sc.expected,
        "onset_tick": sc.onset,
        "window": sc.window,
        "baseline_ticks": nb,
        "canary_ticks": len(canary),
        "tick_seconds": sc.tick_seconds,
    }
    return Simulation(base, canary, control, truth)
