"""Flagger conformance: the documented Canary (loaded from docs/integrations.md) run by the port of
Flagger's webhook caller and phase machine (``flagger.py``: fluxcd/flagger at
15bd6ad555e6c935da55f0ab95977be74c149bd6) against a live ``deploysignal serve``, through whole rollouts.

The property under test (fail closed): a canary reaches Succeeded (promotion) only after
``confirm-promotion`` passed, which the service allows only on ``proceed`` for the revision under
analysis; every other sequence ends Failed (rolled back) or held, and the rows of the docs' table say which.
"""

from __future__ import annotations

import copy
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .flagger import FAILED, PROGRESSING, SUCCEEDED, WAITING, WAITING_PROMOTION, Canary, call_webhook
from ._live import DOC_HOST, READ, R, doc_example, flaky_proxy, ticks

WINDOW, EXT, PER = 20, 1, 2


def canary(url: str, template: str, *, doc: dict | None = None, timeout: float | None = None, **meta_override) -> Canary:
    d = copy.deepcopy(doc or doc_example("flagger-canary"))
    d["metadata"]["name"] = template  # one canary per test (the events are per canary)
    for w in d["spec"]["analysis"]["webhooks"]:
        w["metadata"] = {**w["metadata"], "template": template, "token": READ, **meta_override}
    return Canary.from_yaml(d, {DOC_HOST: url}, timeout_override=timeout)


def aid_of(c: Canary, template: str | None = None, checksum: str | None = None) -> str:
    """The analysis of the canary's (current) revision: ``<template>@<namespace>.<name>@<checksum>``."""
    return f"{template or c.webhooks[0].metadata['template']}@{c.namespace}.{c.name}@{checksum or c.checksum()}"


def feeder(live, cd: Canary, frame, prefix: str | None = None, **kw):
    """Before each interval, push the next PER ticks to the analysis of the canary's current revision."""
    pos: dict[str, int] = {}

    def feed(k: int, c: Canary) -> None:
        aid = aid_of(c, prefix)
        p = pos.get(aid, 0)
        if p < WINDOW * (1 + EXT) and live.exists(aid):
            live.push(aid, ticks(frame, p, p + PER, **kw))
            pos[aid] = p + PER

    return feed


def promoted_only_on_proceed(live, cd: Canary) -> None:
    """Succeeded implies the last confirm-promotion call passed, for the revision that was promoted, whose
    analysis says proceed."""
    if cd.phase == SUCCEEDED:
        promo = [c for c in cd.calls if c[0] == "confirm-promotion"]
        assert promo and promo[-1][2] and promo[-1][1] == cd.checksum()
        assert live.verdict(aid_of(cd))["verdict"] == "proceed"


def start(cd: Canary, spec: str = "v1") -> None:
    cd.new_revision(spec)


# ---------------------------------------------------------------------- whole rollouts, live service
def test_healthy_canary_promotes(live, healthy):
    sim, cfg = healthy
    live.put_template("fl-healthy", cfg, WINDOW, EXT)
    cd = canary(live.url, "fl-healthy")
    start(cd)
    assert cd.run(200, feeder(live, cd, sim.canary)) == SUCCEEDED
    promoted_only_on_proceed(live, cd)
    assert cd.failed_checks == 0


def test_regression_rolls_back_through_the_rollback_hook(live, healthy):
    sim, cfg = healthy
    live.put_template("fl-regress", cfg, WINDOW, EXT)
    cd = canary(live.url, "fl-regress")
    start(cd)
    assert cd.run(200, feeder(live, cd, sim.canary, scale={"p99_latency_ms": 1.5})) == FAILED
    assert ("rollback", cd.checksum(), True) in cd.calls and cd.failed_checks < cd.threshold_()


def test_final_extend_is_given_up_at_the_threshold(live, healthy):
    """No valid data: final extend. The rollout hook fails, Flagger counts failed checks and rolls back
    after `threshold` of them; promotion is never confirmed; the verdict stays extend (not rollback)."""
    sim, cfg = healthy
    live.put_template("fl-extend", cfg, WINDOW, EXT)
    cd = canary(live.url, "fl-extend")
    start(cd)
    assert cd.run(200, feeder(live, cd, sim.canary, missing=True)) == FAILED
    assert cd.failed_checks == cd.threshold_() == 5
    assert not any(ok for kind, _, ok in cd.calls if kind in ("confirm-promotion", "rollback"))
    v = live.verdict(aid_of(cd))
    assert v["verdict"] == "extend" and v["final"] is True


