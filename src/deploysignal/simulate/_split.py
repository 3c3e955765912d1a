"""Seeded per-request logs of a randomised canary split: null worlds and injected regressions.

A *world* is a traffic and outcome process shared by both arms: per tick ``t`` an arrival intensity, an
error and a refusal probability, a latency law and an eval-score level, all free to move in ways no
time-series model expects (long memory, regime switches, bursts, trends, outages). Each request is routed
to the canary with probability ``p_t`` (the canary share, which may step mid-run), either on its own
(``routing="request"``) or with its whole session (``routing="session"``). Under a null world the arm
label is independent of every outcome: the exact null of the split gate. An *effect* then changes the
outcomes of canary requests only (a regression), so every scenario is a null world with or without one
effect.

Metrics (the per-request columns; ``NaN`` = not measured):

``errors``      event (0/1), harm up. Base probability 0.5% (world-modulated).
``refusals``    event (0/1), harm up. Base probability 3%.
``latency_ms``  continuous, harm up. Lognormal, median 400 ms, log-sd 0.5; not measured on errors.
``eval_score``  continuous in [0, 1], harm down. Mean 0.80, sd 0.12; measured on a 20% sample.

Requests also carry a ``tier`` (free 50% / pro 30% / enterprise 20%) and belong to sessions (geometric
size, mean 4 requests, inside one tick) that share a frailty: a session's error probability is multiplied
by a lognormal factor (log-sd 0.5, 1.2 in the ``sessions`` world) and its latency by another (log-sd 0.1,
0.3 there). Session ids are written as the ``unit`` column only when routing is by session.

Worlds (``SPLIT_WORLDS``): see the descriptions in :data:`SPLIT_WORLDS`. Effects (``SPLIT_EFFECTS``), on
canary requests from the first tick: see :data:`SPLIT_EFFECTS`.

All randomness flows from ``numpy.random.default_rng(seed)``: the same arguments give identical logs.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import InputError
from ..split import MetricSpec

__all__ = [
    "SPLIT_EFFECTS",
    "SPLIT_METRICS",
    "SPLIT_WORLDS",
    "SplitRequests",
    "simulate_split",
    "split_signals",
    "write_split",
]

TIERS = ("free", "pro", "enterprise")
_TIER_P = (0.5, 0.3, 0.2)
_BASE_ERR = 0.005
_BASE_REF = 0.03
_LAT_MEDIAN = 400.0
_LAT_SIGMA = 0.5
_SCORE_MEAN = 0.80
_SCORE_SD = 0.12
_EVAL_SAMPLE = 0.2
_SESSION_MEAN = 4.0
_Z99 = 2.3263478740408408  # standard normal 0.99 quantile


def _latency_edges() -> tuple[float, ...]:
    # 19 edges -> 20 buckets, geometric from 100 ms to 6.4 s (six doublings), rounded to whole ms
    return tuple(float(round(100.0 * 2.0 ** (6.0 * i / 18.0))) for i in range(19))


#: The metrics of the generated logs, in column order.
SPLIT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("errors", "event", "up"),
    MetricSpec("refusals", "event", "up"),
    MetricSpec("latency_ms", "continuous", "up", _latency_edges(), 0.1),
    MetricSpec("eval_score", "continuous", "down", tuple(round(0.05 * i, 2) for i in range(1, 20)), 0.1),
)


@dataclass(frozen=True)
class SplitRequests:
    """A per-request split log.

    Attributes
    ----------
    timestamps : ndarray of float, shape (n,)
        Arrival times, epoch seconds, non-decreasing.
    canary : ndarray of bool, shape (n,)
        Arm (True = canary).
    tick : ndarray of int, shape (n,)
        0-based tick of each request (``floor((timestamp - start) / tick_seconds)``).
    values : dict of str to ndarray of float
        One array per metric (``NaN`` = not measured).
    metrics : tuple of MetricSpec
    tier : ndarray of str or None
    unit : ndarray of int or None
        Randomisation unit (session id) when routing was by session, else ``None``.
    start, tick_seconds : float
    n_ticks : int
    truth : dict
        Scenario, effect, volume, share, routing and seed (what a report needs to know).
    """

    timestamps: np.ndarray
    canary: np.ndarray
    tick: np.ndarray
    values: dict[str, np.ndarray]
    metrics: tuple[MetricSpec, ...]
    tier: np.ndarray | None
    unit: np.ndarray | None
    start: float
    tick_seconds: float
    n_ticks: int
    truth: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.timestamps.size)

    def head(self, n_ticks: int) -> SplitRequests:
        """The requests of the first ``n_ticks`` ticks (the same log cut at a tick boundary)."""
        keep = self.tick < n_ticks
        return SplitRequests(
            self.timestamps[keep], self.canary[keep], self.tick[keep], {k: v[keep] for k, v in self.values.items()},
            self.metrics, None if self.tier is None else self.tier[keep], None if self.unit is None else self.unit[keep],
            self.start, self.tick_seconds, min(n_ticks, self.n_ticks), dict(self.truth),
        )


# ---------------------------------------------------------------------------------------------------------
# worlds: per-tick processes shared by both arms


@dataclass
class _World:
    load: np.ndarray  # arrival intensity multiplier
    err: np.ndarray  # error probability
    ref: np.ndarray  # refusal probability
    lat_mu: np.ndarray  # log-latency location
    lat_sigma: np.ndarray
    score: np.ndarray  # eval-score mean
    heavy: bool = False
    session_err_sd: float = 0.5
    session_lat_sd: float = 0.1


def _flat(n: int) -> _World:
    one = np.ones(n)
    return _World(one.copy(), _BASE_ERR * one, _BASE_REF * one, math.log(_LAT_MEDIAN) * one, _LAT_SIGMA * one, _SCORE_MEAN * one)


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1) path."""
    e = rng.standard_normal(n)
    y = np.empty(n)
    y[0] = e[0]
    root = math.sqrt(1.0 - phi * phi)
    for t in range(1, n):
        y[t] = phi * y[t - 1] + root * e[t]
    return y


