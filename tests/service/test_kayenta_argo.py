"""Conformance: Argo Rollouts' Kayenta provider (ported in ``conformance/argo_kayenta.py``, driven by the
analysis controller ported in ``conformance/argo.py``) against a live
``deploysignal serve`` over a real socket, with the AnalysisTemplate of docs/integrations.md.

Fail closed: the metric ends Successful only when the gate proceeded; a rollback is Failed with score
0; a final extend is Inconclusive (or Failed); pending, errors and timeouts never end Successful.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from conformance.argo import Metric, step_outcome
from conformance.argo_kayenta import ERROR, FAILED, INCONCLUSIVE, RUNNING, SUCCESSFUL, ArgoKayentaProvider, analysis, measurements

from ._proc import KAYENTA, WRITE, Server, free_port
from .conftest import ticks_of

#: one live server per run: under ``--dist loadgroup`` the module's tests stay on one worker
pytestmark = pytest.mark.xdist_group("kayenta-live")

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
W = {"Authorization": f"Bearer {WRITE}"}
T0 = _dt.datetime(2026, 12, 7, 3, 0, tzinfo=_dt.timezone.utc)


def doc_template(marker: str = "this block") -> dict:
    """The AnalysisTemplate block (or, with ``marker="this block too"``, the Rollout block) under its
    marker in docs/integrations.md."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(rf"<!-- tests/service/test_kayenta_argo.py loads {marker} -->\n```yaml\n(.*?)```", text, re.S)
    assert block, f"the Kayenta block '{marker}' is missing from docs/integrations.md"
    return yaml.safe_load(block.group(1))


def metric_for(url: str, canary_hash: str, key: str = KAYENTA, config_name: str | None = None, **threshold: int) -> Metric:
    """The doc's metric with Argo's argument substitution ({{args.x}}) and the live service's address;
    ``config_name`` replaces the doc's ``canaryConfigName`` (the template id) by an analysis id."""
    tpl = doc_template()
    assert [a["name"] for a in tpl["spec"]["args"]] == ["canary-hash", "kayenta-key"]
    raw = json.dumps(tpl["spec"]["metrics"][0])
    raw = raw.replace("{{args.canary-hash}}", canary_hash).replace("{{args.kayenta-key}}", key)
    raw = raw.replace("http://deploysignal.deploysignal.svc:8080", url)
    metric = json.loads(raw)
    if config_name is not None:
        metric["provider"]["kayenta"]["canaryConfigName"] = config_name
    if threshold:
        metric["provider"]["kayenta"]["threshold"] = threshold
    return Metric.from_yaml(metric)


@pytest.fixture(scope="module")
def live(tmp_path_factory, step_sim, healthy_sim):
    tmp = tmp_path_factory.mktemp("kayenta-live")
    with Server(tmp, f"sqlite:///{tmp / 'ds.db'}", extra=["--log-level", "info"]) as srv, httpx.Client(base_url=srv.url, headers=W, timeout=60) as c:
        yield srv, c, step_sim, healthy_sim


def create(c: httpx.Client, aid: str, cfg, window: int, max_extensions: int = 0) -> None:
    r = c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": window, "max_extensions": max_extensions})
    assert r.status_code == 201, r.text


def ingest(c: httpx.Client, aid: str, ticks: list[dict]) -> None:
    if ticks:
        r = c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks})
        assert r.status_code == 200, r.text


def nodata(frame, start: int, stop: int) -> list[dict]:
    out = ticks_of(frame, start, stop)
    for t in out:
        t["values"] = {k: None for k in t["values"]}
    return out


def verdict(c: httpx.Client, aid: str) -> tuple[str, bool]:
    v = c.get(f"/v1/analyses/{aid}").json()
    return v["verdict"], v["final"]


def named(url: str, canary_hash: str, key: str = KAYENTA, **threshold: int) -> Metric:
    """The doc's metric with ``canaryConfigName`` naming the explicit analysis ``prod.inference-api.<hash>``."""
    return metric_for(url, canary_hash, key, f"prod.inference-api.{canary_hash}", **threshold)


