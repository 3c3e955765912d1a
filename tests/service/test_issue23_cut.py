"""Issue 23, item 3 (the part left open): an operator cuts an analysis back to a verified tick.

The wedged analysis of the issue: tick 10 of the step scenario stamped a year ahead and accepted
(``--max-clock-skew`` off), every correct tick after it refused. A cut back to tick 10 keeps the
ticks stored (superseded, in a chained ``cut`` record), rebuilds the engine from ticks 0-9, accepts
the correct ticks again and ends where a run without the bad tick ends (rollback, family A), with
replay, ``audit verify --store`` and a restart reproducing it. Rollbacks and voids refuse a cut. Cost:
about 40 s on SQLite, as much on PostgreSQL.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deploysignal.cli import app as cli
from deploysignal.service import AnalysisEngine
from deploysignal.service._manager import AnalysisManager
from deploysignal.store import Conflict, open_store

from .conftest import R, W, make_client, ticks_of

runner = CliRunner()
YEAR = 365 * 86400.0


def _manager(url: str) -> tuple[AnalysisManager, object]:
    st = open_store(url)
    return AnalysisManager(st, snapshot_every=64), st


def test_cut_back_unwedges_and_reproduces(store_url, step_sim):
    """Store level on SQLite and PostgreSQL: wedge, cut, continue; the verdict equals a run without the
    bad tick; replay and ``audit verify --store`` pass; a fresh manager (restart) serves the same; the
    superseded tick row is still stored and still bound (editing it is refused)."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary)
    future = dict(ticks[10], timestamp=ticks[10]["timestamp"] + YEAR)
    m, st = _manager(store_url)
    try:
        m.create("w", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, "2026-01-01T00:00:00Z")
        m.ingest("w", ticks[:10] + [future])
        with pytest.raises(Exception, match="out-of-order"):
            m.ingest("w", ticks[11:20])  # wedged
        res = m.cut("w", 10, "tick 10 stamped a year ahead")
        assert res["superseded"] == [[10, 10]] and res["tick"] == 11 and res["n_ticks"] == 12 and res["verdict"] == "pending"
        for i in range(11, len(ticks), 100):
            m.ingest("w", ticks[i:i + 100])
        served = m.engine("w").last
        ref = AnalysisEngine(cfg.to_json(), {"window": 480})
        want = ref.ingest(ref.validate(ticks[:10] + ticks[11:]))[-1]
        assert (served.verdict, served.tick, served.fired_families) == (want.verdict, want.tick, want.fired_families) and want.verdict == "rollback"
        assert m.replay("w")["ok"] is True
        assert st.ticks("w", 10, 11)[0]["timestamp"] == future["timestamp"]  # nothing accepted is lost
        with pytest.raises(Conflict, match="rollback stands"):
            m.cut("w", 5, "after the rollback")
    finally:
        st.close()
    r = runner.invoke(cli, ["audit", "verify", "--store", store_url, "--analysis", "w"])
    assert r.exit_code == 0 and "store matches the chain" in r.output, r.output
    m2, st2 = _manager(store_url)  # a restart: rebuilt from the snapshot written at (or after) the cut
    try:
        again = m2.engine("w").last
        assert (again.verdict, again.tick) == (served.verdict, served.tick)
        recs = [json.loads(ln)["record"] for ln in st2.audit_lines("w", 11, 1)]
        assert [r["family"] for r in recs] == ["input", "cut", "checkpoint"] and recs[1]["to_tick"] == 10
    finally:
        st2.close()
    st3 = open_store(store_url)
    try:
        with st3._tx(st3.conn, write=True):  # the superseded tick is still bound to its input record
            st3._q(st3.conn, "UPDATE ticks SET payload=replace(payload, '.0', '.5') WHERE analysis_id='w' AND seq=10")
    finally:
        st3.close()
    assert runner.invoke(cli, ["audit", "verify", "--store", store_url, "--analysis", "w"]).exit_code == 1


def test_cut_endpoint_and_cli(tmp_path, step_sim):
    """HTTP and CLI: 403 with a read token, 422 for a tick that is not there, two cuts in a row (the
    second one inside the first's kept ticks), a voided analysis refuses (409, CLI exit 1), the audit
    shows the cut records, replay and a restart agree."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    with make_client(tmp_path, snapshot_every=16, max_clock_skew=None) as c:
        assert c.post("/v1/analyses", json={"id": "a", "config": json.loads(cfg.to_json()), "window": 480}, headers=W).status_code == 201
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks[:40]}, headers=W).status_code == 200
        assert c.post("/v1/analyses/a/cut", json={"to_tick": 30, "reason": "bad batch"}, headers=R).status_code == 403
        r = c.post("/v1/analyses/a/cut", json={"to_tick": 40, "reason": "bad batch"}, headers=W)
        assert r.status_code == 422 and "to_tick" in r.text, r.text
        r = c.post("/v1/analyses/a/cut", json={"to_tick": 30, "reason": "bad batch"}, headers=W)
        assert r.status_code == 200 and r.json()["superseded"] == [[30, 39]], r.text
        assert "(1 + number of cuts) x alpha" in r.json()["note"]  # what the gate's bounds then are
        assert c.get("/v1/analyses/a", headers=R).json()["gate"]["tick"] == 29
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks[30:50]}, headers=W).status_code == 200
        r = c.post("/v1/analyses/a/cut", json={"to_tick": 25, "reason": "earlier bad batch"}, headers=W)
        assert r.status_code == 200 and r.json()["superseded"] == [[25, 29], [41, 60]], r.text
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks[25:60]}, headers=W).status_code == 200
        v = c.get("/v1/analyses/a", headers=R).json()
        assert v["gate"]["tick"] == 59 and v["n_ticks"] == 40 + 1 + 20 + 1 + 35  # stored: kept, superseded and the two cuts
        assert c.post("/v1/analyses/a/replay", headers=R).json()["ok"] is True
    ref = AnalysisEngine(cfg.to_json(), {"window": 480})
    per_tick = [json.loads(json.dumps(r.records)) for r in ref.ingest(ref.validate(ticks))]
    with make_client(tmp_path, snapshot_every=16) as c:  # restart
        v2 = c.get("/v1/analyses/a", headers=R).json()
        assert {k: v2[k] for k in ("verdict", "final", "gate", "n_ticks")} == {k: v[k] for k in ("verdict", "final", "gate", "n_ticks")}
        recs = [json.loads(ln)["record"] for ln in c.get("/v1/analyses/a/audit", headers=R).text.splitlines()]
        assert [r["to_tick"] for r in recs if r["family"] == "cut"] == [30, 25]
        # each stretch after a cut continues exactly as one run over ticks 0-59 does from the tick it was cut to
        gate_recs = [r for r in recs if r["family"] not in ("header", "input", "cut", "checkpoint")]
        assert gate_recs == [r for part in (per_tick[:40], per_tick[30:50], per_tick[25:60]) for t in part for r in t]
        assert c.post("/v1/analyses/a/void", json={"reason": "done"}, headers=W).status_code == 200
        r = c.post("/v1/analyses/a/cut", json={"to_tick": 5, "reason": "x"}, headers=W)
        assert r.status_code == 409 and "voided" in r.text
    r = runner.invoke(cli, ["service", "cut", "--store", url, "--analysis", "a", "--to-tick", "5", "--reason", "x"])
    assert r.exit_code == 1 and "voided" in r.output, r.output
    assert runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", "a"]).exit_code == 0
