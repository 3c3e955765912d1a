"""Kayenta drop-in and revision identity: an execution judges the revision its experiment scope names
(``<template>@<hash>``, created on first sight), and a verdict reached before an execution was
requested never answers it (a hash reused by a later rollout, a retry after a rollback).

Argo's Kayenta provider and analysis controller (the ports in ``conformance/``) run against the app in process (Starlette's test
transport), with the doc's AnalysisTemplate.
"""

from __future__ import annotations

import json

from deploysignal.service._kayenta import KEY_IN_PATH

from conformance.argo import Metric
from conformance.argo_kayenta import ERROR, FAILED, RUNNING, SUCCESSFUL, ArgoKayentaProvider, analysis
from ._proc import KAYENTA, READ
from .conftest import W, make_client, ticks_of
from .test_kayenta_argo import T0, metric_for, nodata

URL = "http://testserver"


def _template(c, tid: str, cfg, window: int) -> None:
    r = c.put(f"/v1/templates/{tid}", json={"config": json.loads(cfg.to_json()), "window": window, "max_extensions": 0}, headers=W)
    assert r.status_code == 200, r.text


def _ingest(c, aid: str, ticks: list[dict]) -> None:
    r = c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks}, headers=W)
    assert r.status_code == 200, r.text


def _metric(canary_hash: str, config_name: str | None = None) -> Metric:
    return metric_for(URL, canary_hash, KAYENTA, config_name)


def _post(c, config_id: str, scope: str, start: str = "2026-12-07T03:00:00Z", **thresholds):
    side = {"region": "default", "scope": scope, "step": 60, "start": start, "end": "2027-06-02T00:00:00Z"}
    body = {"scopes": {"default": {"controlScope": {**side, "scope": "app=a,rollouts-pod-template-hash=stable"}, "experimentScope": side}},
            "thresholds": thresholds or {"pass": 95, "marginal": 50}}
    return c.post(f"/kayenta/{KAYENTA}/canary/{config_id}?application=a", json=body)


def test_hash_reused_by_a_later_rollout_never_gets_the_old_verdict(tmp_path, healthy_sim, step_sim):
    healthy, cfg = healthy_sim
    step, cfg_step = step_sim
    with make_client(tmp_path) as c, ArgoKayentaProvider(transport=c._transport) as p:
        _template(c, "prod.inference-api", cfg, window=120)
        # rollout 1 (hash aaa111): the analysis is created by Argo's first POST; telemetry follows
        a1 = "prod.inference-api@aaa111"
        res = analysis(p, _metric("aaa111"), T0, on_step=lambda i: i and _ingest(c, a1, ticks_of(healthy.canary, 30 * (i - 1), min(30 * i, 120))))
        assert res.phase == SUCCESSFUL and c.get(f"/v1/analyses/{a1}", headers=W).json()["verdict"] == "proceed"
        # rollout 2 (new hash): a new analysis, undecided, never another revision's verdict
        res2 = analysis(p, _metric("bbb222"), T0, max_steps=5)
        assert res2.phase == RUNNING and c.get("/v1/analyses/prod.inference-api@bbb222", headers=W).json()["verdict"] == "pending"
        # undo to revision 1 (its hash repeats): refused, the rollout stops; no promotion on the old proceed
        m = p.run(_metric("aaa111"), T0, T0)
        assert m.phase == ERROR
        assert analysis(p, _metric("aaa111"), T0, max_steps=10).phase == ERROR
        r = _post(c, "prod.inference-api", "app=a,rollouts-pod-template-hash=aaa111")
        assert r.status_code == 409 and "already reached its verdict 'proceed'" in r.json()["detail"]
        # the template's history keeps both revisions, the first one still decided
        hist = c.get("/v1/templates/prod.inference-api", headers=W).json()["revisions"]
        assert [(h["revision"], h["verdict"]) for h in hist] == [("aaa111", "proceed"), ("bbb222", "pending")]

        # retry after a rollback, same hash: refused (not Failed forever, never Successful) ...
        _template(c, "prod.regress", cfg_step, window=480)
        r3 = analysis(p, _metric("ccc333", "prod.regress"), T0, on_step=lambda i: i and _ingest(c, "prod.regress@ccc333", ticks_of(step.canary, 60 * (i - 1), min(60 * i, 480))))
        assert r3.phase == FAILED
        assert analysis(p, _metric("ccc333", "prod.regress"), T0, max_steps=10).phase == ERROR
        # ... and a new template id judges the same revision afresh (what docs/integrations.md says to do)
        _template(c, "prod.regress.retry1", cfg_step, window=480)
        assert analysis(p, _metric("ccc333", "prod.regress.retry1"), T0, max_steps=3).phase == RUNNING
        assert c.get("/v1/analyses/prod.regress.retry1@ccc333", headers=W).json()["verdict"] == "pending"


