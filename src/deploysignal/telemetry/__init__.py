"""Telemetry table and signal metadata."""

from ._domain import COUNT_SLACK, RATE_SLACK, check_domain, domain_bounds
from ._epoch import MAX_EPOCH_SECONDS, check_clock_skew, check_epoch_seconds
from ._frame import Frame
from ._signals import CATALOGUE, INFRA_SIGNALS, SignalSpec, resolve_specs

__all__ = [
    "CATALOGUE", "COUNT_SLACK", "INFRA_SIGNALS", "MAX_EPOCH_SECONDS", "RATE_SLACK", "Frame", "SignalSpec", "check_clock_skew", "check_domain",
    "check_epoch_seconds", "domain_bounds", "resolve_specs",
]
