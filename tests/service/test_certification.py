"""The service reports a config's certification (issue 22): on creating an analysis and in its verdict."""

from __future__ import annotations

import json

from deploysignal.gate import GateSettings, certification_status, certify_baseline, runtime_certification

from .conftest import R, W, make_client


def test_create_and_verdict_carry_certification(tmp_path, step_sim):
    sim, cfg = step_sim  # compile_baseline alone: model-checked but not backtested
    certified = certify_baseline(sim.baseline, GateSettings(), seed=0, robust_covariance=False, windows=1)
    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"id": "u", "config": json.loads(cfg.to_json()), "window": 480}, headers=W)
        assert r.status_code == 201, r.text
        cert = r.json()["certification"]
        assert cert["certified"] is False and cert["basis"] == "one-sample, uncertified"
        assert any(x.startswith("not backtested") for x in cert["reasons"])
        assert c.get("/v1/analyses/u", headers=R).json()["certification"] == cert
        body = {"id": "c", "config": json.loads(certified.to_json()), "window": 480}
        got = c.post("/v1/analyses", json=body, headers=W).json()["certification"]
        assert got == runtime_certification(certification_status(certified, GateSettings(window=480)), got["runtime_check"])
        assert got["runtime_check"] == {"budget": 0.01, "fired_at": -1, "reason": "", "status": "", "stopped_at": -1}  # one-sample: the run-time check runs
        assert got["certified"] is certified.certification["certified"]
        two = c.post("/v1/analyses", json={**body, "id": "t", "mode": "two-sample"}, headers=W).json()["certification"]
        assert two["basis"] == "two-sample"
        assert c.post("/v1/analyses", json={**body, "id": "w", "window": 240}, headers=W).json()["certification"]["certified"] is False
