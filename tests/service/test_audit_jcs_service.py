"""Service analyses write RFC 8785 audit lines (review of issue 24, finding 1); older ones keep theirs.

A service analysis created now names ``"encoding": "jcs"`` in its header and every stored line is the
``rfc8785`` library's encoding of its record (ingest, cut-back, void, checkpoints); it verifies
(integrity check, ``audit verify --store``, dashboard) and replays. An analysis stored by the code
before (its header names no encoding, built here with that code's encoder) still verifies, replays and
takes new ticks, a cut-back and a void in its own encoding. Settings that an RFC 8785 header cannot
hold are refused up front (finding 2); ``AuditWriter.write_lines`` refuses lines of another encoding
(finding 3)."""

from __future__ import annotations

import io
import json
import re

import pytest
import rfc8785
from typer.testing import CliRunner

from deploysignal._exceptions import InputError
from deploysignal.audit import JCS, REPR, AuditWriter, decision_lines
from deploysignal.audit._chain import record_text, verify_chain
from deploysignal.calibration import canonical_json
from deploysignal.cli import app as cli
from deploysignal.dashboard._view import analysis_view
from deploysignal.gate import Gate, GateSettings
from deploysignal.service import _manager
from deploysignal.service._manager import AnalysisManager
from deploysignal.store import open_store

from .conftest import R, W, make_client, ticks_of

runner = CliRunner()
CREATED = "2026-01-01T00:00:00Z"


def _stored(url: str, aid: str) -> list[str]:
    st = open_store(url)
    try:
        return st.audit_lines(aid)
    finally:
        st.close()


#: what only one encoding writes for these records: an integral float timestamp (``1700259200`` / ``1700259200.0``)
#: and the reasons' ``é`` (raw / escaped); a line of the other encoding fails the equalities below
_JCS_ONLY = re.compile(r'"timestamp":\d+[,}]|é')
_REPR_ONLY = re.compile(r'"timestamp":\d+\.0[,}]|\\u00e9')


def _count(pattern: re.Pattern[str], lines: list[str]) -> int:
    return sum(bool(pattern.search(record_text(ln) or "")) for ln in lines)


def _checks_pass(url: str, aid: str, lines: list[str]) -> None:
    """Integrity check, replay, ``audit verify --store`` and the dashboard's chain check all pass."""
    st = open_store(url)
    try:
        m = AnalysisManager(st, snapshot_every=16)
        assert m.verify(aid).binding == 1
        assert m.replay(aid)["ok"] is True
        head = st.get(aid).audit_head
    finally:
        st.close()
    r = runner.invoke(cli, ["audit", "verify", "--store", url, "--analysis", aid])
    assert r.exit_code == 0 and "store matches the chain" in r.output, r.output
    view = analysis_view(aid, lines, head=head)
    assert view["verified"]["ok"] is True and view["verified"]["lines"] == len(lines), view["verified"]


def _drive(url: str, ticks: list[dict], start: int, stop: int, *, cut: tuple[int, str] | None = None, void: str | None = None) -> None:
    st = open_store(url)
    try:
        m = AnalysisManager(st, snapshot_every=16)
        for i in range(start, stop, 10):
            m.ingest("a", ticks[i:min(i + 10, stop)])
        if cut is not None:
            m.cut("a", *cut)
        if void is not None:
            m.void("a", void)
    finally:
        st.close()


def test_a_new_service_analysis_writes_rfc8785_lines(tmp_path, step_sim):
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    st = open_store(url)
    try:
        AnalysisManager(st).create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, CREATED)
    finally:
        st.close()
    _drive(url, ticks, 0, 40, cut=(35, "clock wedged at tick 35: ré-sent"))
    _drive(url, ticks, 35, 50, void="opérateur: stop")  # a new process view: the engine is rebuilt from the store (its header's encoding)
    lines = _stored(url, "a")
    assert json.loads(lines[0])["record"]["encoding"] == JCS
    assert all(record_text(ln) == rfc8785.dumps(json.loads(ln)["record"]).decode() for ln in lines)
    assert _count(_JCS_ONLY, lines) > 40 and _count(_REPR_ONLY, lines) == 0  # the old encoding would fail the line above
    fams = {json.loads(ln)["record"]["family"] for ln in lines}
    assert {"header", "input", "checkpoint", "cut", "gate"} <= fams, fams
    _checks_pass(url, "a", lines)


