"""The integration tables (templates, revision bindings, controller events) on SQLite and PostgreSQL,
including a database created before they existed."""

from __future__ import annotations

import threading

from deploysignal.store import IntegrationTables, open_store


def test_bindings_templates_events(store_url):
    st = open_store(store_url)
    try:
        t = IntegrationTables(st)
        t.put_template("api", {"window": 20, "config_ref": "cc-0"}, "2026-01-01T00:00:00")
        t.put_template("api", {"window": 30, "config_ref": "cc-0"}, "2026-01-02T00:00:00")  # replace
        assert t.get_template("api") == ({"config_ref": "cc-0", "window": 30}, "2026-01-02T00:00:00")
        assert t.get_template("nope") is None and [x[0] for x in t.list_templates()] == ["api"]
        # concurrent first bindings of one analysis: every caller sees the same (first) revision
        got: list[str] = []
        th = [threading.Thread(target=lambda r=r: got.append(t.bind_revision("api@x", "api", r, "2026").revision)) for r in ("r1", "r2", "r3", "r4")]
        [x.start() for x in th]
        [x.join() for x in th]
        assert len(set(got)) == 1 and t.get_revision("api@x").revision == got[0]
        t.bind_revision("api@y", "api", "y", "2027")
        assert [b.analysis_id for b in t.revisions_of("api")] == ["api@x", "api@y"] and t.get_revision("none") is None
        for i in range(3):
            t.add_event(f"ev-{i:03d}", "flagger", "prod.api", "c1", {"i": i}, "2026")
        t.add_event("ev-100", "flagger", "prod.other", None, {"i": 9}, "2026")
        assert [e["body"]["i"] for e in t.events("flagger", "prod.api")] == [0, 1, 2]
        assert len(t.events("flagger")) == 4 and len(t.events("flagger", limit=2)) == 2 and t.events("argo") == []
    finally:
        st.close()


def test_existing_database_gains_the_tables(tmp_path):
    st = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    c = st.conn
    for table in ("analysis_templates", "analysis_revisions", "integration_events"):
        c.execute(f"DROP TABLE {table}")  # as a database written by 0.4.0
    st.close()
    st = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        assert IntegrationTables(st).bind_revision("a", None, "r", "2026").revision == "r"
    finally:
        st.close()
