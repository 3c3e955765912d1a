"""Issue 23, item 2: what the service restores and serves is bound to the hash chain.

One analysis of the step scenario (60 ticks in batches of 10, a snapshot every 16 ticks: checkpoints at
ticks 20, 40 and 50, ten ticks after the last one), then ONE row of the store edited, nulled or deleted
with direct SQL, as the issue's attacker does. Each edit must be reported by ``audit verify --store``
(exit 1) and refused when a fresh process loads the analysis (:class:`IntegrityError`, HTTP 409), on
SQLite and PostgreSQL. Cost: about 45 s on SQLite (33 edits), as much again on PostgreSQL.
"""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from deploysignal.cli import app as cli
from deploysignal.service._manager import AnalysisManager
from deploysignal.store import open_store

from .conftest import R, W, make_client, ticks_of

runner = CliRunner()
N, SNAP, OLD = 60, 16, 30
#: per store url: the analyses row (n_ticks, audit_head, last_ts, summary) and the snapshot row (tick, state) as they were at OLD ticks
_OLD: dict[str, tuple[tuple, tuple]] = {}


def _build(url: str, cfg, ticks, aid: str = "a") -> None:
    st = open_store(url)
    try:
        m = AnalysisManager(st, snapshot_every=SNAP)
        m.create(aid, cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        for i in range(0, N, 10):
            m.ingest(aid, ticks[i:i + 10])
            if i + 10 == OLD:
                with st._tx(st.conn):
                    _OLD[url] = (tuple(st._q(st.conn, "SELECT n_ticks, audit_head, last_ts, summary FROM analyses WHERE id=?", (aid,)).fetchone()),
                                 tuple(st._q(st.conn, "SELECT tick, state FROM snapshots WHERE analysis_id=?", (aid,)).fetchone()))
    finally:
        st.close()


def _old_row(url: str) -> None:
    """Review finding 1 (noisy change): the analyses row restored as it was at OLD ticks (an old backup
    of that one row) after ticks OLD to N - 1 were ingested; those rows then sit past n_ticks."""
    _sql(url, "UPDATE analyses SET n_ticks=?, audit_head=?, last_ts=?, summary=? WHERE id='a'", _OLD[url][0])


def _old_row_and_snapshot(url: str) -> None:
    """The same with the snapshot row restored too (so the snapshot is not newer than n_ticks): only the
    rows past n_ticks tell that the analysis had moved on."""
    _old_row(url)
    _sql(url, "UPDATE snapshots SET tick=?, state=? WHERE analysis_id='a'", _OLD[url][1])


def _sql(url: str, sql: str, args: tuple = ()) -> None:
    st = open_store(url)
    try:
        with st._tx(st.conn, write=True):
            st._q(st.conn, sql, args)
    finally:
        st.close()


def _one(url: str, sql: str, args: tuple = ()) -> str:
    st = open_store(url)
    try:
        with st._tx(st.conn):
            return st._q(st.conn, sql, args).fetchone()[0]
    finally:
        st.close()


def _edit_json(url: str, table: str, col: str, where: str, args: tuple, fn) -> None:
    """Read one JSON cell, change it with ``fn`` and write it back (the row's other columns untouched)."""
    obj = json.loads(_one(url, f"SELECT {col} FROM {table} WHERE {where}", args))
    fn(obj)
    _sql(url, f"UPDATE {table} SET {col}=? WHERE {where}", (json.dumps(obj), *args))


def _proceed(state: dict) -> None:
    state["last"].update(verdict="proceed", final=True, fired_families=[])


def _tick_value(d: dict) -> None:
    k = sorted(d["values"])[0]
    d["values"][k] = (d["values"][k] or 0.0) + 1.0


def _tick_nulled(d: dict) -> None:
    d["values"] = {k: None for k in d["values"]}


EDITS = {
    # audit rows (the chain itself)
    "audit record changed": lambda u: _sql(u, "UPDATE audit SET lines=replace(lines, '\"tick\":10', '\"tick\":11') WHERE analysis_id='a' AND seq=10"),
    "audit row deleted": lambda u: _sql(u, "DELETE FROM audit WHERE analysis_id='a' AND seq=10"),
    "last audit row deleted": lambda u: _sql(u, "DELETE FROM audit WHERE analysis_id='a' AND seq=?", (N - 1,)),
    "audit row emptied": lambda u: _sql(u, "UPDATE audit SET lines='' WHERE analysis_id='a' AND seq=55"),
    "header record changed": lambda u: _sql(u, "UPDATE audit SET lines=replace(lines, '\"window\":480', '\"window\":48') WHERE analysis_id='a' AND seq=-1"),
    # the snapshot
    "snapshot verdict set to proceed": lambda u: _edit_json(u, "snapshots", "state", "analysis_id=?", ("a",), _proceed),
    "snapshot state nulled": lambda u: _sql(u, "UPDATE snapshots SET state='null' WHERE analysis_id='a'"),
    "snapshot deleted": lambda u: _sql(u, "DELETE FROM snapshots WHERE analysis_id='a'"),
    "snapshot tick moved": lambda u: _sql(u, "UPDATE snapshots SET tick=40 WHERE analysis_id='a'"),
    # the analyses row
    "summary set to proceed": lambda u: _edit_json(u, "analyses", "summary", "id=?", ("a",), lambda s: s.update(verdict="proceed", final=True)),
    "summary nulled": lambda u: _sql(u, "UPDATE analyses SET summary=NULL WHERE id='a'"),
    "summary not JSON": lambda u: _sql(u, "UPDATE analyses SET summary='{' WHERE id='a'"),
    "n_ticks lowered": lambda u: _sql(u, "UPDATE analyses SET n_ticks=? WHERE id='a'", (N - 5,)),
    "n_ticks raised": lambda u: _sql(u, "UPDATE analyses SET n_ticks=? WHERE id='a'", (N + 1,)),
    "audit_head replaced": lambda u: _sql(u, "UPDATE analyses SET audit_head=? WHERE id='a'", ("0" * 64,)),
    "last_ts changed": lambda u: _sql(u, "UPDATE analyses SET last_ts=last_ts+1 WHERE id='a'"),
    "last_ts nulled": lambda u: _sql(u, "UPDATE analyses SET last_ts=NULL WHERE id='a'"),
    "spec window changed": lambda u: _edit_json(u, "analyses", "spec", "id=?", ("a",), lambda s: s["settings"].update(window=48)),
    # review finding 3: the whole spec (its prometheus source) and created are bound, not only the settings
    "spec prometheus pointed elsewhere": lambda u: _edit_json(u, "analyses", "spec", "id=?", ("a",), lambda s: s.update(prometheus={"url": "http://evil:9090"})),
    "spec key added": lambda u: _edit_json(u, "analyses", "spec", "id=?", ("a",), lambda s: s.update(extra=1)),
    "created changed": lambda u: _sql(u, "UPDATE analyses SET created='1999' WHERE id='a'"),
    # tick rows, after and before the snapshot
    "tick after snapshot changed": lambda u: _edit_json(u, "ticks", "payload", "analysis_id=? AND seq=?", ("a", 55), _tick_value),
    "tick after snapshot nulled": lambda u: _edit_json(u, "ticks", "payload", "analysis_id=? AND seq=?", ("a", 55), _tick_nulled),
    "tick after snapshot deleted": lambda u: _sql(u, "DELETE FROM ticks WHERE analysis_id='a' AND seq=55"),
    "last tick deleted": lambda u: _sql(u, "DELETE FROM ticks WHERE analysis_id='a' AND seq=?", (N - 1,)),
    "tick before snapshot changed": lambda u: _edit_json(u, "ticks", "payload", "analysis_id=? AND seq=?", ("a", 5), _tick_value),
    "tick before snapshot nulled": lambda u: _edit_json(u, "ticks", "payload", "analysis_id=? AND seq=?", ("a", 5), _tick_nulled),
    "tick before snapshot deleted": lambda u: _sql(u, "DELETE FROM ticks WHERE analysis_id='a' AND seq=5"),
    "tick payload set to JSON null": lambda u: _sql(u, "UPDATE ticks SET payload='null' WHERE analysis_id='a' AND seq=57"),
    "config deleted": lambda u: _sql(u, "DELETE FROM configs"),
    # rows past n_ticks without a pending-write marker covering exactly them (review of the noisy change, finding 1).
    # The row alone was refused before the fix too (the snapshot of tick 50 is newer than n_ticks 30); with
    # the snapshot row restored too (the reviewer's case: no snapshot after tick 30) and the added tick row,
    # audit verify exited 0 and the load served the analysis.
    "old analyses row restored": _old_row,
    "old analyses and snapshot rows restored": _old_row_and_snapshot,
    "tick row added past n_ticks": lambda u: _sql(u, "INSERT INTO ticks (analysis_id, seq, payload) SELECT analysis_id, ?, payload FROM ticks"
                                                  " WHERE analysis_id='a' AND seq=?", (N, N - 1)),
}


def _verify(url: str, *extra: str):
    return runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "a", *extra])


