"""Issue 23, item 6: bad input never gives a 500; --store must exist unless --create; corrupt stores are
a clear error; batch ids are checked against content; control {} is refused; analyses can be deleted
(tombstone with the final audit head) and retained. (Stalled connections: the tenancy branch's
request head/body timeouts and their tests.)

Each test fails on 0.4.0 / the code before this change (noted per test)."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from deploysignal.cli import app as cli_app

from ._split import METRICS, split_ticks
from .conftest import KAYENTA, READ, R, W, make_client, ticks_of

JSON_H = {**W, "content-type": "application/json"}


def _raw(c, method, path, text, headers=JSON_H):
    """Send ``text`` as written: ``\\ud800`` stays a JSON escape of a lone surrogate."""
    return c.request(method, path, content=text.encode(), headers=headers)


def _json_error(r, status, *needles):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    for n in needles:
        assert n in detail, detail
    return detail


@pytest.fixture()
def svc(tmp_path, step_sim):
    sim, cfg = step_sim
    c = make_client(tmp_path)
    c.__enter__()
    assert c.post("/v1/analyses", json={"id": "f", "config": json.loads(cfg.to_json()), "window": 10}, headers=W).status_code == 201
    yield c, sim, cfg
    c.__exit__(None, None, None)


def test_lone_surrogates_and_nul_are_4xx_json_naming_the_field(svc):
    """Was: Flagger ``metadata.token`` / ``metadata.analysis`` with a lone surrogate gave 500 text/plain
    (no token needed); NUL in a cohort name was accepted and stored."""
    c, sim, _ = svc
    nohdr = {"content-type": "application/json"}
    _json_error(_raw(c, "POST", "/v1/flagger/rollout", '{"name":"a","namespace":"b","metadata":{"token":"\\ud800"}}', nohdr),
                422, "body.metadata.token", "surrogate")
    _json_error(_raw(c, "POST", "/v1/flagger/rollout", '{"name":"a","namespace":"b","metadata":{"token":"%s","analysis":"x\\udfff"}}' % READ, nohdr),
                422, "body.metadata.analysis", "surrogate")
    tick = json.dumps({"ticks": [{**ticks_of(sim.canary, 0, 1)[0], "cohort": "@C@"}]})
    _json_error(_raw(c, "POST", "/v1/analyses/f/ticks", tick.replace("@C@", "t\\u0000")), 422, "body.ticks.0.cohort", "NUL")
    _json_error(_raw(c, "POST", "/v1/analyses/f/ticks", tick.replace("@C@", "t\\u0007")), 422, "cohort")
    _json_error(_raw(c, "POST", "/v1/analyses", '{"id": "a\\ud800"}'), 422, "body.id")
    _json_error(_raw(c, "POST", "/v1/analyses/f/void", '{"reason": "\\udc00"}'), 422, "body.reason")
    _json_error(c.get("/v1/analyses/%00", headers=W), 400, "NUL")
    _json_error(c.get("/v1/flagger/events?canary=a%00", headers=W), 400, "NUL")
    assert c.get("/v1/analyses/f", headers=W).json()["n_ticks"] == 0  # nothing was ingested
    ok = '{"name":"a","namespace":"b","metadata":{"token":"%s","analysis":"f","note":"\\ud83d\\ude00"}}' % READ  # a paired surrogate is text
    assert _raw(c, "POST", "/v1/flagger/rollout", ok, nohdr).status_code == 200


def test_free_form_fields_nested_too_deep_are_422(svc):
    """Was: a Flagger payload (no bearer header needed) or Kayenta request with a free-form field nested
    ~300 deep was validated, then pydantic could not serialise it: 500 (found by the fuzz suite)."""
    c, _, _ = svc
    nohdr = {"content-type": "application/json"}
    deep = '{"a":' * 300 + "1" + "}" * 300
    for hook in ("event", "rollout"):
        body = '{"name":"web","namespace":"prod","metadata":{"token":"%s"},"extra":%s}' % (READ, deep)
        _json_error(_raw(c, "POST", f"/v1/flagger/{hook}", body, nohdr), 422, "body.extra.a.a", "nested deeper than 64")
    body = '{"scopes":{"default":{"experimentScope":{"scope":"r1"}}},"thresholds":{"pass":75,"marginal":50},"siteLocal":%s}' % deep
    _json_error(_raw(c, "POST", f"/kayenta/{KAYENTA}/canary/f", body, nohdr), 422, "body.siteLocal.a", "nested deeper than 64")
    _json_error(_raw(c, "POST", "/v1/analyses", '{"id":"d","config":%s}' % deep), 422, "body.config.a", "nested deeper")
    ok = '{"name":"web","namespace":"prod","metadata":{"token":"%s"},"extra":%s}' % (READ, '{"a":' * 60 + "1" + "}" * 60)
    assert _raw(c, "POST", "/v1/flagger/event", ok, nohdr).status_code == 200  # within the limit: recorded, and listed
    assert c.get("/v1/flagger/events?canary=prod.web", headers=R).status_code == 200


def test_control_characters_in_signal_metric_and_tier_names(svc):
    """Was: accepted (they end up in audit records, metric labels and messages)."""
    c, _, cfg = svc
    base = {"timestamps": [1.7e9, 1.7e9 + 60, 1.7e9 + 120], "values": {"bad\tname": [1.0, 2.0, 3.0]}}
    _json_error(c.post("/v1/analyses", json={"baseline": base}, headers=W), 422, "baseline.values", "control character")
    metrics = {"err\nors": METRICS["errors"]}
    _json_error(c.post("/v1/analyses", json={"id": "s", "mode": "split", "metrics": metrics}, headers=W), 422, "metrics", "control character")
    assert c.post("/v1/analyses", json={"id": "sp", "mode": "split", "metrics": METRICS}, headers=W).status_code == 201
    t = split_ticks(0, 1)
    t[0]["tier"] = "gpu\x1b[31m"
    _json_error(c.post("/v1/analyses/sp/ticks", json={"ticks": t}, headers=W), 422, "row 1", "tier")


@pytest.mark.parametrize("ch", ["\u202e", "\u2028", "\u2029", "\u200b", "\ufeff", "\U000e0041"])
def test_format_characters_in_names_are_refused_like_control_characters(svc, ch):
    """Was: a bidi override, a line separator or a zero-width character (Unicode Cf, Zl, Zp) accepted in
    a name (a cohort "a\u2028b\u202e" got a 200): they spoof or break audit lines, labels and messages."""
    c, sim, cfg = svc
    base = {"timestamps": [1.7e9, 1.7e9 + 60, 1.7e9 + 120], "values": {f"bad{ch}name": [1.0, 2.0, 3.0]}}
    _json_error(c.post("/v1/analyses", json={"baseline": base}, headers=W), 422, "baseline.values", "format character")
    _json_error(c.post("/v1/analyses", json={"id": "s", "mode": "split", "metrics": {f"err{ch}": METRICS["errors"]}}, headers=W), 422, "metrics")
    ticks = ticks_of(sim.canary, 0, 1)
    ticks[0]["cohort"] = f"a{ch}b"
    _json_error(c.post("/v1/analyses/f/ticks", json={"ticks": ticks}, headers=W), 422, "cohort")
    assert c.post("/v1/analyses", json={"id": "sp", "mode": "split", "metrics": METRICS}, headers=W).status_code == 201
    t = split_ticks(0, 1)
    t[0]["tier"] = f"gpu{ch}"
    _json_error(c.post("/v1/analyses/sp/ticks", json={"ticks": t}, headers=W), 422, "row 1", "tier")
    ticks[0]["cohort"] = "caf\u00e9 \u65e5\u672c"  # other non-ASCII text is a name like any other
    assert c.post("/v1/analyses/f/ticks", json={"ticks": ticks}, headers=W).status_code == 200


def test_empty_control_refused_in_two_sample_mode(svc):
    """Was: ``control: {}`` accepted in two-sample mode (a tick without a control, unnoticed)."""
    c, sim, cfg = svc
    assert c.post("/v1/analyses", json={"id": "t2", "config": json.loads(cfg.to_json()), "mode": "two-sample"}, headers=W).status_code == 201
    ticks = ticks_of(sim.canary, 0, 3, control=sim.control)
    ticks[1]["control"] = {}
    _json_error(c.post("/v1/analyses/t2/ticks", json={"ticks": ticks}, headers=W), 422, "row 2", "control")
    ticks[1]["control"] = []
    _json_error(c.post("/v1/analyses/t2/ticks", json={"ticks": ticks}, headers=W), 422, "control")
    ticks[1]["control"] = {"nope": 1.0}
    _json_error(c.post("/v1/analyses/t2/ticks", json={"ticks": ticks}, headers=W), 422, "control")
    assert c.get("/v1/analyses/t2", headers=W).json()["n_ticks"] == 0
    assert c.post("/v1/analyses/t2/ticks", json={"ticks": ticks_of(sim.canary, 0, 3, control=sim.control)}, headers=W).status_code == 200


def test_reused_batch_id_with_other_content_is_409(svc):
    """Was: a reused batch_id with different ticks answered as a duplicate (200) and its ticks dropped."""
    c, sim, _ = svc
    first = c.post("/v1/analyses/f/ticks", json={"batch_id": "b1", "ticks": ticks_of(sim.canary, 0, 3)}, headers=W)
    assert first.status_code == 200 and first.json()["duplicate"] is False
    again = c.post("/v1/analyses/f/ticks", json={"batch_id": "b1", "ticks": ticks_of(sim.canary, 0, 3)}, headers=W)
    assert again.status_code == 200 and again.json() == {**first.json(), "duplicate": True}  # a retry stays idempotent
    other = c.post("/v1/analyses/f/ticks", json={"batch_id": "b1", "ticks": ticks_of(sim.canary, 3, 6)}, headers=W)
    _json_error(other, 409, "'b1'", "different content", "the earlier batch with that id (3 ticks from tick 0) was ingested; this one")
    changed = ticks_of(sim.canary, 0, 3)
    changed[2]["values"][next(iter(changed[2]["values"]))] = 123.0  # one value differs
    _json_error(c.post("/v1/analyses/f/ticks", json={"batch_id": "b1", "ticks": changed}, headers=W), 409, "different content")
    assert c.get("/v1/analyses/f", headers=W).json()["n_ticks"] == 3
    assert c.post("/v1/analyses/f/ticks", json={"batch_id": "b2", "ticks": ticks_of(sim.canary, 3, 6)}, headers=W).json()["n_ticks"] == 6


def test_delete_keeps_a_tombstone_and_drops_the_engine(svc, tmp_path):
    """New: DELETE /v1/analyses/{id} (write token), GET /v1/deleted; an undecided analysis needs force."""
    c, sim, _ = svc
    mgr = c.app.state.manager
    assert c.post("/v1/analyses/f/ticks", json={"ticks": ticks_of(sim.canary, 0, 4)}, headers=W).json()["final"] is False
    _json_error(c.delete("/v1/analyses/f", headers=R), 403, "write token")
    _json_error(c.delete("/v1/analyses/f", headers=W), 409, "undecided", "force=true")
    last = c.post("/v1/analyses/f/ticks", json={"ticks": ticks_of(sim.canary, 4, 12)}, headers=W).json()
    assert last["final"] is True
    exported = c.get("/v1/analyses/f/audit", headers=R).text
    assert "f" in mgr.cached() and 'deploysignal_ticks_ingested_total{analysis="f"}' in c.get("/metrics", headers=W).text
    tomb = c.delete("/v1/analyses/f?reason=released", headers=W).json()
    assert 'analysis="f"' not in c.get("/metrics", headers=W).text  # no series left behind for a deleted analysis
    assert tomb["audit_head"] == last["audit_head"] and tomb["n_ticks"] == 12 and tomb["verdict"] == last["verdict"] and tomb["reason"] == "operator: released"
    assert "f" not in mgr.cached()
    _json_error(c.get("/v1/analyses/f", headers=R), 404, "no analysis")
    _json_error(c.post("/v1/analyses/f/ticks", json={"ticks": ticks_of(sim.canary, 12, 13)}, headers=W), 404)
    assert [t["audit_head"] for t in c.get("/v1/deleted?analysis=f", headers=R).json()] == [last["audit_head"]]
    store = mgr.store
    assert store.audit_lines("f") == [] and store.ticks("f", 0, 100) == []
    # the audit log exported before the delete verifies against the tombstone's head
    log = tmp_path / "f.audit.jsonl"
    log.write_text(exported)
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(log), "--head", tomb["audit_head"]])
    assert r.exit_code == 0, r.output
    _json_error(c.delete("/v1/analyses/f", headers=W), 404)


def test_deleted_and_recreated_id_is_not_served_from_another_process_cache(tmp_path, step_sim):
    """Two service processes on one store (``serve --workers 2``, or ``service delete`` beside a running
    service): one deletes an analysis and creates the id again; the other's cached engine belongs to
    the deleted analysis and must not answer for the new one (it would serve the old final verdict)."""
    sim, cfg = step_sim
    a, b = make_client(tmp_path), make_client(tmp_path)  # the same store file
    with a, b:
        body = {"id": "x", "config": json.loads(cfg.to_json()), "window": 10}
        assert a.post("/v1/analyses", json=body, headers=W).status_code == 201
        assert a.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is True
        assert b.get("/v1/analyses/x", headers=R).json()["final"] is True  # b caches the engine
        assert a.delete("/v1/analyses/x", headers=W).status_code == 200
        _json_error(b.get("/v1/analyses/x", headers=R), 404)
        assert "x" not in b.app.state.manager.cached()  # b let go of the deleted analysis' engine on its 404
        assert a.post("/v1/analyses", json={**body, "window": 480}, headers=W).status_code == 201  # the same id, another analysis
        assert a.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is False
        for c in (b, a):
            got = c.get("/v1/analyses/x", headers=R).json()
            assert got["final"] is False and got["n_ticks"] == 12 and got["settings"]["window"] == 480, got
        nxt = b.post("/v1/analyses/x/ticks", json={"ticks": ticks_of(sim.canary, 12, 13)}, headers=W).json()
        assert nxt["final"] is False and nxt["n_ticks"] == 13
        assert a.post("/v1/analyses/x/replay", headers=R).json()["ok"] is True


def test_retention_deletes_decided_analyses_only(svc):
    """New: serve --retain-days; an undecided analysis is never deleted by retention."""
    from deploysignal.service._retention import retain_once

    c, sim, cfg = svc
    assert c.post("/v1/analyses", json={"id": "open", "config": json.loads(cfg.to_json()), "window": 480}, headers=W).status_code == 201
    c.post("/v1/analyses/open/ticks", json={"ticks": ticks_of(sim.canary, 0, 5)}, headers=W)
    assert c.post("/v1/analyses/f/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W).json()["final"] is True
    mgr = c.app.state.manager
    now = time.time()
    assert retain_once(mgr, 30, now) == []  # created just now: younger than 30 days
    assert retain_once(mgr, 30, now + 31 * 86400) == ["f"]
    assert [r.id for r in mgr.store.list()] == ["open"]
    assert c.get("/v1/deleted", headers=R).json()[0]["reason"] == "retention: decided, older than 30 days"


def test_retention_task_runs_in_the_service(tmp_path, step_sim):
    """The periodic task started with the app (``serve --retain-days``): a decided analysis goes, its
    counter series too; an undecided one stays however old."""
    sim, cfg = step_sim
    with make_client(tmp_path, retain_days=2e-5, retention_interval=0.2) as c:  # 2e-5 days: 1.7 s
        for aid, window in (("done", 10), ("open", 480)):
            assert c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": window}, headers=W).status_code == 201
            c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks_of(sim.canary, 0, 12)}, headers=W)  # ticks stamped long ago
        assert c.get("/v1/analyses/done", headers=R).json()["final"] is True
        deadline = time.monotonic() + 30
        while c.get("/v1/analyses/done", headers=R).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        _json_error(c.get("/v1/analyses/done", headers=R), 404)
        assert c.get("/v1/analyses/open", headers=R).json()["final"] is False
        assert [t["analysis"] for t in c.get("/v1/deleted", headers=R).json()] == ["done"]
        assert 'analysis="done"' not in c.get("/metrics", headers=W).text and 'analysis="open"' in c.get("/metrics", headers=W).text


def test_cli_service_delete(tmp_path, step_sim):
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        c.post("/v1/analyses", json={"id": "a", "config": json.loads(cfg.to_json()), "window": 10}, headers=W)
        c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 0, 3)}, headers=W)
    url = f"sqlite:///{tmp_path / 'ds.db'}"
    r = CliRunner().invoke(cli_app, ["service", "delete", "--store", url, "--analysis", "a"])
    assert r.exit_code == 1 and "undecided" in r.output
    r = CliRunner().invoke(cli_app, ["service", "delete", "--store", url, "--analysis", "a", "--force", "--reason", "bad source"])
    assert r.exit_code == 0 and "3 ticks" in r.output, r.output
    r = CliRunner().invoke(cli_app, ["service", "delete", "--store", url, "--analysis", "a", "--force"])
    assert r.exit_code == 2 and "no analysis" in r.output
    r = CliRunner().invoke(cli_app, ["service", "delete", "--store", f"sqlite:///{tmp_path / 'typo.db'}", "--analysis", "a"])
    assert r.exit_code == 2 and "no SQLite store" in r.output and not (tmp_path / "typo.db").exists()


def test_serve_store_must_exist_unless_create_and_corrupt_store_is_exit_2(tmp_path):
    """Was: a mistyped --store started healthy on a new empty database; a corrupt file gave a traceback."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([{"name": "w", "sha256": "0" * 64, "role": "write"}]))
    missing = tmp_path / "typo.db"
    r = CliRunner().invoke(cli_app, ["serve", "--store", f"sqlite:///{missing}", "--tokens-file", str(tokens), "--port", "1"])
    assert r.exit_code == 2 and "no SQLite store" in r.output and "--create" in r.output and not missing.exists()
    for bad in ("0", "-1", "nan", "inf"):  # 0 is not "keep all" (leave the option out): refused, not silently off
        r = CliRunner().invoke(cli_app, ["serve", "--store", f"sqlite:///{missing}", "--create", "--tokens-file", str(tokens), "--retain-days", bad])
        assert r.exit_code == 2 and "--retain-days" in r.output and not missing.exists(), (bad, r.output)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database, just bytes " * 200)
    for extra in ([], ["--create"]):
        r = CliRunner().invoke(cli_app, ["serve", "--store", f"sqlite:///{corrupt}", "--tokens-file", str(tokens), "--port", "1", *extra])
        assert r.exit_code == 2 and "not a usable SQLite database" in r.output and "Traceback" not in r.output, r.output
    for cmd in (["audit", "verify"], ["service", "void", "--reason", "x"], ["service", "delete"]):
        r = CliRunner().invoke(cli_app, [*cmd, "--store", f"sqlite:///{corrupt}", "--analysis", "a"])
        assert r.exit_code == 2 and "not a usable SQLite database" in r.output, (cmd, r.output)
    other = tmp_path / "other.db"  # an SQLite file of something else: no deploysignal tables
    import sqlite3

    from deploysignal.store import open_existing

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(Exception, match="without the deploysignal tables"):
        open_existing(f"sqlite:///{other}")
    open_existing(f"sqlite:///{tmp_path / 'new.db'}", create=True).close()
    open_existing(f"sqlite:///{tmp_path / 'new.db'}").close()  # now it exists, with the tables


@pytest.mark.integration
def test_postgres_store_needs_schema_unless_create(postgres):
    from deploysignal.store import open_existing

    url = postgres.fresh_db("ds_inputs_schema")
    with pytest.raises(Exception, match="has no deploysignal tables"):
        open_existing(url)
    open_existing(url, create=True).close()
    open_existing(url).close()