def drive(url: str, canary_hash: str, on_step=None, max_steps: int = 40, key: str = KAYENTA, threshold: dict | None = None, template: bool = False, **kw):
    """An AnalysisRun of the metric (the doc's template id as config when ``template``, else the explicit analysis)."""
    metric = metric_for(url, canary_hash, key, **(threshold or {})) if template else named(url, canary_hash, key, **(threshold or {}))
    with ArgoKayentaProvider(**kw) as p:
        return analysis(p, metric, T0, max_steps=max_steps, on_step=on_step)


# ---------------------------------------------------------------------- the gate decides
def test_healthy_canary_is_successful_with_score_100(live):
    srv, c, _, (healthy, cfg) = live
    create(c, "prod.inference-api.healthy1", cfg, window=120)
    res = drive(srv.url, "healthy1", on_step=lambda i: ingest(c, "prod.inference-api.healthy1", ticks_of(healthy.canary, 30 * i, min(30 * (i + 1), 120))))
    assert verdict(c, "prod.inference-api.healthy1") == ("proceed", True)
    assert res.phase == SUCCESSFUL and len(measurements(res)) == 1 and step_outcome(res.phase) == "promoted"
    m = measurements(res)[0]
    assert m.phase == SUCCESSFUL and m.value == "100" and m.metadata["canaryExecutionId"].startswith("ex-")
    body = httpx.get(f"{srv.url}/kayenta/{KAYENTA}/canary/{m.metadata['canaryExecutionId']}").json()
    assert body["complete"] is True and body["status"] == "succeeded" and body["canaryConfigId"] == "prod.inference-api.healthy1"
    jr = body["result"]["judgeResult"]
    assert jr["score"] == {"score": 100.0, "classification": "Pass", "classificationReason": "deploysignal gate proceeded"}
    # the fields Kayenta's models mark @NotNull (CanaryExecutionStatusResponse, CanaryJudgeResult,
    # CanaryAnalysisResult, CanaryJudgeGroupScore) are present and not null
    assert all(body[f] is not None for f in ("pipelineId", "stageStatus", "complete", "status"))
    assert all(jr[f] is not None for f in ("judgeName", "results", "groupScores", "score"))
    for r in jr["results"]:
        assert all(r[f] is not None for f in ("name", "tags", "id", "classification", "groups", "experimentMetadata", "controlMetadata", "resultMetadata")), r
    assert all(g[f] is not None for g in jr["groupScores"] for f in ("name", "score", "classification"))
    assert jr["results"][0]["critical"] is True and jr["results"][0]["classification"] == "Pass"
    # what Argo sent is recorded: lookback scope start = run start, end = the measurement's time
    sc = body["canaryExecutionRequest"]["scopes"]["default"]
    assert sc["experimentScope"]["start"] == "2026-12-07T03:00:00Z" and sc["experimentScope"]["scope"].endswith("=healthy1")
    assert body["canaryExecutionRequest"]["thresholds"] == {"pass": 95, "marginal": 50}


def test_regression_is_failed_with_score_0(live):
    srv, c, (step, cfg), _ = live
    aid = "prod.inference-api.regress1"
    create(c, aid, cfg, window=480)
    res = drive(srv.url, "regress1", on_step=lambda i: ingest(c, aid, ticks_of(step.canary, 60 * i, min(60 * (i + 1), 480))))
    assert verdict(c, aid) == ("rollback", True)
    assert res.phase == FAILED and step_outcome(res.phase) == "aborted"
    m = measurements(res)[-1]
    assert m.phase == FAILED and m.value == "0"
    assert len(measurements(res)) == 1  # the measurement was Running until the gate rolled back
    body = httpx.get(f"{srv.url}/kayenta/{KAYENTA}/canary/{m.metadata['canaryExecutionId']}").json()
    jr = body["result"]["judgeResult"]
    assert jr["score"]["score"] == 0.0 and jr["score"]["classification"] == "Fail"
    assert jr["score"]["classificationReason"].startswith("Canary Failed: deploysignal gate rolled back")
    assert jr["results"][0]["critical"] is True and jr["results"][0]["classification"] in ("High", "Low")
    assert {r["name"]: r["classification"] for r in jr["results"]}["p99_latency_ms"] == "High"
    # an execution started after the rollback is refused (its verdict predates it), whatever the thresholds
    for th in ({"pass": 1, "marginal": 1}, {"pass": 100, "marginal": 100}):
        with ArgoKayentaProvider() as p:
            assert p.run(named(srv.url, "regress1", **th), T0, T0).phase == ERROR


