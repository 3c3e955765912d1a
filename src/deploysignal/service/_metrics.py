"""Prometheus exposition for the service: verdicts, wealth per family, ingest counts (prometheus_client).

:func:`exposition` writes the series a token may see: with a scoped token (``_scope.py``), every
series labelled with an ``analysis`` outside its scope is left out; the service's own counters (no
``analysis`` label) are shown to every token allowed on ``/metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ._manager import AnalysisManager

__all__ = ["build_registry", "exposition"]

VERDICTS = ("pending", "proceed", "extend", "rollback")


class _GateCollector(Collector):
    """Exports every analysis this process holds, as committed to the store (review finding 1: never an
    evaluation in progress): cached ones from the view the manager publishes after each commit, evicted
    ones from their stored summary checked against the chain (one store read per evicted analysis per
    scrape), so an eviction never makes a series, and an alert on it, go away."""

    def __init__(self, manager: AnalysisManager) -> None:
        self._m = manager

    def collect(self) -> Iterator[Any]:
        verdict = GaugeMetricFamily("deploysignal_verdict", "1 for the analysis' current verdict, 0 for the others", labels=["analysis", "verdict"])
        final = GaugeMetricFamily("deploysignal_verdict_final", "1 once the verdict can no longer change", labels=["analysis"])
        wealth = GaugeMetricFamily("deploysignal_log_wealth", "Natural-log wealth of each detector family at the last tick", labels=["analysis", "family"])
        thr = GaugeMetricFamily("deploysignal_log_threshold", "Natural-log bound at which the family fires", labels=["analysis", "family"])
        ticks = GaugeMetricFamily("deploysignal_analysis_ticks", "Ticks evaluated by the analysis", labels=["analysis"])
        views = self._m.current_views()  # committed only; evicted ones from the store; none deleted (or replaced) by another process
        for aid, v in sorted(views.items()):
            for name in VERDICTS:
                verdict.add_metric([aid, name], 1.0 if name == v.verdict else 0.0)
            final.add_metric([aid], 1.0 if v.final else 0.0)
            ticks.add_metric([aid], float(v.n_ticks))
            for r in v.records:
                fam = r.get("family")
                if fam in (None, "gate", "cut", "input", "checkpoint"):
                    continue
                lw = r.get("log_wealth", r.get("log_evidence"))  # a split family's record has log_evidence
                wealth.add_metric([aid, fam], math.nan if lw is None else float(lw))
                t = r.get("threshold")
                thr.add_metric([aid, fam], math.inf if t is None else float(t))
        cached = GaugeMetricFamily("deploysignal_engines_cached", "Analysis engines held in this process's cache")
        cached.add_metric([], float(len(self._m.cached())))
        evicted = CounterMetricFamily("deploysignal_engines_evicted", "Engines evicted from the cache (rebuilt from snapshot + ticks on next use)")
        evicted.add_metric([], float(self._m.evicted))
        yield from (verdict, final, wealth, thr, ticks, cached, evicted)


class _Scoped(Collector):
    """The samples of ``registry`` whose ``analysis`` label passes ``visible`` (or that have none)."""

    def __init__(self, registry: CollectorRegistry, visible: Callable[[str], bool]) -> None:
        self._r, self._visible = registry, visible

    def collect(self) -> Iterator[Metric]:
        for m in self._r.collect():
            out = Metric(m.name, m.documentation, m.type, m.unit)
            out.samples = [s for s in m.samples if "analysis" not in s.labels or self._visible(s.labels["analysis"])]
            yield out


def exposition(registry: CollectorRegistry, visible: Callable[[str], bool] | None = None) -> bytes:
    """The text exposition of ``registry``; with ``visible``, only the analyses it admits."""
    if visible is None:
        return generate_latest(registry)
    scoped = CollectorRegistry(auto_describe=False)
    scoped.register(_Scoped(registry, visible))
    return generate_latest(scoped)


def build_registry(manager: AnalysisManager) -> tuple[CollectorRegistry, dict[str, Any]]:
    """A registry private to one app (tests build many apps in one process)."""
    reg = CollectorRegistry(auto_describe=False)
    counters = {
        "ticks": Counter("deploysignal_ticks_ingested", "Ticks accepted and stored", ["analysis"], registry=reg),
        "rejected": Counter("deploysignal_ingest_rejected", "Ingest requests rejected as bad input", registry=reg),
        "limited": Counter("deploysignal_requests_rate_limited", "Requests refused by a rate limit (429)", registry=reg),
        "latency": Histogram(
            "deploysignal_request_seconds",
            "Request handling time inside the service (until the response starts)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=reg,
        ),
    }
    reg.register(_GateCollector(manager))
    return reg, counters
