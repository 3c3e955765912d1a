"""Kayenta drop-in: the canary API that Argo Rollouts' ``kayenta`` metric provider calls, answered by
the anytime-valid gate.

Contract (what a client of Kayenta calls, and what we answer)
-------------------------------------------------------------
Argo Rollouts' provider (argoproj/argo-rollouts, ``metricproviders/kayenta/kayenta.go``) sends no
credentials and builds every URL from the template's ``address``::

    GET  {address}/canaryConfig?application=A&configurationAccountName=S   -> [{id, name, ...}]
    POST {address}/canary/{configId}?application=A&metricsAccountName=M&...  {scopes, thresholds}
                                                                        -> {canaryExecutionId}
    GET  {address}/canary/{canaryExecutionId}     -> {complete, result.judgeResult.score.score, ...}

It maps ``int(score)`` to Successful (``>= pass``), Inconclusive (``>= marginal``) or Failed, with the
*template's* thresholds. Here ``address`` is ``http://host:port/kayenta/<key>``: the key is a token of
role ``kayenta`` in the tokens file (compared by hash like a bearer token; accepted nowhere else, and a
read or write token is refused there, since URLs are logged); an unknown or refused key gets 401 on
every route and the provider records a measurement error (``--insecure``: any key). One analysis
accepts at most ``MAX_EXECUTIONS`` executions (429 after that).

A canary config is an analysis template or an analysis (both listed by ``GET /canaryConfig``, ``id`` =
``name``). With a template, the execution judges ``<template>@<hash>`` for the
``rollouts-pod-template-hash=<hash>`` its experiment scope names, created on first sight
(:class:`~deploysignal.service._revisions.IntegrationContext`); an explicit analysis is bound to the
first hash named (another hash: 409). An execution is refused (409) when its analysis existed and was
already decided (proceed, rollback or a final extend) when the execution was requested: a verdict
answers only executions started before it was reached, so a hash reused by a later rollout (undo,
retry) never gets the earlier rollout's verdict. An execution records its analysis, revision and
baseline version when it is created and is answered only from that analysis.

Score: the gate as the one critical result (deviations from Kayenta's ``WeightedSumScorer`` below)
------------------------------------------------------------------------------------------------
=================  ==========  =======================  ================================
gate verdict       complete    score                    classification (Argo phase)
=================  ==========  =======================  ================================
pending, extend    false       (no ``result``)          (Running: Argo polls again)
proceed            true        100                      Pass (Successful for any pass <= 100)
rollback           true        0                        Fail (Failed: critical failure)
extend, final      true        marginal if < pass,      Marginal (Inconclusive) or
                               else 0                   Fail (Failed)
=================  ==========  =======================  ================================

A rollback's gate result is ``High`` or ``Low`` and scores 0, as Kayenta's ``criticalFailures`` rule
would. Two deliberate deviations, both towards not promoting: a final extend's gate result is
``Nodata`` but scores ``marginal`` (Kayenta would score a non-``Pass`` critical result 0, i.e. Failed;
here the rollout pauses as Inconclusive, "undecided" not being evidence of harm), and Kayenta's
``tooManyNodata`` rule (0 when at least half the results are ``Nodata``) is not applied: the per-signal
entries of ``judgeResult.results`` are diagnostics (not critical, in no group, no weight), and a
proceed already accounts for missing data. Thresholds must be whole numbers 1-100 (a ``pass`` of 0
would make Argo call score 0 Successful, a ``marginal`` of 0 would make it Inconclusive, a fraction
could be truncated by a client); other requests are rejected (422, a measurement error), so a
rollback is always Failed.
Guarantee: ``complete`` with ``score >= pass`` happens only when the gate's verdict is ``proceed``; the
statistical guarantee is the gate's (see :class:`deploysignal.gate.Gate`), not the score's.

References
----------
spinnaker/kayenta ``CanaryController.java``, ``CanaryConfigController.java``,
``CanaryExecutionStatusResponse.java``, ``results/*.java``, ``WeightedSumScorer.scala``,
``ThresholdScoreClassifier.scala`` (commit a69573be9d8fededacf80817e4151a2c8df41276).
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._exceptions import InputError
from ._inputs import Shallow
from ._revisions import REVISION_PATTERN, IntegrationContext, RevisionRefused
from ._scope import Principal
from ._settings import ServiceSettings

__all__ = ["KEY_IN_PATH", "KayentaStart", "RedactKayentaKey", "execution_status", "is_complete", "kayenta_router", "scope_revision"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JUDGE = "deploysignal-anytime-valid"
GATE_METRIC = "deploysignal-gate"
#: executions one analysis may have (Argo starts one per measurement and one more after each error;
#: the cap bounds what a leaked key can write)
MAX_EXECUTIONS = 1000
#: the path segment that carries the key (redacted from access logs by :class:`RedactKayentaKey`)
KEY_IN_PATH = re.compile(r"(?<!/v1)(/kayenta/)[^/?\s]+")


class _Model(Shallow):  # free-form fields allowed: nesting bounded (service/_inputs.py)
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class KayentaThresholds(BaseModel):
    """Kayenta's ``CanaryClassifierThresholdsConfig``: whole numbers 1-100, both required (Argo's CRD
    declares them int64). With ``pass`` 0 Argo's provider counts every score, 0 included, as
    Successful; with ``marginal`` 0 a rollback (score 0) would be Inconclusive instead of Failed; a
    fraction such as 0.5 would let a client that truncates to an integer read a rollback's 0 as a pass.
    ``95.0`` is read as 95 (a client may send doubles); ``95.5`` is rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    pass_: int = Field(alias="pass", ge=1, le=100)
    marginal: int = Field(ge=1, le=100)

    @field_validator("pass_", "marginal", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):  # no "95", no true
            raise ValueError("must be a whole number from 1 to 100")
        return v