def test_final_extend_is_inconclusive_never_successful(live):
    srv, c, _, (healthy, cfg) = live
    aid = "prod.inference-api.nodata1"
    create(c, aid, cfg, window=60)
    metric = named(srv.url, "nodata1", **{"pass": 60, "marginal": 60})  # thresholds leaving no Marginal band
    with ArgoKayentaProvider() as p:
        m60 = p.run(metric, T0, T0)  # started while the analysis is undecided
        res = drive(srv.url, "nodata1", on_step=lambda i: ingest(c, aid, nodata(healthy.canary, 20 * i, min(20 * (i + 1), 60))))
        assert verdict(c, aid) == ("extend", True)
        assert res.phase == INCONCLUSIVE and measurements(res)[-1].value == "50"  # the template's marginal
        assert p.resume(metric, m60).phase == FAILED  # Failed, not Successful


def test_pending_and_extending_stay_running(live):
    srv, c, _, (healthy, cfg) = live
    create(c, "prod.inference-api.pending1", cfg, window=480)
    ingest(c, "prod.inference-api.pending1", ticks_of(healthy.canary, 0, 10))
    create(c, "prod.inference-api.extending1", cfg, window=60, max_extensions=1)
    ingest(c, "prod.inference-api.extending1", nodata(healthy.canary, 0, 60))
    assert verdict(c, "prod.inference-api.pending1") == ("pending", False)
    assert verdict(c, "prod.inference-api.extending1") == ("extend", False)
    for h in ("pending1", "extending1"):
        res = drive(srv.url, h, max_steps=40)
        assert res.phase == RUNNING and len(measurements(res)) == 1 and measurements(res)[0].phase == RUNNING
        body = httpx.get(f"{srv.url}/kayenta/{KAYENTA}/canary/{measurements(res)[0].metadata['canaryExecutionId']}").json()
        assert body["complete"] is False and body["result"] is None


# ---------------------------------------------------------------------- errors fail closed
def test_errors_end_in_error_never_successful(live, tmp_path):
    srv, c, _, (healthy, cfg) = live
    create(c, "prod.inference-api.proceeds", cfg, window=120)
    ingest(c, "prod.inference-api.proceeds", ticks_of(healthy.canary, 0, 120))
    assert verdict(c, "prod.inference-api.proceeds")[0] == "proceed"
    down = f"http://127.0.0.1:{free_port()}"
    cases = {
        "service down": drive(down, "proceeds"),
        "unknown key": drive(srv.url, "proceeds", key="not-a-token"),
        "no analysis for this revision": drive(srv.url, "revision-without-analysis"),
        "verdict reached before the execution": drive(srv.url, "proceeds"),
        "pass 0 (Argo would call score 0 Successful)": drive(srv.url, "proceeds", threshold={"pass": 0, "marginal": 0}),
        "marginal 0 (a rollback would be Inconclusive)": drive(srv.url, "proceeds", threshold={"pass": 50, "marginal": 0}),
    }
    # a listener that accepts and never answers: the client's timeout (15 s in Argo, 0.5 s here)
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        cases["no answer (timeout)"] = drive(f"http://127.0.0.1:{hole.getsockname()[1]}", "proceeds", timeout=0.5)
    for name, res in cases.items():
        assert res.phase == ERROR, (name, res)
        assert len(measurements(res)) == 5 and all(m.phase == ERROR for m in measurements(res)), name
    assert "Canary config not found" in measurements(cases["no analysis for this revision"])[0].message
    # a known execution polled through a wrong key, and an unknown execution id
    create(c, "prod.inference-api.undecided", cfg, window=120)
    metric = named(srv.url, "undecided")
    with ArgoKayentaProvider() as p:
        m = p.run(metric, T0, T0)
        assert m.phase == RUNNING
        assert p.resume(named(srv.url, "undecided", key="not-a-token"), m).phase == ERROR
        m.phase, m.metadata = RUNNING, {"canaryExecutionId": "ex-0000000000000000"}
        assert p.resume(metric, m).phase == ERROR
    # the log does not show the key
    log = Path(srv.log.name).read_text()
    assert f"/kayenta/{KAYENTA}/" not in log and '"GET /kayenta/***/canaryConfig?' in log


