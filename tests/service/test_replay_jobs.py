"""Replay as a bounded background job (issue 23, item 5): 202 + job, GET for the result, bounded by
the replay slots, recorded in the store; ``serve`` runs jobs in a lower-priority worker process; the
CLI ``deploysignal service replay`` waits for the job."""

from __future__ import annotations

import json
import threading
import time

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
        # ingest does not wait for the replay slot (the replay holds no analysis lock; that it does not
        # slow ingest down with CPU is the bench's --noisy-replays figure, not asserted here)
        assert c.post("/v1/analyses/j/ticks", json={"ticks": ticks_of(sim.canary, 40, 41)}, headers=W).status_code == 200
        held.release.set()
        done = jobs.wait("j", job["job"])
        assert done["state"] == "done" and done["result"]["ok"] is True and done["result"]["ticks"] == 41  # the held replay reads the store after tick 40 was ingested
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
        jobs, created = c.app.state.replays, m.store.get("j").created
        # a running job of this process that no longer runs here (its process restarted under the same
        # host and pid would have a new owner id) is lost at once
        put_job(m.store, "rj-mine", "j", jobs.owner, "2026-01-01T00:00:00.000+00:00", 10, created)
        lost = c.get("/v1/analyses/j/replays/rj-mine", headers=R).json()
        assert lost["state"] == "lost" and "submit it again" in lost["result"]["error"]
        # another process' job: running until its deadline (and GRACE) has passed, then lost
        from deploysignal.store._jobs import set_running_result

        for job, deadline, state in (("rj-old", "2026-01-01T00:00:00.000+00:00", "lost"), ("rj-new", "2999-01-01T00:00:00.000+00:00", "running")):
            put_job(m.store, job, "j", "rp-elsewhere", "2026-01-01T00:00:00.000+00:00", 10, created)
            set_running_result(m.store, job, {"deadline": deadline})
            assert c.get(f"/v1/analyses/j/replays/{job}", headers=R).json()["state"] == state, job
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


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_settings_reject_an_unknown_mode(tmp_path, mode):
    from pydantic import ValidationError

    from deploysignal.service import ServiceSettings

    assert ServiceSettings(insecure=True, replay_in=mode).replay_in == mode
    with pytest.raises(ValidationError):
        ServiceSettings(insecure=True, replay_in="fork")


def test_a_job_past_its_deadline_is_failed_and_frees_its_slot(tmp_path, step_sim, monkeypatch):
    """Review finding 4: a hung replay (held forever) is recorded failed at its deadline, the wait=true
    route returns then (409 naming the deadline), and the slot is free for the next job."""
    sim, cfg = step_sim
    c = make_client(tmp_path, max_replays=1, wait_timeout=0.5, replay_timeout=1.0)
    with c:
        _analysis(c, cfg, sim)
        m = c.app.state.manager
        held = _Held(m._replay)
        monkeypatch.setattr(m, "_replay", held)
        r = c.post("/v1/analyses/j/replay", headers=R)
        assert r.status_code == 409 and "exceeded its deadline (1 s)" in r.json()["detail"], r.text
        assert c.get(f"/v1/analyses/j/replays/{r.json()['job']}", headers=R).json()["state"] == "failed"
        monkeypatch.undo()
        ok = c.post("/v1/analyses/j/replay", headers=R)
        assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text  # the slot was freed
        held.release.set()


def test_a_dead_worker_process_does_not_disable_replays(tmp_path, step_sim):
    """Review finding 3: a worker process killed (SIGKILL, as the OOM killer does) breaks the process
    pool; the next job gets a rebuilt pool and runs (before: BrokenProcessPool on every later submit,
    and a running row left for each)."""
    import os
    import signal

    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        _analysis(c, cfg, sim)
        m = c.app.state.manager
        jobs = ReplayJobs(m, f"sqlite:///{tmp_path / 'ds.db'}", "process")
        try:
            first = jobs.wait("j", jobs.submit("j")["job"])
            assert first["state"] == "done"
            pool = jobs._pool
            for p in list(pool._processes.values()):
                os.kill(p.pid, signal.SIGKILL)
            for _ in range(3000):
                if pool._broken:
                    break
                time.sleep(0.01)
            assert pool._broken, "the pool never noticed its dead worker"
            again = jobs.wait("j", jobs.submit("j")["job"])
            assert again["state"] == "done" and again["result"] == first["result"], again
        finally:
            jobs.close()


def test_a_recreated_analysis_does_not_serve_the_old_job(tmp_path, step_sim):
    """Review note 9: after delete and re-create under the same id, the deleted analysis' job is 404."""
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        _analysis(c, cfg, sim)
        job = c.post("/v1/analyses/j/replay", headers=R).json()["job"]
        assert c.get(f"/v1/analyses/j/replays/{job}", headers=R).status_code == 200
        assert c.delete("/v1/analyses/j", params={"force": "true"}, headers=W).status_code in (200, 204)
        _analysis(c, cfg, sim)
        assert c.get(f"/v1/analyses/j/replays/{job}", headers=R).status_code == 404


def test_a_worker_process_past_its_deadline_is_terminated(tmp_path, step_sim):
    """Process mode: a job still running at its deadline (0.5 s: the spawned worker is still importing)
    is recorded failed, its worker terminated and the pool dropped; the next job runs in a new pool."""
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        _analysis(c, cfg, sim)
        m = c.app.state.manager
        jobs = ReplayJobs(m, f"sqlite:///{tmp_path / 'ds.db'}", "process", timeout=0.5)
        drop = jobs._broken

        def slow_drop(pool):  # a loaded machine: the pool is dropped a while after the end is recorded
            time.sleep(0.3)
            drop(pool)

        jobs._broken = slow_drop
        try:
            late = jobs.wait("j", jobs.submit("j")["job"])
            assert late["state"] == "failed" and "exceeded its deadline" in late["result"]["error"], late
            assert jobs._pool is None  # dropped (its workers terminated) before the waiter woke
            jobs.timeout = 300.0
            again = jobs.wait("j", jobs.submit("j")["job"])
            assert again["state"] == "done" and again["result"]["ok"] is True, again
        finally:
            jobs.close()
