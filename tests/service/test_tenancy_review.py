"""Review of the tenancy change (issue 23 items 4-5): readers see only committed state, scope of
glob-only tokens, read / write / tick budgets, /metrics of evicted analyses, the 3-conflict fallback."""

from __future__ import annotations

import threading

from prometheus_client.parser import text_string_to_metric_families

from deploysignal.service import AnalysisManager
from deploysignal.store import open_store

from .conftest import W, make_client, ticks_of


def _gauges(text: str, aid: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("analysis") == aid:
                key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()) if k != "analysis")
                out[key] = repr(s.value) if s.value != s.value else s.value  # NaN compares equal as text
    return out


def test_metrics_never_show_an_uncommitted_evaluation(tmp_path, step_sim):
    """Review finding 1 (/metrics): worker 1 evaluates ticks 300-309 on its 200 stored ticks while
    worker 2 appends ticks 200-299. A scrape of worker 1 in that window must show a committed state
    (200 or 300 ticks with that state's wealth), never "0-199 + 300-309" (210 ticks), a history the
    store never holds. Failed on the merge of main into tenancy (7c607bd's shared-engine evaluation)."""
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        m1 = c.app.state.manager
        m2 = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'ds.db'}"))
        m1.create("s", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
        t = ticks_of(sim.canary)
        m1.ingest("s", t[:200])
        at200 = _gauges(c.get("/metrics", headers=W).text, "s")
        real, seen = m1._prepare, []

        def prepare(*a, **k):
            out = real(*a, **k)
            if not seen:
                m2.ingest("s", t[200:300])
                seen.append(_gauges(c.get("/metrics", headers=W).text, "s"))
            return out

        m1._prepare = prepare
        r = m1.ingest("s", t[300:310])
        assert r["first_tick"] == 300 and r["n_ticks"] == 310
        ref = AnalysisManager(open_store(f"sqlite:///{tmp_path / 'ref.db'}"))
        ref.create("s", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
        ref.ingest("s", t[:300])
        window = seen[0]
        assert window["deploysignal_analysis_ticks"] in (200.0, 300.0), window
        if window["deploysignal_analysis_ticks"] == 200.0:
            assert window == at200
        else:
            eng = ref.engine("s")
            lw = {r["family"]: r.get("log_wealth") for r in eng.last.records if r.get("family") != "gate"}
            assert all(window[f"deploysignal_log_wealth|family={f}"] == v for f, v in lw.items() if v is not None)
        assert _gauges(c.get("/metrics", headers=W).text, "s")["deploysignal_analysis_ticks"] == 310.0
        m2.store.close()
        ref.store.close()


def test_verdict_body_never_shows_an_uncommitted_evaluation(tmp_path, step_sim, monkeypatch):
    """Review finding 1 (verdict body, what Argo / Flagger / Kayenta are told): a GET of the analysis
    that has its engine while a batch is being evaluated must answer the committed state (200 ticks),
    not the batch being evaluated before its commit (210). Failed on the merge of main into tenancy."""
    sim, cfg = step_sim
    c = make_client(tmp_path)
    with c:
        m = c.app.state.manager
        m.create("s", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
        t = ticks_of(sim.canary)
        m.ingest("s", t[:200])
        store = m.store
        real_get, real_prepare = store.get, m._prepare
        reader_in, evaluated, reader_done = threading.Event(), threading.Event(), threading.Event()
        ingest_thread: list[threading.Thread] = []

        calls: list[int] = []

        def get(aid):
            if ingest_thread and threading.current_thread() is not ingest_thread[0] and not reader_in.is_set():
                calls.append(1)
                if len(calls) < 2:  # the reader's first store read is the engine's sync; the second comes after it
                    return real_get(aid)
                reader_in.set()
                evaluated.wait(3)  # with the engine read under the analysis' lock, the ingest cannot run now
            return real_get(aid)

        def prepare(*a, **k):
            out = real_prepare(*a, **k)
            evaluated.set()
            reader_done.wait(10)  # the batch is evaluated, not committed
            return out

        monkeypatch.setattr(store, "get", get)
        monkeypatch.setattr(m, "_prepare", prepare)
        th = threading.Thread(target=lambda: m.ingest("s", t[200:210]))
        ingest_thread.append(th)
        got: dict = {}

        def read():
            got.update(c.get("/v1/analyses/s", headers=W).json())
            reader_done.set()

        rd = threading.Thread(target=read)
        rd.start()
        assert reader_in.wait(10)
        th.start()
        rd.join(30)
        th.join(30)
        assert got["n_ticks"] == 200, got["n_ticks"]
        assert real_get("s").n_ticks == 210


def test_glob_only_token_creates_nothing_in_a_project(tmp_path, step_sim):
    """Review finding 3: a token scoped only by analyses globs (``glob-w``: x-*, tx*) may create analyses
    and templates with no project only: naming a project is refused (403), and it may not replace a
    template that belongs to a project. Before: 201 / 200, and project x's tokens saw the planted
    analysis and template in their lists and on /metrics."""
    from .test_tenancy_scope import RX, WG, WX, _client, _h

    sim, cfg = step_sim
    cfgd = cfg.model_dump(mode="json")
    with _client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"id": "x-planted", "config": cfgd, "project": "x"}, headers=_h(WG))
        assert r.status_code == 403 and "no project" in r.json()["detail"], r.text
        r = c.put("/v1/templates/tx-tpl", json={"config": cfgd, "project": "x"}, headers=_h(WG))
        assert r.status_code == 403, r.text
        assert c.put("/v1/templates/tx-own", json={"config": cfgd, "project": "x"}, headers=_h(WX)).status_code == 200
        r = c.put("/v1/templates/tx-own", json={"config": cfgd}, headers=_h(WG))  # would move x's template out of x
        assert r.status_code == 403, r.text
        assert c.get("/v1/analyses", headers=_h(RX)).json() == []
        assert [t["id"] for t in c.get("/v1/templates", headers=_h(RX)).json()] == ["tx-own"]
        # project-less ones it may create (its globs)
        assert c.post("/v1/analyses", json={"id": "x-free", "config": cfgd}, headers=_h(WG)).status_code == 201
        assert c.put("/v1/templates/tx-free", json={"config": cfgd}, headers=_h(WG)).status_code == 200
        assert c.get("/v1/analyses", headers=_h(RX)).json() == []


def test_evicted_analysis_stays_on_metrics(tmp_path, step_sim):
    """Review finding 5: with a one-engine cache, analysis a (rolled back) is evicted when b is used; its
    series must stay on /metrics with the same values (from its stored, chain-checked summary and last
    audit row), so an alert on its rollback does not resolve by eviction. Before: a's series vanished."""
    sim, cfg = step_sim
    c = make_client(tmp_path, engine_cache_size=1)
    with c:
        m = c.app.state.manager
        cfgd = cfg.model_dump(mode="json")
        for aid in ("a", "b"):
            assert c.post("/v1/analyses", json={"id": aid, "config": cfgd}, headers=W).status_code == 201
        t = ticks_of(sim.canary)
        assert c.post("/v1/analyses/a/ticks", json={"ticks": t[:400]}, headers=W).json()["verdict"] == "rollback"
        before = _gauges(c.get("/metrics", headers=W).text, "a")
        assert before["deploysignal_verdict|verdict=rollback"] == 1.0
        assert c.post("/v1/analyses/b/ticks", json={"ticks": t[:5]}, headers=W).status_code == 200
        assert list(m.cached()) == ["b"] and m.evicted >= 1
        assert _gauges(c.get("/metrics", headers=W).text, "a") == before


def test_readers_never_use_up_the_writers_budget_and_ticks_are_budgeted(tmp_path, step_sim):
    """Review finding 4: reads and writes of an analysis have separate budgets (readers at their limit
    never make the pusher's ingest 429), and ingest is budgeted in ticks per token as well as requests
    (a 10,000-tick batch is one request). Before: the 4th read of x-1 used the one per-analysis budget
    and the next ingest got 429; ticks were not counted."""
    from .test_tenancy_scope import R, RX, W, WX, _client, _h

    sim, cfg = step_sim
    cfgd = cfg.model_dump(mode="json")
    ticks = ticks_of(sim.canary, 0, 40)
    with _client(tmp_path, rate_limit_analysis="3/minute", rate_limit_analysis_write="3/minute", rate_limit_token="1000/minute",
                 rate_limit_ticks="25/minute", max_batch_ticks=25) as c:
        for aid in ("x-1", "x-2"):
            assert c.post("/v1/analyses", json={"id": aid, "config": cfgd}, headers=_h(WX)).status_code == 201
        assert [c.get("/v1/analyses/x-1", headers=_h(tok)).status_code for tok in (RX, R, RX, R)] == [200, 200, 200, 429]
        r = c.post("/v1/analyses/x-1/ticks", json={"ticks": ticks[:20]}, headers=_h(WX))
        assert r.status_code == 200, r.text  # the readers' budget is theirs
        r = c.post("/v1/analyses/x-1/ticks", json={"ticks": ticks[20:30]}, headers=_h(WX))  # 30 ticks > 25/minute
        assert r.status_code == 429 and "ticks" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1, r.text
        assert c.post("/v1/analyses/x-1/ticks", json={"ticks": ticks[20:25]}, headers=_h(WX)).status_code == 200  # 25: within
        assert c.app.state.manager.store.n_ticks("x-1") == 25  # nothing of the refused batch applied
        # the write budget of an analysis (another token: its own tick budget)
        codes = [c.post("/v1/analyses/x-2/ticks", json={"ticks": ticks[i : i + 1]}, headers=_h(W)) for i in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429] and "analysis 'x-2'" in codes[-1].json()["detail"]
        assert c.get("/v1/analyses/x-2", headers=_h(R)).status_code == 200


def test_failed_authentication_and_scope_answers_are_rate_limited(tmp_path, step_sim):
    """Review notes 8: 401s (unknown token) are counted per client address, and a scoped token's 403s
    count against the token's own budget (counted before the scope check), so neither can probe at an
    unlimited rate. Before: 401 and 403 forever, nothing counted."""
    from .test_tenancy_scope import W, WX, _client, _h

    sim, cfg = step_sim
    cfgd = cfg.model_dump(mode="json")
    with _client(tmp_path, rate_limit_token="3/minute", rate_limit_failures="6/minute") as c:
        assert c.post("/v1/analyses", json={"id": "y-1", "config": cfgd, "project": "y"}, headers=_h(W)).status_code == 201
        assert [c.get("/v1/analyses/y-1", headers=_h(WX)).status_code for _ in range(4)] == [403, 403, 403, 429]
        assert [c.get("/v1/analyses/y-1", headers=_h("nope")).status_code for _ in range(4)] == [401, 401, 401, 429]
        assert c.get("/v1/analyses/y-1", headers=_h(W)).status_code == 200  # a good token from that address still passes


def test_serve_generates_a_metrics_token(tmp_path):
    """Review note 9: `serve` without a tokens file generates a metrics token too (docs/service.md's
    Prometheus example reads one), and a directory generated before 0.5.0 (write, read, kayenta) gets
    one added on its next start, the other tokens unchanged."""
    import json

    from deploysignal.cli._service import _generated_tokens
    from deploysignal.service import ServiceSettings, hash_token

    d = tmp_path / "new"
    entries = json.loads(_generated_tokens(d, "127.0.0.1", 8080).read_text())
    assert [e["role"] for e in entries] == ["write", "read", "kayenta", "metrics"]
    tok = (d / "metrics.token").read_text().strip()
    st = ServiceSettings(tokens=ServiceSettings.read_tokens_file(d / "tokens.json"))
    assert st.principal_of(tok).role == "metrics"
    old = tmp_path / "old"  # as 0.4.0 generated it
    old.mkdir(mode=0o700)
    prev = [{"name": f"generated-{r}", "sha256": hash_token(f"t-{r}"), "role": r} for r in ("write", "read", "kayenta")]
    (old / "tokens.json").write_text(json.dumps(prev))
    for r in ("write", "read", "kayenta"):
        (old / f"{r}.token").write_text(f"t-{r}\n")
    entries = json.loads(_generated_tokens(old, "127.0.0.1", 8080).read_text())
    assert entries[:3] == prev and entries[3]["role"] == "metrics"
    assert hash_token((old / "metrics.token").read_text().strip()) == entries[3]["sha256"]


def test_duplicate_token_hashes_are_refused_at_load(tmp_path):
    """Review note 10: two entries with one hash (e.g. a secret reused with a narrower scope) are refused
    when the tokens file is read, naming both; before, the later entry silently won."""
    import pytest

    from deploysignal._exceptions import ConfigError
    from deploysignal.service import ServiceSettings, TokenEntry, hash_token

    p = tmp_path / "tokens.yaml"
    p.write_text(f"- {{name: admin, role: write, sha256: {hash_token('s')}}}\n- {{name: shop, role: read, project: shop, sha256: {hash_token('s').upper()}}}\n")
    with pytest.raises(ConfigError, match="'admin' and 'shop'"):
        ServiceSettings.read_tokens_file(p)
    with pytest.raises(ValueError, match="same sha256"):
        ServiceSettings(tokens=[TokenEntry(name="a", sha256=hash_token("s"), role="write"), TokenEntry(name="b", sha256=hash_token("s"), role="read")])


def test_three_conflicts_fall_back_to_evaluating_under_the_write_lock(tmp_path, step_sim):
    """Review note 10 (a guard of existing behaviour): when another process appends before each of the
    OPTIMISTIC_TRIES outside-the-lock attempts, the batch is evaluated inside the write transaction
    and lands after all of them; one chain, replay ok."""
    sim, cfg = step_sim
    url = f"sqlite:///{tmp_path / 'f.db'}"
    m1, m2 = AnalysisManager(open_store(url)), AnalysisManager(open_store(url))
    m1.create("s", cfg.to_json(), cfg.version_id, {"window": 480}, {}, "t0")
    t = ticks_of(sim.canary, 0, 60)
    m1.ingest("s", t[:10])
    real, firsts = m1._prepare, []

    def prepare(*a, **k):
        out = real(*a, **k)
        firsts.append(out[0]["first_tick"])
        if len(firsts) <= m1.OPTIMISTIC_TRIES:  # another process appends 10 ticks before each attempt's write
            m2.ingest("s", t[10 * len(firsts) : 10 * len(firsts) + 10])
        return out

    locked = []
    real_locked = m1._ingest_locked
    m1._prepare = prepare
    m1._ingest_locked = lambda *a: locked.append(1) or real_locked(*a)
    r = m1.ingest("s", t[40:50])
    assert firsts == [10, 20, 30, 40] and locked == [1]
    assert r["first_tick"] == 40 and r["n_ticks"] == 50 and not r["duplicate"]
    assert m1.replay("s")["ok"] and m2.engine("s").n_ticks == 50
    m1.store.close()
    m2.store.close()
