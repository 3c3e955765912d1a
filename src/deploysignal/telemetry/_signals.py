"""Signal metadata: direction of harm and kind, with the built-in catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._exceptions import InputError

__all__ = ["CATALOGUE", "INFRA_SIGNALS", "SignalSpec", "resolve_specs"]

Direction = Literal["up", "down", "both"]
Kind = Literal["continuous", "rate", "count"]
_DIRECTIONS = ("up", "down", "both")
_KINDS = ("continuous", "rate", "count")


@dataclass(frozen=True)
class SignalSpec:
    """What a signal means for the gate.

    Parameters
    ----------
    name : str
        Column name in the telemetry table.
    direction : {"up", "down", "both"}
        Direction of harm: ``up`` means larger values are worse (latency), ``down`` smaller (success rate).
    kind : {"continuous", "rate", "count"}
        ``rate`` values lie in [0, 1] and are analysed on the arcsine-square-root scale; ``count`` values
        are non-negative and analysed on the Anscombe square-root scale. Both transforms keep variances
        away from zero for values near the ends of the range.
    """

    name: str
    direction: Direction = "both"
    kind: Kind = "continuous"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"signal name must be a non-empty string, got {self.name!r}")
        if self.direction not in _DIRECTIONS:
            raise InputError(
                f"direction must be one of {', '.join(_DIRECTIONS)}, got {self.direction!r}", column=self.name
            )
        if self.kind not in _KINDS:
            raise InputError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}", column=self.name)


#: Default catalogue (DESIGN.md, seed 000).
CATALOGUE: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        SignalSpec("p99_latency_ms", "up", "continuous"),
        SignalSpec("ttft_ms", "up", "continuous"),
        SignalSpec("eval_score", "down", "continuous"),
        SignalSpec("tool_success_rate", "down", "rate"),
        SignalSpec("refusal_rate", "up", "rate"),
        SignalSpec("downstream_error_rate", "up", "rate"),
        SignalSpec("cost_per_request", "up", "continuous"),
        SignalSpec("tokens_per_turn", "both", "continuous"),
        SignalSpec("kv_cache_util", "both", "rate"),
        SignalSpec("mfu", "down", "rate"),
        SignalSpec("hbm_spill_rate", "up", "rate"),
        SignalSpec("collective_ops_ms", "up", "continuous"),
    )
}

#: The nine infrastructure signals of the slowbleed archetype (the catalogue minus the three quality ones).
INFRA_SIGNALS: tuple[str, ...] = (
    "p99_latency_ms",
    "ttft_ms",
    "downstream_error_rate",
    "cost_per_request",
    "tokens_per_turn",
    "kv_cache_util",
    "mfu",
    "hbm_spill_rate",
    "collective_ops_ms",
)


def resolve_specs(names: list[str], overrides: dict[str, SignalSpec] | None = None) -> list[SignalSpec]:
    """Spec for each name: the override if given, else the catalogue entry, else ``both``/``continuous``."""
    overrides = overrides or {}
    return [overrides.get(n) or CATALOGUE.get(n) or SignalSpec(n) for n in names]
