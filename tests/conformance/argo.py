"""A Python port of Argo Rollouts' analysis decision logic, for conformance tests against a live service.

Ported line by line from argoproj/argo-rollouts at commit 9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d
(2026-08-17, after v1.9.1):

- ``analysis/analysis.go``: ``generateMetricTasks`` (completed metrics, a terminating run and a reached
  ``count`` schedule no measurement), ``runMeasurements`` (the counters: Count, Successful, Failed,
  Inconclusive, Error, ConsecutiveError, ConsecutiveSuccess), ``assessRunStatus`` (worst status of the
  completed metrics, dry-run metrics left out, a terminating run with no status is Successful),
  ``assessMetricStatus`` (failure/inconclusive/error limits, then ``consecutiveSuccessLimit``, then
  ``count``, then "runs indefinitely", a terminating metric is Successful) and
  ``assessMetricFailureInconclusiveOrError``;
- ``utils/evaluate/evaluate.go``: ``EvaluateResult`` (conditions; neither = Inconclusive; only a
  success condition = failure when it does not hold; an evaluation error = Error);
- ``metricproviders/webmetric/webmetric.go``: ``Run`` / ``parseResponse`` / ``getValue`` (transport error
  or timeout = Error, a status outside 200-299 = Error, a body that is not JSON is evaluated as a
  string, a JSONPath that finds nothing = Error), ``NewWebMetricHttpClient`` (timeout 10 s unless
  ``timeoutSeconds`` > 0), ``NewWebMetricJsonParser`` (``{$}`` by default);
- ``utils/defaults/defaults.go``: ``DefaultConsecutiveErrorLimit = 4``;
- ``pkg/apis/rollouts/v1alpha1/analysis_types.go``: ``EffectiveCount`` and ``AnalysisPhase.Completed``;
- ``utils/analysis/helpers.go``: ``IsTerminating``, ``IsWorse`` (order Successful < Running < Pending <
  Inconclusive < Error < Failed);
- ``rollout/analysis.go`` and ``rollout/canary.go``: a step analysis completes its step only when the run
  is Successful (``completedCurrentCanaryStep``); Inconclusive pauses the rollout, Error or Failed
  aborts it (``reconcileStepBasedAnalysisRun``).

What is abstracted: time. One :meth:`AnalysisRun.reconcile` is one metric ``interval``: every metric
that is due takes one measurement (Argo retries an Error after ``DefaultErrorRetryInterval`` = 10 s,
i.e. more often than once per interval; this only reaches ``consecutiveErrorLimit`` sooner), and a
measurement in flight (phase Running, e.g. Kayenta's after ``Run``) is resumed at once (Argo waits for
its ``resumeAt``) through the provider's ``Resume``, or ``Terminate`` when the run is terminating
(``runMeasurements``); it replaces the last measurement and counts only once completed. The Kayenta
provider is ported beside this module, in :mod:`argo_kayenta`. The
expressions of ``successCondition`` / ``failureCondition`` are expr-lang; :func:`eval_condition`
evaluates the subset they use here (``result.a.b``, ``==``, ``!=``, ``&&``, ``||``, ``!``, literals)
with expr's rule that a missing map key reads as ``nil``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

SUCCESSFUL, FAILED, ERROR, INCONCLUSIVE, RUNNING, PENDING = "Successful", "Failed", "Error", "Inconclusive", "Running", "Pending"
_ORDER = [SUCCESSFUL, RUNNING, PENDING, INCONCLUSIVE, ERROR, FAILED]  # helpers.go analysisStatusOrder
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4


def completed(phase: str) -> bool:
    return phase in (SUCCESSFUL, FAILED, ERROR, INCONCLUSIVE)


def is_worse(current: str, new: str) -> bool:
    ci = _ORDER.index(current) if current in _ORDER else 0
    ni = _ORDER.index(new) if new in _ORDER else 0
    return ni > ci


# ---------------------------------------------------------------------- metric spec
@dataclass
class Metric:
    """``v1alpha1.Metric`` fields that the decision logic reads (from the AnalysisTemplate YAML)."""

    name: str
    interval: str = ""
    count: int | None = None
    failure_limit: int | None = None
    inconclusive_limit: int | None = None
    consecutive_error_limit: int | None = None
    consecutive_success_limit: int | None = None
    success_condition: str = ""
    failure_condition: str = ""
    web: dict[str, Any] = field(default_factory=dict)
    kayenta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, m: Mapping[str, Any]) -> Metric:
        def num(key: str) -> int | None:
            v = m.get(key)
            return None if v is None else int(v)

        return cls(
            name=m["name"], interval=str(m.get("interval", "")), count=num("count"), failure_limit=num("failureLimit"),
            inconclusive_limit=num("inconclusiveLimit"), consecutive_error_limit=num("consecutiveErrorLimit"),
            consecutive_success_limit=num("consecutiveSuccessLimit"), success_condition=m.get("successCondition", ""),
            failure_condition=m.get("failureCondition", ""), web=dict(m.get("provider", {}).get("web", {})),
            kayenta=dict(m.get("provider", {}).get("kayenta", {})),
        )

    def effective_count(self) -> int | None:
        """analysis_types.go ``EffectiveCount``: no count and no interval = 1; only an interval = none."""
        if self.count is None or self.count == 0:
            return 1 if self.interval == "" else None
        return self.count


@dataclass
class Measurement:
    phase: str
    value: str = ""
    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class MetricResult:
    name: str
    phase: str = ""
    measurements: list[Measurement] = field(default_factory=list)
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    dry_run: bool = False
    message: str = ""


# ---------------------------------------------------------------------- evaluate.go
class _Obj:
    """expr-lang member access on decoded JSON: a missing key is nil."""

    def __init__(self, v: Any) -> None:
        self.v = v

    def __getattr__(self, name: str) -> Any:
        if isinstance(self.v, dict):
            return _wrap(self.v.get(name))
        raise TypeError(f"cannot fetch {name} from {type(self.v).__name__}")


def _wrap(v: Any) -> Any:
    return _Obj(v) if isinstance(v, dict) else v


_TOKENS = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_.]*))')


def eval_condition(result: Any, condition: str) -> bool:
    """``EvalCondition`` for the expr-lang subset above; raises ValueError on what it cannot read."""
    out, pos = [], 0
    while pos < len(condition):
        m = _TOKENS.match(condition, pos)
        if m is None or m.end() == pos:
            if condition[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse condition {condition!r} at {pos}")
        pos = m.end()
        if m.group("str"):
            out.append(repr(json.loads(m.group("str"))))
        elif m.group("num"):
            out.append(m.group("num"))
        elif m.group("op"):
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(m.group("op"), m.group("op")))
        else:
            name = m.group("name")
            head = name.split(".")[0]
            if name in ("true", "false", "nil"):
                out.append({"true": "True", "false": "False", "nil": "None"}[name])
            elif head != "result":
                raise ValueError(f"unknown identifier {name!r}")
            else:
                out.append("_r" + name[len("result"):])
    val = eval("".join(out), {"__builtins__": {}}, {"_r": _wrap(result)})  # noqa: S307 - tokens checked above
    if isinstance(val, _Obj):
        val = val.v
    if not isinstance(val, bool):
        raise ValueError(f"condition {condition!r} returned {type(val).__name__}, not bool")
    return val


def evaluate_result(result: Any, metric: Metric) -> str:
    """``EvaluateResult``: the measurement phase of ``result`` under the metric's conditions."""
    success = failure = False
    try:
        if metric.success_condition:
            success = eval_condition(result, metric.success_condition)
        if metric.failure_condition:
            failure = eval_condition(result, metric.failure_condition)
    except (ValueError, TypeError, AttributeError):  # expr's runtime errors (e.g. result.verdict on a string): Error
        return ERROR
    if not metric.success_condition and not metric.failure_condition:
        return SUCCESSFUL
    if metric.success_condition and not metric.failure_condition:
        failure = not success
    elif not metric.success_condition and metric.failure_condition:
        success = not failure
    if failure:
        return FAILED
    if not failure and not success:
        return INCONCLUSIVE
    return SUCCESSFUL


