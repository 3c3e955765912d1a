"""Coverage grid (all failure types, several severities, a detection floor) and detection envelope.

CI runs single cells on both sides of the floor and one envelope of one failure type at a lower level
(7 runs; the 44-run envelope at the 0.9 level is `extended`); the full grid and envelope are
docs/fleet_coverage.md (`fleet coverage`, minutes)."""

import json

import pytest
from typer.testing import CliRunner

from deploysignal import InputError
from deploysignal.cli._fleet import app
from deploysignal.fleet._coverage import COVERAGE_TYPES, SEVERITIES, detection_envelope, run_case
from deploysignal.fleet._scenarios import FAILURE_TYPES, run_scenario


def test_every_failure_type_has_a_grid_reaching_below_the_floor():
    """No ``hierarchical`` label: scored by shard flags it was rack_common_mode (same seeds, same rows);
    it returns when rack-level alarms exist to score it on."""
    assert set(COVERAGE_TYPES) == {*FAILURE_TYPES, "event_conditional", "multiple_testing"}
    assert all(len(SEVERITIES[f]) >= 5 for f in COVERAGE_TYPES)


@pytest.mark.parametrize("shape", [(8, 4, 4), (2, 2, 4)])
def test_multiple_testing_shifts_each_faulty_shard_once(shape):
    """Each faulty shard carries one shift of severity x U(0.5, 1.5) on one signal (the fdr scenario used to
    add a full-severity common shift too: up to 2.5 x the severity); other types shift their scope by exactly
    the severity on one common signal. ``truth["shifts"]`` is the list that drives the injection."""
    r = run_scenario("fdr", magnitude=2.0, seed=3, ticks=110, fleet_shape=shape)
    shifted = [sh for sh, _, _ in r.truth["shifts"]]
    assert sorted(shifted) == sorted(r.truth["affected"])  # once each, nobody else
    assert all(1.0 <= strength <= 3.0 and 0 <= k < 4 for _, k, strength in r.truth["shifts"])
    assert len({k for _, k, _ in r.truth["shifts"]}) > 1 or len(shifted) == 2  # own signals, not one common one
    rack = run_scenario("rack_common_mode", magnitude=0.5, seed=3, ticks=110)
    assert len({k for _, k, _ in rack.truth["shifts"]}) == 1 and {s for _, _, s in rack.truth["shifts"]} == {0.5}
    assert len(rack.truth["shifts"]) == 16


@pytest.mark.montecarlo
@pytest.mark.parametrize(("failure", "below", "above"), [
    ("event_conditional", 0.25, 1.5),
    ("multiple_testing", 0.25, 1.5),
])
def test_new_failure_types_have_a_detection_floor(failure, below, above):
    """The same seed is missed below the floor and detected above it (cells that fail exist)."""
    miss, hit = run_case(failure, below, 0), run_case(failure, above, 0)
    assert not miss["detected"] and miss["delay"] is None and miss["power"] == 0.0
    assert hit["detected"] and hit["attributed"] and hit["false_flags"] == 0 and hit["power"] > 0.5
    if failure == "event_conditional":  # detected only once the 100-tick freeze of its rack is over
        assert hit["delay"] >= 100 and hit["during_freeze"] == 0


def test_run_case_checks_its_arguments():
    with pytest.raises(InputError, match="unknown failure type 'lsf'"):
        run_case("lsf", 1.0, 0)
    with pytest.raises(InputError, match="severity must be a positive number"):
        run_case("shard_step", 0.0, 0)


def test_fdr_scenario_scales_the_faulty_count_with_the_fleet():
    assert len(run_scenario("fdr", magnitude=2.0, seed=0, ticks=120, fleet_shape=(2, 2, 4)).truth["affected"]) == 2
    assert len(run_scenario("fdr", magnitude=2.0, seed=0, ticks=120).truth["affected"]) == 10


@pytest.mark.montecarlo
@pytest.mark.parametrize(("runs", "level", "bound"), [
    (7, (0.5, 0.99), (0.5, 0.52)),  # CI: 7 of 7 -> one-sided 99% CP lower bound 0.518
    pytest.param(44, (0.9, 0.99), (0.9, 0.901), marks=pytest.mark.extended),  # the envelope's own level: 0.9006
])
def test_detection_envelope_is_clopper_pearson_bounded(runs, level, bound):
    """All ``runs`` detected puts the CP lower bound at ``bound``; the floor severity stops at its first
    miss; too few runs for the level (5 of 5 at 0.9: bound 0.40) qualify no severity."""
    grid = {"shard_step": (0.25, 2.0)}
    (env,) = detection_envelope(failures=["shard_step"], shapes=[(2, 4, 4)], severities=grid, runs=runs, level=level)
    assert env["envelope"] == 2.0 and env["shards"] == 32 and bound[0] <= env["cp_lower"] < bound[1]
    assert env["tried"] == [[0.25, 0, 1], [2.0, runs, runs]]
    (short,) = detection_envelope(failures=["shard_step"], shapes=[(2, 4, 4)], severities={"shard_step": (2.0,)}, runs=5)
    assert short["envelope"] is None and short["tried"] == [[2.0, 5, 5]]


def test_cli_fleet_coverage_json_and_markdown(tmp_path):
    out = tmp_path / "cov.md"
    r = CliRunner().invoke(app, ["coverage", "--failures", "rack_common_mode", "--seeds", "1", "--sizes", "2x4x4", "--runs", "1",
                                 "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    det = {row["severity"]: row["detected"] for row in doc["grid"]}
    assert det[0.25] is False and det[1.0] is True  # the floor is in the output
    assert doc["envelope"][0]["envelope"] is None  # 1 run can never bound detection at 0.9
    assert "coverage 1/1: rack_common_mode: grid of 7 severities x 1 seed(s), then the envelope" in r.stderr  # progress
    text = out.read_text()
    assert "| rack_common_mode | 0.25 | 0/1 |" in text and "--failures rack_common_mode" in text
    r = CliRunner().invoke(app, ["coverage", "--failures", "hierarchical", "--no-envelope"])
    assert r.exit_code == 2 and "unknown failure type 'hierarchical'" in r.output
    r = CliRunner().invoke(app, ["coverage", "--failures", "nope", "--no-envelope"])
    assert r.exit_code == 2 and "unknown failure type 'nope'" in r.output
    r = CliRunner().invoke(app, ["coverage", "--sizes", "8x4", "--no-envelope"])
    assert r.exit_code == 2 and "RACKSxHOSTSxGPUS" in r.output
