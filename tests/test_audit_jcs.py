"""Audit lines in RFC 8785 (JCS) since 0.5.0, old logs in their own encoding (issue 24).

The fast route of :func:`deploysignal.audit.jcs_line` (msgspec where its bytes are provably RFC 8785's)
is compared with the ``rfc8785`` library on random records over the whole float range and on every
record a gate writes; a new ``gate --audit`` log is re-encoded line by line with the library; ``audit
verify`` and ``replay`` pick the encoding from the header; old logs keep theirs."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import rfc8785
from typer.testing import CliRunner

from deploysignal.audit import _encoding
from deploysignal.audit import JCS, REPR, AuditWriter, check_chain, decision_lines, encoding_of, jcs_line, read_audit, replay
from deploysignal.audit._chain import GENESIS, chain_records, record_text, verify_chain
from deploysignal.calibration import canonical_json, compile_baseline
from deploysignal.cli import app
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import simulate

runner = CliRunner()


def _lib(obj) -> str:
    return rfc8785.dumps(obj).decode("utf-8")


def test_hand_checked_example():
    """Written by hand from RFC 8785 section 3.2.2.3 / ECMA-262 Number::toString, not from either encoder."""
    rec = {"b": [1e21, 1e-7, -0.0, 5e-324, 3.0, 1e-6, 1e16, 123456789012345680.0, 0.1, 1e-5, 2.5e-5, -1.5, 1e20],
           "a": {"é": "€\n\x1f\x7f/", "Z": None, "t": True}, "10": 9007199254740991, "1": False}
    want = ('{"1":false,"10":9007199254740991,"a":{"Z":null,"t":true,"é":"€\\n\\u001f\x7f/"},'
            '"b":[1e+21,1e-7,0,5e-324,3,0.000001,10000000000000000,123456789012345680,0.1,0.00001,0.000025,-1.5,100000000000000000000]}')
    assert jcs_line(rec) == want == _lib(rec)
    assert canonical_json({"x": [1e21, 1e-7, -0.0, 3.0]}) == '{"x":[1e+21,1e-07,-0.0,3.0]}'  # the old encoding differs


def _random_float(rng: np.random.Generator) -> float:
    """Bit patterns, notation boundaries +- a few ulps, integers-as-floats, decimals."""
    kind = rng.integers(6)
    if kind == 0:
        return struct.unpack("<d", rng.bytes(8))[0]
    if kind == 1:
        edge = float(rng.choice([1e-7, 1e-6, 1e-5, 1e-4, 1e15, 1e16, 1e20, 1e21, 2.0**53, 5e-324, 1.0, 0.0]))
        x = edge
        for _ in range(int(rng.integers(0, 4))):
            x = math.nextafter(x, math.inf if rng.random() < 0.5 else -math.inf)
        return x * (1 if rng.random() < 0.5 else -1)
    if kind == 2:
        return float(rng.integers(-(2**60), 2**60)) / float(2 ** rng.integers(0, 8))
    if kind == 3:
        return float(10.0 ** rng.uniform(-330, 308.2))
    if kind == 4:
        return round(float(rng.normal(0, 1000)), int(rng.integers(0, 6)))
    return float(rng.normal())


def _random_value(rng: np.random.Generator, depth: int = 0):
    kind = rng.integers(9 if depth < 3 else 6)
    if kind <= 1:
        return _random_float(rng)
    if kind == 2:
        return int(rng.integers(-(2**62), 2**62)) >> int(rng.integers(0, 62))
    if kind == 3:
        return "".join(chr(int(c)) for c in rng.choice([0x0A, 0x1F, 0x22, 0x5C, 0x41, 0x7F, 0xE9, 0x2028, 0xFFFF, 0x1F600], size=int(rng.integers(0, 4))))
    if kind == 4:
        return [None, True, False][int(rng.integers(3))]
    if kind == 5:
        return -0.0
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    keys = ["a", "B", "é", "\ue000", "\U0001f600", "tick", ""]
    return {str(rng.choice(keys)) + str(i): _random_value(rng, depth + 1) for i in range(int(rng.integers(0, 4)))}


def _fast_value(rng: np.random.Generator, depth: int = 0):
    """A value inside the fast route's domain (ASCII keys, integers within 2**53 - 1, floats integral
    below 2**53 or non-integral with 1e-5 <= |x| < 1e16, any non-surrogate text), near its edges."""
    kind = rng.integers(7 if depth < 3 else 5)
    if kind == 0:
        x = float(10.0 ** rng.uniform(-5, 16))
        x = 0.25 if x.is_integer() or not 1e-5 <= x < 1e16 else x
        return x if rng.random() < 0.5 else -x
    if kind == 1:
        return float(rng.integers(-(2**53) + 1, 2**53))  # integral floats: written as integers
    if kind == 2:
        return int(rng.integers(-(2**53) + 1, 2**53)) >> int(rng.integers(0, 53))
    if kind == 3:
        cps = rng.integers(0, 0x110000, size=int(rng.integers(0, 5)))
        return "".join(chr(int(c)) for c in cps if not 0xD800 <= c < 0xE000)
    if kind == 4:
        return [None, True, False, -0.0][int(rng.integers(4))]
    if kind == 5:
        return [_fast_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {str(rng.choice(["a", "B", "tick", "", "z9", "_"])) + str(i): _fast_value(rng, depth + 1) for i in range(int(rng.integers(0, 4)))}


def test_fast_route_equals_the_library_on_random_records():
    """8,000 random records, half of them inside the fast route's domain and half over the whole float
    range (non-finite values, big integers, non-ASCII keys): jcs_line writes the library's bytes, or raises
    ValueError exactly when the library does. The records that take the fast route are counted: a record
    the library encodes on both sides proves nothing about the fast route."""
    assert _encoding.FAST_ROUTE  # this msgspec passed the import-time check
    rng = np.random.default_rng(8785)
    checked = raised = fast = 0
    for k in range(8_000):
        gen = _fast_value if k % 2 else _random_value
        rec = {"v": gen(rng), "w": [gen(rng), gen(rng)]}
        try:
            want = _lib(rec)
        except ValueError:
            with pytest.raises(ValueError):
                jcs_line(rec)
            raised += 1
            continue
        try:
            _encoding._ready(rec, 0)
            fast += 1
        except _encoding._Outside:
            pass
        assert jcs_line(rec) == want, rec
        checked += 1
    assert checked > 6_000 and raised > 50  # both sides exercised (NaN / inf / integers beyond 2**53)
    print(f"fast route: {fast} of {checked} records compared")
    assert fast >= 4_500, fast  # more than half of the records compared went through msgspec


def test_fast_route_writes_every_bmp_code_point_as_the_library():
    """Every code point U+0000-U+FFFF but the surrogates, and a few astral ones, as a string value (and
    each ASCII one as a key): through the fast route, the library's bytes."""
    text = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000) + "\U00010000\U0001f600\U0010ffff"
    rec = {"s": text, "k": {chr(c): c for c in range(0x80)}}
    assert _encoding._ready(rec, 0) is not None  # inside the fast route's domain (no _Outside)
    got, want = jcs_line(rec), _lib(rec)
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert got == want, (first, got[first - 10:first + 10] if first is not None else len(got), len(want))