# ---------------------------------------------------------------------- webmetric.go
def _substitute(text: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}", lambda m: args[m.group(1)], text)


def _json_path(data: Any, path: str) -> list[Any]:
    """k8s jsonpath for the forms used here: ``{$}`` and ``{$.a.b}`` / ``{.a.b}``; [] when not found."""
    inner = path.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(f"unsupported jsonPath {path!r}")
    inner = inner[1:-1].strip()
    if inner in ("$", "@"):
        return [data]
    keys = [k for k in inner.lstrip("$").split(".") if k]
    cur = data
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return []
        cur = cur[k]
    return [cur]


_CLIENT = httpx.Client()  # one connection pool, as Go's http.Client reuses connections


def web_measure(metric: Metric, args: Mapping[str, str], *, timeout: float | None = None) -> Measurement:
    """``Provider.Run`` of the web metric provider: one measurement. ``timeout`` overrides the metric's
    ``timeoutSeconds`` (tests shrink it to keep fault injection fast)."""
    web = metric.web
    method = web.get("method", "GET")
    url = _substitute(web["url"], args)
    headers = {h["key"]: _substitute(str(h["value"]), args) for h in web.get("headers", [])}
    t = timeout if timeout is not None else (float(web["timeoutSeconds"]) if web.get("timeoutSeconds", 0) > 0 else 10.0)
    try:
        r = _CLIENT.request(method, url, headers=headers, timeout=t)
        body = r.content
    except httpx.HTTPError as exc:
        return Measurement(ERROR, message=str(exc) or type(exc).__name__)
    if r.status_code < 200 or r.status_code >= 300:
        return Measurement(ERROR, message=f"received non 2xx response code: {r.status_code}")
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace")
        return Measurement(evaluate_result(text, metric), value=text)
    found = _json_path(data, web.get("jsonPath") or "{$}")
    if not found:
        return Measurement(ERROR, message="result of web metric produced no value")
    val = found[0]
    return Measurement(evaluate_result(val, metric), value=json.dumps(val))


