"""Review fixes of the issue-23 hardening: what 0.4.0 accepted stays readable (replay of a real 0.4.0
log); a gate that failed closed or was voided never proceeds but still rolls back."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from deploysignal.cli import app

FIX = Path(__file__).parent / "fixtures" / "v040_rate95"


def test_a_real_0_4_0_log_with_an_out_of_domain_rate_still_replays():
    """``fixtures/v040_rate95`` was written by 0.4.0 (see its README): row 11 holds a success rate of 95,
    which 0.4.0 accepted. New input is screened (``gate`` on the same file is exit 2 naming the row and
    signal), but replay re-derives what was accepted: every record matches (exit 0)."""
    runner = CliRunner()
    r = runner.invoke(app, ["replay", "-c", str(FIX / "cfg.json"), "--audit", str(FIX / "audit040.jsonl"), str(FIX / "canary.csv")])
    assert r.exit_code == 0, r.output
    assert "120 records match" in " ".join(r.output.split())
    r = runner.invoke(app, ["gate", "-c", str(FIX / "cfg.json"), str(FIX / "canary.csv"), "--window", "20"])
    assert r.exit_code == 2 and "row 11" in r.output and "tool_success_rate" in r.output, r.output
