"""canonical_json must write exactly the bytes of the standard library's sorted, compact json.dumps.

The format of compiled configs (their version ids) and of hash-chained audit lines is defined by
``json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)``; canonical_json takes a
faster msgspec path where the two coincide. These tests compare it with the definition directly.
"""

from __future__ import annotations

import enum
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploysignal.calibration import _config
from deploysignal.calibration import canonical_json


def reference(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def same_as_reference(obj) -> None:
    try:
        want = reference(obj)
    except Exception as exc:  # noqa: BLE001 - the reference decides which inputs are errors
        with pytest.raises(type(exc)):
            canonical_json(obj)
        return
    assert canonical_json(obj) == want


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 5e-324, 1.7976931348623157e308, 1e22, 0.1])
scalars = st.none() | st.booleans() | st.integers() | floats | st.text()
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(json_like)
def test_any_json_like_value_matches_the_standard_library(obj):
    same_as_reference(obj)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x80), max_size=4), st.text(alphabet=st.characters(max_codepoint=0x80))))
def test_ascii_edge_characters_and_key_order(obj):
    # control characters, quotes, backslash, DEL (escaped by the standard library, not by msgspec)
    same_as_reference(obj)


def test_floats_across_the_whole_range_and_at_the_notation_boundaries():
    rng = np.random.default_rng(20261202)
    bits = rng.integers(0, 2**64, 200_000, dtype=np.uint64).view(np.float64)
    dec = rng.standard_normal(100_000) * 10.0 ** rng.uniform(-6, 18, 100_000)
    near = []
    for b in (1e-4, 1e16):
        for sign in (1.0, -1.0):
            for direction in (np.inf, -np.inf):
                v = np.float64(sign * b)
                for _ in range(500):
                    near.append(float(v))
                    v = np.nextafter(v, direction)
    values = [float(x) for x in np.concatenate([bits, dec])] + near
    finite = [x for x in values if math.isfinite(x)]
    assert canonical_json(finite) == reference(finite)
    # one record per value as well (each float alone decides the path)
    assert all(canonical_json({"x": x}) == reference({"x": x}) for x in finite[::20])


def test_values_at_and_beyond_the_edges_of_the_fast_domain():
    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    class Shown(dict):  # the C encoder iterates a dict subclass through its items(); msgspec would not
        def items(self):
            return [("z", 0)]

    for obj in ({"a": 1e-5}, [1e16], {"a": math.nan}, [math.inf], {1: 2}, {"k": Color.RED}, {Name("b"): 1, "a": 2},
                "caf\u00e9", "\x7f", "\ud800", Shown(a=1), [Shown(a=1)], {"k": Shown(a=1)}, {"a": np.float64(0.5)}, {"a": np.int64(3)}, 2**80, [[[[[[1.5]]]]]]):
        same_as_reference(obj)
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular"):
        canonical_json(cyclic)


def test_a_gate_record_takes_the_fast_path(monkeypatch):
    record = {"action": None, "alpha_allocated": 0.020000000000000004, "components": {"log_esr": 0.0387592230674256},
              "drivers": ["p99_latency_ms"], "family": "A", "fire": False, "tick": 12, "timestamp": 1700259200.0,
              "statistic": -12.167313422462747}
    assert _config._plain(record)
    want = reference(record)

    class Refuse:
        def encode(self, obj):
            raise AssertionError("standard library path taken")

    monkeypatch.setattr(_config, "_CANONICAL", Refuse())
    assert canonical_json(record) == want


def test_the_installed_msgspec_passes_the_import_check_and_the_reference_path_is_a_full_fallback(monkeypatch):
    assert _config._FAST_OK  # otherwise every call silently takes the slower path
    record = {"a": [0.5, -0.0, 1e-4, 1e-5, 2.0**70], "b": "x\x7f", "c": math.pi}
    want = reference(record)
    monkeypatch.setattr(_config, "_FAST_OK", False)
    assert canonical_json(record) == want


