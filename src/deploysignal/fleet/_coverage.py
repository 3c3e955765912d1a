"""Coverage grid and detection envelope of the fleet observer (seeded scenarios; deterministic; no I/O).

:func:`coverage_grid` runs every failure type of :data:`COVERAGE_TYPES` at several severities and seeds
and says, per run, whether the observer detected the fault, named it correctly and how long it took.
The grid reaches down to severities the observer misses, so it shows a *detection floor*: the cells
below it are not 100%.

:func:`detection_envelope` answers, per failure type and fleet size, "from which severity is the fault
detected with probability >= 90%?" with a Clopper-Pearson bound: a severity qualifies when all of its
``runs`` seeded runs detect the fault and the one-sided 99% lower confidence bound of the detection
probability is >= 0.9 (44 of 44 runs: 0.9006). Severities are tried from the smallest up, each stopped at
its first miss (one miss in 44 already puts the bound below 0.9); the first one that qualifies is the
envelope (with up to 7 severities tried, the chance that a severity below 90% detection qualifies is at
most 7 x 1% by the union bound). Under the assumption that detection does not get less likely as the severity grows (evidence
monotone in harm), every larger grid severity qualifies too; the grid rows show whether it does.

Failure types beyond the scenarios' own (:data:`~deploysignal.fleet._scenarios.FAILURE_TYPES`):

- ``event_conditional``: a rack fault that starts under a 100-tick ``firmware_push`` freeze of that rack
  and outlasts it. Detected: a shard of the rack flagged (necessarily after the freeze: frozen bets are
  0); named correctly additionally needs the rack named, no flag during the freeze and no false flag.
- ``multiple_testing``: about 8% of the shards (10 of 128), scattered; each carries exactly one shift,
  of strength severity x U(0.5, 1.5) (mean 1 x the severity), on its own random signal (nothing
  else: no common shift). Detected: one of them flagged; named correctly: no healthy shard flagged
  (the e-BH FDR control at work); ``power``: the share of them flagged. Its detection is not
  comparable cell for cell with ``shard_step`` (one shard at exactly the severity): it has 10
  faulty shards, the strongest of them up to 1.5 x the severity, and any one flagged counts, so it
  is detected at lower severities; ``power`` is the per-shard figure.

No ``hierarchical`` type: a fault detectable only above the shard (a rack's shards each too weak to
flag) needs rack-level alarms, which this observer does not raise (the hierarchical alarms of issue
26 are another branch). Scored by shard flags it would be ``rack_common_mode`` under another name; the
``rack_common_mode`` rows at 0.25 and 0.5 sd, with the faulty rack's average e-value reported
(``rack_evidence``, no error control across racks), show that regime until such alarms exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .._exceptions import InputError
from ._scenarios import FAILURE_TYPES, run_scenario

__all__ = ["COVERAGE_TYPES", "ENVELOPE_LEVEL", "SEVERITIES", "coverage_grid", "detection_envelope", "run_case"]

COVERAGE_TYPES = (*FAILURE_TYPES, "event_conditional", "multiple_testing")

#: severity grid per failure type (sd of the per-tick noise; fleet_event: of the fleet median's own
#: variability, load included), reaching below the detection floor
SEVERITIES: dict[str, tuple[float, ...]] = {
    "shard_step": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "shard_drift": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "host_fault": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "rack_common_mode": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "switch_spanning": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "fleet_event": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "event_conditional": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "multiple_testing": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
}

#: detection probability the envelope certifies, and the one-sided confidence of its lower bound
ENVELOPE_LEVEL = (0.9, 0.99)
_FREEZE = 100  # observed ticks of the event_conditional freeze
_RACK_ALPHA = 0.05


def run_case(failure: str, severity: float, seed: int, *, shape: tuple[int, int, int] = (8, 4, 4)) -> dict[str, Any]:
    """One seeded run of ``failure`` at ``severity`` on a ``shape`` (racks, hosts, GPUs) fleet, scored.

    Returns a row: failure, severity, seed, shards, detected, attributed, delay (ticks from onset to
    the first flag or fleet alarm), false_flags, power (share of faulty shards flagged; ``None`` for a
    fleet event, which shard residuals cancel by design), during_freeze
    (flags inside an event freeze), rack_evidence (the faulty rack's average e-value ended >= 1/0.05).
    """
    if failure not in COVERAGE_TYPES:
        raise InputError(f"unknown failure type {failure!r}; valid: {', '.join(COVERAGE_TYPES)}", column="failure")
    if not (math.isfinite(severity) and severity > 0):
        raise InputError(f"severity must be a positive number, got {severity}", column="severity")
    base = {"event_conditional": "rack_common_mode", "multiple_testing": "fdr"}
    r = run_scenario(base.get(failure, failure), magnitude=severity, seed=seed, fleet_shape=shape,
                     with_event=failure == "event_conditional", event_window=_FREEZE)
    onset = r.truth["onset"]
    aff = set(r.truth["affected"])
    true_flags = len(aff.intersection(r.flagged))
    detected, attributed = r.detected, r.attributed
    during = 0
    if failure == "event_conditional":
        during = 0 if r.first_flag_tick is None else int(r.first_flag_tick < onset + _FREEZE)
        attributed = attributed and not during
    rack_ev = None
    if r.truth["level"] == "rack":
        rack_ev = any(n.level == "rack" and n.node == r.truth["node"] and n.log_e >= math.log(1 / _RACK_ALPHA)
                      for n in r.final.top_nodes)
    return {
        "failure": failure, "severity": severity, "seed": seed, "shards": shape[0] * shape[1] * shape[2],
        "detected": bool(detected), "attributed": bool(attributed),
        "delay": None if r.first_flag_tick is None else r.first_flag_tick - onset,
        "false_flags": r.false_flags,
        "power": None if failure == "fleet_event" else round(true_flags / len(aff), 4),
        "during_freeze": during, "rack_evidence": rack_ev,
        "named": ";".join(f"{a.kind}:{a.level}:{a.node}" for a in r.final.attributions)[:120],
    }


def coverage_grid(
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    failures: Iterable[str] = COVERAGE_TYPES,
    severities: dict[str, tuple[float, ...]] | None = None,
    shape: tuple[int, int, int] = (8, 4, 4),
) -> list[dict[str, Any]]:
    """Every failure type x its severities (:data:`SEVERITIES` unless given) x ``seeds``: one
    :func:`run_case` row per run, in that order."""
    grid = severities or SEVERITIES
    return [run_case(f, sev, seed, shape=shape) for f in failures for sev in grid[f] for seed in seeds]


def detection_envelope(
    *,
    failures: Iterable[str] = COVERAGE_TYPES,
    shapes: Sequence[tuple[int, int, int]] = ((4, 4, 4), (8, 4, 4), (32, 4, 4)),
    severities: dict[str, tuple[float, ...]] | None = None,
    runs: int = 44,
    level: tuple[float, float] = ENVELOPE_LEVEL,
) -> list[dict[str, Any]]:
    """Smallest grid severity detected with probability >= ``level[0]`` (Clopper-Pearson lower bound at
    one-sided confidence ``level[1]``), per failure type and fleet shape.

    Seeds of a severity are ``0 .. runs-1``; a severity stops at its first miss. Rows: failure, shards,
    envelope (``None``: no grid severity qualifies), runs_at_envelope, cp_lower (its bound), and
    ``tried``: per severity tried, (detected, runs).

    Guarantee: each severity tried qualifies, when its true detection probability is below
    ``level[0]``, with probability at most ``1 - level[1]`` (exact binomial bound over independent
    seeded runs of that scenario). The envelope is the first of up to k tried severities to qualify, so
    P(the envelope's detection probability < level[0]) <= k (1 - level[1]) (union bound: <= 0.07 for
    the 7-point grids at 99%). Not claimed: anything about severities off the grid, other fleets,
    noise laws or load patterns than the scenarios'.
    """
    from ..evaluation._stats import cp_lower

    if runs < 1:
        raise InputError(f"runs must be >= 1, got {runs}", column="runs")
    grid = severities or SEVERITIES
    out = []
    for f in failures:
        for shape in shapes:
            tried: list[tuple[float, int, int]] = []
            env = None
            bound = 0.0
            for sev in grid[f]:
                hits = 0
                n = 0
                for seed in range(runs):
                    n += 1
                    if not run_case(f, sev, seed, shape=shape)["detected"]:
                        break
                    hits += 1
                tried.append((sev, hits, n))
                lo = cp_lower(hits, runs, level[1]) if n == runs else 0.0
                if hits == runs and lo >= level[0]:
                    env, bound = sev, lo
                    break
            out.append({"failure": f, "shards": shape[0] * shape[1] * shape[2], "shape": list(shape),
                        "envelope": env, "runs_at_envelope": runs if env is not None else None,
                        "cp_lower": round(bound, 4) if env is not None else None,
                        "tried": [[sev, h, n] for sev, h, n in tried]})
    return out
