"""Service settings and bearer-token handling (tokens are stored only as SHA-256 hashes; scopes in ``_scope.py``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._exceptions import ConfigError
from ._admission import parse_limit
from ._scope import PROJECT_PATTERN, Principal

__all__ = ["ServiceSettings", "TokenEntry", "hash_token"]


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token (what the tokens file stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenEntry(BaseModel):
    """One accepted token: its SHA-256 hash, role and optional scope.

    Roles: ``write`` (also grants read), ``read``, ``metrics`` (only ``GET /metrics``) and ``kayenta``
    (accepted only as the key in a Kayenta address, ``/kayenta/<key>/...``, and nowhere else).
    ``project`` and ``analyses`` (globs) restrict the token to those analyses and templates
    (``_scope.py``); an entry with neither is unscoped, as every entry was before scopes existed.
    ``rate_limit`` (``"20/second"``) replaces ``serve --rate-limit-token`` for this token,
    ``tick_rate_limit`` (``"100000/hour"``) replaces ``serve --rate-limit-ticks``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "token"
    sha256: str
    role: Literal["read", "write", "kayenta", "metrics"]
    project: str | None = Field(None, pattern=PROJECT_PATTERN)
    analyses: list[str] | None = Field(None, min_length=1)
    rate_limit: str | None = None
    tick_rate_limit: str | None = None

    @field_validator("rate_limit", "tick_rate_limit")
    @classmethod
    def _limit(cls, v: str | None) -> str | None:
        parse_limit(v, "rate_limit")
        return v

    @field_validator("analyses")
    @classmethod
    def _globs(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not g or len(g) > 256 for g in v):
            raise ValueError("analyses: each glob must have 1-256 characters")
        return v

    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.project, None if self.analyses is None else tuple(self.analyses), self.sha256[:16], self.rate_limit, self.tick_rate_limit)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.lower()
        if len(v) != 64 or any(ch not in "0123456789abcdef" for ch in v):
            raise ValueError("sha256 must be 64 hex digits (hash the token with `deploysignal service hash-token`)")
        return v


def _duplicate_hashes(entries: list[TokenEntry]) -> str | None:
    """Why a list of token entries is refused: two entries with the same hash (one secret, two roles or
    scopes: which one applied depended on the file's order), or None."""
    seen: dict[str, str] = {}
    for t in entries:
        if t.sha256 in seen:
            return (f"token entries {seen[t.sha256]!r} and {t.name!r} have the same sha256 (one secret with two roles or scopes);"
                    " give each entry its own token")
        seen[t.sha256] = t.name
    return None


