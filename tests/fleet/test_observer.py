import json
import math

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from deploysignal import InputError
from deploysignal.cli._fleet import app
from deploysignal.fleet import (
    ClusterEvent,
    FleetEProcess,
    FleetObservation,
    FleetObserver,
    ObserverSettings,
    TopologySnapshot,
    attribute,
    curate_baseline,
    group_log_e,
)
from deploysignal.fleet._scenarios import run_scenario


def naive_eprocess(xs, lambdas=(0.05, 0.1, 0.2, 0.4), clip=2.0):
    """Transcription of the construction, one shard/signal/bet at a time."""
    n, k = xs[0].shape
    w = np.ones((n, k, len(lambdas)))
    for x in xs:
        med = np.median(x, axis=0)
        scale = 1.482602218505602 * np.median(np.abs(x - med), axis=0)
        for i in range(n):
            for j in range(k):
                g = max(-1.0, min(1.0, (x[i, j] - med[j]) / scale[j] / clip))
                for b, lam in enumerate(lambdas):
                    w[i, j, b] *= 1 + lam * g
    return np.log(w.reshape(n, -1).mean(axis=1))


def test_eprocess_matches_naive_transcription():
    rng = np.random.default_rng(0)
    xs = list(rng.standard_normal((40, 7, 2)) + np.array([0.5, 0, 0, 0, 0, 0, 0])[:, None])
    ep = FleetEProcess(7, 2)
    for x in xs:
        tick = ep.update(x)
    np.testing.assert_allclose(tick.log_e, naive_eprocess(xs), rtol=1e-10, atol=1e-12)


def test_state_round_trip_and_determinism():
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((60, 20, 3))
    a = FleetEProcess(20, 3, directions=("up", "down", "both"), phi=0.2)
    for x in xs[:30]:
        a.update(x)
    b = FleetEProcess.from_state(json.loads(json.dumps(a.state())))
    for x in xs[30:]:
        ta, tb = a.update(x), b.update(x)
    assert np.array_equal(ta.log_e, tb.log_e) and np.array_equal(ta.log_e_max, tb.log_e_max)


def test_missing_and_frozen_bet_nothing():
    ep = FleetEProcess(5, 2)
    x = np.arange(10.0).reshape(5, 2)
    x[0, :] = np.nan
    frozen = np.array([False, True, False, False, False])
    t = ep.update(x, frozen=frozen)
    assert t.log_e[0] == 0.0 and t.log_e[1] == 0.0 and t.log_e[4] != 0.0


def test_bad_input_is_named():
    ep = FleetEProcess(5, 2)
    with pytest.raises(InputError, match="expected shape"):
        ep.update(np.zeros((4, 2)))
    x = np.zeros((5, 2))
    x[2, 1] = np.inf
    with pytest.raises(InputError, match="row 3, column 'signal 1'"):
        ep.update(x)
    with pytest.raises(InputError):
        FleetEProcess(5, 2, lambdas=(1.5,))
    with pytest.raises(InputError):
        ObserverSettings(q=0)


@pytest.mark.montecarlo
def test_shard_eprocess_ville_under_heavy_tailed_ar1_null():
    """P(sup_t E_t >= 1/alpha) <= alpha per shard: t(3) innovations, AR(1) phi=0.5 (known)."""
    from scipy.stats import beta

    alpha, reps, n = 0.05, 40, 50
    rng = np.random.default_rng(77)
    crossings = 0
    for _ in range(reps):
        ep = FleetEProcess(n, 2, phi=0.5, directions=("up", "both"))
        state = np.zeros((n, 2))
        for _t in range(300):
            state = 0.5 * state + rng.standard_t(3, (n, 2))
            tick = ep.update(state + 5.0 * rng.standard_normal())
        crossings += int((tick.log_e_max >= math.log(1 / alpha)).sum())
    total = reps * n
    upper = float(beta.ppf(0.95, crossings + 1, total - crossings))
    print(f"Ville crossing rate {crossings / total:.4f} (CP95 upper {upper:.4f})")
    assert upper <= alpha


