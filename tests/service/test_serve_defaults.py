"""``deploysignal serve`` as the README shows it (no flags), and the Swagger UI / ReDoc pages without
a CDN: a real process on a real socket."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ._proc import SERVE, free_port

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _start(cwd: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # exactly `deploysignal serve` (first start: `serve --create`) plus the port (the default 8080 may be taken on a shared machine)
    return subprocess.Popen([sys.executable, "-c", SERVE, "--port", str(port), *extra], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 180  # a cold numba cache compiles the kernels before the port opens
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("serve did not come up in 180 s")


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_serve_without_flags_generates_tokens_and_serves_local_docs(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # without --create there is no store to serve: exit 2 saying so (a mistyped --store never starts on an empty database)
    proc = _start(tmp_path, port)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "no SQLite store at 'deploysignal.db'; pass --create" in out, out
    assert not (tmp_path / "deploysignal.db").exists()
    proc = _start(tmp_path, port, "--create")
    try:
        _wait(proc, url)
        d = tmp_path / ".deploysignal"
        write, read, kay = ((d / f"{r}.token").read_text().strip() for r in ("write", "read", "kayenta"))
        assert len(write) >= 40 and len({write, read, kay}) == 3
        assert stat.S_IMODE((d / "write.token").stat().st_mode) == 0o600 and stat.S_IMODE(d.stat().st_mode) == 0o700
        assert write not in (d / "tokens.json").read_text()  # hashes only
        assert httpx.get(url + "/v1/analyses").status_code == 401
        assert httpx.get(url + "/v1/analyses", headers={"Authorization": f"Bearer {read}"}).json() == []
        r = httpx.post(url + "/v1/analyses", json={"baseline": {"timestamps": [0, 1], "values": {"x": [1.0, 2.0]}}}, headers={"Authorization": f"Bearer {read}"})
        assert r.status_code == 403
        # the kayenta token opens the Kayenta address and nothing else; a read token is refused there
        assert httpx.get(f"{url}/kayenta/{kay}/canaryConfig").json() == []
        assert httpx.get(f"{url}/kayenta/{read}/canaryConfig").status_code == 401
        assert httpx.get(url + "/v1/analyses", headers={"Authorization": f"Bearer {kay}"}).status_code == 403
        # Swagger UI and ReDoc: no external host, every referenced asset served by the service
        for page in ("/docs", "/redoc"):
            html = httpx.get(url + page).text
            assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), html
            assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
            assert assets and all(a.startswith("/static-offline-docs/") for a in assets), assets
            for a in assets:
                got = httpx.get(url + a)
                assert got.status_code == 200 and len(got.content) > 1000, a
        assert "SwaggerUIBundle" in httpx.get(url + "/static-offline-docs/swagger-ui-bundle.js").text
        assert '"validatorUrl": null' in httpx.get(url + "/docs").text  # no badge fetched from validator.swagger.io
        assert httpx.get(url + "/openapi.json").json()["components"]["securitySchemes"]["writeToken"]["scheme"] == "bearer"
        assert httpx.head(url + "/ui/").status_code == 200  # `curl -I` on the dashboard
    finally:
        out = _stop(proc)
    assert f"generated write, read, kayenta and metrics tokens in {tmp_path / '.deploysignal'}/" in out and f"http://127.0.0.1:{port}" in out
    assert f"dashboard: http://127.0.0.1:{port}/ui/" in out, out
    # a second start (no --create: the store exists now) reuses them (nothing regenerated, the same token still works)
    proc = _start(tmp_path, port)
    try:
        _wait(proc, url)
        assert httpx.get(url + "/v1/analyses", headers={"Authorization": f"Bearer {write}"}).status_code == 200
    finally:
        out = _stop(proc)
    assert f"using {tmp_path / '.deploysignal' / 'tokens.json'}" in out


def test_token_generation_recovers_from_an_interrupted_start_and_tightens_the_directory(tmp_path):
    """A start killed after writing a token file but before tokens.json must not make every later
    start fail; an existing directory with looser permissions is tightened to 0700."""
    import json

    from deploysignal.cli._service import _generated_tokens
    from deploysignal.service import hash_token

    d = tmp_path / "tok"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    (d / "write.token").write_text("left-over\n")  # the interrupted start
    tokens = _generated_tokens(d, "127.0.0.1", 8080)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    entries = json.loads(tokens.read_text())
    assert [e["role"] for e in entries] == ["write", "read", "kayenta", "metrics"]
    for e in entries:
        tok = (d / f"{e['role']}.token").read_text().strip()
        assert tok != "left-over" and hash_token(tok) == e["sha256"]
        assert stat.S_IMODE((d / f"{e['role']}.token").stat().st_mode) == 0o600
    assert sorted(p.name for p in d.iterdir()) == ["kayenta.token", "metrics.token", "read.token", "tokens.json", "write.token"]  # no temporary left
