"""Test helpers around a real Prometheus: an exporter of a prometheus_client registry, an authenticating
(optionally TLS) reverse proxy in front of Prometheus, and a throwaway certificate authority (openssl)."""

from __future__ import annotations

import base64
import ssl
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from ._external import QuietHandler


class RegistryExporter:
    """Serves a prometheus_client registry (the exposition format a real service scrapes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        reg = registry
        self.lock = threading.Lock()  # held while serving a scrape: changes made under it are seen whole
        lock = self.lock

        class H(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                with lock:
                    body = generate_latest(reg)
                self.reply(200, body, "text/plain; version=0.0.4")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AuthProxy:
    """Reverse proxy to ``upstream`` that answers 401 unless the request carries the expected
    credentials (``bearer`` token, ``basic`` (user, password), ``header`` (name, value)); with ``tls``
    (cert, key[, client CA]) it serves HTTPS, and with a client CA it requires a client certificate."""

    def __init__(self, upstream: str, *, bearer: str | None = None, basic: tuple[str, str] | None = None,
                 header: tuple[str, str] | None = None, tls: tuple[Path, Path, Path | None] | None = None, port: int = 0) -> None:
        self.seen: list[dict[str, str]] = []
        proxy = self

        class H(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append(hdrs)
                ok = True
                if bearer is not None:
                    ok &= hdrs.get("authorization") == f"Bearer {bearer}"
                if basic is not None:
                    ok &= hdrs.get("authorization") == "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
                if header is not None:
                    ok &= hdrs.get(header[0].lower()) == header[1]
                if not ok:
                    self.reply(401, b'{"status":"error","errorType":"unauthorized","error":"bad credentials"}', "application/json")
                else:
                    r = httpx.get(upstream + self.path, timeout=10)
                    self.reply(r.status_code, r.content, "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), H)
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            if tls[2] is not None:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(tls[2])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.server.handle_error = lambda *a: None  # type: ignore[method-assign]  # refused handshakes are expected
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_ca(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA (P-256 keys)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=deploysignal test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"), ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text(ext)
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {k: d / k for k in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}