def _modulate(w: _World, g: np.ndarray, err: float, lat: float, load: float, score: float) -> None:
    w.load *= np.exp(load * g)
    w.err *= np.exp(err * g)
    w.ref *= np.exp(0.5 * err * g)
    w.lat_mu += lat * g
    w.score += score * g


def _w_iid(rng: np.random.Generator, n: int) -> _World:
    return _flat(n)


def _w_long_memory(rng: np.random.Generator, n: int) -> _World:
    # a mixture of AR(1) components with phi 0.9 ... 0.999 (a standard long-memory approximation) plus an
    # AR(0.995) holding most of the variance: slow wandering no hour/day cell predicts
    g = sum(_ar1(rng, n, phi) for phi in (0.9, 0.99, 0.999)) / math.sqrt(3.0)
    g = 0.5 * g + math.sqrt(0.75) * _ar1(rng, n, 0.995)
    w = _flat(n)
    _modulate(w, g, err=0.8, lat=0.25, load=0.4, score=0.03)
    return w


def _w_regimes(rng: np.random.Generator, n: int) -> _World:
    # two-state Markov regime, mean dwell 12 ticks healthy / 6 degraded: errors x6, latency x1.6, load x0.6
    bad = np.zeros(n, dtype=bool)
    state = False
    u = rng.random(n)
    for t in range(n):
        state = (u[t] >= 1 / 6) if state else (u[t] < 1 / 12)
        bad[t] = state
    w = _flat(n)
    w.err[bad] *= 6.0
    w.ref[bad] *= 2.0
    w.lat_mu[bad] += math.log(1.6)
    w.load[bad] *= 0.6
    w.score[bad] -= 0.05
    return w


def _w_bursts(rng: np.random.Generator, n: int) -> _World:
    # incidents hitting both arms: start with probability 1/15 per tick, 1-3 ticks long: load x3, errors 10%,
    # latency x3
    hit = np.zeros(n, dtype=bool)
    for t in np.flatnonzero(rng.random(n) < 1 / 15):
        hit[t : t + int(rng.integers(1, 4))] = True
    w = _flat(n)
    w.load[hit] *= 3.0
    w.err[hit] = 0.10
    w.lat_mu[hit] += math.log(3.0)
    w.lat_sigma[hit] = 0.8
    return w


