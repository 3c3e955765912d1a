"""Live-service harness for the conformance tests: a real ``deploysignal serve`` process, a fault-injecting
proxy in front of it, the documented examples read from ``docs/integrations.md``, and telemetry feeders."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from service._proc import READ, WRITE, Server, free_port

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_HOST = "http://deploysignal.deploysignal.svc:8080"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
W = {"Authorization": f"Bearer {WRITE}"}
R = {"Authorization": f"Bearer {READ}"}


def doc_example(name: str, doc: str = "integrations.md") -> dict[str, Any]:
    """The YAML block right after ``<!-- example: name -->`` in a doc page (the tests run what users read)."""
    text = (DOCS / doc).read_text()
    m = re.search(rf"<!-- example: {re.escape(name)} -->\s*```yaml\n(.*?)```", text, re.S)
    assert m is not None, f"no example {name!r} in docs/{doc}"
    return yaml.safe_load(m.group(1))


class LiveService:
    """``deploysignal serve`` on a fixed port and SQLite store; :meth:`restart` keeps both."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.store = tmp, f"sqlite:///{tmp / 'conformance.db'}"
        self.port = free_port()
        self.server: Server | None = Server(tmp, self.store, port=self.port)
        self.url = self.server.url
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        if self.server is not None:
            self.server.kill(9)
            self.server = None

    def start(self) -> None:
        if self.server is None:
            self.server = Server(self.tmp, self.store, port=self.port)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.kill(15)

    def put_template(self, tid: str, cfg: Any, window: int, max_extensions: int = 1) -> None:
        r = self.client.put(f"/v1/templates/{tid}", json={"config": json.loads(cfg.to_json()), "window": window, "max_extensions": max_extensions}, headers=W)
        assert r.status_code == 200, r.text

    def push(self, aid: str, ticks: list[dict[str, Any]]) -> None:
        if ticks:
            r = self.client.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks}, headers=W)
            assert r.status_code == 200, r.text

    def verdict(self, aid: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/analyses/{aid}", headers=R)
        assert r.status_code == 200, r.text
        return r.json()

    def exists(self, aid: str) -> bool:
        return self.client.get(f"/v1/analyses/{aid}", headers=R).status_code == 200


class FaultProxy:
    """HTTP proxy to ``target``; ``plan(i)`` decides call ``i``: ``"ok"``, ``"503"`` or ``"hang"`` (answers
    after ``hang_seconds``, longer than the caller's timeout)."""

    def __init__(self, target: str, plan: Callable[[int], str], hang_seconds: float = 1.0) -> None:
        self.target, self.plan, self.hang = target, plan, hang_seconds
        self.calls: list[str] = []
        self.client = httpx.Client()
        self.lock = threading.Lock()
        proxy = self

        class H(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                with proxy.lock:
                    action = proxy.plan(len(proxy.calls))
                    proxy.calls.append(action)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if action == "hang":
                    time.sleep(proxy.hang)
                if action == "503":
                    status, data, ctype = 503, b'{"detail": "injected"}', "application/json"
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                    try:
                        r = proxy.client.request(self.command, proxy.target + self.path, content=body, headers=headers, timeout=30)
                        status, data, ctype = r.status_code, r.content, r.headers.get("content-type", "application/json")
                    except httpx.HTTPError:
                        status, data, ctype = 502, b'{"detail": "upstream down"}', "application/json"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the caller timed out and closed the connection
                    pass

            do_GET = do_POST = _handle  # noqa: N815

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


def flaky_proxy(target: str, seed: int, p503: float, phang: float) -> FaultProxy:
    """A proxy answering 503 on the first call, too late on the second, and so on a seeded share of the
    rest (``p503`` / ``phang``); hangs last 0.6 s (callers use a 0.3 s timeout)."""
    rng = np.random.default_rng(seed)
    plan = ["503", "hang"] + [str(rng.choice(["ok", "503", "hang"], p=[1 - p503 - phang, p503, phang])) for _ in range(3000)]
    return FaultProxy(target, lambda i: plan[i], hang_seconds=0.6)


def ticks(frame: Any, start: int, stop: int, *, scale: dict[str, float] | None = None, missing: bool = False, t0: float | None = None) -> list[dict[str, Any]]:
    """Ticks ``start:stop`` of a simulated frame; ``scale`` multiplies signals (a regression),
    ``missing`` blanks every value, ``t0`` shifts the timestamps so that tick 0 is at ``t0`` (a later revision's telemetry)."""
    out = []
    shift = 0.0 if t0 is None else t0 - float(frame.timestamps[0])
    for i in range(start, stop):
        vals = {}
        for s, v in zip(frame.signals, frame.values[i]):
            x = None if (missing or np.isnan(v)) else float(v) * (scale or {}).get(s, 1.0)
            vals[s] = x
        out.append({"timestamp": float(frame.timestamps[i]) + shift, "values": vals})
    return out
