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
that are not counts. Each increment is counted in exactly one tick (the one whose window holds the
scrape that first saw it), and the ticks of a run add up to the counters' total increase. Series are
summed per arm (the value of ``arm_label``, e.g. Argo's ``rollouts_pod_template_hash``); histogram
buckets are summed per ``le`` and then differenced across ``le`` into non-cumulative counts on the
metric's edges (Prometheus ``le`` semantics: a value equal to an edge is in the bucket whose upper edge
it is).

Never invented: for an arm, a metric is missing at a tick (absent from the arm's ``events`` /
``buckets``) when any of its series exists at only one end of the tick (it appears:
a new pod, whose earlier count is unknown; or it goes stale: a pod gone or a target Prometheus cannot
scrape, whose last increments are unknown), has a counter reset in the tick (a raw sample smaller than
the one before), has a non-finite value, when no series of the arm exists at either end, when the
histogram's ``le`` values are not exactly the configured edges plus ``+Inf``, when its differenced
counts are negative, or when an event metric or a histogram counts more than the arm's units. A grid
time where an arm's units are missing has no tick (a gap, with its reason): the format has no unknown
units. Times must be grid times ``k * interval``.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

_SELECTOR = r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?$"


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


#: increment of a series that does not exist at either end of a tick
_ABSENT = object()


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

    def increment(self, lo: float, hi: float) -> Any:
        """Counter increase from grid time ``lo`` to ``hi``; :data:`_ABSENT` when the series exists at
        neither; None when it is unknown: the series exists at only one of them (it appears, or goes
        stale: a new pod, a target that cannot be scraped), a value is not finite, or a raw sample
        between them is smaller than the one before (a counter reset)."""
        a, b = self.at.get(_ms(lo)), self.at.get(_ms(hi))
        if a is None and b is None:
            return _ABSENT
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b < a:
            return None
        i, j = bisect.bisect_right(self.ts, lo), bisect.bisect_right(self.ts, hi)
        seg = self.vs[max(i - 1, 0):j]
        if not all(math.isfinite(v) for v in seg) or any(y < x for x, y in zip(seg, seg[1:])):
            return None
        return b - a


@dataclass
class SplitRead:
    """What :meth:`PrometheusSplitSource.read` gives: the ticks (agreed split-tick dicts) and the gaps
    (grid times without a tick, ``{"timestamp", "reason"}``), each in time order."""

    ticks: list[dict[str, Any]]
    gaps: list[dict[str, str]]


