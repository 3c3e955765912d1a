"""Prometheus source without a network (httpx MockTransport): missing data is never invented."""

from __future__ import annotations

import math

import httpx
import pytest

from deploysignal._exceptions import InputError
from deploysignal.sources._prometheus import PrometheusSource, parse_instant


def _vec(*vals):
    return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(vals)]}}


def test_parse_instant_edge_cases():
    assert parse_instant(_vec("3.25")) == 3.25
    for bad in (_vec(), _vec("NaN"), _vec("+Inf"), _vec("-Inf"), _vec("1", "2"), _vec("abc"), {"status": "error", "error": "bad query"}, {"status": "success", "data": {"resultType": "matrix", "result": []}}, None, "x"):
        assert math.isnan(parse_instant(bad)), bad


def test_source_polls_each_query_at_the_given_time_and_maps_failures_to_missing():
    seen = []
    answers = {"up_q": _vec("1.5"), "empty_q": _vec(), "nan_q": _vec("NaN"), "ctl_q": _vec("2")}

    def handler(req: httpx.Request) -> httpx.Response:
        q = req.url.params["query"]
        seen.append((q, req.url.params["time"]))
        if q == "boom_q":
            return httpx.Response(503, text="unavailable")
        return httpx.Response(200, json=answers[q])

    src = PrometheusSource(
        "http://prom:9090/",
        {"a": "up_q", "b": "empty_q", "c": "nan_q", "d": "boom_q"},
        {"a": "ctl_q"},
        client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    tick = src.poll(1_700_000_060.0)
    assert tick == {"timestamp": 1_700_000_060.0, "values": {"a": 1.5, "b": None, "c": None, "d": None}, "control": {"a": 2.0}}
    assert {t for _, t in seen} == {"1700000060.0"}
    assert [q for q, _ in seen].count("boom_q") == 2  # one retry, then missing


def test_transport_error_is_missing():
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    src = PrometheusSource("http://prom:9090", {"a": "q"}, client=httpx.Client(transport=httpx.MockTransport(handler)), retries=0)
    assert src.poll(60.0)["values"] == {"a": None}


# ---------------------------------------------------------------------- per-arm split source, mocked
STALE = object()


def _split_server(series: dict[str, list[tuple[dict, list]]]):
    """A minimal Prometheus for one selector per metric: ``series[selector]`` is a list of (labels, raw
    samples (t, value or STALE)). Instant vectors use the last sample at or before t within 300 s (absent
    when it is a staleness marker); range selectors return the raw samples without markers."""
    import re

    def at(raw, t):
        prev = [(ts, v) for ts, v in raw if ts <= t and ts > t - 300]
        return None if not prev or prev[-1][1] is STALE else prev[-1][1]

    def handler(req: httpx.Request) -> httpx.Response:
        q = req.url.params["query"]
        if req.url.path.endswith("query_range"):
            start, end, step = (float(req.url.params[k]) for k in ("start", "end", "step"))
            grid = [start + i * step for i in range(int(round((end - start) / step)) + 1)]
            res = [{"metric": lab, "values": [[t, str(v)] for t in grid if (v := at(raw, t)) is not None]} for lab, raw in series[q]]
            return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [r for r in res if r["values"]]}})
        m = re.fullmatch(r"(.*)\[(\d+)ms\]", q)
        t = float(req.url.params["time"])
        if m:
            lo = t - int(m.group(2)) / 1000
            res = [{"metric": lab, "values": [[ts, str(v)] for ts, v in raw if lo < ts <= t and v is not STALE]} for lab, raw in series[m.group(1)]]
            return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [r for r in res if r["values"]]}})
        res = [{"metric": lab, "value": [t, str(v)]} for lab, raw in series[q] if (v := at(raw, t)) is not None]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": res}})

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_split_counts_never_invented():
    from deploysignal.sources import PrometheusSplitSource

    def arm(h, pod, le=None):
        return {"__name__": "req_total", "v": h, "pod": pod, **({} if le is None else {"le": le})}

    c0 = [(float(s), float(s // 5)) for s in range(0, 126, 5)] + [(128.0, 2.0)] + [(float(s), 30.0 + (s - 130) // 5) for s in range(130, 201, 5)]
    c1 = [(float(s), 100.0 + (s - 133)) for s in range(133, 201, 5)]  # a new pod (its counter did not start at 0)
    s0 = [(float(s), 7.0 * (s // 5)) for s in range(0, 146, 5)] + [(150.0, STALE)]  # its target went down
    other = [(float(s), 1e6 + s) for s in range(0, 201, 5)]
    series = {"req_total": [(arm("c", "c-0"), c0), (arm("c", "c-1"), c1), (arm("s", "s-0"), s0), (arm("zz", "z-0"), other)]}
    src = PrometheusSplitSource({"address": "http://prom", "interval_seconds": 10, "arm_label": "v", "arms": {"canary": "c", "stable": "s"},
                                 "units": "req_total"}, client=_split_server(series))
    got = src.read(src.grid(100, 170))
    assert [(t["timestamp"], t["arms"]["canary"]["units"], t["arms"]["stable"]["units"]) for t in got.ticks] == [
        ("1970-01-01T00:01:40Z", 2, 14), ("1970-01-01T00:01:50Z", 2, 14), ("1970-01-01T00:02:00Z", 2, 14)]
    assert got.ticks[0]["tier"] is None and src.range(100, 170) == got.ticks
    # 130: c-0 was reset (25 -> 2), although its values at 120 and 130 (24 -> 30) look like +6;
    # 140: c-1 appears; 150: s-0 goes stale (its last increments are unknown); 160, 170: stable has no series
    assert [(g["timestamp"][-6:], g["reason"].split(" unknown")[0]) for g in got.gaps] == [
        ("02:10Z", "units of canary"), ("02:20Z", "units of canary"), ("02:30Z", "units of stable"), ("02:40Z", "units of stable"), ("02:50Z", "units of stable")]
    with pytest.raises(InputError, match="not on the grid"):
        src.read([105.0])
    src.close()

    def hist(h, pod, counts_at):  # cumulative buckets le=1, 5, +Inf, sampled every 5 s
        return [(arm(h, pod, le), [(float(s), float(counts_at(s)[i])) for s in range(0, 201, 5)]) for i, le in enumerate(("1.0", "5.0", "+Inf"))]

    ok = hist("c", "c-0", lambda s: (s // 5, 3 * (s // 5), 4 * (s // 5)))  # per sample: 1 in (-inf,1], 2 in (1,5], 1 above
    bad = hist("s", "s-0", lambda s: (2 * (s // 5), s // 5, 3 * (s // 5)))  # le=5 below le=1: not a histogram
    ten = [(float(s), 10.0 * (s // 5)) for s in range(0, 201, 5)]  # 20 units per tick
    series = {"req2_total": [(arm("c", "c-0"), ten), (arm("s", "s-0"), ten)], "lat_bucket": ok + bad,
              "err_total": [(arm("c", "c-0"), [(u, 1.5 * v) for u, v in ten]), (arm("s", "s-0"), [(u, v / 10) for u, v in ten])]}
    spec = {"address": "http://prom", "interval_seconds": 10, "arm_label": "v", "arms": {"canary": "c", "stable": "s"}, "units": "req2_total",
            "events": {"errors": "err_total"}, "histograms": {"lat": {"buckets": "lat_bucket", "edges": [1, 5]}}}
    src = PrometheusSplitSource(spec, client=_split_server(series))
    t = src.tick(110.0)
    assert t["arms"]["canary"]["buckets"] == {"lat": [2, 4, 2]} and t["arms"]["stable"]["buckets"] == {}
    assert t["arms"]["canary"]["events"] == {} and t["arms"]["stable"]["events"] == {"errors": 2}  # 30 errors among 20 units: missing
    src.close()
    src = PrometheusSplitSource({**spec, "histograms": {"lat": {"buckets": "lat_bucket", "edges": [1, 2]}}}, client=_split_server(series))
    assert src.tick(110.0)["arms"]["canary"]["buckets"] == {}  # le values are not the configured edges
    assert src.tick(105.0 + 5) is not None and PrometheusSplitSource(spec, client=_split_server({**series, "req2_total": []})).tick(110.0) is None
    src.close()


# ---------------------------------------------------------------------- poller, mocked server and store
class _FakeManager:
    """The two things a poller uses: ``store.get`` (last tick time, creation time, tick count) and
    ``ingest`` with batch ids (a known id answers as a duplicate, as the store does)."""

    def __init__(self, last_ts, stop, stop_after, done_batches=()):
        import threading
        from types import SimpleNamespace

        self.ticks, self.batches, self.stop, self.stop_after = [], {b: {"final": False} for b in done_batches}, stop, stop_after
        self.lock = threading.Lock()
        self.store = SimpleNamespace(get=lambda aid: SimpleNamespace(last_ts=last_ts, created="1970-01-01T00:00:00+00:00", n_ticks=len(self.ticks)))

    def ingest(self, aid, ticks, batch_id):
        if batch_id in self.batches:
            return {**self.batches[batch_id], "duplicate": True}
        self.ticks += ticks
        self.batches[batch_id] = resp = {"final": False, "verdict": "extend", "n_ticks": len(self.ticks), "duplicate": False}
        if len(self.ticks) >= self.stop_after:
            self.stop.set()
        return resp


def test_poller_backfills_in_order_bounded_and_idempotent():
    import threading

    from deploysignal.sources import PrometheusPuller

    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        p = req.url.params
        calls.append((req.url.path, dict(p)))
        start, end, step = float(p["start"]), float(p["end"]), float(p["step"])
        vals = [[start + i * step, str((start + i * step) / 60)] for i in range(int((end - start) / step) + 1)]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": vals}]}})

    stop = threading.Event()
    mgr = _FakeManager(60_000.0, stop, stop_after=4, done_batches=["prom-60420000"])  # another process ingested 60420
    spec = {"url": "http://prom", "interval_seconds": 60, "canary": {"a": "q"}, "max_backfill_seconds": 240, "settle_seconds": 0}
    p = PrometheusPuller(mgr, "an", spec, stop, clock=lambda: 60_605.0, client=httpx.Client(transport=httpx.MockTransport(handler)))
    p.run()
    # due: 60060 .. 60600 (10 grid times); the bound keeps the last 5, one of them already ingested elsewhere
    assert [t["timestamp"] for t in mgr.ticks] == [60_360.0, 60_480.0, 60_540.0, 60_600.0]
    assert [t["values"]["a"] for t in mgr.ticks] == [1006.0, 1008.0, 1009.0, 1010.0]
    assert [c[0] for c in calls] == ["/api/v1/query_range"] and calls[0][1]["start"] == "60360.0" and calls[0][1]["end"] == "60600.0"
    st = p.status()
    assert (st["skipped_ticks"], st["backfilled_ticks"], st["ticks_ingested"]) == (5, 4, 4)
    assert st["state"] == "stopped" and st["reason"] == "service shutting down"


def test_poller_that_cannot_reach_the_server_ingests_nothing_then_stops():
    import threading

    from deploysignal.sources import PrometheusPuller

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    stop = threading.Event()
    mgr = _FakeManager(None, stop, stop_after=1)
    spec = {"url": "http://prom", "interval_seconds": 1, "canary": {"a": "q"}, "failing_after": 1, "stop_after_failures": 2, "settle_seconds": 0}
    states = []
    p = PrometheusPuller(mgr, "an", spec, stop, clock=lambda: 100.0, client=httpx.Client(transport=httpx.MockTransport(handler)))
    orig = p._set
    p._set = lambda state, reason, last_error=None: (states.append(state), orig(state, reason, last_error))  # type: ignore[method-assign]
    p.run()
    assert mgr.ticks == []  # nothing was read, so nothing is ingested (no tick of missing values)
    st = p.status()
    assert st["state"] == "stopped" and st["reason"] == "prometheus failed 2 polls in a row; nothing more is ingested"
    assert "failing" in states and st["consecutive_failures"] == 2 and "ConnectError" in st["last_error"] and st["since"] == "1970-01-01T00:01:40Z"


def test_range_fetch_matches_grid_times_to_the_millisecond():
    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        p = req.url.params
        seen.update(p)
        start, end, step = (int(round(float(p[k]) * 1000)) for k in ("start", "end", "step"))  # the server works in ms
        vals = [[t / 1000, str(t / 1000)] for t in range(start, end + 1, step)]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": vals}]}})

    src = PrometheusSource("http://prom", {"a": "q"}, client=httpx.Client(transport=httpx.MockTransport(handler)))
    times = [600_000_001 * 2.7 + i * 2.7 for i in range(3)]  # 1620000008.1000001: not what the server echoes
    assert times[2] != 1620000008.1
    assert [t["values"]["a"] for t in src.fetch(times)] == [1620000002.7, 1620000005.4, 1620000008.1]
    src.close()


def test_answers_are_classified_failures_never_data(caplog):
    from deploysignal.sources import PromAPIError, PromUnavailable
    from deploysignal.sources._prometheus_http import query_instant

    ok = {"status": "success", "warnings": ["store s1 unreachable"], "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "2"]}]}}
    answers = {
        "warn": httpx.Response(200, json=ok),
        "busy": httpx.Response(503, json={"status": "error", "errorType": "timeout", "error": "query timed out"}),
        "limit": httpx.Response(429, text="slow down"),
        "html": httpx.Response(200, text="<html>login</html>"),
        "bad": httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"}),
        "exec": httpx.Response(422, json={"status": "error", "errorType": "execution", "error": "many-to-many matching not allowed"}),
        "auth": httpx.Response(401, text="Unauthorized"),
        "matrix": httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}),
    }
    sent = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(dict(req.url.params))
        return answers[req.url.params["query"]]

    client = httpx.Client(transport=httpx.MockTransport(handler))
    with caplog.at_level("WARNING"):
        assert query_instant(client, "http://prom", "warn", 1.0) == [({}, 2.0)]
    assert "store s1 unreachable" in caplog.text and sent[0]["partial_response"] == "false"
    for q in ("busy", "limit", "html"):
        with pytest.raises(PromUnavailable):
            query_instant(client, "http://prom", q, 1.0)
    for q, status in (("bad", 400), ("exec", 422), ("auth", 401), ("matrix", 200)):
        with pytest.raises(PromAPIError) as e:
            query_instant(client, "http://prom", q, 1.0)
        assert e.value.status == status
