"""``deploysignal serve``, ``deploysignal service hash-token`` and ``deploysignal audit verify``.

Exit codes: 0 ok; 1 audit chain broken (tampering, missing or reordered lines); 2 bad input or usage.
Wire into the main app with :func:`register`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from .._exceptions import ConfigError, DeploySignalError

__all__ = ["audit_app", "register", "serve", "service_app"]

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

service_app = typer.Typer(add_completion=False, no_args_is_help=True, help="HTTP service helpers.")
audit_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Audit log tools.")


def serve(
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8080, min=0, max=65535, help="TCP port."),
    store: str = typer.Option("sqlite:///deploysignal.db", envvar="DEPLOYSIGNAL_STORE", help="sqlite:///path.db or postgresql://...; must exist unless --create."),
    create: bool = typer.Option(False, "--create", help="Create the store if it does not exist (a new SQLite file, or the tables in an empty PostgreSQL database); without it a missing store is an error (exit 2), so a mistyped --store cannot start on an empty database."),
    tokens_file: Optional[Path] = typer.Option(None, envvar="DEPLOYSIGNAL_TOKENS_FILE", help="YAML/JSON list of {name, sha256, role}."),
    tokens_dir: Path = typer.Option(Path(".deploysignal"), envvar="DEPLOYSIGNAL_TOKENS_DIR", help="Without --tokens-file: where a write, a read, a kayenta and a metrics token are generated on first start (write.token, read.token, kayenta.token, metrics.token, tokens.json with their hashes) and reused after; relative to the working directory."),
    insecure: bool = typer.Option(False, help="No authentication (local experiments only)."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="Larger request bodies get 413."),
    max_batch_ticks: int = typer.Option(10_000, help="Ticks per ingest request."),
    snapshot_every: int = typer.Option(256, help="Ticks between engine snapshots."),
    secrets_dir: Optional[Path] = typer.Option(None, envvar="DEPLOYSIGNAL_SECRETS_DIR", help="Directory Prometheus pull specs may read secret and TLS files from (none: no such files)."),
    max_clock_skew: float = typer.Option(300.0, min=-1.0, help="Reject ticks stamped more than this many seconds after the server clock"
                                         " (a tick from the future wedges an analysis); -1 turns the check off."),
    prometheus_allow: Optional[list[str]] = typer.Option(None, "--prometheus-allow", help="Prometheus address (URL prefix) pull specs that use a secret may point at; repeat for several (none: such specs are refused)."),
    max_live_per_template: int = typer.Option(20, min=1, help="Undecided analyses one template may have at once; a new revision beyond that gets 409."),
    max_events: int = typer.Option(10_000, min=1, help="Flagger event/post-rollout calls kept (newest); older ones are deleted."),
    retain_days: Optional[float] = typer.Option(None, help="Delete decided analyses created (and last ticked) more than this many days ago, checked hourly;"
                                                 " a tombstone keeps each one's final audit head (GET /v1/deleted). Undecided analyses are never deleted. Default: keep all."),
    rate_limit_token: str = typer.Option("200/second", help="Requests per token ('limits' notation, e.g. 600/minute; a token entry's rate_limit replaces it; '' = none); beyond: 429 + Retry-After. Counted per worker."),
    rate_limit_analysis: str = typer.Option("50/second", help="Read requests per analysis named in the path ('' = none); beyond: 429 + Retry-After. Counted per worker."),
    rate_limit_analysis_write: str = typer.Option("50/second", help="Write requests (ingest, void, cut) per analysis, a budget separate from reads ('' = none). Counted per worker."),
    rate_limit_ticks: str = typer.Option("30000/minute", help="Ticks ingested per token (a token entry's tick_rate_limit replaces it; each amount >= --max-batch-ticks; '' = none); beyond: 429. Counted per worker."),
    rate_limit_failures: str = typer.Option("30/minute", help="401/403 answers per client address ('' = none); beyond: 429 for its failing requests. Counted per worker."),
    engine_cache: int = typer.Option(256, min=1, help="Analysis engines kept in memory per worker (LRU; an evicted one is rebuilt from snapshot + ticks)."),
    max_replays: int = typer.Option(1, min=1, help="Replays running at once per worker (more wait up to --wait-timeout, then 503)."),
    replay_in: str = typer.Option("process", help="Where replay jobs run: process (a pool of --max-replays worker processes at lower priority, off the serving process' interpreter lock) or thread."),
    replay_timeout: float = typer.Option(3600.0, min=0.001, help="Seconds a replay job may run; then it is recorded failed and its slot freed (its worker process terminated)."),
    wait_timeout: float = typer.Option(30.0, min=0.001, help="Seconds a request waits for its busy analysis or a replay slot; then 503 + Retry-After, nothing applied."),
    body_timeout: float = typer.Option(30.0, min=0.001, help="Seconds a client has to send a request body; a stalled upload gets 408 and the connection is closed."),
    keep_alive_timeout: int = typer.Option(5, min=1, help="Seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)."),
    header_timeout: float = typer.Option(10.0, min=0.001, help="Seconds a connection has to send a complete request head (request line and headers); then it is closed."),
    max_cuts: int = typer.Option(3, min=0, help="Cut-backs allowed per analysis (each can add up to alpha to its false-rollback probability)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes (they share the store)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the HTTP service (FastAPI + uvicorn); OpenAPI spec at /openapi.json, docs at /docs.

    Without --tokens-file (and without --insecure) it uses the tokens in --tokens-dir, generating a
    write, a read, a kayenta and a metrics token there on first start, and says where they are.
    """
    import uvicorn

    from ..service import ServiceSettings, create_app
    from ..store import open_existing

    if max_clock_skew < 0 and max_clock_skew != -1:  # only -1 itself turns the check off, not -0.5
        raise typer.BadParameter(f"must be >= 0, or -1 to turn the check off; got {max_clock_skew}", param_hint="--max-clock-skew")
    if retain_days is not None and not 0 < retain_days < 1e6:  # 0 would not mean "keep all": leave the option out for that
        raise typer.BadParameter(f"must be a number of days > 0 (leave it out to keep every analysis); got {retain_days}", param_hint="--retain-days")
    try:
        if not create:
            open_existing(store).close()  # missing or unreadable store: exit 2 before tokens are generated
        if tokens_file is None and not insecure:
            tokens_file = _generated_tokens(tokens_dir, host, port)
        tokens = [] if tokens_file is None else ServiceSettings.read_tokens_file(tokens_file)
        settings = ServiceSettings(store_url=store, tokens=tokens, insecure=insecure, max_body_bytes=max_body_bytes, max_batch_ticks=max_batch_ticks, snapshot_every=snapshot_every,
                                   secrets_dir=None if secrets_dir is None else str(secrets_dir), prometheus_allow=list(prometheus_allow or []),
                                   max_clock_skew=None if max_clock_skew < 0 else max_clock_skew, max_live_per_template=max_live_per_template,
                                   max_events=max_events, rate_limit_token=rate_limit_token or None, rate_limit_analysis=rate_limit_analysis or None,
                                   rate_limit_analysis_write=rate_limit_analysis_write or None, rate_limit_ticks=rate_limit_ticks or None,
                                   rate_limit_failures=rate_limit_failures or None,
                                   engine_cache_size=engine_cache, max_replays=max_replays, replay_in=replay_in, replay_timeout=replay_timeout, wait_timeout=wait_timeout, body_timeout=body_timeout, max_cuts=max_cuts,
                                   retain_days=retain_days, create_store=create)
        if workers == 1:
            app = create_app(settings)  # opens the store: missing (without --create) or unreadable is exit 2
        else:
            open_existing(store, create=create).close()  # the same, here, before any worker starts
    except (DeploySignalError, ValueError) as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    err.print(f"dashboard: http://{host}:{port}/ui/ (paste a read token into the page once)", markup=False)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO))
    if workers == 1:
        from ..service._asgi import prepare_process

        prepare_process()
        uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=_log_config(), **_timeouts(keep_alive_timeout, header_timeout))
    else:
        os.environ["DEPLOYSIGNAL_SERVICE_SETTINGS"] = settings.model_dump_json()
        uvicorn.run("deploysignal.service._asgi:app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level, log_config=_log_config(),
                    **_timeouts(keep_alive_timeout, header_timeout))


