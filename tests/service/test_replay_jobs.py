"""Replay as a bounded background job (issue 23, item 5): 202 + job, GET for the result, bounded by
the replay slots, recorded in the store; ``serve`` runs jobs in a lower-priority worker process; the
CLI ``deploysignal service replay`` waits for the job."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from typer.testing import CliRunner

from deploysignal.cli import app as cli
from deploysignal.service._replay_jobs import ReplayJobs
from deploysignal.store._jobs import put_job

from ._proc import READ, WRITE, Server
from .conftest import R, W, make_client, ticks_of


class _Held:
    """A replay that starts (``inside``) and then waits for ``release`` before it runs."""

    def __init__(self, replay):
        self.replay, self.inside, self.release = replay, threading.Event(), threading.Event()

    def __call__(self, aid):
        self.inside.set()
        self.release.wait(30)
        return self.replay(aid)


def _analysis(c, cfg, sim, aid="j", n=40):
    assert c.post("/v1/analyses", json={"id": aid, "config": cfg.model_dump(mode="json")}, headers=W).status_code == 201
    assert c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks_of(sim.canary, 0, n)}, headers=W).status_code == 200


def test_replay_job_202_then_get(tmp_path, step_sim, monkeypatch):
    sim, cfg = step_sim
    c = make_client(tmp_path, max_replays=1, wait_timeout=0.5)
    with c:
        _analysis(c, cfg, sim)
        jobs, m = c.app.state.replays, c.app.state.manager
        held = _Held(m._replay)
        monkeypatch.setattr(m, "_replay", held)
        r = c.post("/v1/analyses/j/replay", params={"wait": "false"}, headers=R)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] == "running" and job["analysis"] == "j" and r.headers["location"] == f"/v1/analyses/j/replays/{job['job']}"
        assert held.inside.wait(30)
        assert c.get(r.headers["location"], headers=R).json()["state"] == "running"
        # the one slot is taken: another job (either form) waits wait_timeout, then 503, nothing recorded
        for params in ({"wait": "false"}, {}):
            busy = c.post("/v1/analyses/j/replay", params=params, headers=R)
            assert busy.status_code == 503 and "replay" in busy.json()["detail"] and int(busy.headers["retry-after"]) >= 1
        # ingest is not behind the running replay
        assert c.post("/v1/analyses/j/ticks", json={"ticks": ticks_of(sim.canary, 40, 41)}, headers=W).status_code == 200
        held.release.set()
        done = jobs.wait("j", job["job"])
        assert done["state"] == "done" and done["result"]["ok"] is True and done["result"]["ticks"] in (40, 41)
        got = c.get(f"/v1/analyses/j/replays/{job['job']}", headers=R).json()
        assert got["state"] == "done" and got["result"] == done["result"] and got["finished"] >= got["created"]
        # the job belongs to its analysis: under another id (or an unknown job) it is 404
        _analysis(c, cfg, sim, "k", 5)
        assert c.get(f"/v1/analyses/k/replays/{job['job']}", headers=R).status_code == 404
        assert c.get("/v1/analyses/j/replays/rj-0000", headers=R).status_code == 404
        # the synchronous form (0.4.0's route and body) runs the same job and answers its report
        sync = c.post("/v1/analyses/j/replay", headers=R).json()
        assert sync["ok"] is True and sync["ticks"] == 41 and sync["job"].startswith("rj-")
        assert c.post("/v1/analyses/nope/replay", params={"wait": "false"}, headers=R).status_code == 404


def test_a_failed_job_is_reported_and_a_dead_owner_is_lost(tmp_path, step_sim, monkeypatch):
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        _analysis(c, cfg, sim)
        m = c.app.state.manager

        def broken(aid):
            raise RuntimeError("simulated failure")

        monkeypatch.setattr(m, "_replay", broken)
        r = c.post("/v1/analyses/j/replay", headers=R)
        assert r.status_code == 409 and "failed" in r.json()["detail"] and "simulated failure" in r.json()["detail"]
        assert c.get(f"/v1/analyses/j/replays/{r.json()['job']}", headers=R).json()["state"] == "failed"
        # a job recorded by a process that no longer runs (here: pid 2**22 + 1, above Linux's pid_max default)
        import socket

        put_job(m.store, "rj-dead", "j", f"{socket.gethostname()}:{2**22 + 1}", "2026-01-01T00:00:00.000+00:00", 10)
        lost = c.get("/v1/analyses/j/replays/rj-dead", headers=R).json()
        assert lost["state"] == "lost" and "submit it again" in lost["result"]["error"]
        monkeypatch.undo()
        assert m.replay("j")["ok"] is True  # the failed job gave its slot back


def test_process_mode_gives_the_thread_report(tmp_path, step_sim):
    """A job in a worker process (what serve runs) reports what the in-process replay reports."""
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        _analysis(c, cfg, sim, n=120)
        m = c.app.state.manager
        jobs = ReplayJobs(m, f"sqlite:///{tmp_path / 'ds.db'}", "process")
        try:
            job = jobs.submit("j")
            done = jobs.wait("j", job["job"])
        finally:
            jobs.close()
        assert done["state"] == "done" and done["result"] == m.replay("j")
    assert ReplayJobs(m, "sqlite:///:memory:", "process").mode == "thread"  # a private in-memory store: a thread


def test_cli_service_replay_waits_for_the_job(tmp_path, step_sim):
    sim, cfg = step_sim
    (tmp_path / "read.token").write_text(READ)
    with Server(tmp_path, f"sqlite:///{tmp_path / 'srv.db'}", extra=["--max-clock-skew", "-1"]) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        hw = {"Authorization": f"Bearer {WRITE}"}
        assert c.post("/v1/analyses", json={"id": "cli", "config": cfg.model_dump(mode="json")}, headers=hw).status_code == 201
        assert c.post("/v1/analyses/cli/ticks", json={"ticks": ticks_of(sim.canary, 0, 30)}, headers=hw).status_code == 200
        args = ["service", "replay", "--analysis", "cli", "--url", srv.url, "--token-file", str(tmp_path / "read.token"), "--poll", "0.1"]
        r = CliRunner().invoke(cli, [*args, "--json"])
        assert r.exit_code == 0, r.output
        job = json.loads(r.output)
        assert job["state"] == "done" and job["result"]["ok"] is True and job["result"]["ticks"] == 30
        r = CliRunner().invoke(cli, ["service", "replay", "--analysis", "none", "--url", srv.url, "--token-file", str(tmp_path / "read.token")])
        assert r.exit_code == 2 and "404" in r.output
        (tmp_path / "bad.token").write_text("nope")
        r = CliRunner().invoke(cli, ["service", "replay", "--analysis", "cli", "--url", srv.url, "--token-file", str(tmp_path / "bad.token")])
        assert r.exit_code == 2 and "401" in r.output


@pytest.mark.parametrize("mode", ["thread"])
def test_settings_reject_an_unknown_mode(tmp_path, mode):
    from pydantic import ValidationError

    from deploysignal.service import ServiceSettings

    assert ServiceSettings(insecure=True, replay_in=mode).replay_in == mode
    with pytest.raises(ValidationError):
        ServiceSettings(insecure=True, replay_in="fork")
