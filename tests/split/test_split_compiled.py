"""The split gate's compiled tick step is bit-identical to the per-family path it replaced.

``data/split_golden.json`` holds, per seeded random stream, SHA-256 digests of what the gate produced
before the compiled step (commit "split: golden outputs of the per-family path", deploysignal 0.4.0):
the chained audit lines of the live path, the records of decisions read only after the whole run, a
run resumed from its JSON state halfway, a batch run then live ticks, and the batch path's arrays,
summary and state. The streams cover aggregated ticks (tiers, empty ticks, a metric missing in one arm
or absent from the data, share steps 5% -> 50%, harm in the canary, sample-ratio mismatch) and
per-request logs routed by session (units with several events, declared share changes).
Regenerate only on purpose: ``DEPLOYSIGNAL_SPLIT_GOLDEN=write pytest tests/split/test_split_compiled.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploysignal.audit._chain import chain_records
from deploysignal.split import (
    MetricSpec, RequestLog, SplitData, SplitGate, SplitSettings, SplitTick, requests_to_data, ticks_to_data,
)
from deploysignal.split._audit import split_header

GOLDEN = Path(__file__).parent / "data" / "split_golden.json"
N_STREAMS = 160


def _specs(rng: np.random.Generator, easy: bool) -> list[MetricSpec]:
    out = []
    for j in range(int(rng.integers(1, 5))):
        kind = "event" if rng.random() < 0.5 else "continuous"
        edges = tuple(float(x) for x in np.cumsum(rng.uniform(0.3, 1.5, int(rng.integers(2, 6))))) if kind == "continuous" else ()
        out.append(MetricSpec(f"m{j}", kind, str(rng.choice(["up", "down", "both"])), edges, 1.0 if easy else float(rng.choice([0.05, 0.2, 0.5])),
                              float(rng.choice([1.0, 2.0]))))
    return out


def _settings(rng: np.random.Generator, T: int, share: float, easy: bool) -> SplitSettings:
    srm = None if rng.random() < 0.5 else (share if easy or rng.random() < 0.6 else share * 1.6)
    return SplitSettings(alpha=float(rng.choice([0.05, 0.2])), window=int(rng.integers(3, max(4, T // 2))), max_extensions=int(rng.integers(0, 3)),
                         early_proceed=easy or bool(rng.random() < 0.5), min_proceed_fraction=float(rng.choice([0.0, 0.25])),
                         min_valid_fraction=float(rng.choice([0.2, 0.5, 0.9])), suggestive_fraction=float(rng.choice([0.3, 0.5, 1.0])),
                         canary_share=srm, proceed_alpha=float(rng.choice([0.05, 0.2])),
                         ratio_label=str(rng.choice(["rate", "legacy_odds"])))


def _tick_stream(rng: np.random.Generator, specs: list[MetricSpec], T: int, harm: float, settings: SplitSettings) -> SplitData:
    """Aggregated ticks: share steps (no share configured), tiers, empty ticks, metrics missing in one or both arms."""
    dicts = []
    steps = np.sort(rng.choice(T, 3, replace=False)) if settings.canary_share is None else np.full(3, 10**9)
    volume = 20000 if harm == 1.0 and rng.random() < 0.5 else int(rng.choice([400, 5000]))
    for t in range(T):
        q = (0.05, 0.1, 0.25, 0.5)[int(np.searchsorted(steps, t, side="right"))] if settings.canary_share is None else 0.25
        for tier in ([None] if rng.random() < 0.7 else ["a", "b"]):
            n = 0 if rng.random() < 0.1 else int(rng.integers(1, volume))
            nc = int(rng.binomial(n, q))
            arms: dict[str, Any] = {}
            shared = {s.name: rng.dirichlet(np.ones(len(s.edges) + 1) * 3) for s in specs if s.kind == "continuous"}
            for arm, units, mult in (("canary", nc, harm), ("stable", n - nc, 1.0)):
                ev, bk = {}, {}
                for s in specs:
                    if rng.random() < 0.08:
                        continue  # not measured in this arm
                    if s.kind == "event":
                        ev[s.name] = int(rng.binomial(units, min(1.0, 0.05 * (mult if s.direction != "down" else 1 / mult))))
                    else:
                        p = shared[s.name]
                        if mult != 1.0:
                            p = p * np.geomspace(1.0, mult if s.direction != "down" else 1 / mult, len(p))
                            p = p / p.sum()
                        bk[s.name] = [int(x) for x in rng.multinomial(int(units * rng.uniform(0.8, 1.0)), p)]
                arms[arm] = {"units": units, "events": ev, "buckets": bk}
            dicts.append({"timestamp": 1.8e9 + 60.0 * t, "arms": arms, "tier": tier})
    data = ticks_to_data([SplitTick.from_dict(d) for d in dicts], specs)
    if len(specs) > 1 and rng.random() < 0.2:  # a metric absent from the data altogether
        drop = specs[int(rng.integers(len(specs)))].name
        data = SplitData(data.timestamps, data.canary_units, data.units, {m: b for m, b in data.metrics.items() if m != drop})
    return data


def _request_stream(rng: np.random.Generator, specs: list[MetricSpec], T: int, harm: float, settings: SplitSettings) -> SplitData:
    """Per-request log routed by session: several requests (and events) per unit, declared share changes."""
    n_sess = int(rng.integers(40, 300))
    start = rng.uniform(0, 60.0 * T, n_sess)
    change = float(rng.uniform(0, 60.0 * T))
    q = np.where(start < change, 0.1, 0.4)
    canary_s = rng.random(n_sess) < q
    per = rng.integers(1, 6, n_sess)
    sess = np.repeat(np.arange(n_sess), per)
    ts = 1.8e9 + start[sess] + rng.uniform(0, 300, sess.size)
    can = canary_s[sess]
    vals = {}
    for s in specs:
        mult = np.where(can, harm if s.direction != "down" else 1 / harm, 1.0)
        if s.kind == "event":
            v = (rng.random(sess.size) < 0.1 * mult).astype(float)
        else:
            v = rng.lognormal(0.5, 0.8, sess.size) * mult ** 0.3
        v[rng.random(sess.size) < 0.05] = np.nan
        vals[s.name] = v
    log = RequestLog(ts, can, np.array([f"s{i}" for i in sess], dtype=object), np.array([""] * sess.size, dtype=object), vals)
    return requests_to_data(log, specs, settings.tick_seconds, 600.0, share_changes=(1.8e9 + change,))


def stream(seed: int) -> tuple[list[MetricSpec], SplitSettings, SplitData]:
    rng = np.random.default_rng([2026, 12, 7, seed])
    easy = rng.random() < 0.2  # no harm, wide tolerances, early proceed: non-inferiority can pass
    specs = _specs(rng, easy)
    T = int(rng.integers(8, 70))
    harm = 1.0 if easy else float(rng.choice([1.0, 1.0, 1.3, 2.5]))
    settings = _settings(rng, T, 0.25, easy)
    if rng.random() < 0.3:
        return specs, settings, _request_stream(rng, specs, T, harm, settings)
    return specs, settings, _tick_stream(rng, specs, T, harm, settings)


def _h(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, allow_nan=True).encode()).hexdigest()[:20]


def _audit(specs: list[MetricSpec], settings: SplitSettings, data: SplitData) -> tuple[str, str]:
    lines, head = chain_records([split_header(specs, settings, "golden")])
    gate = SplitGate(specs, settings)
    last = ""
    for t in range(data.n_ticks):
        recs = gate.update(data.ticks(t, t + 1)).records()
        more, head = chain_records(recs, head)
        lines += more
        last = recs[-1]["verdict"]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:20], last


def _has_units(data: SplitData) -> bool:
    """Some block holds a unit with two or more events (session routing)."""
    return any(b.xk.size for b in data.metrics.values())


def outputs(seed: int) -> dict[str, Any]:
    """Every observable of one stream through each path, as digests."""
    specs, settings, data = stream(seed)
    T = data.n_ticks
    audit, last = _audit(specs, settings, data)
    held = SplitGate(specs, settings).run(data)  # decisions read only after the whole run
    held_recs = _h([d.records() for d in held])
    half = T // 2
    g = SplitGate(specs, settings)
    first = [g.update(data.ticks(t, t + 1)).records() for t in range(half)]
    g = SplitGate.from_state(specs, settings, json.loads(json.dumps(g.state())))
    resumed = _h(first + [g.update(data.ticks(t, t + 1)).records() for t in range(half, T)])
    g = SplitGate(specs, settings)
    b = g.run_batch(data.ticks(0, half))
    mixed = _h([b.verdict.tolist(), b.first_fire.tolist()] + [g.update(data.ticks(t, t + 1)).records() for t in range(half, T)])
    g = SplitGate(specs, settings)
    b = g.run_batch(data)
    summ = g.summary()
    batch = _h([b.verdict.tolist(), b.final.tolist(), b.decided_at.tolist(), b.first_fire.tolist(), list(b.families), summ, g.state()])
    srm = bool(summ["effects"].get("sample_ratio", {}).get("fired"))
    early = summ["verdict"] == "proceed" and summ["decided_at_tick"] % settings.window != 0
    return {"ticks": T, "verdict": last, "srm_fired": srm, "early_proceed": early, "units": bool(data.n_ticks and _has_units(data)), "audit": audit, "held": held_recs, "resumed": resumed, "mixed": mixed, "batch": batch}


def test_stream_coverage():
    """The streams exercise what the test claims: every verdict, rollbacks, sample-ratio fires, early proceeds."""
    want = json.loads(GOLDEN.read_text())
    verdicts = {v["verdict"] for v in want.values()}
    assert {"proceed", "extend", "rollback"} <= verdicts, verdicts
    for key in ("srm_fired", "early_proceed", "units"):
        assert 5 <= sum(v[key] for v in want.values()) < N_STREAMS - 5, key
    assert len(want) == N_STREAMS


@pytest.mark.parametrize("chunk", range(8))
def test_bit_identical_to_golden(chunk):
    """Decisions, evidence floats and audit bytes equal the per-family path's on every stream."""
    seeds = range(chunk, N_STREAMS, 8)
    got = {str(s): outputs(s) for s in seeds}
    if os.environ.get("DEPLOYSIGNAL_SPLIT_GOLDEN") == "write":
        GOLDEN.parent.mkdir(exist_ok=True)
        old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        old.update(got)
        GOLDEN.write_text(json.dumps(dict(sorted(old.items(), key=lambda kv: int(kv[0]))), indent=1) + "\n")
        pytest.skip("golden outputs written")
    want = json.loads(GOLDEN.read_text())
    bad = {s: (got[s], want[s]) for s in got if got[s] != want[s]}
    assert not bad, f"{len(bad)} of {len(got)} streams differ, e.g. seed {next(iter(bad))}: {next(iter(bad.values()))}"


def test_family_attributes_set_after_construction_are_read_again():
    """The compiled step reads each family's grid, slots and thresholds once; setting one of them again
    (as the boundary Monte Carlo's deliberately broken variant does) is seen at the next tick, as the
    family's own step sees it."""
    specs, settings, data = stream(3)
    gate, ref = SplitGate(specs, settings), SplitGate(specs, settings)
    for g in (gate, ref):
        g.families[0].threshold = g.families[0].threshold / 4  # the gate fires four times as easily
    first = gate.run_batch(data).first_fire[0]
    steps = [f.step(data) for f in ref.families]  # the per-family path on the same families
    want = int(np.argmax(steps[0].fired)) + 1 if steps[0].fired.any() else -1
    assert first == want and first != SplitGate(specs, settings).run_batch(data).first_fire[0]