def test_a_msgspec_that_writes_differently_turns_the_fast_route_off(monkeypatch):
    """The import-time self-check fails for an encoder that writes otherwise (keys unsorted), and with the
    fast route off every line is the library's."""
    import msgspec

    monkeypatch.setattr(_encoding, "_SORTED", msgspec.json.Encoder())
    assert _encoding._fast_route_holds() is False
    monkeypatch.setattr(_encoding, "FAST_ROUTE", False)
    rec = {"b": 1.0, "a": [1e-7, 0.5, "é"]}
    assert jcs_line(rec) == _lib(rec) == '{"a":[1e-7,0.5,"é"],"b":1}'


def test_every_record_a_gate_writes_is_the_library_encoding():
    """Fires, fail-closed-free ticks, both modes, cohorts: decision_lines == the library, record by record."""
    sim = simulate("slowbleed", seed=3, canary_ticks=240)
    cfg = compile_baseline(sim.baseline, seed=3, robust_covariance=False)
    fired = 0
    for mode in ("one-sample", "two-sample"):
        gate = Gate(cfg, GateSettings(mode=mode, window=200))
        ctl = sim.control.values if mode == "two-sample" else None
        for d in gate.update_many(sim.canary.timestamps, sim.canary.values, cohorts=["x" if i % 3 else "é" for i in range(len(sim.canary))], control=ctl):
            assert decision_lines(d) == [_lib(r) for r in d.records]
            assert decision_lines(d, REPR) == [canonical_json(r) for r in d.records]
            fired += any(r.get("fire") for r in d.records)
    assert fired > 0


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    d = tmp_path_factory.mktemp("jcs")
    assert runner.invoke(app, ["simulate", "step", "--seed", "5", "-o", str(d)]).exit_code == 0
    r = runner.invoke(app, ["calibrate", str(d / "baseline.csv"), "-o", str(d / "cfg.json"), "--seed", "5"])
    assert r.exit_code == 0, r.output
    audit = d / "audit.jsonl"
    r = runner.invoke(app, ["gate", str(d / "canary.csv"), "-c", str(d / "cfg.json"), "--audit", str(audit), "--window", "60"])
    assert r.exit_code in (0, 3, 4), r.output
    return d


