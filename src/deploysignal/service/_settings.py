"""Service settings and bearer-token handling (tokens are stored only as SHA-256 hashes)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._exceptions import ConfigError

__all__ = ["ServiceSettings", "TokenEntry", "hash_token"]


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token (what the tokens file stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenEntry(BaseModel):
    """One accepted token: its SHA-256 hash and role (``write`` also grants read; ``kayenta`` is
    accepted only as the key in a Kayenta address, ``/kayenta/<key>/...``, and nowhere else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "token"
    sha256: str
    role: Literal["read", "write", "kayenta"]

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.lower()
        if len(v) != 64 or any(ch not in "0123456789abcdef" for ch in v):
            raise ValueError("sha256 must be 64 hex digits (hash the token with `deploysignal service hash-token`)")
        return v


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

    def role_of(self, token: str) -> str | None:
        """Role of a presented token, compared in constant time against every stored hash."""
        h = hash_token(token)
        role = None
        for t in self.tokens:
            if hmac.compare_digest(h, t.sha256):
                role = t.role
        return role

    @staticmethod
    def read_tokens_file(path: str | Path) -> list[TokenEntry]:
        """YAML or JSON: ``[{name, sha256, role}]`` or ``{tokens: [...]}``."""
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
            return [TokenEntry.model_validate(d) for d in data]
        except Exception as exc:
            raise ConfigError(f"{p}: {exc}") from None
