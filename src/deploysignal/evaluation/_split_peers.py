"""Peers of the split gate, fed the same per-request log: per-tick aggregates, the fixed-n test, Kayenta's
judge and today's two-sample aggregate gate.

What each peer sees (the same requests and window as the split gate):

* :func:`tick_aggregates` turns a per-request log into the per-tick, per-arm series a dashboard (and
  Kayenta, and ``deploysignal gate --control``) works from (:func:`aggregate_signals`): the rate of each
  event metric, p50 and p99 of a continuous metric harmful upwards, mean and p50 of one harmful
  downwards. An arm with no measured value of a metric in a tick gives ``NaN``. Percentiles of an arm
  with few requests per tick are biased (a small sample's p99 sits below the population's): comparing
  them across arms of unequal size is what these peers do, as their users do.
* :class:`FixedNTest`: one look at the end (or at a chosen tick) on *all requests so far*: per event metric
  a one-sided Fisher exact test (canary rate higher), per continuous metric a one-sided Mann-Whitney test
  (asymptotic, tie-corrected, continuity-corrected) in the harmful direction, Bonferroni over the metrics
  at level ``alpha``. Valid at its single look when requests are randomised one by one (the hypergeometric
  and permutation laws hold given the arm sizes); with session routing it treats clustered requests as
  independent and is *not* valid (the evaluation reports its false-rollback rate there).
* :class:`KayentaSplit`: :class:`~deploysignal.evaluation.KayentaJudge` on the canary and stable
  aggregate series, judging every ``interval`` ticks over the growing lookback.
* :class:`TwoSampleAggregateGate`: :class:`~deploysignal.gate.Gate` in two-sample mode on the same
  aggregates (canary = canary arm, control = stable arm), its config compiled once from the canary-arm
  aggregates of a healthy A/A period of the same world (:func:`calibrate_two_sample`).

No peer here has an anytime guarantee: the fixed-n test is exact at one look only, Kayenta's judge has no
error guarantee, and the two-sample gate's rests on exchangeable arm aggregates (DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ..calibration import CompiledConfig, compile_baseline
from ..gate import Gate, GateSettings
from ..simulate._split import SplitRequests
from ..split import MetricSpec
from ..telemetry import Frame, SignalSpec
from ._kayenta import KayentaJudge

__all__ = [
    "FixedNTest",
    "KayentaSplit",
    "PeerResult",
    "TwoSampleAggregateGate",
    "aggregate_signals",
    "calibrate_two_sample",
    "group_quantiles",
    "split_ticks",
    "tick_aggregates",
]

def _stats_of(m: MetricSpec) -> tuple[str, ...]:
    # what a dashboard user compares per arm: the median and the tail on the harmful side for metrics
    # harmful upwards (latency p50 / p99); the mean and the median for metrics harmful downwards (eval
    # score, tokens), whose low tail (p01) an arm of a few dozen requests per tick cannot estimate
    return ("p50", "p99") if m.direction == "up" else ("mean", "p50")


def aggregate_signals(metrics: tuple[MetricSpec, ...]) -> tuple[SignalSpec, ...]:
    """The per-tick aggregate signals of a split log's metrics, each with the metric's harm direction:
    ``<m>_rate`` for an event metric; ``<m>_p50`` and ``<m>_p99`` for a continuous metric harmful upwards,
    ``<m>_mean`` and ``<m>_p50`` for one harmful downwards."""
    out = []
    for m in metrics:
        if m.kind == "event":
            out.append(SignalSpec(f"{m.name}_rate", m.direction, "rate"))
        else:
            out.extend(SignalSpec(f"{m.name}_{s}", m.direction, "continuous") for s in _stats_of(m))
    return tuple(out)


@dataclass(frozen=True)
class PeerResult:
    """A peer's decision on one log: first rollback tick (0-based) or ``None``, and the final verdict."""

    first_alarm: int | None
    verdict: str


def group_quantiles(group: np.ndarray, values: np.ndarray, qs: tuple[float, ...], n_groups: int) -> np.ndarray:
    """Per group ``g`` in ``0..n_groups-1`` and per ``q`` in ``qs``, the linear-interpolated quantile of the
    non-NaN ``values`` with ``group == g`` (``numpy.quantile``'s default); NaN for a group without values.
    Returns shape ``(len(qs), n_groups)``; one sort serves every ``q``.

    Examples
    --------
    >>> group_quantiles(np.array([0, 0, 0, 2]), np.array([3.0, 1.0, 2.0, 5.0]), (0.5, 1.0), 3).tolist()
    [[2.0, nan, 5.0], [3.0, nan, 5.0]]
    """
    ok = ~np.isnan(values)
    g, v = group[ok], values[ok]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    cnt = np.bincount(g, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(cnt)[:-1]))
    out = np.full((len(qs), n_groups), np.nan)
    has = cnt > 0
    for i, q in enumerate(qs):
        pos = q * (cnt[has] - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, cnt[has] - 1)
        frac = pos - lo
        a, b = v[starts[has] + lo], v[starts[has] + hi]
        out[i, has] = a + frac * (b - a)
    return out


