"""Flagger webhook endpoints.

Flagger (``pkg/controller/webhook.go``) POSTs ``{name, namespace, phase, checksum, metadata}`` to each
hook and treats a status **above 202** (or a transport error or timeout) as a failed call. What a
failed call does depends on the hook (``pkg/controller/scheduler.go``, ``scheduler_hooks.go``):

=========================  ======================================================================
hook                        a failed call (here: 409)
=========================  ======================================================================
confirm-rollout             the canary waits (phase Waiting); nothing is counted
pre-rollout                 one failed check; Flagger rolls back when failed checks reach ``threshold``
rollout                     one failed check (same threshold)
confirm-traffic-increase    the traffic step waits
confirm-promotion           promotion waits (phase WaitingPromotion); rollout hooks keep running
rollback                    no rollback; a 2xx answer makes Flagger roll back at once
post-rollout, event         logged by Flagger only
=========================  ======================================================================

Decisions (all for the analysis of the request's revision, see ``_revisions.py``): ``confirm-promotion``
passes only on ``proceed``; ``rollout`` and ``confirm-traffic-increase`` fail on ``rollback`` and on a
final verdict other than ``proceed`` (a final ``extend``: the gate will not decide, so the rollout
hook's failed checks make Flagger give the canary up after ``threshold`` intervals, instead of holding
promotion forever); ``rollback`` passes only on ``rollback``. A request the service cannot answer
(no analysis, another revision, a service error) never passes a gate. The ``event`` and
``post-rollout`` hooks are recorded (``GET /v1/flagger/events``) and always answered 200.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .._exceptions import InputError
from ..store import NotFound
from ._inputs import Shallow
from ._revisions import IntegrationContext, RevisionRefused
from ._scope import OutOfScope

__all__ = ["FLAGGER_HOOKS", "FlaggerPayload", "flagger_allows", "flagger_router"]

log = logging.getLogger(__name__)

FLAGGER_HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "post-rollout", "rollback", "event")
#: hooks whose checksum is the revision under analysis (confirm-rollout carries the last applied one, the previous revision's on a new revision:
#: Flagger calls it before it syncs the canary's status to the new revision)
_BINDING = ("pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion", "rollback")


class FlaggerPayload(Shallow):
    """Flagger webhook body (``flaggerv1.CanaryWebhookPayload``)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=253)
    phase: str | None = None
    checksum: str | None = None
    metadata: dict[str, str] | None = None


def flagger_allows(hook: str, verdict: str, final: bool) -> bool:
    """Whether ``hook`` passes (2xx) for an analysis whose current verdict is ``verdict``.

    >>> flagger_allows("confirm-promotion", "extend", True), flagger_allows("rollout", "extend", True)
    (False, False)
    >>> flagger_allows("rollout", "pending", False), flagger_allows("rollback", "rollback", True)
    (True, True)
    """
    if hook in ("confirm-rollout", "pre-rollout", "post-rollout", "event"):
        return True
    if hook in ("rollout", "confirm-traffic-increase"):
        return verdict != "rollback" and (verdict == "proceed" or not final)
    if hook == "confirm-promotion":
        return verdict == "proceed"
    if hook == "rollback":
        return verdict == "rollback"
    raise ValueError(f"unknown Flagger hook {hook!r}")


def _silence(limit: str | None, v: dict[str, Any], now: float) -> str | None:
    """Why a pending analysis counts as silent, or None. Opt-in (``metadata.max_silence_seconds``): the
    newest tick's timestamp (or, before the first tick, the analysis' creation) is older than the limit
    by the service's clock. Meant for wall-clock telemetry (Prometheus pull mode, or pushes stamped
    with the time of measurement); it bounds the hold of an analysis whose telemetry stopped or never
    started: the rollout hook fails and Flagger rolls back at its threshold.

    >>> _silence("60", {"verdict": "pending", "last_timestamp": 1000.0, "created": "x"}, 1100.0)
    'no telemetry for 100 s (max_silence_seconds 60): the analysis is not advancing'
    >>> _silence("60", {"verdict": "pending", "last_timestamp": 1050.0, "created": "x"}, 1100.0) is None
    True
    """
    if limit is None or v["verdict"] != "pending":
        return None
    try:
        lim = float(limit)
    except ValueError:
        raise InputError(f"metadata.max_silence_seconds must be a number, got {limit[:40]!r}", column="metadata.max_silence_seconds") from None
    if not lim > 0:
        raise InputError("metadata.max_silence_seconds must be positive", column="metadata.max_silence_seconds")
    last = v.get("last_timestamp")
    if last is None:
        last = datetime.fromisoformat(v["created"]).timestamp()
    quiet = now - float(last)
    if quiet <= lim:
        return None
    return f"no telemetry for {quiet:.0f} s (max_silence_seconds {lim:g}): the analysis is not advancing"


