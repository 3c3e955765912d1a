"""Review of the dashboard (issue 25): cut-backs and voids shown as the verdict endpoint stands, audit files
without a head never shown as fully verified, file ids, the ``ui`` list from verified views, ``report
--url`` refusing a chain that does not verify, bad fleet and migration files, the migration page drawing what the
protocol decides on. Cost: about 15 s of test time on this shared machine (a few 60-tick service analyses, one
100-pair simulated migration run)."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from deploysignal.cli import app as cli

from .conftest import READ, R, W, make_client, ticks_of

NO_HEAD = "not checked against a published head: missing lines at the end are not detected"


def _create(c, cfg, aid="a", window=60):
    r = c.post("/v1/analyses", json={"id": aid, "config": json.loads(cfg.to_json()), "window": window, "max_extensions": 0}, headers=W)
    assert r.status_code == 201, r.text


def _same_as_verdict(c, aid="a"):
    """The view against the verdict endpoint: its last gate record, a monotone tick axis, one entry per tick in effect."""
    v = c.get(f"/v1/analyses/{aid}/view", headers=R).json()
    verdict = c.get(f"/v1/analyses/{aid}", headers=R).json()
    assert v["verified"]["ok"], v["verified"]
    assert v["last"] == verdict["gate"], (v["last"], verdict["gate"])
    assert v["ticks"] == sorted(set(v["ticks"])), "tick axis not monotone"
    n = 0 if verdict["gate"] is None else verdict["gate"]["tick"] + 1
    assert v["ticks"] == list(range(n)) and len(v["verdicts"]) == n
    assert all(len(f["evidence"]) == n for f in v["families"])
    return v, verdict


def test_view_after_cut_of_final_proceed(tmp_path, healthy_sim):
    sim, cfg = healthy_sim
    with make_client(tmp_path) as c:
        _create(c, cfg)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 0, 60)}, headers=W).status_code == 200
        assert c.get("/v1/analyses/a", headers=R).json()["gate"]["verdict"] == "proceed"
        assert c.post("/v1/analyses/a/cut", json={"to_tick": 40, "reason": "bad batch"}, headers=W).status_code == 200
        v, verdict = _same_as_verdict(c)
        assert v["last"]["tick"] == 39 and not v["last"]["final"] and v["last"]["verdict"] == verdict["verdict"] != "proceed"
        assert [e["kind"] for e in v["events"]] == ["cut"] and v["events"][0]["superseded"] == [[40, 59]]
        # the ui list and the report say the same
        rows = {r["id"]: r for r in c.get("/v1/analyses", headers=R).json()}
        assert rows["a"]["summary"]["verdict"] == verdict["verdict"]
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", "a", "--store", f"sqlite:///{tmp_path / 'ds.db'}", "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text().split('<script id="ds-data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert data["views"]["a"]["last"]["tick"] == 39 and data["analyses"][0]["summary"]["final"] is False


def test_view_after_cut_mid_run_and_reingest(tmp_path, step_sim):
    sim, cfg = step_sim
    ticks = ticks_of(sim.canary, 0, 50)
    again = [{**t, "values": {k: (None if x is None else x * 1.001) for k, x in t["values"].items()}} for t in ticks[30:50]]
    with make_client(tmp_path) as c:
        _create(c, cfg, window=480)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks[:40]}, headers=W).status_code == 200
        assert c.post("/v1/analyses/a/cut", json={"to_tick": 30, "reason": "bad batch"}, headers=W).status_code == 200
        assert c.post("/v1/analyses/a/ticks", json={"ticks": again}, headers=W).status_code == 200
        v, _ = _same_as_verdict(c)
        assert len(v["ticks"]) == 50
        # the signals of the ticks in effect: the re-ingested values from tick 30 on, aligned with the axis
        want = [t["values"]["p99_latency_ms"] for t in ticks[:30] + again]
        assert v["signals"]["canary"]["p99_latency_ms"] == want
        # each family's last point is the verdict endpoint's
        last = {r["family"]: r for r in c.get("/v1/analyses/a", headers=R).json()["evidence"]}
        for f in v["families"]:
            assert f["evidence"][-1] == last[f["name"]].get("log_wealth")


def test_view_after_void_shows_reason(tmp_path, healthy_sim):
    sim, cfg = healthy_sim
    with make_client(tmp_path) as c:
        _create(c, cfg)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 0, 30)}, headers=W).status_code == 200
        assert c.post("/v1/analyses/a/void", json={"reason": "wrong image"}, headers=W).status_code == 200
        v = c.get("/v1/analyses/a/view", headers=R).json()
        verdict = c.get("/v1/analyses/a", headers=R).json()
        assert v["last"] == verdict["gate"] and v["last"]["final"]
        assert v["fail_closed"] == "voided by operator: wrong image"
        assert v["events"][-1]["kind"] == "void" and v["events"][-1]["reason"] == "voided by operator: wrong image"
        assert v["ticks"] == list(range(30)), "a void is not an evaluated tick"


def _final_then_void(tmp_path, healthy_sim, aid="a"):
    sim, cfg = healthy_sim
    with make_client(tmp_path) as c:
        _create(c, cfg, aid)
        assert c.post(f"/v1/analyses/{aid}/ticks", json={"ticks": ticks_of(sim.canary, 0, 60)}, headers=W).status_code == 200
        assert c.post(f"/v1/analyses/{aid}/void", json={"reason": "x"}, headers=W).status_code == 200
        return c.get(f"/v1/analyses/{aid}/audit", headers=R).text, c.get(f"/v1/analyses/{aid}", headers=R).json()["audit_head"]


def test_truncated_audit_file_is_never_shown_as_verified(tmp_path, healthy_sim):
    text, head = _final_then_void(tmp_path, healthy_sim)
    lines = text.splitlines()
    cut_at = max(i for i, ln in enumerate(lines) if json.loads(ln)["record"].get("verdict") == "proceed") + 1
    f = tmp_path / "a.audit.ndjson"
    f.write_text("".join(ln + "\n" for ln in lines[:cut_at]))
    runner = CliRunner()
    # with the published head: refused
    res = runner.invoke(cli, ["report", "--audit", str(f), "--head", head, "-o", str(tmp_path / "r1.html")])
    assert res.exit_code == 1 and not (tmp_path / "r1.html").exists(), res.output
    # without a head: written, but the view, the page data and the command say plainly what is not checked
    res = runner.invoke(cli, ["report", "--audit", str(f), "-o", str(tmp_path / "r2.html")])
    assert res.exit_code == 0 and NO_HEAD in res.output, res.output
    from deploysignal.dashboard import audit_file_view

    v, _ = audit_file_view(f)
    assert v["verified"]["ok"] and v["verified"]["head_checked"] is False and v["verified"]["note"] == NO_HEAD
    v, _ = audit_file_view(tmp_path / "a.audit.ndjson", head)
    assert not v["verified"]["ok"]
    # ui --audit takes --head (one per file) and refuses the truncated file's view
    from deploysignal.cli._dashboard import local_app
    from fastapi.testclient import TestClient

    with TestClient(local_app(None, [f], [], [], "tok", heads=[head])) as ui:
        v = ui.get("/v1/analyses/a/view", headers={"Authorization": "Bearer tok"}).json()
        assert not v["verified"]["ok"]
    assert "--head" in runner.invoke(cli, ["ui", "--help"]).output


def test_audit_file_ids_keep_dots_and_do_not_collide_with_the_store(tmp_path, healthy_sim):
    from deploysignal._exceptions import ConfigError
    from deploysignal.cli._dashboard import local_app
    from deploysignal.dashboard import audit_file_view

    aid = "podinfo.prod.podinfo-85d557f47b"  # Flagger ids hold dots
    text, _ = _final_then_void(tmp_path, healthy_sim, aid)
    f = tmp_path / f"{aid}.audit.ndjson"
    f.write_text(text)
    v, _ = audit_file_view(f)
    assert v["id"] == aid and "not verified" in v["id_note"]
    g = tmp_path / "x.y.ndjson"
    g.write_text(text)
    assert audit_file_view(g)[0]["id"] == "x.y"
    res = CliRunner().invoke(cli, ["report", "--audit", str(g), "--id", "other", "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0 and (tmp_path / "r.html").exists(), res.output
    # a file whose id is a store analysis' is refused, not shown in its place
    try:
        local_app(f"sqlite:///{tmp_path / 'ds.db'}", [f], [], [], "tok")
    except ConfigError as exc:
        assert aid in str(exc) and "store" in str(exc)
    else:
        raise AssertionError("a file colliding with a store analysis was accepted")


def test_ui_list_does_not_show_an_unverified_summary(tmp_path, healthy_sim):
    from deploysignal.cli._dashboard import local_app
    from fastapi.testclient import TestClient

    sim, cfg = healthy_sim
    with make_client(tmp_path) as c:
        _create(c, cfg)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 0, 20)}, headers=W).status_code == 200
    with sqlite3.connect(tmp_path / "ds.db") as db:  # a tampered row: its summary says a final proceed
        (s,) = db.execute("SELECT summary FROM analyses WHERE id='a'").fetchone()
        db.execute("UPDATE analyses SET summary=? WHERE id='a'", (json.dumps({**json.loads(s), "verdict": "proceed", "final": True}),))
    with TestClient(local_app(f"sqlite:///{tmp_path / 'ds.db'}", [], [], [], "tok")) as ui:
        (row,) = ui.get("/v1/analyses", headers={"Authorization": "Bearer tok"}).json()
        assert row["summary"] is None or (row["summary"]["verdict"] != "proceed" and row["summary"]["final"] is False), row


def test_report_url_refuses_a_chain_that_does_not_verify(tmp_path, healthy_sim, monkeypatch):
    import httpx

    sim, cfg = healthy_sim
    (tmp_path / "tok").write_text(READ)
    runner = CliRunner()
    with make_client(tmp_path) as c:
        _create(c, cfg)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": ticks_of(sim.canary, 0, 20)}, headers=W).status_code == 200
        monkeypatch.setattr(httpx, "get", lambda url, headers, timeout: c.get(url.split("http://svc", 1)[1], headers=headers))
        r = c.get("/v1/analyses/a/report", headers=R)
        assert r.status_code == 200 and r.headers["content-security-policy"] == "sandbox"
        res = runner.invoke(cli, ["report", "a", "--url", "http://svc", "--token-file", str(tmp_path / "tok"), "-o", str(tmp_path / "ok.html")])
        assert res.exit_code == 0 and (tmp_path / "ok.html").exists(), res.output
        with sqlite3.connect(tmp_path / "ds.db") as db:  # the stored head no longer matches the chain
            db.execute("UPDATE analyses SET audit_head=? WHERE id='a'", ("0" * 64,))
        r = c.get("/v1/analyses/a/report", headers=R)
        assert r.status_code == 409 and "does not match its audit chain" in r.json()["detail"], r.text
        res = runner.invoke(cli, ["report", "a", "--url", "http://svc", "--token-file", str(tmp_path / "tok"), "-o", str(tmp_path / "bad.html")])
        assert res.exit_code == 1 and not (tmp_path / "bad.html").exists() and "does not verify" in res.output, res.output


def test_bad_fleet_and_migration_files_get_errors_naming_the_file(tmp_path):
    from deploysignal._exceptions import InputError
    from deploysignal.dashboard import fleet_view, migration_view

    run = {"kind": "migration_run", "final_phase": "shadow", "dimensions": ["correctness"],
           "trace": [{"pair": 1, "phase": "shadow", "non_inferiority": [0.1], "harm": [0.2]}]}
    for bad, what in ((json.dumps(run).replace("0.1", "NaN"), "NaN"), (json.dumps(run).replace("0.2", "Infinity"), "Infinity"),
                      (json.dumps(run).replace("0.1", '"x"'), "trace entry 1")):
        try:
            migration_view(bad, "m")
        except InputError as exc:
            assert what in str(exc) and "m:" in str(exc), exc
        else:
            raise AssertionError(f"accepted: {bad}")
    ln = ('{"tick": 0, "q": 0.05, "flagged": [], "newly_flagged": [], "fleet_log_e": NaN, "fleet_fired": false, "top_nodes": []}')
    try:
        fleet_view(["", ln], "f")
    except InputError as exc:
        assert "line 2" in str(exc) and "NaN" in str(exc), exc
    else:
        raise AssertionError("a NaN observation was accepted")
    # through the CLI: exit 2 with the file and line named, no traceback, nothing written
    mig = tmp_path / "m.json"
    mig.write_bytes(b'{"kind": "migration_run",\n "x": "\xff"}')
    fl = tmp_path / "f.jsonl"
    fl.write_text(ln + "\n")
    for opt, path, want in (("--migration", mig, "line 2: not UTF-8"), ("--fleet", fl, "NaN")):
        res = CliRunner().invoke(cli, ["report", opt, str(path), "-o", str(tmp_path / "r.html")])
        assert res.exit_code == 2 and want in res.output and path.name in res.output, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception  # no traceback
        assert not (tmp_path / "r.html").exists()


def test_migration_view_plots_what_the_protocol_decides_on(tmp_path):
    """A harm rollback happens at the first pair where some dimension's running-max harm evidence
    (-log p) reaches Holm's first level log(d/alpha_harm), as the view draws it; a run file without the
    running maxima says its plots are not what the protocol decides on."""
    from deploysignal.dashboard import migration_view

    out = tmp_path / "m.json"
    res = CliRunner().invoke(cli, ["migrate", "run", "--simulate-regression", "0.3", "--max-queries", "300", "--json", str(out)])
    assert res.exit_code == 4, res.output  # rolled back
    run = json.loads(out.read_text())
    v = migration_view(out.read_text(), "m")
    assert v["rollback_reason"] == "harm" and set(v["levels"]) == {"promote_first", "promote_last", "harm", "detector_log", "error_budget_log"}
    top = [max(d["harm_max"][k] for d in v["dimensions"]) for k in range(len(v["pairs_axis"]))]
    first = next(k for k, x in enumerate(top) if x >= v["levels"]["harm"])
    assert v["phase_series"][first] == "rolled_back" and "rolled_back" not in v["phase_series"][:first]
    assert all(d["detector"][first] is None or d["detector"][first] < v["levels"]["detector_log"] for d in v["dimensions"])
    assert "running maximum" in v["notes"][0] and "Holm" in v["notes"][0]
    for e in run["trace"]:  # an older file: current log-wealth only
        for f in ("non_inferiority_max", "harm_max", "error_budget"):
            e.pop(f)
    old = migration_view(json.dumps({**run, "levels": {}}), "old")
    assert "non_inferiority_max" not in old["dimensions"][0] and "not hold" in old["notes"][0]
