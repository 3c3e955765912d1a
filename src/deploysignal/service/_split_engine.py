"""SplitEngine: the service's adapter of the randomised-split gate, with AnalysisEngine's interface.

The manager picks it for analyses created with ``mode: "split"``. It owns a
:class:`~deploysignal.split.SplitGate` built from the metric specs (the "config": canonical JSON of
``{"mode": "split", "metrics": [...]}``) and :class:`~deploysignal.split.SplitSettings`, validates whole
batches of aggregated split ticks (:meth:`SplitTick.from_dict <deploysignal.split.SplitTick.from_dict>`)
before applying any of them, and returns per-tick results with the gate's audit records. The guarantee
is the split gate's (``docs/split.md``): ``P(false rollback) <= alpha`` under the split null. No I/O,
no clock.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from pydantic import ValidationError

from .. import __version__
from .._exceptions import ConfigError, InputError
from ..calibration import canonical_json
from ..split import MetricSpec, SplitGate, SplitSettings, SplitTick, settings_error, ticks_to_data
from ..split._audit import split_header
from ..split._ticks import ArmCounts
from ..telemetry import check_clock_skew, check_epoch_seconds
from ._engine import VoidIn

__all__ = ["SplitEngine", "SplitResult", "SplitTickIn", "split_config"]


def split_config(specs: Sequence[MetricSpec]) -> tuple[str, str]:
    """The stored "config" of a split analysis: (version id ``sp-<sha256 prefix>``, canonical JSON)."""
    body = canonical_json({"mode": "split", "metrics": [s.to_dict() for s in specs]})
    return "sp-" + hashlib.sha256(body.encode()).hexdigest()[:16], body


class SplitTickIn(msgspec.Struct, frozen=True):
    """One gate tick: the aggregated split ticks sharing its timestamp (one per tier)."""

    timestamp: float
    parts: tuple[SplitTick, ...]

    def to_json(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "split": [{"arms": {"canary": p.canary.to_dict(), "stable": p.stable.to_dict()}, "tier": p.tier}
                                                       for p in self.parts]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SplitTickIn | VoidIn:
        """A stored tick (as :meth:`to_json` wrote it); a stored operator void comes back as :class:`VoidIn`."""
        if "void" in d:
            return VoidIn(str(d["void"]))
        ts = float(d["timestamp"])
        return cls(ts, tuple(SplitTick(ts, _arm(p["arms"]["canary"]), _arm(p["arms"]["stable"]), p.get("tier")) for p in d["split"]))


def _arm(d: Mapping[str, Any]) -> ArmCounts:
    return ArmCounts(int(d["units"]), {str(k): int(v) for k, v in d["events"].items()},
                     {str(k): tuple(int(x) for x in v) for k, v in d["buckets"].items()})


class SplitResult(msgspec.Struct, frozen=True, kw_only=True):
    """One evaluated tick: the verdict and its audit records (one per family, then the gate's);
    ``lines`` (canonical JSON of the records) is None for a result restored from state."""

    tick: int
    timestamp: float
    verdict: str
    final: bool
    fired_families: tuple[str, ...]
    records: list[dict[str, Any]]
    lines: list[str] | None = None

    def summary(self) -> dict[str, Any]:
        return {"tick": self.tick, "timestamp": self.timestamp, "verdict": self.verdict, "final": self.final, "fired_families": list(self.fired_families)}


def _enc(x: Any) -> Any:
    """Gate state as strict JSON: non-finite floats tagged (``{"$f": "inf"}``), undone by :func:`_dec`."""
    if isinstance(x, float) and not math.isfinite(x):
        return {"$f": repr(x)}
    if isinstance(x, dict):
        return {k: _enc(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_enc(v) for v in x]
    return x


def _dec(x: Any) -> Any:
    if isinstance(x, dict):
        return float(x["$f"]) if set(x) == {"$f"} else {k: _dec(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_dec(v) for v in x]
    return x


class SplitEngine:
    """Split-gate wrapper used by the service: batch validation, evaluation, exact state.

    Parameters
    ----------
    config_json : str
        :func:`split_config`'s JSON (the metric specs).
    settings : dict
        :class:`~deploysignal.split.SplitSettings` fields.
    state : dict, optional
        A previous :meth:`state`; the engine continues exactly where that one stopped.

    Notes
    -----
    Guarantee (the split gate's, see :class:`~deploysignal.split.SplitGate`): under the split null
    (the canary changes no unit's outcome and the canary units of each tick are a uniformly random subset
    of its units) a rollback happens with probability at most ``alpha``, for any traffic or outcome
    process. Ticks must count randomised units (sessions when the router randomises sessions). An
    operator void ends the analysis with a final ``extend`` that never promotes; later ticks are still
    evaluated and recorded (a later rollback is still reported), but the verdict never becomes proceed.

    Examples
    --------
    >>> _, cfg = split_config([MetricSpec("errors")])
    >>> eng = SplitEngine(cfg, {"window": 3, "max_extensions": 0})
    >>> tick = {"arms": {"canary": {"units": 50, "events": {"errors": 1}}, "stable": {"units": 50, "events": {"errors": 1}}}}
    >>> res = eng.ingest(eng.validate([dict(tick, timestamp=1.8e9 + 60 * i) for i in range(3)]))
    >>> [r.verdict for r in res]
    ['pending', 'pending', 'proceed']
    """

    mode = "split"

    def __init__(self, config_json: str, settings: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> None:
        try:
            cfg = msgspec.json.decode(config_json)
            self.specs = [MetricSpec.from_dict(m) for m in cfg["metrics"]]
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a stored body this version cannot read
            raise ConfigError(f"split analysis config unusable: {exc}") from None
        try:
            self.settings = SplitSettings.model_validate(dict(settings))
        except ValidationError as exc:
            raise settings_error(exc) from None
        self.names = tuple(s.name for s in self.specs)
        self.config = cfg
        if state is None:
            self.gate = SplitGate(self.specs, self.settings)
            self._voids = 0
            self._superseded = 0
            self._voided = ""
            self._last_ts: float | None = None
            self.last: SplitResult | None = None
        else:
            self.gate = SplitGate.from_state(self.specs, self.settings, _dec(state["gate"]))
            self._voids, self._voided, self._last_ts = int(state["voids"]), str(state["voided"]), state["last_ts"]
            self._superseded = int(state.get("superseded", 0))
            last = state.get("last")
            self.last = None if last is None else SplitResult(
                tick=last["tick"], timestamp=math.nan if last["timestamp"] is None else last["timestamp"], verdict=last["verdict"], final=last["final"],
                fired_families=tuple(last["fired_families"]), records=last["records"])

    # ------------------------------------------------------------------ properties
    @property
    def n_ticks(self) -> int:
        """Stored ticks: gate ticks plus operator voids (each is one row of the analysis' tick sequence)
        plus the ticks a cut-back superseded (:meth:`supersede`)."""
        return int(self.gate._tick) + self._voids + self._superseded  # noqa: SLF001 - cheap counter

    @property
    def in_effect(self) -> int:
        """Entries in effect (ticks and voids the verdict stands on): :attr:`n_ticks` less what cut-backs superseded."""
        return int(self.gate._tick) + self._voids  # noqa: SLF001 - cheap counter

    def supersede(self, stored: int) -> None:
        """After a cut-back this engine was rebuilt from the ticks kept; from now on :attr:`n_ticks`
        reports ``stored``, the analysis' stored tick count (kept, superseded and the cut itself)."""
        self._superseded = stored - int(self.gate._tick) - self._voids  # noqa: SLF001

    @property
    def last_timestamp(self) -> float | None:
        return self._last_ts

    def header(self) -> dict[str, Any]:
        """The audit header record (:func:`~deploysignal.split._audit.split_header`, input kind ``service``)."""
        return split_header(self.specs, self.settings, "service")

    decode = staticmethod(SplitTickIn.from_json)

    # ------------------------------------------------------------------ validation
    def validate(self, ticks: Sequence[Mapping[str, Any]], *, clock_skew: tuple[float, float] | None = None) -> list[SplitTickIn]:
        """Check a whole batch of split tick objects without changing state.

        Each object is parsed by :meth:`SplitTick.from_dict` (errors name ``tick i`` of the batch, 1-based,
        and the field); timestamps are epoch seconds (or RFC 3339), at most ``clock_skew[1]`` seconds after
        ``clock_skew[0]``, strictly after the last accepted tick; consecutive objects with one timestamp and
        different tiers form one gate tick (a tier cannot be added to a tick of an earlier batch). Metric
        names and bucket counts are checked against the specs (:func:`~deploysignal.split.ticks_to_data`).
        """
        parsed: list[SplitTick] = []
        for i, t in enumerate(ticks, start=1):
            tk = SplitTick.from_dict(t, f"tick {i}")
            try:
                check_epoch_seconds(tk.timestamp)
                if clock_skew is not None:
                    check_clock_skew(tk.timestamp, *clock_skew)
            except InputError as exc:
                raise InputError(f"tick {i}.timestamp: {exc.message}", row=i, column="timestamp") from None
            prev = parsed[-1].timestamp if parsed else self._last_ts
            if prev is not None and tk.timestamp <= prev and not (parsed and tk.timestamp == prev):
                kind = "duplicate" if tk.timestamp == prev else "out-of-order"
                raise InputError(f"tick {i}.timestamp: {kind} tick: {tk.timestamp!r} is not after the previous accepted tick ({prev!r})",
                                 row=i, column="timestamp")
            parsed.append(tk)
        ticks_to_data(parsed, self.specs, where="tick")  # metric names, kinds, bucket lengths, repeated tiers
        out: list[SplitTickIn] = []
        for tk in parsed:
            if out and out[-1].timestamp == tk.timestamp:
                out[-1] = SplitTickIn(tk.timestamp, (*out[-1].parts, tk))
            else:
                out.append(SplitTickIn(tk.timestamp, (tk,)))
        return out

    # ------------------------------------------------------------------ evaluation
    def ingest(self, ticks: Sequence[SplitTickIn | VoidIn]) -> list[SplitResult]:
        """Evaluate validated ticks in order (call :meth:`validate` first); a stored operator void
        (:class:`~deploysignal.service.VoidIn`) is applied at its place (:meth:`void`)."""
        out: list[SplitResult] = []
        for is_void, group in itertools.groupby(ticks, key=lambda t: isinstance(t, VoidIn)):
            run = list(group)
            if is_void:
                out += [self.void(v.reason) for v in run]  # type: ignore[union-attr]
                continue
            data = ticks_to_data([p for r in run for p in r.parts], self.specs, where="tick")  # type: ignore[union-attr]
            for k in range(data.n_ticks):
                out.append(self._result(self.gate.update(data, k).records()))
            self._last_ts = run[-1].timestamp
        return out

    def _result(self, records: list[dict[str, Any]]) -> SplitResult:
        g = records[-1]
        verdict, final, fired = g["verdict"], g["final"], tuple(g["fired"])
        if self._voided and verdict != "rollback":
            g.update(verdict="extend", final=True, reason=f"voided by the operator: {self._voided}" + (f"; {g['reason']}" if g["reason"] else ""))
            verdict, final = "extend", True
        self.last = SplitResult(tick=self.n_ticks, timestamp=float(g["timestamp"]), verdict=verdict, final=final, fired_families=fired,
                                records=records, lines=[canonical_json(r) for r in records])
        return self.last

    def void(self, reason: str) -> SplitResult:
        """Void the analysis (operator act): one record that ends it with a final ``extend``; no later tick
        can make it proceed."""
        self._voids += 1
        self._voided = str(reason).strip() or "no reason given"
        ts = math.nan if self._last_ts is None else self._last_ts
        rec = {"family": "gate", "tick": self.n_ticks, "timestamp": None if math.isnan(ts) else ts, "verdict": "extend", "final": True,
               "decided_at_tick": self.n_ticks, "fired": [], "reason": f"voided by the operator: {self._voided}",
               "fail_closed": f"operator void: {self._voided}", "gate_version": __version__}
        self.last = SplitResult(tick=self.n_ticks, timestamp=ts, verdict="extend", final=True, fired_families=(), records=[rec],
                                lines=[canonical_json(rec)])
        return self.last

    # ------------------------------------------------------------------ reporting
    def verdict_extra(self) -> dict[str, Any]:
        """What the verdict body adds for a split analysis: every metric's effect with its confidence
        sequence (``explain``: e.g. "canary error rate x1.8 [1.3, 2.6]") and the sample-ratio check; the
        last tick's family records as ``evidence``, each with ``fire_reason`` (what the integrations quote)."""
        s = self.gate.summary()
        effects = s.pop("effects")
        if self._voided and s["verdict"] != "rollback":
            s.update(verdict="extend", final=True, reason=f"voided by the operator: {self._voided}")
        srm = {k: v for k, v in effects.items() if v["role"] == "void"}
        evidence = [] if self.last is None else [dict(r, fire_reason=r["reason"]) for r in self.last.records if r.get("family") != "gate"]
        return {"mode": "split", "evidence": evidence, "split": {**s, "metrics": {k: v for k, v in effects.items() if v["role"] == "rollback"},
                                           "srm": next(iter(srm.values()), None), "voided": self._voided or None}}

    def signal_classification(self) -> list[dict[str, Any]]:
        """Kayenta-style per-metric classification: Pass, High / Low (a metric that fired: ``Low`` for
        direction ``down``, else ``High``) or Nodata (never measured in both arms)."""
        fired = set(self.gate._fired)  # noqa: SLF001
        measured = dict(zip((f.name for f in self.gate.families), self.gate._measured.tolist()))  # noqa: SLF001
        out = []
        for s in self.specs:
            n = int(measured.get(s.name, 0))
            cls = "Nodata" if n == 0 else ("Low" if s.direction == "down" else "High") if s.name in fired else "Pass"
            out.append({"name": s.name, "classification": cls, "observations": n})
        return out

    def state(self) -> dict[str, Any]:
        """Exact strict-JSON state (gate state, voids, last timestamp and last result)."""
        last = None if self.last is None else {**self.last.summary(), "timestamp": None if math.isnan(self.last.timestamp) else self.last.timestamp,
                                               "records": self.last.records}
        out = {"gate": _enc(self.gate.state()), "voids": self._voids, "voided": self._voided, "last_ts": self._last_ts, "last": last}
        return {**out, "superseded": self._superseded} if self._superseded else out