def test_execution_is_bound_to_its_analysis(live):
    """A new revision gets a new analysis; an execution keeps answering for the one it judged."""
    srv, c, (step, cfg_step), (healthy, cfg) = live
    create(c, "prod.inference-api.rev1", cfg_step, window=480)
    with ArgoKayentaProvider() as p:
        m1 = p.run(named(srv.url, "rev1"), T0, T0)
        create(c, "prod.inference-api.rev2", cfg, window=120)
        m2 = p.run(named(srv.url, "rev2"), T0, T0)
        ingest(c, "prod.inference-api.rev2", ticks_of(healthy.canary, 0, 120))  # rev2 proceeds
        ingest(c, "prod.inference-api.rev1", ticks_of(step.canary, 0, 480))  # rev1 rolls back
        assert p.resume(named(srv.url, "rev1"), m1).phase == FAILED
        assert p.resume(named(srv.url, "rev2"), m2).phase == SUCCESSFUL


# ---------------------------------------------------------------------- injected faults
class Faulty(httpx.BaseTransport):
    """Forwards to the live service, or (seeded) fails the call the ways a network and a proxy do."""

    def __init__(self, rng: np.random.Generator, p_fault: float) -> None:
        self.rng, self.p = rng, p_fault
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.rng.random() >= self.p:
            return self.inner.handle_request(request)
        kind = int(self.rng.integers(5))
        if kind == 0:
            raise httpx.ConnectError("connection refused", request=request)
        if kind == 1:
            raise httpx.ReadTimeout("timed out", request=request)
        if kind == 2:
            return httpx.Response(int(self.rng.choice([500, 502, 503, 504])), text="upstream error")
        resp = self.inner.handle_request(request)
        body = resp.read()
        resp.close()
        if kind == 3:  # truncated body
            return httpx.Response(200, content=body[: int(self.rng.integers(0, max(1, len(body))))])
        return httpx.Response(200, json={"complete": True})  # a proxy's made-up answer without a score

    def close(self) -> None:
        self.inner.close()


