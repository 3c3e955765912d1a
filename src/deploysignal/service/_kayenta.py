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
the tokens file (read or write role, compared by hash like a bearer token); without it, or with an
unknown one, every route answers 401 and the provider records a measurement error (``--insecure``: any
key). A canary config is a
deploysignal analysis: ``id`` and ``name`` are the analysis id, so ``canaryConfigName`` in the template
names the analysis (one per rollout revision, e.g. ``prod.api.{{args.canary-hash}}``; a new revision
looks up a new name and finds nothing until its analysis exists: an error, never another revision's
verdict). An execution records the analysis id (and, for the record, its baseline version) when it is
created and is answered only from that analysis.

Score, as Kayenta's ``WeightedSumScorer`` with the gate as the one critical metric
----------------------------------------------------------------------------------
=================  ==========  =======================  ================================
gate verdict       complete    score                    classification (Argo phase)
=================  ==========  =======================  ================================
pending, extend    false       (no ``result``)          (Running: Argo polls again)
proceed            true        100                      Pass (Successful for any pass <= 100)
rollback           true        0                        Fail (Failed: critical failure)
extend, final      true        marginal if < pass,      Marginal (Inconclusive) or
                               else 0                   Fail (Failed)
=================  ==========  =======================  ================================

Kayenta's scorer gives 0 whenever a critical metric is not ``Pass``; the gate's verdict is that metric,
so no rollback can carry a passing score. The per-signal entries of ``judgeResult.results`` are
diagnostics (not critical, in no group, so the scorer gives them no weight). A ``pass`` threshold of 0
would make Argo call score 0 Successful, a ``marginal`` of 0 would make it Inconclusive; such requests
are rejected (422, a measurement error), so a rollback is always Failed.
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
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ._settings import ServiceSettings

