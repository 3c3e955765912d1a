"""docs/split.md "In the service", run as written: every ``$ command`` of its console block in one bash
session against a real ``deploysignal serve``; every shown output compared line for line (port 8080
becomes the test server's)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ._external import _ensure
from ._proc import READ, WRITE, Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "split.md"


def test_split_service_curl_examples(tmp_path):
    for tool in ("jq", "curl"):
        _ensure(tool, tool)
    text = DOC.read_text()
    block = re.search(r"## In the service\n.*?```console\n(.*?)```", text, re.S)
    assert block is not None
    cmds: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            cmds.append((line[2:], []))
        elif line.strip():
            cmds[-1][1].append(line)
    with Server(tmp_path, f"sqlite:///{tmp_path / 'docs.db'}") as srv:
        port = srv.url.rsplit(":", 1)[1]
        script = ["set -euo pipefail"]
        for i, (cmd, _) in enumerate(cmds):
            script += [f"printf '\\n@@{i}@@\\n'", cmd.replace("localhost:8080", f"localhost:{port}")]
        env = {**os.environ, "WRITE_TOKEN": WRITE, "READ_TOKEN": READ}
        p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    parts = re.split(r"\n@@(\d+)@@\n", "\n" + p.stdout)
    outputs = {int(parts[k]): parts[k + 1] for k in range(1, len(parts) - 1, 2)}
    checked = 0
    for i, (cmd, expected) in enumerate(cmds):
        if expected:
            assert outputs.get(i, "").strip().splitlines() == expected, (cmd[:80], outputs.get(i, "").strip().splitlines())
            checked += 1
    assert checked >= 5