def test_every_single_row_edit_is_detected_and_refused(store_url, step_sim, tmp_path):
    """The untouched store verifies (exit 0, everything bound), loads and replays; then, from the same
    untouched store each time, every edit of EDITS makes ``audit verify --store`` exit 1 and a fresh
    manager's load raise :class:`IntegrityError` naming what differs. Before the fix the snapshot,
    summary, tick-row and n_ticks edits all passed both verifies and the service served them."""
    from deploysignal.service._integrity import IntegrityError  # new in 0.5.0: imported here so the other tests run on 0.4.0 code

    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, N)
    _build(store_url, cfg, ticks)
    r = _verify(store_url, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["store"]["ok"] is True and rep["store"]["store_binding"] == 1 and rep["store"]["unchecked"] == []
    st = open_store(store_url)
    try:
        m = AnalysisManager(st, snapshot_every=SNAP)
        assert m.engine("a").n_ticks == N and m.replay("a")["ok"] is True
        good_verdict = m.engine("a").last.verdict
    finally:
        st.close()
    dump = _dump(store_url)
    for name, edit in EDITS.items():
        _restore(store_url, dump)
        edit(store_url)
        r = _verify(store_url)
        assert r.exit_code == 1, f"{name}: audit verify passed\n{r.output}"
        st = open_store(store_url)
        try:
            with pytest.raises(IntegrityError, match="does not match its audit chain") as ei:
                AnalysisManager(st, snapshot_every=SNAP).engine("a")
            assert "analysis 'a' refused" in str(ei.value), name
        finally:
            st.close()
    _restore(store_url, dump)
    st = open_store(store_url)
    try:
        assert AnalysisManager(st).engine("a").last.verdict == good_verdict
    finally:
        st.close()


def test_rows_past_n_ticks_without_their_marker_are_never_discarded(store_url, step_sim):
    """Review finding 1 of the noisy change: after the old analyses and snapshot rows were restored
    (ticks OLD to N - 1 then sit past n_ticks with no pending-write marker), the next ingest is refused
    (409 on the service) and even an append below the integrity check (the store's own) deletes
    nothing: before the fix it answered ``pending`` at OLD + 1 ticks and deleted the rows that held the
    verdict for good."""
    from deploysignal.service._integrity import IntegrityError

    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, N + 1)
    _build(store_url, cfg, ticks)
    _old_row_and_snapshot(store_url)
    count = "SELECT COUNT(*) FROM ticks WHERE analysis_id='a' AND seq>=?"
    st = open_store(store_url)
    try:
        with pytest.raises(IntegrityError, match=f"{N - OLD} tick rows and {N - OLD} audit rows stored past n_ticks = {OLD}"):
            AnalysisManager(st, snapshot_every=SNAP).ingest("a", ticks[OLD:OLD + 1])
        from deploysignal.store import PendingDamage  # new with the fix

        with pytest.raises(PendingDamage, match="no pending-write marker covers them"), st.locked("a") as la:
            la.append([json.dumps(ticks[OLD])], ["x"], last_ts=None, head="0" * 64, summary=None)
        assert st.n_ticks("a") == OLD
    finally:
        st.close()
    assert int(_one(store_url, count, (OLD,))) == N - OLD


