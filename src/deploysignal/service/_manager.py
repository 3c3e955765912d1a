"""AnalysisManager: analyses in a durable store, engines cached in memory (LRU), resumed by snapshot + replay.

Concurrency (issue 23, item 5). A batch is evaluated **outside** the store's write transaction: the
analysis' in-process lock keeps its ticks in order, the engine evaluates the batch (in chunks of
``eval_chunk`` ticks, so that no compiled loop holds the interpreter lock for more than about a
millisecond), and only the append (ticks, chained audit lines, summary, snapshot) runs in the short
write transaction, which first checks that the analysis' tick count and audit head are still the
ones the batch was evaluated on. On SQLite, whose write lock covers the whole file, one analysis'
large batch therefore no longer blocks another analysis' ingest for the duration of its evaluation
(it still does while its rows are written: docs/performance.md, "noisy neighbour"). When another
process (``--workers``, a second host on PostgreSQL) appended in between, the evaluation is discarded
and redone on the new state; after ``OPTIMISTIC_TRIES`` such conflicts the batch is evaluated inside the write transaction,
as before, so progress is guaranteed. Replays run at most ``max_replays`` at a time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

from .. import __version__
from .._exceptions import InputError
from ..audit import settings_record
from ..audit._chain import GENESIS, chain_lines, chain_records
from ..calibration import canonical_json
from ..gate._gate import gc_paused
from ..store import LockedAnalysis, SQLStore
from ._admission import Busy
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


class _Stale(Exception):
    """Another process appended to the analysis between the read and the write transaction."""


class AnalysisManager:
    """Everything the HTTP layer does to analyses, on top of one :class:`~deploysignal.store.SQLStore`.

    Engines are cached per analysis and per process, at most ``cache_size`` of them (least recently
    used evicted first; an evicted analysis is rebuilt from its snapshot plus the ticks after it on its
    next use, which reproduces its state exactly). Every use of an engine brings it up to the stored
    tick count first (ticks written by another process are replayed), so several processes sharing one
    PostgreSQL stay consistent. An acknowledged batch has been committed: ticks, chained audit lines
    and (every ``snapshot_every`` ticks) an engine snapshot. See the module docstring for what runs
    inside the store's write transaction.

    Parameters
    ----------
    cache_size : int
        Engines kept in memory (each holds a gate's state, a few hundred KB).
    max_replays : int
        Replays (``POST /v1/analyses/{id}/replay``) running at once; more wait up to ``wait_timeout``.
    wait_timeout : float
        Seconds a request waits for its analysis (another request on it) or a replay slot before it is
        refused with :class:`~deploysignal.service._admission.Busy` (503, nothing applied).
    eval_chunk : int
        Ticks evaluated per engine call (results are identical to one call: the gate's batch path
        equals its tick-by-tick path).
    """

    #: write attempts with the evaluation outside the write transaction before it is done inside it
    OPTIMISTIC_TRIES = 3

    def __init__(self, store: SQLStore, *, snapshot_every: int = 256, max_clock_skew: float | None = None,
                 clock: Callable[[], float] = time.time, cache_size: int = 256, max_replays: int = 1,
                 wait_timeout: float = 30.0, eval_chunk: int = 64) -> None:
        self.store = store
        self.snapshot_every = snapshot_every
        #: ticks stamped more than this many seconds after ``clock()`` are rejected (None: no check)
        self.max_clock_skew = max_clock_skew
        self.clock = clock
        self.cache_size = cache_size
        self.wait_timeout = wait_timeout
        self.eval_chunk = eval_chunk
        self.max_replays = max_replays
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._replays = threading.BoundedSemaphore(max_replays)
        self.ingested = 0
        #: engines evicted from the cache (a gauge on /metrics)
        self.evicted = 0

    def _lock(self, aid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(aid, threading.Lock())

    @contextmanager
    def _held(self, aid: str) -> Iterator[None]:
        """The analysis' in-process lock, waited for at most ``wait_timeout`` seconds (else :class:`Busy`)."""
        lock = self._lock(aid)
        if not lock.acquire(timeout=self.wait_timeout):
            raise Busy(f"analysis {aid!r} is busy with another request for more than {self.wait_timeout:g} s; retry"
                       " (a batch_id makes an ingest retry idempotent)")
        try:
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ engine cache (LRU)
    def _cached(self, aid: str) -> Engine | None:
        with self._guard:
            eng = self._engines.get(aid)
            if eng is not None:
                self._engines.move_to_end(aid)
            return eng

    def _keep(self, aid: str, eng: Engine) -> None:
        with self._guard:
            self._engines[aid] = eng
            self._engines.move_to_end(aid)
            while len(self._engines) > self.cache_size:
                old, _ = self._engines.popitem(last=False)
                self.evicted += 1
                log.debug("engine of analysis %s evicted from the cache (%d kept)", old, self.cache_size)

    def _forget(self, aid: str) -> None:
        with self._guard:
            self._engines.pop(aid, None)

    def _evaluate(self, eng: Engine, valid: Sequence[Any]) -> list[Any]:
        """``eng.ingest(valid)`` in chunks of ``eval_chunk`` ticks (same results as one call)."""
        results: list[Any] = []
        for i in range(0, len(valid), self.eval_chunk):
            results.extend(eng.ingest(valid[i : i + self.eval_chunk]))
        return results

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
            self._keep(aid, engine)
        return spec

    # ------------------------------------------------------------------ engines
    @staticmethod
    def _build(cfg: str, spec: Mapping[str, Any], snap: dict[str, Any] | None, ticks: Sequence[Mapping[str, Any]]) -> Engine:
        eng = _engine(cfg, spec, snap)
        eng.ingest(_decode(eng, ticks))
        return eng

    def _synced_locked(self, la: LockedAnalysis) -> Engine:
        aid, n = la.row.id, la.row.n_ticks
        eng = self._cached(aid)
        if eng is not None and eng.n_ticks == n:
            return eng
        if eng is not None and eng.n_ticks < n:
            eng.ingest(_decode(eng, la.ticks_between(eng.n_ticks, n)))
        else:
            _, snap, ticks = la.resume_data()
            eng = self._build(la.config(), la.row.spec, snap, ticks)
        self._keep(aid, eng)
        return eng

    def _synced(self, aid: str, n: int | None = None) -> Engine:
        """The cached engine brought up to ``n`` stored ticks (default: the current count) by read
        transactions, or rebuilt from snapshot + replay; the caller holds the analysis' lock."""
        eng = self._cached(aid)
        if n is None:
            n = self.store.n_ticks(aid)
        if eng is not None and eng.n_ticks == n:
            return eng
        try:
            if eng is not None and eng.n_ticks < n:
                eng.ingest(_decode(eng, self.store.ticks(aid, eng.n_ticks, n)))
            else:
                row = self.store.get(aid)
                n2, _, snap, ticks = self.store.resume_data(aid)
                eng = self._build(self.store.get_config(row.spec["config_version"]), row.spec, snap, ticks)
                if n2 != n:  # another process appended in between: the caller's view is stale
                    self._keep(aid, eng)
                    raise _Stale
        except _Stale:
            raise
        except BaseException:
            self._forget(aid)
            raise
        self._keep(aid, eng)
        return eng

    def engine(self, aid: str) -> Engine:
        """The analysis' engine, brought up to the stored tick count (read path, no write lock)."""
        with self._held(aid):
            while True:
                try:
                    return self._synced(aid)
                except _Stale:
                    continue

    # ------------------------------------------------------------------ ingest
    def ingest(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None = None) -> dict[str, Any]:
        """Validate, evaluate and durably store a batch; the returned dict is the acknowledgement.

        The evaluation runs outside the store's write transaction (module docstring); ticks of one
        analysis stay in order (its in-process lock, then the tick count and audit head checked in the
        write transaction)."""
        if not ticks:
            raise InputError("a batch needs at least one tick", column="ticks")
        with self._held(aid):
            response = None
            for _ in range(self.OPTIMISTIC_TRIES):
                try:
                    response = self._ingest_outside(aid, ticks, batch_id)
                    break
                except _Stale:
                    continue
            if response is None:  # other processes kept appending: evaluate holding the write lock
                response = self._ingest_locked(aid, ticks, batch_id)
        if not response["duplicate"]:
            self.ingested += response["accepted"]
        return response

    def _ingest_outside(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None) -> dict[str, Any]:
        row = self.store.get(aid)
        if batch_id is not None:
            prev = self.store.batch_response(aid, batch_id)
            if prev is not None:
                return {**prev, "duplicate": True}
        eng = self._synced(aid, row.n_ticks)
        try:
            with gc_paused():
                response, append = self._prepare(aid, row.audit_head, eng, ticks, batch_id)
            with self.store.locked(aid) as la:  # waiting for the write turn does not keep the collector off
                if la.row.n_ticks != row.n_ticks or la.row.audit_head != row.audit_head:
                    raise _Stale
                with gc_paused():
                    la.append(**append)
        except InputError:
            raise  # raised by validate, before the engine changed
        except BaseException:
            # stale, or the transaction rolled back: the engine evaluated ticks that are not stored
            self._forget(aid)
            raise
        return response

    def _ingest_locked(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None) -> dict[str, Any]:
        try:
            with self.store.locked(aid) as la:
                if batch_id is not None:
                    prev = la.batch(batch_id)
                    if prev is not None:
                        return {**prev, "duplicate": True}
                eng = self._synced_locked(la)
                with gc_paused():
                    response, append = self._prepare(aid, la.row.audit_head, eng, ticks, batch_id)
                    la.append(**append)
        except InputError:
            raise
        except BaseException:
            self._forget(aid)
            raise
        return response

    def _prepare(self, aid: str, head: str, eng: Engine, ticks: Sequence[Mapping[str, Any]], batch_id: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Evaluate the batch on ``eng`` (stored up to the audit head ``head``): the acknowledgement and
        the arguments of :meth:`LockedAnalysis.append` that store it.

        The callers run it, and the inserts, with the cyclic garbage collector paused (as
        :meth:`Gate.update_many` pauses it; not while waiting for the write turn): the batch's
        decisions, lines and rows are acyclic and freed by reference counting when the caller
        returns, instead of being scanned by the collections their allocation would trigger."""
        skew = None if self.max_clock_skew is None else (self.clock(), self.max_clock_skew)
        valid = eng.validate(ticks, clock_skew=skew)  # InputError here leaves the engine untouched
        n0 = eng.n_ticks
        results = self._evaluate(eng, valid)
        audit = []
        for r in results:
            lines, head = chain_lines(r.lines, head)
            audit.append("\n".join(lines))
        last = results[-1]
        summary = {**last.summary(), "n_ticks": eng.n_ticks}
        response = {
            "analysis": aid,
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
        append = {
            "ticks": [canonical_json(t.to_json()) if isinstance(eng, SplitEngine) else tick_payload(t) for t in valid],
            "audit": audit,
            "last_ts": eng.last_timestamp,
            "head": head,
            "summary": summary,
            "batch_id": batch_id,
            "response": response,
            "snapshot": snapshot,
        }
        return response, append

    # ------------------------------------------------------------------ operator
    def void(self, aid: str, reason: str) -> dict[str, Any]:
        """Void an analysis (operator act): a chained audit record and a final verdict that never
        promotes (:meth:`AnalysisEngine.void`), stored in the analysis' tick sequence so that replay
        reproduces it and ``audit verify`` passes. Later ticks are still accepted and recorded; the
        verdict stays final."""
        with self._held(aid):
            try:
                with self.store.locked(aid) as la:
                    eng = self._synced_locked(la)
                    res = eng.void(reason)
                    lines, head = chain_lines(res.lines, la.row.audit_head)
                    summary = {**res.summary(), "n_ticks": eng.n_ticks}
                    la.append([canonical_json(VoidIn(str(reason).strip()).to_json())],
                              ["\n".join(lines)], last_ts=eng.last_timestamp, head=head, summary=summary)
            except BaseException:
                self._forget(aid)
                raise
        log.warning("analysis %s voided at tick %d: %s", aid, res.tick, reason)
        return {"analysis": aid, "tick": res.tick, "verdict": res.verdict, "final": res.final, "audit_head": head,
                "reason": res.records[-1]["fail_closed"]}

    # ------------------------------------------------------------------ replay
    def replay(self, aid: str) -> dict[str, Any]:
        """Re-run the stored ticks through a fresh engine and compare every chained audit line.

        At most ``max_replays`` run at once (a replay re-evaluates the whole analysis: unbounded, a
        few concurrent ones starved ingest); a request that gets no slot within ``wait_timeout``
        seconds raises :class:`Busy`."""
        if not self._replays.acquire(timeout=self.wait_timeout):
            raise Busy(f"{self.max_replays} replay(s) already running for more than {self.wait_timeout:g} s; retry later", retry_after=5)
        try:
            return self._replay(aid)
        finally:
            self._replays.release()

    def _replay(self, aid: str) -> dict[str, Any]:
        row = self.store.get(aid)
        cfg = self.store.get_config(row.spec["config_version"])
        eng = _engine(cfg, row.spec)
        stored = self.store.audit_lines(aid)
        lines, head = chain_records([_header(eng)], GENESIS)
        ticks = self.store.ticks(aid, 0, row.n_ticks)
        for r in self._evaluate(eng, _decode(eng, ticks)):
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
        eng = self._cached(aid)
        if eng is not None:
            return isinstance(eng, SplitEngine)
        return self.store.get(aid).spec.get("mode") == "split"

    def cached(self) -> dict[str, Engine]:
        with self._guard:
            return dict(self._engines)
