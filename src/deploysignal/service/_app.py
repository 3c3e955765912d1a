"""FastAPI application: analyses, ingest, verdicts, SSE, audit, replay, Argo / Flagger / Kayenta adapters.

Create it with :func:`create_app`; ``deploysignal serve`` runs it under uvicorn. Every write is
committed to the store before the response is sent. See ``docs/service.md`` and
``docs/integrations.md`` for the endpoint reference and the Argo Rollouts / Flagger snippets.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import math
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import numpy as np
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._exceptions import ConfigError, DeploySignalError, InputError
from ..calibration import CompiledConfig, compile_baseline
from ..sources import PrometheusPuller, PrometheusSource, PrometheusSplitSource, PromUnavailable, PullSpec, SecretPolicy
from ..dashboard._routes import add_dashboard_routes
from ..store import Conflict, IntegrationTables, NotFound, open_existing
from ..gate import certification_status, runtime_certification
from ..telemetry import Frame
from ._admission import Busy, RateLimited, RateLimits, parse_limit
from ._kayenta import kayenta_router
from ._inputs import InputGuard, Shallow, check_name, check_names, name_problem
from ._integrity import IntegrityError
from ._manager import AnalysisManager
from ._argo import argo_router
from ._flagger import flagger_router
from ._metrics import build_registry, exposition
from ._operator import add_operator_routes
from ._replay_jobs import ReplayJobs
from ._retention import RetentionTask, add_retention_routes
from ._revisions import IntegrationContext
from ._templates import templates_router
from ._scope import PROJECT_PATTERN, OutOfScope, Principal, ScopeGuard
from ._settings import ServiceSettings
from ._split_engine import SplitEngine, split_config
from ._split_pull import SplitPullSpec, SplitPuller, check_split_pull
from ..split._spec import check_split_signals, tick_specs

__all__ = ["create_app", "openapi_spec"]

log = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: names (cohorts, tiers) hold no control characters (service/_inputs.py)
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: integers a float can hold: a larger one would fail the finiteness checks with OverflowError (a 500)
_FloatInt = Annotated[StrictInt, Field(ge=-int(sys.float_info.max), le=int(sys.float_info.max))]
Number = StrictFloat | _FloatInt
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------------- request models
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BaselineIn(_Strict):
    """Inline baseline telemetry compiled on the server (deterministic for a given seed)."""

    timestamps: list[Annotated[Number, Field(allow_inf_nan=False)]] = Field(min_length=2)
    values: dict[str, list[Number | None]] = Field(min_length=1)
    tier: list[str] | None = None
    seed: StrictInt = 0


class CreateAnalysis(Shallow, _Strict):  # config and metrics are free-form: nesting bounded
    """Create an analysis from exactly one of ``config``, ``config_ref`` or ``baseline``; or, with
    ``mode: split``, a randomised-split analysis from ``metrics`` (the split signals file's content:
    ``{metric: {kind, direction, edges, tolerance, alpha_share}}``, see ``docs/split.md``)."""

    id: str | None = Field(None, pattern=ID_PATTERN)
    config: dict[str, Any] | None = None
    config_ref: str | None = Field(None, pattern=r"^cc-[0-9a-f]{6,64}$")
    baseline: BaselineIn | None = None
    signals: list[str] | None = None
    alpha: Number = Field(0.05, gt=0, lt=1)
    mode: Literal["one-sample", "two-sample", "split"] = "one-sample"
    window: StrictInt = Field(480, ge=1, le=10_000_000)
    max_extensions: StrictInt = Field(1, ge=0, le=1000)
    early_proceed: bool = False
    out_of_domain: Literal["reject", "missing"] = Field(
        "missing", description="a value outside its signal's domain (declared range, give or take float rounding): 'missing' (default) "
        "takes only that signal of that tick as missing, whichever side it lies on, recorded in the audit (schema_continuity) and listed "
        "in the ingest response (out_of_domain), the tick not counted as valid; 'reject' answers 422 naming the tick and signal (push "
        "only: a pull analysis cannot reject)")
    prometheus: PullSpec | SplitPullSpec | None = Field(None, description="pull mode: PromQL per signal (PullSpec), or for mode split the per-arm counters and histograms (SplitPullSpec)")
    metrics: dict[str, dict[str, Any] | None] | None = Field(None, description="split mode: the metric specs (a split signals file's content)")
    canary_share: Number | None = Field(None, gt=0, lt=1, description="split mode: configured canary share of units (enables the sample-ratio check)")
    project: str | None = Field(None, pattern=PROJECT_PATTERN, description="the project the analysis belongs to (token scopes, docs/service.md); a project-scoped token fills in its own")

    @model_validator(mode="after")
    def _one_source(self) -> CreateAnalysis:
        if self.mode == "split":
            extra = [n for n in ("config", "config_ref", "baseline", "signals") if getattr(self, n) is not None]
            extra += ["out_of_domain (split ticks are checked by their own parser)"] if "out_of_domain" in self.model_fields_set else []
            if isinstance(self.prometheus, PullSpec):
                extra.append("prometheus in the pull-mode shape (give arm_label, arms, units, events, histograms)")
            if extra:
                raise ValueError(f"a split analysis takes metrics, not {', '.join(extra)}")
            if self.metrics is None:
                raise ValueError("a split analysis needs metrics ({metric: {kind, direction, edges, tolerance}})")
            return self
        if self.metrics is not None or self.canary_share is not None or isinstance(self.prometheus, SplitPullSpec):
            raise ValueError("metrics, canary_share and a split prometheus spec (arm_label, arms, ...) belong to mode split")
        if self.out_of_domain == "reject" and self.prometheus is not None:  # here, so that a template is refused when stored
            raise ValueError("out_of_domain 'reject' needs pushed ticks: a pulled tick has no client to answer 422 to (use 'missing')")
        given = [n for n in ("config", "config_ref", "baseline") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of config, config_ref, baseline (got {given or 'none'})")
        return self


def _name(s: str) -> str:
    """A name holds no invisible format character either (NAME_PATTERN refuses the control characters)."""
    why = None if s.isascii() else name_problem(s)
    if why is not None:
        raise ValueError(why)
    return s


class TickModel(_Strict):
    timestamp: Annotated[Number, Field(allow_inf_nan=False)]
    values: dict[str, Number | None] = Field(min_length=1)
    control: dict[str, Number | None] | None = None
    cohort: Annotated[str, Field(max_length=128, pattern=NAME_PATTERN), AfterValidator(_name)] | None = None


class IngestRequest(_Strict):
    """A batch of ticks, strictly increasing in time and after the last accepted tick."""

    batch_id: str | None = Field(None, pattern=ID_PATTERN)
    ticks: list[TickModel] = Field(min_length=1)


class SplitIngestRequest(_Strict):
    """A batch of aggregated split ticks for a ``mode: split`` analysis: each
    ``{"timestamp", "arms": {"canary": {"units", "events"?, "buckets"?}, "stable": {...}}, "tier"?}``
    (``docs/split.md``), checked by the split gate's parser (422 naming the tick and field)."""

    batch_id: str | None = Field(None, pattern=ID_PATTERN)
    ticks: list[dict[str, Any]] = Field(min_length=1)




