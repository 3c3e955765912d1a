"""Monte-Carlo harness of the split gate: null telemetry from outcome processes that break every
time-series model, randomised the way routers do it (each unit Bernoulli(p_t), sessions as units).

Nothing here uses the gate's conditional argument: outcomes are drawn per unit from a latent process
(long memory, near-unit-root mixtures, regime switches, bursts, heavy tails, diurnal and trending traffic,
empty ticks), labels are independent Bernoulli(p_t) draws per unit (per session under session routing),
and the per-tick counts are then aggregated exactly as a router's logs would give them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import expit, gammaln

from deploysignal.split import MetricBlocks, MetricSpec, RequestLog, SplitData, SplitGate, SplitSettings, requests_to_data

LAT_EDGES = tuple(float(x) for x in np.geomspace(20.0, 2000.0, 19))
SCORE_EDGES = tuple(float(x) for x in np.linspace(0.1, 0.9, 9))
SPECS = [
    MetricSpec("errors", "event", "up"),
    MetricSpec("rare", "event", "both"),
    MetricSpec("latency_ms", "continuous", "up", LAT_EDGES),
    MetricSpec("score", "continuous", "down", SCORE_EDGES),
]


def fractional_noise(rng: np.random.Generator, P: int, T: int, d: float = 0.45) -> np.ndarray:
    """ARFIMA(0, d, 0) paths (long memory: autocorrelation ~ k^(2d-1)), unit variance, by the MA(inf) filter."""
    n = 4 * T
    k = np.arange(n)
    psi = np.exp(gammaln(k + d) - gammaln(k + 1) - gammaln(d))
    e = rng.standard_normal((P, n))
    x = np.fft.irfft(np.fft.rfft(e, 2 * n) * np.fft.rfft(psi, 2 * n), 2 * n)[:, :n][:, -T:]
    return x / x.std()


def ar(rng: np.random.Generator, P: int, T: int, phi: float) -> np.ndarray:
    """Stationary AR(1) paths of unit variance (started from the stationary law)."""
    e = rng.standard_normal((P, T)) * np.sqrt(1 - phi**2)
    e[:, 0] = rng.standard_normal(P)
    return lfilter([1.0], [1.0, -phi], e, axis=1)


@dataclass
class Null:
    """Per path and tick: units ``N`` (P, T), canary share ``p``, latent levels of the four metrics."""

    N: np.ndarray
    p: np.ndarray
    err: np.ndarray  # logit error rate
    rare: np.ndarray  # logit rare-event rate
    lat: np.ndarray  # log-latency location
    score: np.ndarray  # logit score location
    lat_df: float | None = None  # Student-t df of per-request log-latency noise (heavy tails); None: Gaussian


def make_null(name: str, rng: np.random.Generator, P: int, T: int) -> Null:
    t = np.arange(T)
    base_N = np.full((P, T), 80.0)
    p = np.full((P, T), 0.1)
    if name == "long_memory":
        z = [fractional_noise(rng, P, T) for _ in range(4)]
        return Null(rng.poisson(base_N * np.exp(0.3 * z[0])), p, -4 + 0.8 * z[1], np.log(0.5 / 80) + 0.8 * z[2], 4.5 + 0.5 * z[3], 0.5 * z[1])
    if name == "ar995_mixture":
        z = [np.sqrt(0.9) * ar(rng, P, T, 0.5) + np.sqrt(0.1) * ar(rng, P, T, 0.995) for _ in range(4)]
        return Null(rng.poisson(base_N * np.exp(0.3 * z[0])), p, -4 + z[1], np.log(0.5 / 80) + z[2], 4.5 + 0.6 * z[3], 0.7 * z[0])
    if name == "regime_bursts":
        # three-state Markov regimes (switch prob 0.03 per tick) and bursts (2% of ticks, 20x errors, latency x3) on both arms
        state = np.zeros((P, T), dtype=int)
        for i in range(1, T):
            sw = rng.random(P) < 0.03
            state[:, i] = np.where(sw, rng.integers(0, 3, P), state[:, i - 1])
        lvl = np.array([0.0, 1.0, -1.0])[state]
        burst = rng.random((P, T)) < 0.02
        return Null(rng.poisson(base_N * np.exp(0.5 * lvl)), p, -4 + lvl + 3 * burst, np.log(0.5 / 80) + lvl, 4.5 + 0.5 * lvl + np.log(3) * burst,
                    0.8 * lvl)
    if name == "traffic_share":
        # diurnal x trending traffic, share stepping 5% -> 10% -> 25% -> 50% at quarters, 10% empty ticks
        N = base_N * (1 + 0.8 * np.sin(2 * np.pi * t / 96)) * (0.3 + 1.4 * t / T)
        N = rng.poisson(N) * (rng.random((P, T)) >= 0.1)
        p = np.choose(np.minimum(4 * t // T, 3), [0.05, 0.10, 0.25, 0.50]) * np.ones((P, T))
        z = ar(rng, P, T, 0.9)
        return Null(N, p, -4 + np.sin(2 * np.pi * t / 96) + 0.5 * z, np.log(0.5 / 80) + 0.5 * z, 4.5 + 0.3 * np.sin(2 * np.pi * t / 96) + 0.3 * t / T + 0 * z,
                    0.3 * z)
    if name == "heavy_low":
        # Student-t(1.5) log-latency noise per request (heavy tails) and a rare event at 0.5 per tick
        z = ar(rng, P, T, 0.95)
        return Null(rng.poisson(base_N), p, -4 + 0.5 * z, np.log(0.5 / 80) + 0.5 * z, 4.5 + 0.3 * z, 0.3 * z, lat_df=1.5)
    raise KeyError(name)


def null_data(null: Null, rng: np.random.Generator, path: int) -> SplitData:
    """One path's blocks: per-unit outcomes and independent Bernoulli(p_t) labels, aggregated per tick."""
    N, T = null.N[path].astype(np.int64), null.N.shape[1]
    tick = np.repeat(np.arange(T), N)
    u = tick.size
    can = rng.random(u) < null.p[path][tick]
    nc = np.bincount(tick, weights=can, minlength=T).astype(np.int64)
    ptr = np.arange(T + 1, dtype=np.int64)
    err = rng.random(u) < expit(null.err[path][tick])
    rare = rng.random(u) < expit(null.rare[path][tick])
    lat = null.lat[path][tick] + 0.5 * (rng.standard_normal(u) if null.lat_df is None else rng.standard_t(null.lat_df, u))
    score = null.score[path][tick] + rng.standard_normal(u)
    graded = rng.random(u) < 0.7  # a graded subsample: whether a score exists is an outcome, not a label
    out = {"errors": _blocks(tick, can, err.astype(np.int64), 1, T, nc, N, ptr), "rare": _blocks(tick, can, rare.astype(np.int64), 1, T, nc, N, ptr),
           "latency_ms": _blocks(tick, can, np.searchsorted(np.log(LAT_EDGES), lat, side="left"), len(LAT_EDGES), T, nc, N, ptr)}
    m = graded
    out["score"] = _blocks(tick[m], can[m], np.searchsorted(np.log(np.array(SCORE_EDGES) / (1 - np.array(SCORE_EDGES))), score[m], side="left"),
                           len(SCORE_EDGES), T, np.bincount(tick[m], weights=can[m], minlength=T).astype(np.int64),
                           np.bincount(tick[m], minlength=T).astype(np.int64), ptr)
    return SplitData(np.arange(T, dtype=float), nc, N, out)


