"""The compiled config: the only thing detectors are built from.

It is a frozen pydantic model saved as canonical JSON (sorted keys, no whitespace, floats as their
shortest round-trip repr), so the same baseline and settings give byte-identical files. The version id
is ``cc-`` plus the first 12 hex digits of the SHA-256 of that canonical JSON (without the id itself).
Loading rejects unknown keys, a different schema version and an id that does not match the content.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any, Literal

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from .._exceptions import ConfigError

__all__ = ["SCHEMA_VERSION", "Cell", "CompiledConfig", "CovarianceBlock", "SignalMeta", "canonical_json", "canonical_json_in_domain"]

SCHEMA_VERSION = 1


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
try:
    _FAST = msgspec.json.Encoder(order="sorted")
except TypeError:  # msgspec < 0.18.6 has no key ordering: the standard library path only
    _FAST = None
_SCALARS = frozenset((str, int, bool, type(None)))
#: floats msgspec and the standard library write alike: 0 or _FAST_MIN <= |x| < _FAST_MAX (finite)
_FAST_MIN, _FAST_MAX = 1e-4, 1e16


def _plain(obj: Any, depth: int = 0) -> bool:
    """True when ``obj`` lies where msgspec writes the same bytes as :data:`_CANONICAL`.

    That domain: exact ``dict`` (``str`` keys), ``list``, ``tuple``, ``str``, ``int``, ``bool``, ``None``
    and finite ``float`` printed without an exponent by ``repr`` (0 or ``1e-4 <= |x| < 1e16``), nested
    at most 64 deep (deeper structures go to the standard library, which then decides about its own
    recursion limit). Inside it both print a float as its shortest round-trip digits (checked once on
    6 million values, bit patterns and range boundaries included, when this was written; on 300,000 by
    ``tests/test_canonical_json.py``; on a sample at import by :func:`_fast_path_agrees`); outside it they differ (``1e-05`` vs ``0.00001``,
    ``1e+16`` vs ``1e16``, NaN: an error vs ``null``).
    """
    t = type(obj)
    if t is dict:
        if obj and set(map(type, obj)) != {str}:
            return False
        vals: Any = obj.values()
    elif t is list or t is tuple:
        vals = obj
    elif t is float:
        return obj == 0.0 or _FAST_MIN <= abs(obj) < _FAST_MAX
    else:
        return t in _SCALARS
    if depth >= 64:
        return False
    for v in vals:
        tv = type(v)
        if tv is float:
            if not (v == 0.0 or _FAST_MIN <= abs(v) < _FAST_MAX):
                return False
        elif tv not in _SCALARS and not _plain(v, depth + 1):
            return False
    return True


def _fast_path_agrees() -> bool:
    """Import-time check that the installed msgspec writes this sample exactly as the standard library
    (notation boundaries, -0.0, large ints, escapes); if not, canonical_json never uses it."""
    sample = {"b": [0.0, -0.0, 1e-4, -0.00010000000000000002, 9999999999999998.0, 0.1, 1700259200.0, 2.5, 1 / 3],
              "a": {"z": None, "y": True, "x": False, "w": [2**63, -(2**64), 0, 7]},
              "c": "q\"\\/\n\r\t\b\f\x00\x1f~", "": ("t", [])}
    try:
        return _FAST is not None and _FAST.encode(sample).decode("ascii") == _CANONICAL.encode(sample)
    except Exception:  # noqa: BLE001 - any surprise disables the fast path
        return False


_FAST_OK = _fast_path_agrees()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, compact separators, ASCII only, no NaN/inf.

    The bytes are exactly those of ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
    allow_nan=False)`` (float = ``repr``), which defines the format of compiled configs and audit chains.
    msgspec writes them about 2.5x faster; it is used only where its output coincides (see :func:`_plain`; its
    result is also rejected if it holds non-ASCII or DEL, which the standard library escapes); everything
    else, errors included, goes through the standard library encoder. Like ``json.dumps``, it must not
    be given an object another thread is changing: the check and the encoding are two passes, and a
    float turned NaN in between would be written as ``null`` instead of raising.
    """
    try:
        plain = _FAST_OK and _plain(obj)
    except RecursionError:  # circular: let the standard library report it
        plain = False
    return _encode(obj, plain)


def canonical_json_in_domain(obj: Any) -> str:
    """:func:`canonical_json` for an object its producer has already established lies in the domain
    where msgspec and the standard library agree (see :func:`_plain`): exact builtin containers and
    scalars, ``str`` keys, floats finite and 0 or ``1e-4 <= |x| < 1e16``, nesting below 64. The
    per-value check is skipped (it costs as much as the encoding); the ASCII check is not, and
    non-ASCII output still goes to the standard library. Given an object outside that domain it may
    return bytes that differ from :func:`canonical_json` (``1e-05`` written ``0.00001``, NaN as
    ``null``): callers vouch for their objects with a check of their own (the gate checks its
    records' floats per batch, vectorised) and tests compare both functions on what they produce.
    """
    return _encode(obj, _FAST_OK)