def test_injected_faults_never_end_successful_unless_the_gate_proceeded(live):
    """200 seeded metric runs (40 per analysis state), each call faulted with probability 0.3. Every run
    starts (``Run``) while its analysis is undecided, then the analysis reaches its state and the
    metric goes on (polls, and new ``Run`` calls after errors, which are refused once decided)."""
    srv, c, (step, cfg_step), (healthy, cfg) = live
    states = {"fz-proceed": ("proceed", True, cfg, 120, 0, ticks_of(healthy.canary, 0, 120)),
              "fz-rollback": ("rollback", True, cfg_step, 480, 0, ticks_of(step.canary, 0, 480)),
              "fz-final": ("extend", True, cfg, 60, 0, nodata(healthy.canary, 0, 60)),
              "fz-extend": ("extend", False, cfg, 60, 1, nodata(healthy.canary, 0, 60)),
              "fz-pending": ("pending", False, cfg, 480, 0, [])}
    seen: dict[str, set[str]] = {h: set() for h in states}
    for i, (h, (want, final, config, window, ext, ticks)) in enumerate(states.items()):
        aid = f"prod.inference-api.{h}"
        create(c, aid, config, window=window, max_extensions=ext)
        metric = named(srv.url, h)
        with ArgoKayentaProvider(transport=Faulty(np.random.default_rng([7, i]), 0.3)) as p:
            firsts = [p.run(metric, T0, T0) for _ in range(40)]
            ingest(c, aid, ticks)
            assert verdict(c, aid) == (want, final), h
            for m in firsts:
                res = analysis(p, metric, T0, max_steps=13, first=m)  # the first reconcile records m
                seen[h].add(res.phase)
                if step_outcome(res.phase) == "promoted":
                    assert want == "proceed", (h, res)
    assert seen["fz-proceed"] >= {SUCCESSFUL}
    assert seen["fz-rollback"] <= {FAILED, ERROR, RUNNING} and FAILED in seen["fz-rollback"]
    assert seen["fz-final"] <= {INCONCLUSIVE, ERROR, RUNNING} and INCONCLUSIVE in seen["fz-final"]
    assert seen["fz-extend"] <= {ERROR, RUNNING} and seen["fz-pending"] <= {ERROR, RUNNING}


def test_doc_template_is_what_the_port_reads():
    tpl = doc_template()
    assert tpl["kind"] == "AnalysisTemplate"
    metric = tpl["spec"]["metrics"][0]
    k = metric["provider"]["kayenta"]
    assert "interval" not in metric and "count" not in metric  # one measurement (EffectiveCount 1)
    assert k["lookback"] is True and k["threshold"]["pass"] > k["threshold"]["marginal"] > 0
    assert k["address"].endswith("/kayenta/{{args.kayenta-key}}")
    assert "{{args" not in k["canaryConfigName"]  # a template id: the revision comes from the scope
    assert k["scopes"][0]["experimentScope"]["scope"].endswith("rollouts-pod-template-hash={{args.canary-hash}}")


def test_doc_template_is_accepted_by_argos_crd():
    """The doc's AnalysisTemplate validates against the openAPIV3Schema of Argo Rollouts' CRD (the
    vendored subset in argo_analysis_template_kayenta.schema.json names its source commit); the same
    check rejects what the CRD rejects (a scope without ``region``, ``thresholds`` for ``threshold``)."""
    import copy

    import jsonschema

    schema = json.loads((Path(__file__).parent / "argo_analysis_template_kayenta.schema.json").read_text(encoding="utf-8"))
    check = jsonschema.Draft7Validator(schema)
    tpl = doc_template()
    assert [e.message for e in check.iter_errors(tpl)] == []
    no_region = copy.deepcopy(tpl)
    del no_region["spec"]["metrics"][0]["provider"]["kayenta"]["scopes"][0]["controlScope"]["region"]
    plural = copy.deepcopy(tpl)
    k = plural["spec"]["metrics"][0]["provider"]["kayenta"]
    k["thresholds"] = k.pop("threshold")
    assert ["'region' is a required property"] == [e.message for e in check.iter_errors(no_region)]
    assert "'threshold' is a required property" in [e.message for e in check.iter_errors(plural)]


def test_doc_rollout_runs_the_template_as_an_inline_step():
    """A background analysis does not hold the steps while the measurement is Running: the doc's
    Rollout must use the template in ``steps`` and pass the pod-template-hash it judges."""
    ro = doc_template("this block too")
    assert ro["kind"] == "Rollout" and "analysis" not in ro["spec"]["strategy"]["canary"]
    steps = ro["spec"]["strategy"]["canary"]["steps"]
    inline = [s["analysis"] for s in steps if "analysis" in s]
    assert len(inline) == 1 and inline[0]["templates"] == [{"templateName": doc_template()["metadata"]["name"]}]
    assert inline[0]["args"] == [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]
    assert steps.index({"analysis": inline[0]}) < len(steps) - 1  # a later step waits for it