def test_group_average_is_mean_of_e_values():
    le = np.log(np.array([1.0, 4.0, 9.0, 0.5]))
    out = group_log_e(le, np.array([0, 0, 1, -1]), 3)
    np.testing.assert_allclose(np.exp(out[:2]), [2.5, 9.0])
    assert out[2] == -np.inf


def test_attribution_levels():
    topo = TopologySnapshot.synthetic(4, 2, 4, racks_per_switch=2)
    rack = list(topo.members("rack", "r001"))
    got = attribute(topo, rack + ["r003-h00-g0"], max_hops=4)
    assert [(a.kind, a.level, a.node) for a in got] == [("node_fault", "rack", "r001"),
                                                        ("shard_fault", "shard", "r003-h00-g0")]
    sw = list(topo.members("switch", "sw000"))
    assert [(a.level, a.node) for a in attribute(topo, sw, max_hops=4)] == [("switch", "sw000")]
    # with max_hops=3 the switch is out of reach: named as its two racks
    assert [(a.level, a.node) for a in attribute(topo, sw, max_hops=3)] == [("rack", "r000"), ("rack", "r001")]


@pytest.mark.parametrize(
    ("failure", "kind", "level"),
    [("shard_step", "shard_fault", "shard"), ("rack_common_mode", "node_fault", "rack"),
     ("switch_spanning", "node_fault", "switch"), ("fleet_event", "fleet_event", "fleet")],
)
def test_scenarios_detect_and_attribute(failure, kind, level):
    r = run_scenario(failure, magnitude=3.0 if failure != "fleet_event" else 4.0, seed=2)
    assert r.detected and r.attributed, (r.truth, [(a.kind, a.level, a.node) for a in r.final.attributions])
    assert r.final.attributions[0].kind == kind and r.final.attributions[0].level == level
    assert r.false_flags == 0


def test_clean_scenario_flags_nothing_and_freeze_prevents_blame():
    assert not run_scenario("clean", seed=3).flagged
    hit = run_scenario("rack_common_mode", magnitude=3.0, seed=3)
    frozen = run_scenario("rack_common_mode", magnitude=3.0, seed=3, with_event=True)
    assert hit.flagged and not frozen.flagged


def test_event_contract_and_observation_schema():
    with pytest.raises(ValidationError):
        ClusterEvent(kind="deploy", start_tick=0, window=5, scope_level="rack")  # scope needed
    with pytest.raises(ValidationError):
        ClusterEvent.model_validate({"kind": "deploy", "start_tick": 0, "window": 5, "extra": 1})
    ev = ClusterEvent(kind="deploy", start_tick=2, window=3, scope_level="host", scope=("r000-h00",))
    topo = TopologySnapshot.synthetic(1, 2, 2)
    obs = FleetObserver(topo, 1)
    obs.add_event(ev.model_dump())
    got = [obs.update(np.arange(4.0)[:, None]) for _ in range(6)]
    assert [bool(o.active_events) for o in got] == [False, False, True, True, True, False]
    assert got[2].frozen == ("r000-h00-g0", "r000-h00-g1")
    FleetObservation.model_validate_json(got[2].model_dump_json())


def test_curation_gate_levels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 20, 3))
    assert curate_baseline(x).status == "ready"
    x[:40] += 10.0  # 10% of ticks: a fleet-wide incident
    assert curate_baseline(x).status == "warn"
    x[:80] += 10.0  # 20%
    rep = curate_baseline(x)
    assert rep.status == "halt" and curate_baseline(x, override=True).status == "overridden"
    assert {r["screen"] for r in rep.log} <= {"mcd", "fleet_correlated"} and len(rep.log) == 80


