"""Telemetry sources: files, and Prometheus (per-signal queries for the gate, per-arm counters and
histograms for randomised-split analyses)."""

from ._files import read_frame, read_signals_file, write_csv
from ._prometheus import PrometheusPuller, PrometheusSource, PullSpec
from ._prometheus_split import HistogramQuery, PrometheusSplitSource, SplitRead, SplitSpec, split_ticks
from ._prometheus_http import Authentication, BasicAuth, Connection, HeaderSpec, PromAPIError, PromUnavailable, SecretPolicy, SecretRef, TLSConfig

__all__ = [
    "Authentication",
    "BasicAuth",
    "Connection",
    "HeaderSpec",
    "HistogramQuery",
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
    "read_frame",
    "read_signals_file",
    "split_ticks",
    "write_csv",
]