def _gate_decisions(scenario: str, mode: str, seed: int):
    from deploysignal.calibration import compile_baseline
    from deploysignal.gate import Gate, GateSettings
    from deploysignal.simulate import simulate

    sim = simulate(scenario, seed=seed)
    cfg = compile_baseline(sim.baseline, seed=seed)
    can = sim.canary.values.copy()
    can[np.random.default_rng(seed).random(can.shape) < 0.05] = np.nan
    gate = Gate(cfg, GateSettings(mode=mode, window=150))
    ctl = sim.control.values if mode == "two-sample" else None
    out = []
    for a in range(0, len(can), 97):  # uneven batches
        b = min(a + 97, len(can))
        out += gate.update_many(sim.canary.timestamps[a:b], can[a:b], control=None if ctl is None else ctl[a:b])
    return out


@pytest.mark.parametrize(("scenario", "mode"), [("step", "one-sample"), ("joint_shift", "two-sample"), ("healthy_heavy", "one-sample")])
def test_gate_lines_are_the_canonical_json_of_its_records(scenario, mode, monkeypatch):
    """``Decision.lines`` skips the per-value check where the gate's batch check vouches for the floats.
    Every line equals the standard library's encoding; the regressions drive p-values below 1e-4, where
    msgspec writes other bytes, and the check must send those ticks to the checked path (with the
    check disabled, the same run writes wrong lines)."""
    decisions = _gate_decisions(scenario, mode, 3)
    fast = [d._source.fast for d in decisions]
    for d in decisions:
        assert d.lines == [reference(r) for r in d.records]
    if scenario != "healthy_heavy":
        assert any(fast) and not all(fast)
        from deploysignal.gate import Gate

        monkeypatch.setattr(Gate, "_in_domain", lambda self, *a: np.ones(a[-1], dtype=bool))
        unchecked = _gate_decisions(scenario, mode, 3)
        assert any(d.lines != [reference(r) for r in d.records] for d in unchecked)


def test_lazy_evidence_agrees_with_the_records():
    for d in _gate_decisions("step", "one-sample", 5):
        assert [e.family for e in d.evidence] == [r["family"] for r in d.records[:-1]]
        for ev, rec in zip(d.evidence, d.records):
            assert (ev.fired, ev.reason, list(ev.drivers)) == (rec["fire"], rec["fire_reason"], rec["drivers"])
            assert rec["action"] == (ev.action if ev.fired else None)
            assert rec["statistic"] == (ev.statistic if math.isfinite(ev.statistic) else None)
            assert rec["log_wealth"] == (ev.log_wealth if math.isfinite(ev.log_wealth) else None)
    assert any(e.fired and e.reason for e in d.evidence)  # the run fires: reasons and drivers are compared


def test_in_domain_encoding_falls_back_on_what_msgspec_cannot_write():
    """A lone surrogate (here in a signal name the gate records as an extra) is outside what msgspec
    encodes; the unchecked path must still write the standard library's bytes, not raise."""
    record = {"schema_continuity": "extra:x\ud800", "statistic": 0.5}
    assert _config.canonical_json_in_domain(record) == reference(record)


def test_record_structs_declare_their_keys_sorted():
    """``Decision.lines`` writes the records as structs in declaration order, without sorting: the
    declarations must be sorted (a struct declared out of order fails here, not in the audit bytes)."""
    from deploysignal.gate import _gate

    for struct in _gate._RECORD_STRUCTS:
        fields = struct.__struct_fields__
        assert list(fields) == sorted(fields), struct.__name__


def test_gate_lines_fall_back_where_msgspec_cannot_write_a_recorded_name():
    """A signal name outside the config is recorded in ``schema_continuity``; non-ASCII or a lone
    surrogate there must reach the checked path (the standard library escapes both), also on ticks
    whose floats the batch check vouches for."""
    from deploysignal.calibration import compile_baseline
    from deploysignal.gate import Gate, GateSettings
    from deploysignal.simulate import simulate

    sim = simulate("healthy", seed=1)
    cfg = compile_baseline(sim.baseline, seed=1)
    # family D's 2..24 bank: with 2..48 one of these ticks records a float msgspec may write differently
    # (below 1e-4), and the tick goes the checked way for its floats; this test needs ticks that do not
    gate = Gate(cfg, GateSettings(window=50, d_max_period=24))
    names = cfg.names
    extras = ["plain", "caf\u00e9", "x\ud800", "del\x7f"]
    rows = [{n: float(v) for n, v in zip(names, sim.canary.values[i])} for i in range(20)]
    for i, extra in enumerate(extras, start=10):
        rows[i][extra] = 1.0
    ds = gate.update_many(sim.canary.timestamps[:20], rows)[10:14]
    assert all(d._source.fast for d in ds)  # the floats are in the domain: only the text decides
    for d, extra in zip(ds, extras):
        assert any(extra in r["schema_continuity"] for r in d.records)
        assert d.lines == [reference(r) for r in d.records]