def flagger_router(ctx: IntegrationContext, read: list[Any]) -> APIRouter:
    """Routes ``POST /v1/flagger/{hook}`` and ``GET /v1/flagger/events``."""
    router = APIRouter(tags=["integrations"])

    @router.post("/v1/flagger/{hook}")
    def flagger(hook: str, body: FlaggerPayload, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Flagger webhook: 200 passes the step, 409 fails it (see the module docstring for what Flagger
        does then). The analysis is ``<metadata.template>@<namespace>.<name>@<checksum>`` (created
        on first sight: one analysis per Canary and revision), else ``metadata.analysis``, else
        ``<namespace>.<name>``. On the ``rollback`` hook 200 means
        "roll back now". Flagger sends no custom headers, so a read token may come as
        ``metadata.token`` (or as a bearer header added by a proxy)."""
        meta = body.metadata or {}
        principal = ctx.principal(authorization, meta.get("token"))
        if principal is None:
            raise HTTPException(401, "missing or unknown token (bearer header or metadata.token)", {"WWW-Authenticate": "Bearer"})
        ctx.admit(principal)
        if hook not in FLAGGER_HOOKS:
            return JSONResponse({"detail": f"unknown hook {hook!r}; valid: {', '.join(FLAGGER_HOOKS)}"}, status_code=404)
        subject = f"{body.namespace}.{body.name}"
        if hook in ("event", "post-rollout"):
            # Flagger ignores the answer; record what it told us (the token is not stored)
            record = body.model_dump(mode="json")
            record["metadata"] = {k: v for k, v in meta.items() if k != "token"}
            ctx.tables.add_event(f"ev-{time.time_ns():020d}-{secrets.token_hex(4)}", "flagger", subject, body.checksum, {**record, "hook": hook}, ctx.now(), keep=ctx.max_events)
            log.info("flagger %s for %s (%s): %s", hook, subject, body.checksum, meta.get("eventMessage", body.phase))
            return JSONResponse({"allow": True, "hook": hook, "recorded": True}, status_code=200)
        template = meta.get("template")
        analysis = None if template else (meta.get("analysis") or subject)
        out: dict[str, Any] = {"hook": hook, "analysis": analysis, "revision": body.checksum}
        # a scoped token reaches only its analyses and templates (403: never a pass, and no rollback signalled)
        ctx.guard.check_target(principal, analysis=analysis, template=template, revision=body.checksum, subject=subject if template else None)
        try:
            res = ctx.resolve(analysis=analysis, template=template, revision=body.checksum, bind=hook in _BINDING, create=hook in _BINDING,
                              subject=subject if template else None)
        except (NotFound, InputError, RevisionRefused) as exc:
            # confirm-rollout waits, pre-rollout/rollout count failed checks, promotion waits, no rollback signalled
            return JSONResponse({**out, "allow": False, "verdict": None, "reason": str(exc)}, status_code=409)
        out["analysis"] = res.analysis
        if not res.exists:  # confirm-rollout of a template: the analysis is created at pre-rollout
            return JSONResponse({**out, "allow": True, "verdict": None, "final": False, "reason": "template found; analysis starts at pre-rollout"}, status_code=200)
        v = ctx.verdict(res.analysis)
        allow = flagger_allows(hook, v["verdict"], v["final"])
        out.update(allow=allow, verdict=v["verdict"], final=v["final"], tick=v["n_ticks"], fired_families=v["fired_families"])
        if not allow and v["final"] and v["verdict"] == "extend":
            out["reason"] = "final extend: the gate will not decide this revision; promotion is refused"
        elif not allow:  # every refusal says why (Flagger logs the body of a failed call)
            out["reason"] = f"{hook} not allowed on verdict {v['verdict']}{' (final)' if v['final'] else ''}"
        silent = _silence(meta.get("max_silence_seconds"), v, time.time())
        if allow and hook in ("rollout", "confirm-traffic-increase") and silent is not None:
            allow = False
            out.update(allow=False, reason=silent)
        return JSONResponse(out, status_code=200 if allow else 409)

    @router.get("/v1/flagger/events", dependencies=read)
    def flagger_events(request: Request, canary: Annotated[str | None, Query(max_length=507)] = None,
                       limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[dict[str, Any]]:
        """Events and post-rollout calls Flagger sent, oldest first (``canary`` = ``<namespace>.<name>``).
        Events are not tied to an analysis: listing them needs an unscoped token."""
        p = request.state.principal
        if p.scoped:
            raise OutOfScope(f"token {p.name!r} is scoped to {p.describe()}: Flagger's recorded events are not tied to an analysis; listing them needs an unscoped token")
        return ctx.tables.events("flagger", canary, limit)

    return router