def test_an_analysis_stored_before_keeps_its_encoding(tmp_path, step_sim, monkeypatch):
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 60)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    with monkeypatch.context() as mp:  # the manager as it was before this change: "repr" lines, a header naming no encoding
        mp.setattr(_manager, "JCS", REPR)
        st = open_store(url)
        try:
            AnalysisManager(st).create("a", cfg.to_json(), cfg.version_id, {"window": 480}, {"prometheus": None}, CREATED)
        finally:
            st.close()
        _drive(url, ticks, 0, 30)
    before = _stored(url, "a")
    assert "encoding" not in json.loads(before[0])["record"] and _count(_REPR_ONLY, before) > 20
    _drive(url, ticks, 30, 40, cut=(35, "clock wedged at tick 35: ré-sent"))
    _drive(url, ticks, 35, 45, void="opérateur: stop")
    lines = _stored(url, "a")
    assert lines[:len(before)] == before and len(lines) > len(before) + 50
    assert all(record_text(ln) == canonical_json(json.loads(ln)["record"]) for ln in lines)  # the new ticks in its own encoding
    assert _count(_REPR_ONLY, lines[len(before):]) > 10 and _count(_JCS_ONLY, lines) == 0
    _checks_pass(url, "a", lines)


def test_integers_beyond_2_53_are_refused_up_front(tmp_path, step_sim):
    """Finding 2: an InputError naming the option before any file or row is written (not a traceback)."""
    sim, cfg = step_sim
    big = str(2**53 + 1)
    (tmp_path / "cfg.json").write_text(cfg.to_json(), encoding="utf-8")
    assert runner.invoke(cli, ["simulate", "step", "--seed", "1", "-o", str(tmp_path)]).exit_code == 0
    log = tmp_path / "big.jsonl"
    r = runner.invoke(cli, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json"), "--audit", str(log), "--window", big])
    assert r.exit_code == 2 and "--window: 9007199254740993 is beyond" in " ".join(r.output.split()), r.output
    assert isinstance(r.exception, SystemExit) and not log.exists()
    r = runner.invoke(cli, ["gate", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "cfg.json"), "--window", big])
    assert r.exit_code in (0, 3, 4), r.output  # without an audit log the setting is still accepted (as before)
    with make_client(tmp_path) as c:  # the HTTP body bounds window and max_extensions (as before this change)
        r = c.post("/v1/analyses", json={"id": "big", "config": json.loads(cfg.to_json()), "window": 2**53 + 1}, headers=W)
        assert r.status_code == 422 and "window" in r.text, r.text
        assert c.get("/v1/analyses/big", headers=R).status_code == 404
    st = open_store(f"sqlite:///{tmp_path / 'ds.db'}")
    try:  # the manager itself (templates, library callers): an InputError naming the field, nothing stored
        with pytest.raises(InputError, match=r"column 'window': 9007199254740993 is beyond 9007199254740991 \(2\^53 - 1\)"):
            AnalysisManager(st).create("big", cfg.to_json(), cfg.version_id, {"window": 2**53 + 1}, {"prometheus": None}, CREATED)
        assert [r.id for r in st.list()] == []
    finally:
        st.close()


def test_write_lines_refuses_lines_of_another_encoding(step_sim):
    """Finding 3: the old idiom ``write_lines(d.lines)`` in an RFC 8785 log is refused, not chained into a log
    that verifies as altered; ``verify_chain`` names a line written in the other encoding."""
    sim, cfg = step_sim
    s = GateSettings(window=10)
    g = Gate(cfg, s)
    ds = [g.update(sim.canary.timestamps[i], sim.canary.values[i]) for i in range(12)]
    buf = io.StringIO()
    w = AuditWriter(buf, cfg, s)
    with pytest.raises(ValueError, match="write_decision"):
        w.write_lines(ds[0].lines)
    assert len(buf.getvalue().splitlines()) == 1  # the header only: nothing of the refused call
    for d in ds:
        w.write_lines(decision_lines(d, JCS))
    assert verify_chain(buf.getvalue().splitlines()).ok
    old = AuditWriter(io.StringIO(), cfg, s, encoding=REPR)
    old.write_lines(ds[0].lines)  # a "repr" log takes Decision.lines as before
    # a log chained by hand with "repr" lines under a "jcs" header: verify says which encoding the line is in
    from deploysignal.audit._chain import chain_lines

    mixed, _ = chain_lines([rfc8785.dumps(json.loads(buf.getvalue().splitlines()[0])["record"]).decode(), *ds[0].lines])
    rep = verify_chain(mixed)
    assert not rep.ok and rep.bad_line == 2 and "written in the 'repr' encoding" in rep.reason, rep
