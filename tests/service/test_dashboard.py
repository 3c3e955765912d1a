"""The dashboard's data path without a browser: the views come only from a verified chain, the routes obey
the service's auth, bad files get errors naming the line, ``deploysignal report`` refuses a broken chain
(the pages themselves: test_dashboard_browser.py)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from deploysignal.audit._chain import chain_records
from deploysignal.cli import app as cli
from deploysignal.dashboard import analysis_view, fleet_view, migration_view, page_html, report_data
from deploysignal._exceptions import InputError

from ._split import METRICS, split_ticks
from .conftest import R, W, make_client, ticks_of


@pytest.fixture()
def svc(tmp_path, step_sim):
    sim, cfg = step_sim
    with make_client(tmp_path) as c:
        assert c.post("/v1/analyses", json={"id": "one", "config": json.loads(cfg.to_json()), "window": 480, "max_extensions": 0}, headers=W).status_code == 201
        assert c.post("/v1/analyses/one/ticks", json={"ticks": ticks_of(sim.canary, 0, 60)}, headers=W).status_code == 200
        yield c, tmp_path


def test_view_is_the_verified_chain(svc, step_sim):
    c, _ = svc
    assert c.get("/v1/analyses/one/view").status_code == 401
    assert c.get("/v1/analyses/nope/view", headers=R).status_code == 404
    v = c.get("/v1/analyses/one/view", headers=R).json()
    audit = c.get("/v1/analyses/one/audit", headers=R).text.splitlines()
    verdict = c.get("/v1/analyses/one", headers=R).json()
    assert v["verified"] == {"ok": True, "lines": len(audit), "head": verdict["audit_head"], "reason": "", "bad_line": None, "head_checked": True}
    assert v["ticks"] == list(range(60)) and len(v["verdicts"]) == 60 and v["last"] == verdict["gate"]
    # every family's last evidence and bound is the one the verdict endpoint serves
    last = {r["family"]: r for r in verdict["evidence"]}
    for f in v["families"]:
        r = last[f["name"]]
        assert f["evidence"][-1] == r.get("log_wealth") and f["bound"][-1] == r.get("threshold")
    # the signal values are the ticks as ingested (bound by the chain's input records)
    assert "p99_latency_ms" in v["signals"]["names"] and v["signals"]["control"] is None
    p99 = v["signals"]["canary"]["p99_latency_ms"]
    want = [t["values"]["p99_latency_ms"] for t in ticks_of(step_sim[0].canary, 0, 60)]
    assert p99 == want
    assert c.get("/ui/").headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    assert c.get("/ui/assets/dashboard.js").status_code == 200
    assert c.get("/ui/assets/..%2Fdashboard.html").status_code == 404 and c.get("/ui/assets/_view.py").status_code == 404


def test_tampered_store_is_refused(svc):
    c, tmp = svc
    with sqlite3.connect(tmp / "ds.db") as db:  # change one stored tick's value: its input record no longer matches
        (payload,) = db.execute("SELECT payload FROM ticks WHERE analysis_id='one' AND seq=5").fetchone()
        db.execute("UPDATE ticks SET payload=? WHERE analysis_id='one' AND seq=5", (payload.replace('"p99_latency_ms":', '"p99_latency_ms":1', 1),))
    # the process that holds the engine: the view leaves the unbound tick out and says so
    v = c.get("/v1/analyses/one/view", headers=R).json()
    assert any("not shown" in n for n in v["notes"]) and v["signals"]["canary"]["p99_latency_ms"][5] is None
    assert v["signals"]["canary"]["p99_latency_ms"][4] is not None
    # a process that loads it: the integrity check refuses the analysis (409), the view and the report too
    with make_client(tmp) as fresh:
        for what in ("view", "report"):
            r = fresh.get(f"/v1/analyses/one/{what}", headers=R)
            assert r.status_code == 409 and "tick" in r.json()["detail"], r.text


def test_analysis_view_refuses_broken_chain_and_unbound_payloads():
    recs = [{"family": "header", "settings": {"mode": "one-sample"}, "store_binding": 1},
            {"family": "input", "sha256": "0" * 64, "tick": 0},
            {"family": "A", "tick": 0, "log_wealth": 1.5, "threshold": 3.9, "drivers": ["x"], "fire": False},
            {"family": "gate", "tick": 0, "verdict": "pending", "final": False}]
    lines, head = chain_records(recs)
    rows = [(-1, lines[0]), (0, "\n".join(lines[1:]))]
    v = analysis_view("a", lines, head=head, payloads=[(0, '{"timestamp":1.0,"values":{"x":2.0}}')], rows=rows)
    assert v["verified"]["ok"] and v["families"][0]["evidence"] == [1.5]
    assert v["signals"] is None and any("SHA-256" in n for n in v["notes"])  # the payload's hash is not the input record's
    bad = list(lines)
    bad[2] = bad[2].replace('"log_wealth":1.5', '"log_wealth":0.5')
    v = analysis_view("a", bad, head=head)
    assert not v["verified"]["ok"] and v["verified"]["bad_line"] == 3 and "families" not in v
    assert not analysis_view("a", lines[:-1], head=head)["verified"]["ok"]  # a truncated tail, with the published head


def test_split_view_has_effects(tmp_path):
    with make_client(tmp_path) as c:
        assert c.post("/v1/analyses", json={"id": "s", "mode": "split", "metrics": METRICS, "window": 400}, headers=W).status_code == 201
        assert c.post("/v1/analyses/s/ticks", json={"ticks": split_ticks(1, 30, error_ratio=2.0)}, headers=W).status_code == 200
        v = c.get("/v1/analyses/s/view", headers=R).json()
    assert v["mode"] == "split" and set(v["effects"]) == {"errors", "latency_ms"}
    e = v["effects"]["errors"]
    assert len(e["estimate"]) == 30
    assert all(lo <= est for lo, est in zip(e["lower"], e["estimate"]) if lo is not None and est is not None)
    assert v["signals"]["kind"] == "arms" and v["signals"]["arms"] == ["canary", "stable"]


def test_report_cli(svc, tmp_path):
    c, _ = svc
    audit = tmp_path / "one.audit.ndjson"
    audit.write_text(c.get("/v1/analyses/one/audit", headers=R).text)
    out = tmp_path / "r.html"
    r = CliRunner().invoke(cli, ["report", "--audit", str(audit), "-o", str(out)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert '<script id="ds-data" type="application/json">' in html and "</script" not in html.split('id="ds-data"')[1].split("</script>")[0]
    data = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert data["views"]["one"]["verified"]["ok"] and data["audit"]["one"] == audit.read_text()
    assert data["views"]["one"]["signals"] is None  # an audit file holds no signal values: the page says so
    lines = audit.read_text().splitlines()
    lines[10] = lines[10].replace('"tick":', '"tick":1', 1)  # a record altered: its hash no longer matches
    audit.write_text("\n".join(lines) + "\n")
    out.unlink()
    r = CliRunner().invoke(cli, ["report", "--audit", str(audit), "-o", str(out)])
    assert r.exit_code == 1 and "does not verify" in r.output and not out.exists()
    r = CliRunner().invoke(cli, ["report", "--audit", str(audit), "--store", "sqlite:///x.db", "-o", str(out)])
    assert r.exit_code == 2 and "give one of" in r.output


def test_fleet_and_migration_files_name_the_bad_line():
    good = ('{"tick": 0, "q": 0.05, "flagged": [], "newly_flagged": [], "fleet_log_e": 0.0, "fleet_fired": false}')
    with pytest.raises(InputError, match="row 2") as ei:
        fleet_view([good, '{"tick": "x"}'], "f")
    assert "fleet observe --jsonl" in str(ei.value)
    with pytest.raises(InputError, match="no fleet observations"):
        fleet_view(["", " "], "f")
    with pytest.raises(InputError, match="not a migration run"):
        migration_view('{"a": 1}', "m")
    run = {"kind": "migration_run", "final_phase": "shadow", "dimensions": ["c"], "trace": [{"pair": 1, "phase": "shadow", "non_inferiority": [0.1]}]}
    with pytest.raises(InputError, match="trace entry 1"):
        migration_view(json.dumps(run), "m")


def test_embedded_data_cannot_close_its_script():
    recs = [{"family": "header", "settings": {}}, {"family": "A", "tick": 0, "log_wealth": 0.0, "drivers": ["</script><script>alert(1)</script>"]},
            {"family": "gate", "tick": 0, "verdict": "pending"}]
    lines, head = chain_records(recs)
    html = page_html(report_data([(analysis_view("x", lines, head=head), "")]))
    assert "<script>alert" not in html and html.count("</script>") == 3  # uPlot, the dashboard script, the data
    assert page_html(report_data([(analysis_view("x", lines, head=head), "")])) == html


def test_fleet_observe_jsonl_is_what_the_fleet_page_reads(tmp_path):
    """The user's path: ``fleet observe --jsonl`` output, as printed, is a valid fleet page source."""
    import numpy as np

    from deploysignal.cli._fleet import app as fleet_cli

    x = np.random.default_rng(2).standard_normal((80, 6, 2))
    x[20:, 4, :] += 3.0  # shard s4 shifts at tick 20
    p = tmp_path / "fleet.csv"
    p.write_text("tick,shard,lat,err\n" + "".join(f"{t},s{k},{x[t, k, 0]:.4f},{x[t, k, 1]:.4f}\n" for t in range(80) for k in range(6)))
    r = CliRunner().invoke(fleet_cli, ["observe", str(p), "--q", "0.1", "--jsonl"])
    assert r.exit_code == 4, r.output
    assert "shard_fault: shard s4" in r.stderr  # the attribution summary goes to stderr with --jsonl
    v = fleet_view(r.stdout.splitlines(), "f")  # stdout as a shell redirect would write it
    assert v["ticks"] == list(range(80)) and [f["shard"] for f in v["flagged"]] == ["s4"] and v["flagged_count"][-1] == 1