_TABLES = {"analyses": "id", "ticks": "analysis_id", "audit": "analysis_id", "snapshots": "analysis_id", "configs": "version_id"}


def _dump(url: str) -> dict[str, list[tuple]]:
    st = open_store(url)
    try:
        with st._tx(st.conn):
            return {t: [tuple(r) for r in st._q(st.conn, f"SELECT * FROM {t}").fetchall()] for t in _TABLES}
    finally:
        st.close()


def _restore(url: str, dump: dict[str, list[tuple]]) -> None:
    st = open_store(url)
    try:
        with st._tx(st.conn, write=True):
            for t, rows in dump.items():
                st._q(st.conn, f"DELETE FROM {t}")
                if rows:
                    st._many(st.conn, f"INSERT INTO {t} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    finally:
        st.close()


def _create_and_feed(c, cfg, ids, parts) -> None:
    for aid in ids:
        assert c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": 480}, headers=W).status_code == 201
        for part in parts:
            assert c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": part}, headers=W).status_code == 200


def test_restarted_service_refuses_a_tampered_snapshot_and_keeps_serving_the_rest(tmp_path, step_sim, caplog):
    """The issue's defect: the snapshot row's verdict set to ``proceed, final`` (the last tick is the
    snapshot's, so nothing after it is replayed). 0.4.0 / main served ``proceed`` after a restart and
    ``audit verify --store`` passed; now GET, Argo and Flagger answer 409 naming the snapshot, the
    untouched analysis answers 200, the log says why, and ``audit verify`` exits 1."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 40)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    with make_client(tmp_path, snapshot_every=20) as c:
        _create_and_feed(c, cfg, ("a", "b"), (ticks[:20], ticks[20:]))  # snapshots at ticks 20 and 40 (the last)
        before = c.get("/v1/analyses/a", headers=R).json()
        assert before["verdict"] != "proceed"
    _edit_json(url, "snapshots", "state", "analysis_id=?", ("a",), _proceed)
    caplog.set_level(logging.ERROR)
    with make_client(tmp_path, snapshot_every=20) as c:
        r = c.get("/v1/analyses/a", headers=R)
        assert r.status_code == 409 and "snapshot of tick 40 does not match its chained checkpoint" in r.json()["detail"], r.text
        assert c.get("/v1/argo/analyses/a", headers=R).status_code == 409
        hook = c.post("/v1/flagger/confirm-promotion", json={"name": "x", "namespace": "y", "phase": "Progressing", "metadata": {"analysis": "a"}},
                      headers=W)
        assert hook.status_code == 409 and "refused" in hook.text, hook.text  # promotion held (main: 200 on the forged proceed)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 40, 41)}, headers=W).status_code == 409
        b = c.get("/v1/analyses/b", headers=R)
        assert b.status_code == 200 and b.json()["verdict"] == before["verdict"], b.text
        assert b.json()["integrity"]["store_binding"] == 1 and b.json()["integrity"]["unchecked"] == []
        assert c.get("/v1/analyses", headers=R).status_code == 200
    assert any("refused" in rec.getMessage() and "snapshot" in rec.getMessage() for rec in caplog.records)
    r = runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "a"])
    assert r.exit_code == 1 and "store does not match the chain" in r.output, r.output


def test_issue_nulled_ticks_after_the_snapshot_and_an_edited_summary(tmp_path, step_sim):
    """The issue's other two findings: the ticks after the snapshot nulled (every value null, several
    rows) and the summary column edited. Both passed ``audit verify`` before; the listing served the
    edited summary. Now verify exits 1 for both, the listing serves ``summary: null`` with the reason
    for the edited one, and the analysis is refused on load."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 50)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    with make_client(tmp_path, snapshot_every=20) as c:
        _create_and_feed(c, cfg, ("nul", "sum"), (ticks[:40], ticks[40:]))  # a snapshot at tick 40, ticks 40-49 after it
    for seq in range(40, 50):
        _edit_json(url, "ticks", "payload", "analysis_id=? AND seq=?", ("nul", seq), _tick_nulled)
    _edit_json(url, "analyses", "summary", "id=?", ("sum",), lambda s: s.update(verdict="proceed", final=True))
    for aid in ("nul", "sum"):
        r = runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", aid])
        assert r.exit_code == 1, (aid, r.output)
    with make_client(tmp_path, snapshot_every=20) as c:
        listing = {a["id"]: a for a in c.get("/v1/analyses", headers=R).json()}
        assert listing["sum"]["summary"] is None and "summary" in listing["sum"]["integrity_error"]
        assert listing["nul"]["summary"]["verdict"] != "proceed"
        for aid in ("nul", "sum"):
            assert c.get(f"/v1/analyses/{aid}", headers=R).status_code == 409


