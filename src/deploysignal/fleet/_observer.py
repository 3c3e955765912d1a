"""The fleet observer: shard e-processes + fleet-level e-process + e-BH + freeze + attribution.

Per tick the observer

1. freezes shards in the scope of active :class:`~deploysignal.fleet.ClusterEvent` s (their bets are 0,
   which is predictable: events are known before the tick's values);
2. updates the per-shard e-processes (:class:`~deploysignal.fleet.FleetEProcess`) on residuals
   against the cross-shard median, and a **fleet-level** e-process on the cross-shard median itself,
   standardised by the baseline fleet reference (so a fleet-wide event, which cancels in the shard
   residuals, is still seen, as a fleet event);
3. flags shards by e-BH at level ``q`` on the adjusted running maxima
   :math:`\\kappa M_{t,i}^{1-\\kappa}` (e-values for every t, see :mod:`deploysignal.fleet._fdr`), so
   a flag never drops and the FDR of everything ever flagged is :math:`\\le q` under any dependence;
4. attributes flagged shards: a topology node at most ``max_hops`` above the shard with at least
   ``min_members`` flagged members and a flagged fraction >= ``min_fraction`` is named a node fault
   (the nearest such level wins); the rest are shard faults; a fired fleet-level e-process is a fleet
   event.

Guarantees: shard flags - FDR <= q (adjusted e-BH, any dependence, any time); fleet-level alarm -
Ville, :math:`P(\\text{ever fire}) \\le \\alpha_{fleet}` under the null that the standardised fleet
median is conditionally symmetric about 0 (baseline stationarity of the fleet reference).
Attribution is a descriptive grouping of the flagged set and carries no separate error guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from .._exceptions import InputError
from ._common_mode import CommonMode, CommonModeEProcess
from ._contract import Attribution, ClusterEvent, FleetObservation, NodeEvidence
from ._evidence import FleetEProcess, contamination_margin, group_log_e
from ._fdr import adjust_running_max, ebh
from ._topology import LEVELS, TopologySnapshot

__all__ = ["FleetObserver", "ObserverSettings", "attribute"]


@dataclass(frozen=True)
class ObserverSettings:
    """Settings of :class:`FleetObserver`.

    q : FDR level of shard flags. kappa : adjuster exponent. alpha_fleet : Ville level of the
    fleet-level alarm. max_hops / min_members / min_fraction : attribution walk. clip / lambdas : bets.
    max_faulty_fraction : the largest fraction of shards planned to be faulty at once; the shard bets
    carry the margin :func:`contamination_margin` of it, so null shards stay valid (and e-BH keeps
    FDR <= q) while up to that fraction of the fleet is off. 0 gives the exchangeable null only.
    center_delta : with per-shard baseline centers, the probability allowed for *any* center to be off
    by more than the tolerance the bets leave for it (Bonferroni over shards x signals of the
    Gaussian quantile of ``center_se``).
    """

    q: float = 0.05
    kappa: float = 0.1
    alpha_fleet: float = 0.01
    max_hops: int = 4
    min_members: int = 2
    min_fraction: float = 0.6
    clip: float = 2.0
    lambdas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    max_faulty_fraction: float = 0.10
    center_delta: float = 0.01

    def __post_init__(self) -> None:
        contamination_margin(self.max_faulty_fraction)  # validates
        for name, v in (("q", self.q), ("kappa", self.kappa), ("alpha_fleet", self.alpha_fleet),
                        ("center_delta", self.center_delta)):
            if not 0 < v < 1:
                raise InputError(f"{name} must lie in (0, 1), got {v}", column=name)
        if not 1 <= self.max_hops <= len(LEVELS):
            raise InputError(f"max_hops must be 1..{len(LEVELS)}, got {self.max_hops}", column="max_hops")
        if self.min_members < 2:
            raise InputError("min_members must be >= 2", column="min_members")
        if not 0 < self.min_fraction <= 1:
            raise InputError("min_fraction must lie in (0, 1]", column="min_fraction")


def attribute(
    topo: TopologySnapshot,
    flagged: Sequence[str],
    *,
    max_hops: int = 4,
    min_members: int = 2,
    min_fraction: float = 0.6,
    log_e: dict[str, float] | None = None,
) -> list[Attribution]:
    """Group flagged shards by the topology node that explains them (common mode).

    Walks the levels within ``max_hops`` of a shard (host = 1 hop, nvlink = 2, rack = 3, switch = 4,
    zone = 5) from the widest down: a node holding >= ``min_members`` of the still unclaimed flagged
    shards, making up >= ``min_fraction`` of its members, claims them (so a whole rack is named as the
    rack, not as its four hosts). Unclaimed shards are shard faults.

    Examples
    --------
    >>> topo = TopologySnapshot.synthetic(2, 2, 2)
    >>> [(a.kind, a.level, a.node) for a in attribute(topo, ["r000-h00-g0", "r000-h00-g1", "r001-h01-g0"])]
    [('node_fault', 'host', 'r000-h00'), ('shard_fault', 'shard', 'r001-h01-g0')]
    """
    le = log_e or {}
    remaining = list(dict.fromkeys(flagged))
    idx = topo.index
    out: list[Attribution] = []
    for level in reversed(LEVELS[:max_hops]):
        counts: dict[str, list[str]] = {}
        for sid in remaining:
            node = topo.shards[idx[sid]].node(level)
            if node is not None:
                counts.setdefault(node, []).append(sid)
        claimed: set[str] = set()
        for node in sorted(counts):
            members = counts[node]
            size = len(topo.members(level, node))
            if len(members) >= min_members and len(members) / size >= min_fraction:
                name, lv = node, level
                full = set(topo.members(level, node))
                for lower in LEVELS[: LEVELS.index(level)]:  # same shards at a nearer level: name that
                    n2 = topo.shards[idx[members[0]]].node(lower)
                    if n2 is not None and set(topo.members(lower, n2)) == full:
                        name, lv = n2, lower
                        break
                out.append(Attribution(kind="node_fault", level=lv, node=name, shards=tuple(members),
                                       log_e=max(le.get(s, 0.0) for s in members)))
                claimed.update(members)
        remaining = [s for s in remaining if s not in claimed]
    out.extend(Attribution(kind="shard_fault", level="shard", node=s, shards=(s,), log_e=le.get(s, 0.0))
               for s in remaining)
    return out


class FleetObserver:
    """Observe a fleet tick by tick.

    Parameters
    ----------
    topology : TopologySnapshot
        Shard order defines the rows of every ``values`` array.
    n_signals : int
    directions : sequence of str, optional
    baseline_loc, baseline_scale : ndarray, shape (n_signals,), optional
        Baseline location / robust scale of the cross-shard median (for the fleet-level e-process);
        without them the fleet-level process is off (``fleet_log_e`` stays 0).
    phi : AR(1) coefficients per (shard, signal) or scalar.
    center, scale : per-shard baseline of the deviation from the fleet median (see FleetEProcess);
        :func:`curate_baseline` computes them, and ``center_se`` (the standard error of ``center``, in
        ``scale`` units), which widens the null by a Bonferroni quantile of it (``center_delta``).
    settings : ObserverSettings
    common_mode : CommonMode, optional
        A one-factor model of the fleet median (:func:`~deploysignal.fleet.fit_common_mode`, computed by
        :func:`curate_baseline`). When given, the fleet-level e-process tests the fleet median with the
        shared load removed tick by tick (:class:`~deploysignal.fleet.CommonModeEProcess`: valid for any
        load process) instead of against ``baseline_loc`` / ``baseline_scale`` (valid only when the
        fleet median is stationary and symmetric about ``baseline_loc``).

    Examples
    --------
    >>> topo = TopologySnapshot.synthetic(4, 2, 4)
    >>> obs = FleetObserver(topo, 2, settings=ObserverSettings(q=0.1))
    >>> rng = np.random.default_rng(1)
    >>> for t in range(150):
    ...     x = rng.standard_normal((len(topo), 2))
    ...     x[5] += 2.0
    ...     o = obs.update(x)
    >>> o.flagged
    ('r000-h01-g1',)
    """

    def __init__(
        self,
        topology: TopologySnapshot,
        n_signals: int,
        *,
        directions: Sequence[str] | None = None,
        baseline_loc: np.ndarray | None = None,
        baseline_scale: np.ndarray | None = None,
        phi: np.ndarray | float = 0.0,
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        center_se: np.ndarray | None = None,
        settings: ObserverSettings | None = None,
        common_mode: CommonMode | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings or ObserverSettings()
        s = self.settings
        self.n_shards = len(topology)
        self.n_signals = int(n_signals)
        tol: np.ndarray | float = 0.0
        if center_se is not None:
            if center is None:
                raise InputError("center_se is the standard error of center: give center and scale too", column="center_se")
            se = np.broadcast_to(np.asarray(center_se, dtype=float), (self.n_shards, self.n_signals))
            if not (np.all(np.isfinite(se)) and np.all(se >= 0)):
                raise InputError("center_se must be finite and >= 0", column="center_se")
            tol = float(norm.isf(s.center_delta / (2 * self.n_shards * self.n_signals))) * se
        self.shards = FleetEProcess(self.n_shards, self.n_signals, directions=directions, phi=phi,
                                    lambdas=s.lambdas, clip=s.clip,
                                    center=center, scale=scale,
                                    margin=contamination_margin(s.max_faulty_fraction), center_tolerance=tol)
        self._ids = np.array(topology.ids, dtype=object)
        self._groups = {lv: topology.group_index(lv) for lv in LEVELS}
        self._group_arr = {lv: np.asarray(g[1], dtype=np.int64) for lv, g in self._groups.items()}
        if (baseline_loc is None) != (baseline_scale is None):
            raise InputError("give both baseline_loc and baseline_scale, or neither", column="baseline_scale")
        self._fleet_on = baseline_loc is not None
        self._common = None if common_mode is None else CommonModeEProcess(
            common_mode, self.shards.directions, lambdas=s.lambdas, clip=s.clip)
        if self._fleet_on:
            loc = np.asarray(baseline_loc, dtype=float)
            sc = np.asarray(baseline_scale, dtype=float)
            if loc.shape != (self.n_signals,) or sc.shape != (self.n_signals,) or not np.all(sc > 0):
                raise InputError(f"baseline_loc/scale must have shape ({self.n_signals},), scale > 0",
                                 column="baseline_scale")
            self._loc, self._scale = loc, sc
            lam = np.asarray(s.lambdas)
            self._fleet_grid = lam
            self._fleet_log_w = np.zeros((self.n_signals, 2 * lam.size))
            self._fleet_sign = np.array([-1.0 if d == "down" else 1.0 for d in self.shards.directions])
            self._fleet_both = np.array([d == "both" for d in self.shards.directions])
        self._flagged = np.zeros(self.n_shards, dtype=bool)
        self._fleet_fired = False
        self._events: list[ClusterEvent] = []
        self._tick = 0

    # ----------------------------------------------------------------- events
    def add_event(self, event: ClusterEvent | dict) -> None:
        """Register a cluster event (from the event feed or the deploy gate)."""
        ev = event if isinstance(event, ClusterEvent) else ClusterEvent.model_validate(event)
        if ev.scope_level not in ("fleet", "shard") and ev.scope_level not in LEVELS:
            raise InputError(f"unknown scope level {ev.scope_level!r}", column="scope_level")
        self._events.append(ev)

    def _frozen_mask(self, tick: int) -> tuple[np.ndarray, list[str]]:
        mask = np.zeros(self.n_shards, dtype=bool)
        names = []
        keep = []
        for ev in self._events:
            if ev.start_tick + ev.window <= tick:
                continue  # expired: drop (constant memory)
            keep.append(ev)
            if not ev.active(tick):
                continue
            names.append(f"{ev.kind}@{ev.scope_level}:{','.join(ev.scope) or '*'}")
            if ev.scope_level == "fleet":
                mask[:] = True
            elif ev.scope_level == "shard":
                ids = set(ev.scope)
                mask |= np.fromiter((i in ids for i in self._ids), bool, self.n_shards)
            else:
                names_lv, _ = self._groups[ev.scope_level]
                sel = [names_lv.index(n) for n in ev.scope if n in names_lv]
                mask |= np.isin(self._group_arr[ev.scope_level], sel)
        self._events = keep
        return mask, names

    @property
    def load_outside_baseline(self) -> int:
        """Ticks so far whose shared-load estimate left the baseline's load range (0 without a common-mode
        model): the fleet-level null there rests on the heuristic loading band (docs/fleet.md)."""
        return 0 if self._common is None else self._common.outside_ticks

    # ----------------------------------------------------------------- update
    def update(self, values: np.ndarray, *, top_k: int = 3) -> FleetObservation:
        """Feed one tick (n_shards, n_signals); returns the :class:`FleetObservation`."""
        s = self.settings
        frozen, active = self._frozen_mask(self._tick)
        out = self.shards.update(values, frozen=frozen)
        fleet_log_e = 0.0
        if self._common is not None:
            # a fleet-wide freeze also freezes the fleet-level bets: the event explains the move
            fleet_log_e = self._common.update(out.median, frozen=bool(frozen.all()))
            if fleet_log_e >= -math.log(s.alpha_fleet):
                self._fleet_fired = True
        elif self._fleet_on:
            med = out.median
            z = self._fleet_sign * (med - self._loc) / self._scale
            g = np.clip(z / s.clip, -1, 1)
            # a fleet-wide freeze also freezes the fleet-level bets: the event explains the move
            g = np.where(np.isnan(g) | bool(frozen.all()), 0.0, g)
            k = self._fleet_grid.size
            self._fleet_log_w[:, :k] += np.log1p(g[:, None] * self._fleet_grid)
            signs = np.where(self._fleet_both[:, None], -1.0, 1.0)
            self._fleet_log_w[:, k:] += np.log1p(g[:, None] * signs * self._fleet_grid)
            lw = self._fleet_log_w.ravel()
            top = lw.max()
            fleet_log_e = float(top + math.log(np.mean(np.exp(lw - top))))
            if fleet_log_e >= -math.log(s.alpha_fleet):
                self._fleet_fired = True
        adj = adjust_running_max(out.log_e_max, s.kappa)
        rej = ebh(adj, s.q)
        new = rej & ~self._flagged
        self._flagged |= rej
        flagged_ids = tuple(self._ids[self._flagged])
        le_map = {str(self._ids[i]): float(out.log_e[i]) for i in np.flatnonzero(self._flagged)}
        attrs = attribute(self.topology, flagged_ids, max_hops=s.max_hops, min_members=s.min_members,
                          min_fraction=s.min_fraction, log_e=le_map) if flagged_ids else []
        if self._fleet_fired:
            attrs.insert(0, Attribution(kind="fleet_event", level="fleet", node="fleet", shards=(),
                                        log_e=fleet_log_e))
        tops: list[NodeEvidence] = []
        for lv in ("host", "rack"):
            names, _ = self._groups[lv]
            if not names:
                continue
            g = self._group_arr[lv]
            le = group_log_e(out.log_e, g, len(names))
            for j in np.argsort(-le, kind="stable")[:top_k]:
                if not np.isfinite(le[j]):
                    continue
                mem = g == j
                tops.append(NodeEvidence(level=lv, node=names[j], log_e=float(le[j]), members=int(mem.sum()),
                                         flagged=int((mem & self._flagged).sum())))
        obs = FleetObservation(
            tick=self._tick, q=s.q, flagged=flagged_ids, newly_flagged=tuple(self._ids[new]),
            frozen=tuple(self._ids[frozen]) if 0 < frozen.sum() < 50 else (("*",) if frozen.all() else ()),
            fleet_log_e=fleet_log_e, fleet_fired=self._fleet_fired, attributions=tuple(attrs),
            top_nodes=tuple(tops), active_events=tuple(active),
        )
        self._tick += 1
        return obs

    def run(self, values: Iterable[np.ndarray]) -> list[FleetObservation]:
        return [self.update(v) for v in values]

    @property
    def flagged(self) -> np.ndarray:
        return self._flagged.copy()