def _w_diurnal(rng: np.random.Generator, n: int) -> _World:
    # a full day compressed into the run: load 0.2x-1.8x, busier hours slower and more error-prone
    phase = 2 * math.pi * np.arange(n) / max(n, 1) + rng.uniform(0, 2 * math.pi)
    s = np.sin(phase)
    w = _flat(n)
    w.load *= 1.0 + 0.8 * s
    w.err *= np.exp(0.7 * s)
    w.lat_mu += 0.3 * s
    w.score -= 0.03 * s
    return w


def _w_trending(rng: np.random.Generator, n: int) -> _World:
    # traffic grows 4x over the run, errors x3, latency +50%
    r = np.linspace(0.0, 1.0, n)
    w = _flat(n)
    w.load *= 0.5 + 1.5 * r
    w.err *= 1.0 + 2.0 * r
    w.lat_mu += math.log(1.5) * r
    w.score -= 0.04 * r
    return w


def _w_heavy(rng: np.random.Generator, n: int) -> _World:
    w = _flat(n)
    w.heavy = True
    return w


def _w_low_counts(rng: np.random.Generator, n: int) -> _World:
    w = _flat(n)
    w.err[:] = math.nan  # set per volume in simulate_split: 0.5 error events per tick on average
    return w


def _w_empty(rng: np.random.Generator, n: int) -> _World:
    # outages: about 30% of ticks carry no request at all (runs of 1-5 ticks)
    w = _flat(n)
    t = 0
    while t < n:
        if rng.random() < 0.1:
            k = int(rng.integers(1, 6))
            w.load[t : t + k] = 0.0
            t += k
        else:
            t += 1
    return w


def _w_sessions(rng: np.random.Generator, n: int) -> _World:
    w = _w_long_memory(rng, n)
    w.session_err_sd, w.session_lat_sd = 1.2, 0.3
    return w


#: name -> (description, builder, default routing)
SPLIT_WORLDS: dict[str, tuple[str, Any, str]] = {
    "iid": ("stationary traffic and outcomes", _w_iid, "request"),
    "long_memory": ("error rate, latency, load and score wander as long-memory noise (AR mixture, phi up to 0.999)", _w_long_memory, "request"),
    "regimes": ("Markov regime switches: degraded spells with errors x6, latency x1.6, load x0.6", _w_regimes, "request"),
    "bursts": ("incidents hitting both arms: 1-3 tick bursts with load x3, 10% errors, latency x3", _w_bursts, "request"),
    "diurnal": ("a day compressed into the run: load 0.2x-1.8x, errors and latency follow it", _w_diurnal, "request"),
    "trending": ("traffic grows 4x, errors x3, latency +50% over the run", _w_trending, "request"),
    "share_step": ("canary share steps 5% -> 10% -> 25% -> 50% at each quarter of the run (long-memory outcomes)", _w_long_memory, "request"),
    "heavy_tails": ("Student-t(2.5) noise in log-latency and eval score", _w_heavy, "request"),
    "low_counts": ("0.5 error events per tick on average (both arms together)", _w_low_counts, "request"),
    "empty_ticks": ("outages: about 30% of ticks carry no request", _w_empty, "request"),
    "sessions": ("routing by session; strongly clustered outcomes (session frailty), long-memory world", _w_sessions, "session"),
}

#: name -> description of the change to canary requests
SPLIT_EFFECTS: dict[str, str] = {
    "none": "no change (null)",
    "errors_x1.2": "canary error probability x1.2",
    "errors_x1.5": "canary error probability x1.5",
    "errors_x2": "canary error probability x2",
    "error_bursts": "intermittent canary error bursts: a 2-tick burst starts with probability 1/20 per tick, +2% errors",
    "p99_tail": "canary latency above the median stretched so p99 is +15%, p50 unchanged",
    "refusals_6pct": "canary refusal probability x1.06",
    "tier_shift": "canary latency x1.15 in the enterprise tier only (20% of traffic)",
    "eval_drop": "canary per-request eval score -0.02",
}


