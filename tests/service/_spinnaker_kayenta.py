"""A port of Spinnaker's Kayenta canary stage tasks (the calls Orca makes and how it reads the answers),
used to drive a live deploysignal service.

Ported from spinnaker/spinnaker, ``orca/orca-kayenta/src/main/kotlin/com/netflix/spinnaker/orca/kayenta/``:
``KayentaService.kt`` (commit 098630819f7206ca850e588d85cc7429422e6b65: ``POST canary/{canaryConfigId}``
with ``application``, ``parentPipelineExecutionId`` and the account names; ``GET
canary/{canaryExecutionId}?storageAccountName=``; ``GET credentials``; the ``CanaryResults`` data
classes, whose non-null Kotlin fields make Jackson fail on a missing value),
``tasks/RunKayentaCanaryTask.kt`` (b61b495d469bc48e97d27524881fa54cbf3ed21a) and
``tasks/MonitorKayentaCanaryTask.kt`` (1c0cda33eab783688796cc079d4b81554a2e26d7: SUCCEEDED execution ->
TERMINAL when ``score <= marginal``, else SUCCEEDED; a halted execution -> TERMINAL; otherwise RUNNING;
the warnings read ``controlMetadata.stats.count`` of every result). An exception in a task (an HTTP
error, a body the data classes cannot hold) is reported as ``ERROR``: Orca retries or fails the stage,
it never succeeds it. The config lookup by name (``ResolveKayentaConfigIdTask``) is not ported: it
needs ``applications`` on the config, which analyses do not carry; give the stage ``canaryConfigId``.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["monitor_task", "run_task"]

HALT = {"TERMINAL", "CANCELED", "STOPPED", "FAILED_CONTINUE", "SKIPPED"}
STATUSES = {"NOT_STARTED", "RUNNING", "PAUSED", "SUSPENDED", "SUCCEEDED", "FAILED_CONTINUE", "TERMINAL", "CANCELED", "REDIRECT", "STOPPED", "BUFFERED", "SKIPPED"}


def run_task(client: httpx.Client, base: str, ctx: dict[str, Any], application: str, pipeline_id: str) -> str:
    """``RunKayentaCanaryTask.execute``: the canary execution id (raises on any failure)."""
    if not ctx.get("canaryConfigId"):
        raise ValueError("Invalid canaryConfigId. Was the correct configName or configId used?")
    params = {"application": application, "parentPipelineExecutionId": pipeline_id}
    params.update({k: ctx[k] for k in ("metricsAccountName", "configurationAccountName", "storageAccountName") if ctx.get(k) is not None})
    body = {"scopes": ctx["scopes"], "thresholds": ctx["scoreThresholds"], "siteLocal": ctx.get("siteLocal", {})}
    r = client.post(f"{base}/canary/{ctx['canaryConfigId']}", params=params, json=body)
    r.raise_for_status()
    return str(r.json()["canaryExecutionId"])


def _required(obj: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(obj, dict) or obj.get(k) is None:
            raise ValueError(f"MissingKotlinParameterException: {k}")
        obj = obj[k]
    return obj


def monitor_task(client: httpx.Client, base: str, execution_id: str, ctx: dict[str, Any]) -> str:
    """``MonitorKayentaCanaryTask.execute``: SUCCEEDED, TERMINAL, RUNNING, or ERROR for an exception."""
    try:
        params = {} if ctx.get("storageAccountName") is None else {"storageAccountName": ctx["storageAccountName"]}
        r = client.get(f"{base}/canary/{execution_id}", params=params)
        r.raise_for_status()
        res = r.json()
        for k in ("complete", "status", "application"):  # non-null fields of CanaryResults
            _required(res, k)
        status = str(res["status"]).upper()
        if status not in STATUSES:
            raise ValueError(f"No enum constant ExecutionStatus.{status}")
        if status == "SUCCEEDED":
            score = int(_required(res, "result", "judgeResult", "score", "score"))  # Int field: Jackson truncates
            if ctx.get("metricsAccountName") is not None:
                c = client.get(f"{base}/credentials")
                c.raise_for_status()
                _ = [(_required(x, "name"), _required(x, "type")) for x in c.json()]
            _ = any(int(_required(e, "controlMetadata", "stats", "count")) < 50 for e in _required(res, "result", "judgeResult", "results"))
            return "TERMINAL" if score <= int(ctx["scoreThresholds"]["marginal"]) else "SUCCEEDED"
        if status in HALT:
            return "TERMINAL"
        return "RUNNING"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return "ERROR"
