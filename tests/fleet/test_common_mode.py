"""Fleet-level e-process with the shared load removed (issue 22, fleet item).

Seeded Monte Carlo, one-sided 99% Clopper-Pearson bounds. Each run draws a 32-shard fleet
(AR(1) 0.3 shard noise, plus a load shared by every shard, plus per-signal fleet-wide noise of sd 0.5),
fits the common-mode model on a 300-tick baseline and observes the next 300 ticks with the fleet-level
process only (the shard processes are tested in test_fdr.py / test_observer.py; the CLI test below runs
the whole observer). Nulls:

* ``sine``: the load of the coverage scenarios (2 sin(t/30), equal on every signal), the model's null;
* ``mixed``: misspecified: loadings 1, 0.6, -0.8, 0.3 (one signal moves against the load, one barely),
  a load at 3x the amplitude, Student-t(3) fleet-wide noise;
* ``regime``: misspecified: the load switches between two levels (Markov, mean dwell 40 ticks) on top of
  a random walk, never visiting the baseline's range again.

Detection: a fleet-wide step of one signal (+1.5 sd of its fleet-wide noise) from the first observed tick.
CI: 200 runs per null and 100 for detection, about 2 CPU-minutes in all; 2,000 runs under ``extended``.

Nulls that break the model's assumptions, on 16-shard fleets through ``curate_baseline`` (the path of
``fleet observe --baseline``), 200 runs each: a weak load (0.3 sin(t/30), window at +3) with unequal and
with equal fleet-wide noise (the fit must be refused: misfitted loadings fired 47/200 and 14/200), and a
strong load with unequal noise (sd 0.1, 0.1, 0.1, 1.0) with the window inside the baseline's load range
(<= alpha) and 5x outside it (no validity claimed: every event must come after the load left the range,
which ``fleet observe`` reports); plus the reviewer's CLI repro seeds and a short-baseline halt. About
1.5 CPU-minutes more (curate_baseline's MCD fit is ~0.25 s a run).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta
from typer.testing import CliRunner

from deploysignal.cli._fleet import app
from deploysignal.fleet import CommonModeEProcess, fit_common_mode

pytestmark = pytest.mark.montecarlo
ALPHA = 0.05
B, T, SHARDS, K = 300, 300, 32, 4


def cp_upper(k: int, n: int) -> float:
    return 1.0 if k >= n else float(beta.ppf(0.99, k + 1, n - k))


def cp_lower(k: int, n: int) -> float:
    return 0.0 if k <= 0 else float(beta.ppf(0.01, k, n - k + 1))


def _load(kind: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(load (n,), loadings (K,))."""
    t = np.arange(n)
    if kind == "sine":
        return 2.0 * np.sin(t / 30.0), np.ones(K)
    if kind == "mixed":
        return 6.0 * np.sin(t / 30.0 + rng.uniform(0, 2 * np.pi)), np.array([1.0, 0.6, -0.8, 0.3])
    state = np.zeros(n)
    s = 0
    for i in range(1, n):
        s = 1 - s if rng.random() < 1 / 40 else s
        state[i] = s
    return 3.0 * state + np.cumsum(0.2 * rng.standard_normal(n)) + 4.0 * (t >= B), np.array([1.0, 0.8, 1.2, 0.9])


def fleet_medians(kind: str, rng: np.random.Generator, n: int = B + T) -> np.ndarray:
    """Per-tick cross-shard medians (n, K) of a simulated 32-shard fleet."""
    eps = rng.standard_normal((n, SHARDS, K))
    x = np.empty_like(eps)
    x[0] = eps[0] / math.sqrt(1 - 0.09)
    for i in range(1, n):
        x[i] = 0.3 * x[i - 1] + eps[i]
    load, b = _load(kind, rng, n)
    common = 0.5 * (rng.standard_t(3, (n, K)) / math.sqrt(3) if kind == "mixed" else rng.standard_normal((n, K)))
    return np.median(x, axis=1) + load[:, None] * b + common


