"""AnalysisManager: analyses in a durable store, engines cached in memory, resumed by snapshot + replay."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from .. import __version__
from .._exceptions import InputError
from ..audit import settings_record
from ..audit._chain import GENESIS, chain_lines, chain_records
from ..calibration import canonical_json
from ..gate._gate import gc_paused
from ..store import LockedAnalysis, NotFound, SQLStore, batch_digest, check_batch_digest, delete_analysis, record_batch_digest
from ._engine import AnalysisEngine, TickIn, VoidIn
from ._split_engine import SplitEngine

__all__ = ["AnalysisManager"]

log = logging.getLogger(__name__)

_SORTED = msgspec.json.Encoder(order="sorted")


def tick_payload(tick: TickIn) -> str:
    """A tick as stored: JSON of :meth:`TickIn.to_json` with sorted keys, missing values (None or NaN)
    as null, floats in their shortest round-trip form (msgspec's notation, e.g. ``0.00001``;
    :func:`json.loads` reads back the same doubles). Same tick, same bytes. Ticks are inputs, not
    hashed, so the audit lines' canonical form is not needed; what msgspec cannot encode (a lone
    surrogate in a cohort) is written by canonical_json."""
    try:
        return _SORTED.encode(tick).decode()  # the dataclass's fields, NaN written as null
    except Exception:  # noqa: BLE001 - e.g. a lone surrogate, which UTF-8 cannot hold
        return canonical_json(tick.to_json())


Engine = AnalysisEngine | SplitEngine


def _engine(cfg: str, spec: Mapping[str, Any], snap: dict[str, Any] | None = None) -> Engine:
    """The engine of an analysis: :class:`SplitEngine` for ``mode: split`` specs, else :class:`AnalysisEngine`."""
    if spec.get("mode") == "split":
        return SplitEngine(cfg, spec["settings"], snap)
    return AnalysisEngine(cfg, spec["settings"], snap)


def _header(eng: Engine) -> dict[str, Any]:
    return eng.header() if isinstance(eng, SplitEngine) else settings_record(eng.config, eng.settings)


def _decode(eng: Engine, ticks: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Stored ticks as the engine's inputs."""
    if isinstance(eng, SplitEngine):
        return [eng.decode(t) for t in ticks]
    return [TickIn.from_json(t) for t in ticks]


