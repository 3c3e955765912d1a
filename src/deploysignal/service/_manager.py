"""AnalysisManager: analyses in a durable store, engines cached in memory, resumed by snapshot + replay."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

from .. import __version__
from .._exceptions import DeploySignalError, InputError
from ..audit import settings_record
from ..audit._binding import STORE_BINDING, checkpoint_line, input_line, record_of
from ..audit._chain import GENESIS, chain_lines, chain_records
from ..calibration import canonical_json
from ..gate._gate import gc_paused
from ..store import AnalysisRow, Conflict, LockedAnalysis, NotFound, SQLStore, StoredRows, batch_digest, check_batch_digest, delete_analysis, record_batch_digest
from ._cut import apply_cut, cut_payload, cut_refusal, effective, is_cut
from ._engine import AnalysisEngine, TickIn, VoidIn
from ._integrity import CHECKED_BOUND, NOT_BOUND, Integrity, IntegrityError, advance_checked, load_checked, spec_digest, summary_problem
from ._split_engine import SplitEngine

__all__ = ["AnalysisManager"]

log = logging.getLogger(__name__)

#: At most this many out-of-domain values are listed in an ingest response (their count is always given).
OUT_OF_DOMAIN_LISTED = 20

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


def _header(eng: Engine, binding: int = 0, spec_sha256: str | None = None) -> dict[str, Any]:
    """The chained header record; ``binding`` > 0 announces the store binding records
    (:mod:`deploysignal.audit._binding`) of an analysis created since 0.5.0, and then ``spec_sha256``
    (:func:`spec_digest`) binds the analysis row's spec and ``created``."""
    h = eng.header() if isinstance(eng, SplitEngine) else settings_record(eng.config, eng.settings)
    if not binding:
        return h
    return {**h, "store_binding": binding, **({} if spec_sha256 is None else {"spec_sha256": spec_sha256})}


