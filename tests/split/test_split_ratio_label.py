"""The effect is a rate ratio and says so; audit logs written with 0.4.0's "odds ratio" wording still replay.

The split kernel's likelihood ``psi^a / (1 - q + q psi)^X`` (``q`` the canary's share of units) peaks at
the ratio of the arms' event rates (for a continuous metric: of their probabilities of exceeding an
edge), not at their odds ratio (on common errors at 50% vs 66.7%, odds ratio 2, rate ratio 1.33).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from deploysignal.cli import app

runner = CliRunner()
FIX = Path(__file__).resolve().parents[1] / "fixtures" / "split_audit_v040"


def _records(path: Path) -> list[dict]:
    return [json.loads(line)["record"] for line in path.read_text().splitlines()]


def test_v040_audit_log_replays_byte_for_byte():
    """A log written by 0.4.0 (header without ``ratio_label``, "canary odds ratio" in every explanation)
    replays unchanged: a header without the field reads as the legacy wording."""
    text = (FIX / "audit.jsonl").read_text()
    assert "ratio_label" not in text and text.count("canary odds ratio") == 47
    r = runner.invoke(app, ["replay", "--split", str(FIX / "requests.csv"), "--audit", str(FIX / "audit.jsonl")])
    assert r.exit_code == 0 and "replay ok: 73 lines match" in r.output, r.output


def test_new_log_names_the_rate_ratio_and_changes_nothing_else(tmp_path):
    """The same input today: the header records ``ratio_label: rate``, the explanations say "canary event
    rate x..." and "canary P(latency_ms > 100) x...", never "odds"; every record equals 0.4.0's once the
    wording is mapped (no number, verdict or field changes); the new log replays; the CLI's table and JSON
    say the same."""
    audit = tmp_path / "a.jsonl"
    r = runner.invoke(app, ["gate", "--split", str(FIX / "requests.csv"), "--signals", str(FIX / "signals.yaml"), "--window", "20",
                            "--audit", str(audit), "--json"])
    last = json.loads(r.output.strip().splitlines()[-1])
    assert (r.exit_code, last["verdict"], last["fired"]) == (4, "rollback", ["latency_ms"]), r.output
    assert last["effects"]["latency_ms"]["explain"].startswith("latency_ms: canary P(latency_ms > 100) x1.")
    assert last["effects"]["errors"]["explain"].startswith("errors: canary event rate x")
    new, old = _records(audit), _records(FIX / "audit.jsonl")
    assert new[0]["settings"]["ratio_label"] == "rate" and "odds" not in audit.read_text()
    assert {k: v for k, v in new[0]["settings"].items() if k != "ratio_label"} == old[0]["settings"]

    def reword(rec: dict) -> dict:
        s = json.dumps(rec)
        s = re.sub(r"(\w+): canary odds ratio of values > (\S+) x", lambda m: f"{m[1]}: canary P({m[1]} > {m[2]}) x", s)
        s = s.replace("canary odds ratio x", "canary event rate x")
        return json.loads(s)

    assert len(new) == len(old) == 73 and new[1:] == [reword(x) for x in old[1:]]
    assert sum("canary P(latency_ms > " in x.get("reason", "") for x in new) > 0
    r = runner.invoke(app, ["replay", "--split", str(FIX / "requests.csv"), "--audit", str(audit)])
    assert r.exit_code == 0 and "replay ok: 73 lines match" in r.output, r.output
    r = runner.invoke(app, ["gate", "--split", str(FIX / "requests.csv"), "--signals", str(FIX / "signals.yaml"), "--window", "20"])
    assert "canary P(latency_ms > 100)" in r.output and "odds" not in r.output, r.output
