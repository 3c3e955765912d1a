"""Family C: joint-distribution shift (sequential Hotelling and sequential MMD by betting)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..calibration import C_HI, CompiledConfig, median_heuristic
from ._base import log_threshold
from ._cde_common import StreamFamily, config_blocks, top_drivers
from ._kernels import family_c_run, family_c_step

__all__ = ["FamilyC", "build_family_c"]


#: One-sample MMD bets only when the block's reference has at least this many complete rows. The
#: reference is a fixed finite sample: paired with fresh canary ticks, draws from it are exchangeable
#: with them only approximately, and a witness learning over a long horizon can pick up the sample's
#: idiosyncrasies (measured: 20% of cells missing at random leaves ~50 complete calibration rows and
#: the MMD then fires on 20-30% of null paths). Below this size only the Hotelling part runs. The
#: value is a measured heuristic for the default 960-tick horizon, not a validity condition.
MIN_REFERENCE_MMD = 300


class FamilyC(StreamFamily):
    r"""Joint shift: a self-normalised sequential Hotelling e-process and an MMD e-process by betting.

    Every tick yields a *paired difference*: in two-sample mode canary minus control innovations,
    :math:`d_t = (z_t - z^{ctl}_t)/\sqrt 2`; in one-sample mode the canary innovation minus the
    reference mean of the block's calibration split, :math:`d_t = z_t - \bar z^{ref}`, and for the MMD
    a reference vector :math:`y_t` drawn uniformly from the calibration split with a seeded generator
    held in the state. Innovations are clipped to :math:`[-6, 6]` (as the reference is); a missing
    coordinate is replaced by the paired value, so it contributes no difference.

    **Sequential Hotelling.** One-sample mode first removes a predictable estimate of the
    finite-baseline bias: the baseline's cell levels carry estimation error that changes from hour to
    hour (and, through level interpolation, within the hour), so the bias is tracked by an exponentially
    weighted mean of past differences, :math:`\hat b_t = \hat b_{t-1} + (d_t - \hat b_{t-1})/m`
    (memory :math:`m` = ``bias_memory`` ticks, the steady-state Kalman filter of a random-walk bias), and
    :math:`d_t - \hat b_{t-1}` is tested. This costs power against slow ramps (families A and B watch
    those) and keeps it against steps: a joint step is tested at full strength for about :math:`m`
    ticks after its onset. Then :math:`x_t = L^{-1}(d_t - \hat b_{t-1})`, whitened with the Cholesky
    factor :math:`L` of the baseline Ledoit-Wolf covariance, clipped radially,
    :math:`x_t \leftarrow x_t \min(1, r/\lVert x_t\rVert)`, which keeps symmetry. With
    :math:`S_t = \sum x_i`, :math:`V_t = \sum x_i x_i^\top`,

    .. math:: M_t = \int \prod_{i \le t} e^{\mu^\top x_i - (\mu^\top x_i)^2/2}\, dN(\mu; 0, \tau^2 I)
              = \det(I + \tau^2 V_t)^{-1/2} \exp\{\tfrac12 S_t^\top (V_t + \tau^{-2} I)^{-1} S_t\}.

    For a conditionally symmetric :math:`X`, :math:`E[e^{X - X^2/2}] = E[\cosh(X) e^{-X^2/2}] \le 1`
    (de la Peña 1999), so :math:`M_t` is a test supermartingale whenever :math:`x_t` is conditionally
    symmetric given the past: **no variance, covariance or tail assumption**. The covariance only
    shapes power. Updated by Sherman-Morrison in :math:`O(k^2)`.

    **Sequential MMD by betting** (Shekhar & Ramdas 2023; one-sample mode bets only when the reference
    block holds at least ``MIN_REFERENCE_MMD`` complete rows). Random Fourier features
    :math:`\varphi(x) = \sqrt{2/D}\cos(\Omega x + \beta)`, :math:`\Omega_{ij} \sim N(0, h^{-2})`,
    :math:`\beta_j \sim U(0, 2\pi)`, drawn once from the compiled seed; bandwidth :math:`h` by the
    median heuristic on the calibration split. The witness is the running mean-embedding difference
    :math:`g_{t-1} = \sum_{i<t} \varphi(x_i) - \varphi(y_i)`, :math:`f(x) = \langle g_{t-1},
    \varphi(x)\rangle / (\sqrt 2 \lVert g_{t-1} \rVert) \in [-1, 1]`, payoff
    :math:`\kappa_t = (f(x_t) - f(y_t))/2 \in [-1, 1]`, bet :math:`\lambda_t \in [0, 1/2]` by the online
    Newton step, :math:`W_t = \prod_i (1 + \lambda_i \kappa_i)`. When :math:`(x_t, y_t)` is conditionally
    exchangeable given the past, :math:`\kappa_t` is symmetric and :math:`W_t` is a test martingale.

    Both are since-start e-processes: they are most powerful for a change present from the first
    canary tick (the usual canary regression); evidence for a change that starts late is diluted by
    the ticks before it (families A and D carry change-at-unknown-time detectors).

    **Family evidence** :math:`E_t = (M_t + W_t)/2` (same filtration, so a test supermartingale);
    the family fires when :math:`\log E_t \ge \log(1/\alpha_C)`. Ville's inequality gives
    :math:`P(\exists t: E_t \ge 1/\alpha_C) \le \alpha_C`: an anytime-valid bound over an unlimited
    horizon.

    Guarantee and assumptions
        *Two-sample mode*: exact whenever canary and control innovation vectors are conditionally
        exchangeable given the past (randomised traffic split); no distributional assumption.
        *One-sample mode*: the baseline is finite, so the bound holds under the model in which the
        canary innovations are independent across ticks and, after removing the tracked bias
        :math:`\hat b_{t-1}`, conditionally symmetric (Hotelling) and distributed like the calibration
        split (MMD, which compares :math:`z_t - \hat b_{t-1}` with the reference draw). Bias variation
        faster than ``bias_memory`` ticks is not covered.
        Heavy tails and covariance misestimation do not affect validity (self-normalisation,
        bounded payoffs); residual serial dependence left by AR(1) prewhitening does, mildly. The
        Monte-Carlo tests measure the false-fire rate on i.i.d., AR(1) 0.85 with diurnal, Student-t(3)
        and correlated baselines compiled from finite samples.

    Explanation: the drivers are the (up to three) signals with the largest contribution, keeping those
    with at least a quarter of the top one; the contribution is
    :math:`(L S_t)_j \,(L^{-\top} (V_t+\tau^{-2}I)^{-1} S_t)_j` to the Hotelling statistic (these sum
    to :math:`S_t^\top (V_t+\tau^{-2}I)^{-1} S_t`), or, when the MMD carries the evidence, the largest
    self-normalised paired differences :math:`|\sum d_{ij}| / \sqrt{\sum d_{ij}^2}`.

    Parameters
    ----------
    chol : array (P, B, k, k)
        Cholesky factors per stream and covariance block.
    reference : array (P, B, n, k)
        Calibration-split innovation vectors per block (NaN padding beyond ``reference_n``).
    reference_n : array (P, B)
    cell_block : array (cells,)
        Covariance block of every calibration cell.
    names : sequence of str
    alpha : float
    two_sample : bool
    bias_memory : float
        Memory (ticks) of the one-sample bias tracker.
    bandwidth : array (P,), optional
        RFF bandwidth; default: median heuristic on the reference of block 0.
    seed : int
        Draws the RFF frequencies and phases and the reference pairing.
    n_features : int
    tau2 : float
        Mixture variance :math:`\tau^2` of the Hotelling e-process.

    References
    ----------
    Hotelling (1931); de la Peña (1999) a general class of exponential inequalities for martingales;
    de la Peña, Lai, Shao (2009) self-normalized processes; Howard, Ramdas, McAuliffe, Sekhon (2021);
    Rahimi & Recht (2007) random features; Shekhar & Ramdas (2023) nonparametric two-sample testing by
    betting; Cutkosky & Orabona (2018) black-box reductions (online Newton step bets); Ledoit & Wolf (2004).

    Examples
    --------
    Two signals that move together in the baseline (correlation 0.9) move apart by 0.5 sd each
    from the first canary tick:

    >>> import numpy as np
    >>> from deploysignal.detectors import Observation
    >>> rng = np.random.default_rng(0)
    >>> cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    >>> chol = np.linalg.cholesky(cov)
    >>> ref = (rng.normal(size=(500, 2)) @ chol.T)[None, None]
    >>> c = FamilyC(chol[None, None], ref, np.array([[500]]), np.zeros(1, dtype=int),
    ...             names=("ttft_ms", "p99_latency_ms"), alpha=0.01, seed=1)
    >>> step = np.array([0.5, -0.5])
    >>> ev = [c.update(Observation(t, 60.0 * t, 0, chol @ rng.normal(size=2) + step, np.zeros(2)))
    ...       for t in range(100)]
    >>> [e.fired for e in ev].index(True) < 20, sorted(ev[-1].drivers)
    (True, ['p99_latency_ms', 'ttft_ms'])
    """

    family = "C"

    def __init__(
        self,
        chol: np.ndarray,
        reference: np.ndarray,
        reference_n: np.ndarray,
        cell_block: np.ndarray,
        *,
        names: Sequence[str],
        alpha: float,
        two_sample: bool = False,
        bias_memory: float = 60.0,
        bandwidth: np.ndarray | None = None,
        seed: int = 0,
        n_features: int = 32,
        tau2: float = 0.05,
    ) -> None:
        self.alpha = float(alpha)
        self.two_sample = bool(two_sample)
        self.seed = int(seed)
        self.n_features = int(n_features)
        self.tau2 = float(tau2)
        self.bias_memory = float(bias_memory)
        if self.bias_memory < 1.0:
            raise ValueError("bias_memory must be >= 1 tick")
        self._names = tuple(names)
        chol = np.asarray(chol, dtype=float)
        if chol.ndim != 4 or chol.shape[-1] != chol.shape[-2] or chol.shape[-1] != len(self._names):
            raise ValueError(f"chol must have shape (P, B, k, k) with k={len(self._names)}, got {chol.shape}")
        self._P, n_blocks, k, _ = chol.shape
        self._k = k
        self._chol = chol
        self._chol_inv = np.ascontiguousarray(np.linalg.inv(chol))
        self._ref = np.ascontiguousarray(reference, dtype=float)
        self._ref_n = np.ascontiguousarray(reference_n, dtype=np.int64)
        if self._ref.shape[:2] != (self._P, n_blocks) or self._ref.shape[-1] != k:
            raise ValueError(f"reference must have shape ({self._P}, {n_blocks}, n, {k}), got {self._ref.shape}")
        if not self.two_sample and np.any(self._ref_n < 1):
            raise ValueError("one-sample family C needs at least one reference vector per block")
        self._cell_block = np.asarray(cell_block, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            ref_sum = np.nansum(self._ref, axis=2)
        self._ref_mean = ref_sum / np.maximum(self._ref_n, 1)[..., None]  # (P, B, k)
        # prior variance of the bias per signal: reference-mean error + recorded cell-level error
        self._gain = 1.0 / self.bias_memory
        self._radius = 3.0 * math.sqrt(k)
        # random Fourier features, drawn once from the seed
        rng = np.random.default_rng([self.seed, 0xC])
        base = rng.standard_normal((self.n_features, k))
        self._phase = rng.uniform(0.0, 2.0 * math.pi, self.n_features)
        if bandwidth is None:
            bandwidth = np.array([median_heuristic(self._ref[p, 0, : self._ref_n[p, 0]]) for p in range(self._P)])
        self._bandwidth = np.broadcast_to(np.asarray(bandwidth, dtype=float), (self._P,)).copy()
        self._omega = np.ascontiguousarray(base[None] / self._bandwidth[:, None, None])  # (P, D, k)
        self._feat_scale = math.sqrt(2.0 / self.n_features)
        self._no_draw = np.zeros(self._P)
        self._log_thr = log_threshold(alpha)
        self._reset()

    # ------------------------------------------------------------------ construction from a config
    @classmethod
    def from_config(
        cls, config: CompiledConfig | Sequence[CompiledConfig], *, alpha: float, two_sample: bool = False, **kw: Any
    ) -> FamilyC:
        """Build from compiled config(s): Cholesky factors, calibration split, cell-level bias variance.

        The RFF bandwidth is taken from ``config.extras["C"]["bandwidth"]`` when the compiler recorded
        it, otherwise computed by :func:`median_heuristic` on the same calibration rows.
        """
        blocks = config_blocks(config)
        cfgs = [config] if isinstance(config, CompiledConfig) else list(config)
        bw = [c.extras.get("C", {}).get("bandwidth") for c in cfgs]
        bandwidth = np.array(bw, dtype=float) if all(b is not None for b in bw) else None
        return cls(
            blocks.chol, blocks.ref, blocks.ref_n, blocks.cell_block, names=blocks.names, alpha=alpha,
            two_sample=two_sample, bandwidth=bandwidth, seed=blocks.seed, **kw,
        )

    def _reset(self) -> None:
        P, k, D = self._P, self._k, self.n_features
        self._S = np.zeros((P, k))
        self._A = np.broadcast_to(self.tau2 * np.eye(k), (P, k, k)).copy()
        self._logdet = np.zeros(P)
        self._bias = np.zeros((P, k))
        self._G = np.zeros((P, D))
        self._lam = np.zeros(P)
        self._asum = np.ones(P)
        self._logW = np.zeros(P)
        self._dsum = np.zeros((P, k))
        self._d2 = np.zeros((P, k))
        self._fired = np.zeros(P, dtype=bool)
        self._rng = np.random.default_rng([self.seed, 0xC, 1])
        self._derive_hotelling()
        self._fire_reason = ""
        self._fire_drivers: tuple[str, ...] = ()

    # ------------------------------------------------------------------ core
    def step(self, z: np.ndarray, cell: int, control_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``P`` streams by one tick (``z``: (P, k)); return log-wealth (P,) and fired (P,).

        Everything used to score tick ``t`` (bias prediction, Hotelling matrix, witness, bet, reference
        draw) is fixed before tick ``t`` enters the state (compiled kernel
        :func:`~deploysignal.detectors._kernels.family_c_step`).
        """
        z, cz, b = self._tick_inputs(z, cell, control_z)
        u = self._no_draw if self.two_sample else self._rng.random(self._P)
        log_wealth = np.empty(self._P)
        family_c_step(z, cz, self.two_sample, C_HI, u, b, *self._kernel_args(), log_wealth, self._log_m, self._quad)
        log_m = self._log_m
        return self._settle(log_wealth, lambda: self._explain(bool(log_m[0] >= self._logW[0])))

    COMPONENTS = ("log_hotelling", "log_mmd")

    def _run_kernel(self, z: np.ndarray, cz: np.ndarray, cells: np.ndarray, start: int, out: np.ndarray, fired: np.ndarray) -> tuple[int, bool]:
        if start == 0:  # the reference draws of all T ticks, in the order step() would draw them
            self._u_run = np.zeros(z.shape[0]) if self.two_sample else self._rng.random(z.shape[0])
        return family_c_run(
            z, cz, self.two_sample, C_HI, self._u_run, cells, self._cell_block, *self._kernel_args(),
            self._log_m, self._quad, self._log_thr, self._fired, start, out, fired,
        )

    def _kernel_args(self) -> tuple[Any, ...]:
        """Parameters and state arrays, in the order of :func:`family_c_step` after the covariance block."""
        return (
            self._chol_inv, self._ref, self._ref_n, self._ref_mean, MIN_REFERENCE_MMD, self._gain, self._radius, self._omega,
            self._phase, self._feat_scale, self._S, self._A, self._logdet, self._bias, self._G, self._lam, self._asum, self._logW,
            self._dsum, self._d2,
        )

    def _explain_tick(self, t: int, z: np.ndarray, cz: np.ndarray | None, cells: np.ndarray, out: np.ndarray) -> None:
        self._explain(bool(out[t, 2] >= out[t, 3]))

    def _hotelling_stat(self) -> np.ndarray:
        """:math:`S_t^\top (V_t + \tau^{-2} I)^{-1} S_t` per stream (kept by the kernel)."""
        return self._quad

    def _log_hotelling(self) -> np.ndarray:
        return self._log_m

    def _derive_hotelling(self) -> None:
        self._quad = np.einsum("pi,pij,pj->p", self._S, self._A, self._S)
        self._log_m = 0.5 * self._quad - 0.5 * self._logdet

    def contributions(self, cell: int = 0) -> np.ndarray:
        """Per-signal contribution to the Hotelling statistic of stream 0 (sums to the statistic)."""
        b = int(self._cell_block[cell])
        s = self._S[0]
        sz = self._chol[0, b] @ s
        qz = self._chol_inv[0, b].T @ (self._A[0] @ s)
        return sz * qz

    def _explain(self, hotelling: bool) -> None:
        if hotelling:
            score = self.contributions()
            which = "sequential Hotelling (joint mean shift)"
        else:
            score = np.abs(self._dsum[0]) / np.sqrt(np.maximum(self._d2[0], 1e-300))
            which = "sequential MMD (joint distribution changed)"
        self._fire_drivers = top_drivers(self._names, score, share=0.25)
        self._fire_reason = f"{which} crossed its bound; driven by {', '.join(self._fire_drivers)}"

    def _statistic(self) -> float:
        return float(self._hotelling_stat()[0])

    def components(self) -> dict[str, float]:
        """Log-wealth of the two e-processes of stream 0 (for audit records)."""
        return {"log_hotelling": float(self._log_hotelling()[0]), "log_mmd": float(self._logW[0])}

    def witness_state(self) -> dict[str, np.ndarray]:
        """What tick ``t`` will be scored with, fixed by ticks ``< t`` (for predictability checks)."""
        return {
            "bias": self._bias.copy(),
            "hotelling_matrix": self._A.copy(),
            "witness": self._G.copy(),
            "bet": self._lam.copy(),
            "bandwidth": self._bandwidth.copy(),
        }

    # ------------------------------------------------------------------ state
    _ARRAYS = ("S", "A", "logdet", "bias", "G", "lam", "asum", "logW", "dsum", "d2", "fired")

    def _extra_state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def _load_extra_state(self, st: dict[str, Any]) -> None:
        self._rng.bit_generator.state = st["rng"]
        self._derive_hotelling()


def build_family_c(config: CompiledConfig | Sequence[CompiledConfig], settings: Any, alpha: float) -> FamilyC:
    """Gate factory: family C at level ``alpha`` in the gate's mode."""
    return FamilyC.from_config(config, alpha=alpha, two_sample=getattr(settings, "mode", "one-sample") == "two-sample")
