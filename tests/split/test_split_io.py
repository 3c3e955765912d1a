"""Split inputs: the agreed aggregated tick format and per-request logs (units, sessions, bad input)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploysignal._exceptions import InputError, SchemaError
from deploysignal.split import MetricSpec, RequestLog, SplitTick, read_requests, read_split_ticks, requests_to_data, resolve_specs, ticks_to_data

SPECS = [MetricSpec("errors"), MetricSpec("latency_ms", "continuous", "up", (50.0, 100.0, 200.0, 400.0, 800.0))]
TICK = {"timestamp": "2026-12-07T10:00:00Z",
        "arms": {"canary": {"units": 240, "events": {"errors": 3}, "buckets": {"latency_ms": [10, 50, 120, 40, 15, 5]}},
                 "stable": {"units": 4810, "events": {"errors": 41}, "buckets": {"latency_ms": [220, 1010, 2300, 890, 310, 80]}}},
        "tier": None}


def test_agreed_example_parses_round_trips_and_counts_exceedances():
    t = SplitTick.from_dict(TICK)
    assert SplitTick.from_dict(t.to_dict()) == t and t.to_dict() == TICK
    d = ticks_to_data([t], SPECS)
    e, lat = d.metrics["errors"], d.metrics["latency_ms"]
    assert (e.nc[0], e.n[0], e.a[0, 0], e.c1[0, 0]) == (240, 5050, 3, 44)
    # units above edge k: buckets k+1..5; canary 50+120+40+15+5 above 50, ...
    assert lat.nc[0] == 240 and lat.n[0] == 240 + 4810
    assert lat.a[0].tolist() == [230, 180, 60, 20, 5] and lat.c1[0].tolist() == [230 + 4590, 180 + 3580, 60 + 1280, 20 + 390, 5 + 80]


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d["arms"]["canary"]["events"].update(errors=241), "exceeds units"),
    (lambda d: d["arms"]["canary"]["events"].update(errors=1.5), "non-negative integer"),
    (lambda d: d["arms"]["canary"].update(units=-1), "non-negative integer"),
    (lambda d: d["arms"].pop("stable"), "exactly 'canary' and 'stable'"),
    (lambda d: d["arms"]["stable"]["buckets"].update(latency_ms=[1, 2]), "sums to|counts"),
    (lambda d: d.update(extra=1), "unknown keys"),
    (lambda d: d.update(timestamp="yesterday"), "timestamp"),
    (lambda d: d["arms"]["canary"]["buckets"].update(latency_ms=[300, 0, 0, 0, 0, 0]), "more than units"),
])
def test_bad_ticks_are_named(mutate, msg):
    d = json.loads(json.dumps(TICK))
    mutate(d)
    with pytest.raises(InputError, match=msg):
        ticks_to_data([SplitTick.from_dict(d)], SPECS)


def test_unknown_metric_and_wrong_bucket_count_and_order():
    d = json.loads(json.dumps(TICK))
    d["arms"]["canary"]["events"]["timeouts"] = 1
    with pytest.raises(InputError, match="'timeouts' is not in the signals"):
        ticks_to_data([SplitTick.from_dict(d)], SPECS)
    d = json.loads(json.dumps(TICK))
    d["arms"]["canary"]["buckets"]["latency_ms"] = [1, 1, 1]
    with pytest.raises(InputError, match="3 counts"):
        ticks_to_data([SplitTick.from_dict(d)], SPECS)
    t1, t0 = SplitTick.from_dict(TICK), SplitTick.from_dict(dict(TICK, timestamp="2026-12-07T09:59:00Z"))
    with pytest.raises(InputError, match="increase"):
        ticks_to_data([t1, t0], SPECS)


def test_missing_in_one_arm_is_missing_and_tiers_are_blocks():
    d = json.loads(json.dumps(TICK))
    del d["arms"]["stable"]["events"]["errors"]
    other = dict(json.loads(json.dumps(TICK)), tier="premium")
    data = ticks_to_data([SplitTick.from_dict(d), SplitTick.from_dict(other)], SPECS)
    assert data.n_ticks == 1 and data.metrics["errors"].n.tolist() == [5050] and data.metrics["latency_ms"].n.tolist() == [5050, 5050]
    assert data.units.tolist() == [2 * 5050]


def test_read_split_ticks_names_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(TICK) + "\n{not json\n")
    with pytest.raises(InputError, match="line 2"):
        read_split_ticks(p)


def _write(tmp_path, rows, name="r.csv"):
    p = tmp_path / name
    cols = list(rows[0])
    p.write_text(",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in rows))
    return p


def test_requests_per_request_units_match_aggregated_ticks(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(400):
        lat = float(rng.lognormal(5, 1))
        rows.append({"timestamp": 1000.0 + i * 0.9, "arm": "canary" if rng.random() < 0.3 else "stable", "errors": int(rng.random() < 0.1),
                     "latency_ms": "" if rng.random() < 0.1 else repr(lat)})
    log = read_requests(_write(tmp_path, rows))
    data = requests_to_data(log, SPECS, 60.0, 0.0)
    ticks = []
    for t in range(data.n_ticks):
        arms = {}
        for arm in ("canary", "stable"):
            sel = [r for r in rows if int((r["timestamp"] - 1000.0) // 60) == t and r["arm"] == arm]
            lat = np.array([float(r["latency_ms"]) for r in sel if r["latency_ms"] != ""])
            b = np.bincount(np.searchsorted(np.array(SPECS[1].edges), lat, side="left"), minlength=6).tolist()
            arms[arm] = {"units": len(sel), "events": {"errors": sum(r["errors"] for r in sel)}, "buckets": {"latency_ms": b}}
        ticks.append(SplitTick.from_dict({"timestamp": 1000.0 + 60 * t, "arms": arms}))
    agg = ticks_to_data(ticks, SPECS)
    e1, e2 = data.metrics["errors"], agg.metrics["errors"]
    assert (e1.nc == e2.nc).all() and (e1.a == e2.a).all() and (e1.c1 == e2.c1).all()
    l1, l2 = data.metrics["latency_ms"], agg.metrics["latency_ms"]
    assert (l1.n == l2.n).all() and (l1.a == l2.a).all() and (l1.c1 == l2.c1).all()


def test_value_equal_to_an_edge_is_not_above_it():
    log = RequestLog(np.array([0.0, 1.0]), np.array([True, False]), None, np.array(["", ""], dtype=object), {"latency_ms": np.array([50.0, 50.0001])})
    d = requests_to_data(log, [MetricSpec("latency_ms", "continuous", "up", (50.0,))], 60.0, 0.0)
    assert d.metrics["latency_ms"].a[0].tolist() == [0] and d.metrics["latency_ms"].c1[0].tolist() == [1]


def test_sessions_enter_once_when_they_close_grouped_by_start_tick():
    # unit u1 (canary): requests at 0 s and 70 s, 2 errors; u2 (stable) at 10 s; u3 (canary) at 130 s; timeout 30 s
    log = RequestLog(np.array([0.0, 70.0, 10.0, 130.0]), np.array([True, True, False, True]), np.array(["u1", "u1", "u2", "u3"], dtype=object),
                     np.array(["", "", "", ""], dtype=object), {"errors": np.array([1.0, 1.0, 0.0, 0.0])})
    d = requests_to_data(log, [MetricSpec("errors")], 60.0, 30.0)
    b = d.metrics["errors"]
    # u2 closes at 40 s (tick 0, start 0); u1 closes at 100 s (tick 1, start 0); u3 closes at end of input (tick 2)
    assert b.tptr.tolist() == [0, 1, 2, 3] and b.n.tolist() == [1, 1, 1] and b.nc.tolist() == [0, 1, 1]
    assert b.a[:, 0].tolist() == [0, 2, 0] and b.c1[:, 0].tolist() == [0, 0, 0]
    assert (b.xk.tolist(), b.xy.tolist(), b.xc.tolist()) == ([0], [2], [1])
    assert d.units.tolist() == [1, 1, 1] and d.canary_units.tolist() == [0, 1, 1]


@pytest.mark.parametrize("rows, err, msg", [
    ([{"timestamp": 0, "arm": "blue", "errors": 0}], InputError, "row 1, column 'arm'"),
    ([{"timestamp": 0, "arm": "canary", "errors": 0.5}], InputError, "non-negative integer"),
    ([{"timestamp": 0, "arm": "canary", "unit": "a", "errors": 0}, {"timestamp": 1, "arm": "stable", "unit": "a", "errors": 0}], InputError, "both arms"),
    ([{"timestamp": 0, "errors": 0}], SchemaError, "no arm column"),
    ([{"timestamp": 0, "arm": "canary", "errors": ""}], InputError, "no values"),
])
def test_bad_request_logs_are_named(tmp_path, rows, err, msg):
    with pytest.raises(err, match=msg):
        log = read_requests(_write(tmp_path, rows))
        resolve_specs(log, {"errors": {"kind": "event"}})
        requests_to_data(log, [MetricSpec("errors")], 60.0, 10.0)


def test_signals_file_must_cover_the_columns(tmp_path):
    log = read_requests(_write(tmp_path, [{"timestamp": 0, "arm": "canary", "errors": 0, "x": 1}]))
    with pytest.raises(SchemaError, match="not in the signals file"):
        resolve_specs(log, {"errors": {"kind": "event"}})
    specs, notes = resolve_specs(log, None)
    assert [s.kind for s in specs] == ["event", "event"] and len(notes) == 2


def test_tick_length_far_too_short_is_an_error():
    log = RequestLog(np.array([0.0, 1e6]), np.array([True, False]), None, np.array(["", ""], dtype=object), {"errors": np.array([0.0, 1.0])})
    with pytest.raises(InputError, match="use longer ticks"):
        requests_to_data(log, [MetricSpec("errors")], 0.01, 0.0)
