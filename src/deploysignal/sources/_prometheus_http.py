"""How deploysignal talks to a Prometheus server: address, authentication, headers, TLS, timeout.

The option names follow Argo Rollouts' ``prometheus`` metric provider (``address``, ``authentication``,
``headers``, ``insecure``, ``timeout``) and Flagger's MetricTemplate ``secretRef`` (a secret with
``token`` or ``username`` / ``password`` keys, here a mounted directory holding those files).

Secrets are never part of the spec: the spec names a file or an environment variable and the value is
read when the HTTP client is built (at creation, to check it, and again whenever a poller starts). A
service restricts where secrets may come from (:class:`SecretPolicy`): files under one directory and
environment variables with one prefix, so that a caller with a write token cannot make the service send
an arbitrary file of its host to an address of the caller's choosing. Secret values are not logged and
not returned by any endpoint; error messages name the reference (file path or variable), never the value.

``authentication.sigv4`` and ``authentication.oauth2`` (Argo's other two) are rejected with a message
saying they are not supported: no maintained library in this project's dependencies makes them small.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from .._exceptions import InputError

__all__ = [
    "Authentication",
    "BasicAuth",
    "Connection",
    "HeaderSpec",
    "PromAPIError",
    "PromUnavailable",
    "SecretPolicy",
    "SecretRef",
    "TLSConfig",
    "iso_utc",
    "query_instant",
    "query_range",
]

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SecretRef(_Strict):
    """Where a secret is read from: exactly one of ``file`` (its content, trailing newline stripped) or
    ``env`` (an environment variable of the process that polls)."""

    file: str | None = Field(None, min_length=1, max_length=4096)
    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        return self

    def describe(self) -> str:
        return f"file {self.file!r}" if self.file is not None else f"environment variable {self.env!r}"


class BasicAuth(_Strict):
    """HTTP basic authentication: ``username`` in clear (not a secret), ``password`` by reference."""

    username: str = Field(min_length=1, max_length=1024)
    password: SecretRef


class SecretDir(_Strict):
    """Flagger-style ``secretRef``: a directory (a mounted Kubernetes Secret) holding ``token``, or
    ``username`` and ``password``, as files."""

    path: str = Field(min_length=1, max_length=4096)


class Authentication(_Strict):
    """At most one of ``bearer`` (a token sent as ``Authorization: Bearer``), ``basic`` or
    ``secret_ref``. ``sigv4`` and ``oauth2`` are recognised and rejected as not supported."""

    bearer: SecretRef | None = None
    basic: BasicAuth | None = None
    secret_ref: SecretDir | None = None
    sigv4: dict[str, Any] | None = None
    oauth2: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> Authentication:
        for name in ("sigv4", "oauth2"):
            if getattr(self, name) is not None:
                raise ValueError(f"authentication.{name} is not supported by deploysignal; use bearer, basic or secret_ref "
                                 "(or an authenticating proxy in front of Prometheus)")
        given = [n for n in ("bearer", "basic", "secret_ref") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of bearer, basic, secret_ref (got {given})")
        return self


class HeaderSpec(_Strict):
    """One extra request header (Argo's ``headers: [{key, value}]``); a secret header value comes from
    ``value_from`` instead of ``value``."""

    key: str = Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
    value: str | None = Field(None, max_length=8192)
    value_from: SecretRef | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderSpec:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"header {self.key!r}: give exactly one of value or value_from")
        if self.key.lower() == "authorization" and self.value is not None:
            raise ValueError("an Authorization header is a secret: use value_from (or authentication)")
        return self


class TLSConfig(_Strict):
    """TLS options: a CA bundle to verify the server with, and a client certificate and key for mutual TLS."""

    ca_file: str | None = Field(None, min_length=1, max_length=4096)
    cert_file: str | None = Field(None, min_length=1, max_length=4096)
    key_file: str | None = Field(None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class Connection(_Strict):
    """A Prometheus server and how to reach it.

    Attributes
    ----------
    url : str
        Base URL (``http://`` or ``https://``); ``address`` is accepted as an alias (Argo's name).
    authentication : Authentication, optional
    headers : list of HeaderSpec
    tls : TLSConfig, optional
    insecure : bool
        Skip verification of the server's certificate (logged as a warning every time a client is built).
    timeout : float
        Seconds per request (connect, read, write, pool).
    settle_seconds : float
        A grid time ``t`` is read only once ``t <= now - settle_seconds``: a scrape whose sample time
        is at or before ``t`` may still be in flight (its sample is stored when the scrape ends), so
        reading earlier gives a partial count that a later read would not give. Set it to the
        server's scrape interval plus scrape timeout (the default, 70, is Prometheus' defaults 60 + 10;
        add the remote-write delay when Prometheus is fed by remote write).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
    url: str = Field(pattern=r"^https?://[^\s]+$", alias="address", max_length=4096)
    authentication: Authentication | None = None
    headers: list[HeaderSpec] = Field(default_factory=list, max_length=64)
    tls: TLSConfig | None = None
    insecure: StrictBool = False
    timeout: StrictFloat | StrictInt = Field(10, ge=0.001, le=600)
    settle_seconds: StrictFloat | StrictInt = Field(70, ge=0, le=86_400)

    def client(self, policy: SecretPolicy | None = None) -> httpx.Client:
        """An :class:`httpx.Client` with the secrets resolved under ``policy`` (unrestricted when None).

        Raises
        ------
        InputError
            A secret or TLS file cannot be read or lies outside the policy (names the reference, not the value).
        """
        policy = policy or SecretPolicy()
        if self.uses_secrets():
            policy.check_address(self.url)
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        a = self.authentication
        if a is not None and a.bearer is not None:
            headers["Authorization"] = "Bearer " + policy.read(a.bearer, "authentication.bearer")
        elif a is not None and a.basic is not None:
            auth = httpx.BasicAuth(a.basic.username, policy.read(a.basic.password, "authentication.basic.password"))
        elif a is not None and a.secret_ref is not None:
            d = a.secret_ref.path
            token = policy.read_optional(os.path.join(d, "token"), "authentication.secret_ref")
            if token is not None:
                headers["Authorization"] = "Bearer " + token
            else:
                user = policy.read_optional(os.path.join(d, "username"), "authentication.secret_ref")
                pw = policy.read_optional(os.path.join(d, "password"), "authentication.secret_ref")
                if user is None or pw is None:
                    raise InputError(f"secret_ref directory {d!r} holds neither 'token' nor 'username' and 'password'", column="prometheus.authentication.secret_ref")
                auth = httpx.BasicAuth(user, pw)
        for h in self.headers:
            headers[h.key] = h.value if h.value is not None else policy.read(h.value_from, f"headers.{h.key}")  # type: ignore[arg-type]
        for k, v in headers.items():
            if any(ch in v for ch in "\r\n\0"):
                raise InputError(f"header {k!r}: the value contains a line break or NUL", column="prometheus.headers")
        return httpx.Client(headers=headers, auth=auth, verify=self._verify(policy), timeout=float(self.timeout), follow_redirects=False)

    def uses_secrets(self) -> bool:
        """Whether a request to the server carries a secret (authentication or a ``value_from`` header)."""
        a = self.authentication
        return (a is not None and (a.bearer or a.basic or a.secret_ref) is not None) or any(h.value_from is not None for h in self.headers)

    def _verify(self, policy: SecretPolicy) -> ssl.SSLContext | bool:
        t = self.tls
        if self.insecure:
            log.warning("prometheus %s: TLS certificate verification is disabled (insecure: true)", self.url)
        if t is None:
            return not self.insecure
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(t, name) is not None:
                policy.check_file(getattr(t, name), f"tls.{name}")
        try:
            ctx = ssl.create_default_context(cafile=t.ca_file)
            if self.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if t.cert_file is not None:
                ctx.load_cert_chain(t.cert_file, t.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(f"TLS files cannot be used: {exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}", column="prometheus.tls") from None
        return ctx


@dataclass(frozen=True)
class SecretPolicy:
    """Where secrets may be read from. ``secrets_dir`` None and ``env_prefix`` "" allow anything (library
    and CLI use, where the caller owns the process); the service passes its configured directory (None
    there means: no file secrets) and the prefix ``DEPLOYSIGNAL_SECRET_``."""

    secrets_dir: str | None = None
    env_prefix: str = ""
    restrict_files: bool = False
    #: addresses a request carrying a secret may go to (URL prefixes); None allows any
    allowed_addresses: tuple[str, ...] | None = None

    def check_address(self, url: str) -> None:
        """Refuse to send secrets to ``url`` unless it is under one of :attr:`allowed_addresses`: same
        scheme, host and port, and a path under the prefix's path (at a ``/`` boundary).

        >>> p = SecretPolicy(allowed_addresses=("https://prom.example:9090/",))
        >>> p.check_address("https://prom.example:9090/api")
        >>> p.check_address("https://prom.example:9090.evil.net/")
        Traceback (most recent call last):
        ...
        deploysignal._exceptions.InputError: column 'prometheus.url': the address 'https://prom.example:9090.evil.net/' is not one the service may send secrets to (serve --prometheus-allow)
        """
        if self.allowed_addresses is None:
            return
        if not any(_under(url, p) for p in self.allowed_addresses):
            raise InputError(f"the address {url!r} is not one the service may send secrets to (serve --prometheus-allow)", column="prometheus.url")

    def check_file(self, path: str, where: str) -> None:
        if not self.restrict_files:
            return
        if self.secrets_dir is None:
            raise InputError(f"{where}: secret files are disabled in this service (start it with --secrets-dir)", column=f"prometheus.{where}")
        root = Path(self.secrets_dir).resolve()
        if not Path(path).resolve().is_relative_to(root):
            raise InputError(f"{where}: file {path!r} is outside the service's secrets directory", column=f"prometheus.{where}")

    def read(self, ref: SecretRef, where: str) -> str:
        if ref.env is not None:
            if not ref.env.startswith(self.env_prefix):
                raise InputError(f"{where}: environment variable {ref.env!r} must start with {self.env_prefix!r}", column=f"prometheus.{where}")
            val = os.environ.get(ref.env)
            if val is None:
                raise InputError(f"{where}: environment variable {ref.env!r} is not set", column=f"prometheus.{where}")
            return val
        assert ref.file is not None
        val = self.read_optional(ref.file, where)
        if val is None:
            raise InputError(f"{where}: secret file {ref.file!r} does not exist", column=f"prometheus.{where}")
        return val

    def read_optional(self, path: str, where: str) -> str | None:
        self.check_file(path, where)
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: secret file {path!r} cannot be read ({exc.__class__.__name__})", column=f"prometheus.{where}") from None


def _under(url: str, prefix: str) -> bool:
    try:
        u, p = httpx.URL(url), httpx.URL(prefix)
    except (httpx.InvalidURL, TypeError):
        return False
    if (u.scheme, u.host, u.port, u.userinfo) != (p.scheme, p.host, p.port, p.userinfo) or not p.host or u.scheme not in ("http", "https"):
        return False
    base = p.path.rstrip("/") + "/"
    return (u.path.rstrip("/") + "/").startswith(base)


class PromUnavailable(Exception):
    """The server could not answer (transport error, timeout, 5xx, 429, or a body that is not its API's JSON)."""


class PromAPIError(Exception):
    """The server answered with an error about the request itself (4xx: bad query, authentication)."""

    def __init__(self, status: int, error_type: str, error: str) -> None:
        super().__init__(f"HTTP {status} {error_type}: {error}")
        self.status, self.error_type, self.error = status, error_type, error


def _api(client: httpx.Client, url: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    """GET an API endpoint and return its ``data``; :class:`PromUnavailable` or :class:`PromAPIError`.

    Asks for ``partial_response=false`` (Thanos answers with an error instead of data some of its
    stores could not give: partial sums would look healthier than they are; Prometheus ignores the
    parameter) and logs the response's ``warnings``."""
    try:
        r = client.get(f"{url.rstrip('/')}{path}", params={**params, "partial_response": "false"})
    except httpx.HTTPError as exc:
        raise PromUnavailable(f"{exc.__class__.__name__}: {exc}") from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code >= 500 or r.status_code == 429:
        raise PromUnavailable(f"HTTP {r.status_code}")
    if not isinstance(body, dict):
        if r.status_code >= 400:
            raise PromAPIError(r.status_code, "http", r.reason_phrase or "error")
        raise PromUnavailable(f"HTTP {r.status_code}: response is not Prometheus API JSON")
    if body.get("status") != "success" or r.status_code >= 400:
        raise PromAPIError(r.status_code, str(body.get("errorType", "error")), str(body.get("error", "")))
    data = body.get("data")
    if not isinstance(data, dict):
        raise PromUnavailable("response has no data object")
    if body.get("warnings"):
        log.warning("prometheus %s?query=%r answered with warnings: %s", path, params.get("query"), body["warnings"])
    return data


def iso_utc(t: float) -> str:
    """Epoch seconds as ISO-8601 UTC with ``Z``: whole seconds, or milliseconds when there is a fraction.

    >>> iso_utc(1796637600.0), iso_utc(1796637600.25)
    ('2026-12-07T10:00:00Z', '2026-12-07T10:00:00.250Z')
    """
    spec = "seconds" if float(t).is_integer() else "milliseconds"
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")


def _value(raw: Any) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def query_instant(client: httpx.Client, url: str, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
    """``/api/v1/query`` at ``at``: one ``(labels, value)`` per series (a scalar is one series without
    labels); NaN for a non-finite or unparsable value.

    Raises
    ------
    PromUnavailable, PromAPIError
    """
    data = _api(client, url, "/api/v1/query", {"query": expr, "time": repr(float(at))})
    rtype, result = data.get("resultType"), data.get("result")
    if rtype == "scalar" and isinstance(result, list) and len(result) == 2:
        return [({}, _value(result[1]))]
    if rtype != "vector" or not isinstance(result, list):
        raise PromAPIError(200, "result_type", f"the query returned a {rtype}; use an expression giving an instant vector or a scalar")
    out = []
    for s in result:
        try:
            out.append(({str(k): str(v) for k, v in s["metric"].items()}, _value(s["value"][1])))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise PromUnavailable("malformed vector element") from None
    return out


def query_range(client: httpx.Client, url: str, expr: str, start: float, end: float, step: float) -> list[tuple[dict[str, str], dict[float, float]]]:
    """``/api/v1/query_range`` on ``start, start + step, ..., <= end``: one ``(labels, {time: value})``
    per series; a time without a sample is absent from the dict (Prometheus leaves it out).

    Raises
    ------
    PromUnavailable, PromAPIError
    """
    data = _api(client, url, "/api/v1/query_range", {"query": expr, "start": repr(float(start)), "end": repr(float(end)), "step": repr(float(step))})
    rtype, result = data.get("resultType"), data.get("result")
    if rtype != "matrix" or not isinstance(result, list):
        raise PromAPIError(200, "result_type", f"the range query returned a {rtype}")
    out = []
    for s in result:
        try:
            out.append(({str(k): str(v) for k, v in s["metric"].items()}, {float(t): _value(v) for t, v in s["values"]}))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise PromUnavailable("malformed matrix element") from None
    return out
