"""Acceptance: SIGKILL a real uvicorn service mid-ingest, restart it: no acknowledged tick lost, and the
verdicts and audit lines are identical to an uninterrupted run."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

from deploysignal.audit import settings_record
from deploysignal.audit._binding import checkpoint_line, input_line
from deploysignal.audit._chain import GENESIS, chain_lines, chain_records, verify_chain
from deploysignal.calibration import canonical_json
from deploysignal.service import AnalysisEngine
from deploysignal.service._manager import tick_payload

from ._proc import READ, WRITE, Server
from .conftest import ticks_of

W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


def _spec_sha(lines):
    """The stored header's spec_sha256 (it binds the analysis row, creation time included, which this test
    does not fix; the integrity check compares it with the row on every load)."""
    return json.loads(lines[0])["record"]["spec_sha256"]


def _uninterrupted(cfg, ticks, settings, spec_sha256, batch=8, every=50):
    # the service's default policy for new analyses: an out-of-domain value is missing for its signal
    eng = AnalysisEngine(cfg.to_json(), {"out_of_domain": "missing", **settings}, encoding="jcs")  # new analyses: RFC 8785 lines
    header = {**settings_record(eng.config, eng.settings, "jcs"), "store_binding": 1, "spec_sha256": spec_sha256}
    lines, head = _reference(eng, header, ticks, tick_payload, batch, every)
    verdicts = [json.loads(ln)["record"]["verdict"] for ln in lines if json.loads(ln)["record"].get("family") == "gate"]
    return lines, verdicts, head


def _reference(eng, header, ticks, payload, batch=8, every=50):
    """The chain a service writes for ``ticks`` in batches of ``batch`` with ``--snapshot-every every``
    (store binding 1): per tick its input record and records, a checkpoint of the engine's state after
    each batch that crosses a multiple of ``every``."""
    lines, head = chain_records([header], GENESIS, eng.encoding)
    for i in range(0, len(ticks), batch):
        valid = eng.validate(ticks[i:i + batch])
        for k, (t, r) in enumerate(zip(valid, eng.ingest(valid)), start=i):
            more, head = chain_lines([input_line(k, payload(t)), *r.lines], head)
            lines.extend(more)
        if i // every != eng.n_ticks // every:
            more, head = chain_lines([checkpoint_line(eng.n_ticks, json.dumps(eng.state(), allow_nan=False))], head)
            lines.extend(more)
    return lines, head


def _kill_and_resume(tmp_path, store: str, create: dict, ticks: list[dict]) -> tuple[list[str], dict]:
    """Feed ``ticks`` in batches of 8, SIGKILL the server after >= 25 acknowledged batches, restart it,
    resend every unacknowledged batch with its id; (audit lines, final verdict body)."""
    batches = [(f"b{i:04d}", ticks[i : i + 8]) for i in range(0, len(ticks), 8)]
    acked: list[dict] = []
    srv = Server(tmp_path, store, extra=["--snapshot-every", "50"])
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.post("/v1/analyses", json={"id": "k", **create}, headers=W)
            assert r.status_code == 201, r.text
        stop = threading.Event()

        def feed() -> None:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                for bid, batch in batches:
                    if stop.is_set():
                        return
                    try:
                        resp = c.post("/v1/analyses/k/ticks", json={"batch_id": bid, "ticks": batch}, headers=W)
                    except httpx.HTTPError:
                        return  # the server died under us: this batch was not acknowledged
                    assert resp.status_code == 200, resp.text
                    acked.append(resp.json())

        t = threading.Thread(target=feed)
        t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 25 and time.monotonic() < deadline:
            time.sleep(0.002)
        srv.kill(signal.SIGKILL)  # mid-stream: the feeder has a request in flight
        stop.set()
        t.join(timeout=30)
        assert 25 <= len(acked) < len(batches), "the kill must land in the middle of the ingest"
        n_acked = acked[-1]["n_ticks"]
    finally:
        srv.kill(signal.SIGKILL)

    with Server(tmp_path, store, extra=["--snapshot-every", "50"]) as srv2, httpx.Client(base_url=srv2.url, timeout=60) as c:
        v = c.get("/v1/analyses/k", headers=R).json()
        assert v["n_ticks"] >= n_acked  # every acknowledged tick survived
        # An at-least-once client resends every batch it has no acknowledgement for, with the same id.
        dup = 0
        for bid, batch in batches[len(acked) :]:
            r = c.post("/v1/analyses/k/ticks", json={"batch_id": bid, "ticks": batch}, headers=W)
            assert r.status_code == 200, r.text
            dup += r.json()["duplicate"]
        assert dup <= 1  # at most the in-flight batch had committed before the kill
        lines = c.get("/v1/analyses/k/audit", headers=R).text.splitlines()
        final = c.get("/v1/analyses/k", headers=R).json()
        assert c.post("/v1/analyses/k/replay", headers=R).json()["ok"] is True
    return lines, final


def test_sigkill_mid_ingest_loses_no_acknowledged_tick(tmp_path, step_sim, store_url):
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary)
    lines, final = _kill_and_resume(tmp_path, store_url, {"config": json.loads(cfg.to_json()), "window": 480}, ticks)
    ref_lines, ref_verdicts, ref_head = _uninterrupted(cfg, ticks, {"window": 480}, _spec_sha(lines))
    assert lines == ref_lines  # byte-identical audit, hence identical verdicts at every tick
    got_verdicts = [json.loads(ln)["record"]["verdict"] for ln in lines if json.loads(ln)["record"].get("family") == "gate"]
    assert got_verdicts == ref_verdicts
    assert final["verdict"] == ref_verdicts[-1] == "rollback"
    assert verify_chain(lines, head=final["audit_head"]).ok and final["audit_head"] == ref_head


def test_sigkill_split_analysis(tmp_path):
    """The same for a split analysis (SQLite): after the kill and the resend, the audit lines equal one
    uninterrupted split engine's, byte for byte."""
    from deploysignal.service._split_engine import SplitEngine, split_config
    from deploysignal.split import MetricSpec

    from ._split import METRICS, split_ticks

    ticks = split_ticks(11, 480, error_ratio=1.4)
    create = {"mode": "split", "metrics": METRICS, "window": 480, "canary_share": 0.5}
    lines, final = _kill_and_resume(tmp_path, f"sqlite:///{tmp_path / 'k.db'}", create, ticks)
    specs = [MetricSpec(m, meta["kind"], meta["direction"], tuple(meta.get("edges", ())), meta["tolerance"]) for m, meta in METRICS.items()]
    eng = SplitEngine(split_config(specs)[1], {"window": 480, "canary_share": 0.5}, encoding="jcs")
    ref, head = _reference(eng, {**eng.header(), "store_binding": 1, "spec_sha256": _spec_sha(lines)}, ticks, lambda t: canonical_json(t.to_json()))
    assert lines == ref and final["audit_head"] == head and final["mode"] == "split"
