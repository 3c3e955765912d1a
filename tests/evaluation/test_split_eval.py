"""Split scenarios, the split-mode evaluation against peers, the Azure trace splitter and the split bench.

The quick evaluation is recomputed here (``deploysignal split-eval --quick``, about 30 CPU-seconds; no test
reads committed numbers). With 4 runs per cell a rate cannot be pinned down, so the assertions are the ones
a small run can refute: the split gate's pooled false-rollback rate is consistent with alpha (one-sided 95%
Clopper-Pearson lower bound <= alpha), it detects the quick regressions, pooled, at least as often as the
fixed-n test at half its sample, and nothing else changes between two runs with the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.evaluation._azure_split import AZURE_EFFECTS, AzureTrace, azure_split
from deploysignal.evaluation._split_eval import SplitEvalSettings, run_split_eval, summarise_split
from deploysignal.evaluation._split_gate import SplitGateMethod
from deploysignal.evaluation._split_peers import FixedNTest, group_quantiles, split_ticks, tick_aggregates
from deploysignal.evaluation._stats import cp_lower
from deploysignal.simulate._split import SPLIT_EFFECTS, SPLIT_WORLDS, simulate_split
from deploysignal.split import RequestLog, SplitGate, SplitSettings, requests_to_data

ALPHA = 0.05
runner = CliRunner()


@pytest.mark.parametrize("effect", [e for e in SPLIT_EFFECTS if e != "none"])
def test_effects_change_only_the_canary_arm(effect: str) -> None:
    """Same seed: the stable arm of an effect's log is the null log's, value for value; the canary differs."""
    null = simulate_split("regimes", "none", volume=800, share=0.3, seed=5)
    eff = simulate_split("regimes", effect, volume=800, share=0.3, seed=5)
    assert np.array_equal(null.canary, eff.canary) and np.array_equal(null.timestamps, eff.timestamps)
    st = ~null.canary
    changed = False
    for m in null.values:
        assert np.array_equal(null.values[m][st], eff.values[m][st], equal_nan=True), m
        changed |= not np.array_equal(null.values[m][~st], eff.values[m][~st], equal_nan=True)
    assert changed


def test_p99_tail_moves_p99_not_p50() -> None:
    r = simulate_split("iid", "p99_tail", volume=20000, share=0.5, seed=2)
    lat = r.values["latency_ms"]
    c, s = lat[r.canary], lat[~r.canary]
    p50c, p99c = np.nanpercentile(c, [50, 99])
    p50s, p99s = np.nanpercentile(s, [50, 99])
    assert abs(p50c / p50s - 1) < 0.01 and abs(p99c / p99s - 1.15) < 0.02


@pytest.mark.parametrize("world", list(SPLIT_WORLDS))
def test_worlds_are_seeded_and_share_is_honoured(world: str) -> None:
    a = simulate_split(world, volume=400, share=0.25, seed=11)
    b = simulate_split(world, volume=400, share=0.25, seed=11)
    assert np.array_equal(a.timestamps, b.timestamps) and all(np.array_equal(a.values[m], b.values[m], equal_nan=True) for m in a.values)
    assert np.all(np.diff(a.timestamps) >= 0) and a.tick.max() < 60
    if world == "share_step":  # 5% -> 10% -> 25% -> 50% by quarter
        q = [a.canary[(a.tick >= 15 * k) & (a.tick < 15 * (k + 1))].mean() for k in range(4)]
        assert q[0] < 0.08 and 0.07 < q[1] < 0.14 and 0.2 < q[2] < 0.3 and 0.45 < q[3] < 0.55
    else:
        assert abs(a.canary.mean() - 0.25) < 0.03
    if world == "sessions":  # routing by session: one arm per session
        arms = {}
        for u, c in zip(a.unit.tolist(), a.canary.tolist()):
            assert arms.setdefault(u, c) == c


def test_bad_scenario_arguments_are_named() -> None:
    with pytest.raises(Exception, match="unknown split world"):
        simulate_split("nosuch")
    with pytest.raises(Exception, match="share"):
        simulate_split("iid", share=1.0)
    r = runner.invoke(app, ["simulate", "split-iid", "--effect", "nosuch", "-o", "/tmp/never-written"])
    assert r.exit_code == 2 and "unknown split effect" in r.output
    r = runner.invoke(app, ["simulate", "step", "--volume", "900", "-o", "/tmp/never-written"])
    assert r.exit_code == 2 and "--volume apply to split scenarios" in r.output


def test_group_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(0)
    g = rng.integers(0, 7, 500)
    v = np.where(rng.random(500) < 0.1, np.nan, rng.lognormal(size=500))
    got = group_quantiles(g, v, (0.5, 0.99), 8)
    for k in range(8):
        x = v[(g == k) & ~np.isnan(v)]
        want = np.quantile(x, [0.5, 0.99]) if x.size else [np.nan, np.nan]
        np.testing.assert_allclose(got[:, k], want)


@pytest.mark.parametrize("effect", ["none", "errors_x2", "p99_tail"])
def test_aggregated_ticks_give_the_request_paths_blocks(effect: str) -> None:
    """The evaluation feeds request-randomised logs through split_ticks (one tick per tier): the blocks
    equal those of the request path (`gate --split REQUESTS`) on the same ticks, except blocks where one
    arm measured nothing (the aggregated format leaves the metric out: missing; the request path keeps a
    block whose likelihood ratio is exactly 1), and the gate decides the same at every tick."""
    r = simulate_split("bursts", effect, volume=300, share=0.3, ticks=20, seed=4)
    d1, off = SplitGateMethod().data(r)
    ts = r.timestamps.copy()
    ts[0] = r.start  # the request path counts ticks from the first request: align it with the log's ticks
    specs = list(r.metrics)
    d2 = requests_to_data(RequestLog(ts, r.canary, None, r.tier, r.values), specs, 60.0, 60.0)
    assert off == 0 and d1.n_ticks == d2.n_ticks == 20
    for m in d1.metrics:
        b1, b2 = d1.metrics[m], d2.metrics[m]
        keep = (b2.nc > 0) & (b2.nc < b2.n)
        tick2 = np.repeat(np.arange(20), np.diff(b2.tptr))
        tick1 = np.repeat(np.arange(20), np.diff(b1.tptr))
        assert np.array_equal(tick1, tick2[keep]), m
        for k in ("nc", "n", "a", "c1"):
            assert np.array_equal(getattr(b1, k), getattr(b2, k)[keep]), (m, k)
    settings = SplitSettings(window=20, max_extensions=0)
    g1, g2 = SplitGate(specs, settings), SplitGate(specs, settings)
    assert g1.run_batch(d1).verdicts == g2.run_batch(d2).verdicts
    for f1, f2 in zip(g1.families, g2.families):
        assert f1.evidence().log_evidence == pytest.approx(f2.evidence().log_evidence, rel=1e-12, abs=1e-12)


def test_split_ticks_follow_the_agreed_format() -> None:
    r = simulate_split("empty_ticks", volume=100, share=0.5, ticks=30, seed=1)
    ticks = split_ticks(r, by_tier=False)
    lat_edges = next(m.edges for m in r.metrics if m.name == "latency_ms")
    for t, d in enumerate(ticks):
        assert d["tier"] is None and set(d["arms"]) == {"canary", "stable"}
        for arm, flag in (("canary", True), ("stable", False)):
            sel = (r.tick == t) & (r.canary == flag)
            a = d["arms"][arm]
            assert a["units"] == int(sel.sum())
            lat = r.values["latency_ms"][sel]
            lat = lat[~np.isnan(lat)]
            if lat.size:  # le semantics: a value equal to an edge falls in the bucket it closes
                want = [int(np.sum(lat <= lat_edges[0]))] + [int(np.sum((lat > lo) & (lat <= hi))) for lo, hi in zip(lat_edges, lat_edges[1:])]
                want.append(int(np.sum(lat > lat_edges[-1])))
                assert a["buckets"]["latency_ms"] == want
            else:
                assert "latency_ms" not in a["buckets"]  # missing, not zeros


def test_fixed_n_half_uses_only_the_first_half() -> None:
    r = simulate_split("iid", "errors_x2", volume=3000, share=0.5, seed=3)
    p_half = FixedNTest(at=29).pvalues(r, 29)
    p_first = FixedNTest().pvalues(r.head(30))
    assert p_half == p_first


def test_simulated_split_log_runs_through_gate_split(tmp_path: Path) -> None:
    """`deploysignal simulate split-*` writes what `deploysignal gate --split ... --signals` reads."""
    r = runner.invoke(app, ["simulate", "split-diurnal", "--effect", "errors_x2", "--volume", "3000", "--share", "0.5", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["expected"] == "rollback" and truth["effect"] == "errors_x2"
    g = runner.invoke(app, ["gate", "--split", str(tmp_path / "requests.csv"), "--signals", str(tmp_path / "signals.json"), "--window", "60", "--json"])
    assert g.exit_code == 4, g.output
    assert json.loads(g.output.splitlines()[-1])["verdict"] == "rollback"


def test_azure_split_is_an_exact_split_and_effects_hit_the_canary_only() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    tr = AzureTrace(np.sort(rng.uniform(0, 1800, n)), rng.integers(0, 2, n), rng.integers(10, 8000, n).astype(float), rng.integers(1, 800, n).astype(float))
    null = azure_split(tr, share=0.5, seed=9)
    assert abs(null.canary.mean() - 0.5) < 0.05 and np.array_equal(null.values["generated_tokens"], tr.generated)
    for effect in AZURE_EFFECTS:
        eff = azure_split(tr, effect=effect, share=0.5, seed=9)
        assert np.array_equal(eff.canary, null.canary)
        for m in null.values:
            assert np.array_equal(eff.values[m][~eff.canary], null.values[m][~null.canary], equal_nan=True), (effect, m)
    trunc = azure_split(tr, effect="truncate", share=0.5, seed=9)
    assert np.all(trunc.values["generated_tokens"] <= tr.generated) and np.any(trunc.values["generated_tokens"] < tr.generated)
    sess = azure_split(tr, share=0.5, routing="session", seed=9)
    arms: dict[int, bool] = {}
    for u, c in zip(sess.unit.tolist(), sess.canary.tolist()):
        assert arms.setdefault(u, c) == c


def test_split_eval_cells_are_deterministic() -> None:
    s = SplitEvalSettings(reps_null=2, reps_power=2, volumes=(60.0,), shares=(0.5,), worlds=("iid", "bursts"), effects=("errors_x2",), ticks=12,
                          methods=("split", "fixed_n", "fixed_n_half"))
    a = summarise_split(s, run_split_eval(s))
    b = summarise_split(s, run_split_eval(s, jobs=2))
    assert a == b and {r["method"] for r in a} == {"split", "fixed_n", "fixed_n_half"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from deploysignal.evaluation._realdata import default_data_dir

    if not (default_data_dir() / "azure_llm").is_dir():  # as the other real-data tests: skipped, said why
        pytest.skip(f"the Azure LLM trace is not at {default_data_dir() / 'azure_llm'}")
    out = tmp_path_factory.mktemp("split_eval")
    res = runner.invoke(app, ["split-eval", "--quick", "-o", str(out / "split_eval.md")])
    assert res.exit_code == 0, res.output
    md = (out / "split_eval.md").read_text()
    assert "## False rollbacks on null worlds" in md and "## Azure LLM inference trace" in md
    return json.loads((out / "split_eval.json").read_text())


@pytest.mark.montecarlo
def test_quick_split_gate_valid_and_at_least_half_sample_power(quick: dict) -> None:
    rows = quick["rows"]
    nulls = [r for r in rows if r["kind"] == "null" and r["method"] == "split"]
    k, n = sum(r["rollback"]["k"] for r in nulls), sum(r["rollback"]["n"] for r in nulls)
    assert n == 28 and cp_lower(k, n, 0.95) <= ALPHA
    power = {m: [r for r in rows if r["kind"] == "power" and r["method"] == m] for m in ("split", "fixed_n_half")}
    det = {m: sum(r["rollback"]["k"] for r in rs) for m, rs in power.items()}
    assert det["split"] >= det["fixed_n_half"] and det["split"] > 0, det
    az = {(r["effect"], m): d["rollback"] for r in quick["azure"]["rows"] for m, d in r["methods"].items()}
    assert cp_lower(az[("none", "split")]["k"], az[("none", "split")]["n"], 0.95) <= ALPHA
    assert az[("truncate", "split")]["k"] > 0 and az[("error_bursts", "split")]["k"] > 0


def test_bench_cli_prints_the_split_section() -> None:
    r = runner.invoke(app, ["bench", "--ticks", "100", "--split-ticks", "30", "--json"])
    assert r.exit_code == 0, r.output
    sp = json.loads(r.output.splitlines()[-1])["split"]
    assert (sp["metrics"], sp["buckets"], sp["arms"]) == (12, 20, 2)
    assert {x["path"] for x in sp["results"]} == {"update", "update+records", "parse+update", "run_batch"}
    assert all(x["median_us"] > 0 and x["p99_us"] >= x["median_us"] and x["cpu_us"] >= 0 for x in sp["results"])
    assert sp["floor"]["dispatch_us"] > 0 and sp["floor"]["arithmetic_us"] > 0
    r = runner.invoke(app, ["bench", "--split-only", "--split-ticks", "30"])
    assert r.exit_code == 0 and "parse+update" in r.output and "split floor" in r.output  # the split table (its title wraps in a narrow terminal)
    assert "kernel floor" not in r.output  # --split-only: no one- / two-sample tables


def test_demo_split_matches_truth() -> None:
    r = runner.invoke(app, ["demo", "split-bursts", "--seed", "7"])
    assert r.exit_code == 0, r.output
    assert "2/2 verdicts match the simulated truth" in r.output