# ---------------------------------------------------------------------- body size limit
class BodyLimit:
    """Pure ASGI middleware: 413 for bodies above ``limit`` bytes (declared or streamed); 408 when the
    body has not fully arrived ``timeout`` seconds after the request started (a stalled or trickling
    upload: the connection is closed instead of holding a worker slot and the body buffered so far)."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float | None = None) -> None:
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(scope, receive, send)
                    return
        seen = 0
        chunks: list[bytes] = []
        more = True
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while more:
            try:
                msg = await (receive() if deadline is None else asyncio.wait_for(receive(), max(0.0, deadline - loop.time())))
            except TimeoutError:
                resp = JSONResponse({"detail": f"request body not received within {self.timeout:g} s"}, status_code=408, headers={"Connection": "close"})
                await resp(scope, receive, send)
                return
            if msg["type"] != "http.request":
                return  # the client left before its body was complete: nothing to answer, nothing to act on
            body = msg.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                await self._reject(scope, receive, send)
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        data = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = JSONResponse({"detail": f"request body exceeds the limit of {self.limit} bytes"}, status_code=413)
        await resp(scope, receive, send)


class ServerTiming:
    """Pure ASGI middleware: ``Server-Timing: app;dur=<ms>`` on every response (request handling time
    inside the service, excluding the network and the client), and a latency histogram for /metrics."""

    def __init__(self, app: ASGIApp, histogram: Any) -> None:
        self.app, self.hist = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                dur = time.perf_counter() - t0
                self.hist.observe(dur)
                msg = {**msg, "headers": [*msg.get("headers", []), (b"server-timing", f"app;dur={dur * 1000:.3f}".encode())]}
            await send(msg)

        await self.app(scope, receive, timed_send)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _compile_inline(b: BaselineIn, signals: list[str] | None) -> CompiledConfig:
    n = len(b.timestamps)
    names = list(b.values)
    for name, col in b.values.items():
        if len(col) != n:
            raise InputError(f"baseline column has {len(col)} values, timestamps {n}", column=name)
    if signals is not None:
        missing = sorted(set(signals) - set(names))
        if missing:
            raise InputError(f"signals {missing} are not in the baseline", column="signals")
        names = list(signals)
    vals = np.array([[math.nan if v is None else float(v) for v in b.values[s]] for s in names], dtype=float).T
    if np.isinf(vals).any():
        raise InputError("baseline contains an infinite value", column="baseline.values")
    check_names(names, "baseline.values")
    check_names(b.tier or [], "baseline.tier")
    cohort = None if b.tier is None else np.asarray(b.tier, dtype=str)
    if cohort is not None and len(cohort) != n:
        raise InputError(f"baseline tier has {len(cohort)} values, timestamps {n}", column="baseline.tier")
    frame = Frame(np.asarray(b.timestamps, dtype=float), vals, tuple(names), cohort)
    try:
        return compile_baseline(frame, seed=b.seed)
    except DeploySignalError:
        raise
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise InputError(f"baseline cannot be compiled: {exc}") from None


def _json_body(*models: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for an endpoint that parses its own JSON body with one of ``models``
    (the schemas are registered by :func:`_register_schema`)."""
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    ref = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _parse_body(model: type[_M], raw: bytes, content_type: str | None) -> _M:
    """``raw`` parsed and validated in one pass by pydantic's JSON parser (the standard library's
    ``json.loads`` plus ``model_validate`` cost about four times as much on a batch of ticks). The
    content type must be JSON (``application/json`` or ``+json``; 415 otherwise). Errors become the
    ``RequestValidationError`` FastAPI raises for a body it parsed itself, locations prefixed with
    ``body``; the same handler turns them into a 422."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HTTPException(415, f"request body must be JSON (content-type application/json), got {content_type or 'no content type'!r}")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None


# ---------------------------------------------------------------------- app factory
def _effective(settings: dict[str, Any]) -> dict[str, Any]:
    """Gate settings as they apply: ``out_of_domain`` is left out of the stored settings when it is
    ``reject`` (settings written before the field existed keep their bytes), shown here all the same."""
    return {**settings, "out_of_domain": settings.get("out_of_domain", "reject")}


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service. Opens (and migrates) the store named by ``settings.store_url``.

    Raises
    ------
    ConfigError
        No tokens configured and ``insecure`` not set, or an unusable store URL.
    """
    settings = settings or ServiceSettings()
    if not settings.tokens and not settings.insecure:
        raise ConfigError("no API tokens configured: pass --tokens-file (hashes) or --insecure for a local experiment")
    store = open_existing(settings.store_url, create=settings.create_store)
    manager = AnalysisManager(store, snapshot_every=settings.snapshot_every, max_clock_skew=settings.max_clock_skew,
                              cache_size=settings.engine_cache_size, max_replays=settings.max_replays, wait_timeout=settings.wait_timeout, max_cuts=settings.max_cuts)
    registry, counters = build_registry(manager)
    replays = ReplayJobs(manager, settings.store_url, settings.replay_in, timeout=settings.replay_timeout)
    tables = IntegrationTables(store)
    guard = ScopeGuard(store, tables)
    limiter = RateLimits(parse_limit(settings.rate_limit_token, "rate_limit_token"), parse_limit(settings.rate_limit_analysis, "rate_limit_analysis"),
                         parse_limit(settings.rate_limit_analysis_write, "rate_limit_analysis_write"),
                         parse_limit(settings.rate_limit_ticks, "rate_limit_ticks"), parse_limit(settings.rate_limit_failures, "rate_limit_failures"))
    for what, text in [("rate_limit_ticks", settings.rate_limit_ticks), *((f"tick_rate_limit of token {t.name!r}", t.tick_rate_limit) for t in settings.tokens)]:
        small = [str(i) for i in parse_limit(text, what) if i.amount < settings.max_batch_ticks]
        if small:
            raise ConfigError(f"{what}: {', '.join(small)} admits fewer ticks than --max-batch-ticks ({settings.max_batch_ticks}): a maximal batch would never be admitted")
    pullers: dict[str, PrometheusPuller] = {}
    pullers_lock = threading.Lock()  # _start_puller and _deleted run in request threads and the retention task
    unusable: dict[str, str] = {}
    policy = SecretPolicy(secrets_dir=settings.secrets_dir, env_prefix="DEPLOYSIGNAL_SECRET_", restrict_files=True,
                          allowed_addresses=tuple(settings.prometheus_allow))
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        app.state.resume_pullers()
        _start_retention()
        yield
        app.state.shutdown()

    # FastAPIOffline: Swagger UI (/docs) and ReDoc (/redoc) from assets shipped in the fastapi-offline
    # wheel (mounted at /static-offline-docs), so the pages work without a CDN; no online validator badge
    app = FastAPIOffline(
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
        title="deploysignal",
        version=__version__,
        description="Anytime-valid deploy gate: proceed, extend or roll back from live telemetry.",
    )
    app.state.manager = manager
    app.state.settings = settings
    app.state.replays = replays
    app.add_middleware(InputGuard)  # inside the body limit: lone surrogates / NUL refused before any endpoint
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(ServerTiming, histogram=counters["latency"])

    # ------------------------------------------------------------------ errors
    @app.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Echo locations and messages only: the offending input may be NaN / huge / not JSON-encodable.
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()[:20]]
        text = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {text}", "errors": errors}, status_code=422)

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(NotFound)
    async def _nf(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # the store's write turn or SQLite's lock did not come within its timeout: retry later (a
        # batch_id makes the retry idempotent); any other operational error is a server fault
        if "database is locked" not in str(exc):
            raise exc
        return JSONResponse({"detail": f"store busy, retry: {exc}"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a fault of the service, not of the request: logged with its traceback, answered in JSON (never
        # text/plain) with a reference to the log line; the request's content is not echoed
        ref = secrets.token_hex(6)
        log.error("unexpected error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error (logged as {ref}): {type(exc).__name__}"}, status_code=500)

    @app.exception_handler(OutOfScope)
    async def _scope(_: Request, exc: OutOfScope) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(RateLimited)
    async def _limited(_: Request, exc: RateLimited) -> JSONResponse:
        counters["limited"].inc()
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Busy)
    async def _busy_analysis(_: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # the analysis' store does not match its audit chain: refused (logged by the manager), the rest keeps serving
        return JSONResponse({"detail": str(exc)}, status_code=409)

    # ------------------------------------------------------------------ auth
    insecure = Principal("insecure", "write")

    def _principal(token: str | None) -> Principal | None:
        if settings.insecure:
            return insecure
        return None if not token else settings.principal_of(token)

    def _bearer(authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return authorization[7:].strip()

    def _admit(p: Principal, aid: str | None = None, *, write: bool = False) -> None:
        """Rate limits of the token and of the analysis' read or write budget (429 when one is used up)."""
        limiter.check(None if p is insecure else p.key, p.name, p.rate_limit, aid, write=write)

    def _refuse(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> HTTPException:
        """A 401 / 403 answer, counted against the client address' failure budget (429 beyond it)."""
        limiter.failure(request.client.host if request.client else "unknown")
        return HTTPException(status, detail, headers)

    # the roles as OpenAPI security schemes (HTTP bearer in the Authorization header)
    schemes = {
        "read": HTTPBearer(scheme_name="readToken", auto_error=False, description="A token of role read or write (tokens file; `deploysignal serve` without one generates both); a scoped token reaches only the analyses of its scope."),
        "write": HTTPBearer(scheme_name="writeToken", auto_error=False, description="A token of role write; a scoped token reaches only the analyses of its scope."),
        "metrics": HTTPBearer(scheme_name="metricsToken", auto_error=False, description="A token of role metrics, read or write; the exposition shows the analyses of the token's scope."),
    }

    def need(role: str) -> Callable[..., Awaitable[None]]:
        async def dep(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(schemes[role])) -> None:  # noqa: B008 (a closure: Annotated would be a forward reference)
            p = _principal(None if cred is None else cred.credentials)
            if p is None:
                raise _refuse(request, 401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})
            if p.role == "kayenta":
                raise _refuse(request, 403, "a kayenta token is accepted only as the key of a Kayenta address (/kayenta/<key>/...)")
            if p.role == "metrics":
                raise _refuse(request, 403, "a metrics token may only scrape /metrics")
            if role == "write" and p.role != "write":
                raise _refuse(request, 403, "this endpoint needs a write token")
            request.state.principal = p
            aid = request.path_params.get("aid")
            _admit(p)  # the token is counted before the scope check: out-of-scope probes use up its budget
            if aid is not None and p.scoped:
                try:
                    await run_in_threadpool(guard.check_analysis, p, aid)
                except OutOfScope:
                    limiter.failure(request.client.host if request.client else "unknown")
                    raise
            if aid is not None:
                limiter.check(None, p.name, None, aid, write=role == "write")

        return dep

    read = [Depends(need("read"))]
    write = [Depends(need("write"))]

    def _in_scope(p: Principal, body: CreateAnalysis, ident: str, what: str = "analysis") -> CreateAnalysis:
        """``body`` with a project-scoped token's project filled in; :class:`OutOfScope` when the token
        may not create ``ident`` in the body's project."""
        if p.project is not None and body.project is None:
            body = body.model_copy(update={"project": p.project})
        p.check_store(ident, body.project, what)
        return body

    # ------------------------------------------------------------------ analyses
    def _verdict_body(aid: str) -> dict[str, Any]:
        # read with the analysis' lock held: committed state only, never a batch being evaluated (review finding 1)
        return manager.read(aid, lambda eng: _verdict_of(aid, eng))

    def _verdict_of(aid: str, eng: Any) -> dict[str, Any]:
        row = store.get(aid)
        last = eng.last
        return {
            "id": aid,
            "n_ticks": eng.n_ticks,
            "last_timestamp": eng.last_timestamp,
            "verdict": "pending" if last is None else last.verdict,
            "final": False if last is None else last.final,
            "fired_families": [] if last is None else list(last.fired_families),
            "evidence": [] if last is None else [r for r in last.records if r.get("family") != "gate"],
            "gate": None if last is None else next((r for r in last.records if r.get("family") == "gate"), None),
            "baseline_version": row.spec["config_version"],
            "settings": row.spec["settings"] if isinstance(eng, SplitEngine) else _effective(row.spec["settings"]),
            "audit_head": row.audit_head,
            "integrity": None if (ic := manager.integrity.get(aid)) is None else ic.to_json(),
            "created": row.created,
            **({"poller": _poller_status(aid, row)} if row.spec.get("prometheus") else {}),
            **(eng.verdict_extra() if isinstance(eng, SplitEngine)
               else {"certification": runtime_certification(certification_status(eng.config, eng.settings), eng.gate.runtime_status)}),
        }

    def _poller_status(aid: str, row: Any) -> dict[str, Any]:
        p = pullers.get(aid)
        if p is not None and p.created == row.created:  # not the poller of a deleted analysis of the same id
            return p.status()
        if (row.summary or {}).get("final"):
            return {"state": "stopped", "reason": f"verdict is final ({row.summary.get('verdict')})", "since": None}
        if aid in unusable:
            return {"state": "stopped", "reason": unusable[aid], "since": None}
        # with serve --workers > 1 another worker may poll it: this process cannot tell
        return {"state": "unknown", "reason": "not polled by the process that answered (with several workers, another one may poll it)", "since": None}

    def _validate_prometheus(spec: PullSpec) -> list[str]:
        """Each query evaluated once now: 422 for a refused or multi-series query, 502 when the server
        cannot be reached; the warnings for queries without a series now."""
        src = PrometheusSource(spec.url, spec.canary, spec.control, connection=spec, policy=policy)
        try:
            return src.validate(time.time())
        except PromUnavailable as exc:
            raise HTTPException(502, f"prometheus at {spec.url} cannot be reached to validate the queries: {exc}") from None
        finally:
            src.close()

    def _create_split(aid: str, body: CreateAnalysis) -> dict[str, Any]:
        assert body.metrics is not None
        check_names(body.metrics, "metrics")
        specs = tick_specs(check_split_signals(body.metrics, "metrics"), "metrics")
        version, cfg_json = split_config(specs)
        ss = {"alpha": body.alpha, "window": body.window, "max_extensions": body.max_extensions, "early_proceed": body.early_proceed,
              "canary_share": body.canary_share, "ratio_label": "rate"}  # stored: an analysis without it is 0.4.0's (legacy wording)
        warnings: list[str] = []
        prom = body.prometheus
        if prom is not None:
            assert isinstance(prom, SplitPullSpec)
            check_split_pull(prom, specs)
            src = PrometheusSplitSource(prom, policy=policy)
            try:
                warnings = src.validate(time.time())
            except PromUnavailable as exc:
                raise HTTPException(502, f"prometheus at {prom.url} cannot be reached to validate the queries: {exc}") from None
            finally:
                src.close()
        extra = {"mode": "split", "prometheus": None if prom is None else prom.model_dump(), **({} if body.project is None else {"project": body.project})}
        spec = manager.create(aid, cfg_json, version, ss, extra, created := _now())
        out = {"id": aid, "mode": "split", "baseline_version": version, "signals": [s.name for s in specs], "settings": spec["settings"]}
        if prom is not None:
            _start_puller(aid, prom.model_dump(), created)
            out["warnings"] = warnings
        return out

    def _check_pull_spec(body: CreateAnalysis, cfg: CompiledConfig) -> None:
        """The Prometheus spec fits the config and mode (no I/O): shared by create and PUT /v1/templates."""
        if body.prometheus is None:
            return
        unknown = sorted(set(body.prometheus.canary) - set(cfg.names))
        if unknown:
            raise InputError(f"prometheus queries for unknown signals {unknown}", column="prometheus.canary")
        if body.mode == "two-sample" and not body.prometheus.control:
            raise InputError("two-sample mode needs prometheus.control queries", column="prometheus.control")
        if body.mode == "one-sample" and body.prometheus.control:
            raise InputError("prometheus.control queries given but the analysis runs in one-sample mode", column="prometheus.control")
        unknown = sorted(set(body.prometheus.control or {}) - set(cfg.names))
        if unknown:
            raise InputError(f"prometheus queries for unknown signals {unknown}", column="prometheus.control")

    def _create(aid: str, body: CreateAnalysis) -> dict[str, Any]:
        if body.mode == "split":
            return _create_split(aid, body)
        cfg, cfg_json = _config_of(body)
        warnings: list[str] = []
        _check_pull_spec(body, cfg)
        if body.prometheus is not None:
            warnings = _validate_prometheus(body.prometheus)
        gs = {"alpha": body.alpha, "mode": body.mode, "window": body.window, "max_extensions": body.max_extensions, "early_proceed": body.early_proceed,
              "out_of_domain": body.out_of_domain}
        extra = {"prometheus": None if body.prometheus is None else body.prometheus.model_dump(), **({} if body.project is None else {"project": body.project})}
        spec = manager.create(aid, cfg_json, cfg.version_id, gs, extra, created := _now())
        out = {"id": aid, "baseline_version": cfg.version_id, "signals": list(cfg.names), "settings": _effective(spec["settings"]),
               "certification": manager.read(aid, lambda eng: runtime_certification(certification_status(cfg, eng.settings), eng.gate.runtime_status))}
        if body.prometheus is not None:
            _start_puller(aid, body.prometheus.model_dump(), created)
            out["warnings"] = warnings
        return out

    def _config_of(body: CreateAnalysis) -> tuple[CompiledConfig, str]:
        """The compiled config of a create request (inline, by reference, or compiled from a baseline)."""
        if body.config is not None:
            try:
                cfg = CompiledConfig.from_json(json.dumps(body.config, allow_nan=False))
            except DeploySignalError:
                raise
            except Exception as exc:
                raise ConfigError(f"config is not a compiled config: {exc}") from None
            cfg_json = cfg.to_json()
        elif body.config_ref is not None:
            cfg_json = store.get_config(body.config_ref)
            cfg = CompiledConfig.from_json(cfg_json)
        else:
            assert body.baseline is not None
            cfg = _compile_inline(body.baseline, body.signals)
            cfg_json = cfg.to_json()
        check_names(cfg.names, "signals")  # they name audit records, metric labels and error messages
        if body.signals is not None and sorted(body.signals) != sorted(cfg.names):
            raise InputError(f"signals {sorted(body.signals)} differ from the compiled config's {sorted(cfg.names)}; compile a config for these signals", column="signals")
        return cfg, cfg_json

    @app.post("/v1/analyses", status_code=201, dependencies=write, tags=["analyses"])
    def create_analysis(body: CreateAnalysis, request: Request) -> dict[str, Any]:
        """Create an analysis (compiled config inline, by reference, or compiled from an inline baseline)."""
        aid = body.id or "an-" + secrets.token_hex(6)
        return _create(aid, _in_scope(request.state.principal, body, aid))

    @app.get("/v1/analyses", dependencies=read, tags=["analyses"])
    def list_analyses(request: Request) -> list[dict[str, Any]]:
        """The analyses the token may see."""
        out = []
        for r in guard.visible_analyses(request.state.principal, store.list()):
            summary, why = manager.listed_summary(r)
            out.append({"id": r.id, "n_ticks": r.n_ticks, "baseline_version": r.spec["config_version"], "summary": summary, "created": r.created,
                        **({"project": r.spec["project"]} if r.spec.get("project") is not None else {}),
                        **({"integrity_error": why} if why else {})})
        return out

    @app.get("/v1/analyses/{aid}", dependencies=read, tags=["analyses"])
    def get_analysis(aid: str) -> dict[str, Any]:
        """Current verdict with the evidence of the last tick (one record per family)."""
        return _verdict_body(aid)

    def _ingest(aid: str, body: IngestRequest | SplitIngestRequest, p: Principal) -> dict[str, Any]:
        if len(body.ticks) > settings.max_batch_ticks:
            counters["rejected"].inc()
            raise InputError(f"batch has {len(body.ticks)} ticks; the limit is {settings.max_batch_ticks}", column="ticks")
        if isinstance(body, SplitIngestRequest):
            for i, t in enumerate(body.ticks, start=1):
                if t.get("tier") is not None:
                    try:
                        check_name(t["tier"], "tier")
                    except InputError as exc:
                        raise InputError(exc.message, row=i, column="tier") from None
        limiter.check_ticks(None if p is insecure else p.key, p.name, p.tick_rate_limit, len(body.ticks))  # 429: nothing applied
        try:
            # the models' field dicts: what model_dump() would return, without copying every tick
            resp = manager.ingest(aid, [t if isinstance(t, dict) else t.__dict__ for t in body.ticks], body.batch_id)
        except InputError:
            counters["rejected"].inc()
            raise
        if not resp["duplicate"]:
            counters["ticks"].labels(aid).inc(resp["accepted"])
        _notify()
        return resp

    @app.post("/v1/analyses/{aid}/ticks", dependencies=write, tags=["analyses"], openapi_extra=_json_body(IngestRequest, SplitIngestRequest))
    async def ingest(aid: str, request: Request) -> dict[str, Any]:
        """Ingest a batch. All-or-nothing: a bad tick rejects the batch (422 naming tick and field).

        ``batch_id`` makes retries idempotent: a repeated id returns the original acknowledgement.
        A split analysis takes :class:`SplitIngestRequest` (aggregated split ticks), the others
        :class:`IngestRequest`.
        """
        raw = await request.body()
        split = await run_in_threadpool(manager.is_split, aid)
        # parsed in a worker thread: a 10,000-tick body takes tens of ms, which on the event loop
        # would hold every other request (another analysis' single tick) behind it
        body = await run_in_threadpool(_parse_body, SplitIngestRequest if split else IngestRequest, raw, request.headers.get("content-type"))
        return await run_in_threadpool(_ingest, aid, body, request.state.principal)

    @app.get("/v1/analyses/{aid}/audit", dependencies=read, tags=["analyses"])
    def audit(aid: str, start: Annotated[int, Query(ge=-1, le=2**62)] = -1, limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> Response:
        """Hash-chained audit lines (NDJSON) from tick ``start`` (-1 includes the header line)."""
        store.get(aid)
        lines = store.audit_lines(aid, start, limit)
        return Response("".join(ln + "\n" for ln in lines), media_type="application/x-ndjson")

    @app.post("/v1/analyses/{aid}/replay", dependencies=read, tags=["analyses"], response_model=None,
              responses={202: {"description": "with wait=false: the job (state running); GET its location for the result"},
                         503: {"description": "every replay slot stayed taken for --wait-timeout (nothing started)"}})
    def replay(aid: str, wait: bool = True) -> dict[str, Any] | JSONResponse:
        """Re-run every stored tick through a fresh gate and compare every audit line byte for byte, as a
        bounded background job (:mod:`deploysignal.service._replay_jobs`). ``wait=false``: 202 with the
        job at once; else the replay's report when the job is done (with its ``job`` id)."""
        job = replays.submit(aid)
        if not wait:
            return JSONResponse(job, status_code=202, headers={"Location": f"/v1/analyses/{quote(aid, safe='')}/replays/{job['job']}"})
        done = replays.wait(aid, job["job"])
        if done["state"] != "done":
            return JSONResponse({"detail": f"replay job {done['job']} {done['state']}: {(done['result'] or {}).get('error', '')}", "job": done["job"]},
                                status_code=409)
        return {**done["result"], "job": done["job"]}

    @app.get("/v1/analyses/{aid}/replays/{job}", dependencies=read, tags=["analyses"])
    def replay_job(aid: str, job: str) -> dict[str, Any]:
        """A replay job: ``state`` running, done (``result``: the replay's report), failed or lost (``result.error``)."""
        return replays.get(aid, job)

    # ------------------------------------------------------------------ server-sent events
    cond = asyncio.Event()
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

    def _notify() -> None:
        loop = loop_holder.get("loop")
        if loop is not None:
            loop.call_soon_threadsafe(cond.set)

    add_operator_routes(app, manager, write, _notify)
    def _deleted(aid: str) -> None:
        """What this process keeps about an analysis it deleted: its poller (stopped, unless the id was
        created again meanwhile and the entry is the new analysis' poller), its counter series."""
        try:
            created: str | None = store.get(aid).created
        except NotFound:
            created = None
        with pullers_lock:
            p = pullers.get(aid)
            if p is not None and p.created != created:
                p.stop_event.set()
                del pullers[aid]
        unusable.pop(aid, None)
        try:
            counters["ticks"].remove(aid)
        except KeyError:  # no series for it in this process: older prometheus-client releases raise (client_python #711), newer ones ignore it
            pass

    add_retention_routes(app, manager, read, write, _now, _deleted)
    add_dashboard_routes(app, store, lambda aid: manager.read(aid, lambda eng: None), read)  # /ui/ and the views it draws (dashboard/)

    @app.get("/v1/analyses/{aid}/events", dependencies=read, tags=["analyses"])
    async def events(
        aid: str,
        from_tick: Annotated[int, Query(ge=0)] = 0,
        max_events: Annotated[int | None, Query(ge=1)] = None,
        timeout: Annotated[float, Query(gt=0, le=3600)] = 300.0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-sent events, one per stored entry from ``from_tick`` (id = its stored sequence number, the
        gate's tick until a cut-back): ``decision`` with an evaluated tick's gate record, ``cut`` with a
        cut-back's record (the decisions it superseded were sent before it and are not sent again)."""
        await run_in_threadpool(store.get, aid)
        loop_holder["loop"] = asyncio.get_running_loop()
        start = from_tick
        if last_event_id is not None and last_event_id.isdigit():
            start = int(last_event_id) + 1

        async def gen() -> AsyncIterator[bytes]:
            nxt, sent = start, 0
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                n = await run_in_threadpool(store.n_ticks, aid)
                if n > nxt:
                    rows = await run_in_threadpool(store.audit_rows, aid, nxt, min(n - nxt, 1000))
                    for seq, text in rows:
                        nxt = seq + 1  # the cursor is the stored sequence: after a cut the gate's tick numbers repeat
                        for ln in text.split("\n"):
                            rec = json.loads(ln)["record"]
                            if rec.get("family") not in ("gate", "cut"):
                                continue
                            kind = "decision" if rec["family"] == "gate" else "cut"
                            yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(rec, separators=(',', ':'))}\n\n".encode()
                            sent += 1
                            if max_events is not None and sent >= max_events:
                                return
                    if not rows:
                        nxt = n
                    continue
                cond.clear()
                try:
                    await asyncio.wait_for(cond.wait(), timeout=1.0)
                except TimeoutError:
                    yield b": keep-alive\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ Argo Rollouts, Flagger, templates
    def _template_create(aid: str, tpl: dict[str, Any]) -> None:
        # "{{revision}}" in a template's PromQL becomes the revision (e.g. a pod-template-hash label)
        revision = aid.rsplit("@", 1)[1]
        prom = tpl.get("prometheus")
        if prom and "arm_label" in prom:  # a split spec: the revision names the canary arm (e.g. its pod-template-hash)
            prom = {**prom, "arms": {a: v.replace("{{revision}}", revision) for a, v in prom["arms"].items()}}
        elif prom:
            prom = {**prom, **{k: None if prom.get(k) is None else {s: q.replace("{{revision}}", revision) for s, q in prom[k].items()} for k in ("canary", "control")}}
        try:
            body = CreateAnalysis.model_validate({**tpl, "prometheus": prom})
        except ValidationError as exc:  # a stored template this version no longer accepts: a clear 422, not a 500
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ())) or "template"
            raise InputError(f"the template does not instantiate: {loc}: {first['msg']}", column=loc) from None
        _create(aid, body.model_copy(update={"id": aid}))

    def _store_template(tid: str, body: CreateAnalysis) -> dict[str, Any]:
        """A template as stored: the config resolved to a stored reference, everything else as given
        (a split template keeps its metrics, checked now)."""
        if body.mode == "split":
            assert body.metrics is not None
            check_names(body.metrics, "metrics")  # as _create_split: what every instantiation would refuse is refused now
            specs = tick_specs(check_split_signals(body.metrics, "metrics"), "metrics")
            if isinstance(body.prometheus, SplitPullSpec):
                check_split_pull(body.prometheus, specs)
            unset = set() if "out_of_domain" in body.model_fields_set else {"out_of_domain"}  # not a split setting: kept out unless given
            return body.model_dump(mode="json", exclude={"id", *unset}, exclude_none=True)  # a project, when set, is kept
        cfg, cfg_json = _config_of(body)
        _check_pull_spec(body, cfg)  # what every instantiation would refuse is refused now
        store.put_config(cfg.version_id, cfg_json)
        return {**body.model_dump(mode="json", exclude={"id", "config", "baseline", *(() if body.project else ("project",))}), "config_ref": cfg.version_id}

    def _integration_principal(authorization: str | None, token: str | None) -> Principal | None:
        """A read or write token from the bearer header or, for Flagger, ``metadata.token``."""
        return next((p for p in (_principal(_bearer(authorization)), None if token is None else _principal(token)) if p is not None and p.role in ("read", "write")), None)

    ctx = IntegrationContext(
        store=store,
        tables=tables,
        verdict=_verdict_body,
        principal=_integration_principal,
        guard=guard,
        admit=_admit,
        create=_template_create,
        now=_now,
        max_live=settings.max_live_per_template,
        max_events=settings.max_events,
    )
    app.include_router(argo_router(ctx, read))
    app.include_router(flagger_router(ctx, read))
    app.include_router(templates_router(ctx, read, write, lambda p, tid, body: _store_template(tid, _in_scope(p, body, tid, "template"))))

    # ------------------------------------------------------------------ Kayenta drop-in (service/_kayenta.py)
    app.include_router(kayenta_router(ctx, manager, settings, read, write))

    # ------------------------------------------------------------------ metrics, health
    @app.get("/metrics", tags=["ops"])
    def metrics(cred: HTTPAuthorizationCredentials | None = Depends(schemes["metrics"])) -> Response:  # noqa: B008 (see need())
        """Prometheus exposition, for a token of role metrics, read or write: series of the analyses
        the token may see, and the service's own counters (docs/service.md, scrape config)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        p = _principal(None if cred is None else cred.credentials)
        if p is None:
            raise HTTPException(401, "missing or unknown bearer token (role metrics, read or write)", {"WWW-Authenticate": "Bearer"})
        if p.role == "kayenta":
            raise HTTPException(403, "a kayenta token is accepted only as the key of a Kayenta address (/kayenta/<key>/...)")
        _admit(p)
        visible = None
        if p.scoped:
            projects = {r.id: r.spec.get("project") for r in store.list()}
            visible = lambda aid: aid in projects and p.may(aid, projects[aid])  # noqa: E731
        return Response(exposition(registry, visible), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        store.list()  # touches the database: a broken store fails the health check
        return {"status": "ok", "version": __version__}

    # ------------------------------------------------------------------ pull mode
    def _start_puller(aid: str, spec: dict[str, Any], created: str) -> None:
        """Start the poller of the analysis ``aid`` created at ``created``, with its own stop event (set
        on delete and at shutdown). An entry for another analysis of the same id (deleted, by another
        process too, and created again) is stopped and replaced."""
        with pullers_lock:
            old = pullers.get(aid)
            if old is not None and old.created == created:
                return
            if old is not None:
                old.stop_event.set()
                del pullers[aid]
            if stop.is_set():
                return
            try:
                p = (SplitPuller if "arm_label" in spec else PrometheusPuller)(manager, aid, spec, threading.Event(), policy=policy, created=created)
            except ValidationError as exc:  # a stored spec this version cannot read: report it, do not fail the service
                log.error("analysis %s: prometheus spec unusable, no poller: %s", aid, exc.errors()[0].get("msg"))
                unusable[aid] = f"prometheus spec unusable by this version: {exc.errors()[0].get('msg')}"
                return
            unusable.pop(aid, None)
            pullers[aid] = p
            p.start()

    def _resume_pullers() -> None:
        for row in store.list():
            prom = row.spec.get("prometheus")
            summary, why = manager.listed_summary(row) if prom else (None, None)
            if why is not None:  # a summary that does not match the chain decides nothing: the analysis is refused on load
                unusable[row.id] = f"refused: {why}"
            elif prom and not (summary or {}).get("final"):
                _start_puller(row.id, prom, row.created)

    def _start_retention() -> None:
        if settings.retain_days is not None:
            RetentionTask(manager, settings.retain_days, settings.retention_interval, stop, time.time, _deleted).start()

    def _shutdown() -> None:
        stop.set()
        with pullers_lock:
            running = list(pullers.values())
        for p in running:
            p.stop_event.set()
        for p in running:
            p.join(timeout=5)
        replays.close()
        store.close()

    app.state.resume_pullers = _resume_pullers
    app.state.shutdown = _shutdown
    _register_schema(app, IngestRequest)
    _register_schema(app, SplitIngestRequest)
    return app


def _register_schema(app: FastAPI, model: type[BaseModel]) -> None:
    """Add ``model`` (and the models it uses) to the OpenAPI components, for endpoints that parse their
    body themselves and reference it through :func:`_json_body`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        if model.__name__ not in schemas:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(body.pop("$defs", {}))
            schemas[model.__name__] = body
        return spec

    app.openapi = openapi  # type: ignore[method-assign]




def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document of the service (built on a throw-away in-memory store)."""
    app = create_app(ServiceSettings(store_url="sqlite:///:memory:", insecure=True, create_store=True))
    return app.openapi()
