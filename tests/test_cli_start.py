"""A fast command line: what ``deploysignal --version``, ``--help`` and ``gate`` import (structural checks,
not timings; the timings are benchmarks/cli_start.py's, quoted in the README), and the lazy root group
lists exactly the application's commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy.special import betaincinv, ndtri
from scipy.stats import beta, norm
from typer.testing import CliRunner

from deploysignal.cli import app
from deploysignal.cli._main import COMMANDS, _load, full_app

HEAVY = ("numpy", "numba", "scipy", "fastapi", "sklearn", "statsmodels", "pyarrow", "httpx", "matplotlib", "uvicorn")

PROBE = """
import sys
from deploysignal.cli import main
sys.argv = ["deploysignal", *{args!r}]
try:
    main()  # a library call: raises SystemExit, the process lives on to list its modules
except SystemExit:
    pass
sys.stdout.write("\\nLOADED " + " ".join(sorted(m for m in {heavy!r} if m in sys.modules)) + "\\n")
"""


def _loaded(args: list[str], cwd: Path | None = None) -> tuple[set[str], str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300, check=False)
    out, _, tail = proc.stdout.rpartition("\nLOADED ")
    assert tail, proc.stderr
    return set(tail.split()), out


@pytest.mark.parametrize("args", [["--version"], ["--help"], []])
def test_version_and_help_import_no_numerical_library(args):
    loaded, out = _loaded(args)
    assert loaded == set(), f"`deploysignal {' '.join(args)}` imported {sorted(loaded)}"
    assert ("0.4.0" in out) if args == ["--version"] else ("gate" in out and "fleet" in out and "serve" in out)


def test_gate_on_a_compiled_config_imports_neither_the_compiler_nor_the_service(tmp_path, cfg_healthy, sim_healthy):
    from deploysignal.sources import write_csv

    (tmp_path / "config.json").write_text(cfg_healthy.to_json(), encoding="utf-8")
    write_csv(sim_healthy.canary, tmp_path / "canary.csv")
    lines = (tmp_path / "canary.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "canary1.csv").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    probe = ("sklearn", "statsmodels", "scipy.stats", "scipy.spatial", "fastapi", "uvicorn", "httpx", "matplotlib", "pyarrow")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    code = PROBE.format(args=["gate", "canary1.csv", "-c", "config.json", "--json"], heavy=probe)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    out, _, tail = proc.stdout.rpartition("\nLOADED ")
    assert json.loads(out.strip().splitlines()[-1])["ticks"] == 2, proc.stderr  # the gate ran
    assert set(tail.split()) == set(), f"gate imported {tail}"


def _sixty_ticks(tmp_path, cfg, sim):
    """config.json and a 60-tick canary.csv in ``tmp_path``; the environment that runs this tree's code."""
    from deploysignal.sources import write_csv

    (tmp_path / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    write_csv(sim.canary, tmp_path / "full.csv")
    lines = (tmp_path / "full.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "canary.csv").write_text("\n".join(lines[:61]) + "\n", encoding="utf-8")
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def test_gate_ends_without_the_interpreter_teardown_and_loses_nothing(tmp_path, cfg_healthy, sim_healthy):
    """`deploysignal gate` ends with os._exit after flushing (cli/_main.py): stdout, stderr, the exit code and
    the audit file are complete (the chain verifies, the records replay); an atexit handler of the run does
    not run, which shows the teardown was skipped (the check can fail: without the fast exit it runs)."""
    env = _sixty_ticks(tmp_path, cfg_healthy, sim_healthy)
    code = ("import atexit, sys\nfrom deploysignal.cli import console_main\natexit.register(lambda: sys.stderr.write('TEARDOWN\\n'))\n"
            "sys.argv = ['deploysignal', *sys.argv[1:]]\nconsole_main()\n")
    args = ["gate", "canary.csv", "-c", "config.json", "--json", "--audit", "a.jsonl"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == {"proceed": 0, "extend": 3, "rollback": 4}[summary["verdict"]] and summary["ticks"] == 60
    assert "warning: one-sample, uncertified" in proc.stderr and "TEARDOWN" not in proc.stderr
    r = CliRunner().invoke(app, ["replay", str(tmp_path / "canary.csv"), "-c", str(tmp_path / "config.json"), "--audit", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 0 and "hash chain intact" in r.output, r.output
    # a bad input ends the ordinary way (its message printed, exit 2)
    proc = subprocess.run([sys.executable, "-c", code, "gate", "nope.csv", "-c", "config.json"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600, check=False)
    assert proc.returncode == 2 and "nope.csv" in proc.stderr and "TEARDOWN" in proc.stderr


def test_a_library_call_of_main_raises_systemexit_with_the_verdict_code(tmp_path, cfg_healthy, sim_healthy):
    """`deploysignal.cli.main([...])` is a library call: after `gate` it raises SystemExit with the verdict's
    exit code (the caller catches it and lives on); only the console script (console_main) ends the process."""
    env = _sixty_ticks(tmp_path, cfg_healthy, sim_healthy)
    code = ("import json, sys\nfrom deploysignal.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    sys.stdout.write('\\nCAUGHT ' + json.dumps(exc.code) + '\\n')\n")
    args = ["gate", "canary.csv", "-c", "config.json", "--json", "--audit", "a.jsonl"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    out, _, tail = proc.stdout.rpartition("\nCAUGHT ")
    assert tail, proc.stderr  # the caller caught SystemExit: the process was not ended under it
    summary = json.loads(out.strip().splitlines()[-1])
    assert json.loads(tail) == {"proceed": 0, "extend": 3, "rollback": 4}[summary["verdict"]] and proc.returncode == 0


def test_root_table_lists_exactly_the_commands_of_the_full_application():
    full = typer.main.get_group(full_app())
    assert set(COMMANDS) == set(full.commands), "a root command is missing from (or stale in) deploysignal.cli._main.COMMANDS"
    for name in COMMANDS:
        cmd = _load(name)
        assert cmd is not None and cmd.name == name
        assert type(cmd) is type(full.commands[name])  # a group stays a group, a command a command
        assert [p.name for p in cmd.params] == [p.name for p in full.commands[name].params]


def test_root_help_shows_the_summaries_and_a_command_its_full_help():
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for name, (_, _, summary) in COMMANDS.items():
        assert name in r.output and summary[:40] in r.output
    r = CliRunner().invoke(app, ["gate", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--early-proceed" in r.output
    r = CliRunner().invoke(app, ["fleet", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "curate-baseline" in r.output
    r = CliRunner().invoke(app, ["no-such-command"])
    assert r.exit_code == 2 and "no-such-command" in r.output


def test_scipy_special_replacements_are_bit_identical_to_scipy_stats():
    """Families E and A's band read Beta quantiles and normal tails through scipy.special (scipy.stats
    costs a second at start): the same numbers, bit for bit, on the grid the gate uses."""
    for n in (1, 2, 10, 137, 1000, 4999):
        i = np.arange(1, n + 1)
        for delta in (0.5, 0.005, 1e-4, 1e-9):
            q = 1.0 - delta / (2.0 * n)
            assert np.array_equal(betaincinv(i, n + 1 - i, q), beta.ppf(q, i, n + 1 - i))
    for q in np.geomspace(1e-15, 0.49, 200):
        assert float(-ndtri(q)) == float(norm.isf(q))