def _timeouts(keep_alive: int, header: float) -> dict:
    """uvicorn options: the keep-alive timeout, and an HTTP protocol that closes connections whose request
    head does not arrive within ``header`` seconds (uvicorn times out only idle keep-alive connections;
    worker processes read the timeout from the environment)."""
    from ..service._timeouts import HEADER_TIMEOUT_ENV, PROTOCOL

    os.environ[HEADER_TIMEOUT_ENV] = repr(float(header))
    return {"timeout_keep_alive": keep_alive, "http": PROTOCOL}


def _log_config() -> dict:
    """uvicorn's logging config with the Kayenta key (``/kayenta/<token>/``) redacted from access lines."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_kayenta_key"] = {"()": "deploysignal.service._kayenta.RedactKayentaKey"}
    cfg["handlers"]["access"]["filters"] = ["redact_kayenta_key"]
    return cfg


def _generated_tokens(directory: Path, host: str, port: int) -> Path:
    """``directory/tokens.json``; on first use a write, a read, a kayenta and a metrics token are
    generated (``secrets``), written to ``write.token`` / ``read.token`` / ``kayenta.token`` /
    ``metrics.token`` (mode 0600, directory 0700, tightened if it exists) and only their hashes to
    ``tokens.json``. Every file is written to a temporary name and renamed, ``tokens.json`` last: a
    start interrupted before that leaves no ``tokens.json`` and the next start generates them all
    again. A directory generated before 0.5.0 (no metrics token; ``/metrics`` needs one since) gets one
    added, the other tokens kept. Says on stderr where they are."""
    import secrets
    import tempfile

    from ..service import hash_token

    directory = directory.absolute()
    tokens = directory / "tokens.json"

    def put(path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    if not tokens.exists():
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.chmod(0o700)
            entries = []
            for role in GENERATED_ROLES:
                tok = secrets.token_urlsafe(32)
                put(directory / f"{role}.token", tok + "\n")
                entries.append({"name": f"generated-{role}", "sha256": hash_token(tok), "role": role})
            put(tokens, json.dumps(entries, indent=1) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot generate tokens in {directory} ({exc}); pass --tokens-file or --tokens-dir") from None
        err.print(f"no --tokens-file: generated write, read, kayenta and metrics tokens in {directory}/ (write.token, read.token, kayenta.token,"
                  " metrics.token; hashes in tokens.json)")
    else:
        err.print(f"no --tokens-file: using {tokens}")
        _add_metrics_token(directory, tokens, put)
    if (directory / "read.token").exists():
        err.print(f"  curl -H \"Authorization: Bearer $(cat {directory}/read.token)\" http://{host}:{port}/v1/analyses", markup=False)
    if (directory / "kayenta.token").exists():
        err.print(f"  Kayenta address (Argo's kayenta provider): http://{host}:{port}/kayenta/$(cat {directory}/kayenta.token)", markup=False)
    if (directory / "metrics.token").exists():
        err.print(f"  Prometheus scrape of /metrics: authorization credentials_file {directory}/metrics.token", markup=False)
    return tokens


#: the tokens `serve` generates without a tokens file, in this order
GENERATED_ROLES = ("write", "read", "kayenta", "metrics")


def _add_metrics_token(directory: Path, tokens: Path, put: Callable[[Path, str], None]) -> None:
    """A generated directory from before 0.5.0 (its entries all ``generated-*``, none of role metrics): add
    a metrics token (``/metrics`` needs one since 0.5.0). A hand-written tokens.json is left alone."""
    import secrets

    from ..service import hash_token

    try:
        entries = json.loads(tokens.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # read_tokens_file reports it
    if not isinstance(entries, list) or not all(isinstance(e, dict) and str(e.get("name", "")).startswith("generated-") for e in entries):
        return
    if any(e.get("role") == "metrics" for e in entries):
        return
    try:
        tok = secrets.token_urlsafe(32)
        put(directory / "metrics.token", tok + "\n")
        put(tokens, json.dumps([*entries, {"name": "generated-metrics", "sha256": hash_token(tok), "role": "metrics"}], indent=1) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot add a metrics token in {directory} ({exc}); pass --tokens-file or --tokens-dir") from None
    err.print(f"added a metrics token for /metrics (required since 0.5.0): {directory}/metrics.token")


@service_app.command("hash-token")
def hash_token_cmd(token: str = typer.Argument(..., help="The bearer token to hash (store only the hash).")) -> None:
    """Print the SHA-256 of a token for the tokens file."""
    from ..service import hash_token

    out.print(hash_token(token))


@service_app.command("openapi")
def openapi_cmd(output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of stdout.")) -> None:
    """Print the service's OpenAPI spec (JSON, sorted keys)."""
    from ..service import openapi_spec

    text = json.dumps(openapi_spec(), indent=1, sort_keys=True) + "\n"
    if output is None:
        out.print(text, end="", markup=False)
    else:
        output.write_text(text, encoding="utf-8")


