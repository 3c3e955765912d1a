"""Issue 23, item 3: a tick from the future or in milliseconds is rejected before it can wedge an analysis
(gate: InputError; service: a clear 422 naming tick and field) and correct ticks go on being accepted;
an analysis wedged anyway (skew check off) can be voided by an operator (HTTP and CLI), in the audit
chain. Cost: about 25 s."""

from __future__ import annotations

import json

import pytest

from deploysignal._exceptions import InputError
from deploysignal.gate import Gate, GateSettings

from .conftest import W, make_client, ticks_of


def _create(client, cfg, aid="a1"):
    r = client.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": 480}, headers=W)
    assert r.status_code == 201, r.text


def test_gate_rejects_millisecond_timestamps_and_stays_usable(step_sim):
    sim, cfg = step_sim
    gate = Gate(cfg, GateSettings())
    t0 = float(sim.canary.timestamps[0])
    gate.update(t0, sim.canary.values[0])
    with pytest.raises(InputError, match=r"row 2, column 'timestamp': .* not epoch seconds .* epoch milliseconds\? divide by 1000"):
        gate.update(t0 * 1000.0 + 60_000.0, sim.canary.values[1])
    assert gate.update(t0 + 60.0, sim.canary.values[1]).tick == 1  # the correct tick after it is accepted


def test_service_rejects_ticks_from_the_future_and_in_milliseconds(tmp_path, step_sim):
    """The probe: one tick stamped a day or a year ahead, or in milliseconds, was accepted and every
    correct tick after it rejected as out of order. Now each is a 422 naming the tick and the field,
    nothing is stored, and the correct ticks go on being accepted. The server clock is pinned to just
    after the simulated canary's first hour."""
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    now = ticks[-1]["timestamp"] + 30.0
    with make_client(tmp_path) as c:
        c.app.state.manager.clock = lambda: now
        _create(c, cfg)
        assert c.post("/v1/analyses/a1/ticks", json={"ticks": ticks[:10]}, headers=W).status_code == 200
        for ahead, what in ((86_400.0, "ahead of the server clock"), (365 * 86_400.0, "ahead of the server clock")):
            bad = dict(ticks[10], timestamp=ticks[10]["timestamp"] + ahead)
            r = c.post("/v1/analyses/a1/ticks", json={"ticks": [ticks[10], bad]}, headers=W)
            assert r.status_code == 422 and "row 2" in r.json()["detail"] and what in r.json()["detail"], r.text
            assert "--max-clock-skew" in r.json()["detail"]
        ms = dict(ticks[10], timestamp=ticks[10]["timestamp"] * 1000.0)
        r = c.post("/v1/analyses/a1/ticks", json={"ticks": [ms]}, headers=W)
        assert r.status_code == 422 and "epoch milliseconds" in r.json()["detail"], r.text
        r = c.post("/v1/analyses/a1/ticks", json={"ticks": ticks[10:]}, headers=W)  # nothing was wedged
        assert r.status_code == 200 and r.json()["n_ticks"] == 60, r.text
    (tmp_path / "off").mkdir()
    with make_client(tmp_path / "off", max_clock_skew=None) as c:  # the check can be turned off
        c.app.state.manager.clock = lambda: now
        _create(c, cfg)
        r = c.post("/v1/analyses/a1/ticks", json={"ticks": [dict(ticks[0], timestamp=now + 86_400.0)]}, headers=W)
        assert r.status_code == 200, r.text


def test_operator_void_ends_a_wedged_analysis_in_the_audit_chain(tmp_path, step_sim):
    """A tick a year ahead accepted with the skew check off wedges the analysis (every correct tick is
    out of order). The operator voids it (write token): the verdict becomes a final extend that never
    promotes (Argo inconclusive, Flagger's confirm-promotion held), the void is a chained audit record
    with the reason, ``audit verify`` passes and replay reproduces every line, including after a
    restart from the store. The CLI voids straight in the store the same way."""
    from typer.testing import CliRunner

    from deploysignal.audit._chain import verify_chain
    from deploysignal.cli import app

    from .conftest import R

    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 20)
    with make_client(tmp_path, max_clock_skew=None) as c:
        _create(c, cfg)
        future = dict(ticks[10], timestamp=ticks[10]["timestamp"] + 365 * 86_400.0)
        assert c.post("/v1/analyses/a1/ticks", json={"ticks": ticks[:10] + [future]}, headers=W).status_code == 200
        assert c.post("/v1/analyses/a1/ticks", json={"ticks": ticks[11:]}, headers=W).status_code == 422  # wedged
        assert c.post("/v1/analyses/a1/void", json={"reason": "x"}, headers=R).status_code == 403
        assert c.post("/v1/analyses/a1/void", json={"reason": " "}, headers=W).status_code == 422
        r = c.post("/v1/analyses/a1/void", json={"reason": "tick 10 stamped a year ahead"}, headers=W)
        assert r.status_code == 200 and r.json()["tick"] == 11 and r.json()["verdict"] == "extend" and r.json()["final"], r.text
        v = c.get("/v1/analyses/a1", headers=R).json()
        assert v["verdict"] == "extend" and v["final"] and v["gate"]["fail_closed"] == "voided by operator: tick 10 stamped a year ahead"
        assert c.get("/v1/argo/analyses/a1", headers=R).json()["verdict"] == "extend"
        hook = c.post("/v1/flagger/confirm-promotion", json={"name": "x", "namespace": "y", "phase": "Progressing", "metadata": {"analysis": "a1"}}, headers=W)
        assert hook.status_code == 409, hook.text  # held
        lines = c.get("/v1/analyses/a1/audit", headers=R).text.splitlines()
        assert verify_chain(lines, head=v["audit_head"]).ok
        assert '"fail_closed":"voided by operator: tick 10 stamped a year ahead"' in lines[-1]
        assert c.post("/v1/analyses/a1/replay", headers=R).json()["ok"] is True
    with make_client(tmp_path, max_clock_skew=None) as c:  # a restart rebuilds the engine from the stored sequence
        assert c.get("/v1/analyses/a1", headers=R).json()["gate"]["fail_closed"].startswith("voided by operator")
        assert c.post("/v1/analyses/a1/replay", headers=R).json()["ok"] is True
        _create(c, cfg, "a2")
        assert c.post("/v1/analyses/a2/ticks", json={"ticks": ticks[:5]}, headers=W).status_code == 200
    r = CliRunner().invoke(app, ["service", "void", "--store", f"sqlite:///{tmp_path / 'ds.db'}", "--analysis", "a2", "--reason", "bad source"])
    assert r.exit_code == 0 and "voided at tick 5" in r.output, r.output
    r = CliRunner().invoke(app, ["service", "void", "--store", f"sqlite:///{tmp_path / 'ds.db'}", "--analysis", "nope", "--reason", "x"])
    assert r.exit_code == 2
    r = CliRunner().invoke(app, ["audit", "verify", "--store", f"sqlite:///{tmp_path / 'ds.db'}", "--analysis", "a2"])
    assert r.exit_code == 0, r.output