# ---------------------------------------------------------------------- analysis.go
def assess_failure_inconclusive_or_error(metric: Metric, r: MetricResult) -> tuple[str, str]:
    phase, message = "", ""
    failure_limit = 0 if metric.failure_limit is None else metric.failure_limit
    if failure_limit >= 0 and r.failed > failure_limit:
        phase, message = FAILED, f"failed ({r.failed}) > failureLimit ({failure_limit})"
    inconclusive_limit = 0 if metric.inconclusive_limit is None else metric.inconclusive_limit
    if r.inconclusive > inconclusive_limit:
        phase, message = INCONCLUSIVE, f"inconclusive ({r.inconclusive}) > inconclusiveLimit ({inconclusive_limit})"
    error_limit = DEFAULT_CONSECUTIVE_ERROR_LIMIT if metric.consecutive_error_limit is None else metric.consecutive_error_limit
    if r.consecutive_error > error_limit:
        phase, message = ERROR, f"consecutiveErrors ({r.consecutive_error}) > consecutiveErrorLimit ({error_limit})"
    return phase, message


def assess_metric_status(metric: Metric, r: MetricResult, terminating: bool) -> str:
    if completed(r.phase):
        return r.phase
    if not r.measurements:
        return SUCCESSFUL if terminating else PENDING
    if not completed(r.measurements[-1].phase):
        return RUNNING
    phase, _ = assess_failure_inconclusive_or_error(metric, r)
    if phase:
        return phase
    csl = metric.consecutive_success_limit
    if csl is not None and csl > 0 and r.consecutive_success >= csl:
        return SUCCESSFUL
    count = metric.effective_count()
    if count is not None and r.count >= count:
        failure_applicable = metric.failure_limit is None or metric.failure_limit >= 0
        success_applicable = csl is not None and csl > 0
        if failure_applicable and success_applicable:
            return INCONCLUSIVE
        if success_applicable:
            return FAILED
        return SUCCESSFUL  # "Count (n) Reached"
    return SUCCESSFUL if terminating else RUNNING


def _unchanged(metric: Metric, m: Measurement) -> Measurement:
    """``Resume`` / ``Terminate`` of the providers that do nothing there (webmetric; Kayenta's ``Terminate``)."""
    return m