def test_score_passes_only_on_proceed_for_every_accepted_threshold():
    """Exhaustive over the integer thresholds the service accepts (1-100 each) and every verdict state:
    Argo's evaluateResult on our score is Successful iff the gate proceeded, Failed on every rollback."""
    from types import SimpleNamespace

    from deploysignal.service import execution_status

    from conformance.argo_kayenta import evaluate_result

    signals = [{"name": "p99_latency_ms", "classification": "High", "observations": 9}, {"name": "x", "classification": "Nodata", "observations": 0}]
    for verdict_, final in (("pending", False), ("extend", False), ("extend", True), ("proceed", True), ("rollback", True)):
        last = SimpleNamespace(verdict=verdict_, final=final, fired_families=("A",) if verdict_ == "rollback" else ())
        eng = SimpleNamespace(last=last, n_ticks=9, signal_classification=lambda: signals)
        for pass_ in range(1, 101):
            for marginal in range(1, 101):
                body = execution_status("ex-1", "a", {"thresholds": {"pass": float(pass_), "marginal": float(marginal)}}, "2026-12-07T03:00:00+00:00", eng, "cc-1")
                if not body["complete"]:
                    assert verdict_ in ("pending", "extend") and not final and body["result"] is None
                    continue
                phase = evaluate_result(int(body["result"]["judgeResult"]["score"]["score"]), pass_, marginal)
                assert (phase == SUCCESSFUL) == (verdict_ == "proceed"), (verdict_, final, pass_, marginal, phase)
                if verdict_ == "rollback":
                    assert phase == FAILED
                if verdict_ == "extend":
                    assert phase == (INCONCLUSIVE if marginal < pass_ else FAILED)


def test_spinnaker_canary_stage_succeeds_only_on_proceed(live):
    """Orca's Run/MonitorKayentaCanaryTask (ported in _spinnaker_kayenta.py) with ``canaryConfigId`` =
    the analysis id and Kayenta's base URL = the keyed address: SUCCEEDED only where the gate proceeded."""
    from ._spinnaker_kayenta import monitor_task, run_task

    srv, c, (step, cfg_step), (healthy, cfg) = live
    setups = {
        "sp-proceed": (cfg, 120, 0, ticks_of(healthy.canary, 0, 120), "SUCCEEDED"),
        "sp-rollback": (cfg_step, 480, 0, ticks_of(step.canary, 0, 480), "TERMINAL"),
        "sp-final": (cfg, 60, 0, nodata(healthy.canary, 0, 60), "TERMINAL"),  # score = marginal: not above it
        "sp-extend": (cfg, 60, 1, nodata(healthy.canary, 0, 60), "RUNNING"),
        "sp-pending": (cfg, 480, 0, ticks_of(healthy.canary, 0, 10), "RUNNING"),
    }
    scope = {"scope": "inference-api-canary", "location": "eu-west-1", "start": "2026-12-07T03:00:00Z", "end": "2026-12-07T04:00:00Z",
             "step": 60, "extendedScopeParams": {}}
    base = f"{srv.url}/kayenta/{KAYENTA}"
    with httpx.Client(timeout=15) as orca:
        for aid, (config, window, ext, ticks, want) in setups.items():
            create(c, aid, config, window=window, max_extensions=ext)
            ctx = {"canaryConfigId": aid, "metricsAccountName": "deploysignal", "storageAccountName": "deploysignal",
                   "scopes": {"default": {"controlScope": {**scope, "scope": "inference-api-baseline"}, "experimentScope": scope}},
                   "scoreThresholds": {"pass": 95, "marginal": 75}, "siteLocal": {}}
            ex = run_task(orca, base, ctx, "inference-api", "01JPIPELINE")  # started before the evidence
            ingest(c, aid, ticks)
            assert [monitor_task(orca, base, ex, ctx) for _ in range(3)] == [want] * 3, aid
            assert monitor_task(orca, f"{srv.url}/kayenta/not-a-token", ex, ctx) == "ERROR"
        body = orca.get(f"{base}/canary/{ex}").json()
        assert body["application"] == "inference-api" and body["parentPipelineExecutionId"] == "01JPIPELINE"
        assert body["startTimeIso"].endswith("Z")  # java.time.Instant's form


