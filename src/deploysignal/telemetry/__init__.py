"""Telemetry table and signal metadata."""

from ._domain import ROUNDING_TOLERANCE, Domains, check_domain, enforce_domain, out_of_domain_reason, signal_domains
from ._epoch import MAX_EPOCH_SECONDS, check_clock_skew, check_epoch_seconds
from ._frame import Frame
from ._signals import CATALOGUE, INFRA_SIGNALS, SignalSpec, declared_range, parse_range, resolve_specs

__all__ = [
    "CATALOGUE", "INFRA_SIGNALS", "MAX_EPOCH_SECONDS", "ROUNDING_TOLERANCE", "Domains", "Frame", "SignalSpec",
    "check_clock_skew", "check_domain", "check_epoch_seconds", "declared_range", "enforce_domain", "out_of_domain_reason", "parse_range", "resolve_specs",
    "signal_domains",
]
