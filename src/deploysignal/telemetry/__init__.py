"""Telemetry table and signal metadata."""

from ._frame import Frame
from ._signals import CATALOGUE, INFRA_SIGNALS, SignalSpec, resolve_specs

__all__ = ["CATALOGUE", "INFRA_SIGNALS", "Frame", "SignalSpec", "resolve_specs"]
