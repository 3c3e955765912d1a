"""Read-only opens of a store (issue 25): ``ui``, ``report`` and ``audit verify --store`` read a store without
writing it. A SQLite store written by an older version (a table missing) is the case where the read-write
open changed the file: it created the table on open."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from deploysignal.cli import app as cli
from deploysignal.store import ReadOnlyStore, open_existing, open_read_only, open_store

from .conftest import W, make_client, ticks_of


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def old_store(tmp_path, step_sim):
    """A store with one analysis of 40 ticks, then the replay-job and pending-write tables dropped (as a
    store written before they existed: read as empty), every connection closed (the WAL checkpointed
    into the file)."""
    sim, cfg = step_sim
    with make_client(tmp_path) as c:
        assert c.post("/v1/analyses", json={"id": "one", "config": json.loads(cfg.to_json()), "window": 480, "max_extensions": 0}, headers=W).status_code == 201
        assert c.post("/v1/analyses/one/ticks", json={"ticks": ticks_of(sim.canary, 0, 40)}, headers=W).status_code == 200
    db = tmp_path / "ds.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE replay_jobs")
        conn.execute("DROP TABLE replay_job_created")
        conn.execute("DROP TABLE pending_writes")
    conn.close()
    return db


def _has_table(db, name: str) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (name,)).fetchone() is not None
    finally:
        conn.close()


def test_read_only_sqlite_open_leaves_the_file_unchanged_and_refuses_writes(old_store):
    db, before = old_store, _digest(old_store)
    st = open_existing(f"sqlite:///{db}", read_only=True)
    try:
        assert [r.id for r in st.list()] == ["one"] and st.n_ticks("one") == 40
        row, rows = st.stored_rows("one")
        assert row.n_ticks == 40 and len(st.audit_lines("one")) > 40
        with pytest.raises(ReadOnlyStore, match=r"ds\.db.*read-only.*refused"):
            st.put_config("cc-000000000000", "{}")
        with pytest.raises(ReadOnlyStore, match="read-only"):
            st.create_analysis("two", {}, "h", "", "2026-12-07T00:00:00Z")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # a write outside a write transaction: SQLite refuses it
            st.conn.execute("DELETE FROM ticks")
    finally:
        st.close()
    assert _digest(db) == before and not _has_table(db, "replay_jobs")
    # the read-write open would have migrated the file: the check above can fail
    open_store(f"sqlite:///{db}").close()
    assert _has_table(db, "replay_jobs") and _digest(db) != before


def test_read_only_open_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(Exception, match="no SQLite store"):
        open_existing(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(Exception, match="cannot be created"):
        open_existing(f"sqlite:///{tmp_path / 'none.db'}", read_only=True, create=True)
    with pytest.raises(Exception, match="unknown sqlite URL options"):
        open_read_only(f"sqlite:///{tmp_path / 'none.db'}?journal=x")


def test_report_and_audit_verify_from_a_store_write_nothing(old_store, tmp_path):
    db, before = old_store, _digest(old_store)
    out = tmp_path / "one.html"
    r = CliRunner().invoke(cli, ["report", "one", "--store", f"sqlite:///{db}", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and '"one"' in out.read_text()
    r = CliRunner().invoke(cli, ["audit", "verify", "--store", f"sqlite:///{db}", "--analysis", "one", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["ok"] is True
    assert _digest(db) == before and not _has_table(db, "replay_jobs")


def test_ui_over_a_store_writes_nothing(old_store):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from deploysignal.cli._dashboard import local_app

    db, before = old_store, _digest(old_store)
    with TestClient(local_app(f"sqlite:///{db}", [], [], [], "tok")) as ui:
        h = {"Authorization": "Bearer tok"}
        listed = ui.get("/v1/analyses", headers=h)
        assert listed.status_code == 200 and [a["id"] for a in listed.json()] == ["one"]
        view = ui.get("/v1/analyses/one/view", headers=h)
        assert view.status_code == 200 and view.json()["verified"]["ok"] and len(view.json()["ticks"]) == 40
    assert _digest(db) == before and not _has_table(db, "replay_jobs")


@pytest.mark.integration
def test_read_only_postgres_session_refuses_writes(postgres):
    pytest.importorskip("psycopg")
    import psycopg

    url = postgres.fresh_db("ds_read_only")
    rw = open_store(url)
    rw.put_config("cc-000000000001", '{"a":1}')
    rw.close()
    st = open_existing(url, read_only=True)
    try:
        assert st.get_config("cc-000000000001") == '{"a":1}'
        with pytest.raises(ReadOnlyStore, match="read-only"):
            st.put_config("cc-000000000002", "{}")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):  # a write outside a write transaction: the server refuses it
            st.conn.execute("DELETE FROM configs")
    finally:
        st.close()
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM configs").fetchone()[0] == 1
        c.execute("DROP TABLE pending_writes")
    st = open_read_only(url)  # no schema statement on open: the dropped table stays dropped, and reads as empty
    try:
        assert st.conn.execute("SELECT count(*) FROM pending_writes").fetchone()[0] == 0
    finally:
        st.close()
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT to_regclass('pending_writes')").fetchone()[0] is None


def test_read_only_postgres_finds_the_tables_on_the_search_path(postgres):
    """The writable store's unqualified statements resolve through the search_path; so must the read-only
    open's check of which tables exist (not current_schema() only: a table found nowhere is shadowed by an
    empty temporary one, and the store would read as empty)."""
    pytest.importorskip("psycopg")
    import psycopg

    base = postgres.fresh_db("ds_read_only_path")
    with psycopg.connect(base, autocommit=True) as c:
        c.execute("CREATE SCHEMA app")
        c.execute("CREATE SCHEMA scratch")  # first on the reader's path, holds no table
    rw = open_store(base + "?options=-csearch_path%3Dapp")
    rw.put_config("cc-000000000001", '{"a":1}')
    rw.close()
    st = open_existing(base + "?options=-csearch_path%3Dscratch,app", read_only=True)
    try:
        assert st.conn.execute("SELECT current_schema()").fetchone()[0] == "scratch"
        assert st.get_config("cc-000000000001") == '{"a":1}'
    finally:
        st.close()


_AS_NOBODY = """
import json, sys
from deploysignal import ConfigError
from deploysignal.store import open_existing
try:
    st = open_existing(sys.argv[1], read_only=True)
