"""``deploysignal audit verify`` and ``serve`` argument handling (through a local typer app)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from deploysignal.audit._chain import chain_records
from deploysignal.cli._service import register

app = typer.Typer()
register(app)
runner = CliRunner()


def test_audit_verify_detects_tampering(tmp_path):
    lines, head = chain_records([{"family": "A", "tick": i, "log_wealth": 0.1 * i} for i in range(20)])
    good = tmp_path / "a.ndjson"
    good.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["audit", "verify", str(good), "--head", head])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "b.ndjson"
    bad.write_text("\n".join(lines[:5] + [lines[5].replace('"log_wealth":0.5', '"log_wealth":0.4')] + lines[6:]) + "\n")
    r = runner.invoke(app, ["audit", "verify", str(bad), "--json"])
    assert r.exit_code == 1
    assert json.loads(r.output)["bad_line"] == 6
    r = runner.invoke(app, ["audit", "verify", str(good), "--head", "0" * 64])
    assert r.exit_code == 1
    r = runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.ndjson")])
    assert r.exit_code == 2 and "no such file" in r.output


@pytest.mark.parametrize("corrupt, reason", [
    (lambda ln: ln.encode().replace(b'"tick":7', b'"tick":\xff7'), "not UTF-8 text (line corrupted)"),
    (lambda ln: ("[" * 100_000).encode(), "not usable JSON (maximum recursion depth exceeded"),
    (lambda ln: ln.encode().replace(b'"tick":7', b'"tick":1' + b"0" * 5000), "not usable JSON (Exceeds the limit"),
], ids=["not-utf8", "deep-nesting", "digit-limit"])
def test_audit_verify_reports_a_corrupted_line_as_broken(tmp_path, corrupt, reason):
    """Review finding: a non-UTF-8 byte or absurd nesting in one line was a traceback (exit 1 by accident);
    it is a broken chain at that line (exit 1, --json bad_line), the lines before it verified."""
    from deploysignal.audit._chain import verify_chain

    lines, _ = chain_records([{"family": "A", "tick": i, "log_wealth": 0.1 * i} for i in range(20)])
    bad = tmp_path / "c.ndjson"
    bad.write_bytes(b"\n".join([ln.encode() for ln in lines[:7]] + [corrupt(lines[7])] + [ln.encode() for ln in lines[8:]])
                    + b"\n")
    r = runner.invoke(app, ["audit", "verify", str(bad), "--json"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    rep = json.loads(r.output)
    assert rep["bad_line"] == 8 and rep["lines"] == 7 and rep["reason"].startswith(reason), rep
    r = runner.invoke(app, ["audit", "verify", str(bad)])
    assert r.exit_code == 1 and "audit chain broken" in r.output and "at line 8" in r.output
    nan = verify_chain(['{"hash": "x", "prev": "' + "0" * 64 + '", "record": {"a": NaN}}'])  # was a ValueError
    assert nan.bad_line == 1 and nan.reason.startswith("record cannot be encoded canonically")


def test_serve_refuses_without_tokens(tmp_path):
    empty = tmp_path / "tokens.json"
    empty.write_text("[]")
    r = runner.invoke(app, ["serve", "--store", f"sqlite:///{tmp_path / 'x.db'}", "--create", "--tokens-file", str(empty)])
    assert r.exit_code == 2 and "no API tokens" in r.output and not (tmp_path / "x.db").exists()
    r = runner.invoke(app, ["service", "hash-token", "abc"])
    assert r.output.strip() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_committed_openapi_spec_is_current():
    from pathlib import Path

    from deploysignal.service import openapi_spec

    committed = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    assert committed == openapi_spec(), "docs/openapi.json is stale: run `deploysignal service openapi -o docs/openapi.json`"
    assert {"/v1/analyses", "/v1/analyses/{aid}/ticks", "/v1/argo/analyses/{aid}", "/v1/flagger/{hook}", "/v1/kayenta/canary", "/metrics"} <= set(committed["paths"])
    # the bearer roles are declared (fastapi.security.HTTPBearer) and every endpoint says which it needs
    assert committed["components"]["securitySchemes"] == {
        "readToken": {"type": "http", "scheme": "bearer", "description": committed["components"]["securitySchemes"]["readToken"]["description"]},
        "writeToken": {"type": "http", "scheme": "bearer", "description": committed["components"]["securitySchemes"]["writeToken"]["description"]},
        "metricsToken": {"type": "http", "scheme": "bearer", "description": committed["components"]["securitySchemes"]["metricsToken"]["description"]},
    }
    need = {(path, m): [next(iter(s)) for s in op.get("security", [])] for path, ops in committed["paths"].items() for m, op in ops.items()}
    assert need[("/v1/analyses", "post")] == need[("/v1/analyses/{aid}/ticks", "post")] == need[("/v1/kayenta/canary", "post")] == ["writeToken"]
    assert need[("/v1/analyses/{aid}", "get")] == need[("/v1/analyses/{aid}/audit", "get")] == need[("/v1/kayenta/canary/{executionId}", "get")] == ["readToken"]
    assert need[("/healthz", "get")] == []
    assert need[("/metrics", "get")] == ["metricsToken"]
    # the keyed Kayenta routes authenticate by the path key, not a header (Argo sends none)
    assert all(need[(p, m)] == [] for p, m in need if p.startswith("/kayenta/{key}/"))


def test_audit_verify_from_store(tmp_path, step_sim):
    import sqlite3

    from deploysignal.service import AnalysisManager
    from deploysignal.store import open_store

    from .conftest import ticks_of

    sim, cfg = step_sim
    url = f"sqlite:///{tmp_path / 's.db'}"
    m = AnalysisManager(open_store(url))
    m.create("v", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    m.ingest("v", ticks_of(sim.canary, 0, 30))
    m.store.close()
    assert runner.invoke(app, ["audit", "verify", "--store", url, "--analysis", "v"]).exit_code == 0
    with sqlite3.connect(tmp_path / "s.db") as db:  # tamper with one stored record
        lines = db.execute("SELECT lines FROM audit WHERE analysis_id='v' AND seq=12").fetchone()[0]
        db.execute("UPDATE audit SET lines=? WHERE analysis_id='v' AND seq=12", (lines.replace('"tick":12', '"tick":13', 1),))
    r = runner.invoke(app, ["audit", "verify", "--store", url, "--analysis", "v", "--json"])
    assert r.exit_code == 1 and "record altered" in r.output
    assert runner.invoke(app, ["audit", "verify", "--store", url]).exit_code == 2