def _state_text(eng: Engine) -> str:
    """The snapshot text of an engine's state (what the ``snapshots`` row and its checkpoint digest hold)."""
    return json.dumps(eng.state(), allow_nan=False)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _decode(eng: Engine, ticks: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Stored ticks as the engine's inputs."""
    if isinstance(eng, SplitEngine):
        return [eng.decode(t) for t in ticks]
    return [TickIn.from_json(t) for t in ticks]


def _batch_retry(la: LockedAnalysis, batch_id: str, digest: str) -> dict[str, Any] | None:
    """The answer to a batch (content digest ``digest``, :func:`~deploysignal.store.batch_digest`) whose
    ``batch_id`` was already acknowledged: its acknowledgement again (``duplicate``) for the same
    content; None for a new id. Raises :class:`~deploysignal.store.Conflict`
    (409) when a cut-back superseded part of its ticks (the acknowledgement no longer holds; a batch
    wholly superseded lost its key and digest in the cut, so it is ingested again), and
    :class:`~deploysignal.store.BatchConflict` (409) for other content under the id."""
    prev = la.batch(batch_id)
    if prev is None:
        return None
    if "superseded_by_cut" in prev:
        raise Conflict(f"batch {batch_id!r} was acknowledged before the cut-back at stored entry {prev['superseded_by_cut']},"
                       f" which superseded part of its ticks (stored {prev['superseded']}); its acknowledgement no longer"
                       " holds: re-send the ticks not in effect under a new batch id")
    check_batch_digest(la, batch_id, digest, prev)
    return {**prev, "duplicate": True}


class _Replaced(NotFound):
    """The analysis a caller meant was deleted and its id created again (the other one is kept cached)."""


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
                 clock: Callable[[], float] = time.time, max_cuts: int = 3) -> None:
        self.store = store
        self.snapshot_every = snapshot_every
        #: cut-backs allowed per analysis: each one can add up to alpha to its false-rollback probability
        self.max_cuts = max_cuts
        #: ticks stamped more than this many seconds after ``clock()`` are rejected (None: no check)
        self.max_clock_skew = max_clock_skew
        self.clock = clock
        self._engines: dict[str, Engine] = {}
        #: per cached engine: the chain head it stands at and the analysis' store binding
        self._heads: dict[str, tuple[str, int]] = {}
        #: the ``created`` stamp of the analysis each cached engine was built for
        self._created: dict[str, str] = {}
        #: per analysis loaded by this process: what its integrity check covered
        self.integrity: dict[str, Integrity] = {}
        #: per analysis id: its lock and how many threads hold or wait on it (the entry goes with the last one)
        self._locks: dict[str, list[Any]] = {}
        self._guard = threading.Lock()
        self.ingested = 0

    @contextmanager
    def _lock(self, aid: str) -> Iterator[None]:
        """Hold the per-analysis lock of ``aid``. Reference-counted: the entry is dropped when no thread
        holds or waits on it, never while one does (a thread arriving later gets the same lock), so ids
        deleted or only asked about leave nothing behind."""
        with self._guard:
            entry = self._locks.get(aid)
            if entry is None:
                entry = self._locks[aid] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0 and self._locks.get(aid) is entry:
                    del self._locks[aid]

    # ------------------------------------------------------------------ create
    def create(self, aid: str, config_json: str, version_id: str, settings: Mapping[str, Any], extra: Mapping[str, Any], created: str) -> dict[str, Any]:
        split = extra.get("mode") == "split"
        engine = (SplitEngine if split else AnalysisEngine)(config_json, settings)  # validates config + settings before anything is stored
        self.store.put_config(version_id, config_json)
        spec = {"config_version": version_id, "settings": engine.settings.model_dump(mode="json"), **dict(extra)}
        header = _header(engine, STORE_BINDING, spec_digest(spec, created))
        lines, head = chain_records([header], GENESIS)
        self.store.create_analysis(aid, spec, head, "\n".join(lines), created)
        with self._lock(aid):
            self._engines[aid] = engine
            self._heads[aid] = (head, STORE_BINDING)
            self._created[aid] = created  # the stamp spec_sha256 binds (with the spec) in the header
            self.integrity[aid] = Integrity(STORE_BINDING, CHECKED_BOUND, not_bound=NOT_BOUND)  # what every load of it checks
        return spec

    # ------------------------------------------------------------------ engines
    def _current(self, aid: str, row: AnalysisRow) -> Engine | None:
        """The cached engine when it stands exactly at the stored row (tick count and chain head)."""
        eng = self._cached_engine(aid, row.created)
        if eng is not None and eng.n_ticks == row.n_ticks and self._heads.get(aid, ("",))[0] == row.audit_head:
            return eng
        return None

    def _checked(self, aid: str, read: Callable[[int], tuple[AnalysisRow, StoredRows]]) -> Engine:
        """The engine of analysis ``aid`` after the integrity check (:mod:`deploysignal.service._integrity`):
        the cached one advanced over ticks another process appended, or one rebuilt from the store.
        ``read(start)`` reads the analysis row and its rows from ``start`` on in one transaction. A
        mismatch is logged and raised (:class:`IntegrityError`); the engine is then forgotten."""
        eng = self._engines.get(aid)
        try:
            row = rows = None
            if eng is not None and aid in self._heads:
                row, rows = read(eng.n_ticks)
                if row.created != self._created.get(aid):
                    row = rows = None  # another analysis under this id (deleted and created again by another process)
                elif row.n_ticks <= eng.n_ticks or any(is_cut(p) for _, p in rows.ticks):
                    row = rows = None  # not a plain append by another process (or a cut-back): check everything again
            if row is not None and rows is not None and eng is not None:
                head, binding = self._heads[aid]
                advance_checked(row, rows, eng, head, binding, _decode, _state_text)
            else:
                row, rows = read(-1)
                spec = row.spec
                eng, rep = load_checked(row, rows, lambda cfg, snap: _engine(cfg, spec, snap), _header, _decode, _state_text)
                binding = rep.binding
                self.integrity[aid] = rep
                if rep.unchecked:
                    log.warning("analysis %s: %s", aid, "; ".join(rep.unchecked))
        except IntegrityError as exc:
            self._forget(aid)
            log.error("%s", exc)
            raise
        except BaseException:
            self._forget(aid)
            raise
        self._engines[aid] = eng
        self._heads[aid] = (row.audit_head, binding)
        self._created[aid] = row.created  # checked against the header's spec_sha256 by load_checked
        return eng

    def _forget(self, aid: str) -> None:
        self._engines.pop(aid, None)
        self._heads.pop(aid, None)
        self._created.pop(aid, None)

    def _synced_locked(self, la: LockedAnalysis) -> Engine:
        return self._current(la.row.id, la.row) or self._checked(la.row.id, lambda start: (la.row, la.rows(start)))

    def _cached_engine(self, aid: str, created: str) -> Engine | None:
        """The cached engine of ``aid`` if it was built for the analysis created at ``created``."""
        return self._engines.get(aid) if self._created.get(aid) == created else None

    def engine(self, aid: str) -> Engine:
        """The analysis' engine, brought up to the stored tick count (read path, no write lock) and
        checked against its chain on every load (:class:`IntegrityError` when it does not match)."""
        with self._lock(aid):
            try:
                row = self.store.get(aid)
            except NotFound:  # deleted by another process (or never created): nothing to keep
                self._forget(aid)
                self.integrity.pop(aid, None)
                raise
            eng = self._current(aid, row)
            if eng is not None:
                return eng
            return self._checked(aid, lambda start: self.store.stored_rows(aid, start))

    # ------------------------------------------------------------------ ingest
    def ingest(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None = None, *,
               expect_created: str | None = None) -> dict[str, Any]:
        """Validate, evaluate and durably store a batch; the returned dict is the acknowledgement.

        ``expect_created``: the ``created`` stamp of the analysis the batch is meant for (a Prometheus
        poller's); :class:`~deploysignal.store.NotFound` when the id now names another analysis (that
        one was deleted and the id created again), nothing ingested."""
        if not ticks:
            raise InputError("a batch needs at least one tick", column="ticks")
        with self._lock(aid):
            try:
                with self.store.locked(aid) as la:
                    if expect_created is not None and la.row.created != expect_created:
                        raise _Replaced(f"analysis {aid!r} created at {expect_created} was deleted; the id now names the analysis created at {la.row.created}")
                    digest = None if batch_id is None else batch_digest(ticks)
                    if batch_id is not None and digest is not None and (prev := _batch_retry(la, batch_id, digest)) is not None:
                        return prev
                    eng = self._synced_locked(la)
                    with gc_paused():
                        response = self._apply(la, eng, ticks, batch_id)
                    if batch_id is not None and digest is not None:
                        record_batch_digest(la, batch_id, digest)
            except (InputError, Conflict, _Replaced):
                raise
            except BaseException:
                # The transaction rolled back: forget the in-memory engine, it is rebuilt from the store.
                self._forget(aid)
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
        ood = eng.out_of_domain(valid, n0) if isinstance(eng, AnalysisEngine) else None
        results = eng.ingest(valid)
        payloads = [canonical_json(t.to_json()) if isinstance(eng, SplitEngine) else tick_payload(t) for t in valid]
        snapshot = None
        if n0 // self.snapshot_every != eng.n_ticks // self.snapshot_every:
            snapshot = (eng.n_ticks, _state_text(eng))
        head, audit = self._chain(la.row, [(p, r.lines) for p, r in zip(payloads, results)], snapshot)
        last = results[-1]
        summary = {**last.summary(), "n_ticks": eng.n_ticks}
        response = {
            "analysis": la.row.id,
            "accepted": len(results),
            "first_tick": n0,
            "n_ticks": eng.n_ticks,
            "ticks_in_effect": eng.in_effect,
            "verdict": last.verdict,
            "final": last.final,
            "fired_families": list(last.fired_families),
            "audit_head": head,
            "duplicate": False,
        }
        if ood is not None:  # what "out_of_domain: missing" took as missing: the client is told, not only the audit
            response["out_of_domain"] = {"count": len(ood), "values": ood[:OUT_OF_DOMAIN_LISTED]}
            if ood:
                per: dict[str, int] = {}
                for e in ood:
                    per[e["signal"]] = per.get(e["signal"], 0) + 1
                log.warning("analysis %r: %d out-of-domain value(s) in ticks %d-%d recorded as missing (%s); first: tick %d, %s",
                            la.row.id, len(ood), n0, eng.n_ticks - 1, ", ".join(f"{k} x{v}" for k, v in per.items()), ood[0]["tick"], ood[0]["reason"])
        la.append(
            payloads,
            audit,
            last_ts=eng.last_timestamp,
            head=head,
            summary=summary,
            batch_id=batch_id,
            response=response,
            snapshot=snapshot,
        )
        return response

    def _chain(self, row: AnalysisRow, ticks: Sequence[tuple[str, list[str]]], snapshot: tuple[int, str] | None) -> tuple[str, list[str]]:
        """Chain the audit rows of stored ticks ``(payload, record lines)`` appended to ``row``: with the
        analysis' store binding, each row begins with the tick's ``input`` record and the last one ends
        with the ``checkpoint`` record of ``snapshot`` (:mod:`deploysignal.audit._binding`). Returns
        (new head, one text per tick) and notes the head the engine now stands at."""
        head, binding = row.audit_head, self._heads[row.id][1]
        audit = []
        for k, (payload, lines) in enumerate(ticks, start=row.n_ticks):
            if binding:
                lines = [input_line(k, payload), *lines]
                if snapshot is not None and k == row.n_ticks + len(ticks) - 1:
                    lines.append(checkpoint_line(snapshot[0], snapshot[1]))
            chained, head = chain_lines(lines, head)
            audit.append("\n".join(chained))
        self._heads[row.id] = (head, binding)
        return head, audit

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
                    payload = canonical_json(VoidIn(str(reason).strip()).to_json())
                    head, audit = self._chain(la.row, [(payload, res.lines)], None)
                    summary = {**res.summary(), "n_ticks": eng.n_ticks}
                    la.append([payload], audit, last_ts=eng.last_timestamp, head=head, summary=summary)
            except BaseException:
                self._forget(aid)
                raise
        log.warning("analysis %s voided at tick %d: %s", aid, res.tick, reason)
        return {"analysis": aid, "tick": res.tick, "verdict": res.verdict, "final": res.final, "audit_head": head,
                "reason": res.records[-1]["fail_closed"]}

    def delete(self, aid: str, *, reason: str, deleted: str, undecided: bool = False) -> dict[str, Any]:
        """Delete the analysis from the store, leaving a tombstone with its final audit head
        (:func:`~deploysignal.store.delete_analysis`), and drop its cached engine. Its store binding goes
        with it (the binding is its chained audit, tick and snapshot rows, all deleted); an analysis
        created again under the id has its own header (``spec_sha256`` over its spec and ``created``)
        and is never checked against the deleted one."""
        with self._lock(aid):
            tomb = delete_analysis(self.store, aid, reason=reason, deleted=deleted, undecided=undecided)
            self._forget(aid)
            self.integrity.pop(aid, None)
        log.warning("analysis %s deleted (%s): %d ticks, final audit head %s", aid, reason, tomb["n_ticks"], tomb["audit_head"])
        return tomb

    def cut(self, aid: str, to_tick: int, reason: str) -> dict[str, Any]:
        """Cut the analysis back to where it stood before its tick ``to_tick`` (operator act,
        :mod:`deploysignal.service._cut`): the ticks from there on stay stored and chained, marked
        superseded by a chained ``cut`` record; the engine is rebuilt from the ticks kept and a snapshot
        (with its checkpoint) is written at the cut, so loads, replay and ``audit verify`` reproduce it.
        Refused (:class:`~deploysignal.store.Conflict`) for an analysis that rolled back, was voided or
        ended refusing promotion (:func:`~deploysignal.service._cut.cut_refusal`), one that had
        ``max_cuts`` cuts and one written before the store binding; :class:`InputError` for a bad
        ``to_tick`` or reason. A retried cut (same ``to_tick`` and reason as an earlier one) answers that
        one (``duplicate``) and supersedes nothing. The batch ids of the superseded ticks stop answering
        with their pre-cut acknowledgement (:meth:`~deploysignal.store.LockedAnalysis.supersede_batches`)."""
        reason = str(reason).strip()
        if not reason or not reason.isprintable() or not _utf8(reason):
            raise InputError("a cut needs a reason: printable UTF-8 text on one line (it is recorded in the audit)", column="reason")
        if isinstance(to_tick, bool) or not isinstance(to_tick, int):
            raise InputError("to_tick must be an integer", column="to_tick")
        payload = cut_payload(to_tick, reason)
        with self._lock(aid):
            try:
                with self.store.locked(aid) as la:
                    eng = self._synced_locked(la)
                    if not self._heads[aid][1]:
                        raise Conflict(f"analysis {aid!r} was written before the store binding (0.5.0): it has no checkpoints to cut back to;"
                                       " void it and start a new analysis")
                    rows = la.rows(0)
                    cuts = [s for s, p in rows.ticks if is_cut(p)]
                    same = next((s for s, p in rows.ticks if p == payload), None)
                    if same is not None:  # a retried cut: the first one's answer, nothing superseded again
                        rec = next(r for ln in dict(rows.audit)[same].split("\n") if (r := record_of(ln)) is not None and r.get("family") == "cut")
                        return {"analysis": aid, **{k: rec[k] for k in ("tick", "to_tick", "superseded", "verdict", "final", "note")},
                                "n_ticks": eng.n_ticks, "audit_head": la.row.audit_head, "reason": reason, "cuts": cuts.index(same) + 1, "duplicate": True}
                    why = cut_refusal(aid, rows)
                    if why is not None:
                        raise Conflict(why)
                    if len(cuts) >= self.max_cuts:
                        raise Conflict(f"analysis {aid!r} has had {len(cuts)} cuts, the most allowed per analysis (max_cuts {self.max_cuts}):"
                                       " each cut can add up to alpha to its false-rollback probability; void it and start a new analysis")
                    spec, cfg, seq = la.row.spec, la.config(), la.row.n_ticks
                    eng, rec, _ = apply_cut(lambda: _engine(cfg, spec), _decode, effective(rows.ticks), payload, seq)  # type: ignore[arg-type]
                    snapshot = (seq + 1, _state_text(eng))
                    head, audit = self._chain(la.row, [(payload, [canonical_json(rec)])], snapshot)
                    summary = None if eng.last is None else {**eng.last.summary(), "n_ticks": eng.n_ticks}
                    la.append([payload], audit, last_ts=eng.last_timestamp, head=head, summary=summary, snapshot=snapshot)  # type: ignore[arg-type]
                    la.supersede_batches(rec["superseded"], seq)
                    self._engines[aid] = eng
            except BaseException:
                self._forget(aid)
                raise
        log.warning("analysis %s cut back to tick %d (superseded stored ticks %s): %s", aid, to_tick, rec["superseded"], reason)
        return {"analysis": aid, **{k: rec[k] for k in ("tick", "to_tick", "superseded", "verdict", "final", "note")}, "n_ticks": eng.n_ticks,
                "audit_head": head, "reason": reason, "cuts": len(cuts) + 1, "duplicate": False}

    # ------------------------------------------------------------------ replay
    def replay(self, aid: str) -> dict[str, Any]:
        """Re-run the stored ticks through a fresh engine and compare every chained audit line."""
        row, rows = self.store.stored_rows(aid)
        cfg = self.store.get_config(row.spec["config_version"])
        eng = _engine(cfg, row.spec)
        stored = [ln for _, text in rows.audit for ln in text.split("\n")]
        first = record_of(stored[0]) if stored else None
        binding = (first or {}).get("store_binding", 0)
        if isinstance(binding, bool) or not isinstance(binding, int):
            return {"ok": False, "records": 0, "first_mismatch_line": 1, "reason": f"the header's store_binding {binding!r} is not an integer"}
        lines, head = chain_records([_header(eng, binding, spec_digest(row.spec, row.created))], GENESIS)
        payloads = [p for seq, p in rows.ticks if 0 <= seq < row.n_ticks]
        # with the store binding, a stored checkpoint record is re-derived from the replayed state at its tick,
        # and a cut-back rebuilds the engine from the ticks it kept (as AnalysisManager.cut did)
        cps = {rec["tick"] for _, text in rows.audit if binding and '"family":"checkpoint"' in text
               if (rec := record_of(text.rsplit("\n", 1)[-1])) is not None and rec.get("family") == "checkpoint" and isinstance(rec.get("tick"), int)}
        cuts = {t + 1 for t, p in enumerate(payloads) if is_cut(p)}
        eff: list[tuple[int, str]] = []
        k = 0
        for stop in sorted({t for t in cps | cuts if 0 < t <= len(payloads)} | {len(payloads)}):
            seg = payloads[k:stop]
            plain = seg[:-1] if stop in cuts else seg
            try:
                results = eng.ingest(_decode(eng, [json.loads(x) for x in plain]))
                for t, (p, r) in enumerate(zip(plain, results), start=k):
                    if binding:
                        more, head = chain_lines([input_line(t, p)], head)
                        lines.extend(more)
                    more, head = chain_records(r.records, head)  # re-encoded by the checked path: independent of how the lines were encoded
                    lines.extend(more)
                    eff.append((t, p))
                if stop in cuts:
                    eng, rec, eff = apply_cut(lambda: _engine(cfg, row.spec), _decode, eff, seg[-1], stop - 1)
                    more, head = chain_lines([input_line(stop - 1, seg[-1])], head) if binding else ([], head)
                    lines.extend(more)
                    more, head = chain_records([rec], head)
                    lines.extend(more)
            except (ValueError, TypeError, KeyError, DeploySignalError) as exc:  # a damaged tick row
                return {"ok": False, "records": len(lines), "first_mismatch_line": None,
                        "reason": f"the stored ticks from tick {k} on cannot be replayed ({type(exc).__name__}: {exc})"}
            if stop in cps:
                more, head = chain_lines([checkpoint_line(stop, _state_text(eng))], head)
                lines.extend(more)
            k = stop
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

    def verify(self, aid: str) -> Integrity:
        """The integrity check of a stored analysis (:func:`~deploysignal.service._integrity.load_checked`)
        without touching the cache: what ``deploysignal audit verify --store`` runs. Raises
        :class:`IntegrityError` naming the first row that does not match its chain."""
        row, rows = self.store.stored_rows(aid)
        spec = row.spec
        return load_checked(row, rows, lambda cfg, snap: _engine(cfg, spec, snap), _header, _decode, _state_text)[1]

    def listed_summary(self, row: AnalysisRow) -> tuple[dict[str, Any] | None, str | None]:
        """The summary of an analysis as the listing serves it: (summary, None) when it matches the
        last chained records, else (None, why) (:func:`~deploysignal.service._integrity.summary_problem`)."""
        why = summary_problem(row, self.store.audit_lines(row.id, row.n_ticks - 1 if row.n_ticks else -1, 1))
        if why is not None:
            log.error("analysis %s: summary not served: %s", row.id, why)
            return None, why
        return row.summary, None

    def is_split(self, aid: str) -> bool:
        """Whether the analysis runs the split gate (its ingest body holds split ticks)."""
        eng = self._engines.get(aid)
        if eng is not None:
            return isinstance(eng, SplitEngine)
        return self.store.get(aid).spec.get("mode") == "split"

    def cached(self) -> dict[str, Engine]:
        with self._guard:
            return dict(self._engines)

    def cached_current(self) -> dict[str, Engine]:
        """The cached engines of analyses that still exist as the one each was built for (one read of the
        store); the others (deleted, or deleted and created again, by another process) are forgotten."""
        created = {r.id: r.created for r in self.store.list()}
        out = {}
        for aid, eng in self.cached().items():
            if created.get(aid) == self._created.get(aid):
                out[aid] = eng
                continue
            with self._lock(aid):
                if self._engines.get(aid) is eng and created.get(aid) != self._created.get(aid):
                    self._forget(aid)
                    self.integrity.pop(aid, None)
        return out