@dataclass
class AnalysisRun:
    """One AnalysisRun of the given metrics; ``measure(metric)`` takes a measurement (the provider's
    ``Run``, e.g. :func:`web_measure`); ``resume(metric, m)`` and ``terminate_measurement(metric, m)``
    are the provider's ``Resume`` and ``Terminate`` of a measurement in flight."""

    metrics: list[Metric]
    measure: Callable[[Metric], Measurement]
    dry_run: frozenset[str] = frozenset()
    terminate: bool = False
    resume: Callable[[Metric, Measurement], Measurement] = _unchanged
    terminate_measurement: Callable[[Metric, Measurement], Measurement] = _unchanged
    results: dict[str, MetricResult] = field(default_factory=dict)
    phase: str = ""
    message: str = ""

    def terminating(self) -> bool:
        """helpers.go ``IsTerminating``."""
        if self.terminate:
            return True
        return any(not r.dry_run and r.phase in (FAILED, ERROR, INCONCLUSIVE) for r in self.results.values())

    def _tasks(self) -> list[tuple[Metric, bool]]:
        """``generateMetricTasks``: (metric, whether its last measurement is in flight)."""
        terminating = self.terminating()
        tasks = []
        for m in self.metrics:
            r = self.results.get(m.name)
            if r is not None and completed(r.phase):
                continue
            if r is not None and r.measurements and not completed(r.measurements[-1].phase):
                tasks.append((m, True))  # "Resuming in-progress measurement" (even when terminating)
                continue
            if terminating:
                continue
            count = m.effective_count()
            if r is not None and r.measurements and count is not None and r.count >= count:
                continue
            tasks.append((m, False))
        return tasks

    def reconcile(self) -> str:
        """One interval: run (or resume) the due measurements, update the counters, assess the run."""
        if completed(self.phase):
            return self.phase
        terminating = self.terminating()
        for m, in_flight in self._tasks():
            r = self.results.setdefault(m.name, MetricResult(m.name, phase=RUNNING, dry_run=m.name in self.dry_run))
            if not in_flight:
                meas = self.measure(m)
            elif terminating:
                meas = self.terminate_measurement(m, r.measurements[-1])
                if meas.phase in (SUCCESSFUL, INCONCLUSIVE):
                    meas.message = "Metric Terminated"
            else:
                meas = self.resume(m, r.measurements[-1])
            if meas.phase == SUCCESSFUL:
                r.successful += 1
                r.count += 1
                r.consecutive_error = 0
                r.consecutive_success += 1
            elif meas.phase == FAILED:
                r.failed += 1
                r.count += 1
                r.consecutive_error = r.consecutive_success = 0
            elif meas.phase == INCONCLUSIVE:
                r.inconclusive += 1
                r.count += 1
                r.consecutive_error = r.consecutive_success = 0
            elif meas.phase == ERROR:
                r.error += 1
                r.consecutive_error += 1
                r.consecutive_success = 0
            if in_flight:
                r.measurements[-1] = meas
            else:
                r.measurements.append(meas)
        self.phase, self.message = self._assess()
        return self.phase

    def _assess(self) -> tuple[str, str]:
        """``assessRunStatus``."""
        worst, worst_msg = "", "Run Terminated" if self.terminate else ""
        terminating = self.terminating()
        everything = True
        for m in self.metrics:
            r = self.results.get(m.name)
            if r is None:
                everything = False
                continue
            status = assess_metric_status(m, r, terminating)
            r.phase = status
            if not completed(status):
                everything = False
                continue
            _, message = assess_failure_inconclusive_or_error(m, r)
            if not r.dry_run:
                if worst == "" or is_worse(worst, status):
                    worst = status
                    if message:
                        worst_msg = f'Metric "{m.name}" assessed {status} due to {message}'
            elif worst == "":
                worst = SUCCESSFUL
        if terminating:
            return (SUCCESSFUL, worst_msg) if worst == "" else (worst, worst_msg)
        if not everything or worst == "":
            return RUNNING, ""
        return worst, worst_msg


