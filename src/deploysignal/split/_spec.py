"""What a split gate measures (metric specs, the signals file) and how it decides (settings)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._exceptions import InputError

__all__ = ["LEGACY_RATIO_LABEL", "MetricSpec", "SplitSettings", "check_split_signals", "read_split_signals", "settings_error", "tick_specs",
           "with_legacy_label"]

_KINDS = ("event", "continuous")
_DIRECTIONS = ("up", "down", "both")
_KEYS = {"kind", "direction", "edges", "tolerance", "alpha_share"}


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a randomised split.

    Parameters
    ----------
    name : str
        Column of the request log / key of the split-tick ``events`` or ``buckets`` dicts.
    kind : {"event", "continuous"}
        ``event``: a non-negative integer count per request (0/1: did the request error / refuse /
        time out); ``continuous``: a value per request, analysed through its bucket counts on ``edges``.
    direction : {"up", "down", "both"}
        Direction of harm: ``up`` more events / larger values are worse, ``down`` fewer / smaller.
    edges : tuple of float
        Strictly increasing bucket edges of a continuous metric (Prometheus ``le`` semantics); empty
        for event metrics. ``None`` edges in a signals file are derived from the pooled data.
    tolerance : float
        Harm tolerated for an early proceed: rate (or exceedance) ratio below ``1 + tolerance``
        (direction up), above ``1 / (1 + tolerance)`` (down), both for ``both``.
    alpha_share : float
        Relative weight of the metric in the rollback budget (normalised over the metrics).
    """

    name: str
    kind: Literal["event", "continuous"] = "event"
    direction: Literal["up", "down", "both"] = "up"
    edges: tuple[float, ...] = ()
    tolerance: float = 0.2
    alpha_share: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"metric name must be a non-empty string, got {self.name!r}")
        if self.kind not in _KINDS:
            raise InputError(f"kind must be one of {', '.join(_KINDS)}, got {self.kind!r}", column=self.name)
        if self.direction not in _DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(_DIRECTIONS)}, got {self.direction!r}", column=self.name)
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and 0.0 < self.tolerance <= 9.0):
            raise InputError(f"tolerance must be a number in (0, 9], got {self.tolerance!r}", column=self.name)
        if not (isinstance(self.alpha_share, (int, float)) and math.isfinite(self.alpha_share) and self.alpha_share > 0):
            raise InputError(f"alpha_share must be a positive number, got {self.alpha_share!r}", column=self.name)
        if self.kind == "event" and self.edges:
            raise InputError("an event metric has no edges", column=self.name)
        if self.kind == "continuous":
            e = self.edges
            if not e:
                raise InputError("a continuous metric needs bucket edges", column=self.name)
            if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in e):
                raise InputError(f"edges must be finite numbers, got {list(e)!r}", column=self.name)
            if any(b <= a for a, b in zip(e, e[1:])):
                raise InputError(f"edges must be strictly increasing, got {list(e)!r}", column=self.name)

    @property
    def n_events(self) -> int:
        """Edge-events of the metric: 1 for an event metric, one per edge for a continuous one."""
        return 1 if self.kind == "event" else len(self.edges)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "direction": self.direction, "edges": [float(x) for x in self.edges],
                "tolerance": float(self.tolerance), "alpha_share": float(self.alpha_share)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricSpec:
        return cls(d["name"], d["kind"], d["direction"], tuple(d["edges"]), d["tolerance"], d["alpha_share"])


