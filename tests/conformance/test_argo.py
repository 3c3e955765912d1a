"""Argo Rollouts conformance: the documented AnalysisTemplates (loaded from docs/integrations.md) run by
the port of Argo's analysis controller and web provider (``argo.py``: argoproj/argo-rollouts at
9f8d111d8f8e3e88b6d7f8bbdf62fd3cd863ef9d) against a live ``deploysignal serve``, through whole rollouts.

The property under test (fail closed): a step analysis ends Successful, i.e. the rollout promotes, only
after the service answered ``proceed`` for the revision under analysis; every other sequence of
answers, errors, timeouts, restarts or silences ends Failed / Error (aborted) or Inconclusive (paused).
"""

from __future__ import annotations

import json

import pytest

from .argo import (
    ERROR,
    FAILED,
    INCONCLUSIVE,
    SUCCESSFUL,
    AnalysisRun,
    build_arguments_for_rollout_analysis_run,
    Measurement,
    Metric,
    completed,
    evaluate_result,
    merge_args,
    step_outcome,
    template_metrics,
    web_measure,
)
from ._live import DOC_HOST, READ, R, W, doc_example, flaky_proxy, ticks

WINDOW, EXT, PER = 20, 1, 2  # analysis window (ticks), extensions, ticks pushed per Argo interval


def rollout(template: str, namespace: str = "prod", name: str = "inference-api") -> dict:
    """The documented Rollout (docs/integrations.md ``argo-rollout``) for ``template`` in ``namespace``."""
    ro = doc_example("argo-rollout")
    ro["metadata"].update(namespace=namespace, name=name)
    for a in analysis_step(ro)["args"]:
        if a["name"] == "template":
            a["value"] = template
    return ro


def analysis_step(ro: dict) -> dict:
    (step,) = [s["analysis"] for s in ro["spec"]["strategy"]["canary"]["steps"] if "analysis" in s]
    return step


def aid(template: str, pod_hash: str, subject: str = "prod.inference-api") -> str:
    return f"{template}@{subject}@{pod_hash}"


def make_run(url: str, template: str, pod_hash: str, *, doc: str = "argo-analysistemplate", timeout: float | None = None, path: str | None = None,
             ro: dict | None = None) -> AnalysisRun:
    """The AnalysisRun Argo creates for the documented Rollout's analysis step: the step's args built
    from the Rollout (``BuildArgumentsForRolloutAnalysisRun``) merged into the template's
    (``MergeArgs``); the token secret comes in as its value."""
    tpl = doc_example(doc)
    metrics, dry = template_metrics(tpl)
    for m in metrics:
        m.web["url"] = m.web["url"].replace(DOC_HOST, url)
        if path is not None:
            m.web["url"] = url + path
    ro = ro or rollout(template)
    incoming = build_arguments_for_rollout_analysis_run(analysis_step(ro)["args"], pod_hash, ro) + [{"name": "token", "value": READ}]
    args = merge_args(incoming, tpl["spec"]["args"])
    return AnalysisRun(metrics, lambda m: web_measure(m, args, timeout=timeout), dry)


def drive(run: AnalysisRun, feed, limit: int = 1200) -> str:
    for k in range(limit):
        feed(k)
        if completed(run.reconcile()):
            break
    return run.phase


def answers(run: AnalysisRun) -> list[dict]:
    """The service's JSON answers behind the run's measurements (errors have none)."""
    return [json.loads(m.value) for r in run.results.values() for m in r.measurements if m.value]


def feeder(live, aid: str, frame, **kw):
    """Push the next PER ticks before each interval once the analysis exists (the first measurement
    creates it from the template), up to the analysis' full window."""
    pos = [0]

    def feed(k: int) -> None:
        if pos[0] < WINDOW * (1 + EXT) and live.exists(aid):
            live.push(aid, ticks(frame, pos[0], pos[0] + PER, **kw))
            pos[0] += PER

    return feed


