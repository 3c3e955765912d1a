"""Prometheus sources without a network: lazily created and short-lived series, unsettled grid
times, metrics left out of a tick (all reported, never a clean-looking count), poller settle delay."""

from __future__ import annotations

import threading

import httpx
import pytest

from deploysignal._exceptions import InputError
from deploysignal.sources import PrometheusPuller, PrometheusSplitSource

from .test_prometheus_source import STALE, _FakeManager, _split_server


def _lab(h, pod, code=None):
    return {"__name__": "req_total", "v": h, "pod": pod, **({} if code is None else {"code": code})}


SPEC = {"address": "http://prom", "interval_seconds": 10, "arm_label": "v", "arms": {"canary": "c", "stable": "s"},
        "units": "req_total", "events": {"errors": "err_total"}}
UNITS = [(float(s), 10.0 * (s // 5)) for s in range(0, 401, 5)]  # 20 units per 10 s tick and arm


def test_lazily_created_and_short_lived_error_series_are_missing_with_a_reason_never_zero():
    # stable: an error series that has existed for long (1 error per 10 s); canary: one series per
    # error code, each created at its first error (value 1 from its first scrape on), and a pod that
    # lived from 131 to 138 s with 5 errors (no value at 130 or 140)
    stable_err = [(float(s), 100.0 + s // 10) for s in range(0, 401, 5)]
    lazy = [(_lab("c", "c-0", f"50{i}"), [(float(s), 1.0) for s in range(first, 401, 5)]) for i, first in enumerate((105, 125, 145, 165))]
    short = [(131.0, 0.0), (135.0, 5.0), (138.0, STALE)]
    series = {"req_total": [(_lab("c", "c-0"), UNITS), (_lab("s", "s-0"), UNITS)],
              "err_total": [(_lab("s", "s-0", "500"), stable_err), *lazy, (_lab("c", "c-9", "500"), short)]}
    src = PrometheusSplitSource(SPEC, client=_split_server(series))
    got = src.read(src.grid(100, 200))
    canary = {t["timestamp"][-6:]: t["arms"]["canary"]["events"].get("errors") for t in got.ticks}
    # before the first canary error series exists (100) and whenever one appears (110, 130, 150, 170)
    # or lives inside the tick (140) the canary's errors are missing; between, the lazily created
    # series add nothing (their value stays 1), so 0 is the true count
    assert canary == {"01:40Z": None, "01:50Z": None, "02:00Z": 0, "02:10Z": None, "02:20Z": None, "02:30Z": None, "02:40Z": 0,
                      "02:50Z": None, "03:00Z": 0, "03:10Z": 0, "03:20Z": 0}
    assert all(t["arms"]["stable"]["events"] == {"errors": 1} for t in got.ticks) and got.gaps == []
    why = {m["timestamp"][-6:]: m["reason"] for m in got.missing}
    assert [(m["arm"], m["metric"]) for m in got.missing] == [("canary", "errors")] * 6
    assert why["01:40Z"].startswith("no series of this arm")
    assert "appears in the tick" in why["01:50Z"] and 'code="501"' in why["02:10Z"] and "lived inside the tick" in why["02:20Z"]
    src.close()


def test_a_tick_is_never_clean_when_a_series_lived_inside_it():
    series = {"req_total": [(_lab("c", "c-0"), UNITS), (_lab("s", "s-0"), UNITS)],
              "err_total": [(_lab("c", "c-0", "500"), [(float(s), 0.0) for s in range(0, 401, 5)]),
                            (_lab("s", "s-0", "500"), [(float(s), 0.0) for s in range(0, 401, 5)]),
                            (_lab("c", "c-9", "500"), [(131.0, 0.0), (135.0, 5.0), (138.0, STALE)])]}
    src = PrometheusSplitSource(SPEC, client=_split_server(series))
    got = src.read([130.0, 140.0, 150.0])
    assert [t["arms"]["canary"]["events"] for t in got.ticks] == [{"errors": 0}, {}, {"errors": 0}]
    assert got.missing == [{"timestamp": "1970-01-01T00:02:20Z", "arm": "canary", "metric": "errors",
                            "reason": 'series {code="500",pod="c-9",v="c"} has samples in the tick but no value at either end (it lived inside the tick)'}]
    src.close()


def test_more_events_than_units_is_reported_as_missing():
    series = {"req_total": [(_lab("c", "c-0"), UNITS), (_lab("s", "s-0"), UNITS)],
              "err_total": [(_lab("c", "c-0", "500"), [(u, 1.5 * v) for u, v in UNITS]), (_lab("s", "s-0", "500"), [(u, v / 10) for u, v in UNITS])]}
    src = PrometheusSplitSource(SPEC, client=_split_server(series))
    got = src.read([110.0])
    assert got.ticks[0]["arms"]["canary"]["events"] == {} and got.ticks[0]["arms"]["stable"]["events"] == {"errors": 2}
    assert got.missing == [{"timestamp": "1970-01-01T00:01:50Z", "arm": "canary", "metric": "errors",
                            "reason": "counts 30 events, more than the arm's 20 units (scraped at other moments, or not per unit)"}]
    src.close()


def test_unsettled_grid_times_are_refused():
    series = {"req_total": [(_lab("c", "c-0"), UNITS), (_lab("s", "s-0"), UNITS)], "err_total": []}
    src = PrometheusSplitSource({**SPEC, "settle_seconds": 15}, client=_split_server(series), clock=lambda: 200.0)
    assert [t["timestamp"] for t in src.read(src.grid(170, 180)).ticks] == ["1970-01-01T00:02:50Z", "1970-01-01T00:03:00Z"]
    for times in ([190.0], [180.0, 190.0], [200.0]):
        with pytest.raises(InputError, match=r"grid time 1970-01-01T00:03:10Z has not settled: it can be read from 1970-01-01T00:03:25Z on" if times[-1] == 190 else "has not settled"):
            src.read(times)
    src.close()


def test_selector_and_metric_names_are_checked_by_the_spec():
    from deploysignal.sources import SplitSpec

    for bad in ({"units": 'y{a="b"} + z{}'}, {"events": {"": "err_total"}}, {"events": {"e": "x{} or y{}"}}, {"timeout": 1e-9}):
        with pytest.raises(ValueError):
            SplitSpec.model_validate({**SPEC, **bad})
    assert SplitSpec.model_validate({**SPEC, "units": 'req_total{path="/a{b}"}'}).units == 'req_total{path="/a{b}"}'


def _range_handler(calls):
    def handler(req: httpx.Request) -> httpx.Response:
        p = req.url.params
        calls.append(dict(p))
        if "start" not in p:
            t = float(p["time"])
            return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [t, str(t / 60)]}]}})
        start, end, step = float(p["start"]), float(p["end"]), float(p["step"])
        vals = [[start + i * step, str((start + i * step) / 60)] for i in range(int((end - start) / step) + 1)]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {}, "values": vals}]}})
    return handler