def test_cli_demo_and_curate(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["demo", "rack_common_mode"])
    assert r.exit_code == 0 and "node_fault: rack" in r.output
    r = runner.invoke(app, ["demo", "nope"])
    assert r.exit_code == 2
    rng = np.random.default_rng(2)
    lines = ["tick,shard,lat,err"]
    for t in range(150):
        for s in range(6):
            v = rng.standard_normal(2) + (3.0 if (s == 4 and t >= 20) else 0.0)
            lines.append(f"{t},s{s},{v[0]:.4f},{v[1]:.4f}")
    p = tmp_path / "fleet.csv"
    p.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["observe", str(p), "--q", "0.1"])
    assert r.exit_code == 4 and "s4" in r.output
    # with a signals file saying lower is worse, s4's upward move is harmless: nothing is flagged
    sig = tmp_path / "signals.csv"
    sig.write_text("name,direction,kind\nlat,down,continuous\nerr,down,continuous\n")
    r = runner.invoke(app, ["observe", str(p), "--q", "0.1", "--signals", str(sig)])
    assert r.exit_code == 0 and "s4" not in r.output, r.output
    sig.write_text("name,direction,kind\nlat,sideways,continuous\n")
    r = runner.invoke(app, ["observe", str(p), "--signals", str(sig)])
    assert r.exit_code == 2 and "direction" in r.output
    r = runner.invoke(app, ["curate-baseline", str(p), "--log", str(tmp_path / "log.jsonl")])
    assert r.exit_code in (0, 2) and "drop_rate" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("tick,shard,lat\n0,s0,abc\n")
    r = runner.invoke(app, ["observe", str(bad)])
    assert r.exit_code == 2 and "row 1" in r.output and "lat" in r.output


