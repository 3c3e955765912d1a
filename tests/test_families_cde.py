"""Contract tests for families C, D, E: state, determinism, predictability, naive transcriptions, numerics."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from deploysignal.detectors import FamilyA, FamilyC, FamilyD, FamilyE, Observation
from deploysignal.detectors._cde_common import ONS_C, dump_arrays
from deploysignal.detectors._family_e import KAPPAS, conditional_pvalue_table
from deploysignal.gate import Gate, GateSettings, Standardizer


def _build(fam: str, cfg, two_sample: bool = False):
    if fam == "C":
        return FamilyC.from_config(cfg, alpha=0.01, two_sample=two_sample)
    if fam == "D":
        return FamilyD.from_config(cfg, alpha=0.005, two_sample=two_sample)
    return FamilyE.from_config(cfg, alpha=0.005, horizon=960, two_sample=two_sample)


def _stream(sim, cfg, n, two_sample=False):
    """Observations of the simulated canary (and control) standardised by a gate's standardisers."""
    gate = Gate(cfg, GateSettings(mode="two-sample" if two_sample else "one-sample"))
    can_std, ctl_std = Standardizer(cfg), Standardizer(cfg)
    out = []
    for i in range(n):
        ts = float(sim.canary.timestamps[i])
        cell, _, nb, w = gate._locate(ts, "")
        z = can_std(ts, sim.canary.values[i][None], cell, nb, w)[0]
        cz = ctl_std(ts, sim.control.values[i][None], cell, nb, w)[0] if two_sample else None
        out.append(Observation(i, ts, cell, z, sim.canary.values[i], cz, None))
    return out


@pytest.fixture(scope="module")
def obs_one(sim_healthy, cfg_healthy):
    return _stream(sim_healthy, cfg_healthy, 300)


@pytest.fixture(scope="module")
def obs_two(sim_healthy, cfg_healthy):
    return _stream(sim_healthy, cfg_healthy, 300, two_sample=True)


@pytest.mark.parametrize("fam", ["C", "D", "E"])
@pytest.mark.parametrize("two_sample", [False, True], ids=["one-sample", "two-sample"])
def test_state_json_roundtrip_continues_identically(fam, two_sample, cfg_healthy, obs_one, obs_two):
    obs = obs_two if two_sample else obs_one
    a = _build(fam, cfg_healthy, two_sample)
    for o in obs[:150]:
        a.update(o)
    st = json.loads(json.dumps(a.state()))
    b = type(a).from_state(cfg_healthy, st, **_kwargs(fam, two_sample))
    for o in obs[150:]:
        ea, eb = a.update(o), b.update(o)
        assert ea == eb
    assert json.dumps(a.state(), sort_keys=True) == json.dumps(b.state(), sort_keys=True)


@pytest.mark.parametrize("fam", ["A", "C", "D", "E"])
def test_step_rejects_wrong_shapes_and_cells_without_changing_state(fam, cfg_healthy, obs_one):
    """The compiled kernels do not bounds-check: the wrappers must refuse a tick of the wrong shape or an
    unknown cell, and a refused tick changes nothing."""
    det = FamilyA(cfg_healthy, alpha=0.02, horizon=960) if fam == "A" else _build(fam, cfg_healthy)
    for o in obs_one[:20]:
        det.update(o)
    before = json.dumps(det.state(), sort_keys=True)
    k = len(cfg_healthy.signals)
    n_cells = len(cfg_healthy.cells)
    for z, cell, exc in [(np.zeros((1, k + 1)), 0, ValueError), (np.zeros((2, k)), 0, ValueError), (np.zeros(k), 0, ValueError),
                         (np.zeros((1, k)), n_cells, IndexError), (np.zeros((1, k)), -1, IndexError)]:
        with pytest.raises(exc):
            det.step(z, cell)
    assert json.dumps(det.state(), sort_keys=True) == before


def test_family_d_loads_state_written_with_log_wealth(cfg_healthy, obs_one):
    """Snapshots written before family D kept its wealth as a log scale times a linear factor carry
    ``logW``; they still load and continue (to within rounding)."""
    a = _build("D", cfg_healthy, False)
    for o in obs_one[:150]:
        a.update(o)
    st = json.loads(json.dumps(a.state()))
    legacy = {k: v for k, v in st.items() if k not in ("wealth", "log_scale")}
    legacy.update(dump_arrays(a, ("logW",)))
    b = FamilyD.from_state(cfg_healthy, legacy, **_kwargs("D", False))
    for o in obs_one[150:]:
        ea, eb = a.update(o), b.update(o)
        assert ea.fired == eb.fired and ea.log_wealth == pytest.approx(eb.log_wealth, abs=1e-9)


def _kwargs(fam, two_sample):
    kw = {"alpha": 0.01 if fam == "C" else 0.005, "two_sample": two_sample}
    if fam == "E":
        kw["horizon"] = 960
    return kw