class ServiceSettings(BaseModel):
    """How ``deploysignal serve`` runs.

    Attributes
    ----------
    store_url : str
        ``sqlite:///path.db`` (default ``sqlite:///deploysignal.db``) or ``postgresql://user@host:port/db``.
    tokens : list of TokenEntry
        Accepted bearer tokens (hashes only). Write endpoints need a ``write`` token; read endpoints
        accept ``read`` or ``write``. With no tokens the service refuses to start unless ``insecure``.
    insecure : bool
        Serve without authentication (local experiments only).
    max_body_bytes : int
        Requests with a larger body get 413 before any parsing.
    max_batch_ticks : int
        Ticks per ingest request.
    snapshot_every : int
        Ticks between engine snapshots; a restart replays at most this many ticks per analysis.
    secrets_dir : str, optional
        The only directory Prometheus pull specs may read files from (``file`` secret references,
        ``secret_ref.path``, the ``tls`` files); None refuses such files. Secret environment variables
        must be named ``DEPLOYSIGNAL_SECRET_*``.
    max_clock_skew : float or None
        Ticks stamped more than this many seconds after the server's clock are rejected (422): a tick
        from the future, once accepted, would make every correct tick after it look out of order.
        None turns the check off (e.g. to ingest simulated telemetry stamped in the future).
    prometheus_allow : list of str
        The only Prometheus addresses (URL prefixes: scheme, host, port and a leading path) a pull spec
        that uses a secret (``authentication``, a ``value_from`` header) may point at; empty refuses
        such specs. The caller chooses the address, so without this list any write-token holder could
        have the service send the Prometheus credentials to a server of the caller's choosing.
    max_live_per_template : int
        At most this many analyses created from one template may be undecided (not final) at once; a
        request that would create one more is refused (409: Argo records an Error, Flagger a failed
        check), so a read token cannot start analyses (each with its own Prometheus poller) without
        bound. Finished analyses do not count.
    max_events : int
        Flagger ``event`` / ``post-rollout`` calls kept (``GET /v1/flagger/events``): the newest this
        many; older ones are deleted as new ones arrive (they are logs; no decision reads them).
    retain_days : float or None
        Decided analyses created, and last ticked, more than this many days ago are deleted (a
        tombstone keeps their final audit head; ``service/_retention.py``), checked every
        ``retention_interval`` seconds. Undecided analyses are never deleted by retention. None keeps
        everything.
    create_store : bool
        Create the store (a new SQLite file, or the schema in a PostgreSQL database) when it does not
        exist. Default False, for library use (``create_app``, an ASGI factory) as for the CLI:
        ``deploysignal serve`` sets it only with ``--create``, so a mistyped ``--store`` refuses to
        start instead of serving an empty database.
    rate_limit_token, rate_limit_analysis, rate_limit_analysis_write : str or None
        Requests admitted per token, and per analysis named in the path: reads and writes in separate
        budgets (``limits``' notation, ``"100/second"``; None: no limit); beyond them 429 with
        ``Retry-After`` (``_admission.py``). Counted per process.
    rate_limit_ticks : str or None
        Ticks ingested per token (a token entry's ``tick_rate_limit`` replaces it); each amount must
        be at least ``max_batch_ticks`` (else a maximal batch could never be admitted).
    rate_limit_failures : str or None
        401 / 403 answers per client address; beyond: 429 for its failing requests.
    engine_cache_size : int
        Analysis engines kept in memory per process (least recently used evicted; an evicted analysis
        is rebuilt from snapshot + ticks on its next use).
    max_replays : int
        Replays running at once per process.
    replay_in : {"thread", "process"}
        Where a replay job runs (:mod:`deploysignal.service._replay_jobs`): a thread of the serving
        process (default here) or a pool of lower-priority worker processes (the default of ``serve``).
    replay_timeout : float
        Seconds a replay job may run; then it is recorded ``failed`` and its slot freed (in a process
        pool its worker is terminated; a thread cannot be stopped, its result is discarded).
    wait_timeout : float
        Seconds a request waits for its analysis (busy with another request) or a replay slot; then
        503 with ``Retry-After``, nothing applied.
    body_timeout : float
        Seconds a client has to send a request's body once its headers arrived; a stalled upload gets
        408 and the connection is closed.
    max_cuts : int
        Cut-backs allowed per analysis (``POST /v1/analyses/{id}/cut``); one more is refused (409). Each
        cut can add up to alpha to the analysis' false-rollback probability (at most
        ``(1 + max_cuts) x alpha``) and drops a stretch of evidence (a write-token holder can cut away a
        regression's build-up): the cap bounds both. Default 3.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    store_url: str = "sqlite:///deploysignal.db"
    tokens: list[TokenEntry] = Field(default_factory=list)
    insecure: bool = False
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_batch_ticks: int = Field(10_000, ge=1)
    snapshot_every: int = Field(256, ge=1)
    secrets_dir: str | None = None
    max_clock_skew: float | None = Field(300.0, ge=0)
    prometheus_allow: list[str] = Field(default_factory=list)
    max_live_per_template: int = Field(20, ge=1)
    max_events: int = Field(10_000, ge=1)
    retain_days: float | None = Field(None, gt=0, lt=1e6)
    retention_interval: float = Field(3600.0, gt=0)
    create_store: bool = False
    max_cuts: int = Field(3, ge=0)
    rate_limit_token: str | None = "200/second"
    rate_limit_analysis: str | None = "50/second"
    rate_limit_analysis_write: str | None = "50/second"
    rate_limit_ticks: str | None = "30000/minute"
    rate_limit_failures: str | None = "30/minute"
    engine_cache_size: int = Field(256, ge=1)
    max_replays: int = Field(1, ge=1)
    replay_in: Literal["process", "thread"] = "thread"
    replay_timeout: float = Field(3600.0, gt=0)
    wait_timeout: float = Field(30.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)

    @field_validator("tokens")
    @classmethod
    def _unique(cls, v: list[TokenEntry]) -> list[TokenEntry]:
        why = _duplicate_hashes(v)
        if why:
            raise ValueError(why)
        return v

    @field_validator("rate_limit_token", "rate_limit_analysis", "rate_limit_analysis_write", "rate_limit_ticks", "rate_limit_failures")
    @classmethod
    def _limits(cls, v: str | None) -> str | None:
        parse_limit(v, "rate limit")
        return v

    def role_of(self, token: str) -> str | None:
        """Role of a presented token, compared in constant time against every stored hash."""
        p = self.principal_of(token)
        return None if p is None else p.role

    def principal_of(self, token: str) -> Principal | None:
        """The entry a presented token matches (role and scope), compared in constant time against
        every stored hash; None for an unknown token."""
        h = hash_token(token)
        found = None
        for t in self.tokens:
            if hmac.compare_digest(h, t.sha256):
                found = t
        return None if found is None else found.principal()

    @staticmethod
    def read_tokens_file(path: str | Path) -> list[TokenEntry]:
        """YAML or JSON: ``[{name, sha256, role, project?, analyses?, rate_limit?}]`` or ``{tokens: [...]}``."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: cannot read tokens file ({exc})") from None
        if isinstance(data, dict):
            data = data.get("tokens")
        if not isinstance(data, list):
            raise ConfigError(f"{p}: expected a list of {{name, sha256, role}} entries")
        try:
            entries = [TokenEntry.model_validate(d) for d in data]
        except Exception as exc:
            raise ConfigError(f"{p}: {exc}") from None
        why = _duplicate_hashes(entries)
        if why:
            raise ConfigError(f"{p}: {why}")
        return entries
