"""Issue 23, item 7: ``gate --audit`` writes a hash-chained log that ``audit verify`` accepts, ``replay``
checks the chain too, and an old unchained log gets a message that says what it is. Cost: about 15 s."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deploysignal.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    assert runner.invoke(app, ["simulate", "step", "--seed", "4", "-o", str(d)]).exit_code == 0
    assert runner.invoke(app, ["calibrate", str(d / "baseline.csv"), "-o", str(d / "cfg.json"), "--seed", "4"]).exit_code == 0
    return d


def test_cli_audit_log_is_chained_and_verifies(scenario):
    """``gate --audit F`` then ``audit verify F`` passed nowhere on 0.4.0 ("chain broken at line 1")."""
    audit = scenario / "audit.jsonl"
    r = runner.invoke(app, ["gate", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(audit)])
    assert r.exit_code in (0, 3, 4), r.output
    r = runner.invoke(app, ["audit", "verify", str(audit)])
    assert r.exit_code == 0 and "audit chain intact" in r.output, r.output
    lines = audit.read_text().splitlines()
    assert json.loads(lines[0])["record"]["family"] == "header"
    head = json.loads(lines[-1])["hash"]
    assert runner.invoke(app, ["audit", "verify", str(audit), "--head", head]).exit_code == 0
    short = scenario / "short.jsonl"
    short.write_text("\n".join(lines[:-1]) + "\n")
    r = runner.invoke(app, ["audit", "verify", str(short), "--head", head])
    assert r.exit_code == 1 and "lines missing at the end" in r.output
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(audit)])
    assert r.exit_code == 0 and "hash chain intact" in r.output, r.output
    # a record left as it was but its hash rewritten: replay's record comparison passes, the chain does not
    env = json.loads(lines[5])
    forged = scenario / "forged.jsonl"
    forged.write_text("\n".join(lines[:5] + [lines[5].replace(env["hash"], "0" * 64)] + lines[6:]) + "\n")
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(forged)])
    assert r.exit_code == 1 and "hash chain is broken" in r.output and "audit line 6" in r.output, r.output


def test_old_unchained_cli_log_gets_a_clear_message(scenario):
    """A log of plain records (``gate --audit`` up to 0.4.0): ``audit verify`` says it is unchained (format 1)
    instead of "chain broken at line 1"; ``replay`` still checks its records and says there is no chain."""
    from deploysignal.audit import REPR, AuditWriter
    from deploysignal.calibration import CompiledConfig
    from deploysignal.gate import Gate, GateSettings
    from deploysignal.sources import read_frame

    audit = scenario / "audit_v1.jsonl"
    # the records as 0.4.0 wrote them (its float encoding, since 0.5.0 "repr"; a header naming no encoding)
    cfg, settings = CompiledConfig.from_json((scenario / "cfg.json").read_text()), GateSettings()
    with audit.open("w", encoding="utf-8") as fh:
        writer = AuditWriter(fh, cfg, settings, encoding=REPR)
        for d in Gate(cfg, settings).run(read_frame(scenario / "canary.csv")):
            writer.write_decision(d)
    records = [json.loads(x)["record"] for x in audit.read_text().splitlines()]
    del records[0]["encoding"]
    plain = [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records]
    audit.write_text("\n".join(plain) + "\n")
    r = runner.invoke(app, ["audit", "verify", str(audit)])
    assert r.exit_code == 1 and "unchained audit log (format 1" in r.output and "chain broken" not in r.output, r.output
    r = runner.invoke(app, ["audit", "verify", str(audit), "--json"])
    assert json.loads(r.output)["format"] == 1
    r = runner.invoke(app, ["replay", str(scenario / "canary.csv"), "-c", str(scenario / "cfg.json"), "--audit", str(audit)])
    assert r.exit_code == 0 and "unchained log of format 1" in r.output, r.output