def test_gate_lines_without_the_fast_encoder_are_the_same(monkeypatch):
    """With the import check failed (``_LINES_OK`` false) every line takes the checked path: same bytes."""
    from deploysignal.gate import _gate

    assert _gate._LINES_OK  # otherwise every tick silently takes the slower path
    fast = [d.lines for d in _gate_decisions("step", "one-sample", 3)]
    monkeypatch.setattr(_gate, "_LINES_OK", False)
    slow = _gate_decisions("step", "one-sample", 3)
    assert [d.lines for d in slow] == fast
    assert all(d.lines == [reference(r) for r in d.records] for d in slow)


def test_compiled_in_domain_check_equals_the_numpy_expression():
    """The gate's per-tick domain check (compiled) against the numpy expression it replaced, on values at
    and beside every boundary (0, -0.0, 1e-4, 1e16, NaN, infinities, log-wealth 9.2, valid fraction 1.0001e-4)."""
    from deploysignal.calibration._config import _FAST_MAX, _FAST_MIN
    from deploysignal.detectors._kernels import in_domain_run

    rng = np.random.default_rng(17)
    edges = np.array([0.0, -0.0, _FAST_MIN, np.nextafter(_FAST_MIN, 0), -_FAST_MIN, _FAST_MAX, np.nextafter(_FAST_MAX, 0),
                      -np.nextafter(_FAST_MAX, 0), np.nan, np.inf, -np.inf, 1.5, -3e7, 1e-300])
    for static_ok in (True, False):
        for trial in range(200):
            n, F = int(rng.integers(1, 6)), 5
            out = rng.choice(edges, size=(n, F, 4))
            out = np.where(rng.random(out.shape) < 0.7, rng.normal(0, 10, size=out.shape), out)  # mostly ordinary values
            stamps = rng.choice(np.concatenate([edges, [1.7e9, 86400.5]]), size=n)
            max_lw = rng.choice(np.array([9.2, np.nextafter(9.2, 10), 3.0, np.nan, -np.inf, 50.0]), size=(n, F))
            tick = int(rng.integers(0, 20000))
            n_valid = rng.integers(0, 4, size=n)  # fractions on both sides of 1.0001e-4 for ticks near 10^4
            fast = np.empty(n, dtype=bool)
            in_domain_run(stamps, out, max_lw, n_valid.astype(np.int64), float(tick), static_ok, _FAST_MIN, _FAST_MAX, 9.2, 1.0001e-4, fast)

            def ok(x):
                a = np.abs(x)
                return ~np.isfinite(x) | (a == 0.0) | ((a >= _FAST_MIN) & (a < _FAST_MAX))

            want = np.full(n, static_ok) & ok(stamps) & ok(out.reshape(n, -1)).all(axis=1) & ~(max_lw[:, :-1] > 9.2).any(axis=1)
            frac = n_valid / (tick + 1.0 + np.arange(n))
            want &= (frac == 0.0) | (frac >= 1.0001e-4)
            assert fast.tolist() == want.tolist(), (trial, static_ok)
    # the valid fraction alone decides: everything else in the domain, n_valid / (tick + 1 + i) on both sides
    # of 1.0001e-4 (tick 9998: 1/9999 >= 1.0001e-4 in; tick 9999: 1/10000 out; 0 valid ticks: in)
    for tick, n_valid, want_fast in ((9998.0, [1], [True]), (9999.0, [1], [False]), (9998.0, [1, 1], [True, False]),
                                     (20000.0, [0], [True]), (19996.0, [2, 2, 2], [True, True, False])):
        n = len(n_valid)
        fast = np.empty(n, dtype=bool)
        in_domain_run(np.full(n, 1.7e9), np.full((n, 5, 4), 1.5), np.zeros((n, 5)), np.array(n_valid, dtype=np.int64), tick,
                      True, _FAST_MIN, _FAST_MAX, 9.2, 1.0001e-4, fast)
        assert fast.tolist() == want_fast, (tick, n_valid)