@service_app.command("void")
def void_cmd(
    analysis: str = typer.Option(..., help="Analysis id."),
    reason: str = typer.Option(..., help="Why (recorded in the audit chain)."),
    store: str = typer.Option("sqlite:///deploysignal.db", envvar="DEPLOYSIGNAL_STORE", help="The service's store URL."),
) -> None:
    """Void an analysis in the store (as POST /v1/analyses/{id}/void with a write token does): a chained
    audit record and a final verdict that never promotes. Exit 0 done, 2 no such analysis or bad input."""
    res = _operator_act(store, lambda m: m.void(analysis, reason))
    out.print(f"analysis {analysis} voided at tick {res['tick']}: verdict {res['verdict']} (final), audit head {res['audit_head']}")


@service_app.command("delete")
def delete_cmd(
    analysis: str = typer.Option(..., help="Analysis id."),
    store: str = typer.Option("sqlite:///deploysignal.db", envvar="DEPLOYSIGNAL_STORE", help="The service's store URL."),
    force: bool = typer.Option(False, "--force", help="Also delete an undecided analysis (it may be the live gate of a rollout)."),
    reason: str = typer.Option("operator", help="Why (kept in the tombstone)."),
) -> None:
    """Delete an analysis from the store (as DELETE /v1/analyses/{id} with a write token does): its ticks,
    audit lines and snapshot go; a tombstone keeps its final audit head, which an audit log exported
    before (GET /v1/analyses/{id}/audit) still verifies against. A running service answers 404 for it
    from then on (it reads the store) and drops its cached engine then. Exit 0 done, 1 refused (undecided
    without --force), 2 no such analysis or bad input."""
    import datetime as _dt

    from ..service._inputs import check_name

    def run(m: Any) -> dict:
        check_name(reason, "--reason")
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        return m.delete(analysis, reason=f"operator: {reason}", deleted=now, undecided=force)  # type: ignore[no-any-return]

    tomb = _operator_act(store, run)
    out.print(f"analysis {analysis} deleted: {tomb['n_ticks']} ticks, verdict {tomb['verdict']}{' (final)' if tomb['final'] else ''}, final audit head {tomb['audit_head']}")


