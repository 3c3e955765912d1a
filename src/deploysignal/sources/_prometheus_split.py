"""Per-arm counters and histograms from Prometheus, as aggregated randomised-split ticks.

One tick at grid time ``t`` (``k * interval``) covers ``(t - interval, t]`` and is the JSON object the
randomised-split gate ingests::

    {"timestamp": "2026-12-07T10:00:00Z",
     "arms": {"canary": {"units": 240, "events": {"errors": 3}, "buckets": {"latency_ms": [10, 50, 120, 40, 15, 5]}},
              "stable": {...}},
     "tier": null}

How counts are read. Prometheus keeps cumulative counters (``_total``, ``_count``, histogram
``_bucket{le}``) per series (pod, instance, ...). For every series this source reads its value at each
grid time as Prometheus evaluates it (``query_range`` of the plain selector with step ``interval``:
the last sample at or before ``t``, unless the series is stale or has no sample in the lookback) and
its raw samples (a range-vector selector), and takes, per tick, the value at ``t`` minus the value at
``t - interval``. No ``rate``/``increase``: those extrapolate to the window's edges and give fractions
that are not counts. Each increment of a series with a value at both ends of a tick is counted in that
tick only (the one whose window holds the scrape that first saw it); a tick where a series has a
value at one end only, or raw samples but a value at neither end, leaves the metric missing, so the
ticks add up to the counters' increase over the ticks where the metric is present. Series are
summed per arm (the value of ``arm_label``, e.g. Argo's ``rollouts_pod_template_hash``); histogram
buckets are summed per ``le`` and then differenced across ``le`` into non-cumulative counts on the
metric's edges (Prometheus ``le`` semantics: a value equal to an edge is in the bucket whose upper edge
it is).

Never invented: for an arm, a metric is missing at a tick (absent from the arm's ``events`` /
``buckets``, and listed with its reason in :attr:`SplitRead.missing`) when any of its series exists at
only one end of the tick (it appears: a new pod, or a label set a client library creates at its first
increment, whose earlier count is unknown; or it goes stale: a pod gone or a target Prometheus cannot
scrape, whose last increments are unknown), has raw samples in the tick but a value at neither end (it
lived inside the tick), has a counter reset in the tick (a raw sample smaller than the one before),
has a non-finite value, when no series of the arm plays a part in the tick, when the histogram's
``le`` values are not exactly the configured edges plus ``+Inf``, when its differenced counts are
negative, or when an event metric or a histogram counts more than the arm's units. A new series is
not counted from an implicit 0: a counter Prometheus starts scraping late would then count its whole
history in one tick. Counters must therefore exist from 0 for every label set of each arm
(:meth:`PrometheusSplitSource.validate` warns when they visibly do not). A grid time where an arm's
units are missing has no tick (a gap, with its reason): the format has no unknown units. Times must be
grid times ``k * interval``, and settled: at most ``now - settle_seconds`` (a scrape whose sample time
is at or before ``t`` may still be in flight).

Assumes Prometheus' default ``--query.lookback-delta`` (5 minutes, :data:`LOOKBACK`) for the raw
samples read before the first tick.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import Field, StrictFloat, StrictInt, field_validator, model_validator

from .._exceptions import InputError
from ._prometheus_http import Connection, PromAPIError, PromUnavailable, SecretPolicy, _api, _Strict, _value, iso_utc, query_instant, query_range

__all__ = ["HistogramQuery", "PrometheusSplitSource", "SplitRead", "SplitSpec", "split_ticks"]

log = logging.getLogger(__name__)

#: seconds of samples read before the first tick's window, to find each series' value there
LOOKBACK = 300.0
#: ticks per raw-sample request
CHUNK = 720

#: a metric name with optional matchers (quoted values may hold any character); one selector only
_SELECTOR = r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})?$'


class HistogramQuery(_Strict):
    """A Prometheus histogram: the selector of its ``_bucket`` series and the metric's edges (finite,
    strictly increasing; Prometheus' buckets are these plus ``+Inf``)."""

    buckets: str = Field(pattern=_SELECTOR, max_length=4096)
    edges: list[StrictFloat | StrictInt] = Field(min_length=1, max_length=1000)

    @field_validator("edges")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if not all(math.isfinite(x) for x in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("edges must be finite and strictly increasing")
        return v


class SplitSpec(Connection):
    """Where the per-arm telemetry of a randomised split is in Prometheus.

    Attributes
    ----------
    interval_seconds : float
        Tick length; ticks at ``k * interval_seconds``.
    arm_label : str
        The label whose value tells the arm (``rollouts_pod_template_hash``, ``version``, ...).
    arms : dict
        ``{"canary": <label value>, "stable": <label value>}``.
    units : str
        Selector of the counter of randomised units (requests, sessions), e.g. ``http_requests_total{job="api"}``.
    events : dict
        Event metric name -> selector of its counter.
    histograms : dict
        Continuous metric name -> :class:`HistogramQuery`.
    """

    interval_seconds: StrictFloat | StrictInt = Field(60, ge=1, le=86_400)
    arm_label: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    arms: dict[Literal["canary", "stable"], str] = Field(min_length=2, max_length=2)
    units: str = Field(pattern=_SELECTOR, max_length=4096)
    events: dict[str, str] = Field(default_factory=dict)
    histograms: dict[str, HistogramQuery] = Field(default_factory=dict)

    @field_validator("events", "histograms")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [n for n in v if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}", n)]
        if bad:
            raise ValueError(f"metric names {bad} must start with a letter or _ and hold letters, digits, _ . : - (at most 128)")
        return v

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        if self.arms["canary"] == self.arms["stable"]:
            raise ValueError("arms.canary and arms.stable must be different label values")
        for name, sel in self.events.items():
            if not _re_match(sel):
                raise ValueError(f"events.{name}: {sel!r} is not a series selector (metric{{matchers}})")
        both = sorted(set(self.events) & set(self.histograms))
        if both:
            raise ValueError(f"metrics {both} are both events and histograms")
        return self


def _re_match(sel: str) -> bool:
    return re.match(_SELECTOR, sel) is not None


def _ms(t: float) -> int:
    return int(round(t * 1000))


class _Series:
    """One series: its values at the grid times as Prometheus evaluates them (``at``, milliseconds ->
    value; absent when the series is stale or has no sample in the lookback) and its raw samples."""

    __slots__ = ("at", "labels", "ts", "vs")

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.at: dict[int, float] = {}
        self.ts: list[float] = []
        self.vs: list[float] = []

    def set_raw(self, samples: Sequence[tuple[float, float]]) -> None:
        pts = sorted(samples)
        self.ts = [t for t, _ in pts]
        self.vs = [v for _, v in pts]

    def increment(self, lo: float, hi: float) -> float | str | None:
        """Counter increase from grid time ``lo`` to ``hi``; None when the series has neither a value
        at either end nor a raw sample between them (it plays no part in this tick); otherwise, when
        the increase is unknown, the reason (a string): the series exists at only one end (it appears:
        a new series, whose count before its first sample is unknown; or it goes stale: a pod gone, a
        target that cannot be scraped), it has raw samples in the tick but no value at either end (a
        short-lived series), a value is not finite, or a raw sample between them is smaller than the
        one before (a counter reset)."""
        a, b = self.at.get(_ms(lo)), self.at.get(_ms(hi))
        i, j = bisect.bisect_right(self.ts, lo), bisect.bisect_right(self.ts, hi)
        if a is None and b is None:
            return None if i == j else f"series {self._name()} has samples in the tick but no value at either end (it lived inside the tick)"
        if a is None:
            return f"series {self._name()} appears in the tick (its count before its first sample is unknown: initialise counters at 0)"
        if b is None:
            return f"series {self._name()} goes stale in the tick (its last increments are unknown)"
        seg = self.vs[max(i - 1, 0):j]
        if not (math.isfinite(a) and math.isfinite(b)) or not all(math.isfinite(v) for v in seg):
            return f"series {self._name()} has a non-finite value"
        if b < a or any(y < x for x, y in zip(seg, seg[1:])):
            return f"series {self._name()} was reset in the tick"
        return b - a

    def _name(self) -> str:
        return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()) if k != "__name__") + "}"


