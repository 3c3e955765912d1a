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


def test_b_latency_counts_queueing_behind_a_late_request():
    """Review finding 7 (coordinated omission): B sends on a fixed schedule and its latency is timed from
    each request's scheduled send time, so the requests queued behind a slow one count with their wait,
    and every scheduled request is sent (rate x seconds samples). Before: timed from the actual send, a
    1 s stall counted once, and the stall dropped the requests it delayed from the count."""
    from deploysignal.service._bench import _paced

    now = [0.0]

    def sleep(s):
        now[0] += s

    def send():
        now[0] += 1.0 if len(calls) == 2 else 0.01  # the third request takes 1 s
        calls.append(now[0])
        return 5.0

    calls: list[float] = []
    e2e, srv = _paced(send, rate=10, seconds=2, clock=lambda: now[0], sleep=sleep)
    assert len(e2e) == len(srv) == 20
    assert max(e2e) >= 1000 - 1e-6
    assert sum(x >= 100 for x in e2e) >= 9  # the requests due during the stall waited for it