def _operator_act(store: str, act: Callable[[Any], dict], **manager: Any) -> dict:
    """Run an operator act on the :class:`~deploysignal.service._manager.AnalysisManager` of the existing
    store at ``store`` (never created, closed after): exit 2 with the error on stderr for a missing or
    unreadable store, bad input or no such analysis, 1 when the act is refused
    (:class:`~deploysignal.store.Conflict`)."""
    from ..service._manager import AnalysisManager
    from ..store import Conflict, open_existing

    try:
        st = open_existing(store)
        try:
            return act(AnalysisManager(st, **manager))
        finally:
            st.close()
    except Conflict as exc:
        err.print(f"[red]refused[/red]: {exc}")
        raise typer.Exit(1) from None
    except (DeploySignalError, ValueError) as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None


@service_app.command("cut")
def cut_cmd(
    analysis: str = typer.Option(..., help="Analysis id."),
    to_tick: int = typer.Option(..., "--to-tick", min=0, help="The first tick to drop (the gate's tick number, as in the audit records)."),
    reason: str = typer.Option(..., help="Why (recorded in the audit chain)."),
    store: str = typer.Option("sqlite:///deploysignal.db", envvar="DEPLOYSIGNAL_STORE", help="The service's store URL."),
    max_cuts: int = typer.Option(3, min=0, help="Cut-backs allowed per analysis (as serve --max-cuts)."),
) -> None:
    """Cut an analysis back to before tick TO_TICK (as POST /v1/analyses/{id}/cut with a write token does):
    the later ticks stay stored, marked superseded by a chained cut record, and the analysis continues from
    the ticks kept. An analysis that rolled back, was voided or ended refusing promotion refuses it, as
    does one that had max_cuts cuts. Exit 0 done, 1 refused, 2 no such analysis or bad input."""
    res = _operator_act(store, lambda m: m.cut(analysis, to_tick, reason), max_cuts=max_cuts)
    if res.get("duplicate"):
        out.print(f"analysis {analysis}: this cut was already made (stored entry {res['tick']}); nothing superseded again")
    out.print(f"analysis {analysis} cut back to tick {res['to_tick']} (superseded stored ticks {res['superseded']}): verdict {res['verdict']},"
              f" audit head {res['audit_head']}")
    err.print(f"[yellow]note[/yellow]: {res['note']}")


