"""One compiled call per run of ticks for every family of a split gate (metrics and sample ratio).

The gate's families keep their state in a few contiguous arrays owned by a :class:`TickStep` (each
family's arrays are views into them, :meth:`SplitMetric.bind_state`), and a run of ticks is packed into
one integer array (:func:`packed`), so that one call of :func:`gate_run` advances every family over
the run and writes every family's per-tick flags. Per metric it calls the same compiled
:func:`~deploysignal.split._kernels.run_metric` as :meth:`SplitMetric.step`, and for the sample ratio
the same :func:`~deploysignal.split._srm.srm_run` as :meth:`SampleRatio.step`, in the same order of
operations: the live path (one tick a call), the batch path (all ticks in one call) and a family
stepped on its own give the same bits (``tests/split/test_split_compiled.py`` holds the digests of
the per-family path's outputs on 160 random streams).

Layouts (all ``int64`` unless said):

* ``plan`` (F, 13), one row per family, static: ``role`` (0 metric, 1 sample ratio), ``ell`` offset,
  ``K`` edge-events (sample ratio: ``G`` alternatives), ``R`` grid points, ``acc`` offset, ``grid``
  offset of ``lrho, rm1`` (sample ratio: ``la, lb``), ``grid`` offset of ``threshold, suggestive
  level, proceed threshold``, slots ``S``, ``J`` of the rollback and of the proceed mixtures, ``slots``
  offset (``slot_k, idx, base`` of the rollback mixture, then of the proceed mixture), early proceed;
  ``plan[0, 12]``: offset in ``grid`` of :func:`~deploysignal.split._kernels.block_logs`' scratch.
* state: ``ell`` (float64, every metric's ``(K, R)`` block), ``acc`` (every metric's ``(K, 2)``, then
  the sample ratio's 2), ``fv`` (float64, 2 per family: metric ``runmax, -``; sample ratio ``last,
  peak``), ``cnt`` (F, 4): ticks, ticks measured, first firing tick (-1 none), the gate's measured count.
* data: ``pk`` = ``[T, canary units (T), units (T), then per metric tptr, nc, n, a, c1, xptr, xk, xy,
  xc]``, ``pix`` (M, 12) per metric: present, blocks, extras, then the offsets of those nine arrays.
* ``out`` (bool, F x 4 x T): fired, proceed allowed, measured, suggestive (:class:`FamilyStep`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._data import SplitData
from ._kernels import mixture_log, run_metric
from ._metric import SplitMetric
from ._protocol import FamilyStep
from ._srm import SampleRatio, srm_run

__all__ = ["FIRED_ROLLBACK", "FIRED_VOID", "PROCEED_ALL", "TickStep", "gate_run", "pack", "packed"]

#: :func:`gate_run`'s answer for the last tick: bits
FIRED_ROLLBACK, FIRED_VOID, PROCEED_ALL = 1, 2, 4
_FIELDS = ("tptr", "nc", "n", "a", "c1", "xptr", "xk", "xy", "xc")


def pack(data: SplitData, names: tuple[str, ...], n_events: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(pk, pix)`` of ``data`` for metrics ``names`` (module docstring); a metric absent from
    ``data.metrics`` is marked absent. Blocks of the wrong shape raise ``ValueError`` naming the metric
    (the message of :meth:`SplitMetric.step`), before any state changes."""
    T = data.n_ticks
    parts = [np.array([T]), np.asarray(data.canary_units, dtype=np.int64), np.asarray(data.units, dtype=np.int64)]
    pos = 1 + 2 * T
    pix = np.zeros((len(names), 12), dtype=np.int64)
    for m, (name, K) in enumerate(zip(names, n_events)):
        b = data.metrics.get(name)
        if b is None:
            continue
        if b.n_ticks != T or b.a.shape[1:] != (K,):
            raise ValueError(f"{name}: blocks for {b.n_ticks} ticks x {b.a.shape[1:]} edge-events, expected {T} x {K}")
        pix[m, :3] = 1, len(b.nc), len(b.xk)
        for j, f in enumerate(_FIELDS):
            x = getattr(b, f)
            pix[m, 3 + j] = pos
            parts.append(x.ravel())
            pos += x.size
    return np.concatenate(parts).astype(np.int64, copy=False), pix