class PrometheusSplitSource:
    """Aggregated split ticks (see the module docstring) for grid times, from one Prometheus.

    Parameters
    ----------
    spec : SplitSpec or dict
    client : httpx.Client, optional
        Injected client; by default one built from the spec's connection options under ``policy``.
    """

    def __init__(self, spec: SplitSpec | Mapping[str, Any], *, client: httpx.Client | None = None, policy: SecretPolicy | None = None) -> None:
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
        tick: the split tests need both arms' units, and the format has no unknown units. In a tick,
        an event metric with more events than the arm's units, or a histogram with more observations,
        is left out (missing) for that arm: counters scraped a moment apart can disagree, and such a
        tick would not be a valid split tick.

        Raises
        ------
        InputError
            ``times`` not increasing or not on the grid.
        PromUnavailable, PromAPIError
            Nothing was read (the caller retries the same times later).
        """
        times = [float(t) for t in times]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise InputError("times must be strictly increasing", column="times")
        off = [t for t in times if abs(t / self.interval - round(t / self.interval)) > 1e-9]
        if off:
            raise InputError(f"time {off[0]!r} is not on the grid k * {self.interval}", column="times")
        out = SplitRead([], [])
        for c in range(0, len(times), CHUNK):
            part = self._read(times[c:c + CHUNK])
            out.ticks.extend(part.ticks)
            out.gaps.extend(part.gaps)
        return out

    def _read(self, times: list[float]) -> SplitRead:
        series = {(kind, name): self._series(sel, times) for kind, name, sel in self._selectors()}
        out = SplitRead([], [])
        for t in times:
            arms: dict[str, dict[str, Any]] = {arm: {"units": None, "events": {}, "buckets": {}} for arm in ("canary", "stable")}
            for (kind, name), ss in series.items():
                for arm in arms:
                    mine = [s for s in ss if self._arm_of[s.labels[self.spec.arm_label]] == arm]
                    if kind == "buckets":
                        counts = self._buckets(name, arm, mine, t)
                    else:
                        counts = _sum_increments(mine, t - self.interval, t)
                    if counts is None:
                        continue
                    if kind == "units":
                        arms[arm]["units"] = counts
                    else:
                        arms[arm][kind][name] = counts
            unknown = [arm for arm, a in arms.items() if a["units"] is None]
            if unknown:
                out.gaps.append({"timestamp": iso_utc(t), "reason": f"units of {' and '.join(unknown)} unknown (no series, or one appeared, "
                                 "went stale, was reset or is not finite in this tick)"})
                continue
            for arm, a in arms.items():
                over = [m for m, v in a["events"].items() if v > a["units"]] + [m for m, v in a["buckets"].items() if sum(v) > a["units"]]
                for m in over:
                    log.warning("split tick %s, %s: %s counts more than the %d units (treated as missing)", iso_utc(t), arm, m, a["units"])
                    a["events"].pop(m, None)
                    a["buckets"].pop(m, None)
            out.ticks.append({"timestamp": iso_utc(t), "arms": arms, "tier": None})
        return out

    def _buckets(self, name: str, arm: str, series: list[_Series], t: float) -> list[int] | None:
        edges = [float(e) for e in self.spec.histograms[name].edges] + [math.inf]
        by_le: dict[float, list[_Series]] = {}
        for s in series:
            try:
                le = float(s.labels.get("le", "nan"))
            except ValueError:
                le = math.nan
            by_le.setdefault(le, []).append(s)
        if not by_le:
            return None
        if sorted(by_le) != edges:
            log.warning("histogram %s, arm %s: le values %s are not the edges %s plus +Inf (treated as missing)", name, arm, sorted(by_le), edges[:-1])
            return None
        cum = []
        for le in edges:
            c = _sum_increments(by_le[le], t - self.interval, t)
            if c is None:
                return None
            cum.append(c)
        counts = [cum[0]] + [b - a for a, b in zip(cum, cum[1:])]
        if any(c < 0 for c in counts):
            log.warning("histogram %s, arm %s at %s: cumulative buckets decrease across le (treated as missing)", name, arm, iso_utc(t))
            return None
        return counts

    def validate(self, at: float) -> list[str]:
        """Evaluate every selector once at ``at``: it must parse, be a series selector, carry the arm
        label, and (histograms) have exactly the configured edges plus ``+Inf`` as ``le`` per arm.
        Returns warnings for an arm without series now.

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
            for arm, value in self.spec.arms.items():
                mine = [lab for lab, _ in res if lab.get(self.spec.arm_label) == value]
                if not mine:
                    warnings.append(f"{where}: no series with {self.spec.arm_label}={value!r} ({arm}) now; missing until there is one")
                    continue
                if kind == "buckets":
                    seen = sorted({lab.get("le", "") for lab in mine})
                    want = [float(e) for e in self.spec.histograms[name].edges] + [math.inf]
                    if sorted(float(x) if _is_float(x) else math.nan for x in seen) != want:
                        raise InputError(f"selector {sel!r}, {arm} arm: bucket bounds le={seen} are not the edges {self.spec.histograms[name].edges} plus +Inf", column=where)
        return warnings


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def _sum_increments(series: Sequence[_Series], lo: float, hi: float) -> int | None:
    """Sum of the series' increments from ``lo`` to ``hi``, rounded; None when one is unknown or no
    series exists at either time."""
    total, seen = 0.0, False
    for s in series:
        inc = s.increment(lo, hi)
        if inc is _ABSENT:
            continue
        if inc is None:
            return None
        total, seen = total + inc, True
    return int(round(total)) if seen else None


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
                client: httpx.Client | None = None) -> SplitRead:
    """Split ticks and gaps at every grid time in ``[start, end]`` (what the split gate's service
    wiring calls for one tick, ``start == end``, or for a backfill; pass the service's
    :class:`SecretPolicy`).

    Raises
    ------
    PromUnavailable, PromAPIError
    """
    src = PrometheusSplitSource(spec, client=client, policy=policy)
    try:
        return src.read(src.grid(start, end))
    finally:
        src.close()
