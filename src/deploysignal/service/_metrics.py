"""Prometheus exposition for the service: verdicts, wealth per family, ingest counts (prometheus_client)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ._manager import AnalysisManager

__all__ = ["build_registry"]

VERDICTS = ("pending", "proceed", "extend", "rollback")


class _GateCollector(Collector):
    """Reads the engines cached in this process at scrape time (no extra bookkeeping on the hot path)."""

    def __init__(self, manager: AnalysisManager) -> None:
        self._m = manager

    def collect(self) -> Iterator[Any]:
        verdict = GaugeMetricFamily("deploysignal_verdict", "1 for the analysis' current verdict, 0 for the others", labels=["analysis", "verdict"])
        final = GaugeMetricFamily("deploysignal_verdict_final", "1 once the verdict can no longer change", labels=["analysis"])
        wealth = GaugeMetricFamily("deploysignal_log_wealth", "Natural-log wealth of each detector family at the last tick", labels=["analysis", "family"])
        thr = GaugeMetricFamily("deploysignal_log_threshold", "Natural-log bound at which the family fires", labels=["analysis", "family"])
        ticks = GaugeMetricFamily("deploysignal_analysis_ticks", "Ticks evaluated by the analysis", labels=["analysis"])
        for aid, eng in sorted(self._m.cached_current().items()):  # not an analysis deleted (or replaced) by another process
            last = eng.last
            current = "pending" if last is None else last.verdict
            for v in VERDICTS:
                verdict.add_metric([aid, v], 1.0 if v == current else 0.0)
            final.add_metric([aid], 1.0 if last is not None and last.final else 0.0)
            ticks.add_metric([aid], float(eng.n_ticks))
            for r in [] if last is None else last.records:
                fam = r.get("family")
                if fam == "gate":
                    continue
                lw = r.get("log_wealth", r.get("log_evidence"))  # a split family's record has log_evidence
                wealth.add_metric([aid, fam], math.nan if lw is None else float(lw))
                t = r.get("threshold")
                thr.add_metric([aid, fam], math.inf if t is None else float(t))
        yield from (verdict, final, wealth, thr, ticks)


def build_registry(manager: AnalysisManager) -> tuple[CollectorRegistry, dict[str, Any]]:
    """A registry private to one app (tests build many apps in one process)."""
    reg = CollectorRegistry(auto_describe=False)
    counters = {
        "ticks": Counter("deploysignal_ticks_ingested", "Ticks accepted and stored", ["analysis"], registry=reg),
        "rejected": Counter("deploysignal_ingest_rejected", "Ingest requests rejected as bad input", registry=reg),
        "latency": Histogram(
            "deploysignal_request_seconds",
            "Request handling time inside the service (until the response starts)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=reg,
        ),
    }
    reg.register(_GateCollector(manager))
    return reg, counters
