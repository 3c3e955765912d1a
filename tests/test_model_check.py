"""Model check, backtest and certification (issue 22, first part): what the config stores, what the CLI,
the audit header and the service report, and that the checks flag what they are built for."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from deploysignal.calibration import CHECKS, CompiledConfig, compile_baseline
from deploysignal.cli import app
from deploysignal.gate import GateSettings, backtest, certification_status, certify_baseline
from deploysignal.sources import write_csv
from deploysignal.telemetry import Frame

runner = CliRunner()
DAY = 1440


def _ar(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    e = rng.standard_normal(n)
    y = np.empty(n)
    y[0] = e[0]
    for t in range(1, n):
        y[t] = phi * y[t - 1] + math.sqrt(1 - phi * phi) * e[t]
    return y


def _frame(cols: dict[str, np.ndarray]) -> Frame:
    n = len(next(iter(cols.values())))
    return Frame(1_700_006_400.0 + 60.0 * np.arange(n), np.column_stack(list(cols.values())), tuple(cols))


def _failed(cfg: CompiledConfig) -> set[tuple[str, str]]:
    return {(r["signal"], r["check"]) for r in cfg.certification["checks"] if r["passed"] is False}


def test_checks_pass_on_the_models_process_and_flag_what_they_target():
    """Three days of 1-minute ticks: an AR(1) signal passes every check; AR(2) fails autocorrelation,
    a slow AR(0.995) component holding 30% of the variance fails the autocorrelation or long-memory
    check, AR(0.995) alone sits at the phi clip, and variance doubled in a third of the hours fails
    heteroscedasticity."""
    rng = np.random.default_rng(5)
    n = 3 * DAY
    ts = 1_700_006_400.0 + 60.0 * np.arange(n)
    ar2 = np.zeros(n)
    e = rng.standard_normal(n)
    for t in range(2, n):
        ar2[t] = 0.5 * ar2[t - 1] + 0.3 * ar2[t - 2] + e[t]
    peak = np.sin(2 * np.pi * (ts % 86400) / 86400) > 0.5
    cols = {
        "ok": _ar(rng, n, 0.5),
        "ar2": ar2,
        "slow": math.sqrt(0.7) * _ar(rng, n, 0.5) + math.sqrt(0.3) * _ar(rng, n, 0.995),
        "persistent": _ar(rng, n, 0.995),
        "hetero": _ar(rng, n, 0.5) * np.where(peak, math.sqrt(2.0), 1.0),
    }
    cfg = compile_baseline(_frame(cols), seed=1, robust_covariance=False)
    rows = cfg.certification["checks"]
    assert {(r["signal"], r["check"]) for r in rows} == {(s, c) for s in cols for c in CHECKS}
    failed = _failed(cfg)
    assert not {f for f in failed if f[0] == "ok"}, failed
    assert ("ar2", "autocorrelation") in failed
    assert {("slow", "long_memory"), ("slow", "autocorrelation")} & failed
    assert ("persistent", "phi_clip") in failed
    assert ("hetero", "heteroscedasticity") in failed
    level = rows[0]["level"]
    assert level == pytest.approx(0.01 / (5 * len(cols)))
    for r in rows:  # a failed test is one whose p-value is below the fixed level (phi_clip has none)
        if r["p_value"] is not None:
            assert r["passed"] == (r["p_value"] >= r["level"])


def test_config_without_certification_loads_unchanged_and_reads_uncertified(tmp_path):
    """Configs written before model checks existed keep their bytes and id, and read as uncertified with
    the reason 'compiled before model checks'; a fresh config's id covers its certification."""
    f = _frame({"p99_latency_ms": np.random.default_rng(0).normal(size=600)})
    fresh = compile_baseline(f, seed=3)
    payload = json.loads(fresh.to_json())
    del payload["certification"]
    payload["version_id"] = CompiledConfig.content_id(payload)
    old_text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    old = CompiledConfig.from_json(old_text)
    assert old.certification is None and old.to_json() == old_text and old.version_id != fresh.version_id
    st = certification_status(old, GateSettings())
    assert st["certified"] is False and st["reasons"][0] == "compiled before model checks" and st["basis"] == "one-sample, uncertified"
    tampered = json.loads(fresh.to_json())
    tampered["certification"]["certified"] = True
    with pytest.raises(Exception, match="does not match its content"):
        CompiledConfig.from_json(json.dumps(tampered))
    st = certification_status(fresh, GateSettings())
    assert st["certified"] is False and any(r.startswith("not backtested") for r in st["reasons"])


