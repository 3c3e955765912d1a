"""The service's split analyses: new ones store ``ratio_label: rate`` and explain a rate ratio; an analysis
stored without it (created by 0.4.0) keeps 0.4.0's wording and header bytes, so its audit log and replay
stay byte-identical across the upgrade."""

from __future__ import annotations

from deploysignal.service._manager import _engine
from deploysignal.service._split_engine import split_config
from deploysignal.split import MetricSpec

from ._split import METRICS, split_ticks
from .conftest import R, W, make_client

SPECS = [MetricSpec(m, meta["kind"], meta["direction"], tuple(meta.get("edges", ())), meta["tolerance"]) for m, meta in METRICS.items()]
OLD_SETTINGS = {"alpha": 0.05, "window": 20, "max_extensions": 0, "early_proceed": False, "canary_share": 0.5}  # as 0.4.0 stored them


def _explanations(settings: dict) -> tuple[dict, list[str]]:
    eng = _engine(split_config(SPECS)[1], {"mode": "split", "settings": settings})
    res = eng.ingest(eng.validate(split_ticks(3, 20, error_ratio=3.0)))
    return eng.header(), [r["reason"] for r in res[-1].records if r["family"] in METRICS]


def test_stored_without_label_is_read_as_0_4_0_and_with_it_as_rate():
    head, old = _explanations(OLD_SETTINGS)
    assert "ratio_label" not in head["settings"]  # the header 0.4.0 wrote for this analysis, unchanged
    assert old[0].startswith("errors: canary odds ratio x") and old[1].startswith("latency_ms: canary odds ratio of values > ")
    head, new = _explanations({**OLD_SETTINGS, "ratio_label": "rate"})
    assert head["settings"]["ratio_label"] == "rate"
    assert new[0].startswith("errors: canary event rate x") and new[1].startswith("latency_ms: canary P(latency_ms > ")
    assert [s.split(" x", 1)[1] for s in new] == [s.split(" x", 1)[1] for s in old]  # the same numbers and verdicts


def test_created_analysis_stores_the_label_and_its_audit_says_rate(tmp_path):
    with make_client(tmp_path) as c:
        r = c.post("/v1/analyses", json={"id": "s", "mode": "split", "metrics": METRICS, "window": 20, "max_extensions": 0}, headers=W)
        assert r.status_code == 201 and r.json()["settings"]["ratio_label"] == "rate", r.text
        assert c.post("/v1/analyses/s/ticks", json={"ticks": split_ticks(3, 20, error_ratio=3.0)}, headers=W).status_code == 200
        audit = c.get("/v1/analyses/s/audit", headers=R).text
        assert '"ratio_label":"rate"' in audit.splitlines()[0] and "canary event rate x" in audit and "odds" not in audit
        assert c.post("/v1/analyses/s/replay", headers=R).json()["ok"] is True