@pytest.mark.parametrize("fam", ["C", "D", "E"])
def test_same_seed_same_bytes(fam, cfg_healthy, obs_one):
    runs = []
    for _ in range(2):
        det = _build(fam, cfg_healthy)
        runs.append(np.array([det.update(o).log_wealth for o in obs_one]).tobytes())
    assert runs[0] == runs[1]


@pytest.mark.parametrize("fam", ["C", "D", "E"])
def test_missing_values_are_safe(fam, cfg_healthy, obs_one):
    det = _build(fam, cfg_healthy)
    rng = np.random.default_rng(5)
    for o in obs_one[:100]:
        z = o.z.copy()
        z[rng.random(z.size) < 0.3] = np.nan
        if o.tick % 17 == 0:
            z[:] = np.nan
        ev = det.update(Observation(o.tick, o.timestamp, o.cell, z, o.raw))
        assert math.isfinite(ev.log_wealth) or ev.log_wealth == -math.inf
    assert not det.update(obs_one[100]).fired


def test_builders_reject_bad_shapes():
    with pytest.raises(ValueError):
        FamilyC(np.eye(2)[None, None], np.zeros((1, 1, 5, 3)), np.array([[5]]), np.zeros(1, dtype=int), names=("a", "b"), alpha=0.01)
    with pytest.raises(ValueError):
        FamilyD(np.zeros((1, 1, 3)), np.zeros(1, dtype=int), names=("a", "b"), alpha=0.01)
    with pytest.raises(ValueError):
        FamilyE(np.eye(2)[None, None], np.zeros((1, 1, 5, 2)), np.array([[5]]), np.zeros(1, dtype=int), names=("a", "b"), alpha=0.01, horizon=0)


# ---------------------------------------------------------------------- predictability
def _twins(det, obs, t):
    """Two copies of ``det`` fed the same ticks before ``t``."""
    for o in obs[:t]:
        det.update(o)
    return det, copy.deepcopy(det)


def _perturbed(o, rng):
    z = o.z + rng.normal(scale=2.0, size=o.z.size)
    return Observation(o.tick, o.timestamp, o.cell, z, o.raw, o.control_z, o.control_raw)


def test_family_c_bets_witness_bandwidth_fixed_before_tick(cfg_healthy, obs_two):
    """Two-sample C: the MMD increment is log(1 + lam * payoff) with lam, witness, frequencies and
    bandwidth taken from the state *before* the tick, whatever the tick's value."""
    rng = np.random.default_rng(0)
    c0 = FamilyC.from_config(cfg_healthy, alpha=0.01, two_sample=True)
    omega0, bw0 = c0._omega.copy(), c0._bandwidth.copy()
    a, b = _twins(c0, obs_two, 120)
    pre = a.witness_state()
    for det, o in ((a, obs_two[120]), (b, _perturbed(obs_two[120], rng))):
        lw0 = det._logW.copy()
        det.update(o)
        x = np.clip(o.z, -6, 6)
        y = np.clip(o.control_z, -6, 6)
        phi = lambda v: math.sqrt(2 / det.n_features) * np.cos(omega0[0] @ v + det._phase)  # noqa: E731
        g = pre["witness"][0]
        payoff = float(np.clip(g @ (phi(x) - phi(y)) / (2 * math.sqrt(2) * np.linalg.norm(g)), -1, 1))
        assert det._logW[0] - lw0[0] == pytest.approx(math.log1p(pre["bet"][0] * payoff), abs=1e-12)
        assert np.array_equal(det._omega, omega0) and np.array_equal(det._bandwidth, bw0)


def test_family_d_bets_and_filters_fixed_before_tick(cfg_healthy, obs_one):
    """For every channel, (exp(increment) - 1) / e_t is the same for two different values at tick t:
    the product lambda_t * witness_t was fixed by the past."""
    rng = np.random.default_rng(1)
    a, b = _twins(FamilyD.from_config(cfg_healthy, alpha=0.005), obs_one, 150)
    g_pre, mu_pre = a.predictions()
    implied = []
    for det, o in ((a, obs_one[150]), (b, _perturbed(obs_one[150], rng))):
        e_pre = (det._msum / (det.n0 + det._mcnt)).copy()
        center = det._center[0, det._cell_block[o.cell]]
        lw0 = det._logW.copy()
        det.update(o)
        e = 0.5 * (np.clip(o.z - center, -3, 3) / 3 - e_pre[0])
        e_ch = np.concatenate([np.repeat(e, g_pre.shape[-1]), e])
        implied.append(np.expm1(det._logW[0] - lw0[0]) / e_ch)
    assert np.allclose(implied[0], implied[1], rtol=1e-9, atol=1e-12)


def test_family_e_naive_transcription(cfg_healthy, obs_one):
    """E: conformal p-value by counting, conditional correction table, power calibrators, e-SR."""
    e = FamilyE.from_config(cfg_healthy, alpha=0.005, horizon=960)
    ref = np.clip(np.asarray(cfg_healthy.reference[""], dtype=float), -6, 6)
    linv = np.linalg.inv(np.asarray(cfg_healthy.covariances[0].cholesky))
    cal = np.sum((ref @ linv.T) ** 2, axis=1)
    table = conditional_pvalue_table(cal.size, 0.1 * 0.005)
    R = 0.0
    for o in obs_one[:200]:
        e.update(o)
        s = float(np.sum((linv @ np.clip(o.z, -6, 6)) ** 2))
        p = table[int(np.sum(cal >= s))]
        R = (1 + R) * float(np.mean(KAPPAS * p ** (KAPPAS - 1)))
        assert e.components()["p_value"] == p
    assert e.components()["log_esr"] == pytest.approx(math.log(R), rel=1e-10)