def test_certify_is_deterministic_and_certificate_is_scoped_to_its_settings():
    rng = np.random.default_rng(2)
    f = _frame({"p99_latency_ms": _ar(rng, 2 * DAY, 0.4), "ttft_ms": _ar(rng, 2 * DAY, 0.3)})
    s = GateSettings(window=240)
    a = certify_baseline(f, s, seed=4, robust_covariance=False, windows=3)
    assert a.to_json() == certify_baseline(f, s, seed=4, robust_covariance=False, windows=3).to_json()
    bt = a.certification["backtest"]
    assert bt["windows"] == 3 and bt["window_ticks"] == 480 and a.certification["scope"] == {"alpha": 0.05, "window": 240, "max_extensions": 1}
    assert a.certification["certified"], a.certification["reasons"]
    assert certification_status(a, s) == {"certified": True, "reasons": [], "basis": "one-sample, model checked"}
    other = certification_status(a, GateSettings(window=480))
    assert other["certified"] is False and "backtested at alpha=0.05, window=240" in other["reasons"][0]
    assert certification_status(a, s.model_copy(update={"mode": "two-sample"}))["basis"] == "two-sample"
    none = certify_baseline(f, s, seed=4, robust_covariance=False, windows=0)
    assert not none.certification["certified"] and "not backtested: backtest not requested (0 windows)" in none.certification["reasons"]


def test_backtest_flags_a_baseline_the_gate_keeps_rolling_back_on():
    """Latency with 150-tick excursions of +2 sd every 517 ticks (not locked to the clock, so no hour
    cell absorbs them): the gate rolls back on every held-out window, and the backtest's 99% lower bound
    exceeds alpha (flagged); the same noise without excursions is not flagged."""
    rng = np.random.default_rng(3)
    n = 3 * DAY
    noise = rng.standard_normal(n)
    bursts = np.zeros(n)
    for s0 in range(300, n, 517):
        bursts[s0 : s0 + 150] = 2.0
    s = GateSettings(window=240)
    bad = backtest(_frame({"p99_latency_ms": noise + bursts}), s, windows=3)
    assert bad["windows"] == 3 and bad["rollbacks"] == 3 and bad["flagged"] and bad["cp99_lower"] > 0.05
    assert bad["families"]["A"]["fired"] >= 1 and "99% lower bound" in bad["reason"]
    good = backtest(_frame({"p99_latency_ms": _ar(rng, n, 0.3)}), s, windows=3)
    assert not good["flagged"] and good["rollbacks"] <= 1
    short = backtest(_frame({"p99_latency_ms": _ar(rng, 1000, 0.3)}), s)
    assert short["windows"] == 0 and "no held-out window fits" in short["reason"]
    with pytest.raises(Exception, match="windows must be >= 0"):
        backtest(_frame({"p99_latency_ms": noise}), s, windows=-1)


def test_cli_calibrate_table_gate_json_warning_audit_header(tmp_path):
    """calibrate: version id first on stdout, table + decision on stderr; gate --json carries certified,
    reasons and basis; an uncertified one-sample gate warns on stderr; the audit header records it."""
    rng = np.random.default_rng(4)
    n = 2 * DAY + 480
    good = {"p99_latency_ms": _ar(rng, n, 0.4) * 40 + 850}
    persistent = {"p99_latency_ms": _ar(rng, n, 0.995) * 40 + 850}
    for name, cols in (("good", good), ("bad", persistent)):
        f = _frame(cols)
        write_csv(Frame(f.timestamps[: 2 * DAY], f.values[: 2 * DAY], f.signals), tmp_path / f"{name}_base.csv")
        write_csv(Frame(f.timestamps[2 * DAY :], f.values[2 * DAY :], f.signals), tmp_path / f"{name}_can.csv")
        r = runner.invoke(app, ["calibrate", str(tmp_path / f"{name}_base.csv"), "-o", str(tmp_path / f"{name}.json"),
                                "--no-robust", "--window", "240", "--backtest-windows", "2"])
        assert r.exit_code == 0, r.output
        assert r.stdout.strip().startswith("cc-") and len(r.stdout.strip().splitlines()) == 1
        assert "model check" in r.stderr and "backtest (2 held-out windows of 480 ticks" in r.stderr
    r_good = runner.invoke(app, ["gate", str(tmp_path / "good_can.csv"), "-c", str(tmp_path / "good.json"), "--window", "240", "--json"])
    s = json.loads(r_good.stdout.strip().splitlines()[-1])
    assert s["certified"] is True and s["basis"] == "one-sample, model checked" and s["certification_reasons"] == []
    assert "uncertified" not in r_good.stderr
    audit = tmp_path / "a.jsonl"
    r_bad = runner.invoke(app, ["gate", str(tmp_path / "bad_can.csv"), "-c", str(tmp_path / "bad.json"), "--window", "240", "--json", "--audit", str(audit)])
    s = json.loads(r_bad.stdout.strip().splitlines()[-1])
    assert s["certified"] is False and s["basis"] == "one-sample, uncertified"
    assert any("phi_clip failed" in x for x in s["certification_reasons"]) and any("--split" in x for x in s["certification_reasons"])
    assert "warning: one-sample, uncertified" in " ".join(r_bad.stderr.split())
    header = json.loads(audit.read_text().splitlines()[0])["record"]  # CLI audit logs are hash-chained
    assert header["certification"] == {"certified": False, "reasons": s["certification_reasons"], "basis": "one-sample, uncertified"}
    r = runner.invoke(app, ["replay", str(tmp_path / "bad_can.csv"), "-c", str(tmp_path / "bad.json"), "--audit", str(audit)])
    assert r.exit_code == 0, r.output