def test_poller_reads_a_grid_time_only_once_it_has_settled():
    calls: list[dict] = []
    stop = threading.Event()
    mgr = _FakeManager(60_360.0, stop, stop_after=2)
    now = [60_605.0]

    def clock():
        return now[0]

    def wait(timeout=None):  # the poller's wait: advance the clock instead of sleeping
        now[0] += timeout or 0.0
        return stop.is_set()

    stop.wait = wait  # type: ignore[method-assign]
    spec = {"url": "http://prom", "interval_seconds": 60, "canary": {"a": "q"}, "settle_seconds": 70}
    p = PrometheusPuller(mgr, "an", spec, stop, clock=clock, client=httpx.Client(transport=httpx.MockTransport(_range_handler(calls))))
    p.run()
    # at 60605 only 60420 and 60480 have settled (<= 60535); 60540 is read at 60610, not before
    assert [t["timestamp"] for t in mgr.ticks] == [60_420.0, 60_480.0]
    assert all(float(c.get("end", c.get("time"))) <= 60_535.0 for c in calls)
    stop.clear()
    mgr.stop_after = 3
    p = PrometheusPuller(mgr, "an", spec, stop, clock=clock, client=httpx.Client(transport=httpx.MockTransport(_range_handler(calls))))
    mgr.store.get = lambda aid: type("R", (), {"last_ts": 60_480.0, "created": "1970-01-01T00:00:00+00:00", "n_ticks": 2})()
    before = len(calls)
    p.run()
    assert [t["timestamp"] for t in mgr.ticks] == [60_420.0, 60_480.0, 60_540.0] and now[0] == 60_610.0
    assert [float(c["time"]) for c in calls[before:]] == [60_540.0]
