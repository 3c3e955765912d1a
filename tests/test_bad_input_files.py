"""Malformed input files (bad encodings, corrupted lines) give one-line errors naming the file, exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deploysignal import ConfigError, InputError
from deploysignal.audit import read_audit
from deploysignal.cli import app
from deploysignal.simulate import simulate
from deploysignal.sources import write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Baseline, compiled config, canary and its audit log, written by the CLI."""
    d = tmp_path_factory.mktemp("audit")
    sim = simulate("healthy", seed=3, baseline_ticks=600, canary_ticks=30)
    write_csv(sim.baseline, d / "b.csv")
    write_csv(sim.canary, d / "c.csv")
    assert runner.invoke(app, ["calibrate", str(d / "b.csv"), "-o", str(d / "cfg.json"), "--no-robust"]).exit_code == 0
    res = runner.invoke(app, ["gate", str(d / "c.csv"), "-c", str(d / "cfg.json"), "--audit", str(d / "audit.jsonl")])
    assert res.exit_code in (0, 3), res.output
    return d


def _replay(d, audit):
    return runner.invoke(app, ["replay", str(d / "c.csv"), "-c", str(d / "cfg.json"), "--audit", str(audit)])


def test_audit_record_line_not_utf8_is_a_mismatch_at_its_line(audited, tmp_path):
    """Review finding: one bad byte in a record line was exit 2 "not UTF-8" without a line; corruption is a
    replay mismatch at its line (exit 1), as a truncated line is. A bad header is an input error, row 1."""
    good = (audited / "audit.jsonl").read_bytes()
    n = good[: good.index(b'"tick":1,')].count(b"\n") + 1  # the line of the first record of tick 1
    bad = tmp_path / "audit.jsonl"
    bad.write_bytes(good.replace(b'"tick":1,', b'"tick":1,"x":"\xff",', 1))
    header, lines = read_audit(bad)
    assert header["family"] == "header" and len(lines) == good.count(b"\n") - 1
    res = _replay(audited, bad)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"audit line {n}: record is not UTF-8 text (corrupted audit line)" in res.output
    bad.write_bytes(good.replace(b'"family":"header"', b'"family":"header","x":"\xe9"', 1))
    with pytest.raises(InputError, match=r"row 1: .*audit.jsonl: first line is not UTF-8 text"):
        read_audit(bad)
    res = _replay(audited, bad)
    assert res.exit_code == 2 and "first line is not UTF-8" in res.output and "Traceback" not in res.output


def test_encoding_errors_name_the_line(tmp_path):
    """Review finding: encoding errors named only the file."""
    from deploysignal.pipeline import load_pipeline
    from deploysignal.sources import read_frame, read_signals_file

    (tmp_path / "t.csv").write_bytes(b"timestamp,lat\n1,1\n2,2\n3,\xff\n")
    with pytest.raises(InputError, match=r"t.csv: not UTF-8 text \(line 4\)"):
        read_frame(tmp_path / "t.csv")
    (tmp_path / "t.jsonl").write_bytes(b'{"timestamp": 1, "lat": 1}\n{"timestamp": 2, "lat": "\xff"}\n')
    with pytest.raises(InputError, match=r"t.jsonl: not UTF-8 text \(line 2\)"):
        read_frame(tmp_path / "t.jsonl")
    (tmp_path / "s.yaml").write_bytes(b"lat: {direction: up}\nerr\xe9: {direction: up}\n")
    with pytest.raises(InputError, match=r"s.yaml: not UTF-8 text \(line 2\)"):
        read_signals_file(tmp_path / "s.yaml")
    (tmp_path / "p.yaml").write_bytes(b"version: 1\nname: x\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"p.yaml is not UTF-8 text \(line 3\)"):
        load_pipeline(tmp_path / "p.yaml")


@pytest.mark.parametrize("name", ["s.yaml", "s.json"])
def test_signals_file_nested_too_deeply_is_an_input_error(tmp_path, name):
    """Review finding: RecursionError traceback."""
    from deploysignal.sources import read_signals_file

    (tmp_path / name).write_text("[" * 100_000)
    with pytest.raises(InputError, match="not usable JSON/YAML \\(nested too deeply\\)"):
        read_signals_file(tmp_path / name)


def test_audit_header_with_a_huge_integer_is_an_input_error(audited, tmp_path):
    bad = tmp_path / "audit.jsonl"
    lines = (audited / "audit.jsonl").read_text().splitlines()
    bad.write_text("\n".join(['{"family": "header", "n": 1' + "0" * 5000 + "}"] + lines[1:]) + "\n")
    with pytest.raises(InputError, match="row 1: .*first line is not usable JSON"):
        read_audit(bad)


def test_replay_of_a_corrupted_record_line_is_a_mismatch_naming_the_line(audited, tmp_path):
    bad = tmp_path / "audit.jsonl"
    lines = (audited / "audit.jsonl").read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # truncated record
    bad.write_text("\n".join(lines) + "\n")
    res = _replay(audited, bad)
    assert res.exit_code == 1 and "audit line 4: record is not a JSON object" in res.output, res.output
    assert "Traceback" not in res.output
    assert _replay(audited, audited / "audit.jsonl").exit_code == 0
