"""Per-metric e-processes of the randomised split: rollback (harm), early proceed (non-inferiority), effects."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from ._data import MetricBlocks, SplitData
from ._kernels import edge_effect, evidence_summary, mixture_log, run_metric
from ._protocol import FamilyEvidence, FamilyStep, LayoutWatch, StateSlot
from ._spec import MetricSpec

__all__ = ["SplitMetric", "rate_grid"]

#: largest grid step (ratio between neighbouring rate ratios)
_MAX_STEP = 1.25
#: the grid reaches at least this ratio (and its inverse)
_REACH = 10.0


def rate_grid(tolerance: float) -> tuple[np.ndarray, int, int]:
    """The fixed rate-ratio grid of a metric: ``(rho, j0, n)`` with ``rho[j0] = 1`` and
    ``rho[j0 + n] = 1 + tolerance`` exactly, geometric with step ``(1 + tolerance) ** (1 / n) <= 1.25``,
    reaching at least 10 and 1/10.

    >>> rho, j0, n = rate_grid(0.2)
    >>> len(rho), j0, n, float(rho[j0]), round(float(rho[j0 + n]), 12), round(float(rho[-1]), 3)
    (27, 13, 1, 1.0, 1.2, 10.699)
    """
    lt = math.log1p(tolerance)
    n = max(1, math.ceil(lt / math.log(_MAX_STEP)))
    ls = lt / n
    j0 = math.ceil(math.log(_REACH) / ls)
    j = np.arange(-j0, j0 + 1)
    return np.exp(j * ls), j0, n


class SplitMetric(LayoutWatch):
    """One metric's e-processes under the randomised split.

    Null and assumption (the split, nothing else): the canary version changes no unit's outcome, and
    within each block (one tick, tier and, for sessions, start tick) the canary units are a uniformly
    random subset of the block's units given their number ``n_c`` (independent Bernoulli(``p_t``)
    routing with any ``p_t`` constant within a block, or complete randomisation). Outcomes may be
    anything: non-stationary, bursty, heavy-tailed, long-memory, chosen adaptively from the past.

    Construction. In block ``s`` with canary share ``q_s = n_c / n`` among the measured units and
    per-unit event counts ``y_i`` (for a continuous metric, the count of the unit's values above the
    edge), the canary count is ``a_s = \\sum_i B_i y_i`` with ``B_i`` the canary labels. For a rate
    ratio ``psi``

    .. math::

        L_s(\\psi) = \\frac{\\psi^{a_s}}{\\prod_i (1 - q_s + q_s \\psi^{y_i})},\\qquad
        \\ell_t(\\psi) = \\sum_{s \\le t} \\log L_s(\\psi),

    and ``E_s[L_s(psi)] <= 1`` given the past and the block's outcomes, for every ``psi > 0``: the
    labels of a uniformly random subset are negatively associated (Joag-Dev & Proschan 1983), so the
    expectation of a product of nondecreasing (``psi >= 1``) or nonincreasing (``psi <= 1``)
    nonnegative functions of them is at most the product of expectations, ``1 - q + q psi^{y_i}``.
    With 0/1 outcomes the denominator is ``(1 - q + q psi)^{X_s}``, the binomial bound of the
    hypergeometric (Hoeffding 1963). The rollback e-process of the metric averages the exponentials
    over fixed grid alternatives and over its edge-events and harmful sides (an average of test
    supermartingales in one filtration is one):

    .. math::

        E_t = \\frac{1}{|S| J} \\sum_{(k, \\pm) \\in S} \\sum_{j=1}^{J} e^{\\ell_{k,t}(\\rho_{j_0 \\pm j})},

    with ``rho`` the grid of :func:`rate_grid` (up to 10.7 for the default tolerance), ``+`` for harm
    up, ``-`` for harm down, both for ``both``; continuous metrics take every edge, equal weights (no
    edge is known in advance to carry the harm; a p99 that widens with the median unchanged moves the
    top edges only and costs ``log B`` nats against a test on that edge alone).

    Guarantee (rollback): ``P(sup_t E_t >= 1/alpha) <= alpha`` under the null (Ville 1939), every tick
    watched, any stopping; no model and no baseline. Evidence is monotone in harm: one more canary
    event (``y_i -> y_i + 1`` for a canary unit) multiplies ``L(psi)`` by at least 1 for ``psi >= 1``.

    Effect sizes (a model, unlike the rollback test): under "given each block's events, each is the
    canary's independently with probability ``q rho / (1 - q + q rho)``" (exact when each arm's events
    are Poisson with means proportional to its units and ratio ``rho``; an approximation for 0/1
    outcomes, checked by Monte Carlo), ``rho`` is the ratio of the arms' event RATES (for a continuous
    metric, of their probabilities of exceeding the edge), not their odds ratio: ``ell`` peaks at it.
    ``exp(ell(rho1) - ell(rho0))`` is the likelihood ratio of ``rho1`` to ``rho0``; the upper
    confidence bound rejects each grid ``rho0`` whose mixture over the grid points below it reaches
    ``1/proceed_alpha``, the lower bound likewise from above. Early proceed tests "rate ratio >= 1 + tolerance"
    (and/or ``<= 1/(1 + tolerance)``) this way on every edge-event: ``P(early proceed while some rate
    or exceedance ratio is at or beyond its tolerance) <= proceed_alpha`` under that model (Monte-Carlo
    checked at that boundary; at an ODDS ratio of 1 + tolerance on common events it does not hold).
    ``ratio_label`` words the explanation (:class:`~deploysignal.split.SplitSettings`). The point estimate is the
    grid maximiser of ``ell``, refined by a parabola in ``log rho``.

    References
    ----------
    Joag-Dev, K. & Proschan, F. (1983). Negative association of random variables. Ann. Statist. 11.
    Hoeffding, W. (1963). Probability inequalities for sums of bounded random variables. JASA 58.
    Ville, J. (1939). Etude critique de la notion de collectif.
    Lindon, M., Sanden, C. & Shirikian, V. (2022). Rapid regression detection in software deployments
    through sequential testing. KDD.

    Examples
    --------
    >>> from deploysignal.split import MetricSpec, BlockBuilder, SplitData
    >>> m = SplitMetric(MetricSpec("errors"), alpha=0.05)
    >>> bb = BlockBuilder(1)
    >>> for t in range(30):  # 100 canary and 100 stable requests a tick; 6 vs 2 errors
    ...     bb.add_block(100, 200, [6], [8]); bb.end_tick()
    >>> st = m.step(SplitData(np.arange(30.0), np.full(30, 100), np.full(30, 200), {"errors": bb.build()}))
    >>> int(np.argmax(st.fired)) + 1, m.explain()
    (4, 'errors: canary event rate x3.01 [1.73, 5.16], log e-value 29.55 >= 3.00: harm (crossed at tick 4)')
    """

    role: Literal["rollback", "void"] = "rollback"
    _LAYOUT = frozenset({"_rb", "_pr", "lrho", "rm1", "threshold", "proceed_threshold", "suggestive_fraction", "early_proceed"})

    def __init__(self, spec: MetricSpec, *, alpha: float, proceed_alpha: float = 0.05, early_proceed: bool = False,
                 suggestive_fraction: float = 0.5, ratio_label: Literal["rate", "legacy_odds"] = "rate") -> None:
        self.spec = spec
        self.name = spec.name
        self.alpha = float(alpha)
        self.proceed_alpha = float(proceed_alpha)
        self.early_proceed = bool(early_proceed)
        self.suggestive_fraction = float(suggestive_fraction)
        self.ratio_label = ratio_label
        self.rho, self.j0, self.n_tol = rate_grid(spec.tolerance)
        self.lrho = np.log(self.rho)
        self.lrho[self.j0] = 0.0
        self.rm1 = np.expm1(self.lrho)
        K, j0, n, R = spec.n_events, self.j0, self.n_tol, len(self.rho)
        sides = {"up": (1,), "down": (-1,), "both": (1, -1)}[spec.direction]
        slots = [(k, s) for k in range(K) for s in sides]
        self._slots = slots
        self._rb = (np.array([k for k, _ in slots], dtype=np.int64),
                    np.array([[j0 + s * j for j in range(1, j0 + 1)] for _, s in slots], dtype=np.int64),
                    np.full(len(slots), j0, dtype=np.int64))
        self._pr = (self._rb[0].copy(),
                    np.array([list(range(j0 + n - 1, -1, -1)) if s > 0 else list(range(j0 - n + 1, R)) for _, s in slots], dtype=np.int64),
                    np.array([j0 + s * n for _, s in slots], dtype=np.int64))
        self._hc = np.zeros(3 + R)  # scratch of block_logs
        self.threshold = math.log(1.0 / self.alpha)
        self.proceed_threshold = math.log(1.0 / self.proceed_alpha)
        self._reset()

    def _reset(self) -> None:
        K, R = self.spec.n_events, len(self.rho)
        self._ell = np.zeros((K, R))
        self._acc = np.zeros((K, 2), dtype=np.int64)
        self._runmax = np.full(1, -np.inf)
        self._cnt = np.array([0, 0, -1], dtype=np.int64)  # ticks, ticks with units in both arms, first firing tick (-1: none)

    def bind_state(self, ell: np.ndarray, acc: np.ndarray, runmax: np.ndarray, cnt: np.ndarray) -> None:
        """Keep the state in the given arrays (views into a gate's contiguous state, see
        :class:`~deploysignal.split._step.TickStep`): the current state is copied in first."""
        ell[...], acc[...], runmax[...], cnt[...] = self._ell, self._acc, self._runmax, self._cnt
        self._ell, self._acc, self._runmax, self._cnt = ell, acc, runmax, cnt

    _ticks = StateSlot("_cnt", 0)
    _measured = StateSlot("_cnt", 1)
    _fired_at = StateSlot("_cnt", 2, "tick")

    # ------------------------------------------------------------------ protocol
    def step(self, data: SplitData) -> FamilyStep:
        """Advance over every tick of ``data`` (its blocks of this metric; a tick without any is empty)."""
        self._changing()
        blocks = data.metrics.get(self.name)
        T = data.n_ticks
        fired, proceed, measured = np.zeros(T, dtype=bool), np.zeros(T, dtype=bool), np.zeros(T, dtype=bool)
        current = np.full(T, -np.inf)
        if blocks is not None:
            if blocks.n_ticks != T or blocks.a.shape[1:] != (self.spec.n_events,):
                raise ValueError(f"{self.name}: blocks for {blocks.n_ticks} ticks x {blocks.a.shape[1:]} edge-events, expected {T} x {self.spec.n_events}")
            self._run(blocks, fired, proceed, measured, current)
        first = np.flatnonzero(fired)
        if self._fired_at is None and first.size:
            self._fired_at = self._ticks + int(first[0]) + 1
        self._ticks += T
        self._measured += int(measured.sum())
        if blocks is None and T:  # no data this run: the e-value stays where it was
            current[:] = self.log_evidence() if self.log_evidence() >= min(self.threshold, self.suggestive_level) else -np.inf
        return FamilyStep(fired, proceed, measured, current >= self.suggestive_level)

    def _run(self, b: MetricBlocks, fired: np.ndarray, proceed: np.ndarray, measured: np.ndarray, current: np.ndarray) -> None:
        run_metric((self._ell, self._acc, self._runmax, self._hc), (b.tptr, b.nc, b.n, b.a, b.c1, b.xptr, b.xk, b.xy, b.xc),
                   (self.lrho, self.rm1, self._rb, self._pr, self.threshold, self.suggestive_level, self.proceed_threshold, self.early_proceed, -1),
                   (fired, proceed, measured, current))

    @property
    def suggestive_level(self) -> float:
        """``suggestive_fraction * threshold``: at a window's end an e-value at or above it is suggestive;
        the running maximum is tracked from this level on."""
        return self.suggestive_fraction * self.threshold

    def log_evidence(self) -> float:
        """The rollback log e-value now (exact)."""
        return float(mixture_log(self._ell, *self._rb))

    def evidence(self) -> FamilyEvidence:
        if self._acc[:, 1].sum() == 0 and not self._measured:
            lv, h = self.log_evidence(), None
        else:  # one compiled call: the e-value, the edge-event with the most evidence, its effect
            lv, *eff = evidence_summary(self._ell, *self._rb, self.lrho, self.proceed_threshold)
            h = self._effect_dict(*eff)
        return FamilyEvidence(self.name, self.role, lv, float(self._runmax[0]), self.threshold, self.alpha, self._fired_at is not None,
                              self._explain(lv, h), h)

    def explain(self) -> str:
        return self._explain(self.log_evidence(), self.headline())

    def _explain(self, lv: float, h: dict[str, Any] | None) -> str:
        if h is None:
            return f"{self.name}: no units in both arms yet"
        if self.ratio_label == "legacy_odds":  # the wording of 0.4.0 audit logs (wrong: the ratio is a rate ratio)
            what = "odds ratio" if self.spec.kind == "event" else f"odds ratio of values > {h['edge']:.4g}"
        else:
            what = "event rate" if self.spec.kind == "event" else f"P({self.name} > {h['edge']:.4g})"
        verdict = f"harm (crossed at tick {self._fired_at})" if self._fired_at is not None else ("suggestive" if lv >= self.suggestive_level else "no evidence of harm")
        op = ">=" if self._fired_at is not None else "<"
        peak = lv if self._fired_at is None else max(lv, float(self._runmax[0]))
        size = "no events" if not h["events"] else f"canary {what} x{_fmt(h['ratio'])} [{_fmt(h['lower'])}, {_fmt(h['upper'])}]"
        return f"{self.name}: {size}, log e-value {peak:.2f} {op} {self.threshold:.2f}: {verdict}"

    # ------------------------------------------------------------------ effects
    def effects(self) -> list[dict[str, Any]]:
        """Per edge-event: point estimate and ``1 - 2 proceed_alpha`` confidence sequence of the rate
        (exceedance) ratio, canary and total events, and the edge (continuous metrics)."""
        return [self._effect(k) for k in range(self.spec.n_events)]

    def headline(self) -> dict[str, Any] | None:
        """The effect of the edge-event with the most rollback evidence (``None`` before any data)."""
        if self._acc[:, 1].sum() == 0 and not self._measured:
            return None
        _, *eff = evidence_summary(self._ell, *self._rb, self.lrho, self.proceed_threshold)
        return self._effect_dict(*eff)

    def _effect(self, k: int) -> dict[str, Any]:
        return self._effect_dict(k, *edge_effect(self._ell[k], self.lrho, self.proceed_threshold))

    def _effect_dict(self, k: int, i: int, refined: bool, log_est: float, lo: int, hi: int) -> dict[str, Any]:
        R = len(self.rho)
        est = float(np.exp(log_est)) if refined else float(self.rho[i])
        upper = math.inf if hi >= R - 1 else float(self.rho[hi + 1])
        lower = 0.0 if lo <= 0 else float(self.rho[lo - 1])
        out: dict[str, Any] = {"ratio": est, "lower": lower, "upper": None if math.isinf(upper) else upper,
                               "canary_events": int(self._acc[k, 0]), "events": int(self._acc[k, 1])}
        if self.spec.kind == "continuous":
            out["edge"] = float(self.spec.edges[k])
        return out

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        rm = float(self._runmax[0])
        return {"ell": self._ell.tolist(), "acc": self._acc.tolist(), "runmax": rm if math.isfinite(rm) else None, "ticks": self._ticks,
                "measured": self._measured, "fired_at": self._fired_at}

    def load_state(self, st: dict[str, Any]) -> None:
        self._changing()
        ell = np.array(st["ell"], dtype=float)
        acc = np.array(st["acc"], dtype=np.int64)
        if ell.shape != self._ell.shape or acc.shape != self._acc.shape:
            raise ValueError(f"{self.name}: state of shape {ell.shape}, expected {self._ell.shape}")
        self._ell[...], self._acc[...] = ell, acc  # in place: the arrays may be views into a gate's state
        self._runmax[0] = -math.inf if st["runmax"] is None else float(st["runmax"])
        self._ticks, self._measured, self._fired_at = int(st["ticks"]), int(st["measured"]), st["fired_at"]

    @property
    def ticks(self) -> int:
        return self._ticks

    @property
    def measured_ticks(self) -> int:
        return self._measured


def _fmt(v: float | None) -> str:
    if v is None:
        return "inf"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"
