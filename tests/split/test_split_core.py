"""Split gate core: naive transcriptions of the kernels, the exact supermartingale property on small
blocks, batch path = single-tick path, state round trip, the public API."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

import deploysignal.split as split
from deploysignal.split import BlockBuilder, MetricSpec, SampleRatio, SplitData, SplitGate, SplitMetric, SplitSettings, rate_grid


def test_public_api():
    assert sorted(split.__all__, key=lambda x: (not x.isupper(), x)) == split.__all__
    assert set(split.__all__) == {
        "EDGE_LEVELS", "VERDICTS", "ArmCounts", "BlockBuilder", "Family", "FamilyEvidence", "FamilyStep", "MetricBlocks", "MetricSpec",
        "RequestLog", "SampleRatio", "SplitBatch", "SplitData", "SplitDecision", "SplitGate", "SplitMetric", "SplitSettings", "SplitTick",
        "rate_grid", "read_requests", "read_split_signals", "read_split_ticks", "requests_to_data", "resolve_specs", "settings_error",
        "ticks_to_data",
    }


def _random_blocks(rng, T, K, sessions=False):
    """Random per-unit counts -> (BlockBuilder blocks, the raw units per block for the naive transcription)."""
    bb = BlockBuilder(K)
    raw = []
    for _ in range(T):
        tick = []
        for _ in range(rng.integers(0, 3)):
            n = int(rng.integers(0, 30))
            lab = rng.random(n) < rng.uniform(0.05, 0.9)
            y = rng.poisson(0.8, (n, K)) if sessions else (rng.random((n, K)) < rng.uniform(0.01, 0.6)).astype(int)
            extras = [(k, int(v), int(((y[:, k] == v)).sum())) for k in range(K) for v in sorted(set(y[:, k].tolist())) if v >= 2]
            bb.add_block(int(lab.sum()), n, (y * lab[:, None]).sum(0), (y == 1).sum(0), extras)
            tick.append((lab, y))
        bb.end_tick()
        raw.append(tick)
    return bb.build(), raw


def _naive_ell(raw, rho, K):
    """ell_k(rho) = sum over blocks of a log rho - sum_i log(1 - q + q rho^y_i), written out per unit."""
    ell = np.zeros((K, len(rho)))
    for tick in raw:
        for lab, y in tick:
            n, nc = len(lab), int(lab.sum())
            if n == 0 or nc == 0 or nc == n:
                continue
            q = nc / n
            for k in range(K):
                for i, r in enumerate(rho):
                    ell[k, i] += sum(math.log(r) * y[u, k] * lab[u] for u in range(n)) - sum(math.log(1 - q + q * r ** int(y[u, k])) for u in range(n))
    return ell


@pytest.mark.parametrize("sessions", [False, True])
def test_kernel_matches_naive_transcription(sessions):
    rng = np.random.default_rng(3 + sessions)
    K, T = 3, 25
    blocks, raw = _random_blocks(rng, T, K, sessions)
    spec = MetricSpec("m", "continuous", "both", (1.0, 2.0, 3.0))
    m = SplitMetric(spec, alpha=0.05)
    st = m.step(SplitData(np.arange(T, dtype=float), np.zeros(T, dtype=np.int64), np.zeros(T, dtype=np.int64), {"m": blocks}))
    want = _naive_ell(raw, m.rho, K)
    np.testing.assert_allclose(m._ell, want, rtol=1e-10, atol=1e-9)
    # the rollback e-value: average over edges and both sides of the average over grid alternatives above / below 1
    j0 = m.j0
    terms = [math.exp(want[k, j0 + s * j]) for k in range(K) for s in (1, -1) for j in range(1, j0 + 1)]
    assert m.log_evidence() == pytest.approx(math.log(sum(terms) / len(terms)), rel=1e-9, abs=1e-9)
    assert st.measured.sum() == sum(any(0 < lab.sum() < len(lab) for lab, _ in tick) for tick in raw)


def test_one_block_is_a_supermartingale_increment_exactly():
    """E[L(psi)] <= 1 under a uniformly random n_c-subset, by enumerating every subset (any outcomes, any psi)."""
    rng = np.random.default_rng(5)
    for _ in range(30):
        n = int(rng.integers(2, 9))
        nc = int(rng.integers(1, n))
        y = rng.poisson(1.0, n)
        q = nc / n
        for psi in (0.1, 0.5, 0.9, 1.2, 2.0, 10.0):
            den = np.prod(1 - q + q * psi ** y.astype(float))
            mean = np.mean([psi ** y[list(S)].sum() / den for S in itertools.combinations(range(n), nc)])
            assert mean <= 1 + 1e-12


def test_rate_grid():
    for tol in (0.05, 0.1, 0.2, 0.5, 1.0, 3.0):
        rho, j0, n = rate_grid(tol)
        assert rho[j0] == 1.0 and rho[j0 + n] == pytest.approx(1 + tol, rel=1e-12) and rho[j0 - n] == pytest.approx(1 / (1 + tol), rel=1e-12)
        assert rho[-1] >= 10 - 1e-9 and rho[0] <= 0.1 + 1e-12 and np.all(np.diff(np.log(rho)) <= math.log(1.25) + 1e-12)


def _gate_data(rng, T, harm=1.0):
    specs = [MetricSpec("errors"), MetricSpec("lat", "continuous", "up", (1.0, 2.0, 4.0)), MetricSpec("ok", "event", "down")]
    bbs = {s.name: BlockBuilder(s.n_events) for s in specs}
    cu, un = [], []
    for _ in range(T):
        n = int(rng.integers(0, 60))
        lab = rng.random(n) < 0.3
        err = rng.random(n) < 0.05 * np.where(lab, harm, 1)
        lat = rng.lognormal(0.3, 0.8, n) * np.where(lab, harm, 1)
        ok = rng.random(n) < 0.9
        for s, y in (("errors", err[:, None]), ("lat", lat[:, None] > np.array([1.0, 2.0, 4.0])), ("ok", ok[:, None])):
            bbs[s].add_block(int(lab.sum()), n, (y & lab[:, None]).sum(0), y.sum(0))
            bbs[s].end_tick()
        cu.append(int(lab.sum()))
        un.append(n)
    return specs, SplitData(np.arange(T, dtype=float), np.array(cu), np.array(un), {k: b.build() for k, b in bbs.items()})


@pytest.mark.parametrize("harm", [1.0, 2.0])
def test_batch_path_equals_single_tick_path(harm):
    rng = np.random.default_rng(11)
    specs, data = _gate_data(rng, 120, harm)
    st = SplitSettings(window=40, early_proceed=True, canary_share=0.3)
    g1, g2 = SplitGate(specs, st), SplitGate(specs, st)
    ds = g1.run(data)
    b = g2.run_batch(data)
    assert [d.verdict for d in ds] == b.verdicts
    assert [d.final for d in ds] == b.final.tolist()
    assert [-1 if d.decided_at_tick is None else d.decided_at_tick for d in ds] == b.decided_at.tolist()
    assert json.dumps(g1.state()) == json.dumps(g2.state())  # bit for bit (floats by repr)
    assert (harm > 1) == (ds[-1].verdict == "rollback")


def test_state_round_trip_continues_exactly():
    rng = np.random.default_rng(12)
    specs, data = _gate_data(rng, 100, 1.3)
    st = SplitSettings(window=30, canary_share=0.3)
    whole = SplitGate(specs, st)
    full = whole.run(data)
    first = SplitGate(specs, st)
    first.run(data.ticks(0, 45))
    restored = SplitGate.from_state(specs, st, json.loads(json.dumps(first.state())))
    rest = restored.run(data.ticks(45, 100))
    assert [d.records() for d in rest] == [d.records() for d in full[45:]]
    assert json.dumps(restored.state()) == json.dumps(whole.state())


def test_srm_fires_on_mismatch_only_and_voids_proceed():
    rng = np.random.default_rng(13)
    specs, data = _gate_data(rng, 80)
    st = SplitSettings(window=40, max_extensions=0, canary_share=0.15)  # the data's share is 0.3
    d = SplitGate(specs, st).run(data)[-1]
    assert d.verdict == "extend" and d.final and "sample_ratio" in d.reason and "never proceed" in d.reason
    srm = SampleRatio(0.3, alpha=0.001)
    assert not srm.step(data).fired.any()


def test_missing_metric_never_proceeds():
    rng = np.random.default_rng(14)
    specs, data = _gate_data(rng, 40)
    empty = BlockBuilder(1)
    for _ in range(40):
        empty.end_tick()
    data = SplitData(data.timestamps, data.canary_units, data.units, dict(data.metrics, errors=empty.build()))
    d = SplitGate(specs, SplitSettings(window=40, max_extensions=0)).run(data)[-1]
    assert d.verdict == "extend" and "too little data" in d.reason and "errors" in d.reason


def test_explain_and_effect_of_a_harmful_canary():
    rng = np.random.default_rng(15)
    specs, data = _gate_data(rng, 200, 2.0)
    g = SplitGate(specs, SplitSettings(window=200))
    g.run_batch(data)
    s = g.summary()
    e = s["effects"]["errors"]["effect"]
    assert s["verdict"] == "rollback" and e["lower"] <= 2.0 <= e["upper"] and 1.3 < e["ratio"] < 3.0
    assert s["effects"]["errors"]["explain"].startswith("errors: canary event rate x")


def _late_harm(T=300, onset=150, empty=0):
    bb = BlockBuilder(1)
    for t in range(T):
        if t >= empty:  # the first `empty` ticks have no units
            bb.add_block(50, 100, [1 if t < onset else 8], [2 if t < onset else 9])
        bb.end_tick()
    return SplitData(np.arange(float(T)), np.full(T, 50), np.full(T, 100), {"errors": bb.build()})


@pytest.mark.parametrize("settings, ended", [(dict(window=120, max_extensions=0), "proceed at tick 120"),
                                               (dict(window=120, max_extensions=0, min_valid_fraction=0.9), "extend at tick 120")])
def test_crossing_after_final_proceed_or_extend_rolls_back(settings, ended):
    """Review finding 2: the window ended (proceed / final extend) at tick 120, harm crosses later; the
    verdict must be rollback at the crossing, on every path (per tick, batch, state round trip)."""
    data = _late_harm(empty=0 if "proceed" in ended else 30)
    st = SplitSettings(**settings)
    g = SplitGate([MetricSpec("errors")], st)
    ds = g.run(data)
    assert ds[119].verdict in ("proceed", "extend") and ds[119].final and ds[119].decided_at_tick == 120
    last = ds[-1]
    fired_at = g.summary()["effects"]["errors"]["explain"]
    assert last.verdict == "rollback" and last.final and last.fired == ("errors",)
    assert last.decided_at_tick > 150 and f"crossed at tick {last.decided_at_tick}" in fired_at
    assert ended in last.reason
    gb = SplitGate([MetricSpec("errors")], st)
    b = gb.run_batch(data)
    assert b.verdicts == [d.verdict for d in ds] and b.decided_at.tolist() == [-1 if d.decided_at_tick is None else d.decided_at_tick for d in ds]
    assert gb.summary() == g.summary()
    # the service path: state round trip at tick 130 (after the window-end verdict)
    g1 = SplitGate([MetricSpec("errors")], st)
    g1.run(data.ticks(0, 130))
    g2 = SplitGate.from_state([MetricSpec("errors")], st, g1.state())
    assert [d.verdict for d in g2.run(data.ticks(130, 300))] == [d.verdict for d in ds[130:]]


def test_explain_says_no_events_and_rate_ratio():
    """Review finding 3 (label) and note 10: a metric with no events printed 'x0.09 [0.00, inf]'."""
    bb = BlockBuilder(1)
    for _ in range(5):
        bb.add_block(50, 100, [0], [0])
        bb.end_tick()
    g = SplitGate([MetricSpec("errors")], SplitSettings(window=10))
    g.run(SplitData(np.arange(5.0), np.full(5, 50), np.full(5, 100), {"errors": bb.build()}))
    assert g.summary()["effects"]["errors"]["explain"].startswith("errors: no events, log e-value")