def test_no_telemetry_holds_promotion(live, healthy):
    _, cfg = healthy
    live.put_template("fl-silent", cfg, WINDOW, EXT)
    cd = canary(live.url, "fl-silent")
    start(cd)
    assert cd.run(60) == WAITING_PROMOTION
    assert not any(ok for kind, _, ok in cd.calls if kind == "confirm-promotion")
    # opt-in bound: metadata.max_silence_seconds fails the rollout hook once the analysis has been silent
    # that long (service clock), so Flagger rolls back at its threshold instead of holding forever
    bounded = canary(live.url, "fl-silent", max_silence_seconds="1")
    bounded.name = "fl-silent-bounded"
    bounded.new_revision("s2")
    t0 = time.monotonic()
    assert bounded.run(400, lambda k, c: time.sleep(0.05)) == FAILED
    assert bounded.failed_checks == bounded.threshold_() and time.monotonic() - t0 >= 1.0
    r = live.client.post("/v1/flagger/rollout", json={"name": "x", "namespace": "y", "checksum": "s9", "metadata": {"template": "fl-silent", "token": READ, "max_silence_seconds": "soon"}})
    assert r.status_code == 422 and "max_silence_seconds" in r.text


def test_service_down_rolls_back(healthy):
    from service._proc import free_port

    cd = canary(f"http://127.0.0.1:{free_port()}", "fl-down", timeout=0.5)
    start(cd)
    assert cd.run(50) == FAILED
    assert cd.failed_checks == cd.threshold_() and cd.canary_weight == 0


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_flapping_service(live, healthy, scale):
    """503s and answers later than the timeout on the first calls and a seeded 20% of the rest: Flagger
    counts the failed rollout-hook calls (it may give the canary up), and never promotes without proceed."""
    sim, cfg = healthy
    tid = f"fl-flap-{int(scale * 10)}"
    live.put_template(tid, cfg, WINDOW, EXT)
    proxy = flaky_proxy(live.url, 7, 0.12, 0.08)
    try:
        cd = canary(proxy.url, tid, timeout=0.3)
        start(cd)
        phase = cd.run(200, feeder(live, cd, sim.canary, scale={"p99_latency_ms": scale}))
    finally:
        proxy.close()
    assert {"503", "hang"} <= set(proxy.calls) and any(not ok for _, _, ok in cd.calls)
    assert phase in (SUCCEEDED, FAILED)
    if scale > 1:
        assert phase == FAILED
    promoted_only_on_proceed(live, cd)


def test_restart_mid_rollout(live, healthy):
    """SIGKILL after 4 intervals, back 3 intervals later on the same store: 3 failed checks (< threshold),
    then the analysis continues and the canary is promoted on proceed."""
    sim, cfg = healthy
    live.put_template("fl-restart", cfg, WINDOW, EXT)
    cd = canary(live.url, "fl-restart", timeout=0.5)
    start(cd)
    fed = feeder(live, cd, sim.canary)

    def between(k: int, c: Canary) -> None:
        if k == 4:
            live.stop()
        if k == 7:
            live.start()
        if live.server is not None:
            fed(k, c)

    assert cd.run(200, between) == SUCCEEDED
    assert cd.failed_checks == 3
    promoted_only_on_proceed(live, cd)
    assert live.client.post(f"/v1/analyses/{aid_of(cd)}/replay", headers=R).json()["ok"] is True


def test_two_revisions_back_to_back(live, healthy):
    """v1 is promoted on its proceed; v2 gets a new checksum, hence a new analysis: pending, then rolled
    back on its own regression. A revision replaced mid-analysis (v3 -> v4) restarts the analysis too."""
    sim, cfg = healthy
    live.put_template("fl-revs", cfg, WINDOW, EXT)
    cd = canary(live.url, "fl-revs")
    start(cd, "v1")
    assert cd.run(200, feeder(live, cd, sim.canary)) == SUCCEEDED
    v1 = cd.checksum()
    cd.new_revision("v2")
    cd.advance()  # new revision detected: Progressing with the new checksum
    v2 = cd.checksum()
    assert v2 != v1
    cd.advance()
    assert live.verdict(aid_of(cd, checksum=v2))["verdict"] == "pending"
    assert cd.run(200, feeder(live, cd, sim.canary, scale={"p99_latency_ms": 1.5})) == FAILED
    cd.new_revision("v3")
    cd.advance()  # Progressing with v3's checksum
    feed = feeder(live, cd, sim.canary)
    for k in range(4):
        feed(k, cd)
        cd.advance()
    v3 = cd.checksum()
    cd.new_revision("v4")  # replaced during its analysis: Flagger restarts with the new checksum
    assert cd.run(200, feed) == SUCCEEDED and cd.checksum() != v3
    promoted_only_on_proceed(live, cd)
    hist = [(h["revision"], h["verdict"]) for h in live.client.get("/v1/templates/fl-revs", headers=R).json()["revisions"]]
    assert hist == [(v1, "proceed"), (v2, "rollback"), (v3, "pending"), (cd.checksum(), "proceed")]


