"""The information limit of the split evaluation (``evaluation/_split_oracle.py``) and ``split-eval --render``.

The oracle's power is only useful as a bound if it is (a) a level-alpha test, (b) the right power, and (c)
not beaten by a real test on the data it describes. Each is checked against something computed another
way: exact sums of the binomial law, a seeded simulation of the oracle itself, and the fixed-n peer on
simulated logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.evaluation._split_oracle import EVENT_EFFECTS, known_rate_power, oracle_limit, ticks_for_power
from deploysignal.evaluation._split_peers import FixedNTest
from deploysignal.evaluation._stats import clopper_pearson
from deploysignal.simulate._split import simulate_split

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(("n", "p0"), [(50, 0.03), (1500, 0.005), (15000, 0.005), (15000, 0.0299)])
def test_oracle_has_exact_level(n: int, p0: float) -> None:
    """At p1 = p0 + 0 the randomised test rejects with probability alpha exactly (summed from the pmf)."""
    alpha = 0.05
    k = int(stats.binom.isf(alpha, n, p0))
    size = stats.binom.sf(k, n, p0) + (alpha - stats.binom.sf(k, n, p0)) / stats.binom.pmf(k, n, p0) * stats.binom.pmf(k, n, p0)
    assert size == pytest.approx(alpha, abs=1e-12)
    # and the power function starts there and grows with the effect and with n
    grid = [known_rate_power(n, p0, p0 * r, alpha) for r in (1.0001, 1.1, 1.2, 1.5, 2.0) if p0 * r < 1]
    assert grid[0] == pytest.approx(alpha, abs=0.01) and all(b >= a for a, b in zip(grid, grid[1:]))
    assert known_rate_power(2 * n, p0, 1.2 * p0, alpha) >= known_rate_power(n, p0, 1.2 * p0, alpha)


def test_oracle_power_matches_its_simulation() -> None:
    """The stated power equals the rejection rate of the same randomised test run on seeded binomial draws."""
    n, p0, p1, alpha = 15000, 0.005, 0.006, 0.05
    k = int(stats.binom.isf(alpha, n, p0))
    gamma = (alpha - stats.binom.sf(k, n, p0)) / stats.binom.pmf(k, n, p0)
    rng = np.random.default_rng(7)
    x = rng.binomial(n, p1, size=40_000)
    u = rng.random(x.size)
    rejected = int(np.sum((x > k) | ((x == k) & (u < gamma))))
    lo, hi = clopper_pearson(rejected, x.size, 0.999)
    assert lo <= known_rate_power(n, p0, p1, alpha) <= hi


def test_fixed_n_test_does_not_beat_the_oracle() -> None:
    """A real test (the fixed-n peer: one-sided Fisher on all requests at the window's end) on simulated iid
    logs detects errors x2 at 50 req/tick, 50% share, no more often than the oracle allows (75% there)."""
    lim = oracle_limit("errors_x2", 50, 0.5, 60, 0.05, ("iid",))
    assert 0.6 < lim.power_iid < 0.9
    test = FixedNTest()
    hits = 0
    runs = 60
    for r in range(runs):
        req = simulate_split("iid", "errors_x2", volume=50, share=0.5, seed=1000 + r)
        hits += test.pvalues(req)["errors"] <= 0.05  # Fisher at the full level: the oracle bounds any level-0.05 test
    lo, _ = clopper_pearson(hits, runs, 0.99)
    assert lo <= lim.power_iid, (hits, runs, lim.power_iid)


def test_goal_row_is_beyond_any_test_in_a_60_tick_window() -> None:
    """The figures the closing notes quote: at 5,000 requests per tick and a 5% share no level-0.05 method can
    reach 99% pooled detection of the event effects over the evaluation's 11 worlds in 60 ticks."""
    worlds = ("iid", "long_memory", "regimes", "bursts", "diurnal", "trending", "share_step", "heavy", "low_counts", "empty", "sessions")
    for effect in EVENT_EFFECTS:
        lim = oracle_limit(effect, 5000, 0.05, 60, 0.05, worlds)
        assert lim.n_canary == 15000
        assert lim.pooled_bound < 0.99, (effect, lim)
    assert ticks_for_power(0.005, 1.2, 250.0, 0.05) > 300  # errors x1.2: the iid oracle needs >5x the window


def test_render_reproduces_the_committed_reports(tmp_path: Path) -> None:
    """``split-eval --render`` of a committed JSON report gives back its markdown tables and JSON byte for byte
    (so the committed pages are what the current report code makes of the recorded runs)."""
    runner = CliRunner()
    for name in ("split_eval_goal", "split_eval"):
        saved = DOCS / f"{name}.json"
        md, js = tmp_path / f"{name}.md", tmp_path / f"{name}.json"
        res = runner.invoke(app, ["split-eval", "--render", str(saved), "-o", str(md), "--json-out", str(js)])
        assert res.exit_code == 0, res.output
        assert js.read_bytes() == saved.read_bytes()
        committed = (DOCS / f"{name}.md").read_text(encoding="utf-8")
        assert committed.endswith(md.read_text(encoding="utf-8"))
        assert json.loads(js.read_text())["oracle"], name


def test_render_names_a_bad_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": {}}', encoding="utf-8")
    res = CliRunner().invoke(app, ["split-eval", "--render", str(bad), "-o", str(tmp_path / "x.md")])
    assert res.exit_code == 2 and "cannot re-render" in res.output