def step_outcome(run_phase: str) -> str:
    """What a canary ``steps: - analysis`` step does with its run's phase (rollout/canary.go,
    rollout/analysis.go): ``promoted`` (step completes; the last step promotes), ``aborted``,
    ``paused`` or ``waiting``."""
    if run_phase == SUCCESSFUL:
        return "promoted"
    if run_phase in (FAILED, ERROR):
        return "aborted"
    if run_phase == INCONCLUSIVE:
        return "paused"
    return "waiting"


def template_metrics(template: Mapping[str, Any]) -> tuple[list[Metric], frozenset[str]]:
    """Metrics and dry-run metric names of an AnalysisTemplate document (``spec.metrics``, ``spec.dryRun``)."""
    spec = template["spec"]
    metrics = [Metric.from_yaml(m) for m in spec["metrics"]]
    dry = set()
    for d in spec.get("dryRun", []) or []:
        pat = d["metricName"]
        dry |= {m.name for m in metrics if pat == "*" or re.fullmatch(pat, m.name)}
    return metrics, frozenset(dry)


def build_arguments_for_rollout_analysis_run(step_args: list[Mapping[str, Any]], new_hash: str, rollout: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``utils/analysis/factory.go`` ``BuildArgumentsForRolloutAnalysisRun``: the Rollout step's
    ``args`` (``AnalysisRunArgument``) become AnalysisRun arguments. ``valueFrom.podTemplateHashValue:
    Latest`` is the new ReplicaSet's pod-template-hash (``Stable`` is not used here and raises), a
    ``valueFrom.fieldRef`` with a ``metadata...`` path reads the Rollout's metadata
    (``fieldpath.ExtractFieldPathAsString``: ``metadata.name``, ``metadata.namespace``,
    ``metadata.labels['k']``, ``metadata.annotations['k']``; a missing key is the empty string);
    otherwise ``value`` (the empty string when absent: Go's zero value)."""
    out = []
    for a in step_args:
        value = a.get("value", "")
        vf = a.get("valueFrom")
        if vf is not None:
            if vf.get("podTemplateHashValue") is not None:
                if vf["podTemplateHashValue"] != "Latest":
                    raise NotImplementedError("podTemplateHashValue: Stable is not ported")
                value = new_hash
            elif vf.get("fieldRef") is not None:
                path = vf["fieldRef"]["fieldPath"]
                meta = rollout["metadata"]
                m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
                if m:
                    value = (meta.get(m.group(1)) or {}).get(m.group(2), "")
                elif path in ("metadata.name", "metadata.namespace", "metadata.uid"):
                    value = meta.get(path.split(".", 1)[1], "")
                else:
                    raise NotImplementedError(f"fieldRef {path!r} is not ported")
        out.append({"name": a["name"], "value": str(value)})
    return out


def merge_args(incoming: list[Mapping[str, Any]], template_args: list[Mapping[str, Any]]) -> dict[str, str]:
    """``utils/analysis/helpers.go`` ``MergeArgs`` + ``ResolveArgs``: the template's ``spec.args``
    overridden by name by the incoming (Rollout) arguments; an incoming argument the template does not
    declare is dropped; an argument left with neither ``value`` nor ``valueFrom`` is the error
    ``args.<name> was not resolved`` (the AnalysisRun is not created). ``valueFrom.secretKeyRef`` is
    resolved by the controller later; here it must come in ``incoming`` as a value (the test's secret)."""
    merged = [dict(a) for a in template_args]
    for a in incoming:
        for t in merged:
            if t["name"] == a["name"]:
                if a.get("value") is not None:
                    t["value"] = a["value"]
                elif a.get("valueFrom") is not None:
                    t["valueFrom"] = a["valueFrom"]
                break
    for t in merged:
        if t.get("value") is None and t.get("valueFrom") is None:
            raise ValueError(f"args.{t['name']} was not resolved")
    out = {}
    for t in merged:
        if t.get("value") is None:
            raise ValueError(f"args.{t['name']} has valueFrom {sorted(t['valueFrom'])} the port does not resolve: pass it in incoming")
        out[t["name"]] = str(t["value"])
    return out