@pytest.mark.parametrize("body, needle", [
    ("0,s0,1\n0,s1,2\n0,s0,3\n", "row 3, column 'shard': {path}: second row for tick 0, shard 's0' (first on row 1)"),
    ("0,s0,1\n1,s0,2\n0,s1,3\n1,s0,4\n", "row 4, column 'shard': {path}: second row for tick 1, shard 's0' (first on row 2)"),
    ("0,s0,1\n0,s1,inf\n", "row 2, column 'lat': {path}: infinite value 'inf'"),
], ids=["duplicate-tick-shard", "duplicate-after-revisit", "infinite"])
def test_long_csv_duplicates_and_infinities_name_the_row(tmp_path, body, needle):
    """A second row for a (tick, shard) silently replaced the first; an infinite value was reported by
    shard/signal index."""
    from deploysignal.cli._fleet import read_long_csv

    p = tmp_path / "fleet.csv"
    p.write_text("tick,shard,lat\n" + body)
    with pytest.raises(InputError) as exc:
        read_long_csv(p)
    assert str(exc.value) == needle.format(path=p)
    r = CliRunner().invoke(app, ["observe", str(p)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    p.write_bytes(b"tick,shard,lat\n0,s0,1\n0,s\xe9,1\n")
    with pytest.raises(InputError, match=r"fleet.csv: not UTF-8 text \(line 3\)"):
        read_long_csv(p)


def test_long_csv_rows_in_any_order_read_into_the_same_array(tmp_path, rng):
    """Review finding: a CSV grouped by shard (all ticks of s0, then all of s1) was rejected after the bad-input
    change although it was accepted before and reads into exactly the same array; rows in any order are fine."""
    from deploysignal.cli._fleet import read_long_csv

    x = rng.normal(size=(40, 3, 2))
    rows = [(t, s) for t in range(40) for s in range(3)]
    orders = {"interleaved": rows, "by-shard": sorted(rows, key=lambda r: (r[1], r[0])),
              "shuffled": [rows[i] for i in rng.permutation(len(rows))]}
    got = {}
    for name, order in orders.items():
        p = tmp_path / f"{name}.csv"
        p.write_text("tick,shard,a,b\n" + "".join(f"{t},s{s},{float(x[t, s, 0])!r},{float(x[t, s, 1])!r}\n" for t, s in order))
        got[name] = read_long_csv(p)
    for shards, signals, arr in got.values():  # shards in first-seen order, ticks increasing
        assert signals == ["a", "b"] and np.array_equal(arr, x[:, [int(s[1:]) for s in shards]])
    assert got["by-shard"][0] == got["interleaved"][0] == ["s0", "s1", "s2"]
    assert np.array_equal(got["by-shard"][2], x) and np.array_equal(got["interleaved"][2], x)
    p = tmp_path / "by-shard.csv"
    r = CliRunner().invoke(app, ["curate-baseline", str(p)])
    assert r.exit_code == 0 and '"ticks": 40' in r.output, r.output


def test_observe_baseline_with_shuffled_rows_is_aligned_to_the_telemetry_shards(tmp_path, rng):
    """Review finding: with rows in any order the shard order follows the rows, so a baseline holding the
    same shards in shuffled rows was rejected (exit 2, "baseline shards/signals differ"); it is aligned."""
    x = rng.normal(size=(60, 4, 1))
    rows = [(t, s) for t in range(60) for s in range(4)]
    tel, base = tmp_path / "tel.csv", tmp_path / "base_shuf.csv"
    tel.write_text("tick,shard,lat\n" + "".join(f"{t},s{s},{float(x[t, s, 0])!r}\n" for t, s in rows))
    base.write_text("tick,shard,lat\n" + "".join(f"{t},s{s},{float(x[t, s, 0])!r}\n"
                                                  for t, s in (rows[i] for i in rng.permutation(len(rows)))))
    same = CliRunner().invoke(app, ["observe", str(tel), "--baseline", str(tel), "--jsonl"])
    shuffled = CliRunner().invoke(app, ["observe", str(tel), "--baseline", str(base), "--jsonl"])
    assert same.exit_code in (0, 4) and shuffled.exit_code == same.exit_code, shuffled.output
    assert shuffled.output == same.output  # the same baseline per shard, whatever the row order
    base.write_text("tick,shard,lat\n" + "".join(f"{t},x{s},1.0\n" for t, s in rows))
    r = CliRunner().invoke(app, ["observe", str(tel), "--baseline", str(base)])
    assert r.exit_code == 2 and "baseline shards/signals differ" in r.output


def test_curation_of_a_mostly_constant_signal_leaves_it_out_of_the_mcd(tmp_path, rng, caplog):
    """Review finding: a signal whose fleet median is one value in most ticks (a rarely non-zero error
    count) crashed MinCovDet (zero support covariance): curate-baseline / observe --baseline exited 1
    with a traceback. The MCD screen now leaves such a signal out (warning, ``mcd_left_out``); the
    fleet-correlated screen still drops the fleet-wide excursions."""
    import logging

    x = np.zeros((200, 8, 1))
    x[::20, :, 0] = 1.0  # every 20th tick the whole fleet reports one error
    with caplog.at_level(logging.WARNING, logger="deploysignal"):
        rep = curate_baseline(x)
    assert rep.mcd_left_out == [0] and rep.n_mcd == 0 and rep.n_corr == 10 and not rep.keep[::20].any()
    assert rep.summary()["mcd_left_out"] == [0]
    assert any("MCD screen cannot use signal(s) 0" in r.getMessage() for r in caplog.records)
    # with a second, varying signal the MCD is fitted as before: nothing left out, summary unchanged
    both = curate_baseline(np.concatenate([x, rng.normal(size=(200, 8, 1))], axis=2))
    assert both.mcd_left_out == [] and "mcd_left_out" not in both.summary() and both.n_mcd > 0
    p = tmp_path / "b.csv"
    p.write_text("tick,shard,errors\n" + "".join(f"{t},s{s},{x[t, s, 0]}\n" for t in range(200) for s in range(8)))
    r = CliRunner().invoke(app, ["curate-baseline", str(p)])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert json.loads(r.output)["mcd_left_out"] == [0]
    r = CliRunner().invoke(app, ["observe", str(p), "--baseline", str(p)])
    assert r.exit_code in (0, 4) and "Traceback" not in r.output, r.output  # was exit 1, ValueError


@pytest.mark.montecarlo
@pytest.mark.parametrize("seeds", [(0, 1), pytest.param((0, 1, 2, 3, 4), marks=pytest.mark.extended)])  # all 5: docs/fleet_coverage.md
def test_coverage_matrix_attribution_where_detected(seeds):
    from deploysignal.fleet._scenarios import FAILURE_TYPES, coverage_matrix

    rows = coverage_matrix(seeds=seeds)
    runs = 4 * len(seeds)
    assert len(rows) == 6 * runs
    for f in FAILURE_TYPES:
        det = [r for r in rows if r["failure"] == f and r["detected"]]
        att = sum(r["attributed"] for r in det)
        print(f"{f}: detected {len(det)}/{runs}, attributed {att}/{len(det)}")
        assert det and att / len(det) >= 0.95
    again = run_scenario("host_fault", magnitude=1.5, seed=seeds[-1])
    first = next(r for r in rows if r["failure"] == "host_fault" and r["magnitude"] == 1.5 and r["seed"] == seeds[-1])
    assert again.detected == first["detected"] and (again.first_flag_tick or 0) - 100 == (first["delay"] or 0)


def test_public_api_is_pinned():
    import deploysignal.fleet as fleet

    assert sorted(fleet.__all__) == sorted(
        ["LEVELS", "MIN_LOAD_SHARE", "Attribution", "ClusterEvent", "CommonMode", "CommonModeEProcess", "CurationReport", "FleetEProcess", "FleetObservation",
         "FleetObserver", "FleetTick", "NodeEvidence", "ObserverSettings", "Shard", "TopologySnapshot",
         "adjust_running_max", "attribute", "bench_fleet", "contamination_margin", "curate_baseline", "ebh", "ebh_batch",
         "expand_hostlist", "fetch_snapshot", "fit_common_mode", "fit_common_mode_or_reason", "group_log_e", "parse_k8s_nodes", "parse_neuron_ls",
         "parse_nvidia_smi_topo", "parse_scontrol_nodes", "parse_scontrol_topology", "parse_sinfo",
         "parse_tpu_describe", "robust_residuals", "running_max_counterexample"]
        + ["NEURON_FAMILIES", "TPU_CORES_PER_CHIP", "NeuronFamily", "parse_inferentia_ls", "parse_trainium_ls"]
    )
    assert all(hasattr(fleet, n) for n in fleet.__all__)


@pytest.mark.montecarlo
def test_fleet_level_alarm_ville_under_stationary_heavy_tailed_null():
    """Fleet-level e-process: P(ever fire) <= alpha_fleet when the fleet median is stationary and symmetric
    about the baseline location (t(3) shocks shared by the fleet, baseline loc/scale from a separate run)."""
    from scipy.stats import beta

    reps, alpha = 200, 0.05
    rng = np.random.default_rng(99)
    topo = TopologySnapshot.synthetic(2, 2, 2)
    fires = 0
    for _ in range(reps):
        base = np.median(rng.standard_t(3, (400, 1, 2)) + 0.3 * rng.standard_normal((400, 8, 2)), axis=1)
        # the null's centre is the true symmetry point (0); the scale may be estimated (it shapes power only)
        scale = 1.4826 * np.median(np.abs(base - np.median(base, axis=0)), axis=0)
        obs = FleetObserver(topo, 2, baseline_loc=np.zeros(2), baseline_scale=scale,
                            settings=ObserverSettings(alpha_fleet=alpha))
        x = rng.standard_t(3, (150, 1, 2)) + 0.3 * rng.standard_normal((150, 8, 2))
        for t in range(150):
            o = obs.update(x[t])
        fires += o.fleet_fired
    upper = float(beta.ppf(0.95, fires + 1, reps - fires))
    print(f"fleet-level alarm rate {fires / reps:.3f} (CP95 upper {upper:.3f})")
    assert upper <= alpha
