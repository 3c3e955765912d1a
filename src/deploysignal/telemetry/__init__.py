"""Telemetry table and signal metadata."""

from ._domain import COUNT_SLACK, RANGE_TOLERANCE, RATE_SLACK, Domains, check_domain, enforce_domain, signal_domains
from ._epoch import MAX_EPOCH_SECONDS, check_clock_skew, check_epoch_seconds
from ._frame import Frame
from ._signals import CATALOGUE, INFRA_SIGNALS, SignalSpec, declared_range, parse_range, resolve_specs

__all__ = [
    "CATALOGUE", "COUNT_SLACK", "INFRA_SIGNALS", "MAX_EPOCH_SECONDS", "RANGE_TOLERANCE", "RATE_SLACK", "Domains", "Frame", "SignalSpec",
    "check_clock_skew", "check_domain", "check_epoch_seconds", "declared_range", "enforce_domain", "parse_range", "resolve_specs",
    "signal_domains",
]
