"""Split-mode analyses through the service: create, ingest (all-or-nothing, idempotent), verdict with
effects and confidence sequences, replay byte for byte, exact recovery after a restart, operator void,
templates and the Kayenta / Flagger / Argo answers (healthy -> proceed, regression -> rollback)."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest

from deploysignal.audit._chain import GENESIS, chain_records
from deploysignal.calibration import canonical_json
from deploysignal.service._split_engine import SplitEngine, split_config
from deploysignal.split import MetricSpec

from ._split import METRICS, split_ticks
from .conftest import READ, R, W, make_client

WINDOW = 30


def create(c, aid: str, **kw) -> dict:
    r = c.post("/v1/analyses", json={"id": aid, "mode": "split", "metrics": METRICS, "window": WINDOW, "max_extensions": 0, **kw}, headers=W)
    assert r.status_code == 201, r.text
    return r.json()


def test_healthy_proceeds_regression_rolls_back(tmp_path):
    with make_client(tmp_path) as c:
        create(c, "healthy", canary_share=0.5)
        create(c, "regress", canary_share=0.5)
        # a Kayenta execution is requested before its analysis decides (a decided one refuses new executions)
        exs = {aid: c.post("/v1/kayenta/canary", json={"analysisId": aid, "thresholds": {"pass": 95, "marginal": 75}}, headers=W).json()["canaryExecutionId"]
               for aid in ("healthy", "regress")}
        r = c.post("/v1/analyses/healthy/ticks", json={"ticks": split_ticks(1, WINDOW)}, headers=W)
        assert r.status_code == 200 and r.json()["accepted"] == WINDOW, r.text
        body = c.get("/v1/analyses/healthy", headers=R).json()
        assert (body["verdict"], body["final"], body["mode"]) == ("proceed", True, "split")
        assert body["split"]["srm"]["fired"] is False and body["split"]["srm"]["role"] == "void"
        err = body["split"]["metrics"]["errors"]
        eff = err["effect"]
        assert eff["lower"] <= eff["ratio"] and (eff["upper"] is None or eff["ratio"] <= eff["upper"])
        assert err["explain"].startswith(f"errors: canary event rate x{eff['ratio']:.2f} [{eff['lower']:.2f}, ")
        r = c.post("/v1/analyses/regress/ticks", json={"ticks": split_ticks(2, WINDOW, error_ratio=3.0)}, headers=W)
        assert r.status_code == 200, r.text
        body = c.get("/v1/analyses/regress", headers=R).json()
        assert (body["verdict"], body["final"], body["fired_families"]) == ("rollback", True, ["errors"])
        assert body["split"]["metrics"]["errors"]["fired"] is True
        fired = [e for e in body["evidence"] if e["fire"]]
        assert [e["family"] for e in fired] == ["errors"] and fired[0]["fire_reason"].startswith("errors: canary event rate x")
        # integrations read the verdict body: Argo, Kayenta (per-metric classification), Flagger
        assert c.get("/v1/argo/analyses/healthy", headers=R).json()["verdict"] == "proceed"
        argo = c.get("/v1/argo/analyses/regress", headers=R).json()
        assert argo["verdict"] == "rollback" and "errors: canary event rate" in argo["reason"]
        for aid, verdict, score in (("healthy", "proceed", 100.0), ("regress", "rollback", 0.0)):
            s = c.get(f"/v1/kayenta/canary/{exs[aid]}", headers=R).json()
            assert s["complete"] and s["deploysignal"]["verdict"] == verdict and s["result"]["judgeResult"]["score"]["score"] == score
            by = {m["name"]: m["classification"] for m in s["result"]["judgeResult"]["results"]}
            assert by["errors"] == ("High" if verdict == "rollback" else "Pass") and by["latency_ms"] == "Pass"
        metrics = c.get("/metrics", headers=R).text
        lw = float(body["split"]["metrics"]["errors"]["log_evidence"])
        assert any(ln.startswith('deploysignal_log_wealth{analysis="regress",family="errors"}') and abs(float(ln.split()[-1]) - lw) < 1e-9
               for ln in metrics.splitlines())  # the split family's log e-value
        assert 'deploysignal_verdict{analysis="regress",verdict="rollback"} 1.0' in metrics
        flagger = {"name": "x", "namespace": "y", "phase": "Progressing", "checksum": "c1", "metadata": {"token": READ}}
        assert c.post("/v1/flagger/confirm-promotion", json={**flagger, "metadata": {"token": READ, "analysis": "healthy"}}).status_code == 200
        assert c.post("/v1/flagger/confirm-promotion", json={**flagger, "checksum": "c2", "metadata": {"token": READ, "analysis": "regress"}}).status_code == 409
        assert c.post("/v1/flagger/rollback", json={**flagger, "checksum": "c2", "metadata": {"token": READ, "analysis": "regress"}}).status_code == 200


def test_ingest_all_or_nothing_idempotent_and_named_errors(tmp_path):
    with make_client(tmp_path) as c:
        create(c, "s")
        good = split_ticks(3, 6)
        head = c.get("/v1/analyses/s", headers=R).json()["audit_head"]
        cases = [
            ({**good[2], "arms": {**good[2]["arms"], "canary": {"units": -1}}}, "tick 3.arms.canary.units must be a non-negative integer"),
            ({**good[2], "arms": {"canary": good[2]["arms"]["canary"]}}, "tick 3.arms must hold exactly 'canary' and 'stable'"),
            ({**good[2], "timestamp": good[0]["timestamp"]}, "tick 3.timestamp: out-of-order"),
            ({**good[2], "arms": {**good[2]["arms"], "stable": {"units": 5, "events": {"nope": 1}}}}, "tick 3: metric 'nope' is not in the signals"),
            ({**good[2], "arms": {**good[2]["arms"], "stable": {"units": 500, "buckets": {"latency_ms": [1, 2]}}}}, "buckets.latency_ms has 2 counts"),
            ({**good[2], "timestamp": 1.7e12}, "tick 3.timestamp"),
            ({**good[2], "arms": {**good[2]["arms"], "stable": {"units": 2**63}}}, "tick 3.arms.stable.units is more than 1e+12 units"),
            ({**good[2], "arms": {**good[2]["arms"], "stable": {"units": -(10**400)}}}, "tick 3.arms.stable.units must be a non-negative integer"),
        ]
        for bad, msg in cases:
            r = c.post("/v1/analyses/s/ticks", json={"ticks": [*good[:2], bad, *good[3:]]}, headers=W)
            assert r.status_code == 422 and msg in r.json()["detail"], (msg, r.text)
        body = c.get("/v1/analyses/s", headers=R).json()
        assert body["n_ticks"] == 0 and body["audit_head"] == head  # nothing of a rejected batch was kept
        r1 = c.post("/v1/analyses/s/ticks", json={"batch_id": "b1", "ticks": good[:3]}, headers=W).json()
        r2 = c.post("/v1/analyses/s/ticks", json={"batch_id": "b1", "ticks": good[:3]}, headers=W).json()
        assert r2 == {**r1, "duplicate": True} and r1["n_ticks"] == 3
        dup = c.post("/v1/analyses/s/ticks", json={"ticks": good[2:4]}, headers=W)
        assert dup.status_code == 422 and "tick 1.timestamp: duplicate tick" in dup.json()["detail"]
        # a model-based body is refused with the field named, and a split body by a model-based analysis
        assert c.post("/v1/analyses/s/ticks", json={"ticks": [{"timestamp": 1.7e9, "values": {"errors": 1}}]}, headers=W).status_code == 422
        bad_create = [({"metrics": {"lat": {"kind": "continuous"}}}, "need their bucket edges"),
                      ({"metrics": {"e": {"kind": "evnt"}}}, "kind must be one of"),
                      ({"metrics": {"e": {"tolerance": 0}}}, "tolerance must be a number"),
                      ({"metrics": METRICS, "config_ref": "cc-000000"}, "a split analysis takes metrics, not config_ref"),
                      ({"metrics": METRICS, "canary_share": 1.5}, "canary_share")]
        for extra, msg in bad_create:
            r = c.post("/v1/analyses", json={"mode": "split", **extra}, headers=W)
            assert r.status_code == 422 and msg in r.text, (msg, r.text)


def _uninterrupted(ticks: list[dict], settings: dict) -> tuple[list[str], str]:
    specs = [MetricSpec(m, meta["kind"], meta["direction"], tuple(meta.get("edges", ())), meta["tolerance"]) for m, meta in METRICS.items()]
    eng = SplitEngine(split_config(specs)[1], settings, encoding="jcs")  # a service analysis created since 0.5.0: RFC 8785 lines
    lines, head = chain_records([eng.header()], GENESIS, "jcs")
    for r in eng.ingest(eng.validate(ticks)):
        more, head = chain_records(r.records, head, "jcs")
        lines.extend(more)
    return lines, head


@pytest.mark.parametrize("snapshot_every", [4, 1000])
def test_replay_and_restart_are_exact(tmp_path, snapshot_every):
    """Audit lines of a service restarted mid-analysis (snapshot + replay of later ticks, or replay of
    all) equal one uninterrupted engine's, byte for byte; replay and the chain check pass."""
    ticks = split_ticks(4, 2 * WINDOW, error_ratio=1.3)
    parts = [ticks[:7], ticks[7:8], ticks[8:25], ticks[25:]]
    bodies = []
    for k, part in enumerate(parts):
        with make_client(tmp_path, snapshot_every=snapshot_every) as c:  # a new process view of the store each time
            if k == 0:
                settings = create(c, "s", canary_share=0.5, max_extensions=1)["settings"]
            if k:
                bodies.append(c.get("/v1/analyses/s", headers=R).json())  # rebuilt from the store
            assert c.post("/v1/analyses/s/ticks", json={"ticks": part}, headers=W).status_code == 200
            bodies.append(c.get("/v1/analyses/s", headers=R).json())
            stored = c.get("/v1/analyses/s/audit", headers=R).text.splitlines()
            rep = c.post("/v1/analyses/s/replay", headers=R).json()
            assert rep["ok"] is True, rep
    # an independent reference, byte for byte: one uninterrupted engine's records, with the store binding's
    # records built here from their documented format (input: SHA-256 of the stored tick text; checkpoint:
    # SHA-256 of the engine state's JSON, after the batch that crosses a multiple of snapshot_every)
    con = sqlite3.connect(tmp_path / "ds.db")
    try:
        payloads = [p for (p,) in con.execute("SELECT payload FROM ticks WHERE analysis_id='s' ORDER BY seq")]
        spec, created = con.execute("SELECT spec, created FROM analyses WHERE id='s'").fetchone()
    finally:
        con.close()
    specs = [MetricSpec(m, meta["kind"], meta["direction"], tuple(meta.get("edges", ())), meta["tolerance"]) for m, meta in METRICS.items()]
    eng = SplitEngine(split_config(specs)[1], settings, encoding="jcs")
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    want = [{**eng.header(), "store_binding": 1, "spec_sha256": sha(canonical_json({"created": created, "spec": json.loads(spec)}))}]
    n = 0
    for part in parts:
        for r in eng.ingest(eng.validate(part)):
            want += [{"family": "input", "sha256": sha(payloads[n]), "tick": n}, *r.records]
            n += 1
        if (n - len(part)) // snapshot_every != n // snapshot_every:
            want.append({"family": "checkpoint", "state_sha256": sha(json.dumps(eng.state(), allow_nan=False)), "tick": n})
    ref, head = chain_records(want, GENESIS, "jcs")
    assert stored == ref and head == bodies[-1]["audit_head"] and n == len(ticks)
    # and the gate's records are those of the engine fed all ticks at once
    lines, _ = _uninterrupted(ticks, settings)
    recs = [json.loads(ln)["record"] for ln in stored]
    assert [r for r in recs[1:] if r["family"] not in ("input", "checkpoint")] == [json.loads(ln)["record"] for ln in lines[1:]]
    assert json.loads(stored[0])["record"]["mode"] == "split"
    for before, after in zip(bodies[0::2], bodies[1::2]):  # the body after a restart = the body before it
        assert {k: v for k, v in before.items() if k != "created"} == {k: v for k, v in after.items() if k != "created"}