def test_decided_analysis_refuses_a_later_execution_for_any_scope(tmp_path, healthy_sim):
    """The reviewer's reproduction: analysis ``pr`` proceeded; an execution whose scope starts months
    later and names another hash must not answer complete/Pass."""
    healthy, cfg = healthy_sim
    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"id": "pr", "config": json.loads(cfg.to_json()), "window": 120}, headers=W)
        assert r.status_code == 201, r.text
        _ingest(c, "pr", ticks_of(healthy.canary, 0, 200))
        assert c.get("/v1/analyses/pr", headers=W).json()["verdict"] == "proceed"
        for scope in ("app=a,rollouts-pod-template-hash=NEWHASH", "app=a"):
            r = _post(c, "pr", scope, start="2027-06-01T00:00:00Z")
            assert r.status_code == 409, r.text
        r = c.post("/v1/kayenta/canary", json={"analysisId": "pr", "thresholds": {"pass": 95, "marginal": 50}}, headers=W)
        assert r.status_code == 409, r.text
        # an explicit analysis binds to the first hash named; another hash is refused
        c.post("/v1/analyses", json={"id": "bound", "config": json.loads(cfg.to_json()), "window": 120}, headers=W)
        assert _post(c, "bound", "app=a,rollouts-pod-template-hash=h1").status_code == 200
        r = _post(c, "bound", "app=a,rollouts-pod-template-hash=h2")
        assert r.status_code == 409 and "judges revision 'h1'" in r.json()["detail"]
        ex = _post(c, "bound", "app=a,rollouts-pod-template-hash=h1").json()["canaryExecutionId"]
        _ingest(c, "bound", nodata(healthy.canary, 0, 5))
        body = c.get(f"/kayenta/{KAYENTA}/canary/{ex}").json()
        assert body["deploysignal"]["revision"] == "h1" and body["complete"] is False


def test_template_needs_one_hash_in_the_experiment_scope(tmp_path, healthy_sim):
    _, cfg = healthy_sim
    with make_client(tmp_path) as c:
        _template(c, "prod.t", cfg, window=120)
        assert _post(c, "prod.t", "app=a").status_code == 422  # no revision: no analysis to judge
        two = {"region": "r", "scope": "rollouts-pod-template-hash=x1", "step": 60}
        body = {"scopes": {"a": {"experimentScope": two}, "b": {"experimentScope": {**two, "scope": "rollouts-pod-template-hash=x2"}}},
                "thresholds": {"pass": 95, "marginal": 50}}
        r = c.post(f"/kayenta/{KAYENTA}/canary/prod.t", json=body)
        assert r.status_code == 422 and "2 revisions" in r.json()["detail"]
        assert c.get("/v1/templates/prod.t", headers=W).json()["revisions"] == []
        # the bearer form names the revision explicitly
        r = c.post("/v1/kayenta/canary", json={"analysisId": "prod.t", "revision": "x1", "thresholds": {"pass": 95, "marginal": 50}}, headers=W)
        assert r.status_code == 200 and c.get(f"/v1/kayenta/canary/{r.json()['canaryExecutionId']}", headers=W).json()["canaryConfigId"] == "prod.t@x1"
        # GET /canaryConfig lists the template, so Argo's lookup by name finds it before any analysis exists
        assert {"prod.t", "prod.t@x1"} <= {x["name"] for x in c.get(f"/kayenta/{KAYENTA}/canaryConfig").json()}


