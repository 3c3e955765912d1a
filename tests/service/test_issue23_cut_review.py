"""Review of the store binding and the cut-back (review/chain.review.md): one regression test per finding.

Each test failed on 4a8bc50 (the reviewed change) and passes with its fix, except
test_finding1_a_cut_never_takes_back_a_refused_promotion, a guard of the single-stream case that passed there too. Small runs (at most 60 ticks
of the step scenario, 30 split ticks), a few CPU-seconds each; SQLite, and PostgreSQL for the batch keys.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deploysignal.cli import app as cli
from deploysignal.service._manager import AnalysisManager
from deploysignal.store import Conflict, open_store

from ._split import METRICS, split_ticks
from .conftest import R, W, make_client, ticks_of

runner = CliRunner()


def _create(c, cfg, aid: str = "a") -> None:
    assert c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": 480}, headers=W).status_code == 201


def _send(c, ticks, batch_id=None, aid: str = "a"):
    body = {"ticks": ticks} if batch_id is None else {"ticks": ticks, "batch_id": batch_id}
    return c.post(f"/v1/analyses/{aid}/ticks", json=body, headers=W)


def _cut(c, to_tick: int, reason: str = "bad batch", aid: str = "a"):
    return c.post(f"/v1/analyses/{aid}/cut", json={"to_tick": to_tick, "reason": reason}, headers=W)


def test_finding1_split_void_survives_a_later_tick_and_a_cut(tmp_path):
    """Split mode: void, one more tick, then a cut. The reviewed code looked for the void in the last
    gate record's ``fail_closed`` (only the void's own record has it), so the cut passed, took the void
    back and the analysis ended ``proceed, final``. Now the void is read from the stored sequence."""
    window = 30
    ticks = split_ticks(1, window)
    with make_client(tmp_path) as c:
        body = {"id": "s", "mode": "split", "metrics": METRICS, "window": window, "max_extensions": 0, "canary_share": 0.5}
        assert c.post("/v1/analyses", json=body, headers=W).status_code == 201
        assert _send(c, ticks[:10], aid="s").status_code == 200
        assert c.post("/v1/analyses/s/void", json={"reason": "bad canary, do not promote"}, headers=W).status_code == 200
        assert _cut(c, 5, aid="s").status_code == 409
        assert _send(c, ticks[10:11], aid="s").status_code == 200
        r = _cut(c, 5, aid="s")
        assert r.status_code == 409 and "voided" in r.text, r.text
        assert _send(c, ticks[11:], aid="s").status_code == 200
        v = c.get("/v1/analyses/s", headers=R).json()
        assert v["verdict"] != "proceed" and v["split"]["voided"] == "bad canary, do not promote"


def test_finding1_a_cut_never_takes_back_a_refused_promotion(tmp_path, step_sim):
    """Manager level, single stream: a void followed by more ticks still refuses a cut (now read from the
    stored void entry; the reviewed code got this case right from the last record, so this is a guard
    against the new code losing it)."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 30)
    st = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        m = AnalysisManager(st, snapshot_every=16)
        m.create("v", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        m.ingest("v", ticks[:10])
        m.void("v", "do not promote")
        m.ingest("v", ticks[10:20])
        with pytest.raises(Conflict, match="voided"):
            m.cut("v", 5, "x")
    finally:
        st.close()


def test_finding2_batch_ids_after_a_cut(tmp_path, step_sim):
    """A batch id whose ticks a cut superseded is no longer answered with its pre-cut acknowledgement:
    re-sent, its ticks are ingested again; a batch id straddling a cut (ticks kept and superseded)
    answers 409 naming the cut. The reviewed code answered both with the pre-cut ack (``duplicate``)
    and dropped the ticks."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    with make_client(tmp_path, snapshot_every=16, max_clock_skew=None) as c:
        _create(c, cfg)
        for i in range(0, 60, 10):
            assert _send(c, ticks[i:i + 10], f"b{i}").status_code == 200
        assert _cut(c, 20).status_code == 200  # supersedes stored ticks 20-59; the cut is entry 60
        r = _send(c, ticks[20:30], "b20")
        assert r.status_code == 200 and r.json()["duplicate"] is False and r.json()["accepted"] == 10, r.text
        assert r.json()["n_ticks"] == 71 and r.json()["first_tick"] == 61
        assert c.get("/v1/analyses/a", headers=R).json()["gate"]["tick"] == 29
        r = _send(c, ticks[30:40], "b30")
        assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
        assert _send(c, ticks[20:30], "b20").json()["duplicate"] is True  # no cut since: still the same ack
        assert _cut(c, 25, "second bad batch").status_code == 200  # b20 (stored 61-70) now straddles the cut
        r = _send(c, ticks[20:30], "b20")
        assert r.status_code == 409 and "cut" in r.text and "new batch id" in r.text, r.text
        r = _send(c, ticks[30:40], "b30")  # wholly superseded: ingested again, after the kept ticks 0-24
        assert r.status_code in (200, 422) and r.json().get("duplicate") is not True, r.text
        assert c.post("/v1/analyses/a/replay", headers=R).json()["ok"] is True


def test_finding4_events_after_a_cut_are_in_stored_order_once(tmp_path, step_sim):
    """SSE after a cut: event ids are stored sequence numbers, each sent once, the cut itself is an
    event; a resume from Last-Event-ID does not re-send superseded decisions. The reviewed code looped
    (ids 39..49 again and again) and re-served superseded decisions after Last-Event-ID 49."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    with make_client(tmp_path, max_clock_skew=None) as c:
        _create(c, cfg)
        _send(c, ticks[:40])
        assert _cut(c, 30).status_code == 200
        _send(c, ticks[30:50])
        r = c.get("/v1/analyses/a/events?max_events=200&timeout=1", headers=R)
        ids = [int(ln[4:]) for ln in r.text.splitlines() if ln.startswith("id: ")]
        kinds = [ln[7:] for ln in r.text.splitlines() if ln.startswith("event: ")]
        assert ids == list(range(61)), ids
        assert kinds.count("cut") == 1 and kinds[40] == "cut"
        r = c.get("/v1/analyses/a/events?max_events=100&timeout=1", headers={**R, "Last-Event-ID": "49"})
        assert [int(ln[4:]) for ln in r.text.splitlines() if ln.startswith("id: ")] == list(range(50, 61))


def test_finding5_listing_after_a_cut(tmp_path, step_sim):
    """After a cut the last audit row is ``input, cut, checkpoint``: the listing serves the summary (the
    reviewed code served null with an integrity error, and a pull-mode analysis was then marked refused
    and never polled again after a restart). An edited ``fired_families`` is not served (note 5)."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 40)
    with make_client(tmp_path, max_clock_skew=None) as c:
        _create(c, cfg)
        _send(c, ticks)
        assert _cut(c, 30).status_code == 200
        row = c.get("/v1/analyses", headers=R).json()
        row = next(x for x in (row["analyses"] if isinstance(row, dict) else row) if x["id"] == "a")
        assert row["summary"] is not None and row["summary"]["verdict"] == "pending" and not row.get("integrity_error"), row
        assert _cut(c, 0, "everything").status_code == 200  # nothing kept: no summary, and that matches the chain
        row = c.get("/v1/analyses", headers=R).json()
        row = next(x for x in (row["analyses"] if isinstance(row, dict) else row) if x["id"] == "a")
        assert row["summary"] is None and not row.get("integrity_error"), row
        _send(c, ticks[:5])
    st = open_store(f"sqlite:///{tmp_path / 'ds.db'}")
    try:
        s = st.get("a").summary
        with st._tx(st.conn, write=True):
            st._q(st.conn, "UPDATE analyses SET summary=? WHERE id='a'", (json.dumps({**s, "fired_families": ["A"]}),))
        assert AnalysisManager(st).listed_summary(st.get("a"))[0] is None
    finally:
        st.close()


def test_finding6_verify_names_the_tables_not_bound(tmp_path, step_sim):
    """``audit verify --store --json`` names the tables the chain does not cover (the reviewed code's
    report, and docs, suggested every row of the analysis was covered)."""
    sim, cfg = step_sim
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    with make_client(tmp_path) as c:
        _create(c, cfg)
        _send(c, ticks_of(sim.canary, 0, 5))
    r = runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "a", "--json"])
    assert r.exit_code == 0, r.output
    not_bound = " ".join(json.loads(r.output)["store"]["not_bound"])
    for table in ("analysis_revisions", "executions", "batches", "analysis_templates"):
        assert table in not_bound


def test_finding7_cut_cost_is_stated_and_cuts_are_capped(tmp_path, step_sim):
    """The cut's answer states the cost as (1 + cuts) x alpha and that a cut can yield a promotion the
    evidence would not give; cuts per analysis are capped (default 3, configurable)."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 20)
    with make_client(tmp_path, max_clock_skew=None) as c:
        _create(c, cfg)
        _send(c, ticks)
        for k in range(3):
            r = _cut(c, 10 - k, f"cut {k}")
            assert r.status_code == 200, r.text
            assert r.json()["cuts"] == k + 1 and "(1 + number of cuts) x alpha" in r.json()["note"]
            assert "promotion" in r.json()["note"]
        r = _cut(c, 2, "one too many")
        assert r.status_code == 409 and "3 cuts" in r.text, r.text
    with make_client(tmp_path, max_clock_skew=None, max_cuts=4) as c:
        assert _cut(c, 2, "allowed by the operator's setting").status_code == 200


def test_note_cut_is_idempotent(tmp_path, step_sim):
    """A retried cut (same to_tick and reason) after new ticks arrived returns the first cut's answer
    (``duplicate``) instead of superseding the fresh ticks."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 40)
    with make_client(tmp_path, max_clock_skew=None) as c:
        _create(c, cfg)
        _send(c, ticks[:30])
        first = _cut(c, 20, "bad source").json()
        _send(c, ticks[20:25])
        r = _cut(c, 20, "bad source")
        assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["tick"] == first["tick"], r.text
        assert c.get("/v1/analyses/a", headers=R).json()["gate"]["tick"] == 24


def test_note_replay_reports_a_non_integer_store_binding(tmp_path, step_sim):
    """A tampered header whose store_binding is not an integer: replay reports a mismatch (the reviewed
    code raised, HTTP 500)."""
    sim, cfg = step_sim
    st = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        m = AnalysisManager(st)
        m.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        m.ingest("a", ticks_of(sim.canary, 0, 3))
        with st._tx(st.conn, write=True):
            st._q(st.conn, "UPDATE audit SET lines=replace(lines, '\"store_binding\":1', '\"store_binding\":\"x\"') WHERE analysis_id='a' AND seq=-1")
        rep = AnalysisManager(st).replay("a")
        assert rep["ok"] is False and "store_binding" in rep["reason"], rep
    finally:
        st.close()


def test_note_max_ticks_counts_ticks_in_effect(tmp_path, step_sim):
    """A pull spec's ``max_ticks`` counts the ticks the analysis stands on: after a cut the poller does
    not stop early (the reviewed code compared it with the stored count, superseded entries included)."""
    from deploysignal.sources._prometheus import PrometheusPuller
    import threading

    sim, cfg = step_sim
    st = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        m = AnalysisManager(st)
        m.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        ack = m.ingest("a", ticks_of(sim.canary, 0, 20))
        assert ack["ticks_in_effect"] == 20
        m.cut("a", 10, "bad source")
        p = PrometheusPuller(m, "a", {"address": "http://127.0.0.1:9", "canary": {cfg.names[0]: "q"}, "max_ticks": 15}, threading.Event())
        assert p._start_k() is not None  # 10 ticks in effect (21 stored entries)
        assert m.ingest("a", ticks_of(sim.canary, 10, 15))["ticks_in_effect"] == 15
        assert p._start_k() is None
    finally:
        st.close()


def test_finding2_batch_keys_are_scoped_by_the_cut_on_both_stores(store_url, step_sim):
    """Store level, SQLite and PostgreSQL: the cut's transaction drops the keys of wholly superseded
    batches and marks the partly superseded ones (LockedAnalysis.supersede_batches)."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 30)
    st = open_store(store_url)
    try:
        m = AnalysisManager(st, snapshot_every=16)
        m.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        for i in range(0, 30, 10):
            m.ingest("a", ticks[i:i + 10], batch_id=f"b{i}")
        m.cut("a", 15, "bad source")
        assert m.ingest("a", ticks[:10], batch_id="b0")["duplicate"] is True  # kept: still its ack
        with pytest.raises(Conflict, match="new batch id"):
            m.ingest("a", ticks[10:20], batch_id="b10")  # ticks 10-14 kept, 15-19 superseded
        ack = m.ingest("a", ticks[20:30], batch_id="b20")  # wholly superseded: ingested again
        assert ack["duplicate"] is False and ack["accepted"] == 10 and ack["ticks_in_effect"] == 25
    finally:
        st.close()


def test_note_cut_of_an_empty_analysis_says_so(tmp_path, step_sim):
    """An analysis with no tick in effect: the cut says there is nothing to cut (was "0 to -1")."""
    sim, cfg = step_sim
    st = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        m = AnalysisManager(st)
        m.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        with pytest.raises(Exception, match="no tick in effect") as ei:
            m.cut("a", 0, "x")
        assert "-1" not in str(ei.value)
    finally:
        st.close()