def _fires(med: np.ndarray, alpha: float = ALPHA, directions: tuple[str, ...] = ("both",) * K) -> tuple[bool, int | None]:
    cm = fit_common_mode(med[:B])
    assert cm is not None
    ep = CommonModeEProcess(cm, directions)
    for t in range(B, med.shape[0]):
        if ep.update(med[t]) >= -math.log(alpha):
            return True, t - B
    return False, None


def _null_rate(kind: str, seed: int, runs: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    return sum(_fires(fleet_medians(kind, rng))[0] for _ in range(runs)), runs


# CI keeps the null (the sinusoidal load); the mixed-loading and regime loads repeat it under
# ``-m extended`` with the same assertion (docs/testing.md)
@pytest.mark.parametrize("kind,seed", [("sine", 2201), pytest.param("mixed", 2202, marks=pytest.mark.extended),
                                       pytest.param("regime", 2203, marks=pytest.mark.extended)])
def test_shared_load_is_not_a_fleet_event(kind, seed):
    k, n = _null_rate(kind, seed, 200)
    print(f"{kind}: fleet-level alarms {k}/{n}, CP99 upper {cp_upper(k, n):.4f}")
    assert cp_upper(k, n) <= ALPHA


@pytest.mark.extended
@pytest.mark.parametrize("kind,seed", [("sine", 2211), ("mixed", 2212), ("regime", 2213)])
def test_shared_load_is_not_a_fleet_event_2000(kind, seed):
    k, n = _null_rate(kind, seed, 2000)
    print(f"{kind}: fleet-level alarms {k}/{n}, CP99 upper {cp_upper(k, n):.4f}")
    assert cp_upper(k, n) <= ALPHA


def _step_on_one_signal(med: np.ndarray, j: int, size: float) -> np.ndarray:
    out = med.copy()
    out[B:, j] += size * 0.5  # in units of the fleet-wide noise sd (0.5)
    return out


def test_fleet_wide_fault_on_one_signal_is_detected_under_load():
    rng = np.random.default_rng(2204)
    runs, hits, delays = 100, 0, []
    for r in range(runs):
        fired, at = _fires(_step_on_one_signal(fleet_medians("sine", rng), r % K, 1.5))
        hits += fired
        delays += [at] if fired else []
    print(f"fleet-wide +1.5 sd step on one signal: detected {hits}/{runs} (CP99 lower {cp_lower(hits, runs):.3f}), "
          f"median delay {np.median(delays):.0f} ticks")
    assert cp_lower(hits, runs) >= 0.9


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), j=st.integers(0, K - 1), small=st.floats(0.0, 3.0), extra=st.floats(0.0, 3.0))
def test_evidence_monotone_in_harm(seed, j, small, extra):
    """A larger fleet-wide harmful step on a signal never gives that signal less evidence at any tick, and
    never a later alarm of the fleet-level process ('up' signals, the shape the bets are oriented for)."""
    base = fleet_medians("sine", np.random.default_rng(seed), B + 120)
    cm = fit_common_mode(base[:B])
    runs = []
    for size in (small, small + extra):
        ep = CommonModeEProcess(cm, ("up",) * K)
        med = _step_on_one_signal(base, j, size)
        sig, tot = [], []
        for t in range(B, med.shape[0]):
            tot.append(ep.update(med[t]))
            sig.append(float(np.logaddexp.reduce(ep.log_w[j, :4])))
        runs.append((np.array(sig), np.array(tot)))
    (s1, t1), (s2, t2) = runs
    assert np.all(s2 >= s1 - 1e-9)
    thr = -math.log(ALPHA)
    first = [int(np.argmax(t >= thr)) if (t >= thr).any() else 10**9 for t in (t1, t2)]
    assert first[1] <= first[0]


