"""Contract tests: the documented request/response shapes of Flagger (webhooks) and Kayenta (canary
executions), replayed against the service (Argo Rollouts and whole Flagger rollouts: tests/conformance/).

Shapes from: https://docs.flagger.app/usage/webhooks (POST body name/namespace/phase/checksum/metadata;
Flagger's own code accepts only a status <= 202), Kayenta ``POST /canary/{configId}`` -> ``canaryExecutionId``, ``GET /canary/{id}`` ->
``complete``, ``status``, ``result.judgeResult.score`` and per-metric ``classification``.
"""

from __future__ import annotations

import json

import pytest

from .conftest import READ, R, W, make_client, ticks_of


@pytest.fixture()
def svc(tmp_path, step_sim, healthy_sim):
    with make_client(tmp_path) as c:
        for aid, (sim, cfg), window in (("test.podinfo", step_sim, 480), ("test.healthy", healthy_sim, 120)):
            r = c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": window, "max_extensions": 0}, headers=W)
            assert r.status_code == 201, r.text
        yield c, step_sim, healthy_sim


# Argo Rollouts and Flagger: whole rollouts through ports of their own decision logic are in
# tests/conformance/; the checks below are the request/response shapes only.


FLAGGER_BODY = {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "85d557f47b", "metadata": {"test": "all", "token": READ}}


def test_flagger_webhooks(svc):
    c, (step, _), _ = svc
    post = lambda hook, body=FLAGGER_BODY: c.post(f"/v1/flagger/{hook}", json=body)  # noqa: E731
    assert post("confirm-rollout").status_code == 200
    assert post("rollout").status_code == 200  # pending: keep analysing
    assert post("confirm-promotion").status_code == 409  # hold promotion until proceed
    assert post("rollback").status_code == 409  # no rollback asked
    c.post("/v1/analyses/test.podinfo/ticks", json={"ticks": ticks_of(step.canary)}, headers=W)
    r = post("rollback")
    assert r.status_code == 200 and r.json()["verdict"] == "rollback"
    assert post("rollout").status_code == 409
    assert post("confirm-promotion").status_code == 409
    assert post("confirm-rollout", {**FLAGGER_BODY, "metadata": {"token": "wrong"}}).status_code == 401
    assert post("confirm-rollout", {**FLAGGER_BODY, "name": "unknown"}).status_code == 409  # no analysis: hold
    assert post("bogus-hook").status_code == 404
    assert post("rollout", {"namespace": "test"}).status_code == 422
    # analysis named explicitly in metadata
    body = {**FLAGGER_BODY, "name": "whatever", "metadata": {"token": READ, "analysis": "test.healthy"}}
    assert post("rollout", body).json()["analysis"] == "test.healthy"
    # the first checksum bound test.podinfo: another revision is refused on every gate, even rollback
    other = {**FLAGGER_BODY, "checksum": "0000000000"}
    for hook in ("rollout", "confirm-promotion", "rollback", "pre-rollout"):
        r = post(hook, other)
        assert r.status_code == 409 and "judges revision '85d557f47b'" in r.json()["reason"], (hook, r.text)
    # the event hook is accepted and recorded (Flagger only logs its answer)
    ev = {**FLAGGER_BODY, "metadata": {"eventMessage": "New revision detected", "eventType": "Normal", "timestamp": "1", "token": READ}}
    assert post("event", ev).status_code == 200
    rec = c.get("/v1/flagger/events", params={"canary": "test.podinfo"}, headers=R).json()
    assert [e["body"]["metadata"]["eventMessage"] for e in rec] == ["New revision detected"] and rec[0]["revision"] == "85d557f47b"


def test_kayenta_execution(svc):
    """The bearer-token form of the Kayenta executions; the keyed form Argo uses is in test_kayenta_argo.py."""
    c, (step, _), _ = svc
    r = c.post("/v1/kayenta/canary", json={"analysisId": "test.podinfo", "thresholds": {"pass": 95, "marginal": 75}}, headers=W)
    assert r.status_code == 200
    ex = r.json()["canaryExecutionId"]
    s = c.get(f"/v1/kayenta/canary/{ex}", headers=R).json()
    assert s["complete"] is False and s["status"] == "running" and s["result"] is None
    c.post("/v1/analyses/test.podinfo/ticks", json={"ticks": ticks_of(step.canary)}, headers=W)
    s = c.get(f"/v1/kayenta/canary/{ex}", headers=R).json()
    assert s["complete"] is True and s["status"] == "succeeded" and s["deploysignal"]["verdict"] == "rollback"
    jr = s["result"]["judgeResult"]
    assert jr["score"]["classification"] == "Fail" and jr["score"]["score"] == 0.0  # critical metric failed
    by = {m["name"]: m["classification"] for m in jr["results"]}
    assert by["p99_latency_ms"] == "High"  # the regressed signal, harmful direction up
    assert set(by.values()) <= {"Pass", "High", "Low", "Nodata"}
    assert c.get(f"/v1/kayenta/canary/{ex}").status_code == 401
    assert c.get("/v1/kayenta/canary/ex-nope", headers=R).status_code == 404
    assert c.post("/v1/kayenta/canary", json={"analysisId": "nope", "thresholds": {"pass": 95, "marginal": 75}}, headers=W).status_code == 404
    assert c.post("/v1/kayenta/canary", json={"analysisId": "test.podinfo", "thresholds": {"pass": 95, "marginal": 75}}, headers=R).status_code == 403
    bad = c.post("/v1/kayenta/canary", json={"analysisId": "test.podinfo", "thresholds": {"pass": 0, "marginal": 0}}, headers=W)
    assert bad.status_code == 422 and "thresholds.pass" in bad.json()["detail"]