def promoted_only_on_proceed(run: AnalysisRun) -> None:
    """The invariant: a Successful run saw a proceed answer for its revision as its last success."""
    if run.phase == SUCCESSFUL:
        succ = [json.loads(m.value) for r in run.results.values() for m in r.measurements if m.phase == SUCCESSFUL]
        assert succ and succ[-1]["verdict"] == "proceed", succ[-3:]


# ---------------------------------------------------------------------- whole rollouts, live service
def test_healthy_revision_promotes(live, healthy):
    sim, cfg = healthy
    live.put_template("argo-healthy", cfg, WINDOW, EXT)
    run = make_run(live.url, "argo-healthy", "h1")
    assert drive(run, feeder(live, aid("argo-healthy", "h1"), sim.canary)) == SUCCESSFUL
    assert step_outcome(run.phase) == "promoted"
    last = answers(run)[-1]
    assert last["verdict"] == "proceed" and last["analysis"] == aid("argo-healthy", "h1") and last["revision"] == "h1"
    promoted_only_on_proceed(run)


def test_regression_aborts(live, healthy):
    sim, cfg = healthy
    live.put_template("argo-regress", cfg, WINDOW, EXT)
    run = make_run(live.url, "argo-regress", "r1")
    assert drive(run, feeder(live, aid("argo-regress", "r1"), sim.canary, scale={"p99_latency_ms": 1.5})) == FAILED
    assert step_outcome(run.phase) == "aborted" and answers(run)[-1]["verdict"] == "rollback"


def test_final_extend_pauses_never_promotes(live, healthy):
    """No valid data: the gate ends with a final extend; the metric stays Inconclusive to count and the
    rollout pauses (the template's inconclusiveLimit = count keeps pending/extend from ending it early)."""
    sim, cfg = healthy
    live.put_template("argo-extend", cfg, WINDOW, EXT)
    run = make_run(live.url, "argo-extend", "e1")
    assert drive(run, feeder(live, aid("argo-extend", "e1"), sim.canary, missing=True)) == INCONCLUSIVE
    assert step_outcome(run.phase) == "paused"
    res = run.results["deploysignal-verdict"]
    assert res.count == run.metrics[0].count == 1000 and res.successful == 0 and res.failed == 0
    final = answers(run)[-1]
    assert final["verdict"] == "extend" and final["final"] is True


def test_analysis_without_telemetry_pauses(live, healthy):
    _, cfg = healthy
    live.put_template("argo-silent", cfg, WINDOW, EXT)
    run = make_run(live.url, "argo-silent", "s1")
    assert drive(run, lambda k: None) == INCONCLUSIVE
    assert {a["verdict"] for a in answers(run)} == {"pending"}


def test_service_down_aborts(healthy):
    from service._proc import free_port

    run = make_run(f"http://127.0.0.1:{free_port()}", "any", "d1", timeout=0.5)
    assert drive(run, lambda k: None) == ERROR
    res = run.results["deploysignal-verdict"]
    assert res.error == 31 and res.count == 0  # consecutiveErrorLimit 30 exceeded
    assert step_outcome(run.phase) == "aborted"


@pytest.mark.parametrize("scale, expect", [(1.0, SUCCESSFUL), (1.5, FAILED)])
def test_flapping_service(live, healthy, scale, expect):
    """The service answers 503 or too late (timeout) on its first two calls and a seeded 35% of the rest: the run still ends as the
    gate decided, and never Successful without a proceed answer."""
    sim, cfg = healthy
    tid = f"argo-flap-{int(scale * 10)}"
    live.put_template(tid, cfg, WINDOW, EXT)
    proxy = flaky_proxy(live.url, 20, 0.25, 0.10)
    try:
        run = make_run(proxy.url, tid, "f1", timeout=0.3)
        assert drive(run, feeder(live, aid(tid, "f1"), sim.canary, scale={"p99_latency_ms": scale})) == expect
    finally:
        proxy.close()
    assert run.results["deploysignal-verdict"].error >= 1 and {"503", "hang"} <= set(proxy.calls)
    promoted_only_on_proceed(run)


