"""``deploysignal bench --noisy-neighbour`` runs end to end (a real ``serve``; small phases, so the
figures themselves are not asserted here: docs/performance.md records them)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deploysignal.cli import app


def test_noisy_neighbour_bench_runs_and_reports_both_phases():
    r = CliRunner().invoke(app, ["bench", "--noisy-neighbour", "--noisy-seconds", "2", "--noisy-batch", "300", "--noisy-rate", "10", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    for phase in ("b_alone", "b_with_neighbour"):
        b = res[phase]
        assert b["n"] >= 10 and 0 < b["p50_ms"] <= b["p99_ms"] <= b["max_ms"], b
        assert 0 < b["server"]["p50_ms"] <= b["server"]["p99_ms"], b
    assert res["a"]["batches"] >= 1 and res["a"]["ticks_per_s"] > 0
    assert res["p99_ratio"] == res["b_with_neighbour"]["p99_ms"] / res["b_alone"]["p99_ms"]
    assert res["b_replay_ok"] is True  # B's ticks, interleaved with A's batches, replay to the same chain
    assert res["store"] == "sqlite" and len(res["load_average_before"]) == 3