class ScopeDetail(_Model):
    """One side of a ``CanaryScopePair`` (recorded with the execution; the telemetry comes from the
    analysis' own source, not from these scope strings)."""

    scope: str | None = None
    location: str | None = None
    step: int | None = None
    start: str | int | float | None = None  # an ISO instant (Argo, Kayenta) or epoch numbers (a client's Instant as a timestamp)
    end: str | int | float | None = None


class ScopePair(_Model):
    controlScope: ScopeDetail | None = None
    experimentScope: ScopeDetail | None = None


class CanaryExecutionRequest(_Model):
    """Kayenta's ``CanaryExecutionRequest``: ``scopes`` by name and ``thresholds`` (both required,
    as in Kayenta)."""

    scopes: dict[str, ScopePair]
    thresholds: KayentaThresholds
    siteLocal: dict[str, Any] | None = None


class KayentaStart(BaseModel):
    """Body of ``POST /v1/kayenta/canary`` (bearer-token form): the analysis (or template) to judge, the
    revision it judges and the thresholds (required: no default a client could silently rely on)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    analysisId: str = Field(pattern=ID_PATTERN, description="An analysis id, or a template id (then `revision` is required).")
    revision: str | None = Field(None, pattern=REVISION_PATTERN, description="The revision judged (e.g. the pod-template-hash).")
    thresholds: KayentaThresholds


#: Argo's label for a ReplicaSet's pod template: the revision an experiment scope names
HASH_IN_SCOPE = re.compile(r"rollouts-pod-template-hash\s*=\s*([^\s,;)]+)")


def scope_revision(scopes: dict[str, ScopePair]) -> str | None:
    """The revision the experiment scopes name (``rollouts-pod-template-hash=<hash>``), or None.

    >>> scope_revision({"default": ScopePair.model_validate({"experimentScope": {"scope": "app=a,rollouts-pod-template-hash=7f9c"}})})
    '7f9c'

    Raises
    ------
    InputError
        Two scopes name different revisions (one execution judges one revision).
    """
    found = sorted({m.group(1) for pair in scopes.values() if pair.experimentScope is not None and pair.experimentScope.scope
                    for m in [HASH_IN_SCOPE.search(pair.experimentScope.scope)] if m is not None})
    if len(found) > 1:
        raise InputError(f"the experiment scopes name {len(found)} revisions ({', '.join(found)[:200]}): one execution judges one revision",
                         column="scopes.experimentScope.scope")
    return found[0] if found else None


def is_complete(verdict: str, final: bool) -> bool:
    """Whether a verdict ends an execution (Kayenta's ``complete``): proceed, rollback or any final one.

    >>> is_complete("extend", False), is_complete("extend", True), is_complete("proceed", True)
    (False, True, True)
    """
    return verdict in ("proceed", "rollback") or final


# ---------------------------------------------------------------------- the mapping (pure)
def execution_status(ex: str, aid: str, request: dict[str, Any], created: str, engine: Any, baseline_version: str) -> dict[str, Any]:
    """Kayenta ``CanaryExecutionStatusResponse`` for execution ``ex`` judging analysis ``aid``.

    ``engine`` is the analysis' :class:`~deploysignal.service.AnalysisEngine` (its last decision and
    per-signal classification). ``complete`` once the verdict is ``proceed``, ``rollback`` or final;
    the score is 100 only for ``proceed`` (table in the module docstring). No I/O, no clock.
    """
    last = engine.last
    verdict = "pending" if last is None else last.verdict
    final = last is not None and last.final
    fired = [] if last is None else list(last.fired_families)
    complete = is_complete(verdict, final)
    th = request["thresholds"]
    signals = engine.signal_classification()
    result = None
    if complete:
        if verdict == "proceed":
            score, cls, gate_cls = 100.0, "Pass", "Pass"
            why = "deploysignal gate proceeded"
        elif verdict == "rollback":
            drivers_down = any(m["classification"] == "Low" for m in signals) and not any(m["classification"] == "High" for m in signals)
            score, cls, gate_cls = 0.0, "Fail", "Low" if drivers_down else "High"
            why = f"Canary Failed: deploysignal gate rolled back (families {', '.join(fired) or 'B rules'})"
        elif th["marginal"] < th["pass"]:
            score, cls, gate_cls = float(th["marginal"]), "Marginal", "Nodata"
            why = ("deploysignal gate extended after its last extension (evidence suggestive or too little valid data): "
                   "no decision; score = the marginal threshold, so the rollout neither promotes nor rolls back by itself")
        else:
            score, cls, gate_cls = 0.0, "Fail", "Nodata"
            why = "Canary Failed: deploysignal gate gave no decision after its last extension and the thresholds leave no Marginal score (marginal >= pass)"
        gate_entry = {
            "name": GATE_METRIC, "id": GATE_METRIC, "tags": {}, "classification": gate_cls, "classificationReason": why,
            "groups": [GATE_METRIC], "experimentMetadata": _stats(engine.n_ticks), "controlMetadata": _stats(engine.n_ticks),
            "resultMetadata": {"verdict": verdict, "final": final, "tick": engine.n_ticks, "firedFamilies": fired},
            "critical": True, "muted": False,
        }
        per_signal = [
            {"name": m["name"], "id": m["name"], "tags": {}, "classification": m["classification"], "groups": [],
             "experimentMetadata": _stats(m["observations"]), "controlMetadata": _stats(m["observations"]),
             "resultMetadata": {"observations": m["observations"]},
             "critical": False, "muted": False}
            for m in signals
        ]
        result = {
            "judgeResult": {
                "judgeName": JUDGE,
                "results": [gate_entry, *per_signal],
                "groupScores": [{"name": GATE_METRIC, "score": score, "classification": cls, "classificationReason": why}],
                "score": {"score": score, "classification": cls, "classificationReason": why},
            },
        }
    status = "succeeded" if complete else "running"
    started, iso = _millis(created), _instant(created)
    out: dict[str, Any] = {
        "pipelineId": ex,
        "application": request.get("application"),
        "parentPipelineExecutionId": request.get("parentPipelineExecutionId"),
        "canaryConfigId": aid,
        "stageStatus": {"judge": status},
        "complete": complete,
        "status": status,
        "exception": None,
        "result": result,
        "canaryExecutionRequest": request.get("executionRequest"),
        "buildTimeMillis": started,
        "buildTimeIso": iso,
        "startTimeMillis": started,
        "startTimeIso": iso,
        "metricsAccountName": request.get("metricsAccountName"),
        "storageAccountName": request.get("storageAccountName"),
        "configurationAccountName": request.get("configurationAccountName"),
        "deploysignal": {"analysisId": aid, "revision": request.get("revision"), "baselineVersion": baseline_version, "verdict": verdict, "final": final,
                         "tick": engine.n_ticks, "firedFamilies": fired},
    }
    return out


def _stats(count: int) -> dict[str, Any]:
    """``{"stats": {"count": n}}``: the ticks that carried a value (the whole analysis' ticks for the gate
    entry). Spinnaker's canary stage reads ``controlMetadata.stats.count`` of every result (a warning
    below 50); a tick pairs the canary with its control (two-sample) or the compiled baseline, so the
    same count is given for both sides."""
    return {"stats": {"count": int(count)}}


def _millis(iso: str) -> int | None:
    try:
        return int(_dt.datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def _instant(iso: str) -> str:
    """``Instant.toString()`` form (``2026-12-07T03:00:00.123Z``), as Kayenta writes its times."""
    try:
        t = _dt.datetime.fromisoformat(iso).astimezone(_dt.timezone.utc)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------------- access-log redaction
class RedactKayentaKey(logging.Filter):
    """Replace the key in ``/kayenta/<key>/...`` with ``***`` in uvicorn's access log lines (the key
    is a token; Argo's provider can carry it only in the URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(KEY_IN_PATH.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


