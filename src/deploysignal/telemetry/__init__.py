"""Telemetry table and signal metadata."""

from ._domain import COUNT_SLACK, RATE_SLACK, check_domain
from ._frame import Frame
from ._signals import CATALOGUE, INFRA_SIGNALS, SignalSpec, resolve_specs

__all__ = ["CATALOGUE", "COUNT_SLACK", "INFRA_SIGNALS", "RATE_SLACK", "Frame", "SignalSpec", "check_domain", "resolve_specs"]
