"""Hierarchical alarms: pooled e-processes of topology nodes and e-BH over every level at once.

Node e-processes
----------------
A host or rack :math:`n` with member shards :math:`S_n` bets on the **mean innovation** of the members
that bet this tick (not missing, not frozen), :math:`m_{t,n}` of them:

.. math::

    z_{t,n,j} = \\frac{1}{\\sqrt{m_{t,n}}} \\sum_{i \\in S_n} u_{t,i,j},\\qquad
    \\varepsilon_{t,n,j} = \\frac{1}{\\sqrt{m_{t,n}}} \\sum_{i \\in S_n} \\varepsilon'_{t,i,j},

where :math:`u` are the shards' oriented, AR(1)-prewhitened innovations against the robust fleet
reference and :math:`\\varepsilon'` the tolerance their bets carry (contamination margin and centre
tolerance: :class:`~deploysignal.fleet.FleetEProcess`). The node runs the same bounded-bet mixture as a
shard on :math:`z` with tolerance :math:`\\varepsilon` (``+`` side on :math:`g(z-\\varepsilon)`, ``-`` side
on :math:`g(z+\\varepsilon)`, :math:`g(v)=\\mathrm{clip}(v/c,-1,1)`). So a node inherits the shards'
null treatment: the shared fleet-wide load cancels in the residuals against the cross-shard median,
faulty shards elsewhere are covered by the margin (up to ``max_faulty_fraction``), and the fleet-level
question (is the whole fleet off?) stays with the fleet-level e-process
(:class:`~deploysignal.fleet.CommonModeEProcess` when a load model is fitted).

**Null of a node** :math:`H_{0,n}`: *none of its shards is faulty*, in the sense that, given the fleet's
past and the set of members that bet, the vector of its members' innovations :math:`(u_{t,i}-b_{t,i})_{i\\in
S_n}` is reflection-symmetric for some biases :math:`|b_{t,i}|\\le\\varepsilon'_{t,i}` (the joint version
of the shard null: it holds when the shards are exchangeable with the rest of the fleet under a
reflection-symmetric joint law, whatever the correlation between them at a tick, e.g. a shared rack noise
that is itself conditionally symmetric given the past: white, or removed by the prewhitening. A rack-common
term with its own autocorrelation, e.g. a thermal or power drift, is *not*: it survives the shards'
prewhitening, dominates the node's mean innovation, and the node alarms on it; measured in
``tests/fleet/test_hierarchy.py``, an AR(0.95) rack term of sd 0.7 alarmed 46 of 60 healthy fleets).
Then :math:`z - \\sum b/\\sqrt m` is symmetric, :math:`|\\sum b/\\sqrt m| \\le \\varepsilon`, and because
:math:`g` is odd, bounded and non-decreasing, every bet has conditional mean :math:`\\le 0`: the node's
wealth is a **test supermartingale** (Ville: :math:`P(\\sup_t E_{t,n}\\ge 1/\\alpha)\\le\\alpha`). The
:math:`\\sqrt m` scaling only sets the bet's reach (a mean of :math:`m` independent innovations has the
spread of one); validity does not depend on it. A fault of size :math:`\\delta` on every member moves
:math:`z` by :math:`\\sqrt m\\,\\delta` and :math:`\\varepsilon` by :math:`\\sqrt m\\,\\varepsilon'`, so a
weak common fault that no shard can show (:math:`\\delta` barely above :math:`\\varepsilon'`) is seen at
the rack: this is the point of the hierarchy. Nodes with fewer than two shards, and nodes whose member
set equals that of a node at a nearer level (a one-host rack), are left out: they would test the same
hypothesis twice.

Error control across levels
---------------------------
:func:`hierarchical_ebh` runs e-BH (Wang & Ramdas 2022) once over the **union** of all hypotheses:
every shard and every node at the alarm levels, each with the adjusted running maximum
:math:`\\kappa M_t^{1-\\kappa}` of its e-process (an e-value at every time, :mod:`deploysignal.fleet._fdr`).
e-BH needs no assumption on the dependence between e-values, and a node's e-value is strongly
dependent on its members': that is allowed. So

* **FDR over all shard, host and rack alarms together is** :math:`\\le q`, at every time, for the set
  of everything ever alarmed (alarms never drop), whenever the shards' and nodes' nulls above hold;
* a **false shard alarm** is an alarmed healthy shard; a **false host/rack alarm** is an alarmed node
  none of whose shards is faulty (a rack with one faulty shard is a true rack alarm: the rack null is
  the intersection of its shards' nulls);
* the fleet-level alarm keeps its own Ville bound :math:`\\alpha_{fleet}`; with it in the union of
  alarms the FDR is at most :math:`q + \\alpha_{fleet}` (a false fleet alarm adds at most 1 to the
  false-discovery proportion, with probability at most :math:`\\alpha_{fleet}`).

Why the union and not a tree procedure: the structured procedures (Yekutieli 2008's hierarchical BH;
the p-filter, Ramdas, Barber, Wainwright & Jordan 2019; Lynch & Guo 2016 for trees) either need
independence or positive dependence between levels, or pay a harmonic-sum correction, or test a rack
only after its parent; an alarm of a rack whose shards are all below their own thresholds is exactly
what the hierarchy is for, and the union e-BH gives it with an exact statement under arbitrary
dependence. The price is the larger family: with :math:`N` shards, :math:`H` hosts and :math:`R` racks,
the first rejection needs an e-value of :math:`(N+H+R)/q` instead of :math:`N/q` (e.g. 168/q against
128/q on a 128-shard, 32-host, 8-rack fleet: 0.27 nats). The shard-only e-BH of
:attr:`~deploysignal.fleet.FleetObservation.flagged` is kept beside it (FDR :math:`\\le q` among shard
flags).

What is not covered: the null's symmetry is joint across a node's members (a skewed or shard-specific
noise law that the shard null tolerates one shard at a time can leave the mean asymmetric); a
member set that changes with the values themselves (missingness caused by the fault) is outside the
conditioning. **Contamination beyond the margin**: a median bias :math:`b` is the same for every healthy
shard, so a node of :math:`m` members sees :math:`\\sqrt m\\,b` against a margin :math:`\\sqrt m\\,\\varepsilon'`:
once :math:`b > \\varepsilon'` the node drifts :math:`\\sqrt m` times faster than a shard. The fleet
reference therefore leaves out frozen shards and every shard already alarmed at any level
(:class:`~deploysignal.fleet.FleetEProcess`, ``exclude``; both sets are fixed before the tick's values),
so a faulty rack stops biasing it once alarmed, and the claim is: FDR :math:`\\le q` across levels while
at most ``max_faulty_fraction`` of the shards in the reference are faulty and not yet alarmed
(:attr:`~deploysignal.fleet.FleetObservation.notes` says so at run time). The seeded Monte Carlo in
``tests/fleet/test_hierarchy.py`` measures FDR across levels on healthy fleets (with the shared
sinusoidal load) and with faults elsewhere, every signal ``both`` and faults up or down, a faulty rack
being 25% of the fleet.

References
----------
Wang, R. & Ramdas, A. (2022). False discovery rate control with e-values. JRSS-B 84(3).
Vovk, V. & Wang, R. (2021). E-values: calibration, combination and applications. Ann. Statist. 49(3).
Ramdas, A., Barber, R. F., Wainwright, M. J. & Jordan, M. I. (2019). A unified treatment of multiple
testing with prior knowledge using the p-filter. Ann. Statist. 47(5).
Yekutieli, D. (2008). Hierarchical false discovery rate-controlling methodology. JASA 103(481).
Lynch, G. & Guo, W. (2016). On procedures controlling the FDR for testing hierarchically ordered
hypotheses. arXiv:1612.04467.
Waudby-Smith, I. & Ramdas, A. (2024). Estimating means of bounded random variables by betting. JRSS-B.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._exceptions import InputError
from ._fdr import adjust_running_max, ebh
from ._topology import LEVELS, TopologySnapshot

__all__ = ["NodeEProcess", "hierarchical_ebh", "hierarchy_nodes"]


def hierarchy_nodes(topology: TopologySnapshot, levels: Sequence[str] = ("host", "rack")) -> list[tuple[str, str, np.ndarray]]:
    """The nodes that get their own hypothesis: ``(level, name, member shard indices)``, nearest level first.

    A node needs at least two shards, and a member set no nearer node already has.

    Examples
    --------
    >>> topo = TopologySnapshot.synthetic(2, 1, 2)
    >>> [(lv, n, m.tolist()) for lv, n, m in hierarchy_nodes(topo)]
    [('host', 'r000-h00', [0, 1]), ('host', 'r001-h00', [2, 3])]
    """
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise InputError(f"unknown alarm level {bad[0]!r}; valid: {', '.join(LEVELS)}", column="alarm_levels")
    ordered = [lv for lv in LEVELS if lv in levels]
    seen: set[tuple[int, ...]] = set()
    out = []
    for lv in ordered:
        names, idx = topology.group_index(lv)
        arr = np.asarray(idx, dtype=np.int64)
        for j, name in enumerate(names):
            mem = np.flatnonzero(arr == j)
            key = tuple(mem.tolist())
            if mem.size >= 2 and key not in seen:
                seen.add(key)
                out.append((lv, name, mem))
    return out


class NodeEProcess:
    """Pooled bounded-bet e-processes of topology nodes on their members' mean innovation.

    See the module docstring for the construction, the null (none of the node's shards faulty, jointly
    reflection-symmetric innovations) and the guarantee (test supermartingale per node).

    Parameters
    ----------
    n_shards : int
    nodes : list of (level, name, member indices)
        From :func:`hierarchy_nodes`.
    grid : ndarray, shape (n_signals, n_bets)
        Signed bet sizes per signal (the shards' grid: ``FleetEProcess._grid``).
    clip : float

    Examples
    --------
    >>> topo = TopologySnapshot.synthetic(2, 2, 4)
    >>> nodes = hierarchy_nodes(topo, ("rack",))
    >>> ep = NodeEProcess(len(topo), nodes, np.array([[0.1, 0.2, 0.4]]), 2.0)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(200):
    ...     u = rng.standard_normal((16, 1))
    ...     u[:8] += 0.4                       # every shard of rack r000 a little high
    ...     le = ep.update(u, np.zeros((16, 1)))
    >>> bool(le[0] > np.log(1e4)), bool(le[1] < np.log(20))
    (True, True)
    """

    def __init__(self, n_shards: int, nodes: list[tuple[str, str, np.ndarray]], grid: np.ndarray, clip: float) -> None:
        self.nodes = nodes
        self.n_shards = int(n_shards)
        g = np.asarray(grid, dtype=float)
        if g.ndim != 2 or not np.all(np.abs(g) < 1) or not clip > 0:
            raise InputError("node bets need a (signals, bets) grid in (-1, 1) and clip > 0")
        self._grid_pos, self._grid_neg = np.maximum(g, 0.0), np.minimum(g, 0.0)
        self._has_neg = bool((g < 0).any())
        self.clip = float(clip)
        # membership as (node, shard) edges: one per shard per level, so memory and time grow with the fleet, not
        # with nodes x shards
        self._edge_node = np.concatenate([np.full(m.size, k, dtype=np.int64) for k, (_, _, m) in enumerate(nodes)] or [np.zeros(0, np.int64)])
        self._edge_shard = np.concatenate([np.asarray(m, dtype=np.int64) for _, _, m in nodes] or [np.zeros(0, np.int64)])
        self._w = np.ones((len(nodes), g.shape[0], g.shape[1]))
        self._log_off = np.zeros(len(nodes))
        self.log_e = np.zeros(len(nodes))
        self.log_e_max = np.zeros(len(nodes))

    def _sum(self, per_shard: np.ndarray) -> np.ndarray:
        """Sum of (n_shards, n_signals) values over each node's members: (n_nodes, n_signals)."""
        v = per_shard[self._edge_shard]
        n = len(self.nodes)
        return np.stack([np.bincount(self._edge_node, weights=v[:, j], minlength=n) for j in range(per_shard.shape[1])], axis=1)

    def update(self, innovations: np.ndarray, margin: np.ndarray) -> np.ndarray:
        """Feed one tick's shard innovations (n_shards, n_signals; NaN = did not bet) and their tolerance;
        return the nodes' log e-processes (n_nodes,)."""
        if not self.nodes:
            return self.log_e.copy()
        u = np.asarray(innovations, dtype=float)
        ok = ~np.isnan(u)
        cnt = self._sum(ok.astype(float))
        root = np.sqrt(np.maximum(cnt, 1.0))
        z = self._sum(np.where(ok, u, 0.0)) / root
        eps = self._sum(np.where(ok, np.asarray(margin, dtype=float), 0.0)) / root
        nobet = cnt == 0
        gp = np.where(nobet, 0.0, np.clip((z - eps) / self.clip, -1.0, 1.0))
        f = 1.0 + gp[:, :, None] * self._grid_pos[None]
        if self._has_neg:
            gm = np.where(nobet, 0.0, np.clip((z + eps) / self.clip, -1.0, 1.0))
            f += gm[:, :, None] * self._grid_neg[None]
        self._w *= f
        m = self._w.reshape(len(self.nodes), -1).mean(axis=1)
        log_e = self._log_off + np.log(m)
        far = (m > 1e100) | (m < 1e-100)
        if far.any():  # renormalise, as the shards do: nothing over- or underflows
            self._w[far] /= m[far, None, None]
            self._log_off[far] = log_e[far]
        self.log_e = log_e
        np.maximum(self.log_e_max, log_e, out=self.log_e_max)
        return log_e.copy()


def hierarchical_ebh(shard_log_e_max: np.ndarray, node_log_e_max: np.ndarray, q: float,
                     kappa: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """e-BH at level ``q`` over the union of shards and nodes, on adjusted running maxima.

    Returns ``(shard rejections, node rejections, adjusted log e-values of shards then nodes)``. FDR over
    the union is :math:`\\le q` under any dependence (module docstring).

    Examples
    --------
    >>> s, n, _ = hierarchical_ebh(np.zeros(8), np.array([12.0, 0.0]), 0.05, 0.1)
    >>> bool(s.any()), n.tolist()
    (False, [True, False])
    """
    adj = adjust_running_max(np.concatenate([np.asarray(shard_log_e_max, float), np.asarray(node_log_e_max, float)]), kappa)
    rej = ebh(adj, q)
    n = np.asarray(shard_log_e_max).size
    return rej[:n], rej[n:], adj
