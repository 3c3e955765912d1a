from __future__ import annotations

import json

import numpy as np
import pytest

from deploysignal import ConfigError, InputError
from deploysignal.calibration import CompiledConfig, compile_baseline
from deploysignal.simulate import NoiseSpec, simulate, simulate_streams
from deploysignal.telemetry import Frame, SignalSpec


def test_compile_is_byte_identical_and_hashed(sim_healthy):
    a = compile_baseline(sim_healthy.baseline, seed=3)
    b = compile_baseline(sim_healthy.baseline, seed=3)
    assert a.to_json() == b.to_json()
    assert a.version_id == b.version_id and a.version_id.startswith("cc-") and len(a.version_id) == 15
    assert compile_baseline(sim_healthy.baseline, seed=4).version_id != a.version_id
    assert a.library_version and a.schema_version == 1 and len(a.baseline_hash) == 64
    back = CompiledConfig.from_json(a.to_json())
    assert back.to_json() == a.to_json()


def test_load_rejects_unknown_keys_version_and_tampering(cfg_healthy):
    payload = json.loads(cfg_healthy.to_json())
    extra = dict(payload, surprise=1)
    with pytest.raises(ConfigError, match="surprise"):
        CompiledConfig.from_json(json.dumps(extra))
    old = dict(payload, schema_version=0)
    with pytest.raises(ConfigError, match="schema_version"):
        CompiledConfig.from_json(json.dumps(old))
    tampered = json.loads(cfg_healthy.to_json())
    tampered["signals"][0]["phi"] = 0.5
    with pytest.raises(ConfigError, match="does not match its content"):
        CompiledConfig.from_json(json.dumps(tampered))
    with pytest.raises(ConfigError, match="not valid JSON"):
        CompiledConfig.from_json("{")


def test_cells_pool_hierarchically(cfg_healthy):
    levels = {c.level for c in cfg_healthy.cells}
    assert {"global", "tier"} <= levels
    assert cfg_healthy.cell_map["*"] == 0
    for key, idx in cfg_healthy.cell_map.items():
        assert cfg_healthy.cells[idx].key == key


def test_thin_cells_pool_into_coarser_ones(rng):
    # 10 hours of one-minute ticks: every hour cell has 60 rows; with min 100 all pool to the tier cell
    f = Frame(np.arange(600.0) * 60, rng.normal(size=(600, 2)), ("a", "b"))
    cfg = compile_baseline(f, min_cell_samples=100, robust_covariance=False)
    assert {c.level for c in cfg.cells} == {"global", "tier"}


def test_ar1_phi_recovered_under_diurnal_seasonality():
    rng = np.random.default_rng(7)
    ts, vals = simulate_streams(rng, 6, 2880, noise=NoiseSpec(phi=0.85, diurnal=2.0))
    names = tuple(f"s{j}" for j in range(vals.shape[2]))
    phis = [[s.phi for s in compile_baseline(Frame(ts, v, names), robust_covariance=False).signals] for v in vals]
    assert abs(np.mean(phis) - 0.85) < 0.01  # day-lag differencing: no demeaning bias
    no = compile_baseline(Frame(ts, vals[0], names), robust_covariance=False, prewhiten=False)
    assert all(s.phi == 0.0 for s in no.signals)


def test_covariances_ledoit_wolf_and_mcd(sim_healthy):
    cfg = compile_baseline(sim_healthy.baseline, seed=1, robust_covariance=True)
    blk = cfg.covariances[0]
    cov = np.array(blk.ledoit_wolf)
    chol = np.array(blk.cholesky)
    np.testing.assert_allclose(chol @ chol.T, cov, atol=1e-9)
    assert 0.0 <= blk.shrinkage <= 1.0
    assert blk.mcd_covariance is not None and np.all(np.linalg.eigvalsh(np.array(blk.mcd_covariance)) > 0)
    ref = np.array(cfg.reference[""])
    assert ref.shape[1] == len(cfg.signals) and 0 < ref.shape[0] <= 1000
    assert cfg.split["n_fit"] + cfg.split["n_calibration"] == cfg.n_baseline


def test_rates_near_zero_do_not_collapse_variance(rng):
    n = 1500
    vals = np.column_stack([np.zeros(n), rng.binomial(1000, 0.001, n) / 1000, 5.0 + rng.normal(size=n)])
    specs = (SignalSpec("errs", "up", "rate"), SignalSpec("rare", "up", "rate"), SignalSpec("lat", "up"))
    cfg = compile_baseline(Frame(np.arange(n) * 60.0, vals, ("errs", "rare", "lat"), specs=specs), robust_covariance=False)
    scales = [s.innov_scale for s in cfg.signals]
    assert all(np.isfinite(scales)) and min(scales) >= 1e-3
    assert np.all(np.isfinite(cfg.arrays["cell_bias_var"]))