# ---------------------------------------------------------------------- routes
def kayenta_router(ctx: IntegrationContext, manager: Any, settings: ServiceSettings, read: Sequence[Any], write: Sequence[Any]) -> APIRouter:
    """Routes of the Kayenta drop-in.

    ``/kayenta/{key}/canaryConfig``, ``/kayenta/{key}/canary/{id}`` (POST start, GET status) for clients
    that send no headers (Argo Rollouts' provider), authenticated by the token in the path; and the
    bearer-token form ``/v1/kayenta/canary`` (POST ``{"analysisId", "revision", "thresholds"}``) and
    ``/v1/kayenta/canary/{id}`` (GET) with the ``read`` / ``write`` dependencies of the app.

    A config id names a template (then the revision is required and the execution judges
    ``<template>@<revision>``, created on first sight) or an analysis (bound to the first revision
    named; another revision gets 409). An execution is refused (409) when its analysis existed and had
    already reached a final verdict when the execution was requested: that verdict was reached
    without this rollout's evidence.
    """
    router = APIRouter(tags=["kayenta"])
    store, now = ctx.store, ctx.now

    def path_key(request: Request, key: Annotated[str, Path(description="A token of role kayenta (tokens file); Argo's `address` ends with /kayenta/<key>.")]) -> None:
        if settings.insecure:
            request.state.principal = Principal("insecure", "write")
            return
        p = settings.principal_of(key)
        if p is None:
            raise HTTPException(401, "unknown key in the Kayenta address (/kayenta/<token>/...)")
        if p.role != "kayenta":  # a URL ends up in proxy and browser logs: only a token that can do nothing else
            raise HTTPException(401, f"a {p.role} token may not be the key of a Kayenta address (URLs are logged): use a token of role kayenta")
        request.state.principal = p
        ctx.admit(p)

    keyed = [Depends(path_key)]

    def start(p: Principal, cid: str, thresholds: KayentaThresholds, revision: str | None, extra: dict[str, Any]) -> dict[str, str]:
        names = {"analysis": None, "template": cid} if ctx.tables.get_template(cid) is not None else {"analysis": cid, "template": None}
        ctx.guard.check_target(p, **names, revision=revision)  # a scoped key judges only analyses and templates of its scope (403)
        try:
            # before binding anything: an analysis that exists and is decided does not answer a new execution
            pre = ctx.resolve(**names, revision=revision, bind=False, create=False)  # NotFound (404): the provider records an error
            if pre.exists:
                v = ctx.verdict(pre.analysis)
                if is_complete(v["verdict"], v["final"]):
                    raise HTTPException(409, f"analysis {pre.analysis!r} had already reached its verdict {v['verdict']!r}{' (final)' if v['final'] else ''}"
                                             f" at tick {v['n_ticks']} before this execution was requested: that verdict does not answer a new"
                                             " rollout; to judge this revision again, use a new analysis (docs/integrations.md, Kayenta)")
            res = ctx.resolve(**names, revision=revision, bind=True, create=True)
        except RevisionRefused as exc:
            raise HTTPException(409, str(exc)) from None
        v = ctx.verdict(res.analysis)
        ex = "ex-" + secrets.token_hex(8)
        req = {"thresholds": {"pass": thresholds.pass_, "marginal": thresholds.marginal}, "baseline_version": store.get(res.analysis).spec["config_version"],
               "revision": res.revision, "template": res.template, "tick_at_start": v["n_ticks"], **extra}
        if not store.create_execution(ex, res.analysis, req, now(), limit=MAX_EXECUTIONS):
            raise HTTPException(429, f"analysis {res.analysis!r} already has {MAX_EXECUTIONS} executions (the limit per analysis): judge a new revision with a new analysis")
        return {"canaryExecutionId": ex}

    def status(p: Principal, ex: str) -> dict[str, Any]:
        aid, req, created = store.get_execution(ex)
        ctx.guard.check_analysis(p, aid)
        version = req.get("baseline_version", store.get(aid).spec["config_version"])
        # with the analysis' lock held: committed state only (review finding 1)
        return manager.read(aid, lambda eng: execution_status(ex, aid, req, created, eng, version))

    @router.get("/kayenta/{key}/canaryConfig", dependencies=keyed)
    def list_configs(request: Request, application: Annotated[list[str] | None, Query()] = None, configurationAccountName: str | None = None) -> list[dict[str, Any]]:
        """Kayenta ``GET /canaryConfig``: one entry per template, then one per analysis, ``id`` = ``name``
        = the template or analysis id (``application`` and the account name are accepted and ignored:
        analyses carry neither); a scoped key lists those of its scope."""
        p: Principal = request.state.principal
        out = []
        for tid, tpl, updated in ctx.tables.list_templates():
            if not p.may(tid, tpl.get("project")):
                continue
            out.append({"id": tid, "name": tid, "updatedTimestamp": _millis(updated), "updatedTimestampIso": _instant(updated), "applications": []})
        for r in ctx.guard.visible_analyses(p, store.list()):
            ms = _millis(r.created)
            out.append({"id": r.id, "name": r.id, "updatedTimestamp": ms, "updatedTimestampIso": _instant(r.created), "applications": []})
        return out

    # one path template for both methods (OpenAPI forbids two templates that differ only in names)
    @router.post("/kayenta/{key}/canary/{id}", dependencies=keyed)
    def start_keyed(
        id: Annotated[str, Path(pattern=ID_PATTERN, description="The canary config id: the analysis id.")],  # noqa: A002
        body: CanaryExecutionRequest,
        request: Request,
        application: str | None = None,
        parentPipelineExecutionId: str | None = None,
        metricsAccountName: str | None = None,
        configurationAccountName: str | None = None,
        storageAccountName: str | None = None,
    ) -> dict[str, str]:
        """Kayenta ``POST /canary/{canaryConfigId}``: start an execution judging template or analysis
        ``id`` for the revision its experiment scope names (``rollouts-pod-template-hash=<hash>``)."""
        extra = {"application": application, "parentPipelineExecutionId": parentPipelineExecutionId,
                 "metricsAccountName": metricsAccountName, "configurationAccountName": configurationAccountName,
                 "storageAccountName": storageAccountName, "executionRequest": body.model_dump(mode="json", by_alias=True)}
        return start(request.state.principal, id, body.thresholds, scope_revision(body.scopes), extra)

    @router.get("/kayenta/{key}/canary/{id}", dependencies=keyed)
    def status_keyed(id: Annotated[str, Path(description="The canaryExecutionId.")], request: Request, storageAccountName: str | None = None) -> dict[str, Any]:  # noqa: A002
        """Kayenta ``GET /canary/{canaryExecutionId}`` (``CanaryExecutionStatusResponse``)."""
        return status(request.state.principal, id)

    @router.get("/kayenta/{key}/credentials", dependencies=keyed)
    def credentials() -> list[dict[str, Any]]:
        """Kayenta ``GET /credentials`` (Spinnaker's canary stage looks up its metrics account's type):
        one account that stands for the service itself."""
        return [{"name": "deploysignal", "type": "deploysignal", "supportedTypes": ["METRICS_STORE", "OBJECT_STORE", "CONFIGURATION_STORE"]}]

    @router.post("/v1/kayenta/canary", dependencies=list(write))
    def start_bearer(body: KayentaStart, request: Request) -> dict[str, str]:
        """Start an execution judging ``analysisId`` (an analysis, or a template with ``revision``):
        bearer-token form of ``POST /canary/{id}``."""
        return start(request.state.principal, body.analysisId, body.thresholds, body.revision, {})

    @router.get("/v1/kayenta/canary/{executionId}", dependencies=list(read))
    def status_bearer(executionId: str, request: Request) -> dict[str, Any]:
        """Poll an execution (bearer-token form of ``GET /canary/{id}``)."""
        return status(request.state.principal, executionId)

    return router