def _group_mean(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    ok = ~np.isnan(values)
    s = np.bincount(group[ok], weights=values[ok], minlength=n_groups)
    c = np.bincount(group[ok], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def tick_aggregates(req: SplitRequests) -> tuple[Frame, Frame]:
    """Per-tick aggregates of the canary and the stable arm (rows = every tick of the log, timestamps =
    tick starts, columns = :func:`aggregate_signals`); NaN where an arm measured nothing in a tick."""
    T = req.n_ticks
    ts = req.start + req.tick_seconds * np.arange(T)
    specs = aggregate_signals(req.metrics)
    frames = []
    for arm in (True, False):
        sel = req.canary == arm
        g = req.tick[sel]
        cols: list[np.ndarray] = []
        for m in req.metrics:
            v = req.values[m.name][sel]
            if m.kind == "event":
                cols.append(_group_mean(g, v, T))
            elif m.direction == "up":
                cols.extend(group_quantiles(g, v, (0.5, 0.99), T))
            else:
                cols.append(_group_mean(g, v, T))
                cols.extend(group_quantiles(g, v, (0.5,), T))
        frames.append(Frame(ts, np.column_stack(cols), tuple(s.name for s in specs), specs=specs))
    return frames[0], frames[1]


def split_ticks(req: SplitRequests, *, by_tier: bool = True) -> list[dict]:
    """The log as aggregated split ticks in the agreed JSON shape, ``timestamp`` = epoch seconds of the
    tick start; with ``by_tier`` (and a tier column) one dict per tier and tick, ``tier`` set, else one
    per tick with ``tier: null``. Per arm: ``units`` (requests, or distinct sessions when routing was by
    session), ``events`` per event metric (units with at least one event) and NON-cumulative ``buckets``
    per continuous metric on its edges, Prometheus ``le`` semantics (a value equal to an edge falls in
    the bucket it closes). A metric with no measured value in an arm's tick is left out of that arm
    (missing, not 0).

    Examples
    --------
    >>> from deploysignal.simulate._split import simulate_split
    >>> t = split_ticks(simulate_split("iid", volume=200, share=0.5, ticks=3, seed=0), by_tier=False)
    >>> len(t), sorted(t[0]["arms"]), sorted(t[0]["arms"]["canary"]["buckets"])
    (3, ['canary', 'stable'], ['eval_score', 'latency_ms'])
    """
    T = req.n_ticks
    use_tier = by_tier and req.tier is not None
    tier_names = sorted({str(x) for x in req.tier}) if use_tier and req.tier is not None else [None]
    tier_idx = np.searchsorted(np.array(tier_names, dtype=object), req.tier) if use_tier and req.tier is not None else np.zeros(len(req), dtype=np.int64)
    G = T * len(tier_names)
    group = req.tick * len(tier_names) + tier_idx  # (tick, tier) cell of each request
    per_arm: dict[str, dict[str, Any]] = {}
    for arm_name, arm in (("canary", True), ("stable", False)):
        sel = req.canary == arm
        g = group[sel]
        if req.unit is None:
            units = np.bincount(g, minlength=G)
        else:
            pairs = np.unique(np.column_stack([g, req.unit[sel]]), axis=0) if g.size else np.zeros((0, 2), dtype=np.int64)
            units = np.bincount(pairs[:, 0], minlength=G)
        cols: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        for m in req.metrics:
            v = req.values[m.name][sel]
            ok = ~np.isnan(v)
            measured = np.bincount(g[ok], minlength=G)
            if m.kind == "event":
                if req.unit is None:
                    counts = np.bincount(g[ok], weights=v[ok] > 0, minlength=G)
                else:  # units with at least one event
                    hit = np.unique(np.column_stack([g[ok][v[ok] > 0], req.unit[sel][ok][v[ok] > 0]]), axis=0)
                    counts = np.bincount(hit[:, 0], minlength=G) if hit.size else np.zeros(G)
                cols[m.name] = ("events", counts.astype(np.int64), measured)
            else:
                B = len(m.edges) + 1
                b = np.searchsorted(np.asarray(m.edges), v[ok], side="left")
                counts = np.bincount(g[ok] * B + b, minlength=G * B).reshape(G, B)
                cols[m.name] = ("buckets", counts, measured)
        per_arm[arm_name] = {"units": units, "cols": cols}
    out: list[dict] = []
    for t in range(T):
        for k, tier in enumerate(tier_names):
            cell = t * len(tier_names) + k
            arms = {}
            for arm_name in ("canary", "stable"):
                pa = per_arm[arm_name]
                a: dict[str, Any] = {"units": int(pa["units"][cell]), "events": {}, "buckets": {}}
                for name, (where, counts, measured) in pa["cols"].items():
                    if measured[cell] > 0:
                        a[where][name] = int(counts[cell]) if where == "events" else [int(x) for x in counts[cell]]
                arms[arm_name] = a
            out.append({"timestamp": float(req.start + req.tick_seconds * t), "arms": arms, "tier": tier})
    return out


@dataclass
class FixedNTest:
    """One look at tick ``at`` (``None`` = the last tick) on all requests up to it (see module docstring).

    Examples
    --------
    >>> from deploysignal.simulate._split import simulate_split
    >>> FixedNTest().run(simulate_split("iid", "errors_x2", volume=5000, share=0.5, seed=0)).verdict
    'rollback'
    """

    alpha: float = 0.05
    at: int | None = None
    name: str = "fixed_n"

    def pvalues(self, req: SplitRequests, at: int | None = None) -> dict[str, float]:
        """One-sided p-value per metric on the requests of ticks ``0..at`` (NaN when an arm has no data)."""
        last = (req.n_ticks - 1) if at is None else at
        keep = req.tick <= last
        can = req.canary[keep]
        out: dict[str, float] = {}
        for m in req.metrics:
            v = req.values[m.name][keep]
            ok = ~np.isnan(v)
            x, y = v[ok & can], v[ok & ~can]
            if x.size == 0 or y.size == 0:
                out[m.name] = math.nan
                continue
            if m.kind == "event":
                a, b = int(x.sum()), int(y.sum())
                if m.direction == "down":
                    a, b = x.size - a, y.size - b
                # hypergeometric tail: canary events >= a given both arms' sizes and the total events
                out[m.name] = float(stats.hypergeom.sf(a - 1, x.size + y.size, a + b, x.size))
            else:
                alt = "greater" if m.direction == "up" else "less"
                out[m.name] = float(stats.mannwhitneyu(x, y, alternative=alt, method="asymptotic").pvalue)
        return out

    def run(self, req: SplitRequests) -> PeerResult:
        at = (req.n_ticks - 1) if self.at is None else min(self.at, req.n_ticks - 1)
        p = self.pvalues(req, at)
        level = self.alpha / len(req.metrics)
        if any(v <= level for v in p.values() if not math.isnan(v)):
            return PeerResult(at, "rollback")
        return PeerResult(None, "proceed" if all(not math.isnan(v) for v in p.values()) else "extend")


@dataclass
class KayentaSplit:
    """Kayenta's judge (:class:`~deploysignal.evaluation.KayentaJudge`, Spinnaker defaults 95 / 75) on the
    canary-arm and stable-arm aggregate series, a judgement every ``interval`` ticks."""

    window: int = 60
    interval: int = 10
    name: str = "kayenta"

    def run(self, req: SplitRequests, aggregates: tuple[Frame, Frame] | None = None) -> PeerResult:
        can, stab = aggregates or tick_aggregates(req)
        r = KayentaJudge(window=self.window, interval=self.interval).run(stab, can, stab)
        return PeerResult(r.first_alarm, r.verdict)


def calibrate_two_sample(aa: SplitRequests, seed: int = 0) -> CompiledConfig:
    """Compile the two-sample gate's config from the canary-arm aggregates of a healthy A/A log (what a
    user of ``deploysignal calibrate`` has: the canary's own telemetry while it ran the stable version)."""
    can, _ = tick_aggregates(aa)
    return compile_baseline(can, seed=seed, robust_covariance=False)


@dataclass
class TwoSampleAggregateGate:
    """``deploysignal gate --control`` on per-tick aggregates: canary arm against the stable arm, the
    planned window = the log's length, no extension (the same window as every other method)."""

    config: CompiledConfig
    alpha: float = 0.05
    window: int = 60
    name: str = "two_sample"
    settings: GateSettings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = GateSettings(alpha=self.alpha, window=self.window, mode="two-sample", max_extensions=0)

    def check(self) -> None:
        """Build the gate once: raises what :class:`~deploysignal.gate.Gate` raises on a config it cannot
        use (a family that found no calibration rows, ...)."""
        Gate(self.config, self.settings)

    def run(self, req: SplitRequests, aggregates: tuple[Frame, Frame] | None = None) -> PeerResult:
        return self.run_many([aggregates or tick_aggregates(req)])[0]

    def run_many(self, aggregates: list[tuple[Frame, Frame]]) -> list[PeerResult]:
        """Several logs of one timeline at once (:meth:`Gate.run_batch` over streams; same verdicts as one
        gate per log)."""
        if not aggregates:
            return []
        names = self.config.names
        can = np.stack([c.select(names).values for c, _ in aggregates])
        stab = np.stack([s.select(names).values for _, s in aggregates])
        gate = Gate([self.config] * len(aggregates), self.settings)
        res = gate.run_batch(aggregates[0][0].timestamps, can, stab)
        out = []
        for v, at in zip(res.verdicts(), res.decided_at.tolist()):
            if v == "rollback":
                out.append(PeerResult(int(at), "rollback"))
            else:
                out.append(PeerResult(None, "proceed" if v == "proceed" else "extend"))
        return out
