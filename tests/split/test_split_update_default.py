"""The default :meth:`SplitGate.update` computes no evidence numbers in the compiled call (a library
caller that reads only verdicts pays what it paid before); the paths that read every tick's records
(the CLI's audit, its replay, the service) ask for them (``evidence=True``), and the records are the
same either way."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.service._split_engine import SplitEngine, split_config
from deploysignal.split import MetricSpec, SplitGate
from deploysignal.split._step import TickStep

from .test_split_compiled import stream


def _count(monkeypatch) -> list[int]:
    calls = [0]
    real = TickStep.evidence_buffers

    def spy(self):
        calls[0] += 1
        return real(self)

    monkeypatch.setattr(TickStep, "evidence_buffers", spy)
    return calls


def test_default_update_is_verdict_only(monkeypatch):
    calls = _count(monkeypatch)
    specs, settings, data = stream(7)
    lazy, eager = SplitGate(specs, settings), SplitGate(specs, settings)
    lazy_records = [lazy.update(data, t).records() for t in range(data.n_ticks)]
    assert calls[0] == 0  # the default call never allocates or fills evidence arrays
    assert [eager.update(data, t, evidence=True).records() for t in range(data.n_ticks)] == lazy_records
    assert calls[0] == data.n_ticks


def test_cli_replay_and_service_request_the_compiled_evidence(monkeypatch, tmp_path):
    calls = _count(monkeypatch)
    sig = tmp_path / "signals.yaml"
    sig.write_text("errors: {kind: event}\nlatency_ms: {kind: continuous, edges: [50, 100, 200, 400, 800]}\n")
    tick = {"arms": {"canary": {"units": 240, "events": {"errors": 3}, "buckets": {"latency_ms": [10, 50, 120, 40, 15, 5]}},
                     "stable": {"units": 4810, "events": {"errors": 41}, "buckets": {"latency_ms": [220, 1010, 2300, 890, 310, 80]}}}, "tier": None}
    p = tmp_path / "ticks.jsonl"
    ticks = [dict(tick, timestamp=1_700_000_000.0 + 60 * i) for i in range(6)]  # in the past: the service rejects future ticks
    p.write_text("".join(json.dumps(t) + "\n" for t in ticks))
    audit = tmp_path / "a.jsonl"
    r = CliRunner().invoke(app, ["gate", "--split-ticks", str(p), "--signals", str(sig), "--window", "10", "--audit", str(audit), "--json"])
    assert r.exit_code in (0, 3, 4), r.output
    assert calls[0] == 6  # gate --split --audit: one per tick
    r = CliRunner().invoke(app, ["replay", "--split-ticks", str(p), "--audit", str(audit)])
    assert r.exit_code == 0, r.output
    assert calls[0] == 12  # the replay runs the same path
    specs = [MetricSpec("errors", "event", "up"), MetricSpec("latency_ms", "continuous", "up", (50.0, 100.0, 200.0, 400.0, 800.0))]
    eng = SplitEngine(split_config(specs)[1], {"window": 10})
    eng.ingest(eng.validate(ticks[:5]))
    assert calls[0] == 17  # the service: one per ingested tick
