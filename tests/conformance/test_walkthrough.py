"""docs/walkthrough.md, run as written: every ``$ command`` of its console blocks, in order, in one bash
session, against a real Prometheus scraping an exporter of simulated healthy telemetry; every shown
output is compared line for line. The only rewrites: port 8080 becomes a free port, and the
background service is killed when the script ends."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service._external import Exporter, Prometheus, _ensure
from service._proc import free_port

from ._live import DOCS, READ, WRITE

pytestmark = pytest.mark.integration
SIGNALS = ("p99_latency_ms", "ttft_ms", "eval_score")


def doc_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each ``$`` line of the ```console blocks."""
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif line.strip():
                out[-1][1].append(line)
    return out


def test_walkthrough_commands(tmp_path, healthy):
    for tool in ("jq", "curl"):
        _ensure(tool, tool)
    sim, _ = healthy
    names = list(sim.baseline.signals)
    # the simulated canary is served now: shift the baseline so its diurnal cells line up with the wall
    # clock as they did with the simulated canary's own timestamps
    shift = time.time() - float(sim.canary.timestamps[0])
    with open(tmp_path / "baseline.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", *SIGNALS])
        for i in range(len(sim.baseline)):
            w.writerow([repr(float(sim.baseline.timestamps[i]) + shift)] + [repr(float(sim.baseline.values[i, names.index(s)])) for s in SIGNALS])
    rows = [{f"canary:{s}": float(sim.canary.values[i, names.index(s)]) for s in SIGNALS} for i in range(len(sim.canary))]
    exporter = Exporter(rows, free_port())
    prom = Prometheus(tmp_path, exporter.server.server_address[1], free_port())
    port = str(free_port())
    cmds = doc_commands((DOCS / "walkthrough.md").read_text())
    assert len(cmds) >= 12 and any("deploysignal serve" in c for c, _ in cmds)
    script = ["set -euo pipefail", "bg=''", 'trap \'[ -n "$bg" ] && kill $bg 2>/dev/null; wait 2>/dev/null || true\' EXIT']
    for i, (cmd, _) in enumerate(cmds):
        cmd = cmd.replace("localhost:8080", f"localhost:{port}").replace("--port 8080", f"--port {port}")
        script.append(f"printf '\\n@@{i}@@\\n'")
        script.append(cmd)
        if cmd.rstrip().endswith("&"):
            script.append('bg="$bg $!"')
    venv_bin = str(Path(sys.executable).parent)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ["PATH"], "PYTHONPATH": src, "PROMETHEUS_URL": prom.url, "WRITE_TOKEN": WRITE, "READ_TOKEN": READ}
    try:
        p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        prom.stop()
        exporter.stop()
    serve_log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert p.returncode == 0, f"walkthrough failed: {p.stderr[-3000:]}\nstdout: {p.stdout[-2000:]}\nserve.log: {serve_log[-2000:]}"
    parts = re.split(r"\n@@(\d+)@@\n", "\n" + p.stdout)
    outputs = {int(parts[k]): parts[k + 1] for k in range(1, len(parts) - 1, 2)}
    checked = 0
    for i, (cmd, expected) in enumerate(cmds):
        if expected:
            assert outputs.get(i, "").strip().splitlines() == expected, f"command {i}: {shlex.split(cmd)[:3]}..."
            checked += 1
    assert checked >= 6  # template stored, Argo pending then proceed, Flagger 200 and held, history, replay
