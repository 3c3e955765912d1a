"""Telemetry sources: files, and Prometheus (per-signal queries for the gate, per-arm counters and
histograms for randomised-split analyses); live fleet topology from the cluster tools."""

from .._lazy import lazy_attributes
from ._files import read_frame, read_signals_file, write_csv

# the Prometheus sources import httpx and the store: loaded on first use (a gate on files starts without them)
__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(("PrometheusPuller", "PrometheusSource", "PullSpec"), "._prometheus"),
    **dict.fromkeys(("HistogramQuery", "PrometheusSplitSource", "SplitRead", "SplitSpec", "split_ticks"), "._prometheus_split"),
    **dict.fromkeys(("KILL_GRACE", "LIVE_TOOLS", "LiveTool", "MAX_TIMEOUT", "fetch_topology", "run_tool", "tool_kind"),
                    "._topology_live"),
    **dict.fromkeys(("Authentication", "BasicAuth", "Connection", "HeaderSpec", "PromAPIError", "PromUnavailable", "SecretPolicy",
                     "SecretRef", "TLSConfig"), "._prometheus_http"),
})

__all__ = [
    "Authentication",
    "BasicAuth",
    "Connection",
    "HeaderSpec",
    "HistogramQuery",
    "KILL_GRACE",
    "LIVE_TOOLS",
    "LiveTool",
    "MAX_TIMEOUT",
    "PromAPIError",
    "PromUnavailable",
    "PrometheusPuller",
    "PrometheusSource",
    "PrometheusSplitSource",
    "PullSpec",
    "SecretPolicy",
    "SecretRef",
    "SplitRead",
    "SplitSpec",
    "TLSConfig",
    "fetch_topology",
    "read_frame",
    "read_signals_file",
    "run_tool",
    "split_ticks",
    "tool_kind",
    "write_csv",
]
