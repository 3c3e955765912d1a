"""Review of branch migplan (issue #26): command-line precedence over --settings, the live SLA path, bounds."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deploysignal.cli._migration import _settings, app

runner = CliRunner()


def test_every_command_line_option_wins_over_the_settings_file(tmp_path) -> None:
    """A --settings YAML used to override an explicit --strategy (shadow -> direct: the unvalidated challenger
    served 100 % of live traffic from pair 0). Every option that maps to a ProtocolSettings field wins over
    the file; an option left unset keeps the file's value."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text("strategy: direct\nharm_tolerances: {latency: 0.2}\nsla_quantile: 0.95\n")
    st = _settings(cfg, None, None, None)
    assert (st.strategy, st.harm_tolerances[1], st.sla_quantile) == ("direct", 0.2, 0.95)
    st = _settings(cfg, 0.01, 0.999, "shadow")
    assert (st.strategy, st.harm_tolerances[1], st.sla_quantile) == ("shadow", 0.01, 0.999)
    for args, field, want in ((["--strategy", "canary"], "strategy", "canary"),
                              (["--latency-tolerance", "0.03"], "harm_tolerances", 0.03),
                              (["--sla-quantile", "0.98"], "sla_quantile", 0.98)):
        st = _settings(cfg, *(want if f == field else None for f in ("harm_tolerances", "sla_quantile", "strategy")))
        got = st.harm_tolerances[1] if field == "harm_tolerances" else getattr(st, field)
        assert got == want, (args, got)
    # end to end: the user asked for shadow (0 % exposure) with a file saying direct
    res = runner.invoke(app, ["migrate", "run", "--max-queries", "50", "--strategy", "shadow", "--settings", str(cfg),
                              "--time-scale", "1", "--json", str(tmp_path / "r.json")])
    assert res.exit_code in (0, 3), res.output
    assert "phases: shadow (pair 0)" in res.output and "tail" not in res.output, res.output
    assert json.loads((tmp_path / "r.json").read_text())["timeline"][0]["phase"] == "shadow"
    res = runner.invoke(app, ["migrate", "run", "--max-queries", "50", "--settings", str(cfg), "--time-scale", "1"])
    assert "phases: tail (pair 0)" in res.output, res.output  # unset: the file's strategy holds