def test_void_and_template(tmp_path):
    with make_client(tmp_path) as c:
        create(c, "v")
        c.post("/v1/analyses/v/ticks", json={"ticks": split_ticks(5, 10)}, headers=W)
        r = c.post("/v1/analyses/v/void", json={"reason": "bad deploy"}, headers=W)
        assert r.status_code == 200 and r.json()["verdict"] == "extend" and r.json()["final"] is True
        c.post("/v1/analyses/v/ticks", json={"ticks": split_ticks(5, WINDOW, start=10)}, headers=W)
        body = c.get("/v1/analyses/v", headers=R).json()
        assert (body["verdict"], body["final"], body["n_ticks"]) == ("extend", True, 10 + 1 + WINDOW)  # a healthy window after a void never proceeds
        assert body["split"]["voided"] == "bad deploy" and body["split"]["verdict"] == "extend"
        assert c.post("/v1/analyses/v/replay", headers=R).json()["ok"] is True
        tpl = {"mode": "split", "metrics": METRICS, "window": WINDOW, "max_extensions": 0}
        assert c.put("/v1/templates/sp", json=tpl, headers=W).status_code == 200
        assert c.put("/v1/templates/bad", json={**tpl, "metrics": {"x": {"kind": "continuous"}}}, headers=W).status_code == 422
        first = c.get("/v1/argo/templates/sp/revisions/abc123?subject=prod.api", headers=R).json()
        assert first["verdict"] == "pending" and first["analysis"] == "sp@prod.api@abc123"
        assert c.post("/v1/analyses/sp@prod.api@abc123/ticks", json={"ticks": split_ticks(6, WINDOW)}, headers=W).status_code == 200
        assert c.get("/v1/argo/templates/sp/revisions/abc123?subject=prod.api", headers=R).json()["verdict"] == "proceed"
