"""Issue 23, defect 1 in its live form: out-of-domain values pushed to ``deploysignal serve`` during a
regression never let Argo see ``proceed`` nor Flagger's confirm-promotion pass.

The regression is the suite's slow ramp (eval score drifting down; family A rolls it back at tick 584
one-sample when clean). Both probes are pushed 25 ticks a batch, and after every batch Argo's verdict
and Flagger's confirm-promotion hook are read, as the controllers would:

- the issue's probe, ``eval_score = -1e307`` at tick 5 (0.4.0: family A's log-wealth null from then on,
  Argo ``proceed, final`` and confirm-promotion 200 at the window's end);
- ``eval_score = 2.0`` (outside its declared range [0, 1]) every 25 ticks: before declared ranges the
  gate took 2.0 as a very good score and proceeded at tick 479 (one-sample).

New analyses take out-of-domain values per signal (``out_of_domain: missing``): -1e307 is on the harmful
side of eval_score and is taken at its bound 0, 2.0 on the good side is missing; each such tick's
records say so and the ingest is not refused. An analysis created with ``out_of_domain: reject`` answers
422 naming the tick and the signal. Cost: ~25 s (one baseline compiled, shared with
``tests/test_issue23_values.py`` in one session; 2 x 24 batches).
"""

from __future__ import annotations

import json

import pytest
from test_issue23_values import _ramp  # the slow ramp of the issue-23 property tests (compiled once per session)

from .conftest import R, W, make_client, ticks_of

PROBES = {
    "probe-1e307": ({5: -1e307}, "out-of-domain-bound:eval_score"),
    "score-2": ({t: 2.0 for t in range(0, 600, 25)}, "out-of-domain-missing:eval_score"),
}


def _hook(c, analysis: str, hook: str) -> int:
    body = {"name": "x", "namespace": "y", "phase": "Progressing", "metadata": {"analysis": analysis}}
    return c.post(f"/v1/flagger/{hook}", json=body, headers=W).status_code


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_out_of_domain_eval_score_never_promotes_a_regression(tmp_path, probe):
    sim, cfg = _ramp()
    values, note = PROBES[probe]
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
        assert v["gate"]["decided_at_tick"] <= 584, v["gate"]  # the clean ramp's rollback tick (or earlier)
        assert _hook(c, probe, "rollback") == 200
        lines = [json.loads(x)["record"] for x in c.get(f"/v1/analyses/{probe}/audit", headers=R).text.splitlines()]
        gate = {r["tick"]: r for r in lines if r.get("family") == "gate"}
        assert gate[479]["verdict"] == "extend" and not any(r["verdict"] == "proceed" for r in gate.values())  # window end: no proceed
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
        assert r.status_code == 201 and "out_of_domain" not in r.json()["settings"], r.text  # stored as 0.4.0's settings were
        r = c.post("/v1/analyses/rej/ticks", json={"ticks": ticks}, headers=W)
        assert r.status_code == 422 and "eval_score" in r.text and "declared range [0, 1]" in r.text, r.text
        assert c.get("/v1/analyses/rej", headers=R).json()["n_ticks"] == 0
        pull = {"address": "http://127.0.0.1:9", "interval_seconds": 60, "canary": {"eval_score": "up"}}
        r = c.post("/v1/analyses", json={**body, "id": "rej-pull", "prometheus": pull}, headers=W)
        assert r.status_code == 422 and "out_of_domain" in r.text, r.text
