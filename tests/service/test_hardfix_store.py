"""A store holding ticks that 0.4.0 accepted and 0.5.0 screens out at ingest (a success rate of 95, a
millisecond timestamp) stays readable: GET, Argo, void and replay answer 200 after a restart. Cost: ~15 s."""

from __future__ import annotations

import json

from .conftest import R, W, make_client, ticks_of


def test_ticks_accepted_by_0_4_0_are_rebuilt_not_rejected(tmp_path, step_sim, monkeypatch):
    """The ticks are written with the ingest screening off (what 0.4.0's validation accepted: the
    stored tick format is unchanged), then the service restarts and rebuilds both analyses from the
    store. Before the fix the rebuild screened them again and every route answered 422."""
    import deploysignal.gate._gate as gate_mod
    import deploysignal.service._engine as eng_mod

    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 20)
    with monkeypatch.context() as m:  # 0.4.0's ingest: no epoch-seconds or domain screening
        for mod in (gate_mod, eng_mod):
            m.setattr(mod, "check_domain", lambda *a, **k: None)
            m.setattr(mod, "check_epoch_seconds", lambda *a, **k: None)
        with make_client(tmp_path, max_clock_skew=None) as c:  # 0.4.0 had no clock-skew check
            for aid in ("pct", "ms"):
                body = {"id": aid, "config": json.loads(cfg.to_json()), "window": 480, "out_of_domain": "reject"}  # stored as 0.4.0's settings
                r = c.post("/v1/analyses", json=body, headers=W)
                assert r.status_code == 201 and r.json()["settings"]["out_of_domain"] == "reject", r.text
            bad = dict(ticks[10], values=dict(ticks[10]["values"], tool_success_rate=95.0))
            assert c.post("/v1/analyses/pct/ticks", json={"ticks": [*ticks[:10], bad, *ticks[11:15]]}, headers=W).status_code == 200
            ms = dict(ticks[10], timestamp=ticks[10]["timestamp"] * 1000)
            assert c.post("/v1/analyses/ms/ticks", json={"ticks": [*ticks[:10], ms]}, headers=W).status_code == 200
    with make_client(tmp_path) as c:  # restart: engines rebuilt from the stored ticks
        for aid, n in (("pct", 15), ("ms", 11)):
            r = c.get(f"/v1/analyses/{aid}", headers=R)
            assert r.status_code == 200 and r.json()["n_ticks"] == n, r.text
            assert c.get(f"/v1/argo/analyses/{aid}", headers=R).status_code == 200
            assert c.post(f"/v1/analyses/{aid}/replay", headers=R).json()["ok"] is True
            r = c.post(f"/v1/analyses/{aid}/void", json={"reason": "accepted by 0.4.0"}, headers=W)
            assert r.status_code == 200 and r.json()["tick"] == n, r.text
            assert c.post(f"/v1/analyses/{aid}/replay", headers=R).json()["ok"] is True
        # new ingest is still screened: refused under out_of_domain "reject", taken as missing (noted) under "missing" (the default)
        bad = dict(ticks[15], values=dict(ticks[15]["values"], tool_success_rate=95.0))
        r = c.post("/v1/analyses", json={"id": "new", "config": json.loads(cfg.to_json()), "window": 480, "out_of_domain": "reject"}, headers=W)
        assert r.status_code == 201
        r = c.post("/v1/analyses/new/ticks", json={"ticks": [bad]}, headers=W)
        assert r.status_code == 422 and "tool_success_rate" in r.text, r.text
        r = c.post("/v1/analyses", json={"id": "new2", "config": json.loads(cfg.to_json()), "window": 480}, headers=W)
        assert r.status_code == 201 and r.json()["settings"]["out_of_domain"] == "missing"
        assert c.post("/v1/analyses/new2/ticks", json={"ticks": [bad]}, headers=W).status_code == 200
        gate = c.get("/v1/analyses/new2", headers=R).json()["gate"]
        assert gate["schema_continuity"] == "out-of-domain:tool_success_rate" and gate["valid_fraction"] == 0.0, gate


def test_a_voided_analysis_still_rolls_back_and_never_raises_traffic(tmp_path, step_sim):
    """Void at tick 5 of the step scenario, then the rest of its ticks: the harm still rolls the
    analysis back (family A, as without the void: 364 there, one tick later here for the void's own
    tick), Argo says rollback, Flagger's rollback hook passes and its traffic hooks refuse. Before the
    fix the verdict stayed a final extend with no fired family (rollback hook 409). Replay and a
    restart reproduce it. A void reason with a control character or a lone surrogate, and a second
    void, are refused (422) and store nothing."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary)
    hook = lambda c, h: c.post(f"/v1/flagger/{h}", json={"name": "x", "namespace": "y", "phase": "Progressing",  # noqa: E731
                                                         "metadata": {"analysis": "v"}}, headers=W).status_code
    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"id": "v", "config": json.loads(cfg.to_json()), "window": 480}, headers=W)
        assert r.status_code == 201, r.text
        assert c.post("/v1/analyses/v/ticks", json={"ticks": ticks[:5]}, headers=W).status_code == 200
        for bad in ("a\u0000b", "two\nlines", "\udcff"):  # control characters and a lone surrogate: 422, nothing stored
            r = c.post("/v1/analyses/v/void", content=json.dumps({"reason": bad}), headers={**W, "content-type": "application/json"})
            assert r.status_code == 422, (bad, r.status_code, r.text)
        assert c.get("/v1/analyses/v", headers=R).json()["n_ticks"] == 5
        assert c.post("/v1/analyses/v/void", json={"reason": "source misconfigured"}, headers=W).json()["verdict"] == "extend"
        r = c.post("/v1/analyses/v/void", json={"reason": "again"}, headers=W)
        assert r.status_code == 422 and "already voided" in r.text, r.text
        for h in ("rollout", "confirm-traffic-increase", "confirm-promotion", "rollback"):
            assert hook(c, h) == 409, h  # closed: nothing promotes, nothing to roll back yet
        r = c.post("/v1/analyses/v/ticks", json={"ticks": ticks[5:]}, headers=W)
        assert r.status_code == 200, r.text
        v = c.get("/v1/analyses/v", headers=R).json()
        assert v["verdict"] == "rollback" and v["final"] and v["fired_families"] == ["A"], v["verdict"]
        assert v["gate"]["decided_at_tick"] == 365 and v["gate"]["fail_closed"] == "voided by operator: source misconfigured"
        assert c.get("/v1/argo/analyses/v", headers=R).json()["verdict"] == "rollback"
        assert [hook(c, h) for h in ("rollout", "confirm-traffic-increase", "confirm-promotion", "rollback")] == [409, 409, 409, 200]
        assert c.post("/v1/analyses/v/replay", headers=R).json()["ok"] is True
    with make_client(tmp_path) as c:
        assert c.get("/v1/analyses/v", headers=R).json()["verdict"] == "rollback"
