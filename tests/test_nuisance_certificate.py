"""A certificate covers family A's ``a_nuisance`` treatment (review of the mixture, finding 3): a config
backtested with one treatment reports uncertified when gated with another, and ``calibrate
--a-nuisance`` backtests (and records) the treatment it certifies. Configs certified before keep their
bytes and read as certified for ``learned``."""

from __future__ import annotations

import json
import math

import numpy as np
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.gate import GateSettings, certification_status, certify_baseline
from deploysignal.sources import write_csv
from deploysignal.telemetry import Frame

runner = CliRunner()
DAY = 1440


def _frame(n: int, seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    y = np.empty(n)
    y[0] = e[0]
    for t in range(1, n):
        y[t] = 0.4 * y[t - 1] + math.sqrt(1 - 0.16) * e[t]
    return Frame(1_700_006_400.0 + 60.0 * np.arange(n), (y * 40 + 850)[:, None], ("p99_latency_ms",))


def test_certificate_names_the_treatment_it_backtested():
    f = _frame(2 * DAY, 2)
    learned = certify_baseline(f, GateSettings(window=240), seed=4, robust_covariance=False, windows=2)
    assert learned.certification["certified"], learned.certification["reasons"]
    assert "a_nuisance" not in learned.certification["scope"]  # default configs keep their bytes
    assert certification_status(learned, GateSettings(window=240))["certified"] is True
    for other in ("band", "capped", "mixture"):
        st = certification_status(learned, GateSettings(window=240, a_nuisance=other))
        assert st["certified"] is False and st["basis"] == "one-sample, uncertified"
        assert st["reasons"][0].startswith(f"certified for a_nuisance=learned, gated with {other}")
    mix = certify_baseline(f, GateSettings(window=240, a_nuisance="mixture"), seed=4, robust_covariance=False, windows=2)
    assert mix.certification["scope"] == {"alpha": 0.05, "window": 240, "max_extensions": 1, "a_nuisance": "mixture"}
    assert mix.version_id != learned.version_id
    assert certification_status(mix, GateSettings(window=240, a_nuisance="mixture"))["certified"] is mix.certification["certified"]
    st = certification_status(mix, GateSettings(window=240))
    assert st["certified"] is False and st["reasons"][0].startswith("certified for a_nuisance=mixture, gated with learned")


def test_cli_calibrate_a_nuisance_certifies_that_treatment_only(tmp_path):
    """The review's repro: calibrate (learned), then gate --a-nuisance mixture said certified: true."""
    f = _frame(2 * DAY + 240, 5)
    write_csv(Frame(f.timestamps[: 2 * DAY], f.values[: 2 * DAY], f.signals), tmp_path / "base.csv")
    write_csv(Frame(f.timestamps[2 * DAY :], f.values[2 * DAY :], f.signals), tmp_path / "can.csv")
    common = ["--no-robust", "--window", "240", "--backtest-windows", "2"]
    for name, extra in (("learned", []), ("mixture", ["--a-nuisance", "mixture"])):
        r = runner.invoke(app, ["calibrate", str(tmp_path / "base.csv"), "-o", str(tmp_path / f"{name}.json"), *common, *extra])
        assert r.exit_code == 0, r.output
    assert "a_nuisance=mixture" in " ".join(r.stderr.split())

    def gate(cfg: str, *extra: str) -> dict:
        r = runner.invoke(app, ["gate", str(tmp_path / "can.csv"), "-c", str(tmp_path / cfg), "--window", "240", "--json", *extra])
        assert r.exit_code in (0, 2, 3, 4), r.output
        # the mixture's approximate validity is said at run time, and only for the mixture
        assert ("control is approximate" in " ".join(r.stderr.split())) == ("mixture" in extra)
        return json.loads(r.stdout.strip().splitlines()[-1])

    assert gate("learned.json")["certified"] is True
    s = gate("learned.json", "--a-nuisance", "mixture")
    assert s["certified"] is False and s["basis"] == "one-sample, uncertified"
    assert any("certified for a_nuisance=learned, gated with mixture" in x for x in s["certification_reasons"])
    assert gate("mixture.json", "--a-nuisance", "mixture")["certified"] is True
    assert gate("mixture.json")["certified"] is False