class AnalysisManager:
    """Everything the HTTP layer does to analyses, on top of one :class:`~deploysignal.store.SQLStore`.

    Engines are cached per analysis and per process. Before every write the manager takes the
    analysis' lock in the store and brings its engine up to the stored tick count (ticks written by
    another process are replayed), so several processes sharing one PostgreSQL stay consistent.
    A cached engine is used only for the analysis it was built for (its ``created`` stamp): an id
    another process deleted and created again is another analysis, rebuilt from the store.
    An acknowledged batch has been committed: ticks, chained audit lines and (every
    ``snapshot_every`` ticks) an engine snapshot.
    """

    def __init__(self, store: SQLStore, *, snapshot_every: int = 256, max_clock_skew: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.snapshot_every = snapshot_every
        #: ticks stamped more than this many seconds after ``clock()`` are rejected (None: no check)
        self.max_clock_skew = max_clock_skew
        self.clock = clock
        self._engines: dict[str, Engine] = {}
        #: the ``created`` stamp of the analysis each cached engine was built for
        self._created: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.ingested = 0

    def _lock(self, aid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(aid, threading.Lock())

    # ------------------------------------------------------------------ create
    def create(self, aid: str, config_json: str, version_id: str, settings: Mapping[str, Any], extra: Mapping[str, Any], created: str) -> dict[str, Any]:
        split = extra.get("mode") == "split"
        engine = (SplitEngine if split else AnalysisEngine)(config_json, settings)  # validates config + settings before anything is stored
        self.store.put_config(version_id, config_json)
        spec = {"config_version": version_id, "settings": engine.settings.model_dump(mode="json"), **dict(extra)}
        header = _header(engine)
        lines, head = chain_records([header], GENESIS)
        self.store.create_analysis(aid, spec, head, "\n".join(lines), created)
        with self._lock(aid):
            self._engines[aid], self._created[aid] = engine, created
        return spec

    # ------------------------------------------------------------------ engines
    @staticmethod
    def _build(cfg: str, spec: Mapping[str, Any], snap: dict[str, Any] | None, ticks: Sequence[Mapping[str, Any]]) -> Engine:
        eng = _engine(cfg, spec, snap)
        eng.ingest(_decode(eng, ticks))
        return eng

    def _synced_locked(self, la: LockedAnalysis) -> Engine:
        aid, n = la.row.id, la.row.n_ticks
        eng = self._cached_engine(aid, la.row.created)
        if eng is not None and eng.n_ticks == n:
            return eng
        if eng is not None and eng.n_ticks < n:
            eng.ingest(_decode(eng, la.ticks_between(eng.n_ticks, n)))
        else:
            _, snap, ticks = la.resume_data()
            eng = self._build(la.config(), la.row.spec, snap, ticks)
        self._engines[aid], self._created[aid] = eng, la.row.created
        return eng

    def _cached_engine(self, aid: str, created: str) -> Engine | None:
        """The cached engine of ``aid`` if it was built for the analysis created at ``created``."""
        return self._engines.get(aid) if self._created.get(aid) == created else None

    def engine(self, aid: str) -> Engine:
        """The analysis' engine, brought up to the stored tick count (read path, no write lock)."""
        with self._lock(aid):
            try:
                row = self.store.get(aid)
            except NotFound:  # deleted by another process (or never created): nothing to keep
                self._engines.pop(aid, None)
                raise
            eng, n = self._cached_engine(aid, row.created), row.n_ticks
            if eng is not None and eng.n_ticks == n:
                return eng
            try:
                if eng is not None and eng.n_ticks < n:
                    eng.ingest(_decode(eng, self.store.ticks(aid, eng.n_ticks, n)))
                else:
                    n, _, snap, ticks = self.store.resume_data(aid)
                    eng = self._build(self.store.get_config(row.spec["config_version"]), row.spec, snap, ticks)
            except Exception:
                self._engines.pop(aid, None)
                raise
            self._engines[aid], self._created[aid] = eng, row.created
            return eng

    # ------------------------------------------------------------------ ingest
    def ingest(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None = None) -> dict[str, Any]:
        """Validate, evaluate and durably store a batch; the returned dict is the acknowledgement."""
        if not ticks:
            raise InputError("a batch needs at least one tick", column="ticks")
        with self._lock(aid):
            try:
                with self.store.locked(aid) as la:
                    digest = None if batch_id is None else batch_digest(ticks)
                    if batch_id is not None:
                        prev = la.batch(batch_id)
                        if prev is not None:  # the same batch again (a retry), or BatchConflict (409)
                            check_batch_digest(la, batch_id, digest, prev)
                            return {**prev, "duplicate": True}
                    eng = self._synced_locked(la)
                    with gc_paused():
                        response = self._apply(la, eng, ticks, batch_id)
                    if batch_id is not None:
                        record_batch_digest(la, batch_id, digest)
            except InputError:
                raise
            except BaseException:
                # The transaction rolled back: forget the in-memory engine, it is rebuilt from the store.
                self._engines.pop(aid, None)
                raise
            self.ingested += response["accepted"]
            return response

    def _apply(self, la: LockedAnalysis, eng: Engine, ticks: Sequence[Mapping[str, Any]], batch_id: str | None) -> dict[str, Any]:
        """Evaluate the batch and write it in the open transaction; returns the acknowledgement.

        Runs with the cyclic garbage collector paused (as :meth:`Gate.update_many` pauses it), from
        after the store lock is held (waiting for it does not keep the collector off) to the last
        insert: the batch's decisions, lines and rows are acyclic and freed by reference counting when
        this returns, before the collector resumes, instead of being scanned by the collections their
        allocation would trigger."""
        skew = None if self.max_clock_skew is None else (self.clock(), self.max_clock_skew)
        valid = eng.validate(ticks, clock_skew=skew)  # InputError here leaves the engine untouched
        n0 = eng.n_ticks
        results = eng.ingest(valid)
        head = la.row.audit_head
        audit = []
        for r in results:
            lines, head = chain_lines(r.lines, head)
            audit.append("\n".join(lines))
        last = results[-1]
        summary = {**last.summary(), "n_ticks": eng.n_ticks}
        response = {
            "analysis": la.row.id,
            "accepted": len(results),
            "first_tick": n0,
            "n_ticks": eng.n_ticks,
            "verdict": last.verdict,
            "final": last.final,
            "fired_families": list(last.fired_families),
            "audit_head": head,
            "duplicate": False,
        }
        snapshot = None
        if n0 // self.snapshot_every != eng.n_ticks // self.snapshot_every:
            snapshot = (eng.n_ticks, json.dumps(eng.state(), allow_nan=False))
        la.append(
            [canonical_json(t.to_json()) if isinstance(eng, SplitEngine) else tick_payload(t) for t in valid],
            audit,
            last_ts=eng.last_timestamp,
            head=head,
            summary=summary,
            batch_id=batch_id,
            response=response,
            snapshot=snapshot,
        )
        return response

    # ------------------------------------------------------------------ operator
    def void(self, aid: str, reason: str) -> dict[str, Any]:
        """Void an analysis (operator act): a chained audit record and a final verdict that never
        promotes (:meth:`AnalysisEngine.void`), stored in the analysis' tick sequence so that replay
        reproduces it and ``audit verify`` passes. Later ticks are still accepted and recorded; the
        verdict stays final."""
        with self._lock(aid):
            try:
                with self.store.locked(aid) as la:
                    eng = self._synced_locked(la)
                    res = eng.void(reason)
                    lines, head = chain_lines(res.lines, la.row.audit_head)
                    summary = {**res.summary(), "n_ticks": eng.n_ticks}
                    la.append([canonical_json(VoidIn(str(reason).strip()).to_json())],
                              ["\n".join(lines)], last_ts=eng.last_timestamp, head=head, summary=summary)
            except BaseException:
                self._engines.pop(aid, None)
                raise
        log.warning("analysis %s voided at tick %d: %s", aid, res.tick, reason)
        return {"analysis": aid, "tick": res.tick, "verdict": res.verdict, "final": res.final, "audit_head": head,
                "reason": res.records[-1]["fail_closed"]}

    def delete(self, aid: str, *, reason: str, deleted: str, undecided: bool = False) -> dict[str, Any]:
        """Delete the analysis from the store, leaving a tombstone with its final audit head
        (:func:`~deploysignal.store.delete_analysis`), and drop its cached engine."""
        with self._lock(aid):
            tomb = delete_analysis(self.store, aid, reason=reason, deleted=deleted, undecided=undecided)
            self._engines.pop(aid, None)
            self._created.pop(aid, None)
        with self._guard:
            self._locks.pop(aid, None)
        log.warning("analysis %s deleted (%s): %d ticks, final audit head %s", aid, reason, tomb["n_ticks"], tomb["audit_head"])
        return tomb

    # ------------------------------------------------------------------ replay
    def replay(self, aid: str) -> dict[str, Any]:
        """Re-run the stored ticks through a fresh engine and compare every chained audit line."""
        row = self.store.get(aid)
        cfg = self.store.get_config(row.spec["config_version"])
        eng = _engine(cfg, row.spec)
        stored = self.store.audit_lines(aid)
        lines, head = chain_records([_header(eng)], GENESIS)
        ticks = self.store.ticks(aid, 0, row.n_ticks)
        for r in eng.ingest(_decode(eng, ticks)):
            more, head = chain_records(r.records, head)  # re-encoded by the checked path: independent of how the lines were encoded
            lines.extend(more)
        for i, (a, b) in enumerate(zip(stored, lines), start=1):
            if a != b:
                reason = "stored audit line differs from the replayed one"
                written = json.loads(stored[0])["record"].get("gate_version", "< 0.2.0") if stored else __version__
                if written != __version__:
                    reason += (f"; the analysis was recorded by deploysignal {written} and is replayed by {__version__}: replay"
                               " is byte-identical within one library version")
                return {"ok": False, "records": len(lines), "first_mismatch_line": i, "reason": reason}
        if len(stored) != len(lines):
            return {"ok": False, "records": len(lines), "first_mismatch_line": min(len(stored), len(lines)) + 1, "reason": f"stored {len(stored)} lines, replay produced {len(lines)}"}
        return {"ok": True, "records": len(lines), "ticks": row.n_ticks, "audit_head": head, "first_mismatch_line": None, "reason": ""}

    def is_split(self, aid: str) -> bool:
        """Whether the analysis runs the split gate (its ingest body holds split ticks)."""
        eng = self._engines.get(aid)
        if eng is not None:
            return isinstance(eng, SplitEngine)
        return self.store.get(aid).spec.get("mode") == "split"

    def cached(self) -> dict[str, Engine]:
        with self._guard:
            return dict(self._engines)
