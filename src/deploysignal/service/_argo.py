"""Argo Rollouts ``web`` metric provider endpoints.

Argo Rollouts' web provider (``metricproviders/webmetric/webmetric.go``) sends ``GET url`` with the
metric's headers; a status outside 200-299, a timeout or an unreadable body is an ``Error``
measurement, otherwise ``jsonPath`` picks ``result`` and the metric's ``successCondition`` /
``failureCondition`` classify it (``utils/evaluate/evaluate.go``; neither matching = ``Inconclusive``).

Both endpoints answer ``{"verdict", "final", "tick", "analysis", "revision", ...}``. With the shipped
AnalysisTemplate (``docs/integrations.md``: ``successCondition: result.verdict == "proceed"``,
``failureCondition: result.verdict == "rollback"``, ``consecutiveSuccessLimit: 1``) only a ``proceed``
answer can make the metric Successful; ``pending`` and ``extend`` (final or not) are Inconclusive and,
once ``count`` is reached without a success, Argo ends the metric Inconclusive (the rollout pauses).
A request for a revision the analysis does not judge, or (explicit analysis, once bound) a request
naming no revision, gets 409, which Argo records as an Error. The template endpoint needs the Rollout
(``subject=<namespace>.<name>``, passed by the Rollout's step args from ``metadata.namespace`` /
``metadata.name``): each Rollout gets its own analysis of each revision, since the same pod spec has
the same pod-template-hash in every namespace and cluster.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from ._revisions import REVISION_PATTERN, SUBJECT_PATTERN, TEMPLATE_PATTERN, IntegrationContext, Resolution, RevisionRefused, template_analysis_id

__all__ = ["argo_router"]


def _answer(ctx: IntegrationContext, res: Resolution) -> dict[str, Any]:
    body = ctx.verdict(res.analysis)
    reasons = [r["fire_reason"] for r in body["evidence"] if r.get("fire")]
    return {
        "verdict": body["verdict"],
        "final": body["final"],
        "tick": body["n_ticks"],
        "analysis": res.analysis,
        "revision": res.revision,
        "fired_families": body["fired_families"],
        "reason": "; ".join(reasons),
        "baseline_version": body["baseline_version"],
    }


def argo_router(ctx: IntegrationContext, read: list[Any]) -> APIRouter:
    """Routes ``GET /v1/argo/analyses/{aid}`` and ``GET /v1/argo/templates/{tid}/revisions/{revision}``."""
    router = APIRouter(tags=["integrations"], dependencies=read)

    @router.get("/v1/argo/analyses/{aid}")
    def argo_analysis(aid: str, revision: Annotated[str | None, Query(pattern=REVISION_PATTERN)] = None) -> Any:
        """Verdict of analysis ``aid``. With ``revision`` (the pod-template-hash the Rollout passes with
        ``podTemplateHashValue: Latest``), the first revision seen binds the analysis and any other
        revision gets 409; once bound, a request without ``revision`` gets 409 too."""
        try:
            return _answer(ctx, ctx.resolve(analysis=aid, template=None, revision=revision, bind=True, create=False))
        except RevisionRefused as exc:
            return JSONResponse({"detail": str(exc), "verdict": "wrong-revision", "analysis": aid, "revision": revision}, status_code=409)

    @router.get("/v1/argo/templates/{tid}/revisions/{revision}")
    def argo_template(tid: Annotated[str, Path(pattern=TEMPLATE_PATTERN)], revision: Annotated[str, Path(pattern=REVISION_PATTERN)],
                      subject: Annotated[str, Query(pattern=SUBJECT_PATTERN)], request: Request) -> Any:
        """Verdict of analysis ``<tid>@<subject>@<revision>`` (``subject`` = the Rollout's
        ``<namespace>.<name>``, required), created from template ``tid`` on first sight (a read token
        may do this: it instantiates a template a writer stored, nothing else). A scoped token must
        cover the template and the analysis (403 otherwise: Argo records an Error)."""
        ctx.guard.check_target(request.state.principal, template=tid, revision=revision, subject=subject)
        try:
            return _answer(ctx, ctx.resolve(analysis=None, template=tid, revision=revision, bind=True, create=True, subject=subject))
        except RevisionRefused as exc:
            return JSONResponse({"detail": str(exc), "verdict": "wrong-revision", "analysis": template_analysis_id(tid, revision, subject), "revision": revision},
                                status_code=409)

    return router