def test_port_decodes_the_config_list_as_go_does():
    """The port's config lookup fails where Go's ``json.Unmarshal`` into ``[]kayenta.canaryConfig``
    fails (so the live tests check the service's field types), and reads keys case-insensitively."""
    def answer(configs):
        return httpx.MockTransport(lambda req: httpx.Response(200, json=configs))

    metric = named("http://svc", "h1")
    ok = [{"ID": "prod.inference-api.h1", "name": "prod.inference-api.h1", "updatedTimestamp": 1, "applications": [], "extra": {}}]
    with ArgoKayentaProvider(transport=answer(ok)) as p:
        assert p._config_id(metric.kayenta) == "prod.inference-api.h1"
    for bad in ({"id": 7}, {"name": ["x"]}, {"updatedTimestamp": 1.5}, {"updatedTimestamp": "1"}, {"applications": [1]}):
        with ArgoKayentaProvider(transport=answer([{**ok[0], **bad}])) as p:
            with pytest.raises(ValueError, match="cannot unmarshal"):
                p._config_id(metric.kayenta)


def test_controller_resumes_the_measurement_in_flight_and_counts_it_once():
    """Through the controller port: a Kayenta measurement is Running until ``complete``, replaced (not
    appended) on each ``Resume`` and counted once; a dry-run Kayenta metric that fails does not fail the
    run; with ``consecutiveSuccessLimit`` one Successful measurement of an interval metric completes it."""
    polls = {"n": 0}

    def kayenta(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/canaryConfig"):
            return httpx.Response(200, json=[{"id": "cfg", "name": "prod.inference-api.h1"}])
        if req.method == "POST":
            return httpx.Response(200, json={"canaryExecutionId": "ex-1"})
        polls["n"] += 1
        if polls["n"] < 3:
            return httpx.Response(200, json={"complete": False})
        return httpx.Response(200, json={"complete": True, "result": {"judgeResult": {"score": {"score": score}}}})

    for score, want in ((100.0, SUCCESSFUL), (0.0, FAILED)):
        polls["n"] = 0
        with ArgoKayentaProvider(transport=httpx.MockTransport(kayenta)) as p:
            res = analysis(p, named("http://svc", "h1"), T0)
        (r,) = res.results.values()
        assert res.phase == want and polls["n"] == 3 and len(r.measurements) == 1 and r.count == 1
        assert r.measurements[0].metadata == {"canaryExecutionId": "ex-1"} and r.measurements[0].value == str(int(score))
    # dry-run: the failing metric is recorded Failed, the run is Successful (the web metric decides)
    from conformance.argo import AnalysisRun, Measurement

    polls["n"] = 0
    k = named("http://svc", "h1")
    with ArgoKayentaProvider(transport=httpx.MockTransport(kayenta)) as p:
        ok = Metric("web-ok")
        run = AnalysisRun([k, ok], lambda m: p.run(m, T0, T0) if m is k else Measurement(SUCCESSFUL), frozenset({k.name}), resume=p.resume)
        for _ in range(5):
            run.reconcile()
        assert run.results[k.name].phase == FAILED and run.phase == SUCCESSFUL
    # consecutiveSuccessLimit on an interval metric (no count: it would run indefinitely)
    score = 100.0
    polls["n"] = 0
    k = named("http://svc", "h1")
    k.interval, k.consecutive_success_limit = "5m", 1
    with ArgoKayentaProvider(transport=httpx.MockTransport(kayenta)) as p:
        res = analysis(p, k, T0, max_steps=10)
    assert res.phase == SUCCESSFUL and len(measurements(res)) == 1