def test_restart_mid_rollout(live, healthy):
    """The service is killed (SIGKILL) after 4 intervals and restarted 3 intervals later on the same store:
    the measurements in between are Errors, then the analysis continues where it was."""
    sim, cfg = healthy
    live.put_template("argo-restart", cfg, WINDOW, EXT)
    run = make_run(live.url, "argo-restart", "k1", timeout=0.5)
    fed = feeder(live, aid("argo-restart", "k1"), sim.canary)

    def feed(k: int) -> None:
        if k == 4:
            live.stop()
        if k == 7:
            live.start()
        if live.server is not None:
            fed(k)

    assert drive(run, feed) == SUCCESSFUL
    res = run.results["deploysignal-verdict"]
    assert res.error == 3
    assert live.client.post(f"/v1/analyses/{aid('argo-restart', 'k1')}/replay", headers=R).json()["ok"] is True
    promoted_only_on_proceed(run)


def test_two_revisions_back_to_back(live, healthy):
    """Revision a1 proceeds; revision a2 (new pod-template-hash) must not inherit that verdict: it gets
    its own analysis, which is pending until it has data and then rolls back on a regression."""
    sim, cfg = healthy
    live.put_template("argo-revs", cfg, WINDOW, EXT)
    first = make_run(live.url, "argo-revs", "a1")
    assert drive(first, feeder(live, aid("argo-revs", "a1"), sim.canary)) == SUCCESSFUL
    second = make_run(live.url, "argo-revs", "a2")
    assert second.reconcile() not in (SUCCESSFUL,) and answers(second)[0]["verdict"] == "pending"
    t0 = float(sim.canary.timestamps[WINDOW * (1 + EXT)]) + 60.0
    assert drive(second, feeder(live, aid("argo-revs", "a2"), sim.canary, scale={"p99_latency_ms": 1.5}, t0=t0)) == FAILED
    history = live.client.get("/v1/templates/argo-revs", headers=R).json()["revisions"]
    assert [(h["analysis"], h["revision"], h["verdict"]) for h in history] == [(aid("argo-revs", "a1"), "a1", "proceed"), (aid("argo-revs", "a2"), "a2", "rollback")]


def test_explicit_analysis_refuses_another_revision(live, healthy):
    """An analysis named explicitly is bound to the first revision asking; another revision gets 409
    (Error measurements) and the run aborts instead of promoting on the other revision's proceed."""
    sim, cfg = healthy
    r = live.client.post("/v1/analyses", json={"id": "argo-explicit", "config": json.loads(cfg.to_json()), "window": WINDOW, "max_extensions": EXT},
                         headers={"Authorization": "Bearer w-token-test"})
    assert r.status_code == 201, r.text
    path = "/v1/argo/analyses/argo-explicit?revision={{args.revision}}"
    first = make_run(live.url, "unused", "x1", path=path)
    assert drive(first, feeder(live, "argo-explicit", sim.canary)) == SUCCESSFUL
    second = make_run(live.url, "unused", "x2", path=path)
    assert drive(second, lambda k: None) == ERROR
    assert second.results["deploysignal-verdict"].successful == 0
    # the URL form without a revision no longer answers for the bound analysis (409: Error, aborted)
    unnamed = make_run(live.url, "unused", "x1", path="/v1/argo/analyses/argo-explicit")
    assert drive(unnamed, lambda k: None) == ERROR and unnamed.results["deploysignal-verdict"].successful == 0
    r = live.client.get("/v1/argo/analyses/argo-explicit", headers=R)
    assert r.status_code == 409 and "names no revision" in r.json()["detail"]


