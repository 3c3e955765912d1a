"""AnalysisManager: analyses in a durable store, engines cached in memory (LRU), resumed by snapshot + replay.

Concurrency (issue 23, item 5). A batch is evaluated **outside** the store's write transaction: the
analysis' in-process lock keeps its ticks in order, the engine evaluates the batch (in chunks of
``eval_chunk`` ticks, so that no compiled loop holds the interpreter lock for more than about a
millisecond), and only the append (ticks, chained audit lines, summary, snapshot) runs in the short
write transaction, which first checks that the analysis' tick count and audit head are still the
ones the batch was evaluated on. On SQLite, whose write lock covers the whole file, one analysis'
large batch therefore no longer blocks another analysis' ingest for the duration of its evaluation
(nor while its rows are written: a batch larger than ``write_chunk`` ticks is written in chunks as
pending rows, :mod:`deploysignal.store._pending`; docs/performance.md, "noisy neighbour"). When another
process (``--workers``, a second host on PostgreSQL) appended in between, the evaluation is discarded
and redone on the new state; after ``OPTIMISTIC_TRIES`` such conflicts the batch is evaluated inside the write transaction,
as before, so progress is guaranteed. Replays run at most ``max_replays`` at a time.

Readers see only committed state (tenancy review, finding 1). The engine is evaluated in place, under
the analysis' lock, and is committed or forgotten before the lock is released. So a reader of engine
fields holds that lock (:meth:`AnalysisManager.read`), and ``/metrics`` reads the :class:`Committed`
view published after each commit. Evaluating on a copy was measured and not chosen: a deep copy of a
300-tick engine costs about 13 ms, against about 5 ms for a whole single-tick ingest.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import __version__
from .._exceptions import DeploySignalError, InputError
from ..audit import settings_record
from ..audit._binding import STORE_BINDING, checkpoint_line, input_line, record_of
from ..audit._chain import GENESIS, chain_lines, chain_records
from ..calibration import canonical_json
from ..gate._gate import gc_paused
from ..split._spec import with_legacy_label
from ..store import AnalysisRow, Conflict, LockedAnalysis, NotFound, PendingLost, SQLStore, StoredRows, batch_digest, check_batch_digest, delete_analysis, record_batch_digest
from ._admission import Busy
from ._cut import apply_cut, cut_payload, cut_refusal, effective, is_cut
from ._engine import AnalysisEngine, TickIn, VoidIn
from ._chunked import stage_batch
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
        return SplitEngine(cfg, with_legacy_label(spec["settings"]), snap)  # stored before ratio_label: 0.4.0's wording
    # stored specs hold the full settings dump; one without d_max_period was stored before issue 22 (family D ran 2..24),
    # one without drivers_rule before issue 25 (drivers named by rule 1)
    return AnalysisEngine(cfg, {"d_max_period": 24, "drivers_rule": 1, **spec["settings"]}, snap)


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


@dataclass(frozen=True)
class Committed:
    """What ``/metrics`` exports of an analysis, as committed to the store: its stored tick count, the
    last verdict and whether it is final, and the last tick's family records (log-wealth, threshold).
    Published by the manager only after the transaction that stored it committed
    (:meth:`AnalysisManager.committed_views`), so a scrape never sees an evaluation in progress."""

    n_ticks: int
    verdict: str
    final: bool
    records: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, eng: Engine) -> Committed:
        last = eng.last
        if last is None:
            return cls(eng.n_ticks, "pending", False, ())
        return cls(eng.n_ticks, last.verdict, bool(last.final), tuple(last.records))


class _Stale(Exception):
    """Another process appended to the analysis (a batch, a void, a cut) between the read and the write transaction."""


class _Replaced(NotFound):
    """The analysis a caller meant was deleted and its id created again (the other one is kept cached)."""


class AnalysisManager:
    """Everything the HTTP layer does to analyses, on top of one :class:`~deploysignal.store.SQLStore`.

    Engines are cached per analysis and per process, at most ``cache_size`` of them (least recently
    used evicted first; an evicted analysis is rebuilt from its snapshot plus the ticks after it on its
    next use, which reproduces its state exactly). Every use of an engine brings it up to the stored
    tick count first (ticks written by another process are replayed), so several processes sharing one
    PostgreSQL stay consistent. A cached engine is used only for the analysis it was built for (its
    ``created`` stamp): an id another process deleted and created again is another analysis, rebuilt
    from the store. An acknowledged batch has been committed: ticks, chained audit lines
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
    write_chunk : int
        Ticks written per store transaction: a larger batch is written as pending rows in chunks of
        this many and made visible by one last short transaction (:mod:`deploysignal.store._pending`),
        so on SQLite another analysis' write waits for one chunk, not the whole batch.
    """

    #: write attempts with the evaluation outside the write transaction before it is done inside it
    OPTIMISTIC_TRIES = 3


    def __init__(self, store: SQLStore, *, snapshot_every: int = 256, max_clock_skew: float | None = None,
                 clock: Callable[[], float] = time.time, max_cuts: int = 3, cache_size: int = 256, max_replays: int = 1,
                 wait_timeout: float = 30.0, eval_chunk: int = 64, write_chunk: int = 256) -> None:
        self.store = store
        self.snapshot_every = snapshot_every
        #: cut-backs allowed per analysis: each one can add up to alpha to its false-rollback probability
        self.max_cuts = max_cuts
        #: ticks stamped more than this many seconds after ``clock()`` are rejected (None: no check)
        self.max_clock_skew = max_clock_skew
        self.clock = clock
        self.cache_size = cache_size
        self.wait_timeout = wait_timeout
        self.eval_chunk = eval_chunk
        self.write_chunk = write_chunk
        self.max_replays = max_replays
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        #: per analysis cached: what /metrics exports, as last committed (never an evaluation in progress)
        self._views: dict[str, Committed] = {}
        #: analyses whose engine was evicted: /metrics exports them from their stored, chain-checked summary
        self._evicted: set[str] = set()
        #: per cached engine: the chain head it stands at and the analysis' store binding
        self._heads: dict[str, tuple[str, int]] = {}
        #: the ``created`` stamp of the analysis each cached engine was built for
        self._created: dict[str, str] = {}
        #: per analysis loaded by this process: what its integrity check covered
        self.integrity: dict[str, Integrity] = {}
        #: per analysis id: its lock and how many threads hold or wait on it (the entry goes with the last one)
        self._locks: dict[str, list[Any]] = {}
        self._guard = threading.Lock()
        self._replays = threading.BoundedSemaphore(max_replays)
        self.ingested = 0
        #: engines evicted from the cache (a gauge on /metrics)
        self.evicted = 0

    @contextmanager
    def _held(self, aid: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the per-analysis lock of ``aid``, waited for at most ``timeout`` seconds (default
        ``wait_timeout``; else :class:`Busy`). Reference-counted: the entry is dropped when no thread
        holds or waits on it, never while one does (a thread arriving later gets the same lock), so ids
        deleted or only asked about leave nothing behind."""
        with self._guard:
            entry = self._locks.get(aid)
            if entry is None:
                entry = self._locks[aid] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            if not entry[0].acquire(timeout=self.wait_timeout if timeout is None else timeout):
                raise Busy(f"analysis {aid!r} is busy with another request for more than {self.wait_timeout:g} s; retry"
                           " (a batch_id makes an ingest retry idempotent)")
            try:
                yield
            finally:
                entry[0].release()
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0 and self._locks.get(aid) is entry:
                    del self._locks[aid]

    _lock = _held

    def _write_token(self) -> str:
        # random (128 bits): unique across processes and hosts sharing a store (a pid and an address are not)
        return secrets.token_hex(16)

    # ------------------------------------------------------------------ engine cache (LRU)
    def _cached(self, aid: str, created: str | None = None) -> Engine | None:
        """The cached engine of ``aid`` (made most recently used); with ``created``, only if it was built
        for the analysis created at that stamp."""
        with self._guard:
            eng = self._engines.get(aid)
            if created is not None and self._created.get(aid) != created:
                return None
            if eng is not None:
                self._engines.move_to_end(aid)
            return eng

    def _keep(self, aid: str, eng: Engine, head: str, binding: int, created: str | None = None) -> None:
        """Cache ``eng`` as the engine of ``aid`` standing at chain head ``head`` (evicting the least
        recently used) and publish its :class:`Committed` view. Called only with an engine whose state
        is committed (after the write transaction, or loaded from the store)."""
        view = Committed.of(eng)
        with self._guard:
            self._engines[aid] = eng
            self._heads[aid] = (head, binding)
            if created is not None:
                self._created[aid] = created
            self._views[aid] = view
            self._evicted.discard(aid)
            self._engines.move_to_end(aid)
            while len(self._engines) > self.cache_size:
                # never an analysis a thread holds or waits on (its operation reads the head and created
                # stamp kept here); the cache may stay above cache_size until those finish
                old = next((a for a in self._engines if a not in self._locks), None)
                if old is None:
                    break
                del self._engines[old]
                self._heads.pop(old, None)
                self._created.pop(old, None)
                self._views.pop(old, None)
                self._evicted.add(old)
                self.evicted += 1
                log.debug("engine of analysis %s evicted from the cache (%d kept)", old, self.cache_size)

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
        header = _header(engine, STORE_BINDING, spec_digest(spec, created))
        lines, head = chain_records([header], GENESIS)
        self.store.create_analysis(aid, spec, head, "\n".join(lines), created)
        with self._lock(aid):
            self._keep(aid, engine, head, STORE_BINDING, created)  # created: the stamp spec_sha256 binds (with the spec) in the header
            self.integrity[aid] = Integrity(STORE_BINDING, CHECKED_BOUND, not_bound=NOT_BOUND)  # what every load of it checks
        return spec

    # ------------------------------------------------------------------ engines
    def _current(self, aid: str, row: AnalysisRow) -> Engine | None:
        """The cached engine when it stands exactly at the stored row (tick count and chain head)."""
        eng = self._cached(aid, row.created)
        if eng is not None and eng.n_ticks == row.n_ticks and self._heads.get(aid, ("",))[0] == row.audit_head:
            return eng
        return None

    def _checked(self, aid: str, read: Callable[[int], tuple[AnalysisRow, StoredRows]]) -> Engine:
        """The engine of analysis ``aid`` after the integrity check (:mod:`deploysignal.service._integrity`):
        the cached one advanced over ticks another process appended, or one rebuilt from the store.
        ``read(start)`` reads the analysis row and its rows from ``start`` on in one transaction. A
        mismatch is logged and raised (:class:`IntegrityError`); the engine is then forgotten."""
        eng = self._cached(aid)
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
        self._keep(aid, eng, row.audit_head, binding, row.created)  # created: checked against the header's spec_sha256 by load_checked
        return eng

    def _forget(self, aid: str) -> None:
        with self._guard:
            self._engines.pop(aid, None)
            self._heads.pop(aid, None)
            self._created.pop(aid, None)

    def _drop(self, aid: str) -> None:
        """Forget everything this process holds of ``aid`` (it was deleted): engine, head, what
        ``/metrics`` exports of it and its integrity report."""
        self._forget(aid)
        with self._guard:
            self._views.pop(aid, None)
            self._evicted.discard(aid)
        self.integrity.pop(aid, None)

    def _synced_locked(self, la: LockedAnalysis) -> Engine:
        return self._current(la.row.id, la.row) or self._checked(la.row.id, lambda start: (la.row, la.rows(start)))

    def read(self, aid: str, fn: Callable[[Engine], Any]) -> Any:
        """``fn(engine)`` with the analysis' engine brought up to the store and its lock held: what every
        reader of engine fields uses (the verdict body for Argo, Flagger and Kayenta). Ingest evaluates a
        batch on the cached engine, under the same lock, before its write transaction commits (and
        forgets the engine when the commit does not happen): holding the lock, ``fn`` sees only
        committed state. ``fn`` must be quick (it delays that analysis' ingest)."""
        with self._held(aid):
            return fn(self._engine_locked(aid))

    def committed_views(self) -> dict[str, Committed]:
        """The :class:`Committed` view of every cached analysis (no lock on any analysis: a scrape never waits)."""
        with self._guard:
            return dict(self._views)

    def evicted_ids(self) -> list[str]:
        """Analyses whose engine this process evicted (and has not loaded again)."""
        with self._guard:
            return sorted(self._evicted)

    def stored_view(self, row: AnalysisRow) -> Committed | None:
        """The :class:`Committed` view of an analysis from its stored summary, checked against its last
        chained audit row (:func:`~deploysignal.service._integrity.summary_problem`; that row's family
        records give log-wealth and thresholds); None (logged) when they do not match."""
        lines = self.store.audit_lines(row.id, row.n_ticks - 1 if row.n_ticks else -1, 1)
        why = summary_problem(row, lines)
        if why is not None:
            log.error("analysis %s: not exported on /metrics: %s", row.id, why)
            return None
        s = row.summary or {}
        recs = tuple(r for ln in lines if (r := record_of(ln)) is not None and ("log_wealth" in r or "log_evidence" in r))
        return Committed(row.n_ticks, str(s.get("verdict", "pending")), bool(s.get("final", False)), recs)

    def engine(self, aid: str) -> Engine:
        """The analysis' engine, brought up to the stored tick count (read path, no write lock) and
        checked against its chain on every load (:class:`IntegrityError` when it does not match). Its
        fields may change as soon as this returns (the next ingest): readers use :meth:`read`."""
        with self._held(aid):
            return self._engine_locked(aid)

    def _engine_locked(self, aid: str) -> Engine:
        try:
            row = self.store.get(aid)
        except NotFound:  # deleted by another process (or never created): nothing to keep
            self._forget(aid)
            self.integrity.pop(aid, None)
            raise
        return self._current(aid, row) or self._checked(aid, lambda start: self.store.stored_rows(aid, start))

    # ------------------------------------------------------------------ ingest
    def ingest(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None = None, *,
               expect_created: str | None = None) -> dict[str, Any]:
        """Validate, evaluate and durably store a batch; the returned dict is the acknowledgement.

        The evaluation runs outside the store's write transaction (module docstring); ticks of one
        analysis stay in order (its in-process lock, then the tick count and chain head checked in the
        write transaction: any append by another process, a batch, a void or a cut-back, moves the head).
        ``expect_created``: the ``created`` stamp of the analysis the batch is meant for (a Prometheus
        poller's); :class:`~deploysignal.store.NotFound` when the id now names another analysis (that
        one was deleted and the id created again), nothing ingested."""
        if not ticks:
            raise InputError("a batch needs at least one tick", column="ticks")
        with self._held(aid):
            response = None
            for _ in range(self.OPTIMISTIC_TRIES):
                try:
                    response = self._ingest_outside(aid, ticks, batch_id, expect_created)
                    break
                except _Stale:
                    continue
            if response is None:  # other processes kept appending: evaluate holding the write lock
                response = self._ingest_locked(aid, ticks, batch_id, expect_created)
        if not response["duplicate"]:
            self.ingested += response["accepted"]
        return response

    def _ingest_outside(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None, expect_created: str | None = None) -> dict[str, Any]:
        # the engine first, then the batch id: a batch committed by another process before the engine's
        # read is seen by the batch check, one committed after it fails the stale check below
        eng = self._engine_locked(aid)
        n, (head, binding) = eng.n_ticks, self._heads[aid]
        digest = None if batch_id is None else batch_digest(ticks)
        if batch_id is not None and digest is not None and self.store.batch_response(aid, batch_id) is not None:
            # a retry (rare): its content and any cut-back are checked under the lock; a key a cut-back
            # deleted meanwhile (None) moved the head, which the stale check below sees
            with self.store.locked(aid) as la:
                if expect_created is not None and la.row.created != expect_created:
                    raise _Replaced(f"analysis {aid!r} created at {expect_created} was deleted; the id now names the analysis created at {la.row.created}")
                prev = _batch_retry(la, batch_id, digest)
            if prev is not None:
                return prev
        try:
            with gc_paused():
                response, append = self._prepare(aid, n, head, binding, eng, ticks, batch_id)
            # a large batch: all but its last chunk written as pending rows, a chunk per transaction (store/_pending.py)
            staged = stage_batch(self.store, aid, n, head, append, self.write_chunk, self._write_token)
            with self.store.locked(aid) as la:  # waiting for the write turn does not keep the collector off
                if expect_created is not None and la.row.created != expect_created:
                    raise _Replaced(f"analysis {aid!r} created at {expect_created} was deleted; the id now names the analysis created at {la.row.created}")
                # anything another process appended meanwhile (a batch, a void, a cut-back) moved the head
                if la.row.n_ticks != n or la.row.audit_head != head:
                    raise _Stale
                with gc_paused():
                    la.append(**append, staged=staged)
                if batch_id is not None and digest is not None:
                    record_batch_digest(la, batch_id, digest)
        except PendingLost:  # another process appended while the batch's chunks were written: nothing of it is visible
            self._forget(aid)
            raise _Stale from None
        except InputError:
            # raised by validate, before the engine changed; judged on a state another process has since
            # moved (a cut-back can make earlier timestamps valid again), it is judged again
            row = self.store.get(aid)
            if row.n_ticks != n or row.audit_head != head:
                raise _Stale from None
            raise
        except BaseException:
            # stale, or the transaction rolled back: the engine evaluated ticks that are not stored
            self._forget(aid)
            raise
        self._keep(aid, eng, response["audit_head"], binding)
        return response

    def _ingest_locked(self, aid: str, ticks: Sequence[Mapping[str, Any]], batch_id: str | None, expect_created: str | None = None) -> dict[str, Any]:
        try:
            with self.store.locked(aid) as la:
                if expect_created is not None and la.row.created != expect_created:
                    raise _Replaced(f"analysis {aid!r} created at {expect_created} was deleted; the id now names the analysis created at {la.row.created}")
                digest = None if batch_id is None else batch_digest(ticks)
                if batch_id is not None and digest is not None and (prev := _batch_retry(la, batch_id, digest)) is not None:
                    return prev
                eng = self._synced_locked(la)
                binding = self._heads[aid][1]
                with gc_paused():
                    response, append = self._prepare(aid, la.row.n_ticks, la.row.audit_head, binding, eng, ticks, batch_id)
                    la.append(**append)
                if batch_id is not None and digest is not None:
                    record_batch_digest(la, batch_id, digest)
        except (InputError, Conflict, _Replaced):
            raise
        except BaseException:
            # The transaction rolled back: forget the in-memory engine, it is rebuilt from the store.
            self._forget(aid)
            raise
        self._keep(aid, eng, response["audit_head"], binding)
        return response

    def _prepare(self, aid: str, n: int, head: str, binding: int, eng: Engine, ticks: Sequence[Mapping[str, Any]],
                 batch_id: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Evaluate the batch on ``eng`` (standing at ``n`` stored ticks and chain head ``head``): the
        acknowledgement and the arguments of :meth:`LockedAnalysis.append` that store it.

        The callers run it, and the inserts, with the cyclic garbage collector paused (as
        :meth:`Gate.update_many` pauses it; not while waiting for the write turn): the batch's
        decisions, lines and rows are acyclic and freed by reference counting when the caller
        returns, instead of being scanned by the collections their allocation would trigger."""
        skew = None if self.max_clock_skew is None else (self.clock(), self.max_clock_skew)
        valid = eng.validate(ticks, clock_skew=skew)  # InputError here leaves the engine untouched
        n0 = eng.n_ticks
        ood = eng.out_of_domain(valid, n0) if isinstance(eng, AnalysisEngine) else None
        results = self._evaluate(eng, valid)
        payloads = [canonical_json(t.to_json()) if isinstance(eng, SplitEngine) else tick_payload(t) for t in valid]
        snapshot = None
        if n0 // self.snapshot_every != eng.n_ticks // self.snapshot_every:
            snapshot = (eng.n_ticks, _state_text(eng))
        base = AnalysisRow(aid, {}, n, None, head, None, "")
        head, audit = self._chain(base, [(p, r.lines) for p, r in zip(payloads, results)], snapshot, binding)
        last = results[-1]
        summary = {**last.summary(), "n_ticks": eng.n_ticks}
        response = {
            "analysis": aid,
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
                            aid, len(ood), n0, eng.n_ticks - 1, ", ".join(f"{k} x{v}" for k, v in per.items()), ood[0]["tick"], ood[0]["reason"])
        append = {"ticks": payloads, "audit": audit, "last_ts": eng.last_timestamp, "head": head, "summary": summary,
                  "batch_id": batch_id, "response": response, "snapshot": snapshot}
        return response, append

    def _chain(self, row: AnalysisRow, ticks: Sequence[tuple[str, list[str]]], snapshot: tuple[int, str] | None, binding: int | None = None) -> tuple[str, list[str]]:
        """Chain the audit rows of stored ticks ``(payload, record lines)`` appended to ``row``: with the
        analysis' store binding, each row begins with the tick's ``input`` record and the last one ends
        with the ``checkpoint`` record of ``snapshot`` (:mod:`deploysignal.audit._binding`). Returns
        (new head, one text per tick) and notes the head the engine now stands at (unless ``binding``
        is given: then the caller notes it once the rows are committed)."""
        note = binding is None
        head, binding = row.audit_head, (self._heads[row.id][1] if binding is None else binding)
        audit = []
        for k, (payload, lines) in enumerate(ticks, start=row.n_ticks):
            if binding:
                lines = [input_line(k, payload), *lines]
                if snapshot is not None and k == row.n_ticks + len(ticks) - 1:
                    lines.append(checkpoint_line(snapshot[0], snapshot[1]))
            chained, head = chain_lines(lines, head)
            audit.append("\n".join(chained))
        if note:
            self._heads[row.id] = (head, binding)
        return head, audit

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
                    payload = canonical_json(VoidIn(str(reason).strip()).to_json())
                    head, audit = self._chain(la.row, [(payload, res.lines)], None)
                    summary = {**res.summary(), "n_ticks": eng.n_ticks}
                    la.append([payload], audit, last_ts=eng.last_timestamp, head=head, summary=summary)
                self._keep(aid, eng, head, self._heads[aid][1])  # committed: published to /metrics
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
            self._drop(aid)
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
        with self._held(aid):
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
                self._keep(aid, eng, head, self._heads[aid][1])  # committed: cached and published to /metrics
            except BaseException:
                self._forget(aid)
                raise
        log.warning("analysis %s cut back to tick %d (superseded stored ticks %s): %s", aid, to_tick, rec["superseded"], reason)
        return {"analysis": aid, **{k: rec[k] for k in ("tick", "to_tick", "superseded", "verdict", "final", "note")}, "n_ticks": eng.n_ticks,
                "audit_head": head, "reason": reason, "cuts": len(cuts) + 1, "duplicate": False}

    # ------------------------------------------------------------------ replay
    def replay(self, aid: str) -> dict[str, Any]:
        """Re-run the stored ticks through a fresh engine and compare every chained audit line.

        At most ``max_replays`` run at once (a replay re-evaluates the whole analysis: unbounded, a
        few concurrent ones starved ingest); a request that gets no slot within ``wait_timeout``
        seconds raises :class:`Busy`. The service runs replays as background jobs
        (:mod:`deploysignal.service._replay_jobs`), which take the same slots."""
        self.take_replay_slot()
        try:
            return self._replay(aid)
        finally:
            self.release_replay_slot()

    def take_replay_slot(self) -> None:
        """Take one of the ``max_replays`` replay slots, waiting at most ``wait_timeout`` (else :class:`Busy`)."""
        if not self._replays.acquire(timeout=self.wait_timeout):
            raise Busy(f"{self.max_replays} replay(s) already running for more than {self.wait_timeout:g} s; retry later", retry_after=5)

    def release_replay_slot(self) -> None:
        self._replays.release()

    def _replay(self, aid: str) -> dict[str, Any]:
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
                results = self._evaluate(eng, _decode(eng, [json.loads(x) for x in plain]))
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
        eng = self._cached(aid)
        if eng is not None:
            return isinstance(eng, SplitEngine)
        return self.store.get(aid).spec.get("mode") == "split"

    def cached(self) -> dict[str, Engine]:
        with self._guard:
            return dict(self._engines)

    def current_views(self) -> dict[str, Committed]:
        """What ``/metrics`` exports, per analysis, with one read of the store: the committed view of
        every cached analysis that still exists as the one it was built for, and the stored (chain-
        checked) view of every evicted one. Analyses deleted, or deleted and created again, by another
        process are dropped (never exported with the deleted one's verdict)."""
        # the cached views first, then the store: a view kept after its analysis was created, so a
        # cached analysis missing from the listing was deleted (not created after the listing)
        views = self.committed_views()
        with self._guard:
            built_for = dict(self._created)
            evicted = sorted(self._evicted)
        rows = {r.id: r for r in self.store.list()}
        for aid in list(views):
            row = rows.get(aid)
            if row is None or row.created != built_for.get(aid, row.created):
                del views[aid]
                with self._guard:  # forgotten only when no operation on it runs and nothing replaced it meanwhile
                    stale = aid not in self._locks and self._created.get(aid) == built_for.get(aid)
                if stale:
                    self._drop(aid)
        for aid in evicted:
            if aid not in rows:
                with self._guard:
                    self._evicted.discard(aid)
            elif aid not in views and (v := self.stored_view(rows[aid])) is not None:
                views[aid] = v
        return views