def _encode(obj: Any, fast: bool) -> str:
    """msgspec's bytes when ``fast`` and they are ASCII without DEL, else the standard library's."""
    if fast:
        try:
            out = _FAST.encode(obj)  # type: ignore[union-attr]  # fast implies _FAST_OK implies _FAST
        except Exception:  # noqa: BLE001 - e.g. a lone surrogate; the standard library decides
            pass
        else:
            if out.isascii() and b"\x7f" not in out:
                return out.decode("ascii")
    return _CANONICAL.encode(obj)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalMeta(_Frozen):
    name: str
    direction: Literal["up", "down", "both"]
    kind: Literal["continuous", "rate", "count"]
    phi: float
    """AR(1) coefficient of the de-seasonalised level, clipped to [-0.5, 0.98]."""
    phi_se: float
    """Standard error of ``phi``, ``sqrt((1 - phi^2) / pairs)`` (0 when not prewhitened)."""
    innov_scale: float
    """Robust (MAD) scale of the AR(1) innovations on the transformed scale, floored."""
    score_lag1: float
    """Lag-1 autocorrelation of the innovations left after prewhitening (clipped to [0, 0.9])."""
    resolution: float = 0.0
    """Smallest positive gap between distinct baseline values (raw scale); 0 when the signal is not
    discrete (fewer than 20% of its values tied at one value). For an error rate at a constant request
    volume this is one error at that volume; with varying volume it is much smaller, and the SLO floor
    it provides is correspondingly weak."""
    range: list[float | None] | None = None
    """Declared domain ``[lo, hi]`` of the signal's raw values (``null`` for an open end), from the
    signals file or the catalogue; ``None`` (left out of the JSON, as in configs compiled before ranges
    existed): the kind's default (:func:`~deploysignal.telemetry.declared_range`)."""

    @model_validator(mode="after")
    def _check_range(self) -> SignalMeta:
        """A declared range is two finite ends (or null), ``lo < hi``, inside the kind's domain
        (:func:`~deploysignal.telemetry.parse_range`): a hand-edited or generated config is checked on
        load like a signals file."""
        if self.range is not None:
            from ..telemetry import parse_range  # noqa: PLC0415 - telemetry does not import calibration

            try:
                parse_range(self.range, self.kind, self.name)
            except ValueError as exc:
                raise ValueError(f"signal {self.name!r}, field range: {str(exc).split(': ', 1)[-1]}") from None
        return self

    @model_serializer(mode="wrap")
    def _omit_undeclared_range(self, handler: Any) -> dict[str, Any]:
        """No ``range`` key when none is declared: configs without one keep their bytes and version id."""
        out = handler(self)
        if out.get("range", 0) is None:
            del out["range"]
        return out


class Cell(_Frozen):
    key: str
    """``h=HH|d=D|t=TIER``, ``h=HH|t=TIER``, ``t=TIER`` or ``*``."""
    level: Literal["hour_dow_tier", "hour_tier", "tier", "global"]
    n: int
    """Rows of the fitting split in this cell."""
    location: list[float]
    """Median per signal on the transformed scale (NaN-free: a signal absent in the cell uses its parent's)."""
    raw_location: list[float]
    """Median per signal on the original scale (for rules stated in original units)."""
    cov_index: int
    """Index into ``CompiledConfig.covariances``."""


class CovarianceBlock(_Frozen):
    key: str
    n: int
    ledoit_wolf: list[list[float]]
    shrinkage: float
    cholesky: list[list[float]]
    mcd_location: list[float] | None
    mcd_covariance: list[list[float]] | None


def id_of_canonical(data: bytes) -> str:
    """A config's version id from its canonical JSON bytes (without the id): ``cc-`` + 12 hex of SHA-256."""
    return "cc-" + hashlib.sha256(data).hexdigest()[:12]


