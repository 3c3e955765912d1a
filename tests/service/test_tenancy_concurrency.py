"""Issue 23 item 5: evaluation outside the store's write lock, bounded replays, LRU engine eviction."""

from __future__ import annotations

import threading

import pytest

from deploysignal.service import AnalysisEngine, AnalysisManager
from deploysignal.service._admission import Busy
from deploysignal.store import open_store

from .conftest import W, make_client, ticks_of


def test_big_batch_of_one_analysis_does_not_block_another_analysis_ingest(store_url, step_sim, monkeypatch):
    """A's batch is held inside its evaluation; B's single tick must be acknowledged meanwhile. On
    0.4.0 (evaluation inside ``BEGIN IMMEDIATE``, a file-wide lock on SQLite) B waits for A's commit
    and this test fails (B not done within 10 s)."""
    sim, cfg = step_sim
    m = AnalysisManager(open_store(store_url))
    for aid in ("A", "B"):
        m.create(aid, cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    eng_a = m.engine("A")
    inside, release = threading.Event(), threading.Event()
    real = AnalysisEngine.ingest

    def ingest(self, ticks):
        if self is eng_a and len(ticks) > 1:
            inside.set()
            assert release.wait(30), "test did not release A"
        return real(self, ticks)

    monkeypatch.setattr(AnalysisEngine, "ingest", ingest)
    out: dict[str, object] = {}
    ta = threading.Thread(target=lambda: out.update(A=m.ingest("A", ticks_of(sim.canary, 0, 300))))
    ta.start()
    try:
        assert inside.wait(30)
        tb = threading.Thread(target=lambda: out.update(B=m.ingest("B", ticks_of(sim.canary, 0, 1))))
        tb.start()
        tb.join(10)
        b_done_while_a_evaluates = not tb.is_alive() and "B" in out
    finally:
        release.set()
        ta.join(60)
    assert b_done_while_a_evaluates, "B's ingest waited for A's evaluation"
    assert out["A"]["n_ticks"] == 300 and out["B"]["n_ticks"] == 1
    assert m.replay("A")["ok"] and m.replay("B")["ok"]
    m.store.close()


def test_stale_evaluation_is_redone_on_the_new_state(store_url, step_sim):
    """Two managers (as two processes): when another process appends while a batch is evaluated, the
    write transaction sees the moved tick count, the evaluation is discarded and redone on the new
    state; the chain stays one history."""
    sim, cfg = step_sim
    m1, m2 = AnalysisManager(open_store(store_url)), AnalysisManager(open_store(store_url))
    m1.create("s", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    ticks = ticks_of(sim.canary, 0, 40)
    m1.ingest("s", ticks[:20])
    real, calls = m1._prepare, []

    def prepare(*a, **k):
        out = real(*a, **k)
        if not calls:
            m2.ingest("s", ticks[20:30])  # another process appends while m1 evaluates ticks 30-39 on 20 ticks
        calls.append(out[0]["first_tick"])
        return out

    m1._prepare = prepare
    r = m1.ingest("s", ticks[30:40])
    assert calls == [20, 30] and r["first_tick"] == 30 and r["n_ticks"] == 40
    assert m1.replay("s")["ok"] and m2.store.audit_lines("s") == m1.store.audit_lines("s")
    assert m2.engine("s").n_ticks == 40
    m1.store.close()
    m2.store.close()


def test_eviction_rebuilds_identical_verdicts(tmp_path, step_sim):
    """A one-engine cache with 7-tick evaluation chunks gives byte-identical audit chains and the
    same verdicts as an unbounded cache evaluating whole batches."""
    sim, cfg = step_sim
    small = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'small.db'}"), cache_size=1, eval_chunk=7, snapshot_every=16)
    big = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'big.db'}"), cache_size=100, eval_chunk=10_000, snapshot_every=16)
    ids = ("e1", "e2", "e3")
    for m in (small, big):
        for aid in ids:
            m.create(aid, cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    ticks = ticks_of(sim.canary)
    for k in range(0, 400, 25):
        for aid in ids:  # round robin: every batch of the one-engine cache rebuilds from snapshot + ticks
            acks = [m.ingest(aid, ticks[k : k + 25], f"b{k}") for m in (small, big)]
            assert acks[0] == acks[1]
    assert small.evicted > 0 and len(small.cached()) == 1 and big.evicted == 0
    for aid in ids:
        assert small.store.audit_lines(aid) == big.store.audit_lines(aid)
        a, b = small.engine(aid), big.engine(aid)
        assert (a.n_ticks, a.last.verdict, a.last.final, a.last.records) == (b.n_ticks, b.last.verdict, b.last.final, b.last.records)
        assert small.replay(aid)["ok"]
    assert any(small.engine(a).last.verdict == "rollback" for a in ids)  # the step scenario's effect is found through evictions
    small.store.close()
    big.store.close()


def test_replays_are_bounded(tmp_path, step_sim, monkeypatch):
    """With max_replays=1 a second concurrent replay waits, then gets Busy (HTTP 503 + Retry-After)."""
    sim, cfg = step_sim
    c = make_client(tmp_path, max_replays=1, wait_timeout=0.5)
    with c:
        m = c.app.state.manager
        c.post("/v1/analyses", json={"id": "r", "config": cfg.model_dump(mode="json")}, headers=W)
        assert c.post("/v1/analyses/r/ticks", json={"ticks": ticks_of(sim.canary, 0, 20)}, headers=W).status_code == 200
        inside, release = threading.Event(), threading.Event()
        real = m._replay

        def slow(aid):
            inside.set()
            release.wait(30)
            return real(aid)

        monkeypatch.setattr(m, "_replay", slow)
        th = threading.Thread(target=lambda: m.replay("r"))
        th.start()
        try:
            assert inside.wait(30)
            with pytest.raises(Busy):
                m.replay("r")
            r = c.post("/v1/analyses/r/replay", headers=W)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "replay" in r.json()["detail"]
            # ingest is not behind the replay
            assert c.post("/v1/analyses/r/ticks", json={"ticks": ticks_of(sim.canary, 20, 21)}, headers=W).status_code == 200
        finally:
            release.set()
            th.join(30)
        assert c.post("/v1/analyses/r/replay", headers=W).json()["ok"]