def test_explicit_analysis_is_bound_to_one_checksum(live, healthy):
    """metadata.analysis names one analysis: the first checksum binds it; the next revision's hooks get 409
    and Flagger rolls that revision back at the threshold instead of promoting it on the old proceed."""
    import json

    sim, cfg = healthy
    r = live.client.post("/v1/analyses", json={"id": "fl-explicit", "config": json.loads(cfg.to_json()), "window": WINDOW, "max_extensions": EXT},
                         headers={"Authorization": "Bearer w-token-test"})
    assert r.status_code == 201
    doc = copy.deepcopy(doc_example("flagger-canary"))
    for w in doc["spec"]["analysis"]["webhooks"]:
        w["metadata"] = {"analysis": "fl-explicit", "token": READ}
    cd = Canary.from_yaml(doc, {DOC_HOST: live.url})
    cd.new_revision("e1")
    pos = [0]

    def feed(k: int, c: Canary) -> None:
        if pos[0] < WINDOW * (1 + EXT):
            live.push("fl-explicit", ticks(sim.canary, pos[0], pos[0] + PER))
            pos[0] += PER

    assert cd.run(200, feed) == SUCCEEDED
    cd.new_revision("e2")
    assert cd.run(200) == FAILED
    assert not any(ok for kind, cs, ok in cd.calls if cs == cd.checksum() and kind == "confirm-promotion")


def test_events_and_confirm_rollout(live, healthy):
    """Event hooks are recorded (token not stored); a confirm-rollout hook holds the canary (Waiting) while
    the template is missing, never binds the (previous) checksum it is sent, and passes once it exists."""
    sim, cfg = healthy
    doc = copy.deepcopy(doc_example("flagger-canary"))
    doc["spec"]["analysis"]["webhooks"].insert(0, {"name": "ds-confirm", "type": "confirm-rollout", "url": DOC_HOST + "/v1/flagger/confirm-rollout", "metadata": {}})
    cd = canary(live.url, "fl-events", doc=doc)
    start(cd)
    assert cd.advance() == WAITING and cd.advance() == WAITING
    before = cd.checksum()
    live.put_template("fl-events", cfg, WINDOW, EXT)
    assert cd.run(200, feeder(live, cd, sim.canary)) == SUCCEEDED
    confirm = [c for c in cd.calls if c[0] == "confirm-rollout"]
    assert confirm[-1] == ("confirm-rollout", before, True) and before != cd.checksum()
    assert not live.exists(aid_of(cd, checksum=before))
    events = live.client.get("/v1/flagger/events", params={"canary": "prod.fl-events"}, headers=R).json()
    msgs = [e["body"]["metadata"].get("eventMessage") for e in events if e["body"]["hook"] == "event"]
    assert msgs and msgs[-1] == "Promotion completed!" and "New revision detected! Scaling up" in msgs
    assert all("token" not in e["body"]["metadata"] for e in events)


def healthy_and_final_extend(live, healthy, doc: dict, tid: str, extend_phase: str, intervals: int) -> Canary:
    """Run a Canary variant twice: healthy data (must be promoted on proceed), then no valid data (a
    final extend, must end in ``extend_phase``); returns the second canary."""
    sim, cfg = healthy
    for name, kw, expect in ((tid, {}, SUCCEEDED), (tid + "-extend", {"missing": True}, extend_phase)):
        live.put_template(name, cfg, WINDOW, EXT)
        cd = canary(live.url, name, doc=doc)
        start(cd)
        assert cd.run(intervals, feeder(live, cd, sim.canary, **kw)) == expect
        promoted_only_on_proceed(live, cd)
    return cd


def test_blue_green_iterations(live, healthy):
    doc = copy.deepcopy(doc_example("flagger-canary"))
    a = doc["spec"]["analysis"]
    del a["maxWeight"], a["stepWeight"]
    a["iterations"] = 5
    healthy_and_final_extend(live, healthy, doc, "fl-bg", FAILED, 200)


def test_confirm_traffic_increase_holds_after_a_final_extend(live, healthy):
    """A Canary gating traffic steps with confirm-traffic-increase instead of a rollout hook: pending passes
    the steps, a final extend holds them (weight frozen, nothing counted, never promoted)."""
    doc = copy.deepcopy(doc_example("flagger-canary"))
    doc["spec"]["analysis"]["stepWeight"] = 1  # 50 steps: the final extend (interval 20) comes while stepping
    for w in doc["spec"]["analysis"]["webhooks"]:
        if w["type"] == "rollout":
            w["type"], w["url"] = "confirm-traffic-increase", w["url"].replace("/rollout", "/confirm-traffic-increase")
    cd = healthy_and_final_extend(live, healthy, doc, "fl-cti", PROGRESSING, 120)
    assert cd.failed_checks == 0 and 0 < cd.canary_weight < cd.max_weight
    assert not cd.calls[-1][2] and cd.calls[-1][0] == "confirm-traffic-increase"


