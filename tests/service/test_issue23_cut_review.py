"""Review of the store binding and the cut-back (review/chain.review.md): one regression test per finding.

Each test failed on 4a8bc50 (the reviewed change) and passes with its fix. Small runs (at most 60 ticks
of the step scenario, 30 split ticks), a few CPU-seconds each, SQLite only.
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
