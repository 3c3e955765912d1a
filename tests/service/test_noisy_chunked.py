"""Issue 23, noisy neighbour: a large batch is written in chunks of pending rows (store/_pending.py).

The structural property (not a timing): while analysis A's large batch is being written, analysis B's
single tick is stored and acknowledged between two of A's write transactions, instead of after A's
whole write. On main at 15e20e9 a batch was one transaction: B's acknowledgement came after A's
(``test_b_is_stored_between_a_chunks`` fails there with order ``["A", "B"]``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from deploysignal.service import AnalysisManager
from deploysignal.store import SQLiteStore, open_store

from .conftest import ticks_of


def _managers(store_url, cfg, **kw):
    m = AnalysisManager(open_store(store_url), **kw)
    for aid in ("A", "B"):
        m.create(aid, cfg.to_json(), cfg.version_id, {"window": 100_000}, {}, "t0")
    return m


def test_b_is_stored_between_a_chunks(tmp_path, healthy_sim):
    """A's 480-tick batch (default write_chunk 256: one staged chunk, then the publishing transaction)
    and B's single tick: B's tick is committed while A's batch is still being written. Ordering by
    events, not timing: A's second write transaction does not begin until B's ingest returned (or 60 s
    passed; then the assertion fails). SQLite only: its write lock covers the whole file, so B waited
    for A's whole batch when it was one transaction; on PostgreSQL A's transaction locks only A's row
    and B never waited for it (this test passed there before chunking, so it shows nothing there).
    That the bulk writer is neither passed by later writers nor starved is
    ``test_writer_lock_serves_in_arrival_order``."""
    sim, cfg = healthy_sim
    m = _managers(f"sqlite:///{tmp_path / 'store.db'}", cfg)
    a_ticks, b_ticks = ticks_of(sim.canary, 0, 480), ticks_of(sim.canary, 0, 1)
    store = m.store
    a_writing, b_done = threading.Event(), threading.Event()
    order: list[str] = []
    a_thread: list[int] = []
    inner_tx, inner_many = store._tx, store._many

    def many(conn, sql, rows):
        if threading.get_ident() in a_thread and "INSERT INTO ticks" in sql:
            a_writing.set()  # A is inside a write transaction storing its rows: B may start
        return inner_many(conn, sql, rows)

    def tx(conn, write=False, **kw):
        if write and threading.get_ident() in a_thread and a_writing.is_set():
            b_done.wait(60)  # A's later write transactions wait (outside any transaction) for B's acknowledgement
        return inner_tx(conn, write, **kw)

    store._many, store._tx = many, tx

    def run_a():
        a_thread.append(threading.get_ident())
        m.ingest("A", a_ticks, "a-1")
        order.append("A")

    def run_b():
        a_writing.wait(60)
        m.ingest("B", b_ticks, "b-1")
        order.append("B")
        b_done.set()

    ta, tb = threading.Thread(target=run_a), threading.Thread(target=run_b)
    ta.start()
    tb.start()
    ta.join(180)
    tb.join(180)
    store._many, store._tx = inner_many, inner_tx
    assert order == ["B", "A"]
    assert store.n_ticks("A") == 480 and store.n_ticks("B") == 1
    for aid in ("A", "B"):
        assert m.replay(aid)["ok"] is True
    assert m.ingest("A", a_ticks, "a-1")["duplicate"] is True  # the batch id was recorded by the publishing transaction
    store.close()


def test_an_unfinished_chunked_write_is_never_seen_and_is_discarded(store_url, healthy_sim, tmp_path):
    """A write that fails in its third chunk (two chunks committed as pending rows, as a crash would
    leave them): n_ticks, the audit, verify and replay see nothing of it and the batch is not
    acknowledged; sent again, it is stored whole, with the chain of an unchunked write."""
    sim, cfg = healthy_sim
    m = _managers(store_url, cfg, write_chunk=100)
    ticks = ticks_of(sim.canary, 0, 480)
    m.ingest("A", ticks[:50], "first")
    store = m.store
    inner_many, calls = store._many, []

    def many(conn, sql, rows):
        if "INSERT INTO audit" in sql:
            calls.append(len(rows))
            if len(calls) == 3:  # chunks 1 and 2 of the second batch are committed; the third fails
                raise RuntimeError("simulated crash in the third chunk")
        return inner_many(conn, sql, rows)

    store._many = many
    with pytest.raises(RuntimeError, match="simulated crash"):
        m.ingest("A", ticks[50:], "second")
    store._many = inner_many
    with store._tx(store.conn):
        pending = store._q(store.conn, "SELECT COUNT(*) FROM ticks WHERE analysis_id='A' AND seq>=50").fetchone()[0]
        marker = store._q(store.conn, "SELECT first_seq, written FROM pending_writes WHERE analysis_id='A'").fetchone()
    assert pending == 200 and tuple(marker) == (50, 200)
    assert store.n_ticks("A") == 50
    _, rows = store.stored_rows("A")
    assert len(rows.ticks) == 50 and len(rows.audit) == 51  # header + 50 ticks: pending rows are not read
    assert [s for s, _ in store.audit_rows("A", 40)] == list(range(40, 50))  # GET .../audit serves none of them
    assert store.batch_response("A", "second") is None  # not acknowledged
    fresh = AnalysisManager(open_store(store_url), write_chunk=100)  # a restarted process loads and verifies the committed state
    assert fresh.verify("A").binding == 1 and fresh.replay("A")["ok"] is True
    assert fresh.engine("A").n_ticks == 50
    res = fresh.ingest("A", ticks[50:], "second")  # the retry discards the pending rows and stores the batch whole
    assert res["n_ticks"] == 480 and res["duplicate"] is False
    with store._tx(store.conn):
        assert store._q(store.conn, "SELECT COUNT(*) FROM pending_writes").fetchone()[0] == 0
    assert fresh.replay("A")["ok"] is True and fresh.verify("A").binding == 1
    ref = _managers(f"sqlite:///{tmp_path / 'ref.db'}", cfg, write_chunk=10_000)  # the same batches, each in one transaction
    ref.ingest("A", ticks[:50], "first")
    ref.ingest("A", ticks[50:], "second")
    assert ref.store.audit_lines("A") == fresh.store.audit_lines("A")
    for s in (ref.store, store, fresh.store):
        s.close()


def test_a_chunked_write_overtaken_by_another_writer_is_evaluated_again(store_url, healthy_sim):
    """Another process (a second manager on the store) appends to A between two chunks of A's batch:
    that append discards the staged rows, the chunked write meets PendingLost at its next chunk and
    evaluates the batch again on the new state. Both batches are stored, in order, in one chain."""
    sim, cfg = healthy_sim
    m = _managers(store_url, cfg, write_chunk=100)
    other = AnalysisManager(open_store(store_url))
    ticks = ticks_of(sim.canary, 0, 305)
    store, inner_tx, writes = m.store, m.store._tx, []

    def tx(conn, write=False, **kw):
        if write and kw.get("bulk"):
            writes.append(1)
            if len(writes) == 2:  # between A's first and second chunk, outside any transaction
                assert other.ingest("A", ticks[:5], "other")["n_ticks"] == 5
        return inner_tx(conn, write, **kw)

    store._tx = tx
    res = m.ingest("A", ticks[5:], "mine")
    store._tx = inner_tx
    assert res["first_tick"] == 5 and res["n_ticks"] == 305 and store.n_ticks("A") == 305
    assert len(writes) == 2 + 2  # two chunks of the first attempt (the second refused), two of the second
    with store._tx(store.conn):
        assert store._q(store.conn, "SELECT COUNT(*) FROM pending_writes").fetchone()[0] == 0
    third = AnalysisManager(open_store(store_url))
    assert m.replay("A")["ok"] is True and third.verify("A").binding == 1
    for s in (store, other.store, third.store):
        s.close()


def test_writer_lock_lets_waiting_writers_pass_a_bulk_writer():
    from deploysignal.store._sql import WriterLock

    lock = WriterLock()
    assert lock.acquire(timeout=1)
    got: list[str] = []
    waiting = threading.Event()

    def ordinary():
        waiting.set()
        assert lock.acquire(timeout=30)
        got.append("ordinary")
        lock.release()

    t = threading.Thread(target=ordinary)
    t.start()
    waiting.wait(10)
    while lock._waiting == 0:  # the ordinary writer is queued
        threading.Event().wait(0.001)
    lock.release()
    # a bulk acquirer arriving now yields to the writer that was already waiting
    assert lock.acquire(timeout=30, bulk=True)
    got.append("bulk")
    lock.release()
    t.join(30)
    assert got == ["ordinary", "bulk"]
    # and is not starved by ordinary writers that arrive after it asked: with none waiting it proceeds at once
    assert lock.acquire(timeout=0.5, bulk=True)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def _queued(lock, n: int) -> None:
    for _ in range(10_000):
        if len(lock._cond._waiters) >= n:  # threads waiting on the lock's condition (any implementation of it)
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"{n} acquirers never queued")


def test_writer_lock_serves_in_arrival_order():
    """Review finding 8: a bulk writer that asked before an ordinary writer is served before it, and
    before the releasing thread asking again at once (which, running, won the race on every run of the
    previous lock: after the earlier waiters were served it let the bulk writer race newcomers). A
    waiter that gives up (timeout) leaves the queue without blocking those behind it."""
    from deploysignal.store._sql import WriterLock

    lock = WriterLock()
    assert lock.acquire(timeout=1)
    got: list[str] = []

    def take(name: str, bulk: bool, timeout: float = 30) -> None:
        if lock.acquire(timeout=timeout, bulk=bulk):
            got.append(name)
            lock.release()
        else:
            got.append(name + " gave up")

    threads = [threading.Thread(target=take, args=("bulk", True))]
    threads[0].start()
    _queued(lock, 1)
    threads.append(threading.Thread(target=take, args=("impatient", False, 0.2)))
    threads[1].start()
    _queued(lock, 2)
    threads.append(threading.Thread(target=take, args=("ordinary", False)))
    threads[2].start()
    _queued(lock, 3)
    threads[1].join(30)  # gave up while the lock was held
    lock.release()
    take("releaser again", False)  # arrives last: served last
    for t in threads:
        t.join(30)
    assert got == ["impatient gave up", "bulk", "ordinary", "releaser again"]


def test_sqlite_store_writer_is_a_writer_lock(tmp_path):
    from deploysignal.store._sql import WriterLock

    assert isinstance(SQLiteStore(tmp_path / "x.db")._writer, WriterLock)


def _scripted(stores: dict[str, object], script: list[str]) -> list[tuple]:
    """Let the write transactions of the writers (one store each, one thread each) run in the order of
    ``script`` (a name per transaction, each one committed before the next begins); once the script is
    used up they run freely. Returns the pending state (marker, tick rows past n_ticks 0) seen at the
    start of each scripted transaction."""
    cond, seen = threading.Condition(), []

    def hook(name, store, inner):
        @contextmanager
        def tx(conn, write=False, **kw):
            if not write:
                with inner(conn, write, **kw):
                    yield
                return
            with cond:
                assert cond.wait_for(lambda: not script or script[0] == name, 60), f"{name} waited 60 s for its turn {script}"
                mine = bool(script)
            if mine:
                with inner(store.conn):
                    m = store._q(store.conn, "SELECT token, first_seq, written FROM pending_writes WHERE analysis_id='A'").fetchone()
                    k = store._q(store.conn, "SELECT COUNT(*) FROM ticks WHERE analysis_id='A'").fetchone()[0]
                seen.append((name, None if m is None else tuple(m), int(k)))
            try:
                with inner(conn, write, **kw):
                    yield
            finally:
                if mine:
                    with cond:
                        script.pop(0)
                        cond.notify_all()
        return tx

    for name, store in stores.items():
        store._tx = hook(name, store, store._tx)
    return seen


@pytest.mark.parametrize("script, overtaken", [
    # 1 stages its first chunk, 2 takes the analysis over (discards it, stages its own first chunk), 1
    # tries its second chunk: refused by the marker's token; 2 goes on and publishes; 1 evaluates again
    (["1", "2", "1", "2", "2"], 2),
    # both stage both chunks (2 discarding 1's), 1 tries to publish: refused by the token alone (same
    # first_seq, same written); 2 publishes; 1 evaluates again
    (["1", "1", "2", "2", "1", "2"], 4),
])
def test_two_chunked_writers_on_one_analysis(store_url, healthy_sim, tmp_path, script, overtaken):
    """Review finding 5: two processes (a manager and a store each) write a 240-tick batch (two staged
    chunks of 100 and a publishing transaction) into one analysis, interleaved. The overtaken writer
    writes nothing into the other's staged rows (the pending state after its refused transaction is
    the other's marker and rows, untouched) and its batch is then evaluated again: both batches are
    stored, 2's then 1's, with the chain of a single writer. Removing the per-chunk token check in
    ``stage_rows`` fails the first case (1 writes into 2's marker), removing the publish check in
    ``settle_pending`` fails the second (1 publishes 2's staged rows under its own chain)."""
    sim, cfg = healthy_sim
    ticks = ticks_of(sim.canary, 0, 480)
    m1 = _managers(store_url, cfg, write_chunk=100)
    m2 = AnalysisManager(open_store(store_url), write_chunk=100)
    for name, m in (("1", m1), ("2", m2)):
        names = iter(range(100))
        m._write_token = lambda name=name, names=names: f"w{name}-{next(names)}"
    seen = _scripted({"1": m1.store, "2": m2.store}, list(script))
    got: dict[str, object] = {}

    def run(name, m, batch):
        try:
            got[name] = m.ingest("A", batch, "b" + name)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            got[name] = exc

    threads = [threading.Thread(target=run, args=("1", m1, ticks[240:])), threading.Thread(target=run, args=("2", m2, ticks[:240]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert all(isinstance(r, dict) for r in got.values()), got
    assert got["2"]["first_tick"] == 0 and got["2"]["n_ticks"] == 240, got
    assert got["1"]["first_tick"] == 240 and got["1"]["n_ticks"] == 480, got
    # the pending state when 2 went on after 1's refused transaction: 2's marker and its staged rows only
    staged = 100 * script[:overtaken].count("2")
    assert seen[overtaken + 1] == ("2", ("w2-0", 0, staged), staged), seen
    fresh = AnalysisManager(open_store(store_url))
    assert fresh.verify("A").binding == 1 and fresh.replay("A")["ok"] is True
    ref = _managers(f"sqlite:///{tmp_path / 'ref.db'}", cfg, write_chunk=100)
    ref.ingest("A", ticks[:240], "b2")
    ref.ingest("A", ticks[240:], "b1")
    assert ref.store.audit_lines("A") == fresh.store.audit_lines("A")
    for s in (m1.store, m2.store, fresh.store, ref.store):
        s.close()
