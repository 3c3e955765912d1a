"""Start-up time of the ``deploysignal`` command line: ``--version``, ``--help`` and ``gate`` on a compiled
config with a one-tick canary (the cost every ``gate`` call of a CI pipeline pays before its first tick).

Each command runs ``--repeats`` times as a fresh process (after one unrecorded warm-up run that fills
numba's on-disk kernel cache and the OS file cache); the report gives the median and the 90th percentile
of wall time and of CPU time (user + system of the child, from ``resource.getrusage``). Wall time on a
shared machine includes waiting for a core: CPU time is the figure that does not depend on the load,
which is printed alongside.

Usage: ``PYTHONPATH=src python benchmarks/cli_start.py [--repeats N] [--json]`` (about a minute with the
default 10 repeats: the setup simulates a scenario and compiles its baseline once). ``--importtime``
prints, instead, the 15 slowest imports (cumulative, ``python -X importtime``) of one command.
``--breakdown`` prints where the CPU time of ``gate``'s first tick goes: fresh processes each run the
steps of the ``gate`` command in its order (:data:`PHASES`) and time each step's CPU; the median over
``--repeats`` processes per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import deploysignal

CLI = [sys.executable, "-m", "deploysignal"]
#: the children run the code this script imported (a relative PYTHONPATH=src would not survive their cwd)
ENV = {**os.environ, "PYTHONPATH": str(Path(deploysignal.__file__).resolve().parents[1])}


def _run(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit code of one run of ``deploysignal ARGS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.returncode


def _setup(work: Path) -> list[str]:
    """Simulate scenario ``step`` (seed 0), compile its baseline (no backtest) and cut a one-tick canary."""
    subprocess.run([*CLI, "simulate", "step", "--seed", "0", "-o", str(work)], env=ENV, check=True, capture_output=True)
    subprocess.run([*CLI, "calibrate", str(work / "baseline.csv"), "-o", str(work / "config.json"), "--backtest-windows", "0"],
                   env=ENV, check=True, capture_output=True)
    lines = (work / "canary.csv").read_text(encoding="utf-8").splitlines()
    (work / "canary1.csv").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    return ["gate", str(work / "canary1.csv"), "-c", str(work / "config.json"), "--json"]


def measure(repeats: int) -> dict[str, object]:
    """Median and 90th percentile of wall and CPU seconds per command (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="deploysignal-cli-start-") as tmp:
        work = Path(tmp)
        commands = {"--version": ["--version"], "--help": ["--help"], "gate (1 tick, compiled config)": _setup(work)}
        rows = []
        for label, args in commands.items():
            _run(args, work)  # warm-up: numba's on-disk cache, the OS file cache
            runs = [_run(args, work) for _ in range(repeats)]
            codes = sorted({c for _, _, c in runs})
            wall = np.array([w for w, _, _ in runs])
            cpu = np.array([c for _, c, _ in runs])
            rows.append({
                "command": label, "runs": repeats, "exit_codes": codes,
                "wall_median_s": round(float(np.median(wall)), 3), "wall_p90_s": round(float(np.quantile(wall, 0.9)), 3),
                "cpu_median_s": round(float(np.median(cpu)), 3), "cpu_p90_s": round(float(np.quantile(cpu, 0.9)), 3),
            })
    return {"python": platform.python_version(), "cores": os.cpu_count(), "source": ENV["PYTHONPATH"], "load_average": [round(x, 2) for x in os.getloadavg()],
            "results": rows}


#: the steps of ``deploysignal gate CANARY -c CONFIG --json`` up to its first tick, in the order the command
#: takes them; each is timed (CPU) in one child process by :data:`_PROBE`
PHASES: dict[str, str] = {
    "interpreter, numpy": "import numpy",
    "numba import": "import numba",
    "command line (typer, rich, the lazy group, cli._app)": "import typer, rich.console; from deploysignal.cli import _app as A",
    "pydantic, the config model (calibration)": "import deploysignal.calibration",
    "gate and detector modules (scipy.special)": "import deploysignal.gate, deploysignal.audit, deploysignal.sources",
    "read config, settings, canary": "cfg = A.load_config(Path(CONFIG)); st = A._settings(0.05, 480, 'one-sample', False); can = A.load_stream(Path(CANARY), cfg, 'canary')",
    "Gate(...)": "from deploysignal.gate import Gate; g = Gate(cfg, st)",
    "numba target initialisation (imports scipy.linalg)": "from numba.core.registry import cpu_target; cpu_target.target_context.refresh()",
    "first tick (loads the cached kernels)": "d = g.update(can.timestamps[0], can.values[0])",
}
_PROBE = """
import resource, sys, time
from pathlib import Path
CONFIG, CANARY = sys.argv[1], sys.argv[2]
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
out = []
{body}
print(" ".join(map(repr, out)))
"""


def breakdown(repeats: int) -> dict[str, float]:
    """Median CPU seconds of each of :data:`PHASES` over ``repeats`` fresh processes (the first step
    includes the interpreter's own start)."""
    body = "t = 0.0\n" + "".join(f"{code}\nout.append(cpu() - t); t = cpu()\n" for code in PHASES.values())
    probe = _PROBE.format(body=body)
    with tempfile.TemporaryDirectory(prefix="deploysignal-cli-start-") as tmp:
        work = Path(tmp)
        args = _setup(work)
        subprocess.run([*CLI, *args], cwd=work, env=ENV, capture_output=True, check=False)  # warm-up: numba's cache
        runs = []
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-c", probe, args[3], args[1]], cwd=work, env=ENV, capture_output=True, text=True, check=True)
            runs.append([float(x) for x in proc.stdout.split()])
    med = np.median(np.array(runs), axis=0)
    return {label: round(float(v), 3) for label, v in zip(PHASES, med)}


def importtime(args: list[str]) -> list[tuple[int, str]]:
    """The 15 slowest imports (cumulative microseconds, module) of ``deploysignal ARGS``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "deploysignal", *args], env=ENV, capture_output=True, text=True, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cum, name = line.split("|")
            rows.append((int(cum.strip()), name.strip()))
    return sorted(rows, reverse=True)[:15]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--importtime", nargs=argparse.REMAINDER, help="deploysignal arguments whose imports to list (e.g. --importtime --version)")
    ap.add_argument("--breakdown", action="store_true", help="CPU per step of gate's first tick (median over --repeats processes)")
    ns = ap.parse_args()
    if ns.breakdown:
        parts = breakdown(ns.repeats)
        for label, sec in parts.items():
            print(f"{sec:7.3f} s  {label}")
        print(f"{sum(parts.values()):7.3f} s  total (sum of the medians)")
        return
    if ns.importtime is not None:
        for cum, name in importtime(ns.importtime or ["--version"]):
            print(f"{cum / 1000:9.1f} ms  {name}")
        return
    res = measure(ns.repeats)
    if ns.json:
        print(json.dumps(res, indent=2, sort_keys=True))
        return
    print(f"deploysignal start-up ({res['source']}), {ns.repeats} runs each (Python {res['python']}, {res['cores']} cores, "
          f"load average at the end {res['load_average']})")
    print(f"{'command':34} {'wall median':>12} {'wall p90':>9} {'CPU median':>11} {'CPU p90':>8}  exit")
    for r in res["results"]:
        print(f"{r['command']:34} {r['wall_median_s']:11.2f}s {r['wall_p90_s']:8.2f}s {r['cpu_median_s']:10.2f}s {r['cpu_p90_s']:7.2f}s  "
              f"{','.join(map(str, r['exit_codes']))}")


if __name__ == "__main__":
    main()