def test_gate_audit_is_rfc8785_line_by_line_and_verifies_and_replays(step):
    audit = step / "audit.jsonl"
    lines = audit.read_text(encoding="utf-8").splitlines()
    header = json.loads(record_text(lines[0]))
    assert header["encoding"] == "jcs" and encoding_of(header) == JCS
    for line in lines:  # an independent re-encoding of every record with the library equals the line
        rec = record_text(line)
        assert rec is not None and _lib(json.loads(rec)) == rec
    assert any(canonical_json(json.loads(record_text(ln))) != record_text(ln) for ln in lines[1:])  # not the old encoding
    assert check_chain(audit).ok
    r = runner.invoke(app, ["replay", str(step / "canary.csv"), "-c", str(step / "cfg.json"), "--audit", str(audit)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", "verify", str(audit)])
    assert r.exit_code == 0, r.output
    # a record re-written in the old encoding (same values) breaks the chain at its line: the encoding is bound
    i = next(k for k, ln in enumerate(lines) if '"timestamp":' in ln)
    recs = [json.loads(record_text(ln)) for ln in lines]
    recs[i]["timestamp"] = float(recs[i]["timestamp"])  # what the gate holds (JSON gives back an int)
    forged, _ = chain_records(recs[:i], GENESIS, encoding=JCS)
    old_style = forged + chain_records(recs[i:], json.loads(forged[-1])["hash"], encoding=REPR)[0]
    assert old_style[i] != lines[i] and verify_chain(old_style).bad_line == i + 1


def test_header_encoding_is_bound_and_unknown_encodings_are_refused(step, tmp_path):
    lines = (step / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(record_text(ln)) for ln in lines]
    # the same records re-chained with a header claiming the old encoding: a valid chain of a different log,
    # whose lines are no longer the ones written (so the published head differs)
    relabelled, head = chain_records([{**recs[0], "encoding": "repr"}] + recs[1:])
    assert verify_chain(relabelled).ok and head != json.loads(lines[-1])["hash"]
    # an edit of the header's encoding in place breaks line 1
    edited = [lines[0].replace('"encoding":"jcs"', '"encoding":"repr"')] + lines[1:]
    assert verify_chain(edited).bad_line == 1
    # an encoding this version does not know: verify and replay refuse it at line 1
    future, _ = chain_records([{**recs[0], "encoding": "cbor"}] + recs[1:2], encoding=JCS)
    rep = verify_chain(future)
    assert not rep.ok and rep.bad_line == 1 and "cbor" in rep.reason
    path = tmp_path / "future.jsonl"
    path.write_text("\n".join(future) + "\n", encoding="utf-8")
    header, body = read_audit(path)
    from deploysignal import ReplayMismatch
    from deploysignal.calibration import CompiledConfig
    from deploysignal.sources import read_frame

    cfg = CompiledConfig.from_json((step / "cfg.json").read_text())
    with pytest.raises(ReplayMismatch, match="cbor") as err:
        replay(cfg, read_frame(step / "canary.csv"), body, header)
    assert err.value.line == 1


def test_old_logs_keep_their_encoding(tmp_path):
    """A log in the old encoding (header without ``encoding``: every log before 0.5.0, the service's
    analyses) verifies, and records that differ between encodings are re-encoded the old way."""
    recs = [{"family": "header", "gate_version": "0.4.0"}, {"timestamp": 1700259200.0, "alpha_consumed": -0.0, "x": 1e-05}]
    lines, head = chain_records(recs)
    assert record_text(lines[1]) == '{"alpha_consumed":-0.0,"timestamp":1700259200.0,"x":1e-05}'
    assert verify_chain(lines, head=head).ok
    sim = simulate("healthy", seed=2, canary_ticks=20)
    cfg = compile_baseline(sim.baseline, seed=2, robust_covariance=False)
    settings = GateSettings(window=10)
    path = tmp_path / "old.jsonl"
    with path.open("w", encoding="utf-8") as fh:  # written as before 0.5.0: the gate's Decision.lines
        w = AuditWriter(fh, cfg, settings, encoding=REPR)
        for d in Gate(cfg, settings).run(sim.canary):
            w.write_decision(d)
    header, body = read_audit(path)
    assert "encoding" not in json.loads(record_text(path.read_text().splitlines()[0])) or header["encoding"] == REPR
    assert check_chain(path).ok and replay(cfg, sim.canary, body, header) == len(body) > 0


def test_non_finite_values_keep_their_handling():
    """Records write non-finite numbers as null; an encoder given one raises ValueError (both encodings),
    and a line holding NaN is a broken line for verify, not an exception."""
    for bad in (math.nan, math.inf, -math.inf):
        for enc in (jcs_line, canonical_json):
            with pytest.raises(ValueError):
                enc({"x": bad})
    with pytest.raises(ValueError):
        jcs_line({"x": 2**53})
    lines, _ = chain_records([{"family": "header", "encoding": "jcs"}, {"x": 1.5}], encoding=JCS)
    rep = verify_chain([lines[0], lines[1].replace("1.5", "NaN")])
    assert not rep.ok and rep.bad_line == 2