def _blocks(tick: np.ndarray, can: np.ndarray, bucket: np.ndarray, K: int, T: int, nc: np.ndarray, n: np.ndarray, ptr: np.ndarray) -> MetricBlocks:
    """Blocks from each unit's bucket (``le`` semantics: bucket b = number of edges below the value;
    an event metric is one edge between 0 and 1): units above edge k are those with bucket > k."""
    B = K + 1
    allc = np.bincount(tick * B + bucket, minlength=T * B).reshape(T, B)
    canc = np.bincount(tick[can] * B + bucket[can], minlength=T * B).reshape(T, B)
    c1 = np.cumsum(allc[:, ::-1], axis=1)[:, ::-1][:, 1:]
    a = np.cumsum(canc[:, ::-1], axis=1)[:, ::-1][:, 1:]
    z = np.zeros(0, dtype=np.int64)
    return MetricBlocks(ptr, nc, n, np.ascontiguousarray(a, dtype=np.int64), np.ascontiguousarray(c1, dtype=np.int64), np.zeros(T + 1, dtype=np.int64), z, z, z)


def session_log(rng: np.random.Generator, T: int, tick_seconds: float = 60.0) -> RequestLog:
    """Session-routed requests: sessions arrive Poisson(8) per tick with 1 + Geometric(0.25) requests
    30 s apart on average; 10% of users are 'bad' (30% errors, slow), the rest 1% errors; the share
    steps 5% -> 50% at mid-run; each session's label is one Bernoulli(share at its start) draw."""
    ns = rng.poisson(8, T)
    start_tick = np.repeat(np.arange(T), ns)
    S = start_tick.size
    start = (start_tick + rng.random(S)) * tick_seconds
    m = 1 + rng.geometric(0.25, S)
    share = np.where(start_tick < T // 2, 0.05, 0.5)
    can_s = rng.random(S) < share
    bad = rng.random(S) < 0.1
    sid = np.repeat(np.arange(S), m)
    gaps = rng.exponential(30.0, sid.size)
    first = np.r_[0, np.cumsum(m)[:-1]]
    gaps[first] = 0.0
    cs = np.cumsum(gaps)
    ts = start[sid] + cs - np.repeat(cs[first], m)
    err = (rng.random(sid.size) < np.where(bad[sid], 0.3, 0.01)).astype(float)
    lat = np.exp(4.5 + np.where(bad[sid], 1.0, 0.0) + 0.5 * rng.standard_normal(sid.size))
    keep = ts < T * tick_seconds
    return RequestLog(ts[keep], can_s[sid][keep], sid[keep], np.full(int(keep.sum()), "", dtype=object),
                      {"errors": err[keep], "latency_ms": lat[keep]})


SESSION_SPECS = [MetricSpec("errors", "event", "up"), MetricSpec("latency_ms", "continuous", "up", LAT_EDGES[::2])]


@dataclass
class SplitMC:
    """Per path: did the gate roll back, each family's first firing tick (-1 never) and its running
    maximum log e-value over the run (exact from the suggestive level on, ``-inf`` below it)."""

    rollback: np.ndarray
    first_fire: np.ndarray
    peak: np.ndarray
    families: tuple[str, ...]

    def fired(self, family: str) -> np.ndarray:
        return self.first_fire[:, self.families.index(family)] > 0

    def crossed(self, family: str, alpha: float) -> np.ndarray:
        """Did the family's e-process reach ``1 / alpha`` at some tick (any ``alpha`` whose threshold is
        at or above the suggestive level)?"""
        return self.peak[:, self.families.index(family)] >= np.log(1 / alpha)


def run_null(name: str, seed: int, P: int, T: int, settings: SplitSettings) -> SplitMC:
    """``P`` paths of a null through :meth:`SplitGate.run_batch` (every tick of ``T`` watched)."""
    rng = np.random.default_rng(seed)
    null = make_null(name, rng, P, T)
    return _collect([_run(SplitGate(SPECS, settings), null_data(null, rng, i)) for i in range(P)])


def run_sessions(seed: int, P: int, T: int, settings: SplitSettings, per_request: bool) -> SplitMC:
    """Session-routed nulls analysed by session (the unit the router randomised) or, wrongly, by request."""
    rng = np.random.default_rng(seed)
    res = []
    for _ in range(P):
        log = session_log(rng, T, settings.tick_seconds)
        if per_request:
            log = RequestLog(log.timestamps, log.canary, None, log.tiers, log.values)
        res.append(_run(SplitGate(SESSION_SPECS, settings), requests_to_data(log, SESSION_SPECS, settings.tick_seconds, settings.unit_timeout)))
    return _collect(res)


def _run(gate: SplitGate, data: SplitData) -> tuple:
    b = gate.run_batch(data)
    return b.verdict[-1] == 3, b.first_fire, [f.evidence().peak_log_evidence for f in gate.families], b.families


def _collect(res: list) -> SplitMC:
    return SplitMC(np.array([r[0] for r in res]), np.array([r[1] for r in res]), np.array([r[2] for r in res]), res[0][3])
