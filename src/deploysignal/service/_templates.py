"""Analysis templates: what a new revision's analysis is created from, and the history of revisions.

``PUT /v1/templates/{tid}`` stores the body of ``POST /v1/analyses`` (without ``id``) with its config
resolved to a stored compiled-config reference; Argo (``/v1/argo/templates/{tid}/revisions/{rev}``) and
Flagger (``metadata.template``) then create ``<tid>@<revision>`` on first sight of each revision.
Replacing a template changes only analyses created afterwards. ``GET /v1/templates/{tid}`` lists every
revision's analysis with its current verdict, oldest first.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from .._exceptions import InputError
from ..store import NotFound
from ._revisions import TEMPLATE_PATTERN, IntegrationContext

__all__ = ["templates_router"]


def templates_router(ctx: IntegrationContext, read: list[Any], write: list[Any], stored: Callable[[Any, str, Any], dict[str, Any]]) -> APIRouter:
    """Routes under ``/v1/templates``; ``stored(principal, tid, body)`` turns a create-analysis body into
    the stored form (a project-scoped token's project filled in; OutOfScope outside the token's scope)."""
    # the request model is the app's: imported here (the app imports this module); no postponed
    # annotations in this module, so FastAPI sees the class itself in put_template's signature
    from ._app import CreateAnalysis

    router = APIRouter(tags=["templates"])

    @router.put("/v1/templates/{tid}", dependencies=write)
    def put_template(tid: Annotated[str, Path(pattern=TEMPLATE_PATTERN)], body: CreateAnalysis, request: Request) -> dict[str, Any]:
        """Create or replace a template (body as for ``POST /v1/analyses``; ``id`` is not allowed). A
        scoped token may replace only a template of its scope, and store one only in its scope."""
        if body.id is not None:
            raise InputError("a template has no analysis id: each revision's analysis is <template>@<revision>", column="id")
        ctx.guard.check_target(request.state.principal, template=tid, replace=True)
        tpl = stored(request.state.principal, tid, body)
        ctx.tables.put_template(tid, tpl, ctx.now())
        return {"id": tid, "template": tpl}

    @router.get("/v1/templates", dependencies=read)
    def list_templates(request: Request) -> list[dict[str, Any]]:
        """The templates the token may see."""
        p = request.state.principal
        return [{"id": tid, "template": body, "updated": created} for tid, body, created in ctx.tables.list_templates() if p.may(tid, body.get("project"))]

    @router.get("/v1/templates/{tid}", dependencies=read)
    def get_template(tid: str, request: Request) -> dict[str, Any]:
        """The template and every revision's analysis created from it (oldest first, with its verdict;
        those the token may see)."""
        p = request.state.principal
        ctx.guard.check_target(p, template=tid)
        got = ctx.tables.get_template(tid)
        if got is None:
            raise NotFound(f"no analysis template {tid!r}")
        history = []
        for b in ctx.tables.revisions_of(tid):
            if p.scoped and not p.may(b.analysis_id, ctx.guard.analysis_project(b.analysis_id)[1]):
                continue
            v = ctx.verdict(b.analysis_id)
            history.append({"analysis": b.analysis_id, "revision": b.revision, "created": b.created, "verdict": v["verdict"], "final": v["final"], "n_ticks": v["n_ticks"]})
        return {"id": tid, "template": got[0], "updated": got[1], "revisions": history}

    return router