def _share_schedule(world: str, share: float, n: int) -> np.ndarray:
    if world == "share_step":
        steps = np.array([0.05, 0.10, 0.25, 0.50])
        return steps[np.minimum(np.arange(n) * 4 // max(n, 1), 3)]
    return np.full(n, float(share))


def simulate_split(
    world: str = "iid",
    effect: str = "none",
    *,
    volume: float = 500.0,
    share: float = 0.05,
    ticks: int = 60,
    tick_seconds: float = 60.0,
    routing: str | None = None,
    seed: int = 0,
    start: float = 1_796_637_600.0,
) -> SplitRequests:
    """Draw one per-request split log.

    Parameters
    ----------
    world : str
        A key of :data:`SPLIT_WORLDS` (the shared process).
    effect : str
        A key of :data:`SPLIT_EFFECTS` (``"none"`` = null).
    volume : float
        Mean requests per tick (both arms) at unit load.
    share : float
        Canary share in (0, 1) (ignored by ``share_step``, which steps 5% -> 50%).
    ticks, tick_seconds : int, float
        Length of the log.
    routing : {"request", "session"} or None
        Randomisation unit (``None``: the world's default).
    seed : int
        Everything random flows from ``numpy.random.default_rng(seed)``.

    Examples
    --------
    >>> r = simulate_split("iid", volume=100, share=0.5, ticks=10, seed=1)
    >>> r.n_ticks, bool(abs(r.canary.mean() - 0.5) < 0.1), sorted(r.values)
    (10, True, ['errors', 'eval_score', 'latency_ms', 'refusals'])
    """
    if world not in SPLIT_WORLDS:
        raise InputError(f"unknown split world {world!r}; choose from {', '.join(SPLIT_WORLDS)}")
    if effect not in SPLIT_EFFECTS:
        raise InputError(f"unknown split effect {effect!r}; choose from {', '.join(SPLIT_EFFECTS)}")
    if not (volume > 0 and math.isfinite(volume)):
        raise InputError(f"volume must be a positive number of requests per tick, got {volume}")
    if not 0.0 < share < 1.0:
        raise InputError(f"canary share must lie in (0, 1), got {share}")
    if ticks < 1 or not tick_seconds > 0:
        raise InputError("ticks must be >= 1 and tick_seconds > 0")
    desc, build, default_routing = SPLIT_WORLDS[world]
    routing = routing or default_routing
    if routing not in ("request", "session"):
        raise InputError(f"routing must be request or session, got {routing!r}")
    rng = np.random.default_rng(seed)
    w: _World = build(rng, ticks)
    if world == "low_counts":
        w.err[:] = min(0.5 / volume, 0.5)
    p_t = _share_schedule(world, share, ticks)

    # arrivals: sessions arrive per tick (Poisson), each with a geometric number of requests
    lam = volume * w.load / _SESSION_MEAN
    n_sess = rng.poisson(lam)
    s_tick = np.repeat(np.arange(ticks), n_sess)
    sizes = rng.geometric(1.0 / _SESSION_MEAN, size=s_tick.size)
    n_s = s_tick.size
    s_err = np.exp(w.session_err_sd * rng.standard_normal(n_s) - 0.5 * w.session_err_sd**2)
    s_lat = w.session_lat_sd * rng.standard_normal(n_s)
    s_tier = rng.choice(len(TIERS), size=n_s, p=_TIER_P)
    s_arm = rng.random(n_s) < p_t[s_tick]
    sess = np.repeat(np.arange(n_s), sizes)
    n = sess.size
    tick = s_tick[sess]
    if routing == "session":
        canary = s_arm[sess]
    else:
        canary = rng.random(n) < p_t[tick]
    stamps = start + tick_seconds * (tick + rng.random(n))
    order = np.argsort(stamps, kind="stable")
    sess, tick, canary, stamps = sess[order], tick[order], canary[order], stamps[order]
    tier_idx = s_tier[sess]

    # outcomes
    err_p = np.clip(w.err[tick] * s_err[sess], 0.0, 1.0)
    ref_p = w.ref[tick].copy()
    if w.heavy:
        zl = rng.standard_t(2.5, size=n) / math.sqrt(5.0)  # t(2.5) scaled to unit variance
        zs = rng.standard_t(2.5, size=n) / math.sqrt(5.0)
    else:
        zl = rng.standard_normal(n)
        zs = rng.standard_normal(n)
    u_err, u_ref, u_eval = rng.random(n), rng.random(n), rng.random(n)
    sigma = w.lat_sigma[tick]
    mu = w.lat_mu[tick] + s_lat[sess]
    score = w.score[tick] + _SCORE_SD * zs

    if effect.startswith("errors_x"):
        err_p = np.where(canary, np.clip(err_p * float(effect[len("errors_x"):]), 0.0, 1.0), err_p)
    elif effect == "error_bursts":
        burst = np.zeros(ticks, dtype=bool)
        for t in np.flatnonzero(np.random.default_rng([seed, 1]).random(ticks) < 1 / 20):
            burst[t : t + 2] = True
        err_p = np.where(canary & burst[tick], np.clip(err_p + 0.02, 0.0, 1.0), err_p)
    elif effect == "refusals_6pct":
        ref_p = np.where(canary, ref_p * 1.06, ref_p)
    elif effect == "p99_tail":
        # above the median, z -> z * k with exp(sigma * z99 * k) = 1.15 exp(sigma * z99): p99 +15%
        k = 1.0 + math.log(1.15) / (sigma * _Z99)
        zl = np.where(canary & (zl > 0), zl * k, zl)
    elif effect == "tier_shift":
        mu = np.where(canary & (tier_idx == TIERS.index("enterprise")), mu + math.log(1.15), mu)
    elif effect == "eval_drop":
        score = np.where(canary, score - 0.02, score)

    errors = (u_err < err_p).astype(float)
    refusals = np.where(errors > 0, 0.0, (u_ref < ref_p).astype(float))
    latency = np.where(errors > 0, np.nan, np.exp(mu + sigma * zl))
    latency = np.round(latency, 3)
    evals = np.where(u_eval < _EVAL_SAMPLE, np.round(np.clip(score, 0.0, 1.0), 4), np.nan)
    evals = np.where(errors > 0, np.nan, evals)
    truth = {
        "world": world,
        "world_description": desc,
        "effect": effect,
        "effect_description": SPLIT_EFFECTS[effect],
        "expected": "proceed" if effect == "none" else "rollback",
        "volume": volume,
        "share": "0.05->0.10->0.25->0.50" if world == "share_step" else share,
        "routing": routing,
        "ticks": ticks,
        "tick_seconds": tick_seconds,
        "seed": seed,
        "requests": int(n),
        "canary_requests": int(canary.sum()),
    }
    return SplitRequests(
        timestamps=stamps,
        canary=canary,
        tick=tick.astype(np.int64),
        values={"errors": errors, "refusals": refusals, "latency_ms": latency, "eval_score": evals},
        metrics=SPLIT_METRICS,
        tier=np.asarray(TIERS, dtype=object)[tier_idx],
        unit=sess.astype(np.int64) if routing == "session" else None,
        start=start,
        tick_seconds=tick_seconds,
        n_ticks=ticks,
        truth=truth,
    )


def split_signals(metrics: tuple[MetricSpec, ...] = SPLIT_METRICS) -> dict[str, dict[str, Any]]:
    """The signals-file mapping ``{metric: {kind, direction, tolerance[, edges]}}`` of a split log (the
    format of ``deploysignal gate --split ... --signals``)."""
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        d: dict[str, Any] = {"kind": m.kind, "direction": m.direction, "tolerance": m.tolerance}
        if m.kind == "continuous":
            d["edges"] = list(m.edges)
        out[m.name] = d
    return out


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else (str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(float(v)))


def write_split(req: SplitRequests, directory: str | Path) -> list[Path]:
    """Write ``requests.csv`` (the REQUESTS format of ``deploysignal gate --split``: ``timestamp`` in
    epoch seconds, ``arm``, ``unit`` when routing was by session, ``tier``, one column per metric, empty =
    not measured), ``signals.json`` and ``truth.json`` into ``directory``; returns the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    names = [m.name for m in req.metrics]
    head = ["timestamp", "arm"] + (["unit"] if req.unit is not None else []) + (["tier"] if req.tier is not None else []) + names
    cols = [req.values[k] for k in names]
    path = d / "requests.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(head)
        for i in range(len(req)):
            row = [f"{req.timestamps[i]:.3f}", "canary" if req.canary[i] else "stable"]
            if req.unit is not None:
                row.append(f"s{int(req.unit[i])}")
            if req.tier is not None:
                row.append(str(req.tier[i]))
            row.extend(_fmt(float(c[i])) for c in cols)
            wr.writerow(row)
    sig = d / "signals.json"
    sig.write_text(json.dumps(split_signals(req.metrics), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    truth = d / "truth.json"
    truth.write_text(json.dumps({**req.truth, "tick_start": req.start}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [path, sig, truth]
