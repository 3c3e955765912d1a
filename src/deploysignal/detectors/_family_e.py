"""Family E: novelty, by calibration-conditional conformal p-values and a conformal e-detector."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import betaincinv  # = scipy.stats.beta.ppf bit for bit (tests/test_cli_start.py), without importing scipy.stats

from ..calibration import C_HI, CompiledConfig
from ._base import log_threshold
from ._cde_common import StreamFamily, config_blocks, top_drivers
from ._kernels import family_e_run, family_e_step

__all__ = ["KAPPAS", "FamilyE", "build_family_e", "conditional_pvalue_table"]

#: Exponents of the power calibrators :math:`f_\kappa(p) = \kappa p^{\kappa - 1}` (mixed uniformly).
KAPPAS = np.array([0.1, 0.25, 0.5])


def conditional_pvalue_table(n: int, delta: float) -> np.ndarray:
    r"""Calibration-conditional correction :math:`b_i`, :math:`i = 1..n+1`, of conformal p-values.

    With calibration scores :math:`s_1..s_n` and the conformal p-value :math:`\hat p = i/(n+1)`,
    :math:`i = 1 + \#\{j: s_j \ge s\}`, the conditional law of :math:`\hat p` given the calibration set
    satisfies :math:`P(\hat p \le i/(n+1) \mid \text{cal}) = V_{(i)}`, the :math:`i`-th smallest of
    :math:`n` i.i.d. uniforms. With probability at least :math:`1 - \delta` over the calibration set,

    .. math:: V_{(i)} \le b_i = \min\Big(\frac{i-1}{n} + \sqrt{\frac{\log(2/\delta)}{2n}},\;
              F^{-1}_{\mathrm{Beta}(i,\, n+1-i)}\big(1 - \tfrac{\delta}{2n}\big)\Big) \quad \forall i,

    (one-sided DKW with Massart's constant for half of :math:`\delta`, Bonferroni over the Beta laws of
    the order statistics for the other half), so :math:`p = b_i` is conditionally super-uniform given
    the calibration set on that event (Bates, Candès, Lei, Romano, Sesia 2023). ``b[n] = 1``.
    """
    if n < 1:
        return np.ones(1)
    i = np.arange(1, n + 1)
    dkw = (i - 1) / n + math.sqrt(math.log(2.0 / delta) / (2.0 * n))
    order = betaincinv(i, n + 1 - i, 1.0 - delta / (2.0 * n))
    b = np.minimum(np.minimum(dkw, order), 1.0)
    return np.concatenate([np.maximum.accumulate(b), [1.0]])


class FamilyE(StreamFamily):
    r"""Novelty: conformal p-values of a Mahalanobis score, corrected to hold given the calibration set.

    Score of a tick: :math:`s(z) = \lVert L^{-1} \mathrm{clip}(z, \pm 6) \rVert^2` with :math:`L` the
    Cholesky factor of the Ledoit-Wolf covariance fitted on the *fitting* split. Calibration scores
    :math:`s_1..s_n` are the scores of the *calibration* split (disjoint from the fitting split) of the
    tick's tier: a cell's similarity weight is 1 for calibration rows of its own tier and 0 for other
    tiers (the compiled reference carries no finer cell labels). In two-sample mode the score is of the
    paired difference :math:`(z - z^{ctl})/\sqrt2` and the calibration scores are of differences of
    disjoint pairs of calibration rows.

    The conformal p-value :math:`\hat p_t` is replaced by its calibration-conditional correction
    :math:`p_t = b_{i_t}` (:func:`conditional_pvalue_table`, failure probability
    :math:`\delta = \alpha_E / 10`), turned into an e-value by the power calibrators
    :math:`f(p) = |K|^{-1} \sum_{\kappa \in K} \kappa p^{\kappa-1}` (each integrates to 1 on [0, 1] and is
    decreasing, so :math:`E f(p_t) \le 1` for a super-uniform :math:`p_t`), and accumulated by the
    Shiryaev-Roberts e-detector

    .. math:: R_t = (1 + R_{t-1})\, f(p_t), \qquad R_0 = 0,

    which restarts its bet at every tick, so a novelty that starts late is caught as fast as one at the
    start. Ticks with a missing value are skipped (``R`` unchanged).

    Guarantee and assumptions
        If, given the calibration set, the canary scores are independent across ticks and each is
        distributed like a calibration score (exchangeable with the calibration split), then on the
        calibration event :math:`E[R_t] \le t`, :math:`R_t` is a non-negative submartingale and by
        Doob's maximal inequality :math:`P(\max_{t \le H} R_t \ge H/\alpha') \le \alpha'`; with the
        calibration event, :math:`P(\text{fire within } H) \le \alpha' + \delta = \alpha_E`
        (finite-horizon bound, ``H`` = the gate's horizon; :math:`\alpha' = 0.9\,\alpha_E`). No
        distributional assumption on the scores is needed (heavy tails and a wrong covariance only
        cost power); independence rests on adequate AR(1) prewhitening. ``log_wealth`` is reported as
        :math:`\log R_t - \log H + \log(\alpha'/\alpha_E)` so the family fires when it reaches
        :math:`\log(1/\alpha_E)`, like the others.

    Explanation: the drivers are the (up to three) signals with the largest contribution, keeping those
    with at least a quarter of the top one,
    :math:`z_j (\Sigma^{-1} z)_j` to the score of the firing tick (they sum to the score).

    Parameters
    ----------
    chol, reference, reference_n, cell_block
        As for :class:`FamilyC`.
    names : sequence of str
    alpha : float
    horizon : int
    two_sample : bool
    seed : int
        Seeds the pairing of calibration rows in two-sample mode.
    delta_share : float
        Share of ``alpha`` spent on the calibration-conditional event.

    References
    ----------
    Vovk, Gammerman, Shafer (2005) algorithmic learning in a random world; Vovk (2021) testing
    randomness online (conformal test martingales); Bates, Candès, Lei, Romano, Sesia (2023) testing for
    outliers with conformal p-values; Shin, Ramdas, Rinaldo (2022) e-detectors; Massart (1990) DKW.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.detectors import Observation
    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=(1, 1, 500, 3))
    >>> e = FamilyE(np.eye(3)[None, None], ref, np.array([[500]]), np.zeros(1, dtype=int),
    ...             names=("a", "b", "c"), alpha=0.005, horizon=960)
    >>> for t in range(60):
    ...     z = rng.normal(size=3) + (np.array([0.0, 0.0, 5.0]) if t >= 40 else 0.0)
    ...     ev = e.update(Observation(t, 60.0 * t, 0, z, z))
    >>> ev.fired, ev.drivers[0]
    (True, 'c')
    """

    family = "E"

    def __init__(
        self,
        chol: np.ndarray,
        reference: np.ndarray,
        reference_n: np.ndarray,
        cell_block: np.ndarray,
        *,
        names: Sequence[str],
        alpha: float,
        horizon: int,
        two_sample: bool = False,
        seed: int = 0,
        delta_share: float = 0.1,
    ) -> None:
        self.alpha = float(alpha)
        self.horizon = int(horizon)
        self.two_sample = bool(two_sample)
        self.seed = int(seed)
        self.delta_share = float(delta_share)
        if self.horizon < 1:
            raise ValueError("horizon must be >= 1")
        if not 0.0 < self.delta_share < 1.0:
            raise ValueError("delta_share must lie in (0, 1)")
        self._names = tuple(names)
        chol = np.asarray(chol, dtype=float)
        if chol.ndim != 4 or chol.shape[-1] != len(self._names):
            raise ValueError(f"chol must have shape (P, B, k, k) with k={len(self._names)}, got {chol.shape}")
        self._P, n_blocks, k, _ = chol.shape
        self._k = k
        self._cell_block = np.asarray(cell_block, dtype=np.int64)
        self._chol_inv = np.ascontiguousarray(np.linalg.inv(chol))
        self._prec = np.einsum("pbji,pbjk->pbik", self._chol_inv, self._chol_inv)  # Sigma^{-1}
        ref = np.clip(np.asarray(reference, dtype=float), -C_HI, C_HI)
        ref_n = np.asarray(reference_n, dtype=int)
        delta = self.delta_share * self.alpha
        rng = np.random.default_rng([self.seed, 0xE])
        cal: list[list[np.ndarray]] = []
        for p in range(self._P):
            row = []
            for b in range(n_blocks):
                r = ref[p, b, : ref_n[p, b]]
                r = r[~np.isnan(r).any(axis=1)]
                if self.two_sample:
                    perm = rng.permutation(r.shape[0])
                    half = r.shape[0] // 2
                    r = (r[perm[:half]] - r[perm[half : 2 * half]]) / math.sqrt(2.0)
                w = r @ self._chol_inv[p, b].T
                row.append(np.sort(np.einsum("ij,ij->i", w, w)))
            cal.append(row)
        n_max = max(1, max(s.size for row in cal for s in row))
        self._cal = np.full((self._P, n_blocks, n_max), np.inf)
        self._table = np.ones((self._P, n_blocks, n_max + 1))
        self._cal_n = np.zeros((self._P, n_blocks), dtype=np.int64)
        for p, row in enumerate(cal):
            for b, s in enumerate(row):
                self._cal[p, b, : s.size] = s
                self._cal_n[p, b] = s.size
                tab = conditional_pvalue_table(s.size, delta)
                self._table[p, b, : tab.size] = tab
        if np.any(self._cal_n < 1):
            raise ValueError("family E needs calibration rows in every covariance block")
        self._alpha_e = self.alpha - delta
        self._log_thr = log_threshold(alpha)
        self._log_offset = -math.log(self.horizon) + math.log(self._alpha_e / self.alpha)
        self._log_kappas, self._kappas_m1 = np.log(KAPPAS), KAPPAS - 1.0
        self._reset()

    @classmethod
    def from_config(
        cls, config: CompiledConfig | Sequence[CompiledConfig], *, alpha: float, horizon: int, two_sample: bool = False, **kw: Any
    ) -> FamilyE:
        """Build from compiled config(s): Cholesky factors and the calibration split per block."""
        blocks = config_blocks(config)
        return cls(
            blocks.chol, blocks.ref, blocks.ref_n, blocks.cell_block, names=blocks.names, alpha=alpha, horizon=horizon,
            two_sample=two_sample, seed=blocks.seed, **kw,
        )

    def _reset(self) -> None:
        self._logR = np.full(self._P, -np.inf)
        self._last_p = np.ones(self._P)
        self._last_s = np.zeros(self._P)
        self._fired = np.zeros(self._P, dtype=bool)
        self._fire_reason = ""
        self._fire_drivers: tuple[str, ...] = ()

    # ------------------------------------------------------------------ core
    def _vector(self, z: np.ndarray, control_z: np.ndarray | None) -> np.ndarray:
        x = np.clip(z, -C_HI, C_HI)
        if self.two_sample:
            if control_z is None:
                raise ValueError("two-sample family E needs control_z")
            x = (x - np.clip(control_z, -C_HI, C_HI)) / math.sqrt(2.0)
        return x

    def pvalues(self, z: np.ndarray, cell: int, control_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and corrected conformal p-values of ``P`` vectors (no state change)."""
        b = int(self._cell_block[cell])
        x = self._vector(z, control_z)
        w = np.einsum("pij,pj->pi", self._chol_inv[:, b], x)
        s = np.einsum("pi,pi->p", w, w)
        below = np.sum(self._cal[:, b] < s[:, None], axis=1)
        idx = self._cal_n[:, b] - below  # = #{s_j >= s}; p-hat = (1 + idx)/(n + 1)
        p = np.take_along_axis(self._table[:, b], idx[:, None], axis=1)[:, 0]
        return s, p

    def step(self, z: np.ndarray, cell: int, control_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``P`` streams by one tick (``z``: (P, k)); return log-wealth (P,) and fired (P,).

        Same scores and p-values as :meth:`pvalues`, computed by the compiled kernel
        :func:`~deploysignal.detectors._kernels.family_e_step`.
        """
        z, cz, b = self._tick_inputs(z, cell, control_z)
        log_wealth = np.empty(self._P)
        family_e_step(z, cz, self.two_sample, C_HI, b, *self._kernel_args(), log_wealth)
        return self._settle(log_wealth, lambda: self._explain(self._vector(z, control_z)[0], cell))

    COMPONENTS = ("log_esr", "p_value")

    def _run_kernel(self, z: np.ndarray, cz: np.ndarray, cells: np.ndarray, start: int, out: np.ndarray, fired: np.ndarray) -> tuple[int, bool]:
        return family_e_run(
            z, cz, self.two_sample, C_HI, cells, self._cell_block, *self._kernel_args(), self._log_thr, self._fired, start, out, fired,
        )

    def _kernel_args(self) -> tuple[Any, ...]:
        """Calibration tables and state arrays, in the order of :func:`family_e_step` after the block."""
        return (
            self._chol_inv, self._cal, self._cal_n, self._table, self._log_kappas, self._kappas_m1, math.log(KAPPAS.size),
            self._log_offset, self._logR, self._last_p, self._last_s,
        )

    def _explain_tick(self, t: int, z: np.ndarray, cz: np.ndarray | None, cells: np.ndarray, out: np.ndarray) -> None:
        self._explain(self._vector(z[t : t + 1], None if cz is None else cz[t : t + 1])[0], int(cells[t]))

    def contributions(self, x: np.ndarray, cell: int = 0) -> np.ndarray:
        """Per-signal contribution :math:`x_j (\\Sigma^{-1} x)_j` to the Mahalanobis score (stream 0)."""
        b = int(self._cell_block[cell])
        return x * (self._prec[0, b] @ x)

    def _explain(self, x: np.ndarray, cell: int) -> None:
        c = self.contributions(x, cell)
        self._fire_drivers = top_drivers(self._names, c, share=0.25)
        self._fire_reason = (
            f"novel pattern (conformal p={self._last_p[0]:.3g} vs the calibration split) crossed the e-detector bound; "
            f"most unusual: {', '.join(self._fire_drivers)}"
        )

    def _statistic(self) -> float:
        return float(self._last_s[0])

    def components(self) -> dict[str, float]:
        return {"log_esr": float(self._logR[0]), "p_value": float(self._last_p[0])}

    # ------------------------------------------------------------------ state
    _ARRAYS = ("logR", "last_p", "last_s", "fired")


def build_family_e(config: CompiledConfig | Sequence[CompiledConfig], settings: Any, alpha: float) -> FamilyE:
    """Gate factory: family E at level ``alpha`` with the gate's horizon and mode."""
    return FamilyE.from_config(
        config, alpha=alpha, horizon=getattr(settings, "horizon", 960), two_sample=getattr(settings, "mode", "one-sample") == "two-sample"
    )