def _long_csv(path, med_shift: np.ndarray, rng: np.random.Generator, ticks: int, offset: int) -> None:
    """Long CSV tick,shard,s0..s3 of a 16-shard fleet with a shared sinusoidal load."""
    rows = ["tick,shard,s0,s1,s2,s3"]
    load = 2.0 * np.sin((np.arange(ticks) + offset) / 30.0)
    for t in range(ticks):
        common = load[t] + 0.5 * rng.standard_normal(K) + med_shift[t]
        for i in range(16):
            v = common + rng.standard_normal(K)
            rows.append(f"{t},shard{i:02d}," + ",".join(f"{x:.6f}" for x in v))
    path.write_text("\n".join(rows) + "\n")


def test_fleet_observe_cli_clean_load_exits_0_and_fleet_fault_exits_4(tmp_path):
    """`fleet observe --baseline`: a healthy fleet whose shared load leaves the baseline's range exits 0
    (it exited 4 before the common-mode model); the same window with a fleet-wide fault on one signal exits 4."""
    rng = np.random.default_rng(2205)
    _long_csv(tmp_path / "base.csv", np.zeros((300, K)), rng, 300, 0)
    _long_csv(tmp_path / "clean.csv", np.zeros((300, K)), rng, 300, 300)
    shift = np.zeros((300, K))
    shift[50:, 1] = 1.5
    _long_csv(tmp_path / "fault.csv", shift, rng, 300, 300)
    runner = CliRunner()
    cur = runner.invoke(app, ["curate-baseline", str(tmp_path / "base.csv")])
    assert cur.exit_code == 0 and '"loadings"' in cur.output and '"strong"' in cur.output, cur.output
    clean = runner.invoke(app, ["observe", str(tmp_path / "clean.csv"), "--baseline", str(tmp_path / "base.csv")])
    assert clean.exit_code == 0 and "no shared load component" not in clean.output, clean.output
    fault = runner.invoke(app, ["observe", str(tmp_path / "fault.csv"), "--baseline", str(tmp_path / "base.csv")])
    assert fault.exit_code == 4, fault.output
    assert "fleet_event" in fault.output


# --- nulls that break the model's assumptions, through curate_baseline (review of issue 22, fleet item) ---
# A 16-shard fleet (iid N(0, 1) shard noise) whose per-signal fleet-wide term is load + sd_j * N(0, 1):
# the load is 'amp sin(t/30)' in the baseline and 'amp sin(t/30) + jump' in the window. Each run curates
# the raw baseline (curate_baseline, as `fleet observe --baseline` does) and bets on the window's medians.

def _fleet(rng: np.random.Generator, ticks: int, offset: int, amp: float, jump: float, sd) -> np.ndarray:
    """(ticks, 16, K) raw values: the reviewer's generator (/tmp/rv_cli.py), tick by tick in the same order."""
    load = amp * np.sin((np.arange(ticks) + offset) / 30.0) + jump
    out = np.empty((ticks, 16, K))
    for t in range(ticks):
        common = load[t] + np.asarray(sd) * rng.standard_normal(K)
        out[t] = common + rng.standard_normal((16, K))
    return out


def _curated_run(rng: np.random.Generator, amp: float, jump: float, sd) -> tuple[bool, bool, bool]:
    """(refused, fired, fired before the load left the baseline's range) of one run."""
    from deploysignal.fleet import curate_baseline

    base, win = _fleet(rng, B, 0, amp, 0.0, sd), _fleet(rng, T, B, amp, jump, sd)
    rep = curate_baseline(base)
    if rep.common_mode is None:
        assert rep.common_mode_note
        return True, False, False
    ep = CommonModeEProcess(rep.common_mode, ("both",) * K)
    for x in np.median(win, axis=1):
        if ep.update(x) >= -math.log(ALPHA):
            return False, True, ep.outside_ticks == 0
    return False, False, False