__all__ = ["KEY_IN_PATH", "KayentaStart", "RedactKayentaKey", "execution_status", "kayenta_router"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JUDGE = "deploysignal-anytime-valid"
GATE_METRIC = "deploysignal-gate"
#: the path segment that carries the key (redacted from access logs by :class:`RedactKayentaKey`)
KEY_IN_PATH = re.compile(r"(/kayenta/)[^/?\s]+")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class KayentaThresholds(BaseModel):
    """Kayenta's ``CanaryClassifierThresholdsConfig`` (0-100), both above 0: with ``pass`` 0 Argo's
    provider counts every score, 0 included, as Successful; with ``marginal`` 0 a rollback (score 0)
    would be Inconclusive instead of Failed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    pass_: float = Field(alias="pass", gt=0, le=100, allow_inf_nan=False)
    marginal: float = Field(gt=0, le=100, allow_inf_nan=False)


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
    """Body of ``POST /v1/kayenta/canary`` (bearer-token form): the analysis to judge and thresholds."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    analysisId: str = Field(pattern=ID_PATTERN)
    thresholds: KayentaThresholds = Field(default_factory=lambda: KayentaThresholds.model_validate({"pass": 75, "marginal": 50}))


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
    complete = verdict in ("proceed", "rollback") or final
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
        "deploysignal": {"analysisId": aid, "baselineVersion": baseline_version, "verdict": verdict, "final": final,
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
def kayenta_router(store: Any, manager: Any, settings: ServiceSettings, now: Callable[[], str],
                   read: Sequence[Any], write: Sequence[Any]) -> APIRouter:
    """Routes of the Kayenta drop-in.

    ``/kayenta/{key}/canaryConfig``, ``/kayenta/{key}/canary/{id}`` (POST start, GET status) for clients
    that send no headers (Argo Rollouts' provider), authenticated by the token in the path; and the
    bearer-token form ``/v1/kayenta/canary`` (POST ``{"analysisId", "thresholds"}``) and
    ``/v1/kayenta/canary/{id}`` (GET) with the ``read`` / ``write`` dependencies of the app.
    """
    router = APIRouter(tags=["kayenta"])

    def path_key(key: Annotated[str, Path(description="A token of the tokens file (read or write role); Argo's `address` ends with /kayenta/<key>.")]) -> None:
        if not settings.insecure and settings.role_of(key) is None:
            raise HTTPException(401, "unknown key in the Kayenta address (/kayenta/<token>/...)")

    keyed = [Depends(path_key)]

    def start(aid: str, thresholds: KayentaThresholds, extra: dict[str, Any]) -> dict[str, str]:
        row = store.get(aid)  # 404 for an unknown analysis: the provider records an error
        ex = "ex-" + secrets.token_hex(8)
        req = {"thresholds": {"pass": thresholds.pass_, "marginal": thresholds.marginal}, "baseline_version": row.spec["config_version"], **extra}
        store.create_execution(ex, aid, req, now())
        return {"canaryExecutionId": ex}

    def status(ex: str) -> dict[str, Any]:
        aid, req, created = store.get_execution(ex)
        return execution_status(ex, aid, req, created, manager.engine(aid), store.get(aid).spec["config_version"])

    @router.get("/kayenta/{key}/canaryConfig", dependencies=keyed)
    def list_configs(application: Annotated[list[str] | None, Query()] = None, configurationAccountName: str | None = None) -> list[dict[str, Any]]:
        """Kayenta ``GET /canaryConfig``: one entry per analysis, ``id`` = ``name`` = the analysis id
        (``application`` and the account name are accepted and ignored: analyses carry neither)."""
        out = []
        for r in store.list():
            ms = _millis(r.created)
            out.append({"id": r.id, "name": r.id, "updatedTimestamp": ms, "updatedTimestampIso": _instant(r.created), "applications": []})
        return out

    # one path template for both methods (OpenAPI forbids two templates that differ only in names)
    @router.post("/kayenta/{key}/canary/{id}", dependencies=keyed)
    def start_keyed(
        id: Annotated[str, Path(pattern=ID_PATTERN, description="The canary config id: the analysis id.")],  # noqa: A002
        body: CanaryExecutionRequest,
        application: str | None = None,
        parentPipelineExecutionId: str | None = None,
        metricsAccountName: str | None = None,
        configurationAccountName: str | None = None,
        storageAccountName: str | None = None,
    ) -> dict[str, str]:
        """Kayenta ``POST /canary/{canaryConfigId}``: start an execution judging analysis ``id``."""
        extra = {"application": application, "parentPipelineExecutionId": parentPipelineExecutionId,
                 "metricsAccountName": metricsAccountName, "configurationAccountName": configurationAccountName,
                 "storageAccountName": storageAccountName, "executionRequest": body.model_dump(mode="json", by_alias=True)}
        return start(id, body.thresholds, extra)

    @router.get("/kayenta/{key}/canary/{id}", dependencies=keyed)
    def status_keyed(id: Annotated[str, Path(description="The canaryExecutionId.")], storageAccountName: str | None = None) -> dict[str, Any]:  # noqa: A002
        """Kayenta ``GET /canary/{canaryExecutionId}`` (``CanaryExecutionStatusResponse``)."""
        return status(id)

    @router.get("/kayenta/{key}/credentials", dependencies=keyed)
    def credentials() -> list[dict[str, Any]]:
        """Kayenta ``GET /credentials`` (Spinnaker's canary stage looks up its metrics account's type):
        one account that stands for the service itself."""
        return [{"name": "deploysignal", "type": "deploysignal", "supportedTypes": ["METRICS_STORE", "OBJECT_STORE", "CONFIGURATION_STORE"]}]

    @router.post("/v1/kayenta/canary", dependencies=list(write))
    def start_bearer(body: KayentaStart) -> dict[str, str]:
        """Start an execution judging ``analysisId`` (bearer-token form of ``POST /canary/{id}``)."""
        return start(body.analysisId, body.thresholds, {})

    @router.get("/v1/kayenta/canary/{executionId}", dependencies=list(read))
    def status_bearer(executionId: str) -> dict[str, Any]:
        """Poll an execution (bearer-token form of ``GET /canary/{id}``)."""
        return status(executionId)

    return router
