"""PUT /v1/templates refuses what no revision's analysis could be created from (in-process app)."""

from __future__ import annotations

import json

import pytest

from .conftest import READ, WRITE, _sim, make_client

W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


@pytest.fixture(scope="module")
def compiled():
    _, cfg = _sim("healthy", 2)
    return json.loads(cfg.to_json()), list(cfg.names)


@pytest.mark.parametrize(
    "mode, pull, column",
    [
        ("one-sample", {"canary": {"nosuch": "up"}}, "prometheus.canary"),
        ("two-sample", {"canary": "all"}, "prometheus.control"),
        ("one-sample", {"canary": "all", "control": "all"}, "prometheus.control"),
        ("two-sample", {"canary": "all", "control": {"nosuch": "up"}}, "prometheus.control"),
    ],
)
def test_put_refuses_a_template_no_revision_could_use(tmp_path, compiled, mode, pull, column):
    """Before, these templates were stored (200) and every rollout's first request failed to create
    its analysis; now PUT answers 422 naming the field, and nothing is stored."""
    cfgd, names = compiled
    with make_client(tmp_path) as c:
        prom = {"url": "http://127.0.0.1:1", "interval_seconds": 1}
        for k, v in pull.items():
            prom[k] = {s: "up" for s in names} if v == "all" else v
        r = c.put("/v1/templates/bad", json={"config": cfgd, "window": 20, "mode": mode, "prometheus": prom}, headers=W)
        assert r.status_code == 422, r.text
        assert column in r.text
        assert c.get("/v1/templates/bad", headers=R).status_code == 404
        # a template that fits is stored without contacting Prometheus (it is read per revision)
        good = {"config": cfgd, "window": 20, "mode": mode, "prometheus": {**prom, "canary": {s: "up" for s in names}}}
        if mode == "two-sample":
            good["prometheus"]["control"] = {s: "up" for s in names}
        else:
            good["prometheus"].pop("control", None)
        assert c.put("/v1/templates/good", json=good, headers=W).status_code == 200


def test_undecided_analyses_per_template_are_capped(tmp_path, compiled):
    """A read token instantiates templates; at most max_live_per_template undecided analyses of one
    template exist at once, the next revision gets 409 (Argo: Error; Flagger: a failed check) until one
    of them is final."""
    from .conftest import ticks_of

    cfgd, _ = compiled
    sim, _ = _sim("healthy", 2)
    with make_client(tmp_path, max_live_per_template=2) as c:
        assert c.put("/v1/templates/t", json={"config": cfgd, "window": 20, "max_extensions": 0}, headers=W).status_code == 200
        for rev in ("r1", "r2"):
            assert c.get(f"/v1/argo/templates/t/revisions/{rev}", params={"subject": "prod.api"}, headers=R).json()["verdict"] == "pending"
        r = c.get("/v1/argo/templates/t/revisions/r3", params={"subject": "prod.api"}, headers=R)
        assert r.status_code == 409 and "max_live_per_template 2" in r.json()["detail"]
        r = c.post("/v1/flagger/pre-rollout", json={"name": "api", "namespace": "prod", "checksum": "r3", "metadata": {"template": "t", "token": READ}})
        assert r.status_code == 409 and r.json()["allow"] is False
        assert [h["revision"] for h in c.get("/v1/templates/t", headers=R).json()["revisions"]] == ["r1", "r2"]
        # the existing analyses still answer; once one is final a new revision may start
        assert c.post("/v1/analyses/t@prod.api@r1/ticks", json={"ticks": ticks_of(sim.canary, 0, 20)}, headers=W).status_code == 200
        assert c.get("/v1/argo/templates/t/revisions/r1", params={"subject": "prod.api"}, headers=R).json()["final"] is True
        assert c.get("/v1/argo/templates/t/revisions/r3", params={"subject": "prod.api"}, headers=R).json()["verdict"] == "pending"


def test_flagger_events_keep_the_newest(tmp_path):
    """Event and post-rollout calls are recorded without a token check beyond read: only the newest
    max_events stay, oldest deleted first."""
    with make_client(tmp_path, max_events=3) as c:
        for i in range(5):
            hook = "event" if i % 2 == 0 else "post-rollout"
            body = {"name": f"c{i % 2}", "namespace": "prod", "checksum": f"k{i}", "metadata": {"token": READ, "eventMessage": f"m{i}"}}
            assert c.post(f"/v1/flagger/{hook}", json=body).status_code == 200
        got = c.get("/v1/flagger/events", headers=R).json()
        assert [e["revision"] for e in got] == ["k2", "k3", "k4"]
        assert [e["revision"] for e in c.get("/v1/flagger/events", params={"canary": "prod.c1"}, headers=R).json()] == ["k3"]