def test_another_rollout_with_the_same_hash_is_analysed_apart(live, healthy):
    """The same pod spec has the same pod-template-hash in every namespace: staging's proceed for hash
    s1 must not promote prod's Rollout of s1, which gets its own analysis (pending until it has data)."""
    sim, cfg = healthy
    live.put_template("argo-subj", cfg, WINDOW, EXT)
    staging = make_run(live.url, "argo-subj", "s1", ro=rollout("argo-subj", namespace="staging"))
    assert drive(staging, feeder(live, aid("argo-subj", "s1", "staging.inference-api"), sim.canary)) == SUCCESSFUL
    prod = make_run(live.url, "argo-subj", "s1")
    assert prod.reconcile() != SUCCESSFUL
    first = answers(prod)[0]
    assert first["verdict"] == "pending" and first["analysis"] == aid("argo-subj", "s1") and first["revision"] == "s1"
    assert drive(prod, lambda k: None) == INCONCLUSIVE
    history = live.client.get("/v1/templates/argo-subj", headers=R).json()["revisions"]
    assert [(h["analysis"], h["verdict"]) for h in history] == [(aid("argo-subj", "s1", "staging.inference-api"), "proceed"), (aid("argo-subj", "s1"), "pending")]
    # the template endpoint without the Rollout's subject is refused (422: an Error measurement)
    assert live.client.get("/v1/argo/templates/argo-subj/revisions/s1", headers=R).status_code == 422


def _strict(schema: dict) -> dict:
    """A CRD structural schema as JSON Schema with unknown fields refused, as ``kubectl apply`` (strict
    field validation) does; without it the API server prunes them, which loses the value just the same."""
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) if k in ("items", "additionalProperties") else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def test_documented_yaml_fits_argo_crds():
    """The documented AnalysisTemplates' ``spec.args`` and the Rollout's analysis step validate against
    Argo's CRD schemas (vendored subset, tests/conformance/fixtures/argo_crd_schemas.json, source named
    inside); the form shipped before (``podTemplateHashValue`` in the template's args) does not."""
    import jsonschema

    from ._live import FIXTURES

    crd = json.loads((FIXTURES / "argo_crd_schemas.json").read_text())
    tpl_args, step = _strict(crd["analysistemplate_spec_args"]), _strict(crd["rollout_canary_step_analysis"])
    for doc in ("argo-analysistemplate", "argo-analysistemplate-pre-1.8"):
        jsonschema.validate(doc_example(doc)["spec"]["args"], tpl_args)
    ro = doc_example("argo-rollout")
    for st in ro["spec"]["strategy"]["canary"]["steps"]:
        assert set(st) <= set(crd["step_keys"]), st
    jsonschema.validate(analysis_step(ro), step)
    old = [{"name": "template"}, {"name": "revision", "valueFrom": {"podTemplateHashValue": "Latest"}}]
    with pytest.raises(jsonschema.ValidationError, match="podTemplateHashValue"):
        jsonschema.validate(old, tpl_args)


def test_port_merge_args_like_argo():
    """MergeArgs/ResolveArgs: a template argument the Rollout does not fill stops the AnalysisRun
    (``args.revision was not resolved``), which is what the shipped template did to every rollout: Argo
    never reads ``podTemplateHashValue`` from a template's own args."""
    tpl = doc_example("argo-analysistemplate")["spec"]["args"]
    ro = rollout("t")
    built = build_arguments_for_rollout_analysis_run(analysis_step(ro)["args"], "abc12", ro)
    assert built == [{"name": "template", "value": "t"}, {"name": "revision", "value": "abc12"}, {"name": "namespace", "value": "prod"},
                     {"name": "rollout", "value": "inference-api"}]
    assert merge_args([*built, {"name": "token", "value": "tok"}, {"name": "undeclared", "value": "x"}], tpl) == {
        "template": "t", "revision": "abc12", "namespace": "prod", "rollout": "inference-api", "token": "tok"}
    with pytest.raises(ValueError, match="args.revision was not resolved"):
        merge_args([{"name": "template", "value": "t"}, {"name": "token", "value": "tok"}], tpl)
    old_tpl = [{"name": "template"}, {"name": "revision", "valueFrom": {"podTemplateHashValue": "Latest"}}]
    with pytest.raises(ValueError, match="revision"):  # Argo leaves it unresolved: the port refuses to make up a value
        merge_args([{"name": "template", "value": "t"}], old_tpl)