def test_conditional_pvalue_table_is_valid_and_tighter_in_the_tail():
    from scipy.stats import beta

    n, delta = 500, 0.01
    b = conditional_pvalue_table(n, delta)
    assert b.size == n + 1 and b[-1] == 1.0 and np.all(np.diff(b) >= 0)
    # simultaneous coverage of the uniform order statistics, checked by simulation
    rng = np.random.default_rng(3)
    u = np.sort(rng.random((4000, n)), axis=1)
    miss = np.mean(np.any(u > b[:n], axis=1))
    assert miss <= beta.ppf(0.99, int(miss * 4000) + 1, 4000) and miss < delta
    assert b[0] < 0.03 < math.sqrt(math.log(2 / delta) / (2 * n))  # Beta bound beats DKW at the top


def test_family_c_hotelling_naive_transcription(cfg_healthy, obs_two):
    """Two-sample Hotelling: det/solve formula on the whitened paired differences."""
    c = FamilyC.from_config(cfg_healthy, alpha=0.01, two_sample=True)
    linv = np.linalg.inv(np.asarray(cfg_healthy.covariances[0].cholesky))
    k = linv.shape[0]
    S, V = np.zeros(k), np.zeros((k, k))
    for o in obs_two[:200]:
        c.update(o)
        x = linv @ ((np.clip(o.z, -6, 6) - np.clip(o.control_z, -6, 6)) / math.sqrt(2))
        x *= min(1.0, 3 * math.sqrt(k) / np.linalg.norm(x))
        S, V = S + x, V + np.outer(x, x)
    t2 = c.tau2
    logm = -0.5 * np.linalg.slogdet(np.eye(k) + t2 * V)[1] + 0.5 * S @ np.linalg.solve(V + np.eye(k) / t2, S)
    assert c.components()["log_hotelling"] == pytest.approx(logm, rel=1e-8, abs=1e-9)
    assert c.contributions().sum() == pytest.approx(S @ np.linalg.solve(V + np.eye(k) / t2, S), rel=1e-8)


def test_ons_constant():
    assert ONS_C == pytest.approx(2 / (2 - math.log(3)))


# ---------------------------------------------------------------------- numerics over long horizons
@pytest.mark.parametrize("fam", ["C", "D", "E"])
def test_log_space_numerics_at_million_tick_magnitudes(fam, cfg_healthy, obs_one):
    """State scaled to what 10^6 ticks of a strong alternative produce (log-wealth ~ 10^5, sums ~ 10^6),
    then more ticks under a strong shift: everything stays finite, nothing overflows."""
    det = _build(fam, cfg_healthy)
    for o in obs_one[:50]:
        det.update(o)
    t = 1e6
    if fam == "C":
        det._S *= t / 50
        det._A /= t / 50
        det._logdet += 12 * math.log(t)
        det._logW += 1e5
        det._asum *= t
        det._G *= t / 50
    elif fam == "D":
        det._logW += 1e5
        det._asum *= t
        det._msum *= t / 50
        det._mcnt *= t / 50
    else:
        det._logR += 1e5
    for o in obs_one[50:150]:
        ev = det.update(Observation(o.tick, o.timestamp, o.cell, o.z + 5.0, o.raw))
        assert math.isfinite(ev.log_wealth) and math.isfinite(ev.statistic)
    assert ev.fired and ev.log_wealth > 1e4


@pytest.mark.parametrize(
    "scenario, family, driver",
    [("oscillation", "D", "kv_cache_util@period=3"), ("novel_pattern", "E", "eval_score"), ("joint_shift", "C", None)],
)
def test_gate_explains_fires_in_audit_records(scenario, family, driver):
    """The gate runs all five families; a fire of C/D/E names its drivers in the audit record."""
    from deploysignal.calibration import compile_baseline
    from deploysignal.simulate import simulate

    sim = simulate(scenario, seed=3, baseline_ticks=2880)
    cfg = compile_baseline(sim.baseline, seed=3, robust_covariance=False)
    gate = Gate(cfg, GateSettings())
    rec = None
    for i in range(len(sim.canary)):
        d = gate.update(sim.canary.timestamps[i], sim.canary.values[i])
        rec = next(r for r in d.records if r["family"] == family)
        if rec["fire"]:
            break
    assert [ev.family for ev in d.evidence] == ["A", "C", "D", "E", "B"]
    assert rec["fire"] and rec["drivers"] and rec["fire_reason"]
    assert set(rec["components"]) and all(v is None or math.isfinite(v) for v in rec["components"].values())
    if driver is not None:
        assert driver in rec["drivers"]