except ConfigError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"ids": [r.id for r in st.list()], "ticks": st.n_ticks("one")}))
"""


def _as_reader(url: str) -> dict:
    """Open ``url`` read-only in a process that may not write the store's directory: this user when it is
    not root (the directory is chmod 555), else user nobody (65534) through setpriv (chmod does not bind root)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    cmd = [sys.executable, "-c", _AS_NOBODY, url]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only directory cannot be tested")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "HOME": "/tmp", "NUMBA_CACHE_DIR": "/tmp"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_read_only_open_from_a_directory_the_viewer_may_not_write(old_store):
    """SQLite needs a WAL database's -wal and -shm to read it: with no writer holding the store open they are
    missing and a viewer that may not write the directory gets an error that says what is needed (not
    "not a usable SQLite database"); while a writer holds it open the same viewer reads it."""
    import os
    import tempfile
    from pathlib import Path

    shared = Path(tempfile.mkdtemp(prefix="ds-ro-"))  # reachable by another user (pytest's tmp_path is 0700)
    try:
        db = shared / "ds.db"
        db.write_bytes(old_store.read_bytes())
        os.chmod(db, 0o644)
        os.chmod(shared, 0o555)  # nobody may create files here (the owner neither, unless root)
        assert not Path(f"{db}-shm").exists()
        out = _as_reader(f"sqlite:///{db}")
        assert "error" in out and "not a usable" not in out["error"], out
        assert "-shm" in out["error"] and "writable" in out["error"] and "writer" in out["error"], out
        os.chmod(shared, 0o755)
        writer = sqlite3.connect(db)  # a writer holds the store open: its -wal and -shm exist
        try:
            writer.execute("SELECT count(*) FROM ticks").fetchone()
            for side in ("-wal", "-shm"):
                os.chmod(f"{db}{side}", 0o644)
            os.chmod(shared, 0o555)
            assert _as_reader(f"sqlite:///{db}") == {"ids": ["one"], "ticks": 40}
        finally:
            os.chmod(shared, 0o755)
            writer.close()
    finally:
        os.chmod(shared, 0o755)
        import shutil

        shutil.rmtree(shared)