def packed(data: SplitData, names: tuple[str, ...], n_events: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(pk, pix, lo, hi)``: the packed run ``data`` was cut from (or ``data`` itself) and the ticks of
    ``data`` in it; packed once per run and layout (cached on the run)."""
    whole, lo, hi = (data, 0, data.n_ticks) if data.origin is None else data.origin
    key = (names, n_events)
    p = whole.packs.get(key)
    if p is None:
        p = whole.packs[key] = pack(whole, names, n_events)
    return p[0], p[1], lo, hi


@njit(cache=True)
def _metric(plan: np.ndarray, grid: np.ndarray, slots: np.ndarray, ell: np.ndarray, acc: np.ndarray, fv: np.ndarray,
            f: int, pk: np.ndarray, x: np.ndarray, t0: int, t1: int, out: np.ndarray) -> None:
    """Metric ``f`` over ticks ``t0:t1``: :func:`run_metric` on views of the packed state and data, or,
    for a metric absent from the data, what :meth:`SplitMetric.step` does then (no fire, no proceed,
    the e-value where it was). The grid's logarithms of a block are shared with the previous metric
    when it had the same units and grid (``grid[plan[0, 12]:]`` holds them, :func:`~deploysignal.split._kernels.block_logs`)."""
    p = plan[f]
    K, R, S, Jr, Jp, so = p[2], p[3], p[7], p[8], p[9], p[10]
    e = ell[p[1]:p[1] + K * R].reshape((K, R))
    thr, sugg, pthr = grid[p[6]], grid[p[6] + 1], grid[p[6] + 2]
    rb = (slots[so:so + S], slots[so + S:so + S + S * Jr].reshape((S, Jr)), slots[so + S + S * Jr:so + 2 * S + S * Jr])
    q = so + 2 * S + S * Jr
    pr = (slots[q:q + S], slots[q + S:q + S + S * Jp].reshape((S, Jp)), slots[q + S + S * Jp:q + 2 * S + S * Jp])
    T = t1 - t0
    if x[0] == 0:
        lv = mixture_log(e, rb[0], rb[1], rb[2])
        v = lv if lv >= min(thr, sugg) else -np.inf
        for t in range(T):
            out[f, 0, t] = False
            out[f, 1, t] = False
            out[f, 2, t] = False
            out[f, 3, t] = v >= sugg
        return
    nb, nx = x[1], x[2]
    cur = np.empty(T)
    state = (e, acc[p[4]:p[4] + 2 * K].reshape((K, 2)), fv[2 * f:2 * f + 1], grid[plan[0, 12]:])
    blocks = (pk[x[3] + t0:x[3] + t1 + 1], pk[x[4]:x[4] + nb], pk[x[5]:x[5] + nb], pk[x[6]:x[6] + nb * K].reshape((nb, K)),
              pk[x[7]:x[7] + nb * K].reshape((nb, K)), pk[x[8]:x[8] + nb + 1], pk[x[9]:x[9] + nx], pk[x[10]:x[10] + nx], pk[x[11]:x[11] + nx])
    run_metric(state, blocks, (grid[p[5]:p[5] + R], grid[p[5] + R:p[5] + 2 * R], rb, pr, thr, sugg, pthr, p[11] != 0, p[5]),
               (out[f, 0], out[f, 1], out[f, 2], cur))
    for t in range(T):
        out[f, 3, t] = cur[t] >= sugg


@njit(cache=True)
def _sample_ratio(plan: np.ndarray, grid: np.ndarray, acc: np.ndarray, fv: np.ndarray, f: int, pk: np.ndarray, t0: int, t1: int,
                  before: bool, out: np.ndarray) -> None:
    """The sample-ratio family over ticks ``t0:t1``, as :meth:`SampleRatio.step`: :func:`srm_run`, then
    fired, proceed allowed (never once it fired, in this run or ``before`` it), measured (units > 0)."""
    p = plan[f]
    G, T, Ttot = p[2], t1 - t0, pk[0]
    vals = np.empty(T)
    srm_run(acc[p[4]:p[4] + 2], grid[p[5]:p[5] + G], grid[p[5] + G:p[5] + 2 * G], pk[1 + t0:1 + t1], pk[1 + Ttot + t0:1 + Ttot + t1], vals)
    thr = grid[p[6]]
    after = before
    for t in range(T):
        fired = vals[t] >= thr
        if vals[t] > fv[2 * f + 1]:
            fv[2 * f + 1] = vals[t]
        out[f, 0, t] = fired
        out[f, 2, t] = pk[1 + Ttot + t0 + t] > 0
        out[f, 3, t] = False
        after = after or fired
        out[f, 1, t] = not after
    if T:
        fv[2 * f] = vals[T - 1]


@njit(cache=True)
def gate_run(plan: np.ndarray, grid: np.ndarray, slots: np.ndarray, ell: np.ndarray, acc: np.ndarray, fv: np.ndarray,
             cnt: np.ndarray, pk: np.ndarray, pix: np.ndarray, t0: int, t1: int, out: np.ndarray) -> int:
    """Advance every family over ticks ``t0:t1`` of the packed run; per-tick flags in ``out``; the
    counters in ``cnt``. Returns the last tick's bits: a metric fired (:data:`FIRED_ROLLBACK`), the
    sample ratio fired (:data:`FIRED_VOID`), every family allows an early proceed (:data:`PROCEED_ALL`)."""
    T = t1 - t0
    for f in range(plan.shape[0]):
        c = cnt[f]
        if plan[f, 0] == 0:
            _metric(plan, grid, slots, ell, acc, fv, f, pk, pix[f], t0, t1, out)
        else:
            _sample_ratio(plan, grid, acc, fv, f, pk, t0, t1, c[2] >= 0, out)
        if c[2] < 0:
            for t in range(T):
                if out[f, 0, t]:
                    c[2] = c[0] + t + 1
                    break
        c[0] += T
        m = 0
        for t in range(T):
            m += out[f, 2, t]
        if plan[f, 0] == 0:
            c[1] += m
        c[3] += m
    if T == 0:
        return 0
    bits = PROCEED_ALL
    for f in range(plan.shape[0]):
        if out[f, 0, T - 1]:
            bits |= FIRED_ROLLBACK if plan[f, 0] == 0 else FIRED_VOID
        if not out[f, 1, T - 1]:
            bits &= ~PROCEED_ALL
    return bits


class TickStep:
    """The families of one split gate, advanced together by :func:`gate_run`.

    Takes over the families' state (:meth:`SplitMetric.bind_state`, :meth:`SampleRatio.bind_state`):
    afterwards a family stepped on its own and the gate's compiled step move the same arrays.
    ``measured`` is the gate's per-family count of ticks with units in both arms (a view). The static
    layout (grids, mixture slots, thresholds) is read from the families; a family attribute it is read
    from that is set again (:class:`~deploysignal.split._protocol.LayoutWatch`) makes the next call
    read it again, as the per-family path would.
    """

    def __init__(self, metrics: list[SplitMetric], srm: SampleRatio | None) -> None:
        self.metrics, self.srm = metrics, srm
        F = len(metrics) + (srm is not None)
        self.names = tuple(m.name for m in metrics)
        self.n_events = tuple(m.spec.n_events for m in metrics)
        self._layout()
        self.ell, self.acc = np.zeros(self._sizes[0]), np.zeros(self._sizes[1], dtype=np.int64)
        self.fv, self.cnt = np.zeros(2 * F), np.zeros((F, 4), dtype=np.int64)
        self.bind()
        self._one = np.zeros((F, 4, 1), dtype=bool)

    def bind(self) -> None:
        """Make every family's state arrays and ``measured`` views of this step's arrays (the families'
        current state is copied in first). A copy or unpickling of the step and its families copies each
        view as an independent array: call this on the copy to join them again."""
        F = self.cnt.shape[0]
        for f, m in enumerate(self.metrics):
            p = self.plan[f]
            m.bind_state(self.ell[p[1]:p[1] + p[2] * p[3]].reshape(p[2], p[3]), self.acc[p[4]:p[4] + 2 * p[2]].reshape(p[2], 2),
                         self.fv[2 * f:2 * f + 1], self.cnt[f, :3])
            m.watch_layout(self._stale)
        if self.srm is not None:
            self.srm.bind_state(self.acc[-2:], self.fv[2 * F - 2:], self.cnt[F - 1, :3])
            self.srm.watch_layout(self._stale)
        self.measured = self.cnt[:, 3]

    def _stale(self) -> None:
        self._fresh = False

    def _layout(self) -> None:
        """``plan``, ``grid`` and ``slots`` from the families (module docstring); the state's layout
        (``K``, ``R`` per metric) cannot change."""
        metrics, srm = self.metrics, self.srm
        F = len(metrics) + (srm is not None)
        plan = np.zeros((F, 13), dtype=np.int64)
        grid: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        grids: dict[bytes, int] = {}  # equal grids share one copy (and block_logs' reuse)
        gpos = spos = epos = apos = 0
        for f, m in enumerate(metrics):
            K, R = m.spec.n_events, len(m.lrho)
            (rk, ri, rbase), (pk_, pi, pbase) = m._rb, m._pr  # noqa: SLF001 - the families' static layout
            g = grids.get(m.lrho.tobytes() + m.rm1.tobytes())
            if g is None:
                g = grids[m.lrho.tobytes() + m.rm1.tobytes()] = gpos
                grid += [m.lrho, m.rm1]
                gpos += 2 * R
            plan[f, :12] = (0, epos, K, R, apos, g, gpos, ri.shape[0], ri.shape[1], pi.shape[1], spos, m.early_proceed)
            grid.append(np.array([m.threshold, m.suggestive_level, m.proceed_threshold]))
            slots += [rk, ri.ravel(), rbase, pk_, pi.ravel(), pbase]
            gpos += 3
            spos += sum(x.size for x in slots[-6:])
            epos += K * R
            apos += 2 * K
        if srm is not None:
            G = len(srm._la)  # noqa: SLF001
            plan[F - 1, :12] = (1, 0, G, 0, apos, gpos, gpos + 2 * G, 0, 0, 0, 0, 0)
            grid += [srm._la, srm._lb, np.array([srm.threshold, 0.0, 0.0])]  # noqa: SLF001
            gpos += 2 * G + 3
            apos += 2
        plan[0, 12] = gpos  # block_logs' scratch: (nc, n, grid) of the logs held, then the logs
        grid.append(np.full(3 + max((len(m.lrho) for m in metrics), default=0), -1.0))
        if getattr(self, "plan", None) is not None and not np.array_equal(plan[:, :5], self.plan[:, :5]):
            raise ValueError("a family's grid or edge-events changed size: its state no longer fits")
        self.plan, self.grid = plan, np.concatenate(grid).astype(np.float64)
        self.slots = np.concatenate(slots).astype(np.int64) if slots else np.zeros(0, dtype=np.int64)
        self._sizes = (epos, apos)
        self._fresh = True

    def run(self, data: SplitData, at: int | None = None) -> tuple[np.ndarray, int]:
        """Every family over every tick of ``data`` (or only its tick ``at``): ``(out, bits)``
        (:func:`gate_run`). For a one-tick run ``out`` is a buffer reused by the next one-tick call."""
        if not self._fresh:
            self._layout()
        pk, pix, lo, hi = packed(data, self.names, self.n_events)
        if at is not None:
            lo, hi = lo + at, lo + at + 1
        out = self._one if hi - lo == 1 else np.empty((self.plan.shape[0], 4, hi - lo), dtype=bool)
        bits = gate_run(self.plan, self.grid, self.slots, self.ell, self.acc, self.fv, self.cnt, pk, pix, lo, hi, out)
        return out, bits

    @staticmethod
    def steps(out: np.ndarray) -> list[FamilyStep]:
        """Per family its :class:`FamilyStep` (views of ``out``)."""
        return [FamilyStep(o[0], o[1], o[2], o[3]) for o in out]