@service_app.command("replay")
def replay_cmd(
    analysis: str = typer.Option(..., help="Analysis id."),
    url: str = typer.Option("http://127.0.0.1:8080", envvar="DEPLOYSIGNAL_URL", help="The service's base URL."),
    token_file: Optional[Path] = typer.Option(None, envvar="DEPLOYSIGNAL_TOKEN_FILE", help="File holding a read (or write) bearer token, e.g. .deploysignal/read.token."),
    timeout: float = typer.Option(3600.0, min=1.0, help="Seconds to wait for the job to finish."),
    poll: float = typer.Option(1.0, min=0.05, help="Seconds between status requests."),
    as_json: bool = typer.Option(False, "--json", help="Print the finished job as JSON."),
) -> None:
    """Replay an analysis on a running service (POST /v1/analyses/{id}/replay?wait=false, a background
    job) and wait for the job (GET /v1/analyses/{id}/replays/{job}). Exit 0 every audit line reproduced
    byte for byte, 1 a mismatch (the first differing line is named), 2 the job failed or was lost, the
    service refused (the HTTP status and detail are printed) or the wait timed out."""
    import time as _time
    from urllib.parse import quote

    import httpx

    token = os.environ.get("DEPLOYSIGNAL_TOKEN") if token_file is None else token_file.read_text(encoding="utf-8").strip()
    headers = {} if not token else {"Authorization": f"Bearer {token}"}
    base = f"/v1/analyses/{quote(analysis, safe='')}"
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60) as c:
            r = c.post(f"{base}/replay", params={"wait": "false"})
            if r.status_code != 202:
                raise ConfigError(f"the service answered {r.status_code}: {_detail(r)}")
            job = r.json()
            deadline = _time.monotonic() + timeout
            while job["state"] == "running":
                if _time.monotonic() > deadline:
                    raise ConfigError(f"replay job {job['job']} still running after {timeout:g} s (GET {base}/replays/{job['job']} later)")
                _time.sleep(poll)
                r = c.get(f"{base}/replays/{job['job']}")
                if r.status_code != 200:
                    raise ConfigError(f"the service answered {r.status_code} for job {job['job']}: {_detail(r)}")
                job = r.json()
    except httpx.HTTPError as exc:
        err.print(f"[red]error[/red]: {url}: {exc}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        out.print(json.dumps(job, sort_keys=True))
    res = job.get("result") or {}
    if job["state"] != "done":
        err.print(f"[red]replay job {job['job']} {job['state']}[/red]: {res.get('error', '')}")
        raise typer.Exit(2)
    if not res.get("ok"):
        err.print(f"[red]replay of {analysis} does not reproduce its audit[/red]: line {res.get('first_mismatch_line')}: {res.get('reason')}")
        raise typer.Exit(1)
    if not as_json:
        out.print(f"analysis {analysis}: replay job {job['job']} reproduced {res['records']} audit lines ({res['ticks']} ticks) byte for byte;"
                  f" audit head {res['audit_head']}")


def _detail(r: Any) -> str:
    try:
        return str(r.json().get("detail", r.text))[:500]
    except ValueError:
        return r.text[:500]


def _stored_head(st: Any, analysis: str) -> str:
    """The analysis' stored audit head; for a deleted one, the error names its tombstone's final head."""
    from ..store import NotFound, tombstones

    try:
        return str(st.get(analysis).audit_head)
    except NotFound:
        gone = tombstones(st, analysis)
        if not gone:
            raise
        t = gone[-1]
        raise ConfigError(f"no analysis {analysis!r}: deleted {t['deleted']} ({t['reason']}), final audit head {t['audit_head']};"
                          f" verify a log exported before the delete with: deploysignal audit verify FILE --head {t['audit_head']}") from None


@audit_app.command("verify")
def verify(
    path: Optional[Path] = typer.Argument(None, help="Chained audit NDJSON (GET /v1/analyses/{id}/audit)."),
    head: Optional[str] = typer.Option(None, help="Expected last hash (the analysis' audit_head): detects a truncated tail."),
    store: Optional[str] = typer.Option(None, help="Verify straight from a store URL instead of a file (needs --analysis; opened read-only)."),
    analysis: Optional[str] = typer.Option(None, help="Analysis id in --store."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
) -> None:
    """Check the hash chain of an audit log; exit 0 intact, 1 tampered/incomplete, 2 unreadable.

    With ``--store``, also what the service restores and serves: every tick row, the snapshot, the
    summary and the analysis row against the chain, and the records re-derived from the snapshot and the
    ticks after it (the check the service runs when it loads an analysis; an analysis written before
    0.5.0 gets what can be checked, and the rest is named)."""
    from ..audit._chain import verify_chain

    bound: dict | None = None
    try:
        if store is not None:
            from ..service._integrity import IntegrityError
            from ..service._manager import AnalysisManager
            from ..store import open_existing

            if analysis is None:
                raise ConfigError("--store needs --analysis")
            st = open_existing(store, read_only=True)  # verification reads only
            try:
                lines = st.audit_lines(analysis)
                stored_head = _stored_head(st, analysis)
                if head is not None and head != stored_head:
                    bound = {"ok": False, "reason": f"the store's audit_head {stored_head[:16]}... is not the published head {head[:16]}..."}
                else:
                    head = stored_head
                    try:
                        bound = {"ok": True, **AnalysisManager(st).verify(analysis).to_json()}
                    except IntegrityError as exc:
                        bound = {"ok": False, "reason": str(exc)}
            finally:
                st.close()
        elif path is not None:
            if not path.is_file():
                raise ConfigError(f"{path}: no such file")
            # bytes that are not UTF-8 are kept as lone surrogates: verify_chain reports their line as broken
            text = path.read_bytes().decode("utf-8", errors="surrogateescape")
            lines = [ln for ln in text.splitlines() if ln.strip()]
        else:
            raise ConfigError("give an audit file or --store and --analysis")
    except (DeploySignalError, OSError, KeyError) as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    legacy = _unchained_header(lines[0]) if lines else None
    if legacy is not None:
        reason = (f"unchained audit log (format 1: plain records, written by `deploysignal gate --audit` of deploysignal {legacy},"
                  " before CLI logs were hash-chained in 0.5.0): there is no hash chain to verify. `deploysignal replay` still"
                  " checks every record byte for byte; run `gate --audit` again for a chained log")
        if as_json:
            out.print(json.dumps({"ok": False, "lines": 0, "head": None, "bad_line": None, "reason": reason, "format": 1}))
        else:
            err.print(f"[red]audit log not verifiable[/red]: {reason}")
        raise typer.Exit(1)
    rep = verify_chain(lines, head=head)
    ok = rep.ok and (bound is None or bound["ok"])
    if as_json:
        out.print(json.dumps({"ok": ok, "lines": rep.n, "head": rep.head, "bad_line": rep.bad_line, "reason": rep.reason,
                              **({"store": bound} if bound is not None else {})}))
        raise typer.Exit(0 if ok else 1)
    if rep.ok:
        out.print(f"audit chain intact: {rep.n} lines, head {rep.head}")
    else:
        err.print(f"[red]audit chain broken[/red] at line {rep.bad_line}: {rep.reason}")
    if bound is not None and bound["ok"]:
        out.print(f"store matches the chain (store_binding {bound['store_binding']}): checked {'; '.join(bound['checked'])}")
        if bound["unchecked"]:
            out.print(f"[yellow]not checked[/yellow]: {'; '.join(bound['unchecked'])}")
    elif bound is not None:
        err.print(f"[red]store does not match the chain[/red]: {bound['reason']}")
    raise typer.Exit(0 if ok else 1)


def _unchained_header(first: str) -> str | None:
    """The writer's version when ``first`` is the plain header line of an unchained (format 1) audit
    log, else None."""
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and obj.get("family") == "header" and "hash" not in obj:
        return str(obj.get("gate_version", "< 0.2.0"))
    return None


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``service ...`` and ``audit verify`` to the main ``deploysignal`` app."""
    app.command("serve")(serve)
    app.add_typer(service_app, name="service")
    app.add_typer(audit_app, name="audit")