def read_split_signals(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a split signals file (YAML or JSON): ``{metric: {kind, direction, edges, tolerance, alpha_share}}``.

    Returns the raw per-metric entries (validated keys, values checked when the :class:`MetricSpec`
    is built): a continuous metric without ``edges`` gets them from the pooled data.
    """
    from ..sources._files import read_yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    data = read_yaml(p)
    return check_split_signals(data, str(p))


def check_split_signals(data: Any, where: str) -> dict[str, dict[str, Any]]:
    """Check the content of a split signals file (also the service's ``metrics`` object): a non-empty
    mapping ``{metric: {kind, direction, edges, tolerance, alpha_share}}`` with known keys; errors name
    ``where`` and the metric. Returns the raw entries with ``kind`` filled in."""
    if not isinstance(data, dict) or not data:
        raise InputError(f"{where}: expected a non-empty mapping of metric name to {{kind, direction, edges, tolerance}}")
    out: dict[str, dict[str, Any]] = {}
    for name, meta in data.items():
        meta = meta or {}
        if not isinstance(meta, dict):
            raise InputError(f"{where}: entry must be a mapping", column=str(name))
        unknown = set(meta) - _KEYS
        if unknown:
            raise InputError(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(_KEYS))})", column=str(name))
        kind = meta.get("kind", "event")
        if kind not in _KINDS:
            raise InputError(f"{where}: kind must be one of {', '.join(_KINDS)}, got {kind!r}", column=str(name))
        edges = meta.get("edges")
        if edges is not None and not isinstance(edges, list):
            raise InputError(f"{where}: edges must be a list of numbers", column=str(name))
        out[str(name)] = dict(meta, kind=kind)
    return out


def tick_specs(raw: dict[str, dict[str, Any]], where: str) -> list[MetricSpec]:
    """Metric specs for aggregated split ticks from checked signals entries (:func:`check_split_signals`):
    continuous metrics need their bucket edges (ticks carry bucket counts on them)."""
    missing = [m for m, meta in raw.items() if meta["kind"] == "continuous" and meta.get("edges") is None]
    if missing:
        raise InputError(f"{where}: continuous metrics of split ticks need their bucket edges: {', '.join(missing)}", column=missing[0])
    return [MetricSpec(m, meta["kind"], meta.get("direction", "up"), tuple(meta.get("edges") or ()), meta.get("tolerance", 0.2),
                       meta.get("alpha_share", 1.0)) for m, meta in raw.items()]


class SplitSettings(BaseModel):
    """How a split gate decides.

    Attributes
    ----------
    alpha : float
        False-rollback budget of the whole gate, split over the metrics by ``alpha_share`` (Bonferroni).
    window, max_extensions : int
        Planned window in ticks; at its end proceed or extend, at most ``max_extensions`` times.
    early_proceed : bool
        Proceed before the window ends when every metric's harm is shown below its tolerance.
    proceed_alpha : float
        Error of each one-sided confidence bound, hence of an early proceed (under the effect model of
        :class:`~deploysignal.split.SplitMetric`); the printed intervals are ``1 - 2 proceed_alpha``.
    min_proceed_fraction : float
        No early proceed before this fraction of the window.
    min_valid_fraction : float
        At the window's end, proceed only if every metric had units in both arms in at least this
        fraction of the ticks (never on missing data).
    suggestive_fraction : float
        At the window's end, a metric whose log e-value is at least this fraction of its threshold makes
        the verdict extend (under the null, at any one tick, with probability <= ``alpha_m ** f``: Markov).
    canary_share : float or None
        Configured canary share of units; enables the sample-ratio-mismatch e-process.
    srm_alpha : float
        Level of the sample-ratio-mismatch e-process; its firing voids the guarantee: never proceed.
    tick_seconds, unit_timeout : float
        Tick length for request logs; a unit (session) closes after ``unit_timeout`` seconds without a
        request (or at the end of the input) and enters the test then.
    block_seconds : float or None
        Request logs: units are blocked by the slot of this length they started in (default: one tick).
        The guarantee needs the assignment probability constant within each block.
    share_changes : tuple of float
        Request logs: epoch seconds at which the router's weight changed; blocks never span one, and
        sessions are cut there (:func:`~deploysignal.split.requests_to_data`).
    ratio_label : {"rate", "legacy_odds"}
        How explanations name the effect: ``rate`` (``errors: canary event rate x1.33 [1.20, 1.73]``,
        ``latency_ms: canary P(latency_ms > 250) x1.20 [...]``): the ratio estimated is the canary's event
        (exceedance) rate over the stable arm's. ``legacy_odds`` is the wording of 0.4.0 and earlier
        (``canary odds ratio x1.33``), which named the same number wrongly; it exists only so that
        audit logs written then replay byte for byte (a header without this field reads as
        ``legacy_odds``, see :func:`~deploysignal.split.replay_split`). It changes no number and no verdict.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    window: int = Field(480, ge=1)
    max_extensions: int = Field(1, ge=0)
    early_proceed: bool = False
    proceed_alpha: float = Field(0.05, gt=0.0, lt=0.5)
    min_proceed_fraction: float = Field(0.25, ge=0.0, le=1.0)
    min_valid_fraction: float = Field(0.5, ge=0.0, le=1.0)
    suggestive_fraction: float = Field(0.5, gt=0.0, le=1.0)
    canary_share: Optional[float] = Field(None, gt=0.0, lt=1.0)
    srm_alpha: float = Field(0.001, gt=0.0, lt=1.0)
    tick_seconds: float = Field(60.0, gt=0.0)
    unit_timeout: float = Field(1800.0, ge=0.0)
    block_seconds: Optional[float] = Field(None, gt=0.0)
    share_changes: tuple[float, ...] = ()
    ratio_label: Literal["rate", "legacy_odds"] = "rate"

    @model_validator(mode="after")
    def _check(self) -> SplitSettings:
        if not math.isfinite(self.tick_seconds) or not math.isfinite(self.unit_timeout):
            raise ValueError("tick_seconds and unit_timeout must be finite")
        if self.block_seconds is not None and not math.isfinite(self.block_seconds):
            raise ValueError("block_seconds must be finite")
        if not all(math.isfinite(x) for x in self.share_changes):
            raise ValueError("share_changes must be finite epoch seconds")
        return self

    @property
    def horizon(self) -> int:
        return self.window * (1 + self.max_extensions)


def settings_error(exc: ValidationError) -> InputError:
    """A pydantic validation error as one :class:`InputError` naming each field."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
    return InputError("invalid split settings: " + "; ".join(parts))


#: the effect wording of settings stored without ``ratio_label`` (written by 0.4.0 and earlier)
LEGACY_RATIO_LABEL = "legacy_odds"


def with_legacy_label(settings: Any) -> Any:
    """Stored split settings (an audit header's, a service analysis'), read as written: without
    ``ratio_label`` they predate it and their explanations said "odds ratio" (``legacy_odds``).
    Anything not a mapping is returned unchanged (validation names it)."""
    if isinstance(settings, Mapping) and "ratio_label" not in settings:
        return {**settings, "ratio_label": LEGACY_RATIO_LABEL}
    return settings
