"""AnalysisEngine: the one place the service touches the gate.

The engine owns a :class:`~deploysignal.gate.Gate` built from a compiled config (canonical JSON) and
gate settings, validates whole batches of ticks before applying any of them (so a batch is accepted or
rejected as a unit), and returns per-tick summaries plus the gate's audit records. It does no I/O and
reads no clock; the store and the HTTP layer are adapters around it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from .._exceptions import ConfigError, InputError
from ..audit import decision_lines
from ..audit._encoding import REPR
from ..calibration import CompiledConfig
from ..gate import Decision, Gate, GateSettings
from ..telemetry import check_clock_skew, check_domain, check_epoch_seconds, out_of_domain_reason
from ..telemetry._domain import out_of_domain_mask

__all__ = ["AnalysisEngine", "TickIn", "TickResult", "VoidIn"]


class TickIn(msgspec.Struct, frozen=True):
    """One validated tick: epoch seconds, canary values and optional control values (None or NaN =
    missing; no infinities). A frozen struct: built per tick, ten times cheaper than a frozen dataclass."""

    timestamp: float
    values: dict[str, float | None]
    control: dict[str, float | None] | None = None
    cohort: str | None = None

    def to_json(self) -> dict[str, Any]:
        def plain(m: dict[str, float | None]) -> dict[str, float | None]:
            return {k: (None if v is None or math.isnan(v) else v) for k, v in m.items()}

        return {"timestamp": self.timestamp, "values": plain(self.values), "control": None if self.control is None else plain(self.control), "cohort": self.cohort}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TickIn | VoidIn:
        """A stored tick; a stored operator void (:class:`VoidIn`, key ``void``) comes back as one."""
        def conv(m: Mapping[str, Any] | None) -> dict[str, float] | None:
            return None if m is None else {str(k): (math.nan if v is None else float(v)) for k, v in m.items()}

        if "void" in d:
            return VoidIn(str(d["void"]))
        values = conv(d["values"])
        assert values is not None
        return cls(float(d["timestamp"]), values, conv(d.get("control")), d.get("cohort"))


class VoidIn(msgspec.Struct, frozen=True):
    """An operator's void of the analysis, stored in the analysis' tick sequence (so replaying the
    stored sequence reproduces it): :meth:`Gate.void <deploysignal.gate.Gate.void>` with ``reason``."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"void": self.reason}


class TickResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the service reports for one evaluated tick (keyword arguments only; :meth:`of` makes one
    from a gate decision).

    ``records`` and ``lines`` come from the gate's :class:`~deploysignal.gate.Decision` (``decision``),
    which builds them on first use: the service writes every tick's ``lines`` but needs the records
    (dicts) of the last tick only. ``lines`` are in ``encoding``, the analysis' audit encoding
    (:mod:`deploysignal.audit._encoding`: ``"jcs"`` for analyses created since 0.5.0, ``"repr"`` for
    earlier ones). A result restored from state has no decision, the saved records
    (``saved_records``) and no lines.
    """

    tick: int
    timestamp: float
    verdict: str
    final: bool
    fired_families: tuple[str, ...]
    decision: Decision | None = None
    saved_records: list[dict[str, Any]] | None = None
    encoding: str = REPR

    @classmethod
    def of(cls, d: Decision, encoding: str = REPR) -> TickResult:
        return cls(tick=d.tick, timestamp=d.timestamp, verdict=d.verdict, final=d.final, fired_families=d.fired_families, decision=d,
                   encoding=encoding)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The tick's audit records (one per family, then the gate's)."""
        if self.decision is not None:
            return self.decision.records
        return [] if self.saved_records is None else self.saved_records

    @property
    def lines(self) -> list[str] | None:
        """``records`` in the analysis' audit encoding (what the audit chain holds); None for a result restored from state."""
        return None if self.decision is None else decision_lines(self.decision, self.encoding)

    def summary(self) -> dict[str, Any]:
        return {"tick": self.tick, "timestamp": self.timestamp, "verdict": self.verdict, "final": self.final, "fired_families": list(self.fired_families)}


def _finite_or_none(v: Any, where: str, signal: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where}: value must be a number or null, got {type(v).__name__}", column=signal)
    try:
        f = float(v)
    except OverflowError:  # an integer beyond the float range
        raise InputError(f"{where}: value is out of the float range", column=signal) from None
    if math.isinf(f):
        raise InputError(f"{where}: value is infinite or beyond the float range (use null or NaN for missing)", column=signal)
    return f


_FLOAT_OR_NONE = frozenset((float, type(None)))


