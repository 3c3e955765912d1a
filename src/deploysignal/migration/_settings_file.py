"""Protocol settings from a mapping (the ``--settings`` YAML of ``deploysignal migrate run`` / ``plan``).

Keys are :class:`~deploysignal.migration.ProtocolSettings` fields; the per-dimension tuples
(``margins``, ``harm_tolerances``) may be given as a list in :data:`DIMENSIONS` order or as a mapping
``{dimension: value}`` (dimensions left out keep their default).  Unknown keys and wrong types are
errors naming the key; nothing is silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from .._exceptions import InputError
from ._protocol import ProtocolSettings
from ._quality import DIMENSIONS

__all__ = ["settings_from_mapping"]

_PER_DIMENSION = ("margins", "harm_tolerances")
_TUPLES = ("steps",)


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"settings: {key} must be a number, got {v!r}", column=key)
    return float(v)


def settings_from_mapping(raw: Mapping[str, Any] | None, base: ProtocolSettings | None = None) -> ProtocolSettings:
    """Overlay ``raw`` on ``base`` (default settings when None); validated by :class:`ProtocolSettings`.

    >>> settings_from_mapping({"harm_tolerances": {"latency": 0.08}}).harm_tolerances
    (0.0, 0.08, 0.0, 0.0)
    >>> settings_from_mapping({"sla_quantile": 0.995, "margins": [0.02, 0.05, 0.03, 0.005]}).sla_quantile
    0.995
    """
    base = base or ProtocolSettings()
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise InputError(f"settings must be a mapping of ProtocolSettings fields, got {type(raw).__name__}", column="settings")
    known = {f.name for f in fields(ProtocolSettings)}
    out: dict[str, Any] = {}
    for key, v in raw.items():
        if key not in known:
            raise InputError(f"settings: unknown key {key!r} (known: {', '.join(sorted(known))})", column=str(key))
        if key in _PER_DIMENSION:
            cur = list(getattr(base, key))
            if isinstance(v, Mapping):
                for d, val in v.items():
                    if d not in DIMENSIONS:
                        raise InputError(f"settings: {key} has unknown dimension {d!r} (dimensions: {', '.join(DIMENSIONS)})",
                                         column=f"{key}.{d}")
                    cur[DIMENSIONS.index(d)] = _number(f"{key}.{d}", val)
            elif isinstance(v, (list, tuple)):
                cur = [_number(f"{key}[{i}]", val) for i, val in enumerate(v)]
            else:
                raise InputError(f"settings: {key} must be a list or a mapping by dimension, got {v!r}", column=key)
            out[key] = tuple(cur)
        elif key in _TUPLES:
            if not isinstance(v, (list, tuple)):
                raise InputError(f"settings: {key} must be a list, got {v!r}", column=key)
            out[key] = tuple(_number(f"{key}[{i}]", val) for i, val in enumerate(v))
        elif key in ("strategy", "bettor"):
            if not isinstance(v, str):
                raise InputError(f"settings: {key} must be a string, got {v!r}", column=key)
            out[key] = v
        elif key == "sla_relative":
            if not isinstance(v, bool):
                raise InputError(f"settings: {key} must be true or false, got {v!r}", column=key)
            out[key] = v
        elif key == "ni_design_difference":
            out[key] = None if v is None else tuple(_number(key, x) for x in v) if isinstance(v, (list, tuple)) else _number(key, v)
        elif key in ("min_shadow_pairs", "horizon_pairs"):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"settings: {key} must be an integer >= 1, got {v!r}", column=key)
            out[key] = v
        else:
            out[key] = _number(key, v)
    return replace(base, **out)