def test_pre_1_8_template(live, healthy):
    """The template for Argo < 1.8 (no consecutiveSuccessLimit): promotes only after a proceed, at count."""
    sim, cfg = healthy
    live.put_template("argo-old", cfg, WINDOW, EXT)
    run = make_run(live.url, "argo-old", "o1", doc="argo-analysistemplate-pre-1.8")
    assert drive(run, feeder(live, aid("argo-old", "o1"), sim.canary)) == SUCCESSFUL
    assert run.results["deploysignal-verdict"].count == run.metrics[0].count == 1000
    promoted_only_on_proceed(run)
    silent = make_run(live.url, "argo-old", "o2", doc="argo-analysistemplate-pre-1.8")
    assert drive(silent, lambda k: None) == INCONCLUSIVE


# ---------------------------------------------------------------------- the port itself
def _scripted(metric: Metric, phases: list[str], **kw) -> AnalysisRun:
    it = iter(phases)
    return AnalysisRun([metric], lambda m: Measurement(next(it)), **kw)


def test_port_reproduces_the_reported_fail_open_template():
    """The old docs' metric (count 30, inconclusiveLimit 30): 30 pending answers end Successful
    ("Count (30) Reached"), as the issue found with Argo's own code."""
    m = Metric("v", interval="1m", count=30, inconclusive_limit=30, failure_limit=0, success_condition='result.verdict == "proceed"', failure_condition='result.verdict == "rollback"')
    run = _scripted(m, [INCONCLUSIVE] * 30)
    phases = [run.reconcile() for _ in range(30)]
    assert phases[-1] == SUCCESSFUL and set(phases[:-1]) == {"Running"}


def test_port_limits_and_argo_own_fail_open_paths():
    base = dict(interval="1m", success_condition='result.verdict == "proceed"', failure_condition='result.verdict == "rollback"')
    # a body that is not JSON is evaluated as a string: result.verdict on it is expr's runtime error, an Error
    assert evaluate_result("proceed", Metric("v", **base)) == ERROR
    # default consecutiveErrorLimit 4: the fifth error in a row is an Error run
    run = _scripted(Metric("v", **base), [ERROR] * 5)
    assert [run.reconcile() for _ in range(5)][-1] == ERROR
    # an interleaved success resets it
    run = _scripted(Metric("v", count=10, inconclusive_limit=10, **base), [ERROR, ERROR, ERROR, ERROR, INCONCLUSIVE, ERROR])
    assert [run.reconcile() for _ in range(6)][-1] == "Running"
    # terminating a run without measurements, or an indefinite metric, is Successful (operator action)
    run = _scripted(Metric("v", **base), [INCONCLUSIVE], terminate=True)
    assert run.reconcile() == SUCCESSFUL
    run = _scripted(Metric("v", inconclusive_limit=10, **base), [INCONCLUSIVE] * 3)
    assert run.reconcile() == "Running"
    run.terminate = True
    assert run.reconcile() == SUCCESSFUL
    # a dry-run metric's failure does not fail the run: never put the verdict metric under dryRun
    run = _scripted(Metric("v", **base), [FAILED], dry_run=frozenset({"v"}))
    assert run.reconcile() == SUCCESSFUL
    # count reached with consecutiveSuccessLimit but no success: Inconclusive; without failureLimit applicable: Failed
    run = _scripted(Metric("v", count=2, inconclusive_limit=2, consecutive_success_limit=1, **base), [INCONCLUSIVE] * 2)
    assert [run.reconcile() for _ in range(2)][-1] == INCONCLUSIVE
    run = _scripted(Metric("v", count=2, inconclusive_limit=2, consecutive_success_limit=1, failure_limit=-1, **base), [INCONCLUSIVE] * 2)
    assert [run.reconcile() for _ in range(2)][-1] == FAILED
    assert Metric("v").effective_count() == 1 and Metric("v", interval="1m").effective_count() is None