@dataclass
class SplitRead:
    """What :meth:`PrometheusSplitSource.read` gives, each list in time order: the ticks (agreed
    split-tick dicts), the gaps (grid times without a tick, ``{"timestamp", "reason"}``) and the
    missing metrics (a metric absent from an arm's ``events`` / ``buckets`` in a tick,
    ``{"timestamp", "arm", "metric", "reason"}``)."""

    ticks: list[dict[str, Any]]
    gaps: list[dict[str, str]]
    missing: list[dict[str, str]] = field(default_factory=list)


class PrometheusSplitSource:
    """Aggregated split ticks (see the module docstring) for grid times, from one Prometheus.

    Parameters
    ----------
    spec : SplitSpec or dict
    client : httpx.Client, optional
        Injected client; by default one built from the spec's connection options under ``policy``.
    clock : callable
        Epoch seconds now; a grid time later than ``clock() - spec.settle_seconds`` is not read.
    """

    def __init__(self, spec: SplitSpec | Mapping[str, Any], *, client: httpx.Client | None = None, policy: SecretPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.spec = spec if isinstance(spec, SplitSpec) else SplitSpec.model_validate(dict(spec))
        self.interval = float(self.spec.interval_seconds)
        self._client = client or self.spec.client(policy)
        self._arm_of = {v: k for k, v in self.spec.arms.items()}

    def close(self) -> None:
        self._client.close()

    def _selectors(self) -> list[tuple[str, str, str]]:
        out = [("units", "units", self.spec.units)]
        out += [("events", n, s) for n, s in self.spec.events.items()]
        return out + [("buckets", n, h.buckets) for n, h in self.spec.histograms.items()]

    def _series(self, selector: str, times: list[float]) -> list[_Series]:
        """Every series of ``selector`` carrying one of the arms: its values at the grid times
        ``times[0] - interval, ..., times[-1]`` (``query_range``, Prometheus' staleness and lookback
        apply) and its raw samples from :data:`LOOKBACK` seconds before the first of them."""
        start, end = times[0] - self.interval, times[-1]
        found: dict[tuple[tuple[str, str], ...], _Series] = {}

        def get(lab: dict[str, str]) -> _Series | None:
            if lab.get(self.spec.arm_label, "") not in self._arm_of:
                return None
            return found.setdefault(tuple(sorted(lab.items())), _Series(lab))

        for lab, pts in query_range(self._client, self.spec.url, selector, start, end, self.interval):
            if (s := get(lab)) is not None:
                s.at = {_ms(t): v for t, v in pts.items()}
        window_ms = int(math.ceil((end - start + LOOKBACK) * 1000))
        for lab, raw in _matrix(self._client, self.spec.url, f"{selector}[{window_ms}ms]", end):
            if (s := get(lab)) is not None:
                s.set_raw(raw)
        return list(found.values())

    def grid(self, start: float, end: float) -> list[float]:
        """Grid times ``k * interval`` in ``[start, end]``."""
        k0, k1 = math.ceil(start / self.interval - 1e-9), math.floor(end / self.interval + 1e-9)
        return [k * self.interval for k in range(k0, k1 + 1)]

    def tick(self, at: float) -> dict[str, Any] | None:
        """The tick at grid time ``at``; None when it is a gap (see :meth:`read`)."""
        got = self.read([at]).ticks
        return got[0] if got else None

    def range(self, start: float, end: float) -> list[dict[str, Any]]:
        """The ticks of every grid time in ``[start, end]``, in order, gaps left out (backfill)."""
        return self.read(self.grid(start, end)).ticks

    def read(self, times: Sequence[float]) -> SplitRead:
        """Ticks at increasing grid ``times`` (each covering ``(t - interval, t]``), and the gaps.

        A grid time where an arm's ``units`` are unknown is a gap (``{"timestamp", "reason"}``), not a
        tick: the split tests need both arms' units, and the format has no unknown units. A metric
        left out of an arm's tick is listed in ``missing`` with its reason; that includes an event
        metric with more events than the arm's units, or a histogram with more observations
        (counters scraped a moment apart can disagree, and such a tick would not be a valid split
        tick).

        Raises
        ------
        InputError
            ``times`` not increasing or not on the grid, or one has not settled (later than now minus
            ``settle_seconds``: scrapes of its window may still be in flight; read it later).
        PromUnavailable, PromAPIError
            Nothing was read (the caller retries the same times later).
        """
        times = [float(t) for t in times]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise InputError("times must be strictly increasing", column="times")
        off = [t for t in times if abs(t / self.interval - round(t / self.interval)) > 1e-9]
        if off:
            raise InputError(f"time {off[0]!r} is not on the grid k * {self.interval}", column="times")
        settled = self.clock() - float(self.spec.settle_seconds)
        if times and times[-1] > settled:
            first = next(t for t in times if t > settled)
            raise InputError(f"grid time {iso_utc(first)} has not settled: it can be read from {iso_utc(first + float(self.spec.settle_seconds))} on "
                             f"(settle_seconds={self.spec.settle_seconds}: scrapes of its window may still be in flight)", column="times")
        out = SplitRead([], [], [])
        for c in range(0, len(times), CHUNK):
            part = self._read(times[c:c + CHUNK])
            out.ticks.extend(part.ticks)
            out.gaps.extend(part.gaps)
            out.missing.extend(part.missing)
        return out

    def _read(self, times: list[float]) -> SplitRead:
        series = {(kind, name): self._series(sel, times) for kind, name, sel in self._selectors()}
        out = SplitRead([], [], [])
        for t in times:
            arms: dict[str, dict[str, Any]] = {arm: {"units": None, "events": {}, "buckets": {}} for arm in ("canary", "stable")}
            why: dict[tuple[str, str, str], str] = {}  # (arm, kind, metric) -> reason
            for (kind, name), ss in series.items():
                for arm in arms:
                    mine = [s for s in ss if self._arm_of[s.labels[self.spec.arm_label]] == arm]
                    counts = self._buckets(name, mine, t) if kind == "buckets" else _sum_increments(mine, t - self.interval, t)
                    if isinstance(counts, str):
                        why[(arm, kind, name)] = counts
                    elif kind == "units":
                        arms[arm]["units"] = counts
                    else:
                        arms[arm][kind][name] = counts
            unknown = [arm for arm, a in arms.items() if a["units"] is None]
            if unknown:
                out.gaps.append({"timestamp": iso_utc(t), "reason": "; ".join(f"units of {arm} unknown: {why[(arm, 'units', 'units')]}" for arm in unknown)})
                continue
            for arm, a in arms.items():
                for kind, what in (("events", "events"), ("buckets", "observations")):
                    for m, v in list(a[kind].items()):
                        n = v if kind == "events" else sum(v)
                        if n > a["units"]:  # counters scraped at other moments, or not one per unit
                            del a[kind][m]
                            why[(arm, kind, m)] = f"counts {n} {what}, more than the arm's {a['units']} units (scraped at other moments, or not per unit)"
            for (arm, kind, m), reason in sorted(why.items()):
                if kind != "units":
                    out.missing.append({"timestamp": iso_utc(t), "arm": arm, "metric": m, "reason": reason})
            out.ticks.append({"timestamp": iso_utc(t), "arms": arms, "tier": None})
        return out

    def _buckets(self, name: str, series: list[_Series], t: float) -> list[int] | str:
        edges = [float(e) for e in self.spec.histograms[name].edges] + [math.inf]
        by_le: dict[float, list[_Series]] = {}
        for s in series:
            try:
                le = float(s.labels.get("le", "nan"))
            except ValueError:
                le = math.nan
            by_le.setdefault(le, []).append(s)
        if not by_le:
            return "no series of this arm (initialise histograms for each arm)"
        if sorted(by_le) != edges:
            return f"le values {sorted(by_le)} are not the edges {edges[:-1]} plus +Inf"
        cum = []
        for le in edges:
            c = _sum_increments(by_le[le], t - self.interval, t)
            if isinstance(c, str):
                return c
            cum.append(c)
        counts = [cum[0]] + [b - a for a, b in zip(cum, cum[1:])]
        if any(c < 0 for c in counts):
            return "cumulative buckets decrease across le"
        return counts

    def validate(self, at: float) -> list[str]:
        """Evaluate every selector once at ``at``: it must parse, be a series selector, carry the arm
        label, and (histograms) have exactly the configured edges plus ``+Inf`` as ``le`` per arm.
        Returns warnings for an arm without series now, and for label values one arm has series for
        and the other has not (counters not initialised at 0 for each arm's label sets).

        Raises
        ------
        InputError
            Naming the metric, the selector and what is wrong.
        PromUnavailable
            The server could not answer.
        """
        warnings = []
        for kind, name, sel in self._selectors():
            where = f"prometheus_split.{kind}.{name}" if kind != "units" else "prometheus_split.units"
            try:
                res = query_instant(self._client, self.spec.url, sel, at)
                _matrix(self._client, self.spec.url, f"{sel}[{int(self.interval * 1000)}ms]", at)  # must be a selector
            except PromAPIError as exc:
                raise InputError(f"selector {sel!r} refused by prometheus: {exc}", column=where) from None
            per_arm: dict[str, list[dict[str, str]]] = {}
            for arm, value in self.spec.arms.items():
                mine = per_arm[arm] = [lab for lab, _ in res if lab.get(self.spec.arm_label) == value]
                if not mine:
                    warnings.append(f"{where}: no series with {self.spec.arm_label}={value!r} ({arm}) now; missing until there is one, and the "
                                    "increments in a series' first scrape are never counted (initialise counters at 0 for each arm)")
                    continue
                if kind == "buckets":
                    seen = sorted({lab.get("le", "") for lab in mine})
                    want = [float(e) for e in self.spec.histograms[name].edges] + [math.inf]
                    if sorted(float(x) if _is_float(x) else math.nan for x in seen) != want:
                        raise InputError(f"selector {sel!r}, {arm} arm: bucket bounds le={seen} are not the edges {self.spec.histograms[name].edges} plus +Inf", column=where)
            warnings += [f"{where}: {w}" for w in _uninitialised(per_arm, self.spec.arm_label)]
        return warnings


#: labels that name a target or pod rather than a label set of the application (their values differ
#: between the arms by construction)
TARGET_LABELS = frozenset({"instance", "pod", "pod_name", "kubernetes_pod_name", "pod_ip", "node", "host", "hostname", "container_id", "uid"})


def _uninitialised(per_arm: Mapping[str, list[dict[str, str]]], arm_label: str) -> list[str]:
    """Label values one arm has series for and the other has not (labels other than the arm label,
    ``le`` and :data:`TARGET_LABELS`): the sign of counters created at their first increment (an error
    counter per ``code``), whose first increments are never counted.

    >>> _uninitialised({"canary": [{"code": "500", "pod": "c-0"}], "stable": [{"code": "500", "pod": "s-0"}, {"code": "503", "pod": "s-0"}]}, "v")
    ["series with code='503' exist for stable but not for canary now: initialise counters at 0 for every label set of each arm"]
    """
    if any(not labs for labs in per_arm.values()):
        return []
    keys = sorted({k for labs in per_arm.values() for lab in labs for k in lab} - {arm_label, "__name__", "le"} - TARGET_LABELS)
    out = []
    for k in keys:
        vals = {arm: {lab.get(k, "") for lab in labs} for arm, labs in per_arm.items()}
        for arm, other in (("canary", "stable"), ("stable", "canary")):
            for v in sorted(vals[arm] - vals[other]):
                out.append(f"series with {k}={v!r} exist for {arm} but not for {other} now: initialise counters at 0 for every label set of each arm")
    return out


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def _sum_increments(series: Sequence[_Series], lo: float, hi: float) -> int | str:
    """Sum of the series' increments from ``lo`` to ``hi``, rounded; the reason when one is unknown or
    no series plays a part in the tick."""
    total, seen = 0.0, False
    for s in series:
        inc = s.increment(lo, hi)
        if inc is None:
            continue
        if isinstance(inc, str):
            return inc
        total, seen = total + inc, True
    return int(round(total)) if seen else "no series of this arm in the tick (initialise counters at 0 for each arm)"


def _matrix(client: httpx.Client, url: str, expr: str, at: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """Instant query of a range-vector selector: raw samples per series."""
    data = _api(client, url, "/api/v1/query", {"query": expr, "time": repr(float(at))})
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise PromAPIError(200, "result_type", f"{expr!r} is not a range-vector selector")
    out = []
    for s in data["result"]:
        try:
            out.append(({str(k): str(v) for k, v in s["metric"].items()}, [(float(t), _value(v)) for t, v in s["values"]]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise PromUnavailable("malformed matrix element") from None
    return out


def split_ticks(spec: SplitSpec | Mapping[str, Any], start: float, end: float, *, policy: SecretPolicy | None = None,
                client: httpx.Client | None = None, clock: Callable[[], float] = time.time) -> SplitRead:
    """Split ticks and gaps at every grid time in ``[start, end]`` (what the split gate's service
    wiring calls for one tick, ``start == end``, or for a backfill; pass the service's
    :class:`SecretPolicy`).

    Raises
    ------
    InputError
        A grid time in ``[start, end]`` has not settled (see :class:`~deploysignal.sources.Connection`).
    PromUnavailable, PromAPIError
    """
    src = PrometheusSplitSource(spec, client=client, policy=policy, clock=clock)
    try:
        return src.read(src.grid(start, end))
    finally:
        src.close()