@pytest.mark.parametrize("name,amp,jump,sd,seed", [
    ("weak load, unequal noise", 0.3, 3.0, (0.3, 0.3, 0.3, 0.6), 2221),   # 47/200 fired before the check
    pytest.param("weak load, equal noise", 0.3, 3.0, (0.3, 0.3, 0.3, 0.3), 2222,  # 14/200 fired before the check
                 marks=pytest.mark.extended),
])
def test_weak_load_is_refused_not_misfitted(name, amp, jump, sd, seed):
    """A load too weak to identify the loadings: the fit is refused (the observer falls back to the
    stationary test, and says so), so no fleet event comes from misfitted loadings."""
    rng = np.random.default_rng(seed)
    runs = [_curated_run(rng, amp, jump, sd) for _ in range(200)]
    refused, fired = sum(r[0] for r in runs), sum(r[1] for r in runs)
    print(f"{name}: refused {refused}/200, fleet events with a fitted model {fired}/200, CP99 upper {cp_upper(fired, 200):.4f}")
    assert cp_upper(fired, 200) <= ALPHA


@pytest.mark.parametrize("name,amp,jump,sd,seed", [
    ("unequal noise, window inside the baseline's load range", 2.0, 0.0, (0.1, 0.1, 0.1, 1.0), 2223),
    # ~53 s of one CI worker: extended (CI keeps the inside-range case, same code path and the same
    # never-silent assertion; docs/testing.md)
    pytest.param("unequal noise, window 5x the amplitude outside the range", 2.0, 10.0, (0.1, 0.1, 0.1, 1.0), 2224,
                 marks=pytest.mark.extended),
])
def test_unequal_noise_fleet_events_are_within_alpha_or_flagged(name, amp, jump, sd, seed):
    """Identified loadings under unequal fleet-wide noise (principal components are biased towards the
    noisier signal): inside the baseline's load range fleet events are <= alpha; outside it no claim is
    made, and an event is never silent: the load has left the range (the CLI says so) before it fires."""
    rng = np.random.default_rng(seed)
    runs = [_curated_run(rng, amp, jump, sd) for _ in range(200)]
    refused, fired, silent = (sum(r[i] for r in runs) for i in range(3))
    print(f"{name}: refused {refused}/200, fleet events {fired}/200 (CP99 upper {cp_upper(fired, 200):.4f}), "
          f"with the load still inside the baseline's range {silent}/200 (CP99 upper {cp_upper(silent, 200):.4f})")
    assert refused <= 2
    assert cp_upper(silent, 200) <= ALPHA
    if jump == 0.0:
        assert cp_upper(fired, 200) <= ALPHA


def test_short_curated_baseline_halts_without_common_mode():
    """Fewer than 30 kept ticks: curate_baseline returns its status (here `halt`) with no common-mode fit
    and a note, as before the common-mode change (which raised InputError here)."""
    from deploysignal.fleet import curate_baseline

    x = np.random.default_rng(2225).standard_normal((40, 20, 3))
    x[:15] += 8.0
    rep = curate_baseline(x)
    assert rep.status == "halt" and rep.keep.sum() < 30
    assert rep.common_mode is None and "30 ticks" in rep.common_mode_note
    assert rep.summary()["common_mode_note"] == rep.common_mode_note


@pytest.mark.parametrize("seed", [10] + [pytest.param(s, marks=pytest.mark.extended) for s in (4, 9, 11)])
def test_fleet_observe_weak_load_repro_says_why(tmp_path, seed):
    """The reviewer's CLI repro (16 shards, baseline load 0.3 sin(t/30), window +3, fleet-wide noise sd 0.3;
    these seeds exited 4 on clean data with misfitted loadings): the fit is refused and stderr says why and
    that the fleet-level alarm then reads a new load level as a fleet event."""
    rng = np.random.default_rng(seed)
    for name, off, jump in (("base.csv", 0, 0.0), ("win.csv", B, 3.0)):
        x = _fleet(rng, 300, off, 0.3, jump, (0.3,) * K)
        rows = ["tick,shard,s0,s1,s2,s3"] + [f"{t},shard{i:02d}," + ",".join(f"{v:.6f}" for v in x[t, i])
                                              for t in range(300) for i in range(16)]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    res = CliRunner().invoke(app, ["observe", str(tmp_path / "win.csv"), "--baseline", str(tmp_path / "base.csv")])
    assert res.exit_code in (0, 4), res.output
    assert "no shared load component is fitted" in res.output and "not identified" in res.output
    assert "reads as a" in res.output
