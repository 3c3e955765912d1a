"""Signal metadata: direction of harm, kind and declared value range, with the built-in catalogue."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from .._exceptions import InputError

__all__ = ["CATALOGUE", "INFRA_SIGNALS", "SignalSpec", "declared_range", "parse_range", "resolve_specs"]

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
    range : (lo, hi), optional
        Declared domain of the signal's values (``None`` for an open end), e.g. ``(0.0, 1.0)`` for a
        score. ``None`` (not declared) means the kind's default: rates ``[0, 1]``, counts ``>= 0``,
        continuous signals any finite number (:func:`~deploysignal.telemetry.declared_range`). A rate's
        range must lie inside ``[0, 1]`` and a count's inside ``[0, inf)``. What the gate does with a
        value outside it: :mod:`deploysignal.telemetry._domain`.
    """

    name: str
    direction: Direction = "both"
    kind: Kind = "continuous"
    range: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"signal name must be a non-empty string, got {self.name!r}")
        if self.direction not in _DIRECTIONS:
            raise InputError(
                f"direction must be one of {', '.join(_DIRECTIONS)}, got {self.direction!r}", column=self.name
            )
        if self.kind not in _KINDS:
            raise InputError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}", column=self.name)
        if self.range is not None:
            object.__setattr__(self, "range", parse_range(self.range, self.kind, self.name))


def parse_range(value: Any, kind: str, name: str) -> tuple[float | None, float | None]:
    """A declared range ``[lo, hi]`` (``None``/``null`` for an open end) checked against the signal's
    kind; :class:`InputError` naming the signal otherwise.

    >>> parse_range([0, 1], "continuous", "eval_score")
    (0.0, 1.0)
    >>> parse_range([0, None], "count", "requests")
    (0.0, None)
    >>> parse_range([0, 2], "rate", "refusal_rate")
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: column 'refusal_rate': the range of a rate must lie inside [0, 1], got [0.0, 2.0]
    """
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise InputError(f"range must be [lo, hi] (null for an open end), got {value!r}", column=name)
    ends: list[float | None] = []
    for v in value:
        if v is None:
            ends.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"range ends must be numbers or null, got {v!r}", column=name)
        f = float(v)
        if not math.isfinite(f):
            raise InputError(f"range ends must be finite (null for an open end), got {v!r}", column=name)
        ends.append(f)
    lo, hi = ends
    if lo is not None and hi is not None and not lo < hi:
        raise InputError(f"range [lo, hi] needs lo < hi, got [{lo!r}, {hi!r}]", column=name)
    if kind == "rate" and (lo is None or hi is None or lo < 0.0 or hi > 1.0):
        raise InputError(f"the range of a rate must lie inside [0, 1], got [{lo!r}, {hi!r}]", column=name)
    if kind == "count" and (lo is None or lo < 0.0):
        raise InputError(f"the range of a count must lie inside [0, inf), got [{lo!r}, {hi!r}]", column=name)
    return lo, hi


def declared_range(spec: Any) -> tuple[float | None, float | None]:
    """The domain of a signal (a :class:`SignalSpec` or a compiled config's signal): its declared
    ``range``, else its kind's default (rate ``[0, 1]``, count ``[0, None]``, continuous ``[None, None]``)."""
    r = getattr(spec, "range", None)
    if r is not None:
        return (None if r[0] is None else float(r[0]), None if r[1] is None else float(r[1]))
    return {"rate": (0.0, 1.0), "count": (0.0, None)}.get(spec.kind, (None, None))


#: Default catalogue (DESIGN.md, seed 000). Ranges: rates [0, 1] by kind, eval_score [0, 1] declared;
#: latencies, cost and tokens keep the continuous default (any finite value): declare ``range: [0, null]``
#: in a signals file where a negative value cannot occur.
CATALOGUE: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        SignalSpec("p99_latency_ms", "up", "continuous"),
        SignalSpec("ttft_ms", "up", "continuous"),
        SignalSpec("eval_score", "down", "continuous", (0.0, 1.0)),
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
