"""Row locks: two managers (as two processes would) racing on one analysis never both apply a tick."""

from __future__ import annotations

import threading

import pytest

from deploysignal._exceptions import InputError
from deploysignal.service import AnalysisManager
from deploysignal.store import open_store

from .conftest import ticks_of


def _race(fns):
    barrier = threading.Barrier(len(fns))
    out: list = [None] * len(fns)

    def run(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except InputError as exc:
            out[i] = exc

    th = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(fns)]
    [t.start() for t in th]
    [t.join() for t in th]
    return out


def test_racing_writers(store_url, step_sim):
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    m1, m2 = AnalysisManager(open_store(store_url)), AnalysisManager(open_store(store_url))
    m1.create("r", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    for k in range(0, 60, 6):
        # same ticks without a batch id: exactly one accepts them, the other is told they are not new
        res = _race([lambda k=k: m1.ingest("r", ticks[k : k + 3]), lambda k=k: m2.ingest("r", ticks[k : k + 3])])
        assert sum(isinstance(r, dict) for r in res) == 1
        assert any(isinstance(r, InputError) and "not after the previous accepted tick" in str(r) for r in res)
        # same batch id: one applies, the other returns the stored acknowledgement
        res = _race([lambda k=k: m1.ingest("r", ticks[k + 3 : k + 6], f"b{k}"), lambda k=k: m2.ingest("r", ticks[k + 3 : k + 6], f"b{k}")])
        assert sorted(r["duplicate"] for r in res) == [False, True]
        assert res[0]["n_ticks"] == res[1]["n_ticks"] == k + 6
    assert m1.engine("r").n_ticks == m2.engine("r").n_ticks == 60
    assert m1.replay("r")["ok"] and m2.store.audit_lines("r") == m1.store.audit_lines("r")
    m1.store.close()
    m2.store.close()


def test_store_url_errors(tmp_path):
    from deploysignal._exceptions import ConfigError

    for url in ("mysql://x", f"sqlite:///{tmp_path / 'a.db'}?journal=x", f"sqlite:///{tmp_path / 'a.db'}?synchronous=OFF"):
        with pytest.raises(ConfigError):
            open_store(url)


def test_replay_names_a_library_version_difference(tmp_path, step_sim, monkeypatch):
    sim, cfg = step_sim
    m = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'v.db'}"))
    m.create("v", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    m.ingest("v", ticks_of(sim.canary, 0, 20))
    assert m.replay("v")["ok"]
    import deploysignal
    import deploysignal.audit._records as records
    import deploysignal.service._manager as manager

    monkeypatch.setattr(records, "__version__", "9.9.9")  # the replaying library is another version
    monkeypatch.setattr(manager, "__version__", "9.9.9")
    res = m.replay("v")
    assert not res["ok"] and res["first_mismatch_line"] == 1
    assert f"recorded by deploysignal {deploysignal.__version__} and is replayed by 9.9.9" in res["reason"]
    m.store.close()


def test_sqlite_writers_of_one_process_queue_on_one_lock(tmp_path, step_sim):
    """Threads of one process take turns on a shared lock (not SQLite's sleeping busy handler); a failed
    write releases it; every write of 12 threads x 5 batches lands."""
    sim, cfg = step_sim
    url = f"sqlite:///{tmp_path / 'w.db'}"
    s1, s2 = open_store(url), open_store(url)
    assert s1._writer is s2._writer  # noqa: SLF001 - two stores on one file share the writer lock
    assert open_store(f"sqlite:///{tmp_path / 'other.db'}")._writer is not s1._writer  # noqa: SLF001
    m = AnalysisManager(s1)
    n_threads, per = 12, 5
    for k in range(n_threads):
        m.create(f"a{k}", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    ticks = ticks_of(sim.canary, 0, per * 2)
    bad = [{**ticks[0], "values": {"p99_latency_ms": "x"}}]
    errors: list = []

    def work(k: int) -> None:
        try:
            for i in range(per):
                if i == 2:  # a rejected batch in the middle: its transaction rolls back, the lock is released
                    with pytest.raises(InputError):
                        m.ingest(f"a{k}", bad)
                m.ingest(f"a{k}", ticks[2 * i : 2 * i + 2])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    th = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    [t.start() for t in th]
    [t.join(timeout=300) for t in th]
    assert not any(t.is_alive() for t in th), "a writer is stuck (lock not released?)"
    assert errors == []
    assert [s1.n_ticks(f"a{k}") for k in range(n_threads)] == [per * 2] * n_threads
    assert all(m.replay(f"a{k}")["ok"] for k in range(0, n_threads, 4))
    s1.close()
    s2.close()


def _timed_writes(store, n: int, *, join: float) -> list[tuple[str, float]]:
    """``n`` threads write a config each at once; (outcome or error text, seconds until it came)."""
    import sqlite3
    import time

    t0 = time.monotonic()
    outcomes: list[tuple[str, float]] = []

    def write(i: int) -> None:
        try:
            store.put_config(f"cc-{i:012d}", "{}")
            outcomes.append(("ok", time.monotonic() - t0))
        except sqlite3.OperationalError as exc:
            outcomes.append((str(exc), time.monotonic() - t0))

    th = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    [t.start() for t in th]
    [t.join(join) for t in th]
    return outcomes


def test_sqlite_write_turn_waits_are_bounded_and_do_not_add_up(tmp_path, monkeypatch):
    """While the write turn is held (here by a stuck holder), each waiting thread fails after
    LOCK_TIMEOUT with SQLite's own error, all of them at about the same time, not one after another."""
    from deploysignal.store._sql import SQLiteStore

    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    monkeypatch.setattr(SQLiteStore, "LOCK_TIMEOUT", 0.5)
    holder_has_it, release = threading.Event(), threading.Event()

    def hold():
        with store._tx(store.conn, write=True):  # noqa: SLF001
            holder_has_it.set()
            release.wait(30)

    h = threading.Thread(target=hold)
    h.start()
    assert holder_has_it.wait(30)
    outcomes = _timed_writes(store, 3, join=10)
    release.set()
    h.join(30)
    assert len(outcomes) == 3
    assert all("database is locked" in msg for msg, _ in outcomes), outcomes
    assert min(t for _, t in outcomes) >= 0.4, outcomes  # they did wait for their turn
    assert max(t for _, t in outcomes) < 0.5 * 2.5, outcomes  # together, not 0.5 + 1.0 + 1.5 s
    store.put_config("cc-000000000009", "{}")  # the turn is free again
    store.close()


def test_a_failed_commit_leaves_no_open_transaction(tmp_path):
    """If COMMIT fails, the transaction is rolled back before the write turn is released, so neither
    this thread's next write nor other writers find SQLite's lock still held."""
    import sqlite3

    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    conn = store.conn

    class FailingCommit:
        def __init__(self, c):
            self.c = c

        def __getattr__(self, name):
            return getattr(self.c, name)

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error (simulated)")
            return self.c.execute(sql, *args)

    with pytest.raises(sqlite3.OperationalError, match="simulated"):
        with store._tx(FailingCommit(conn), write=True):  # noqa: SLF001
            conn.execute("INSERT INTO configs (version_id, body) VALUES ('cc-000000000001', '{}')")
    assert not conn.in_transaction
    assert store._writer.acquire(blocking=False)  # noqa: SLF001 - the turn was released
    store._writer.release()  # noqa: SLF001
    store.put_config("cc-000000000002", "{}")  # same thread, same connection: works
    assert store.get_config("cc-000000000002") == "{}" and conn.execute("SELECT count(*) FROM configs WHERE version_id='cc-000000000001'").fetchone()[0] == 0
    store.close()


def test_sqlite_write_waits_share_one_deadline_behind_another_process(tmp_path, monkeypatch):
    """Another process (here: a separate connection) holds SQLite's write lock. The first thread waits
    in SQLite's busy handler, the others for the in-process turn; all fail by about LOCK_TIMEOUT, not
    after one timeout each in turn."""
    import sqlite3

    from deploysignal.store._sql import SQLiteStore

    path = tmp_path / "p.db"
    store = open_store(f"sqlite:///{path}")
    monkeypatch.setattr(SQLiteStore, "LOCK_TIMEOUT", 1.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    outcomes = _timed_writes(store, 3, join=20)
    other.execute("ROLLBACK")
    other.close()
    assert len(outcomes) == 3 and all("database is locked" in m for m, _ in outcomes), outcomes
    assert min(t for _, t in outcomes) >= 0.8 and max(t for _, t in outcomes) < 2.0, outcomes  # not 1, 2, 3 s
    store.put_config("cc-000000000009", "{}")
    store.close()


def test_new_sqlite_files_get_large_pages_and_existing_files_keep_theirs(tmp_path, step_sim):
    """A tick's audit lines (~2.5 KB) would take a 4 KiB page each; new files get 16 KiB pages. A file
    made with SQLite's default keeps its page size and still works (the pragma only acts on a new file)."""
    import sqlite3

    from deploysignal.store import SQLiteStore

    new = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    assert new.conn.execute("PRAGMA page_size").fetchone()[0] == SQLiteStore.PAGE_SIZE == 16384
    assert new.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    new.close()
    c = sqlite3.connect(tmp_path / "old.db")
    c.execute("CREATE TABLE keep (x)")
    c.commit()
    c.close()
    old = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    assert old.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    sim, cfg = step_sim
    m = AnalysisManager(old)
    m.create("o", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    assert m.ingest("o", ticks_of(sim.canary, 0, 20))["n_ticks"] == 20
    assert m.replay("o")["ok"]
    old.close()


def test_ingest_pauses_the_collector_for_the_batch_and_restores_it(tmp_path, step_sim, monkeypatch):
    """The manager pauses the cyclic collector around a whole batch (store writes included) and leaves
    it as it found it after an accepted batch, a rejected one and a failing store."""
    import gc

    from deploysignal.store._sql import LockedAnalysis

    sim, cfg = step_sim
    m = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'gc.db'}"))
    m.create("g", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    seen = []
    real = LockedAnalysis.append

    def append(self, *a, **k):
        seen.append(gc.isenabled())
        return real(self, *a, **k)

    monkeypatch.setattr(LockedAnalysis, "append", append)
    assert gc.isenabled()
    m.ingest("g", ticks_of(sim.canary, 0, 10))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(InputError):
        m.ingest("g", ticks_of(sim.canary, 0, 3))  # not after the accepted ticks
    assert gc.isenabled()

    def broken(self, *a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(LockedAnalysis, "append", broken)
    with pytest.raises(OSError):
        m.ingest("g", ticks_of(sim.canary, 10, 12))
    assert gc.isenabled() and m.store.n_ticks("g") == 10
    monkeypatch.setattr(LockedAnalysis, "append", real)

    # waiting for the write lock (here held by another connection, as another process would) does
    # not keep the collector off
    import sqlite3
    import threading
    import time

    other = sqlite3.connect(tmp_path / "gc.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    done, waiting = threading.Event(), threading.Event()
    real_locked = m.store.locked

    def locked(aid):  # the batch is evaluated (collector paused) before the write turn is waited for
        waiting.set()
        return real_locked(aid)

    monkeypatch.setattr(m.store, "locked", locked)
    th = threading.Thread(target=lambda: (m.ingest("g", ticks_of(sim.canary, 10, 12)), done.set()))
    th.start()
    assert waiting.wait(30)
    samples = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        samples.append(gc.isenabled())
        time.sleep(0.01)
    assert not done.is_set() and all(samples)  # still waiting, collector on throughout
    other.execute("ROLLBACK")
    other.close()
    th.join(30)
    assert done.is_set() and m.store.n_ticks("g") == 12 and gc.isenabled()
    m.store.close()
