"""Prometheus source without a network (httpx MockTransport): missing data is never invented."""

from __future__ import annotations

import math

import httpx

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