def _number_map(vals: Mapping[Any, Any], where: str) -> dict[str, float | None]:
    """A copy of ``{signal: value}`` with float values or None / NaN (missing); :class:`InputError`
    naming the signal of a non-number or an infinite value. The common case (a dict of str to finite
    float or None, as JSON gives) is recognised with set and membership operations instead of a call
    per value; anything else is checked value by value."""
    if (type(vals) is dict and set(map(type, vals.values())) <= _FLOAT_OR_NONE and set(map(type, vals)) == {str}
            and math.inf not in vals.values() and -math.inf not in vals.values()):
        return dict(vals)
    return {str(k): _finite_or_none(x, where, str(k)) for k, x in vals.items()}


@functools.lru_cache(maxsize=16)
def _parse_config(config_json: str) -> CompiledConfig:
    """Parsed compiled configs, shared by every engine built from the same JSON.

    A config is a frozen model and the gate only reads it, so analyses created from one baseline
    hold one copy: a parse costs tens of milliseconds and ~2,000 Python objects, which the cyclic
    garbage collector would otherwise rescan once per analysis in every full collection. Errors are
    not cached.
    """
    try:
        return CompiledConfig.from_json(config_json)
    except ConfigError:
        raise
    except Exception as exc:  # pydantic ValidationError, JSON errors
        raise ConfigError(f"compiled config unusable: {exc}") from None