def test_store_written_before_the_binding_loads_and_says_what_is_not_checked(tmp_path, step_sim, monkeypatch):
    """An analysis written without the binding records (as 0.4.0 and 0.5.0 before this change wrote
    them: no ``store_binding`` in the header, no input or checkpoint records) loads, replays and
    verifies; ``audit verify`` and the verdict body name what cannot be checked. Its snapshot is not
    committed to, so it is not used: a snapshot edited to ``proceed`` changes nothing served."""
    import deploysignal.service._manager as mgr

    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 40)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    with monkeypatch.context() as mp:
        mp.setattr(mgr, "STORE_BINDING", 0)
        _build_n(url, cfg, ticks)
    lines = _one(url, "SELECT lines FROM audit WHERE analysis_id='a' AND seq=-1")
    assert "store_binding" not in lines and '"family":"input"' not in _one(url, "SELECT lines FROM audit WHERE analysis_id='a' AND seq=3")
    r = runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "a"])
    assert r.exit_code == 0 and "store_binding 0" in r.output and "not checked" in r.output, r.output
    _edit_json(url, "snapshots", "state", "analysis_id=?", ("a",), _proceed)
    with make_client(tmp_path, snapshot_every=SNAP) as c:
        v = c.get("/v1/analyses/a", headers=R).json()
        assert v["verdict"] != "proceed" and v["integrity"]["store_binding"] == 0 and v["integrity"]["unchecked"], v
        assert c.post("/v1/analyses/a/replay", headers=R).json()["ok"] is True
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 40, 45)}, headers=W).status_code == 200
        assert c.post("/v1/analyses/a/replay", headers=R).json()["ok"] is True
    _sql(url, "UPDATE analyses SET summary=NULL WHERE id='a'")
    assert runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "a"]).exit_code == 1


