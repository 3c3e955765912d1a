"""Findings of the review of the merged service manager (store binding + inputs + tenancy): retention
survives an analysis cut back to tick 0; a poller of a deleted analysis is refused on a retried batch id
on both ingest paths; an analysis whose lock is held is never evicted from the engine cache."""

from __future__ import annotations

import threading

import pytest

from deploysignal.service import AnalysisManager
from deploysignal.service._retention import retain_once
from deploysignal.store import NotFound, expired, open_store

from .conftest import _sim, ticks_of

C0, C1 = "2020-01-01T00:00:00.000+00:00", "2020-01-02T00:00:00.000+00:00"


@pytest.fixture(scope="module")
def step():
    sim, cfg = _sim("step", 1)
    return ticks_of(sim.canary), cfg


def test_retention_survives_a_cut_back_to_tick_zero(tmp_path, step):
    t, cfg = step
    m = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'ds.db'}"))
    m.create("decided", cfg.to_json(), cfg.version_id, {"window": 480}, {}, C0)
    assert m.ingest("decided", t[:400])["final"] is True
    m.create("cut0", cfg.to_json(), cfg.version_id, {"window": 480}, {}, C0)
    m.ingest("cut0", t[:3])
    m.cut("cut0", 0, "bad data")  # no tick left: the stored summary is JSON null
    assert expired(m.store, "2099-01-01T00:00:00", 4e9) == ["decided"]  # raised AttributeError before
    retain_once(m, 1, 4e9)
    assert [r.id for r in m.store.list()] == ["cut0"]


def test_a_deleted_analysis_poller_is_refused_on_a_retried_batch_id(tmp_path):
    sim, cfg = _sim("healthy", 2)
    t = ticks_of(sim.canary)
    m1 = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'ds.db'}"))
    m2 = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'ds.db'}"))
    m1.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {}, C0)
    m1.ingest("a", t[:3], batch_id="prom-0", expect_created=C0)
    m2.delete("a", reason="x", deleted="d", undecided=True)
    m2.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {}, C1)
    m2.ingest("a", t[:3], batch_id="prom-0", expect_created=C1)  # the new analysis' poller, same grid time
    with pytest.raises(NotFound):  # the outside path answered duplicate: True with the new analysis' ack
        m1.ingest("a", t[:3], batch_id="prom-0", expect_created=C0)
    with pytest.raises(NotFound):
        m1._ingest_locked("a", t[:3], "prom-0", C0)


def test_an_analysis_whose_lock_is_held_is_not_evicted(tmp_path, step):
    t, cfg = step
    m = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'ds.db'}"), cache_size=1)
    for aid in ("a", "b"):
        m.create(aid, cfg.to_json(), cfg.version_id, {"window": 480}, {}, C0)
    m.ingest("a", t[:2])
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with m._held("a"):
            entered.set()
            release.wait(10)

    th = threading.Thread(target=hold)
    th.start()
    try:
        assert entered.wait(10)
        m.ingest("b", t[:2])  # keeps b: the LRU candidate a is held, so it stays (KeyError on its head before)
        assert set(m.cached()) == {"a", "b"}
    finally:
        release.set()
        th.join()
    m.ingest("b", t[2:3])  # nothing held: back to cache_size
    assert set(m.cached()) == {"b"}
    assert m.ingest("a", t[2:4])["n_ticks"] == 4