def test_port_web_provider_statuses(live):
    """webmetric.go against the live service: 401 (no token) is an Error, a JSONPath that finds nothing is an
    Error, a body that is not JSON is evaluated as a string, 2xx JSON is classified by the conditions."""
    m = Metric("v", interval="1m", success_condition='result.status == "ok"', web={"url": live.url + "/healthz", "jsonPath": "{$}"})
    assert web_measure(m, {}).phase == SUCCESSFUL
    m.web["jsonPath"] = "{$.nope}"
    assert web_measure(m, {}).phase == ERROR
    m.web = {"url": live.url + "/v1/templates"}
    assert web_measure(m, {}).phase == ERROR  # 401
    m = Metric("v", interval="1m", success_condition='result == "x"',
               web={"url": live.url + "/metrics", "headers": [{"key": "Authorization", "value": f"Bearer {READ}"}]})  # /metrics needs a token
    meas = web_measure(m, {})
    assert meas.phase == FAILED and meas.value.startswith("#")  # a string result; only a success condition: not true = Failed


def test_no_answer_sequence_without_proceed_promotes():
    """Both documented templates under 1,000 seeded random answer sequences (pending, extend, final extend,
    rollback, errors; each kind present or not, a proceed rare when present): a run ends Successful only
    if a proceed answer came. Each answer is classified once by the template's own conditions
    (evaluate_result); the runs go through the ported controller, without a service."""
    import numpy as np

    rng = np.random.default_rng(2026)
    pool = [{"verdict": "pending", "final": False}, {"verdict": "extend", "final": False}, {"verdict": "extend", "final": True},
            {"verdict": "rollback", "final": True}, None, {"verdict": "proceed", "final": True}]
    for doc in ("argo-analysistemplate", "argo-analysistemplate-pre-1.8"):
        metrics, _ = template_metrics(doc_example(doc))
        m = metrics[0]
        phases = [ERROR if a is None else evaluate_result(a, m) for a in pool]
        assert phases == [INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE, FAILED, ERROR, SUCCESSFUL]
        promoted = 0
        for _ in range(500):
            p = rng.dirichlet(np.ones(6)) * (rng.random(6) < 0.5)  # each kind of answer present or not
            p[0] += 1e-3  # never an empty mix
            p[5] *= 0.05  # a proceed, when present, is rare
            draws = iter(rng.choice(6, size=20 * m.count, p=p / p.sum()).tolist())
            seen: list[int] = []

            def measure(_m, draws=draws, seen=seen):
                seen.append(next(draws))
                return Measurement(phases[seen[-1]])

            run = AnalysisRun([m], measure)
            while not completed(run.reconcile()):
                pass
            if run.phase == SUCCESSFUL:
                assert 5 in seen, (doc, seen[-5:])
                promoted += 1
        assert promoted > 20  # the sequences with a proceed do promote: the check can see a success


# ---------------------------------------------------------------------- split-mode analyses, live service
def _split_template(live, tid: str) -> None:
    from service._split import METRICS

    body = {"mode": "split", "metrics": METRICS, "canary_share": 0.5, "window": WINDOW, "max_extensions": EXT}
    r = live.client.put(f"/v1/templates/{tid}", json=body, headers=W)
    assert r.status_code == 200, r.text


def split_feeder(live, aid: str, seed: int, error_ratio: float):
    """Push the next PER aggregated split ticks before each interval once the analysis exists."""
    from service._split import split_ticks

    pos = [0]

    def feed(k: int) -> None:
        if pos[0] < WINDOW * (1 + EXT) and live.exists(aid):
            live.push(aid, split_ticks(seed, PER, start=pos[0], error_ratio=error_ratio))
            pos[0] += PER

    return feed


@pytest.mark.parametrize(("ratio", "phase", "verdict"), [(1.0, SUCCESSFUL, "proceed"), (4.0, FAILED, "rollback")])
def test_split_analysis_through_argo(live, ratio, phase, verdict):
    """A split template (randomised split, aggregated ticks) through the documented AnalysisTemplate and
    the ported controller: healthy -> promoted, a 4x canary error rate -> aborted."""
    tid = f"argo-split-{int(ratio)}"
    _split_template(live, tid)
    run = make_run(live.url, tid, "p1")
    assert drive(run, split_feeder(live, aid(tid, "p1"), 7, ratio)) == phase
    last = answers(run)[-1]
    assert last["verdict"] == verdict and last["analysis"] == aid(tid, "p1")
    assert live.verdict(aid(tid, "p1"))["mode"] == "split"
    promoted_only_on_proceed(run)