class CompiledConfig(_Frozen):
    """A frozen, versioned, deterministic description of a healthy baseline.

    Attributes
    ----------
    schema_version, library_version, seed, baseline_hash, version_id
        Provenance. ``version_id`` is the content hash ``cc-<12 hex>``.
    tick_seconds : float
        Median spacing of baseline ticks.
    min_cell_samples : int
        Pooling threshold: a cell with fewer fitting rows uses its coarser parent.
    signals : list of SignalMeta
    tiers : list of str
        Tier labels seen in the baseline (``[""]`` without a tier column).
    cells : list of Cell
    cell_map : dict
        Key -> index into ``cells`` for every key a canary tick may resolve to.
    covariances : list of CovarianceBlock
        Ledoit-Wolf (and MCD) covariance of the standardised innovations, per tier and globally.
    reference : dict
        Tier -> rows of standardised innovations from the calibration split (disjoint from fitting).
    score_calibration : dict
        Per signal, per direction ("up"/"down"): mean and sd of the clipped score on the fitting split,
        and per cell the score centre and the variance of its estimate (see family A).
    extras : dict
        Calibration products of later families (C, D, E), keyed by family.
    certification : dict or None
        Model checks, backtest and whether the one-sample model is certified for this baseline.
    """

    schema_version: int
    library_version: str
    seed: int
    baseline_hash: str
    version_id: str
    tick_seconds: float
    n_baseline: int
    min_cell_samples: int
    split: dict[str, Any]
    signals: list[SignalMeta]
    tiers: list[str]
    cells: list[Cell]
    cell_map: dict[str, int]
    covariances: list[CovarianceBlock]
    reference: dict[str, list[list[float]]]
    score_calibration: dict[str, Any]
    extras: dict[str, Any]
    certification: dict[str, Any] | None = None
    """Model-check table, backtest and certification decision (:mod:`._certificate`); ``None`` in configs
    compiled before model checks existed (they load as uncertified) and in ``check_model=False`` compiles.
    Left out of the JSON when ``None``, so those configs keep their bytes and version id."""

    # ----------------------------------------------------------------- serialisation
    def to_json(self) -> str:
        """Canonical JSON text (byte-identical for identical content)."""
        return canonical_json(self.model_dump(mode="json", exclude={"certification"} if self.certification is None else None))

    @staticmethod
    def content_id(payload: dict[str, Any]) -> str:
        body = {k: v for k, v in payload.items() if k != "version_id"}
        return id_of_canonical(canonical_json(body).encode())

    @classmethod
    def from_json(cls, text: str | bytes) -> CompiledConfig:
        """Load and verify: unknown keys, wrong schema version or a version id that does not match fail."""
        try:
            payload = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"compiled config is not valid JSON: {exc}") from None
        what = "a compiled config is the JSON object `deploysignal calibrate BASELINE -o FILE` writes"
        if not isinstance(payload, dict):
            raise ConfigError(f"not a compiled config: the file holds a JSON {type(payload).__name__}; {what}")
        if "schema_version" not in payload or "version_id" not in payload:
            keys = ", ".join(repr(k) for k in list(payload)[:6]) + (", ..." if len(payload) > 6 else "")
            raise ConfigError(f"not a compiled config (no schema_version / version_id; its keys: {keys or 'none'}); {what}")
        if payload.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(
                f"compiled config schema_version {payload.get('schema_version')!r} is not {SCHEMA_VERSION}; recompile"
            )
        try:
            cfg = cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"compiled config invalid at {loc}: {first['msg']}") from None
        expect = cls.content_id(payload)
        if cfg.version_id != expect:
            raise ConfigError(f"compiled config version_id {cfg.version_id} does not match its content ({expect})")
        return cfg

    # ----------------------------------------------------------------- numeric views
    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Numpy views used by the hot path (built once per config object)."""
        sig = self.signals
        sc = self.score_calibration
        out = {
            "orient": np.array([-1.0 if s.direction == "down" else 1.0 for s in sig]),
            "two_sided": np.array([s.direction == "both" for s in sig]),
            "phi": np.array([s.phi for s in sig]),
            "phi_se": np.array([s.phi_se for s in sig]),
            "innov_scale": np.array([s.innov_scale for s in sig]),
            "resolution": np.array([s.resolution for s in sig]),
            "kind_rate": np.array([s.kind == "rate" for s in sig]),
            "kind_count": np.array([s.kind == "count" for s in sig]),
            "location": np.array([c.location for c in self.cells]),
            "raw_location": np.array([c.raw_location for c in self.cells]),
            "cov_index": np.array([c.cov_index for c in self.cells], dtype=int),
            "score_mean": np.array(sc["mean"]),  # (2, k): up, down
            "score_sd": np.array(sc["sd"]),  # (2, k)
            "cell_center": np.array(sc["cell_center"]),  # (2, cells, k)
            "cell_bias_var": np.array(sc["cell_bias_var"]),  # (2, cells, k)
            # (2, k): variance of a global (day-to-day) level offset in score units; 0 in older configs
            "day_bias_var": np.array(sc.get("day_bias_var", np.zeros((2, len(sig))).tolist())),
        }
        out["chol"] = np.array([c.cholesky for c in self.covariances])
        out["cov"] = np.array([c.ledoit_wolf for c in self.covariances])
        for v in out.values():
            v.setflags(write=False)
        return out