def test_thresholds_are_required_whole_numbers(tmp_path, healthy_sim):
    _, cfg = healthy_sim
    with make_client(tmp_path) as c:
        c.post("/v1/analyses", json={"id": "th", "config": json.loads(cfg.to_json()), "window": 120}, headers=W)
        bad = [None, {"pass": 0.5, "marginal": 0.4}, {"pass": 95.5, "marginal": 50}, {"pass": 95}, {"pass": 95, "marginal": 0}, {"pass": "95", "marginal": True}]
        for th in bad:
            body = {"analysisId": "th", **({} if th is None else {"thresholds": th})}
            assert c.post("/v1/kayenta/canary", json=body, headers=W).status_code == 422, th
        ok = c.post("/v1/kayenta/canary", json={"analysisId": "th", "thresholds": {"pass": 95.0, "marginal": 50.0}}, headers=W)
        assert ok.status_code == 200
        assert c.get(f"/v1/kayenta/canary/{ok.json()['canaryExecutionId']}", headers=W).json()["canaryExecutionRequest"] is None
        # the path-key form (Argo, Orca): a missing marginal is 422 too (Orca's null-threshold branch)
        r = c.post(f"/kayenta/{KAYENTA}/canary/th", json={"scopes": {}, "thresholds": {"pass": 95}})
        assert r.status_code == 422 and "marginal" in r.text


def test_access_log_redaction_touches_only_the_keyed_address():
    assert KEY_IN_PATH.sub(r"\1***", "GET /kayenta/s3cr3t/canaryConfig?x=1 HTTP/1.1") == "GET /kayenta/***/canaryConfig?x=1 HTTP/1.1"
    assert KEY_IN_PATH.sub(r"\1***", "POST /v1/kayenta/canary HTTP/1.1") == "POST /v1/kayenta/canary HTTP/1.1"
    assert KEY_IN_PATH.sub(r"\1***", "GET /v1/kayenta/canary/ex-1 HTTP/1.1") == "GET /v1/kayenta/canary/ex-1 HTTP/1.1"


def test_kayenta_key_is_its_own_role_and_executions_are_capped(tmp_path, healthy_sim, monkeypatch):
    """Only a ``kayenta`` token opens the keyed address (a read or write token there is refused: URLs
    are logged), and it opens nothing else; one analysis accepts at most MAX_EXECUTIONS executions."""
    from deploysignal.service import _kayenta

    from .conftest import WRITE

    _, cfg = healthy_sim
    with make_client(tmp_path) as c:
        c.post("/v1/analyses", json={"id": "cap", "config": json.loads(cfg.to_json()), "window": 120}, headers=W)
        for tok in (READ, WRITE, "unknown"):
            assert c.get(f"/kayenta/{tok}/canaryConfig").status_code == 401, tok
        assert c.get(f"/kayenta/{KAYENTA}/canaryConfig").status_code == 200
        bearer = {"Authorization": f"Bearer {KAYENTA}"}
        assert c.get("/v1/analyses", headers=bearer).status_code == 403
        assert c.post("/v1/kayenta/canary", json={"analysisId": "cap", "thresholds": {"pass": 95, "marginal": 50}}, headers=bearer).status_code == 403
        flagger = {"name": "cap", "namespace": "x", "checksum": "h1", "metadata": {"analysis": "cap"}}
        assert c.post("/v1/flagger/rollout", json={**flagger, "metadata": {"analysis": "cap", "token": KAYENTA}}).status_code == 401
        assert c.post("/v1/flagger/rollout", json=flagger, headers=bearer).status_code == 401
        monkeypatch.setattr(_kayenta, "MAX_EXECUTIONS", 3)
        got = [_post(c, "cap", "app=a,rollouts-pod-template-hash=h1").status_code for _ in range(5)]
        assert got == [200, 200, 200, 429, 429]
