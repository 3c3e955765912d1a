"""Issue 23: item 6 (batch ids checked by content, delete and retention) together with item 2 (the
store binding and the cut-back), as merged.

- A cut drops the key of a batch whose ticks it wholly superseded; it must drop the batch's content
  digest with it, or the re-sent batch (same id) is refused as other content or, with the same content,
  fails on the digest row the cut left (a 500 on the merge before its fix).
- Deleting an analysis deletes its binding (chained audit, ticks, snapshot); what remains verifies; an
  id created again is checked against its own header only, also by a process whose cached engine
  belongs to the deleted analysis (before the fix, its cached chain head was taken as the new
  analysis' predecessor: a 409 integrity error for an intact analysis).

Small runs (at most 40 ticks of the step scenario), a few CPU-seconds each.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deploysignal.cli import app as cli_app

from .conftest import R, W, make_client, ticks_of

runner = CliRunner()


def _send(c, ticks, batch_id, aid: str = "a"):
    return c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks, "batch_id": batch_id}, headers=W)


def test_a_cut_drops_the_digests_of_the_batch_ids_it_drops(tmp_path, step_sim):
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 40)
    with make_client(tmp_path, snapshot_every=16, max_clock_skew=None) as c:
        assert c.post("/v1/analyses", json={"id": "a", "config": json.loads(cfg.to_json()), "window": 480}, headers=W).status_code == 201
        for i in range(0, 30, 10):
            assert _send(c, ticks[i:i + 10], f"b{i}").status_code == 200
        r = c.post("/v1/analyses/a/cut", json={"to_tick": 15, "reason": "bad source"}, headers=W)
        assert r.status_code == 200, r.text  # b20 wholly superseded, b10 partly
        # b20's key and digest are gone: the id names a new batch (here other ticks than before the cut)
        r = _send(c, ticks[15:25], "b20")
        assert r.status_code == 200 and r.json()["duplicate"] is False and r.json()["accepted"] == 10, r.text
        assert _send(c, ticks[15:25], "b20").json()["duplicate"] is True  # a retry of it: idempotent
        r = _send(c, ticks[25:35], "b20")
        assert r.status_code == 409 and "different content" in r.json()["detail"], r.text  # and checked by content again
        r = _send(c, ticks[10:20], "b10")
        assert r.status_code == 409 and "cut" in r.json()["detail"] and "new batch id" in r.json()["detail"], r.text
        assert _send(c, ticks[0:10], "b0").json()["duplicate"] is True  # kept by the cut: its ack, its digest
        r = _send(c, ticks[1:11], "b0")
        assert r.status_code == 409 and "different content" in r.json()["detail"], r.text
        assert c.get("/v1/analyses/a", headers=R).json()["gate"]["tick"] == 24
        assert c.post("/v1/analyses/a/replay", headers=R).json()["ok"] is True
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    r = runner.invoke(cli_app, ["audit", "verify", "--store", url, "--analysis", "a"])
    assert r.exit_code == 0, r.output


def test_delete_and_recreate_with_the_store_binding(tmp_path, step_sim):
    sim, cfg = step_sim
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    body = {"id": "x", "config": json.loads(cfg.to_json()), "window": 10}
    with make_client(tmp_path, snapshot_every=4) as c:
        for aid in ("x", "y"):
            assert c.post("/v1/analyses", json={**body, "id": aid}, headers=W).status_code == 201
            assert c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is True
        old = c.get("/v1/analyses/x/audit", headers=R).text.splitlines()[0]
        tomb = c.delete("/v1/analyses/x", headers=W).json()
        assert tomb["n_ticks"] == 12
    r = runner.invoke(cli_app, ["audit", "verify", "--store", url, "--analysis", "y"])  # a store with a tombstone
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["audit", "verify", "--store", url, "--analysis", "x"])
    assert r.exit_code == 2 and "no analysis" in r.output and "deleted" in r.output, r.output  # names the tombstone's head
    assert tomb["audit_head"] in r.output.replace("\n", ""), r.output
    with make_client(tmp_path, snapshot_every=4) as c:
        assert c.post("/v1/analyses", json=body, headers=W).status_code == 201  # same id, same spec, another created stamp
        new = c.get("/v1/analyses/x/audit", headers=R).text.splitlines()[0]
        assert json.loads(new)["record"]["spec_sha256"] != json.loads(old)["record"]["spec_sha256"]
        ack = c.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 6)}, headers=W).json()
        assert ack["n_ticks"] == 6 and ack["audit_head"] != tomb["audit_head"]
        assert c.post("/v1/analyses/x/replay", headers=R).json()["ok"] is True
    for aid in ("x", "y"):
        r = runner.invoke(cli_app, ["audit", "verify", "--store", url, "--analysis", aid])
        assert r.exit_code == 0, (aid, r.output)


def test_recreated_id_is_checked_against_its_own_chain_by_another_process(tmp_path, step_sim):
    """Process b caches the engine of x at 5 ticks; a deletes x and creates it again (same spec) with 8
    ticks. b must load the new x from its own header, not advance its cached engine over the new
    analysis' ticks from the deleted one's chain head."""
    sim, cfg = step_sim
    body = {"id": "x", "config": json.loads(cfg.to_json()), "window": 480}
    a, b = make_client(tmp_path), make_client(tmp_path)  # the same store file
    with a, b:
        assert a.post("/v1/analyses", json=body, headers=W).status_code == 201
        assert a.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 5)}, headers=W).status_code == 200
        assert b.get("/v1/analyses/x", headers=R).json()["n_ticks"] == 5  # b caches the engine at 5 ticks
        assert a.delete("/v1/analyses/x?force=true", headers=W).status_code == 200
        assert a.post("/v1/analyses", json=body, headers=W).status_code == 201
        assert a.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 8)}, headers=W).status_code == 200
        got = b.get("/v1/analyses/x", headers=R)
        assert got.status_code == 200 and got.json()["n_ticks"] == 8, got.text
        nxt = b.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 8, 9)}, headers=W)
        assert nxt.status_code == 200 and nxt.json()["n_ticks"] == 9, nxt.text
        assert a.get("/v1/analyses/x", headers=R).json()["n_ticks"] == 9
        assert a.post("/v1/analyses/x/replay", headers=R).json()["ok"] is True
