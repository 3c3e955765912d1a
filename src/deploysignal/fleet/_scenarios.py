"""Seeded fleet scenarios for demos and the coverage matrix (deterministic; no I/O).

A scenario is a synthetic fleet (racks x hosts x GPUs, AR(1) noise, a shared fleet-wide load
pattern that the robust reference must cancel) with one injected fault from :data:`FAILURE_TYPES`
starting at ``onset``. :func:`run_scenario` runs the :class:`FleetObserver` and scores detection and
attribution against the truth; :func:`coverage_matrix` does that for 6 failure types x 20 parameter
variations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._exceptions import InputError
from ._contract import ClusterEvent, FleetObservation
from ._observer import FleetObserver, ObserverSettings
from ._topology import TopologySnapshot

__all__ = ["DEMOS", "FAILURE_TYPES", "ScenarioResult", "coverage_matrix", "run_scenario"]

FAILURE_TYPES = ("shard_step", "shard_drift", "host_fault", "rack_common_mode", "switch_spanning", "fleet_event")
DEMOS = ("clean", "silent_drift", "rack_common_mode", "event_freeze", "fdr", "topology_spanning")


@dataclass
class ScenarioResult:
    name: str
    truth: dict[str, Any]
    detected: bool
    attributed: bool
    first_flag_tick: int | None
    false_flags: int
    flagged: tuple[str, ...]
    final: FleetObservation
    timeline: list[dict[str, Any]] = field(default_factory=list)


def _fleet(seed: int, ticks: int, n_signals: int, topo: TopologySnapshot, phi: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(topo)
    eps = rng.standard_normal((ticks, n, n_signals))
    x = np.empty_like(eps)
    x[0] = eps[0] / np.sqrt(1 - phi**2)
    for t in range(1, ticks):
        x[t] = phi * x[t - 1] + eps[t]
    load = 2.0 * np.sin(np.arange(ticks) / 30.0)[:, None, None] + 0.5 * rng.standard_normal((ticks, 1, n_signals))
    return x + load


def run_scenario(
    failure: str,
    *,
    magnitude: float = 1.0,
    seed: int = 0,
    ticks: int = 400,
    onset: int = 100,
    n_signals: int = 4,
    settings: ObserverSettings | None = None,
    with_event: bool = False,
    keep_timeline: bool = False,
    fleet_shape: tuple[int, int, int] = (8, 4, 4),
    event_window: int | None = None,
) -> ScenarioResult:
    """Simulate one fault on a fleet of ``fleet_shape`` = racks x hosts x GPUs (default 8 x 4 x 4 = 128
    shards) and score the observer.

    ``failure`` is one of :data:`FAILURE_TYPES` or ``"clean"`` / ``"fdr"`` (``"fdr"``: 10 of 128 shards
    faulty, the same share of other fleet sizes, at least 2, each shifted once, by ``magnitude`` x
    U(0.5, 1.5) on its own random signal; the other types shift every shard of their scope by
    ``magnitude`` on one common signal). ``truth["shifts"]`` lists every injected shift as (shard,
    signal index, strength): the injection is driven by that list. ``with_event`` registers a matching
    cluster event (``firmware_push``) covering the fault's scope for ``event_window`` observed ticks
    (default: the whole run), so the freeze hook should prevent per-shard blame while it lasts.
    """
    if failure not in FAILURE_TYPES + ("clean", "fdr"):
        raise InputError(f"unknown failure {failure!r}; valid: {', '.join(FAILURE_TYPES + ('clean', 'fdr'))}")
    topo = TopologySnapshot.synthetic(*fleet_shape, racks_per_switch=2, racks_per_zone=4)
    rng = np.random.default_rng([seed, 7])
    x = _fleet(seed, ticks, n_signals, topo, phi=0.3)
    ids = np.array(topo.ids)
    racks, rack_idx = topo.group_index("rack")
    hosts, host_idx = topo.group_index("host")
    switches, sw_idx = topo.group_index("switch")
    rack_arr, host_arr, sw_arr = np.array(rack_idx), np.array(host_idx), np.array(sw_idx)
    truth: dict[str, Any] = {"failure": failure, "magnitude": magnitude, "onset": onset, "kind": "none",
                             "level": "", "node": ""}
    sig = int(rng.integers(n_signals))
    affected = np.zeros(len(topo), dtype=bool)
    ramp = np.clip((np.arange(ticks) - onset) / 100.0, 0, None)[:, None]
    step = (np.arange(ticks) >= onset)[:, None].astype(float)
    if failure in ("shard_step", "shard_drift"):
        i = int(rng.integers(len(topo)))
        affected[i] = True
        truth.update(kind="shard_fault", level="shard", node=str(ids[i]))
    elif failure == "host_fault":
        h = int(rng.integers(len(hosts)))
        affected = host_arr == h
        truth.update(kind="node_fault", level="host", node=hosts[h])
    elif failure == "rack_common_mode":
        r = int(rng.integers(len(racks)))
        affected = rack_arr == r
        truth.update(kind="node_fault", level="rack", node=racks[r])
    elif failure == "switch_spanning":
        s = int(rng.integers(len(switches)))
        affected = sw_arr == s
        truth.update(kind="node_fault", level="switch", node=switches[s])
    elif failure == "fleet_event":
        affected[:] = True
        truth.update(kind="fleet_event", level="fleet", node="fleet")
    elif failure == "fdr":
        affected[rng.choice(len(topo), max(2, round(len(topo) * 10 / 128)), replace=False)] = True
        truth.update(kind="shard_fault", level="shard", node="*")
    profile = (ramp if failure == "shard_drift" else step)[:, 0]
    if failure == "fdr":  # scattered shards, each one shift of its own strength on its own random signal
        shifts = [(int(i), int(rng.integers(n_signals)), magnitude * (0.5 + rng.random())) for i in np.flatnonzero(affected)]
    else:  # the whole scope shifted by the severity on one common signal
        shifts = [(int(i), sig, magnitude) for i in np.flatnonzero(affected)]
    for i, k, strength in shifts:  # the record drives the injection: truth["shifts"] is what was added
        x[:, i, k] += strength * profile
    truth["affected"] = tuple(str(s) for s in ids[affected])
    truth["shifts"] = tuple((str(ids[i]), k, strength) for i, k, strength in shifts)
    base = x[:onset]
    med = np.median(base, axis=1)
    loc = np.median(med, axis=0)
    scale = 1.4826 * np.median(np.abs(med - loc), axis=0)
    obs = FleetObserver(topo, n_signals, baseline_loc=loc, baseline_scale=scale, phi=0.3,
                        settings=settings or ObserverSettings(q=0.05))
    if with_event:
        lvl = truth.get("level", "fleet")
        scope = () if lvl == "fleet" else ((truth["node"],) if lvl != "shard" else truth["affected"])
        obs.add_event(ClusterEvent(kind="firmware_push", start_tick=0, window=event_window or ticks - onset,
                                   scope_level=lvl, scope=scope, source="scenario"))
    first = None
    timeline = []
    o = None
    for t in range(onset, ticks):  # observer tick 0 = scenario tick ``onset``
        o = obs.update(x[t])
        if first is None and (o.flagged or o.fleet_fired):
            first = t
        if keep_timeline and (o.newly_flagged or t == ticks - 1):
            timeline.append({"tick": t, "new": list(o.newly_flagged), "fleet_log_e": round(o.fleet_log_e, 3)})
    assert o is not None
    aff = set(truth["affected"])
    false_flags = sum(s not in aff for s in o.flagged)
    if failure == "clean":
        detected, attributed = bool(o.flagged or o.fleet_fired), False
    elif failure == "fleet_event":
        detected = o.fleet_fired
        attributed = detected and not [a for a in o.attributions if a.kind != "fleet_event"]
    elif failure == "fdr":
        detected = bool(set(o.flagged) & aff)
        attributed = detected and false_flags == 0
    else:
        detected = bool(set(o.flagged) & aff)
        attributed = detected and any(
            a.kind == truth["kind"] and a.level == truth["level"] and a.node == truth["node"] for a in o.attributions
        ) and false_flags == 0 and not o.fleet_fired
    return ScenarioResult(failure, truth, detected, attributed, first, false_flags, o.flagged, o, timeline)


_MAGS = {
    "shard_step": (1.0, 1.5, 2.0, 3.0),
    "shard_drift": (1.0, 1.5, 2.0, 3.0),
    "host_fault": (1.0, 1.5, 2.0, 3.0),
    "rack_common_mode": (1.0, 1.5, 2.0, 3.0),
    "switch_spanning": (1.0, 1.5, 2.0, 3.0),
    "fleet_event": (2.0, 3.0, 4.0, 6.0),  # must exceed the fleet's own load variability (sd ~1.5)
}


def coverage_matrix(*, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> list[dict[str, Any]]:
    """6 failure types x 20 variations (4 magnitudes x 5 seeds, which also pick the faulty node and
    signal). One row per run: failure, magnitude, seed, detected, attributed, delay, false flags."""
    rows = []
    for failure in FAILURE_TYPES:
        for mag in _MAGS[failure]:
            for seed in seeds:
                r = run_scenario(failure, magnitude=mag, seed=seed)
                rows.append({
                    "failure": failure, "magnitude": mag, "seed": seed, "detected": r.detected,
                    "attributed": r.attributed,
                    "delay": None if r.first_flag_tick is None else r.first_flag_tick - r.truth["onset"],
                    "false_flags": r.false_flags, "truth_node": r.truth["node"],
                    "named": ";".join(f"{a.kind}:{a.level}:{a.node}" for a in r.final.attributions)[:120],
                })
    return rows
