"""A Python port of Argo Rollouts' Kayenta metric provider, driven by the analysis controller ported in
:mod:`argo` (``AnalysisRun`` with this provider's ``Run`` / ``Resume`` / ``Terminate``).

Ported from argoproj/argo-rollouts at commit 9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d,
``metricproviders/kayenta/kayenta.go``:

- :meth:`ArgoKayentaProvider.run` (``Run``: config lookup by name, ``POST /canary/{id}`` with scopes and
  thresholds, ``canaryExecutionId`` into the metadata, phase Running), ``getCanaryConfigId``,
  ``getScopeRequest`` / ``getStartTime`` / ``getEndTime``;
- :meth:`ArgoKayentaProvider.resume` (``Resume``: ``GET /canary/{id}``, ``complete``,
  ``result.judgeResult.score.score``, ``int(score)`` compared with the template's thresholds by
  :func:`evaluate_result`); ``Terminate`` leaves the measurement as it is (:func:`argo._unchanged`);
- every error path ends in ``MarkMeasurementError`` (phase Error); ``NewHttpClient``: 15 s timeout, no
  headers.

The config list is decoded as Go decodes it into ``kayenta.canaryConfig`` (field types checked).
Known upstream quirks kept: the config lookup passes ``storageAccountName`` as
``configurationAccountName``; ``fmt.Sprintf("%v", nil)`` makes a missing execution id ``<nil>``.

Time: :func:`analysis` makes one ``reconcile`` per ``resumeDelay`` (15 s of the run's clock, which
dates the scopes) and calls the next step at once.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

import httpx

from .argo import ERROR, FAILED, INCONCLUSIVE, RUNNING, SUCCESSFUL, AnalysisRun, Measurement, Metric, completed

__all__ = ["ERROR", "FAILED", "INCONCLUSIVE", "RUNNING", "SUCCESSFUL", "ArgoKayentaProvider", "analysis", "evaluate_result", "measurements"]

RESUME_DELAY = _dt.timedelta(seconds=15)  # kayenta.go resumeDelay


def _error(m: Measurement, err: str) -> Measurement:
    """``metricutil.MarkMeasurementError``."""
    m.phase, m.message = ERROR, err
    return m


def _go_duration(s: str) -> _dt.timedelta:
    """``time.ParseDuration`` for the forms an AnalysisTemplate uses (``90s``, ``5m``, ``1h30m``)."""
    parts = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)", s or "")
    if not parts:
        raise ValueError(f"Invalid duration {s!r}")
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return _dt.timedelta(seconds=sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", s)))


def _rfc3339(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: ``kayenta.canaryConfig``'s fields (Go matches JSON keys case-insensitively) and the JSON types
#: ``encoding/json`` accepts for them (null leaves the zero value)
_CANARY_CONFIG = {"id": "string", "name": "string", "updatedtimestamp": "int", "updatedtimestampiso": "string", "applications": "[]string"}


def _decode_canary_config(s: Any) -> dict[str, Any]:
    """``json.Unmarshal`` into ``kayenta.canaryConfig``: an object whose known fields have their Go
    types (string; int, no fraction; []string), else the same error Go gives; unknown keys ignored."""
    if not isinstance(s, dict):
        raise ValueError("json: cannot unmarshal into Go value of type kayenta.canaryConfig")
    out: dict[str, Any] = {}
    for key, v in s.items():
        want = _CANARY_CONFIG.get(key.lower())
        if want is None or v is None:
            continue
        ok = {"string": isinstance(v, str), "int": isinstance(v, int) and not isinstance(v, bool),
              "[]string": isinstance(v, list) and all(isinstance(x, str) for x in v)}[want]
        if not ok:
            raise ValueError(f"json: cannot unmarshal {type(v).__name__} into Go struct field canaryConfig.{key} of type {want}")
        out[key.lower()] = v
    return out


def _nested(obj: Any, *path: str) -> tuple[Any, bool, str | None]:
    """``unstructured.NestedFieldNoCopy``: (value, found, error). A missing or null step is not found;
    a step that is not an object is an error."""
    cur = obj
    for i, k in enumerate(path):
        if cur is None:
            return None, False, None
        if not isinstance(cur, dict):
            return None, False, f"{'.'.join(path[:i])} accessor error: {cur!r} is of the type {type(cur).__name__}, expected map[string]interface{{}}"
        if k not in cur:
            return None, False, None
        cur = cur[k]
    return cur, True, None


class ArgoKayentaProvider:
    """``kayenta.Provider`` with ``NewHttpClient`` (timeout 15 s, no headers)."""

    def __init__(self, timeout: float = 15.0, transport: httpx.BaseTransport | None = None) -> None:
        self.client = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ArgoKayentaProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- getCanaryConfigId
    def _config_id(self, k: dict[str, Any]) -> str:
        url = f"{k['address']}/canaryConfig?application={k.get('application', '')}&configurationAccountName={k.get('storageAccountName', '')}"
        r = self.client.get(url)
        if r.status_code != 200:
            raise ValueError(f"Invalid Response: HTTP {r.status_code}")
        cc = r.json()
        if not isinstance(cc, list):
            raise ValueError("json: cannot unmarshal into Go value of type []kayenta.canaryConfig")
        configs = [_decode_canary_config(s) for s in cc]  # json.Unmarshal decodes the whole list first
        for low in configs:
            if low.get("name") == k.get("canaryConfigName"):
                return str(low.get("id") or "")
        raise ValueError("Canary config not found")

    @staticmethod
    def _object(send: Callable[[], httpx.Response]) -> tuple[dict[str, Any] | None, str]:
        """What Run's POST and Resume's GET share: a transport error or a status other than 200
        (``Invalid Response``) or a body that is not a JSON object is an error (its text)."""
        try:
            r = send()
        except httpx.HTTPError as exc:
            return None, str(exc) or type(exc).__name__
        if r.status_code != 200:
            return None, "Invalid Response"
        try:
            dat = r.json()
        except ValueError as exc:
            return None, str(exc)
        if not isinstance(dat, dict):
            return None, "json: cannot unmarshal into Go value of type map[string]interface {}"
        return dat, ""

    # -------------------------------------------------------------- Run
    def run(self, metric: Metric, run_started_at: _dt.datetime, now: _dt.datetime) -> Measurement:
        """``Run`` at time ``now`` of a run started at ``run_started_at`` (``run.Status.StartedAt``)."""
        m = Measurement("")
        k = metric.kayenta
        try:
            config_id = self._config_id(k)
        except (httpx.HTTPError, ValueError) as exc:
            return _error(m, str(exc) or type(exc).__name__)
        job_url = (f"{k['address']}/canary/{config_id}?application={k.get('application', '')}&metricsAccountName={k.get('metricsAccountName', '')}"
                   f"&configurationAccountName={k.get('configurationAccountName', '')}&storageAccountName={k.get('storageAccountName', '')}")
        scopes = {}
        for ks in k.get("scopes") or []:
            try:
                scopes[ks["name"]] = self._scope_request(ks, run_started_at, now, metric.interval, bool(k.get("lookback")))
            except ValueError as exc:
                return _error(m, str(exc))
        th = k.get("threshold") or {}  # Go: a missing `threshold` is the zero value, pass 0 / marginal 0
        body = {"scopes": scopes, "thresholds": {"pass": int(th.get("pass", 0)), "marginal": int(th.get("marginal", 0))}}
        dat, err = self._object(lambda: self.client.post(job_url, json=body))
        if dat is None:
            return _error(m, err)
        job = dat.get("canaryExecutionId")
        job_id = "<nil>" if job is None else str(job)  # fmt.Sprintf("%v", jobId)
        if len(job_id) == 0:
            return _error(m, "Invalid canaryExecutionId")
        m.metadata = {"canaryExecutionId": job_id}
        m.phase = RUNNING
        return m

    def _scope_request(self, scope: dict[str, Any], started: _dt.datetime, now: _dt.datetime, interval: str, lookback: bool) -> dict[str, Any]:
        c, e = dict(scope.get("controlScope") or {}), dict(scope.get("experimentScope") or {})
        if (not c.get("start")) != (not e.get("start")):
            raise ValueError("controlScope.start and experimentScope.start must both be set or be empty")
        if (not c.get("end")) != (not e.get("end")):
            raise ValueError("controlScope.end and experimentScope.end must both be set or be empty")
        if not c.get("start") and not e.get("start"):
            start = _rfc3339(started) if lookback else _rfc3339(now - _go_duration(interval))
            c["start"] = e["start"] = start
        if not c.get("end") and not e.get("end"):
            c["end"] = e["end"] = _rfc3339(now)

        def detail(d: dict[str, Any]) -> dict[str, Any]:
            out = {"scope": d.get("scope", ""), "location": d.get("region", ""), "step": int(d.get("step", 0))}
            out.update({x: d[x] for x in ("start", "end") if d.get(x)})  # omitempty
            return out

        return {"controlScope": detail(c), "experimentScope": detail(e)}

    # -------------------------------------------------------------- Resume
    def resume(self, metric: Metric, m: Measurement) -> Measurement:
        """``Resume``: poll the execution of the measurement in flight."""
        k = metric.kayenta
        patch, err = self._object(lambda: self.client.get(f"{k['address']}/canary/{m.metadata.get('canaryExecutionId', '')}"))
        if patch is None:
            return _error(m, err)
        status, ok, err = _nested(patch, "complete")
        if ok and not isinstance(status, bool):
            ok, err = False, f"complete accessor error: {status!r} is not a bool"
        if ok:
            if not status:
                m.phase = RUNNING
                return m
        else:
            return _error(m, err or "Missing Complete Status")
        result, ok, err = _nested(patch, "result", "judgeResult", "score", "score")
        if ok and (isinstance(result, bool) or not isinstance(result, (int, float))):
            ok, err = False, f"score accessor error: {result!r} is not a float64"
        if ok:
            score = int(result)  # Go int(float64) truncates toward zero
            m.value = str(score)
            m.phase = evaluate_result(score, int(k["threshold"]["pass"]) if k.get("threshold") else 0,
                                      int(k["threshold"]["marginal"]) if k.get("threshold") else 0)
        else:
            return _error(m, err or "Missing Score")
        return m


def evaluate_result(score: int, pass_: int, marginal: int) -> str:
    """``evaluateResult``."""
    if score >= pass_:
        return SUCCESSFUL
    if score < pass_ and score >= marginal:
        return INCONCLUSIVE
    return FAILED


def analysis(provider: ArgoKayentaProvider, metric: dict[str, Any] | Metric, started: _dt.datetime, max_steps: int = 50,
             on_step: Callable[[int], Any] | None = None, first: Measurement | None = None) -> AnalysisRun:
    """An AnalysisRun of the one Kayenta ``metric`` (its YAML, as in the AnalysisTemplate, or a
    :class:`argo.Metric`), reconciled until its phase completes or ``max_steps`` reconciles were made
    (then it is still Running: the controller would keep polling). ``on_step(i)`` runs before each
    reconcile (tests ingest telemetry there). ``first``: the measurement the metric's first ``Run``
    returned (taken earlier by the test); the first reconcile records it instead of calling ``Run``."""
    m = metric if isinstance(metric, Metric) else Metric.from_yaml(metric)
    clock = [started]
    pending = [first] if first is not None else []

    def run(mt: Metric) -> Measurement:
        return pending.pop() if pending else provider.run(mt, started, clock[0])

    ar = AnalysisRun([m], run, resume=provider.resume)
    for i in range(max_steps):
        if on_step is not None:
            on_step(i)
        clock[0] += RESUME_DELAY
        if completed(ar.reconcile()):
            break
    return ar


def measurements(ar: AnalysisRun) -> list[Measurement]:
    """The measurements of the run's one metric."""
    (res,) = ar.results.values()
    return res.measurements
