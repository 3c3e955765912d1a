"""Issue 23, defect 1 in its live form: out-of-domain values pushed to ``deploysignal serve`` during a
regression never let Argo see ``proceed`` nor Flagger's confirm-promotion pass.

The regressions are the issue's step scenario (rolled back at tick 364 when clean) and the suite's slow
ramp (eval score drifting down; family A rolls it back at tick 584 one-sample when clean). The probes are
pushed 25 ticks a batch, and after every batch Argo's verdict and Flagger's confirm-promotion hook are
read, as the controllers would:

- the issue's probe, ``eval_score = -1e307`` at tick 5 (0.4.0: family A's log-wealth null from then on,
  Argo ``proceed, final`` and confirm-promotion 200 at the window's end);
- ``eval_score = 2.0`` (outside its declared range [0, 1]) every 25 ticks: before declared ranges the
  gate took 2.0 as a very good score and proceeded at tick 479 (one-sample).

New analyses take out-of-domain values per signal (``out_of_domain: missing``): -1e307 and 2.0 are
outside eval_score's declared range [0, 1] and are missing for that signal, so the rollback comes no
later than in the clean run; each such tick's records say so, the ingest response lists them, and the
ingest is not refused. An analysis created with ``out_of_domain: reject`` answers
422 naming the tick and the signal. The Prometheus pull takes such a value per signal too. Cost: ~30 s
(one baseline compiled, shared with ``tests/test_issue23_values.py`` in one session; 2 x 24 batches).
"""

from __future__ import annotations

import json

import pytest
from test_issue23_values import _ramp  # the slow ramp of the issue-23 property tests (compiled once per session)

from .conftest import R, W, make_client, ticks_of

#: probe -> (scenario, {tick: eval_score}, what the tick's records say, the clean run's rollback tick)
PROBES = {
    "step-1e307": ("step", {5: -1e307}, "out-of-domain:eval_score", 364),  # the issue's scenario (conftest step_sim)
    "ramp-1e307": ("ramp", {5: -1e307}, "out-of-domain:eval_score", 584),
    "ramp-score-2": ("ramp", {t: 2.0 for t in range(0, 600, 25)}, "out-of-domain:eval_score", 584),
    "ramp-1e307-every-25": ("ramp", {t: -1e307 for t in range(0, 600, 25)}, "out-of-domain:eval_score", 584),
}


def _hook(c, analysis: str, hook: str) -> int:
    body = {"name": "x", "namespace": "y", "phase": "Progressing", "metadata": {"analysis": analysis}}
    return c.post(f"/v1/flagger/{hook}", json=body, headers=W).status_code


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_out_of_domain_eval_score_never_promotes_a_regression(tmp_path, request, probe):
    scenario, values, note, clean = PROBES[probe]
    sim, cfg = request.getfixturevalue("step_sim") if scenario == "step" else _ramp()
    ticks = ticks_of(sim.canary)
    for t, x in values.items():
        ticks[t]["values"]["eval_score"] = x
    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"id": probe, "config": json.loads(cfg.to_json()), "window": 480}, headers=W)
        assert r.status_code == 201 and r.json()["settings"]["out_of_domain"] == "missing", r.text
        for a in range(0, len(ticks), 25):
            r = c.post(f"/v1/analyses/{probe}/ticks", json={"ticks": ticks[a:a + 25]}, headers=W)
            assert r.status_code == 200, r.text
            argo = c.get(f"/v1/argo/analyses/{probe}", headers=R).json()
            assert argo["verdict"] != "proceed", (a, argo)
            assert _hook(c, probe, "confirm-promotion") != 200, a
            if argo["verdict"] == "rollback":
                break
        v = c.get(f"/v1/analyses/{probe}", headers=R).json()
        assert v["verdict"] == "rollback" and v["final"] and "A" in v["fired_families"], v
        assert v["gate"]["decided_at_tick"] <= clean, v["gate"]  # the clean run's rollback tick (or earlier)
        assert _hook(c, probe, "rollback") == 200
        lines = [json.loads(x)["record"] for x in c.get(f"/v1/analyses/{probe}/audit", headers=R).text.splitlines()]
        gate = {r["tick"]: r for r in lines if r.get("family") == "gate"}
        assert not any(r["verdict"] == "proceed" for r in gate.values())
        assert gate[479]["verdict"] == "extend" if 479 in gate else v["gate"]["decided_at_tick"] < 479  # the window's end: no proceed
        noted = {t for t, r in gate.items() if note in r["schema_continuity"]}
        assert noted == {t for t in values if t <= v["gate"]["decided_at_tick"]}, sorted(noted)
        assert not any("fail_closed" in r for r in gate.values())  # no family's evidence became NaN (the gate would say so)
        assert c.post(f"/v1/analyses/{probe}/replay", headers=R).json()["ok"] is True
    with make_client(tmp_path) as c:  # restart: rebuilt from the stored ticks (which keep the values as sent)
        assert c.get(f"/v1/argo/analyses/{probe}", headers=R).json()["verdict"] == "rollback"
        assert c.post(f"/v1/analyses/{probe}/replay", headers=R).json()["ok"] is True


