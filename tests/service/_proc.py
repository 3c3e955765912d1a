"""Run ``deploysignal serve`` as a real uvicorn subprocess for tests and benchmarks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deploysignal.service import hash_token

WRITE, READ, KAYENTA = "w-token-test", "r-token-test", "k-token-test"
SERVE = "import typer; from deploysignal.cli._service import serve; typer.run(serve)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tokens_file(tmp: Path) -> Path:
    p = tmp / "tokens.json"
    p.write_text(json.dumps([{"name": "w", "sha256": hash_token(WRITE), "role": "write"}, {"name": "r", "sha256": hash_token(READ), "role": "read"},
                              {"name": "k", "sha256": hash_token(KAYENTA), "role": "kayenta"}]))
    return p


class Server:
    def __init__(self, tmp: Path, store: str, port: int | None = None, extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(__file__).resolve().parents[2] / "src")
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # tests and benchmarks drive one analysis faster than serve's default rate limits admit (tested in test_tenancy_scope.py)
        limits = [] if any(a.startswith("--rate-limit") for a in extra or []) else ["--rate-limit-token", "", "--rate-limit-analysis", ""]
        args = [sys.executable, "-c", SERVE, "--port", str(self.port), "--store", store, "--create", "--tokens-file", str(tokens_file(tmp)), "--log-level", "warning",
                *limits, *(extra or [])]
        self.log = open(tmp / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180  # a cold numba cache compiles the kernels before the port opens (~25 s idle)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {(tmp / f'server-{self.port}.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not come up in 180 s")

    def kill(self, sig: int = 9) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill(15)