def test_confirm_promotion_only_holds_a_final_extend(live, healthy):
    """The documented Canary that gates only with confirm-promotion (no rollout hook): promoted on
    proceed; a final extend holds it in WaitingPromotion (never promoted, nothing counted). A
    confirm-promotion that also passed on a final extend would promote here."""
    doc = copy.deepcopy(doc_example("flagger-canary"))
    hooks = doc["spec"]["analysis"]["webhooks"]
    doc["spec"]["analysis"]["webhooks"] = [w for w in hooks if w["type"] in ("confirm-promotion", "event")]
    cd = healthy_and_final_extend(live, healthy, doc, "fl-promo-only", WAITING_PROMOTION, 120)
    v = live.verdict(aid_of(cd))
    assert v["verdict"] == "extend" and v["final"] is True and cd.failed_checks == 0
    assert [c for c in cd.calls if c[0] == "confirm-promotion"][-1][2] is False


def test_same_checksum_in_another_namespace_is_analysed_apart(live, healthy):
    """A checksum is the same for the same spec in another namespace or cluster: staging's proceed must
    not confirm prod's promotion; prod's Canary gets its own analysis and waits for it."""
    sim, cfg = healthy
    live.put_template("fl-subj", cfg, WINDOW, EXT)
    staging = canary(live.url, "fl-subj")
    staging.namespace = "staging"
    start(staging, "same-spec")
    assert staging.run(200, feeder(live, staging, sim.canary)) == SUCCEEDED
    prod = canary(live.url, "fl-subj")
    start(prod, "same-spec")
    assert prod.run(60) == WAITING_PROMOTION  # no telemetry for prod: held, not promoted on staging's proceed
    assert prod.checksum() == staging.checksum()
    assert not any(ok for kind, _, ok in prod.calls if kind == "confirm-promotion")
    assert live.verdict(aid_of(prod))["verdict"] == "pending" and live.verdict(aid_of(staging))["verdict"] == "proceed"
    body = {"name": "fl-subj", "namespace": "other", "checksum": prod.checksum(), "metadata": {"template": "fl-subj", "token": READ}}
    r = live.client.post("/v1/flagger/confirm-promotion", json=body)
    assert r.status_code == 409 and r.json()["analysis"] == f"fl-subj@other.fl-subj@{prod.checksum()}"


def test_bound_explicit_analysis_needs_a_checksum(live, healthy):
    """Once an explicit analysis is bound, a gate call without a checksum is refused (409), never
    answered with the bound revision's verdict."""
    import json

    sim, cfg = healthy
    W = {"Authorization": "Bearer w-token-test"}
    assert live.client.post("/v1/analyses", json={"id": "fl-nock", "config": json.loads(cfg.to_json()), "window": WINDOW, "max_extensions": 0}, headers=W).status_code == 201
    live.push("fl-nock", ticks(sim.canary, 0, WINDOW))
    body = {"name": "api", "namespace": "prod", "metadata": {"analysis": "fl-nock", "token": READ}}
    assert live.client.post("/v1/flagger/confirm-promotion", json={**body, "checksum": "c1"}).status_code == 200
    for hook in ("confirm-promotion", "rollout", "confirm-traffic-increase"):
        r = live.client.post(f"/v1/flagger/{hook}", json=body)
        assert r.status_code == 409 and "names no revision" in r.json()["reason"], (hook, r.text)


# ---------------------------------------------------------------------- the port itself
def test_port_status_code_rule():
    """callWebhook: a status above 202 fails (so 203 and 204 do); 5xx is retried `retries` times."""
    seen: list[int] = []
    status = {"code": 200}

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(status["code"])
            self.send_response(status["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/"
    try:
        out = {}
        for code in (200, 201, 202, 203, 204, 409, 501):
            status["code"] = code
            out[code] = call_webhook(url, {}) is None
        assert out == {200: True, 201: True, 202: True, 203: False, 204: False, 409: False, 501: False}
        status["code"] = 503
        seen.clear()
        assert call_webhook(url, {}, retries=2) is not None and seen == [503, 503, 503]
        status["code"] = 429  # go-retryablehttp v0.7.8 retries Too Many Requests as well
        seen.clear()
        assert call_webhook(url, {}, retries=1) is not None and seen == [429, 429]
    finally:
        srv.shutdown()
        srv.server_close()