def test_reject_policy_answers_422_and_pull_cannot_reject(tmp_path):
    """``out_of_domain: reject`` refuses the whole batch (422 naming the tick and the signal, nothing
    stored); a pull analysis cannot be created with it (no client would see the 422)."""
    sim, cfg = _ramp()
    ticks = ticks_of(sim.canary, 0, 3)
    ticks[2]["values"]["eval_score"] = 2.0
    with make_client(tmp_path) as c:
        body = {"id": "rej", "config": json.loads(cfg.to_json()), "window": 480, "out_of_domain": "reject"}
        r = c.post("/v1/analyses", json=body, headers=W)
        assert r.status_code == 201 and r.json()["settings"]["out_of_domain"] == "reject", r.text  # shown as it applies
        r = c.post("/v1/analyses/rej/ticks", json={"ticks": ticks}, headers=W)
        assert r.status_code == 422 and "eval_score" in r.text and "declared range [0, 1]" in r.text, r.text
        assert c.get("/v1/analyses/rej", headers=R).json()["n_ticks"] == 0
        pull = {"address": "http://127.0.0.1:9", "interval_seconds": 60, "canary": {"eval_score": "up"}}
        r = c.post("/v1/analyses", json={**body, "id": "rej-pull", "prometheus": pull}, headers=W)
        assert r.status_code == 422 and "out_of_domain" in r.text, r.text
    from deploysignal.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'ds.db'}")
    assert "out_of_domain" not in store.get("rej").spec["settings"]  # stored as 0.4.0's settings were
    store.close()


def test_prometheus_pull_marks_only_the_out_of_domain_signal(tmp_path):
    """The pull path (mocked Prometheus, a real store and manager): eval_score = 2.0 at the second grid
    time is taken as missing for that signal only and recorded; the tick is ingested with its other
    eleven signals (before, a value out of its kind's domain, e.g. a rate of 95, had the whole tick
    dropped with a log line)."""
    import datetime
    import threading

    import httpx

    from deploysignal.service._manager import AnalysisManager
    from deploysignal.sources import PrometheusPuller
    from deploysignal.store import open_store

    sim, cfg = _ramp()
    start = 60.0 * (int(sim.canary.timestamps[0]) // 60)
    row = {n: sim.canary.values[0, j] for j, n in enumerate(sim.canary.signals)}

    def value(query: str, t: float) -> str:
        return "2.0" if query == "eval_score" and t == start + 60 else repr(float(row[query]))

    def handler(req: httpx.Request) -> httpx.Response:
        p, q = req.url.params, req.url.params["query"]
        if req.url.path.endswith("query_range"):
            a, b, step = float(p["start"]), float(p["end"]), float(p["step"])
            vals = [[a + i * step, value(q, a + i * step)] for i in range(int((b - a) / step) + 1)]
            return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": vals}]}})
        t = float(p["time"])
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [t, value(q, t)]}]}})

    mgr = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'pull.db'}"))
    spec = {"url": "http://prom", "interval_seconds": 60, "canary": {n: n for n in cfg.names}, "settle_seconds": 0, "max_ticks": 3}
    created = datetime.datetime.fromtimestamp(start, datetime.timezone.utc).isoformat()
    mgr.create("pull", cfg.to_json(), cfg.version_id, {"window": 480, "out_of_domain": "missing"}, {"prometheus": spec}, created)
    stop = threading.Event()
    PrometheusPuller(mgr, "pull", spec, stop, clock=lambda: start + 150.0, client=httpx.Client(transport=httpx.MockTransport(handler))).run()
    ticks = mgr.store.ticks("pull", 0, 3)
    assert [t["timestamp"] for t in ticks] == [start, start + 60, start + 120] and ticks[1]["values"]["eval_score"] == 2.0
    gate = [json.loads(x)["record"] for x in mgr.store.audit_lines("pull") if '"family":"gate"' in x]
    assert [r["schema_continuity"] for r in gate] == ["ok", "out-of-domain:eval_score", "ok"]