class AnalysisEngine:
    """Gate wrapper used by the service: batch validation, evaluation, exact state.

    Parameters
    ----------
    config_json : str
        Canonical JSON of a :class:`~deploysignal.calibration.CompiledConfig`.
    settings : dict
        :class:`~deploysignal.gate.GateSettings` fields.
    state : dict, optional
        A previous :meth:`state`; the engine continues exactly where that one stopped.
    encoding : str
        How its results' audit lines are written (:mod:`deploysignal.audit._encoding`): the encoding the
        analysis' header names (``"jcs"`` for analyses created since 0.5.0, ``"repr"`` before).

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.calibration import compile_baseline
    >>> from deploysignal.telemetry import Frame
    >>> rng = np.random.default_rng(0)
    >>> cfg = compile_baseline(Frame(np.arange(2880.0) * 60, rng.normal(size=(2880, 1)), ("p99_latency_ms",)))
    >>> eng = AnalysisEngine(cfg.to_json(), {"window": 5})
    >>> ticks = [TickIn(2880 * 60 + i * 60.0, {"p99_latency_ms": float(x)}) for i, x in enumerate(rng.normal(size=5))]
    >>> [r.verdict for r in eng.ingest(ticks)][-1] in ("proceed", "extend")
    True
    """

    def __init__(self, config_json: str, settings: Mapping[str, Any], state: Mapping[str, Any] | None = None, *, encoding: str = REPR) -> None:
        self.config = _parse_config(config_json)
        self.encoding = encoding
        try:
            self.settings = GateSettings.model_validate(dict(settings))
        except Exception as exc:
            raise InputError(f"gate settings invalid: {exc}") from None
        self.names = self.config.names
        if state is None:
            try:
                self.gate = Gate(self.config, self.settings, screen=False)  # validate() screens new ticks; stored ones are rebuilt as accepted
            except ValueError as exc:  # a family cannot be built from this config (e.g. too few baseline rows)
                raise ConfigError(f"the compiled config cannot run this gate: {exc}") from None
            self._present = [0] * len(self.names)
            self.last: TickResult | None = None
            self._superseded = 0
        else:
            self.gate = Gate.from_state(self.config, self.settings, state["gate"], screen=False)
            self._present = list(state["present"])
            self._superseded = int(state.get("superseded", 0))
            last = state.get("last")
            self.last = None if last is None else TickResult(
                tick=last["tick"], timestamp=last["timestamp"], verdict=last["verdict"], final=last["final"],
                fired_families=tuple(last["fired_families"]), saved_records=last["records"],
            )

    # ------------------------------------------------------------------ properties
    @property
    def n_ticks(self) -> int:
        """Stored ticks: the gate's ticks plus those a cut-back superseded (:meth:`supersede`)."""
        return int(self.gate._tick) + self._superseded  # noqa: SLF001 - cheap counter

    @property
    def in_effect(self) -> int:
        """Entries in effect (ticks and voids the verdict stands on): :attr:`n_ticks` less what cut-backs superseded."""
        return int(self.gate._tick)  # noqa: SLF001 - cheap counter

    def supersede(self, stored: int) -> None:
        """After a cut-back this engine was rebuilt from the ticks kept; from now on :attr:`n_ticks`
        reports ``stored``, the analysis' stored tick count (kept, superseded and the cut itself)."""
        self._superseded = stored - int(self.gate._tick)  # noqa: SLF001

    @property
    def last_timestamp(self) -> float | None:
        ts = self.gate._last_ts  # noqa: SLF001
        return None if ts == -math.inf else float(ts)

    @property
    def two_sample(self) -> bool:
        return self.settings.mode == "two-sample"

    # ------------------------------------------------------------------ validation
    def validate(self, ticks: Sequence[Mapping[str, Any]], *, clock_skew: tuple[float, float] | None = None) -> list[TickIn]:
        """Check a whole batch (types, finiteness, signal names, strict time order and, with the settings'
        ``out_of_domain="reject"``, each value inside its domain: :func:`~deploysignal.telemetry.check_domain`;
        with ``"missing"`` such a value is taken per signal by the gate and recorded) without changing state.

        Time order is per cohort, as in :meth:`Gate.update`: each cohort (tier) is its own stream, so two
        cohorts may report the same timestamp, but a cohort's ticks must be strictly increasing.

        Timestamps must be epoch seconds (:func:`~deploysignal.telemetry.check_epoch_seconds`: not
        milliseconds) and, with ``clock_skew = (now, max_skew)`` (the caller's clock: the engine reads
        none), at most ``max_skew`` seconds after ``now`` (:func:`~deploysignal.telemetry.check_clock_skew`).

        Raises :class:`InputError` naming the tick index (``row``, 1-based within the batch) and field.
        """
        out: list[TickIn] = []
        clocks: dict[str, float] = {}
        known = set(self.names)
        for i, t in enumerate(ticks, start=1):
            try:
                ts_raw = t.get("timestamp")
                if isinstance(ts_raw, bool) or not isinstance(ts_raw, (int, float)):
                    raise InputError("timestamp must be epoch seconds (a number)", column="timestamp")
                try:
                    ts = float(ts_raw)
                except OverflowError:
                    raise InputError("timestamp is out of the float range", column="timestamp") from None
                if not math.isfinite(ts):
                    raise InputError("timestamp is not finite", column="timestamp")
                check_epoch_seconds(ts)
                if clock_skew is not None:
                    check_clock_skew(ts, *clock_skew)
                cohort = t.get("cohort")
                if cohort is not None and not isinstance(cohort, str):
                    raise InputError("cohort must be a string", column="cohort")
                key = cohort or ""
                prev = clocks[key] if key in clocks else self.gate.cohort_clock(key)
                if ts <= prev:
                    kind = "duplicate" if ts == prev else "out-of-order"
                    of = f" of cohort {cohort!r}" if cohort else ""
                    raise InputError(f"{kind} tick: timestamp {ts!r} is not after the previous accepted tick{of} ({prev!r})", column="timestamp")
                vals = t.get("values")
                if not isinstance(vals, Mapping) or not vals:
                    raise InputError("values must be a non-empty object {signal: number|null}", column="values")
                if not vals.keys() <= known:  # the signal names are strings of the config (common case, one C call)
                    unknown = sorted(set(map(str, vals)) - known)
                    if unknown:
                        raise InputError(f"unknown signals {unknown}; the compiled config has {list(self.names)}", column="values")
                v = _number_map(vals, "canary")
                ctrl_raw = t.get("control")
                if self.two_sample:
                    if not isinstance(ctrl_raw, Mapping) or not ctrl_raw:  # {} would be a tick without a control, unnoticed
                        raise InputError("two-sample analysis: every tick needs a non-empty control object {signal: number|null}", column="control")
                    if not ctrl_raw.keys() <= known:
                        unknown = sorted(set(map(str, ctrl_raw)) - known)
                        if unknown:
                            raise InputError(f"unknown control signals {unknown}", column="control")
                    c: dict[str, float] | None = _number_map(ctrl_raw, "control")
                elif ctrl_raw is not None:
                    raise InputError("control given but the analysis runs in one-sample mode", column="control")
                else:
                    c = None
            except InputError as exc:
                col = exc.column
                raise InputError(str(exc).split(": ", 1)[-1] if col else str(exc), row=i, column=col) from None
            out.append(TickIn(ts, v, c, cohort))
            clocks[key] = ts
        if self.settings.out_of_domain != "reject":  # "missing": the gate takes such a value per signal, recorded
            return out
        for what, maps in (("canary", [t.values for t in out]), ("control", [t.control for t in out if t.control is not None])):
            if maps:
                rows = np.array([[m.get(n, math.nan) for n in self.names] for m in maps], dtype=float)  # None -> NaN
                check_domain(rows, self.gate.domains, self.names, what=what)  # row = tick of the batch
        return out

    def out_of_domain(self, ticks: Sequence[TickIn], first_tick: int) -> list[dict[str, Any]]:
        """The values of validated ``ticks`` (the first being tick ``first_tick``) that the gate will take
        as missing because they lie outside their signal's domain (settings ``out_of_domain="missing"``;
        none under ``reject``, which refused them in :meth:`validate`): per value its ``tick``,
        ``signal``, ``value``, ``reason`` and, for a control value, ``"control": true``; in tick order."""
        if self.settings.out_of_domain != "missing" or not ticks:
            return []
        nan, names, dom = math.nan, self.names, self.gate.domains
        found: list[tuple[int, int, int, dict[str, Any]]] = []
        for arm, what, maps in ((0, "canary", [t.values for t in ticks]), (1, "control", [t.control for t in ticks])):
            rows = np.array([[nan] * len(names) if m is None else [m.get(n, nan) for n in names] for m in maps], dtype=float)
            for i, j in np.argwhere(out_of_domain_mask(rows, dom)).tolist():
                x = float(rows[i, j])
                entry = {"tick": first_tick + i, "signal": names[j], "value": x,
                         "reason": out_of_domain_reason(dom, names, j, x, what=what) + "; recorded as missing"}
                found.append((i, arm, j, {**entry, "control": True} if arm else entry))
        return [e for *_k, e in sorted(found, key=lambda f: f[:3])]

    # ------------------------------------------------------------------ evaluation
    def ingest(self, ticks: Sequence[TickIn | VoidIn]) -> list[TickResult]:
        """Evaluate validated ticks in order (call :meth:`validate` first), all in one
        :meth:`Gate.update_many` call; a stored operator void (:class:`VoidIn`) in the sequence is
        applied at its place (:meth:`void`)."""
        if any(isinstance(t, VoidIn) for t in ticks):
            out: list[TickResult] = []
            run: list[TickIn] = []
            for t in [*ticks, None]:
                if isinstance(t, TickIn):
                    run.append(t)
                    continue
                out += self.ingest(run)
                run = []
                if t is not None:
                    out.append(self.void(t.reason, new=False))
            return out
        if not ticks:
            return []
        names = self.names
        nan = math.nan
        rows = np.array([[t.values.get(n, nan) for n in names] for t in ticks], dtype=float)  # None -> NaN
        control: Any = None
        if self.two_sample:
            control = [None if t.control is None else [t.control.get(n, nan) for n in names] for t in ticks]
            if all(c is not None for c in control):  # else the gate names the tick without one
                control = np.array(control, dtype=float)
        cohorts = [t.cohort for t in ticks] if any(t.cohort is not None for t in ticks) else None
        decisions = self.gate.update_many([t.timestamp for t in ticks], rows, cohorts=cohorts, control=control)
        self._present = [a + int(b) for a, b in zip(self._present, (~np.isnan(rows)).sum(axis=0))]
        out = [TickResult.of(d, self.encoding) for d in decisions]
        self.last = out[-1]
        return out

    def void(self, reason: str, *, new: bool = True) -> TickResult:
        """Void the analysis (:meth:`Gate.void <deploysignal.gate.Gate.void>`): one tick without
        telemetry whose records end the analysis with a final verdict that never promotes. ``new``: an
        operator's void (its reason screened, a second void refused), not one rebuilt from the store."""
        self.last = TickResult.of(self.gate.void(reason, screen=new), self.encoding)
        return self.last

    def signal_classification(self) -> list[dict[str, Any]]:
        """Kayenta-style per-signal classification: Pass, High, Low (driver of a rollback) or Nodata.

        ``High`` for drivers whose harmful direction is ``up`` or ``both`` (the side of a two-sided
        signal is not resolved), ``Low`` for ``down``; ``Nodata`` when no value was ever present.
        """
        drivers: set[str] = set()
        if self.last is not None:
            for r in self.last.records:
                if r.get("fire") and r.get("action") == "rollback":
                    drivers.update(r.get("drivers") or [])
        specs = {m.name: m for m in self.config.signals}
        out = []
        for j, n in enumerate(self.names):
            if self._present[j] == 0:
                cls = "Nodata"
            elif n in drivers:
                direction = getattr(specs.get(n), "direction", "up")
                cls = "Low" if direction == "down" else "High"
            else:
                cls = "Pass"
            out.append({"name": n, "classification": cls, "observations": self._present[j]})
        return out

    def state(self) -> dict[str, Any]:
        """Exact JSON-serialisable state (gate state plus the engine's counters and last result)."""
        last = None
        if self.last is not None:
            last = {**self.last.summary(), "records": self.last.records}
        out = {"gate": self.gate.state(), "present": list(self._present), "last": last}
        return {**out, "superseded": self._superseded} if self._superseded else out
