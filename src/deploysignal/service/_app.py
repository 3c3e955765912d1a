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

import numpy as np
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._exceptions import ConfigError, DeploySignalError, InputError
from ..calibration import CompiledConfig, compile_baseline
from ..gate import certification_status
from ..store import Conflict, NotFound, open_store
from ..telemetry import Frame
from ._manager import AnalysisManager
from ._metrics import build_registry
from ._settings import ServiceSettings

__all__ = ["create_app", "openapi_spec"]

log = logging.getLogger(__name__)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
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


class PrometheusSpec(_Strict):
    """Pull mode: PromQL per signal for the canary (and the control in two-sample mode)."""

    url: str = Field(pattern=r"^https?://")
    interval_seconds: Number = Field(60, ge=1, le=86_400)
    canary: dict[str, str] = Field(min_length=1)
    control: dict[str, str] | None = None
    max_ticks: StrictInt | None = Field(None, ge=1)


class CreateAnalysis(_Strict):
    """Create an analysis from exactly one of ``config``, ``config_ref`` or ``baseline``."""

    id: str | None = Field(None, pattern=ID_PATTERN)
    config: dict[str, Any] | None = None
    config_ref: str | None = Field(None, pattern=r"^cc-[0-9a-f]{6,64}$")
    baseline: BaselineIn | None = None
    signals: list[str] | None = None
    alpha: Number = Field(0.05, gt=0, lt=1)
    mode: Literal["one-sample", "two-sample"] = "one-sample"
    window: StrictInt = Field(480, ge=1, le=10_000_000)
    max_extensions: StrictInt = Field(1, ge=0, le=1000)
    early_proceed: bool = False
    prometheus: PrometheusSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CreateAnalysis:
        given = [n for n in ("config", "config_ref", "baseline") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of config, config_ref, baseline (got {given or 'none'})")
        return self


class TickModel(_Strict):
    timestamp: Annotated[Number, Field(allow_inf_nan=False)]
    values: dict[str, Number | None] = Field(min_length=1)
    control: dict[str, Number | None] | None = None
    cohort: str | None = Field(None, max_length=128)


class IngestRequest(_Strict):
    """A batch of ticks, strictly increasing in time and after the last accepted tick."""

    batch_id: str | None = Field(None, pattern=ID_PATTERN)
    ticks: list[TickModel] = Field(min_length=1)


class FlaggerPayload(BaseModel):
    """Flagger webhook body (https://docs.flagger.app/usage/webhooks)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=253)
    phase: str | None = None
    checksum: str | None = None
    metadata: dict[str, str] | None = None


class KayentaThresholds(_Strict):
    # Kayenta's CanaryClassifierThresholdsConfig: marginal and pass score thresholds (0-100).
    marginal: Number = Field(50, ge=0, le=100)
    # pydantic field name "pass" is a keyword; aliased
    pass_: Number = Field(75, ge=0, le=100, alias="pass")


class KayentaStart(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    analysisId: str = Field(pattern=ID_PATTERN)
    thresholds: KayentaThresholds = Field(default_factory=lambda: KayentaThresholds.model_validate({"marginal": 50, "pass": 75}))


# ---------------------------------------------------------------------- body size limit
class BodyLimit:
    """Pure ASGI middleware: 413 for bodies above ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

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
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
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


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for an endpoint that parses its own JSON body with ``model`` (the
    schema is registered by :func:`_register_schema`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
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
    store = open_store(settings.store_url)
    manager = AnalysisManager(store, snapshot_every=settings.snapshot_every)
    registry, counters = build_registry(manager)
    pullers: dict[str, Any] = {}
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        app.state.resume_pullers()
        yield
        app.state.shutdown()

    app = FastAPI(
        lifespan=lifespan,
        title="deploysignal",
        version=__version__,
        description="Anytime-valid deploy gate: proceed, extend or roll back from live telemetry.",
    )
    app.state.manager = manager
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
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

    # ------------------------------------------------------------------ auth
    def _role(authorization: str | None) -> str | None:
        if settings.insecure:
            return "write"
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        return settings.role_of(authorization[7:].strip())

    def need(role: str) -> Callable[..., Awaitable[None]]:
        async def dep(authorization: Annotated[str | None, Header()] = None) -> None:
            have = _role(authorization)
            if have is None:
                raise HTTPException(401, "missing or unknown bearer token", {"WWW-Authenticate": "Bearer"})
            if role == "write" and have != "write":
                raise HTTPException(403, "this endpoint needs a write token")

        return dep

    read = [Depends(need("read"))]
    write = [Depends(need("write"))]

    # ------------------------------------------------------------------ analyses
    def _verdict_body(aid: str) -> dict[str, Any]:
        eng = manager.engine(aid)
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
            "settings": row.spec["settings"],
            "audit_head": row.audit_head,
            "created": row.created,
            "certification": certification_status(eng.config, eng.settings),
        }

    @app.post("/v1/analyses", status_code=201, dependencies=write, tags=["analyses"])
    def create_analysis(body: CreateAnalysis) -> dict[str, Any]:
        """Create an analysis (compiled config inline, by reference, or compiled from an inline baseline)."""
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
        if body.signals is not None and sorted(body.signals) != sorted(cfg.names):
            raise InputError(f"signals {sorted(body.signals)} differ from the compiled config's {sorted(cfg.names)}; compile a config for these signals", column="signals")
        if body.prometheus is not None:
            unknown = sorted(set(body.prometheus.canary) - set(cfg.names))
            if unknown:
                raise InputError(f"prometheus queries for unknown signals {unknown}", column="prometheus.canary")
            if body.mode == "two-sample" and not body.prometheus.control:
                raise InputError("two-sample mode needs prometheus.control queries", column="prometheus.control")
            if body.mode == "one-sample" and body.prometheus.control:
                raise InputError("prometheus.control queries given but the analysis runs in one-sample mode", column="prometheus.control")
        aid = body.id or "an-" + secrets.token_hex(6)
        gs = {"alpha": body.alpha, "mode": body.mode, "window": body.window, "max_extensions": body.max_extensions, "early_proceed": body.early_proceed}
        extra = {"prometheus": None if body.prometheus is None else body.prometheus.model_dump()}
        spec = manager.create(aid, cfg_json, cfg.version_id, gs, extra, _now())
        if body.prometheus is not None:
            _start_puller(aid, body.prometheus.model_dump())
        return {"id": aid, "baseline_version": cfg.version_id, "signals": list(cfg.names), "settings": spec["settings"],
                "certification": certification_status(cfg, manager.engine(aid).settings)}

    @app.get("/v1/analyses", dependencies=read, tags=["analyses"])
    def list_analyses() -> list[dict[str, Any]]:
        return [{"id": r.id, "n_ticks": r.n_ticks, "baseline_version": r.spec["config_version"], "summary": r.summary, "created": r.created} for r in store.list()]

    @app.get("/v1/analyses/{aid}", dependencies=read, tags=["analyses"])
    def get_analysis(aid: str) -> dict[str, Any]:
        """Current verdict with the evidence of the last tick (one record per family)."""
        return _verdict_body(aid)

    def _ingest(aid: str, body: IngestRequest) -> dict[str, Any]:
        if len(body.ticks) > settings.max_batch_ticks:
            counters["rejected"].inc()
            raise InputError(f"batch has {len(body.ticks)} ticks; the limit is {settings.max_batch_ticks}", column="ticks")
        try:
            # the models' field dicts: what model_dump() would return, without copying every tick
            resp = manager.ingest(aid, [t.__dict__ for t in body.ticks], body.batch_id)
        except InputError:
            counters["rejected"].inc()
            raise
        if not resp["duplicate"]:
            counters["ticks"].labels(aid).inc(resp["accepted"])
        _notify()
        return resp

    @app.post("/v1/analyses/{aid}/ticks", dependencies=write, tags=["analyses"], openapi_extra=_json_body(IngestRequest))
    async def ingest(aid: str, request: Request) -> dict[str, Any]:
        """Ingest a batch. All-or-nothing: a bad tick rejects the batch (422 naming tick and field).

        ``batch_id`` makes retries idempotent: a repeated id returns the original acknowledgement.
        """
        body = _parse_body(IngestRequest, await request.body(), request.headers.get("content-type"))
        return await run_in_threadpool(_ingest, aid, body)

    @app.get("/v1/analyses/{aid}/audit", dependencies=read, tags=["analyses"])
    def audit(aid: str, start: Annotated[int, Query(ge=-1, le=2**62)] = -1, limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> Response:
        """Hash-chained audit lines (NDJSON) from tick ``start`` (-1 includes the header line)."""
        store.get(aid)
        lines = store.audit_lines(aid, start, limit)
        return Response("".join(ln + "\n" for ln in lines), media_type="application/x-ndjson")

    @app.post("/v1/analyses/{aid}/replay", dependencies=read, tags=["analyses"])
    def replay(aid: str) -> dict[str, Any]:
        """Re-run every stored tick through a fresh gate; compare every audit line byte for byte."""
        return manager.replay(aid)

    # ------------------------------------------------------------------ server-sent events
    cond = asyncio.Event()
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

    def _notify() -> None:
        loop = loop_holder.get("loop")
        if loop is not None:
            loop.call_soon_threadsafe(cond.set)

    @app.get("/v1/analyses/{aid}/events", dependencies=read, tags=["analyses"])
    async def events(
        aid: str,
        from_tick: Annotated[int, Query(ge=0)] = 0,
        max_events: Annotated[int | None, Query(ge=1)] = None,
        timeout: Annotated[float, Query(gt=0, le=3600)] = 300.0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-sent events: one ``decision`` event per evaluated tick (id = tick), from ``from_tick``."""
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
                    lines = await run_in_threadpool(store.audit_lines, aid, nxt, min(n - nxt, 1000))
                    for ln in lines:
                        rec = json.loads(ln)["record"]
                        if rec.get("family") != "gate":
                            continue
                        yield f"id: {rec['tick']}\nevent: decision\ndata: {json.dumps(rec, separators=(',', ':'))}\n\n".encode()
                        nxt, sent = rec["tick"] + 1, sent + 1
                        if max_events is not None and sent >= max_events:
                            return
                    continue
                cond.clear()
                try:
                    await asyncio.wait_for(cond.wait(), timeout=1.0)
                except TimeoutError:
                    yield b": keep-alive\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ Argo Rollouts web provider
    @app.get("/v1/argo/analyses/{aid}", dependencies=read, tags=["integrations"])
    def argo(aid: str) -> dict[str, Any]:
        """For an Argo Rollouts ``web`` metric with ``jsonPath: "{$}"``:
        ``successCondition: result.verdict == "proceed"``, ``failureCondition: result.verdict == "rollback"``;
        ``pending`` and ``extend`` match neither and are Inconclusive."""
        body = _verdict_body(aid)
        reasons = [r["fire_reason"] for r in body["evidence"] if r.get("fire")]
        return {
            "verdict": body["verdict"],
            "final": body["final"],
            "tick": body["n_ticks"],
            "fired_families": body["fired_families"],
            "reason": "; ".join(reasons),
            "baseline_version": body["baseline_version"],
        }

    # ------------------------------------------------------------------ Flagger webhooks
    FLAGGER_HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "post-rollout", "rollback")

    @app.post("/v1/flagger/{hook}", tags=["integrations"])
    def flagger(hook: str, body: FlaggerPayload, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Flagger webhook. 200 allows the step; 409 holds it. The analysis is ``metadata.analysis``,
        else ``<namespace>.<name>``. On the ``rollback`` hook, 200 means "roll back now".

        Flagger cannot send headers on webhooks, so a read token may come as ``metadata.token``
        (or as a bearer header when a proxy adds one)."""
        token = (body.metadata or {}).get("token")
        if _role(authorization) is None and (token is None or settings.role_of(token) is None) and not settings.insecure:
            raise HTTPException(401, "missing or unknown token (bearer header or metadata.token)", {"WWW-Authenticate": "Bearer"})
        if hook not in FLAGGER_HOOKS:
            return JSONResponse({"detail": f"unknown hook {hook!r}; valid: {', '.join(FLAGGER_HOOKS)}"}, status_code=404)
        aid = (body.metadata or {}).get("analysis") or f"{body.namespace}.{body.name}"
        try:
            v = _verdict_body(aid)
        except NotFound:
            allow = hook in ("post-rollout",)
            return JSONResponse({"allow": allow, "analysis": aid, "verdict": None, "reason": f"no analysis {aid!r}"}, status_code=200 if allow else 409)
        verdict = v["verdict"]
        if hook in ("confirm-rollout", "pre-rollout", "post-rollout"):
            allow = True
        elif hook in ("rollout", "confirm-traffic-increase"):
            allow = verdict != "rollback"
        elif hook == "confirm-promotion":
            allow = verdict == "proceed"
        else:  # rollback hook: 200 tells Flagger to roll back
            allow = verdict == "rollback"
        out = {"allow": allow, "analysis": aid, "hook": hook, "verdict": verdict, "final": v["final"], "tick": v["n_ticks"], "fired_families": v["fired_families"]}
        return JSONResponse(out, status_code=200 if allow else 409)

    # ------------------------------------------------------------------ Kayenta-style canary executions
    @app.post("/v1/kayenta/canary", dependencies=write, tags=["integrations"])
    def kayenta_start(body: KayentaStart) -> dict[str, str]:
        """Start a canary execution judging an analysis (Kayenta ``POST /canary``-style)."""
        store.get(body.analysisId)
        ex = "ex-" + secrets.token_hex(8)
        store.create_execution(ex, body.analysisId, {"thresholds": {"marginal": body.thresholds.marginal, "pass": body.thresholds.pass_}}, _now())
        return {"canaryExecutionId": ex}

    @app.get("/v1/kayenta/canary/{ex}", dependencies=read, tags=["integrations"])
    def kayenta_status(ex: str) -> dict[str, Any]:
        """Poll a canary execution; ``result.judgeResult`` carries per-metric classifications and the score."""
        aid, req, created = store.get_execution(ex)
        eng = manager.engine(aid)
        last = eng.last
        verdict = "pending" if last is None else last.verdict
        complete = last is not None and (last.final or verdict in ("proceed", "rollback"))
        metrics = eng.signal_classification()
        with_data = [m for m in metrics if m["classification"] != "Nodata"]
        score = 0.0 if not with_data else 100.0 * sum(m["classification"] == "Pass" for m in with_data) / len(with_data)
        th = req["thresholds"]
        if verdict == "rollback":
            cls, why = "Fail", "anytime-valid gate rolled back: " + ", ".join(last.fired_families if last else ())
        elif not with_data:
            cls, why = "Nodata", "no metric carried data"
        elif verdict == "proceed":
            cls, why = ("Pass" if score >= th["pass"] else "Marginal"), "gate proceeded"
        elif verdict == "extend":
            cls, why = "Marginal", "evidence suggestive or too little valid data; gate extends"
        else:
            cls, why = ("Pass" if score >= th["pass"] else "Fail" if score <= th["marginal"] else "Marginal"), "analysis in progress"
        return {
            "id": ex,
            "complete": complete,
            "status": "succeeded" if complete else "running",
            "executionStatus": "SUCCEEDED" if complete else "RUNNING",
            "analysisId": aid,
            "startTimeIso": created,
            "result": {
                "judgeResult": {
                    "judgeName": "deploysignal-anytime-valid",
                    "results": [{"name": m["name"], "id": m["name"], "classification": m["classification"], "observations": m["observations"], "groups": []} for m in metrics],
                    "score": {"score": score, "classification": cls, "classificationReason": why},
                },
                "verdict": verdict,
                "tick": eng.n_ticks,
            },
        }

    # ------------------------------------------------------------------ metrics, health
    @app.get("/metrics", tags=["ops"])
    def metrics() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        store.list()  # touches the database: a broken store fails the health check
        return {"status": "ok", "version": __version__}

    # ------------------------------------------------------------------ pull mode
    def _start_puller(aid: str, spec: dict[str, Any]) -> None:
        from ..sources._prometheus import PrometheusPuller

        if aid in pullers:
            return
        p = PrometheusPuller(manager, aid, spec, stop)
        pullers[aid] = p
        p.start()

    def _resume_pullers() -> None:
        for row in store.list():
            prom = row.spec.get("prometheus")
            if prom and not (row.summary or {}).get("final"):
                _start_puller(row.id, prom)

    def _shutdown() -> None:
        stop.set()
        for p in list(pullers.values()):
            p.join(timeout=5)
        store.close()

    app.state.resume_pullers = _resume_pullers
    app.state.shutdown = _shutdown
    _register_schema(app, IngestRequest)
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
    app = create_app(ServiceSettings(store_url="sqlite:///:memory:", insecure=True))
    return app.openapi()