def test_ingest_says_which_values_it_recorded_as_missing(tmp_path, caplog):
    """``out_of_domain: missing`` does not stay silent: the ingest response lists the out-of-domain
    values it recorded as missing (signal, tick, value, reason; at most OUT_OF_DOMAIN_LISTED of them and
    their count), the reason of a rate above 1 keeps the hint about percentages, a WARNING is logged, and
    the analysis' settings show the policy that applies (``reject`` too, though its stored settings omit it)."""
    import logging

    from deploysignal.service._manager import OUT_OF_DOMAIN_LISTED

    sim, cfg = _ramp()
    ticks = ticks_of(sim.canary, 0, 40)
    ticks[3]["values"]["refusal_rate"] = 3.0
    for t in ticks[5:]:
        t["values"]["eval_score"] = 2.0
    with make_client(tmp_path) as c:
        assert c.post("/v1/analyses", json={"id": "m", "config": json.loads(cfg.to_json())}, headers=W).status_code == 201
        with caplog.at_level(logging.WARNING):
            r = c.post("/v1/analyses/m/ticks", json={"ticks": ticks}, headers=W)
        assert r.status_code == 200, r.text
        ood = r.json()["out_of_domain"]
        assert ood["count"] == 36 and len(ood["values"]) == OUT_OF_DOMAIN_LISTED < 36, ood
        first = ood["values"][0]
        assert (first["tick"], first["signal"], first["value"]) == (3, "refusal_rate", 3.0) and "a percentage? give rates as fractions" in first["reason"]
        assert (ood["values"][1]["tick"], ood["values"][1]["signal"], ood["values"][1]["value"]) == (5, "eval_score", 2.0)
        assert "declared range [0, 1]" in ood["values"][1]["reason"] and "missing" in ood["values"][1]["reason"]
        assert any(rec.levelno == logging.WARNING and "refusal_rate" in rec.getMessage() and "eval_score" in rec.getMessage()
                   and "'m'" in rec.getMessage() for rec in caplog.records), caplog.text
        r = c.post("/v1/analyses/m/ticks", json={"ticks": ticks_of(sim.canary, 40, 41)}, headers=W)
        assert r.json()["out_of_domain"] == {"count": 0, "values": []}
        assert c.get("/v1/analyses/m", headers=R).json()["settings"]["out_of_domain"] == "missing"
        body = {"id": "rej", "config": json.loads(cfg.to_json()), "out_of_domain": "reject"}
        assert c.post("/v1/analyses", json=body, headers=W).json()["settings"]["out_of_domain"] == "reject"
        assert c.get("/v1/analyses/rej", headers=R).json()["settings"]["out_of_domain"] == "reject"


def test_templates_refuse_what_never_instantiates_and_instantiation_errors_are_422(tmp_path):
    """A template with ``out_of_domain: reject`` and a Prometheus pull is refused when stored (before:
    stored, then 422 on every instantiation); a config whose ranges are broken is a 422 naming the
    field (before: a 500); a stored template that no longer validates answers 422 with the reason
    when instantiated, never a 500."""
    from deploysignal.store import open_store
    from deploysignal.store._integration import IntegrationTables

    sim, cfg = _ramp()
    doc = json.loads(cfg.to_json())
    pull = {"url": "http://127.0.0.1:9", "interval_seconds": 60, "canary": {n: n for n in cfg.names}}
    with make_client(tmp_path) as c:
        r = c.put("/v1/templates/t1", json={"config": doc, "out_of_domain": "reject", "prometheus": pull}, headers=W)
        assert r.status_code == 422 and "out_of_domain" in r.text, r.text
        bad = json.loads(cfg.to_json())
        bad["signals"][cfg.names.index("tool_success_rate")]["range"] = [0.0]
        r = c.post("/v1/analyses", json={"id": "badrange", "config": bad}, headers=W)
        assert r.status_code == 422 and "tool_success_rate" in r.text and "range" in r.text, r.text
        assert c.put("/v1/templates/t2", json={"config": doc, "window": 480}, headers=W).status_code == 200
    store = open_store(f"sqlite:///{tmp_path / 'ds.db'}")
    tables = IntegrationTables(store)
    body, created = tables.get_template("t2")
    tables.put_template("t2", {**body, "window": 0}, created)
    store.close()
    with make_client(tmp_path) as c:
        r = c.get("/v1/argo/templates/t2/revisions/abc?subject=prod.api", headers=R)
        assert r.status_code == 422 and "window" in r.text, (r.status_code, r.text)
