"""Headline claims of the evaluation, asserted on the ``deploysignal eval --quick`` run.

With n replicates a Clopper-Pearson interval can refute a rate claim but not prove it. The validity claim is
therefore tested as: on every null scenario where the peeking t-test's one-sided 95% CP *lower* bound exceeds
alpha (its false-rollback rate demonstrably exceeds alpha), the gate's one-sided 95% CP lower bound does not
(its rate is consistent with <= alpha). The committed full report (200 replicates) tightens both bounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploysignal.cli._eval import app
from deploysignal.evaluation._runner import pooled, run_suite, summarise

ALPHA = 0.05
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("eval")
    res = CliRunner().invoke(app, ["--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for f in ("report.md", "report.json", "wealth_vs_bound.png", "detection_delay.png", "roc.png"):
        assert (out / f).is_file(), f
    return json.loads((out / "report.json").read_text())


@pytest.mark.montecarlo
@pytest.mark.extended  # the eval --quick run: ~300 s of one CI worker (docs/testing.md)
def test_gate_valid_where_peeking_is_not(quick_report: dict) -> None:
    rows = {(r["scenario"], r["method"]): r for r in quick_report["summary"]}
    nulls = sorted({s for s, _ in rows if rows[(s, "gate")]["expected"] == "proceed"})
    assert len(nulls) == 5
    exceeded = [s for s in nulls if rows[(s, "ttest_peek")]["false_rollback"]["cp_lower"] > ALPHA]
    assert exceeded, "peeking t-tests should demonstrably exceed alpha somewhere"
    for s in exceeded:
        assert rows[(s, "gate")]["false_rollback"]["cp_lower"] <= ALPHA, s


@pytest.mark.montecarlo
@pytest.mark.extended  # the eval --quick run: ~300 s of one CI worker (docs/testing.md)
def test_gate_detects_at_least_as_much_as_matched_baselines(quick_report: dict) -> None:
    """Pooled over the regression suite, the gate detects at least as often as every baseline calibrated (on
    null draws disjoint from the evaluation's) to a pooled false-rollback rate of alpha, while its own
    false-rollback rate is no higher than theirs. Every baseline must reach alpha somewhere on its grid."""
    cal = quick_report["settings"]["matched"]
    pool = quick_report["pooled"]
    gate = pool["gate"]
    assert set(cal) == {"kayenta", "static", "flagger", "ttest_peek", "page_hinkley", "adwin"}
    assert all(c["matched"] for c in cal.values()), {m: c["curve"][-1] for m, c in cal.items()}
    for m in cal:
        d = pool[m + "@matched"]
        assert gate["false_rollback"]["rate"] <= max(d["false_rollback"]["rate"], ALPHA), m
        assert gate["detection"]["rate"] >= d["detection"]["rate"], (m, gate["detection"], d["detection"])


@pytest.mark.montecarlo
@pytest.mark.extended  # the eval --quick run: ~300 s of one CI worker (docs/testing.md)
def test_quick_report_has_realdata_table(quick_report: dict) -> None:
    rows = quick_report["realdata"]
    if not rows:
        pytest.skip("real data absent")
    for ds in ("nab", "smd", "asd"):
        methods = {r["method"] for r in rows if r["dataset"] == ds}
        assert "gate" in methods and len(methods - {"gate"}) >= 3


def test_run_is_deterministic_and_independent_of_jobs() -> None:
    a = run_suite(["null_iid", "step"], ["gate", "ttest_peek", "flagger"], reps=2, canary_ticks=300, baseline_ticks=1440)
    b = run_suite(["null_iid", "step"], ["gate", "ttest_peek", "flagger"], reps=2, canary_ticks=300, baseline_ticks=1440, jobs=2)
    assert a.outcomes == b.outcomes
    assert json.dumps(summarise(a.outcomes), sort_keys=True) == json.dumps(summarise(b.outcomes), sort_keys=True)
    assert set(pooled(summarise(a.outcomes))) == {"gate", "ttest_peek", "flagger"}


def test_cli_rejects_bad_input() -> None:
    r = CliRunner().invoke(app, ["--scenarios", "nope", "--no-realdata"])
    assert r.exit_code == 2 and "unknown scenario" in r.output
    r = CliRunner().invoke(app, ["--alpha", "2", "--no-realdata"])
    assert r.exit_code == 2


def test_committed_report_exists_and_is_complete() -> None:
    report = REPO / "docs" / "eval" / "report.json"
    if not report.is_file():
        pytest.fail("docs/eval/report.json missing: regenerate with `deploysignal eval --out docs/eval`")
    data = json.loads(report.read_text())
    assert data["settings"]["reps"] >= 100
    assert len(data["settings"]["scenarios"]) == 15
    for f in data["plots"]:
        assert (REPO / "docs" / "eval" / f).is_file()
    ds = {r["dataset"] for r in data["realdata"] or []}
    assert ds == {"nab", "smd", "asd"}


def test_committed_report_gate_within_alpha_where_peeking_exceeds_it() -> None:
    """The headline validity claim at full size (the quick run is too small for an upper bound to reach
    alpha): on every null of the committed report, the gate's one-sided Clopper-Pearson *upper* bound of
    the false-rollback rate is <= alpha, and the peeking t-test's *lower* bound exceeds alpha."""
    data = json.loads((REPO / "docs" / "eval" / "report.json").read_text())
    alpha = data["settings"]["alpha"]
    rows = {(r["scenario"], r["method"]): r for r in data["summary"] if r["expected"] == "proceed"}
    nulls = sorted({s for s, _ in rows})
    assert len(nulls) == 5
    for s in nulls:
        assert rows[(s, "ttest_peek")]["false_rollback"]["cp_lower"] > alpha, s
        gate = rows[(s, "gate")]["false_rollback"]
        assert gate["n"] >= 100 and gate["cp_upper"] <= alpha, (s, gate)


def test_report_files_are_byte_identical_across_runs(tmp_path: Path) -> None:
    from deploysignal.evaluation._report import write_report

    files = {}
    for name in ("a", "b"):
        run = run_suite(["null_iid", "step"], ["gate", "kayenta", "ttest_peek"], reps=2, canary_ticks=300, baseline_ticks=1440)
        write_report(run, tmp_path / name, command="test")
        files[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())}
    assert set(files["a"]) == {"report.md", "report.json", "wealth_vs_bound.png", "detection_delay.png", "roc.png"}
    assert files["a"] == files["b"]