@pytest.mark.filterwarnings("ignore:The covariance matrix associated to your dataset is not full rank")
def test_mcd_that_cannot_be_fitted_is_left_out(rng, tmp_path):
    """A baseline whose only signal is constant, or mostly one value (a rarely non-zero error count), has
    a zero-covariance MCD support: sklearn raised ValueError (a traceback from the CLI). The block keeps
    no MCD, as with robust_covariance=False, and the config is usable; a constant signal next to others
    keeps its MCD."""
    from typer.testing import CliRunner

    from deploysignal.cli import app
    from deploysignal.sources import write_csv

    n = 600
    ts = np.arange(n) * 60.0
    for vals in (np.full((n, 1), 5.0), rng.poisson(0.3, size=(n, 1)).astype(float)):
        cfg = compile_baseline(Frame(ts, vals, ("a",)), seed=2)
        assert all(b.mcd_location is None and b.mcd_covariance is None for b in cfg.covariances)
        assert cfg.to_json() == compile_baseline(Frame(ts, vals, ("a",)), seed=2).to_json()
    both = compile_baseline(Frame(ts, np.column_stack([np.full(n, 5.0), rng.normal(size=n)]), ("a", "b")))
    assert all(b.mcd_covariance is not None for b in both.covariances)
    write_csv(Frame(ts, np.full((n, 1), 5.0), ("latency",)), tmp_path / "const.csv")
    res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "const.csv"), "-o", str(tmp_path / "cfg.json")])
    assert res.exit_code == 0 and res.output.startswith("cc-"), res.output


@pytest.mark.filterwarnings("ignore:The covariance matrix associated to your dataset is not full rank")
def test_mcd_fallback_is_logged_and_only_for_a_zero_support_covariance(rng, caplog, monkeypatch):
    """Review finding: the fallback was invisible and caught any ValueError. It now logs a warning naming
    the block, and any other MCD failure propagates instead of silently dropping the robust covariance."""
    import logging

    import sklearn.covariance

    from deploysignal.calibration import _compiler

    n = 600
    frame = Frame(np.arange(n) * 60.0, np.full((n, 1), 5.0), ("a",))
    with caplog.at_level(logging.WARNING, logger="deploysignal"):
        compile_baseline(frame, seed=2)
    msgs = [r.getMessage() for r in caplog.records if r.name == "deploysignal.calibration._compiler"]
    assert msgs and all("the MCD cannot be fitted" in m and "no robust covariance is stored" in m for m in msgs)
    assert any(m.startswith("covariance block *:") for m in msgs)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deploysignal"):
        compile_baseline(Frame(np.arange(n) * 60.0, rng.normal(size=(n, 2)), ("a", "b")), seed=2)
    assert not [r for r in caplog.records if "MCD" in r.getMessage()]

    class Broken(sklearn.covariance.MinCovDet):
        def fit(self, X, y=None):  # noqa: N803
            raise ValueError("Input contains NaN")

    monkeypatch.setattr(sklearn.covariance, "MinCovDet", Broken)  # _compiler imports it where it fits
    with pytest.raises(ValueError, match="Input contains NaN"):
        compile_baseline(Frame(np.arange(n) * 60.0, rng.normal(size=(n, 2)), ("a", "b")), seed=2)
    from typer.testing import CliRunner

    from deploysignal.cli import app

    res = CliRunner().invoke(app, ["calibrate", "--help"], env={"COLUMNS": "250"})  # one line per option: no box border inside the phrase
    assert "cannot be fitted" in " ".join(res.output.split())


def test_degenerate_inputs(rng):
    one = Frame(np.arange(300.0) * 60, rng.normal(size=(300, 1)), ("a",))
    assert len(compile_baseline(one, robust_covariance=False).signals) == 1
    ints = Frame(np.arange(300.0) * 60, rng.integers(0, 5, size=(300, 2)).astype(float), ("a", "b"))
    assert compile_baseline(ints, robust_covariance=False).version_id
    with pytest.raises(InputError, match="need at least"):
        compile_baseline(Frame(np.arange(10.0), np.zeros((10, 1)), ("a",)))
    vals = rng.normal(size=(300, 2))
    vals[:, 1] = np.nan
    with pytest.raises(InputError, match="column 'b'.*all missing"):
        compile_baseline(Frame(np.arange(300.0) * 60, vals, ("a", "b")))


def test_simulator_is_seeded():
    a, b = simulate("step", seed=3), simulate("step", seed=3)
    np.testing.assert_array_equal(a.canary.values, b.canary.values)
    assert not np.array_equal(a.canary.values, simulate("step", seed=4).canary.values)