def _build_n(url: str, cfg, ticks) -> None:
    st = open_store(url)
    try:
        m = AnalysisManager(st, snapshot_every=SNAP)
        m.create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        for i in range(0, len(ticks), 10):
            m.ingest("a", ticks[i:i + 10])
    finally:
        st.close()


def test_ticks_written_by_another_process_are_checked_before_they_are_served(tmp_path, step_sim):
    """Two managers on one store (two service processes): the second appends ticks, the first advances
    its cached engine over them; a tick row edited after the second wrote it is refused by the first."""
    from deploysignal.service._integrity import IntegrityError

    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 40)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    _build_n(url, cfg, ticks[:20])
    s1, s2 = open_store(url), open_store(url)
    try:
        m1, m2 = AnalysisManager(s1, snapshot_every=SNAP), AnalysisManager(s2, snapshot_every=SNAP)
        assert m1.engine("a").n_ticks == 20
        m2.ingest("a", ticks[20:30])  # crosses 32? no: 20 -> 30; a checkpoint is written at 40 below
        assert m1.engine("a").n_ticks == 30
        m2.ingest("a", ticks[30:40])  # snapshot + checkpoint at 40, re-derived by m1's advance
        assert m1.engine("a").n_ticks == 40 and m1.engine("a").last.verdict == m2.engine("a").last.verdict
        m2.ingest("a", ticks_of(sim.canary, 40, 45))
        _edit_json(url, "ticks", "payload", "analysis_id=? AND seq=?", ("a", 42), _tick_value)
        with pytest.raises(IntegrityError, match="tick 42"):
            m1.engine("a")
    finally:
        s1.close()
        s2.close()


def test_a_store_written_by_the_previous_code_loads_replays_and_verifies(tmp_path, step_sim):
    """tests/fixtures/store_pre_binding: a real store written by main before this change (see its
    README). ``audit verify --store`` passes and names what it cannot check; the service serves it with
    ``integrity.store_binding`` 0, replays it, accepts more ticks (still without binding records: the
    analysis keeps its format) and refuses a cut-back (409: no checkpoints)."""
    import gzip
    import sqlite3
    from pathlib import Path

    dump = gzip.decompress((Path(__file__).parent.parent / "fixtures" / "store_pre_binding" / "ds.sql.gz").read_bytes()).decode()
    db = tmp_path / "ds.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(dump)
    conn.close()
    url = f"sqlite:///{db}"
    r = runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "old"])
    assert r.exit_code == 0 and "store_binding 0" in r.output and "not checked" in r.output, r.output
    sim, _ = step_sim
    with make_client(tmp_path, snapshot_every=16) as c:
        v = c.get("/v1/analyses/old", headers=R).json()
        assert v["n_ticks"] == 40 and v["integrity"]["store_binding"] == 0 and v["integrity"]["unchecked"], v
        assert c.post("/v1/analyses/old/replay", headers=R).json()["ok"] is True
        assert c.post("/v1/analyses/old/ticks", json={"ticks": ticks_of(sim.canary, 40, 50)}, headers=W).status_code == 200
        assert c.post("/v1/analyses/old/replay", headers=R).json()["ok"] is True
        r = c.post("/v1/analyses/old/cut", json={"to_tick": 30, "reason": "x"}, headers=W)
        assert r.status_code == 409 and "before the store binding" in r.text, r.text
    assert '"family":"input"' not in _one(url, "SELECT lines FROM audit WHERE analysis_id='old' AND seq=45")
    assert runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "old"]).exit_code == 0

