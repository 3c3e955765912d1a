"""Real PostgreSQL and Prometheus for integration tests, started through scripts/ci_services.sh.

When a binary is missing the script is asked to install it (root + apt-get); if that fails the test
is skipped with the reason, never silently passed.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ci_services.sh"


def _ensure(binary: str, package: str) -> None:
    if binary == "initdb":
        have = any(Path(p).exists() for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")
    else:
        have = shutil.which(binary)
    if not have:
        subprocess.run(["bash", str(SCRIPT), "install"], check=False, capture_output=True, timeout=900)
        if binary == "initdb":
            have = any(Path(p).exists() for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")
        else:
            have = shutil.which(binary)
    if not have:
        pytest.skip(f"Debian package {package!r} is not installed and could not be installed (run scripts/ci_services.sh as root)")


class Postgres:
    def __init__(self) -> None:
        _ensure("initdb", "postgresql")
        out = subprocess.run(["bash", str(SCRIPT), "start-postgres"], check=True, capture_output=True, text=True, timeout=120)
        self.url, self.dir = out.stdout.split()

    def fresh_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop-postgres", self.dir], check=False, capture_output=True, timeout=120)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log and answers with :meth:`reply`."""

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


class Exporter:
    """Serves simulated telemetry in Prometheus exposition format; each scrape advances one row."""

    def __init__(self, rows: list[dict[str, float]], port: int) -> None:
        self.rows, self.i, self.lock = rows, 0, threading.Lock()
        exp = self

        class H(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                with exp.lock:
                    row = exp.rows[min(exp.i, len(exp.rows) - 1)]
                    exp.i += 1
                lines = ["# TYPE ds_sim gauge"]
                for key, v in row.items():
                    cohort, signal = key.split(":")
                    lines.append(f'ds_sim{{cohort="{cohort}",signal="{signal}"}} {v!r}'.replace("nan", "NaN"))
                self.reply(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    def __init__(self, tmp: Path, target_port: int, port: int, ready: str = "ds_sim") -> None:
        _ensure("prometheus", "prometheus")
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: sim\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        out = subprocess.run(["bash", str(SCRIPT), "start-prometheus", str(tmp / "prom"), str(cfg), str(port)], check=True, capture_output=True, text=True, timeout=60)
        self.pid = int(out.stdout.strip())
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/api/v1/query", params={"query": ready}, timeout=2)
                if r.status_code == 200 and r.json()["data"]["result"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"prometheus did not scrape the exporter in 60 s: {(tmp / 'prom' / 'prometheus.log').read_text()[-2000:]}")

    def stop(self) -> None:
        import os
        import signal

        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
