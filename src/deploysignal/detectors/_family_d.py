"""Family D: oscillation and flapping, by betting on predictable band-pass filters and a BOCPD bettor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..calibration import CompiledConfig
from ._base import log_threshold
from ._cde_common import StreamFamily, config_blocks, dump_arrays, load_arrays, top_drivers
from ._kernels import family_d_run, family_d_step

__all__ = ["PERIODS", "FamilyD", "build_family_d", "resonator_memory"]

#: Periods (ticks) of the filter bank: every integer period from 2 to 48 (up to 24 before issue 22, which
#: left a period-30 oscillation undetected; the resonators' bandwidth, about 1/(4p) rad per tick, is wider
#: than the spacing 2 pi/p^2 of integer periods, so the bank covers every period in the range).
PERIODS = np.arange(2, 49)
#: Clip of the standardised innovations before betting (symmetric, so symmetry is preserved).
CLIP = 3.0


def resonator_memory(period: np.ndarray) -> np.ndarray:
    """Memory (ticks) of the resonator of each period: four periods, at least 24 ticks."""
    return np.maximum(4.0 * np.asarray(period, dtype=float), 24.0)


class FamilyD(StreamFamily):
    r"""Oscillation / flapping: betting e-processes on predictable filters of the residuals.

    Input per signal: in two-sample mode the paired difference, in one-sample mode the innovation
    centred by the reference mean of the calibration split and by a predictable running mean,

    .. math:: e_t = \mathrm{clip}\big((z_t - z^{ctl}_t)/\sqrt2, \pm 3\big)/3 \quad\text{or}\quad
              e_t = \tfrac12\big(\mathrm{clip}(z_t - \bar z^{ref}, \pm 3)/3 - \hat m_{t-1}\big),

    with :math:`\hat m_{t-1} = \sum_{i<t} v_i / (n_0 + t - 1)`; so :math:`e_t \in [-1, 1]` and a
    missing value gives :math:`e_t = 0`.

    **Filter bank** (periods :math:`p = 2, \dots, 48`): a complex resonator
    :math:`Z_t = \rho_p e^{i\omega_p} Z_{t-1} + e_t`, :math:`\omega_p = 2\pi/p`, memory
    :math:`-1/\log\rho_p = \max(4p, 24)` ticks. Its one-step prediction

    .. math:: g_t = \mathrm{Re}(\rho_p e^{i\omega_p} Z_{t-1}) = \sum_{j \ge 1} \rho_p^j \cos(\omega_p j)\, e_{t-j}

    is a band-pass filter of *past* residuals only, so :math:`e_t g_t = \sum_j \rho^j\cos(\omega j)\,
    e_t e_{t-j}` is a weighted sum of lagged products whose conditional mean is zero under the null.
    Payoff :math:`\kappa_t = \tanh(g_t / s_p)\, e_t \in [-1, 1]` (:math:`s_p` the nominal sd of
    :math:`g_t`, which shapes power only), bet :math:`\lambda_t \in [0, 1/2]` by the online Newton step.

    **BOCPD bettor** (Adams & MacKay 2007): per signal, a run-length posterior (truncated at 32 run
    lengths, hazard 1/200) of a Gaussian regime mean gives the predictive mean :math:`\hat\mu_t` of
    :math:`e_t` from past ticks; payoff :math:`\tanh(\hat\mu_t / s_\mu)\, e_t`. It bets that the current
    regime persists, which pays when the level flaps between regimes.

    Every channel (signal x period, and signal x BOCPD) is a test supermartingale
    :math:`W^{(c)}_t = \prod_i (1 + \lambda^{(c)}_i \kappa^{(c)}_i)` whenever :math:`e_t` is conditionally
    symmetric about zero given the past (the bets are predictable and the payoffs odd in
    :math:`e_t`). The family's e-process is the weighted average (half the weight on the filter bank,
    half on BOCPD) and fires when it reaches :math:`1/\alpha_D`; Ville's inequality gives
    :math:`P(\exists t: \bar W_t \ge 1/\alpha_D) \le \alpha_D` over an unlimited horizon.

    Guarantee and assumptions
        *Two-sample mode*: exact when canary and control ticks are conditionally exchangeable given
        the past (then :math:`e_t` is conditionally symmetric): no variance or tail assumption, and
        serial dependence shared by canary and control cancels. *One-sample mode*: requires the
        prewhitened innovations to be conditionally symmetric about a (slowly varying) bias and free
        of residual autocorrelation; the bias enters the payoffs only through the predictable centring
        error, i.e. at second order. Residual autocorrelation left by a misfit AR(1) is the main
        threat and is what the AR(1) 0.85 Monte-Carlo null measures. The periodogram is not used.

    Explanation: the drivers are the (up to three) channels with the largest log-wealth, keeping those
    with at least half of the top one, named
    ``signal@period=p`` or ``signal@bocpd``.

    Parameters
    ----------
    center : array (P, B, k)
        Reference mean of the innovations per stream and covariance block (one-sample centring).
    cell_block : array (cells,)
    names : sequence of str
    alpha : float
    two_sample : bool
    n0 : float
        Prior weight (ticks) of the running-mean centring in one-sample mode.
    hazard : float
        BOCPD change-point hazard per tick.
    run_lengths : int
        BOCPD truncation.
    periods : array of int, optional
        Periods of the filter bank (default :data:`PERIODS`). A state saved with another number of periods
        (the bank was 2..24 before issue 22) is restored with that bank, 2..(1 + its count), so an
        analysis in progress keeps the e-process it started with.

    References
    ----------
    Adams & MacKay (2007) Bayesian online changepoint detection; Shafer & Vovk (2019) game-theoretic
    probability; Waudby-Smith & Ramdas (2023) betting; Cutkosky & Orabona (2018) online Newton step;
    Shekhar & Ramdas (2023); Ville (1939).

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.detectors import Observation
    >>> rng = np.random.default_rng(0)
    >>> d = FamilyD(np.zeros((1, 1, 2)), np.zeros(1, dtype=int), names=("a", "b"), alpha=0.005)
    >>> wave = 0.9 * np.cos(2 * np.pi * np.arange(400) / 3)
    >>> for t in range(400):
    ...     ev = d.update(Observation(t, 60.0 * t, 0, np.array([wave[t] + 0.8 * rng.normal(), rng.normal()]), np.zeros(2)))
    >>> ev.fired, ev.drivers[0]
    (True, 'a@period=3')
    """

    family = "D"

    def __init__(
        self,
        center: np.ndarray,
        cell_block: np.ndarray,
        *,
        names: Sequence[str],
        alpha: float,
        two_sample: bool = False,
        n0: float = 20.0,
        hazard: float = 1.0 / 200.0,
        run_lengths: int = 32,
        periods: np.ndarray | None = None,
    ) -> None:
        self._periods = PERIODS if periods is None else np.asarray(periods, dtype=np.int64)
        self.alpha = float(alpha)
        self.two_sample = bool(two_sample)
        self.n0 = float(n0)
        self.hazard = float(hazard)
        self.run_lengths = int(run_lengths)
        self._names = tuple(names)
        self._center = np.ascontiguousarray(center, dtype=float)
        if self._center.ndim != 3 or self._center.shape[-1] != len(self._names):
            raise ValueError(f"center must have shape (P, B, k) with k={len(self._names)}, got {self._center.shape}")
        self._P, _, self._k = self._center.shape
        self._cell_block = np.asarray(cell_block, dtype=np.int64)
        if self.run_lengths < 2:
            raise ValueError("run_lengths must be >= 2")
        omega = 2.0 * math.pi / self._periods
        rho = np.exp(-1.0 / resonator_memory(self._periods))
        self._rot = rho * np.exp(1j * omega)  # (Q,)
        self._rot_re, self._rot_im = self._rot.real.copy(), self._rot.imag.copy()
        # nominal sd of e_t and of the filter outputs (power only)
        self._sd_e = 0.33 if self.two_sample else 0.17
        j = np.arange(1, 4000)[:, None]
        self._gscale = self._sd_e * np.sqrt(np.sum((rho**j * np.cos(omega * j)) ** 2, axis=0))  # (Q,)
        # BOCPD: Gaussian regime mean, prior N(0, sd_e^2), noise sd_e^2
        self._kappa0 = 1.0  # prior precision in units of the noise precision
        self._mu_scale = 0.5 * self._sd_e
        r = np.arange(self.run_lengths, dtype=float)
        self._inv_kappa = 1.0 / (r + self._kappa0)
        var = self._sd_e**2 * (1.0 + self._inv_kappa)
        self._half_prec = 0.5 / var
        self._half_logvar = 0.5 * np.log(var)
        self._inv_gscale = 1.0 / self._gscale
        Q = self._periods.size
        k = self._k
        n_ch = k * Q + k
        self._logw = np.concatenate([np.full(k * Q, -math.log(2.0 * k * Q)), np.full(k, -math.log(2.0 * k))])
        self._weight = np.exp(self._logw)
        self._ch_names = tuple(f"{n}@period={p}" for n in self._names for p in self._periods) + tuple(f"{n}@bocpd" for n in self._names)
        self._n_ch = n_ch
        self._kq = k * Q
        self._log_thr = log_threshold(alpha)
        self._reset()

    @classmethod
    def from_config(
        cls, config: CompiledConfig | Sequence[CompiledConfig], *, alpha: float, two_sample: bool = False, **kw: Any
    ) -> FamilyD:
        """Build from compiled config(s): the reference means of the calibration split per block."""
        blocks = config_blocks(config)
        with np.errstate(invalid="ignore"):
            center = np.nansum(blocks.ref, axis=2) / np.maximum(blocks.ref_n, 1)[..., None]
        return cls(center, blocks.cell_block, names=blocks.names, alpha=alpha, two_sample=two_sample, **kw)

    def _reset(self) -> None:
        P, k, Q, R = self._P, self._k, self._periods.size, self.run_lengths
        self._Zr = np.zeros((P, k, Q))
        self._Zi = np.zeros((P, k, Q))
        self._msum = np.zeros((P, k))
        self._mcnt = np.zeros((P, k))
        self._rl_w = np.zeros((P, k, R))
        self._rl_w[..., 0] = 1.0
        self._rl_sum = np.zeros((P, k, R))
        self._lam = np.zeros((P, self._n_ch))
        self._asum = np.ones((P, self._n_ch))
        self._wealth = np.ones((P, self._n_ch))
        self._log_scale = np.zeros(P)
        self._fired = np.zeros(P, dtype=bool)
        self._fire_reason = ""
        self._fire_drivers: tuple[str, ...] = ()

    # ------------------------------------------------------------------ core
    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """Witnesses for the next tick, from past ticks only: filter outputs (P, k, Q), BOCPD mean (P, k)."""
        g = self._rot.real * self._Zr - self._rot.imag * self._Zi
        mu = np.einsum("pkr,pkr,r->pk", self._rl_w, self._rl_sum, self._inv_kappa)
        return g, mu

    def step(self, z: np.ndarray, cell: int, control_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``P`` streams by one tick (``z``: (P, k)); return log-wealth (P,) and fired (P,).

        The payoffs use :meth:`predictions` (filter outputs and BOCPD mean from past ticks) before the
        tick enters the resonators, the running mean and the run-length posterior (compiled kernel,
        :func:`~deploysignal.detectors._kernels.family_d_step`).
        """
        z, cz, b = self._tick_inputs(z, cell, control_z)
        log_wealth = np.empty(self._P)
        family_d_step(z, cz, self.two_sample, self._center, b, *self._kernel_params(), *self._kernel_state(), log_wealth)
        return self._settle(log_wealth, self._explain)

    COMPONENTS = ("log_filters", "log_bocpd")

    def _run_kernel(self, z: np.ndarray, cz: np.ndarray, cells: np.ndarray, start: int, out: np.ndarray, fired: np.ndarray) -> tuple[int, bool]:
        return family_d_run(
            z, cz, self.two_sample, self._center, cells, self._cell_block, *self._kernel_params(), self._kq,
            *self._kernel_state(), self._log_thr, self._fired, start, out, fired,
        )

    def _kernel_params(self) -> tuple[Any, ...]:
        """Filter bank and BOCPD parameters, in the order of :func:`family_d_step` after the block."""
        return (
            self.n0, CLIP, self._rot_re, self._rot_im, self._inv_gscale, 1.0 / self._mu_scale, self._inv_kappa, self._half_prec,
            self._half_logvar, self.hazard, self._weight,
        )

    def _kernel_state(self) -> tuple[np.ndarray, ...]:
        return (self._Zr, self._Zi, self._msum, self._mcnt, self._rl_w, self._rl_sum, self._lam, self._asum, self._wealth, self._log_scale)

    def _explain_tick(self, t: int, z: np.ndarray, cz: np.ndarray | None, cells: np.ndarray, out: np.ndarray) -> None:
        self._explain()

    @property
    def _logW(self) -> np.ndarray:
        """Log-wealth per stream and channel (P, n_channels); held as a common log scale per stream times
        a linear wealth (see :func:`~deploysignal.detectors._kernels.family_d_step`). -inf = underflowed."""
        with np.errstate(divide="ignore"):
            return self._log_scale[:, None] + np.log(self._wealth)

    @_logW.setter
    def _logW(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=float)
        top = np.max(np.where(np.isfinite(value), value, -np.inf), axis=1)
        self._log_scale = np.where(np.isfinite(top), top, 0.0)
        self._wealth = np.exp(value - self._log_scale[:, None])

    def _explain(self) -> None:
        self._fire_drivers = top_drivers(self._ch_names, self._logW[0], share=0.5)
        self._fire_reason = f"oscillation/flapping e-process crossed its bound; driven by {', '.join(self._fire_drivers)}"

    def _statistic(self) -> float:
        with np.errstate(divide="ignore"):
            return float(self._log_scale[0] + math.log(self._wealth[0].max()))

    def components(self) -> dict[str, float]:
        """Log-wealth of the filter bank and of the BOCPD bettor (stream 0, each averaged over its channels)."""
        kq = self._kq
        w, c = self._wealth[0], self._weight
        with np.errstate(divide="ignore"):
            return {
                "log_filters": float(self._log_scale[0] + np.log(w[:kq] @ c[:kq]) + math.log(2.0)),
                "log_bocpd": float(self._log_scale[0] + np.log(w[kq:] @ c[kq:]) + math.log(2.0)),
            }

    def channel_names(self) -> tuple[str, ...]:
        return self._ch_names

    # ------------------------------------------------------------------ state
    _ARRAYS = ("Zr", "Zi", "msum", "mcnt", "rl_w", "rl_sum", "lam", "asum", "wealth", "log_scale", "fired")

    def load_state(self, st: dict[str, Any]) -> FamilyD:
        """Restore a :meth:`state`; a state written before the linear-wealth kernel (``logW``) is converted
        (to within rounding)."""
        q_saved = int(st["Zr"]["shape"][-1]) if isinstance(st.get("Zr"), dict) else self._periods.size
        if q_saved != self._periods.size and q_saved >= 1:  # saved with another bank: continue with that bank
            self.__init__(  # type: ignore[misc]
                self._center, self._cell_block, names=self._names, alpha=self.alpha, two_sample=self.two_sample,
                n0=self.n0, hazard=self.hazard, run_lengths=self.run_lengths, periods=np.arange(2, 2 + q_saved),
            )
        if "logW" in st and "wealth" not in st:
            legacy = type("_Legacy", (), {})()
            legacy._logW = np.zeros_like(self._wealth)
            load_arrays(legacy, st, ("logW",))
            self._logW = legacy._logW
            st = {**{k: v for k, v in st.items() if k != "logW"}, **dump_arrays(self, ("wealth", "log_scale"))}
        return super().load_state(st)


def build_family_d(config: CompiledConfig | Sequence[CompiledConfig], settings: Any, alpha: float) -> FamilyD:
    """Gate factory: family D at level ``alpha`` in the gate's mode."""
    max_period = int(getattr(settings, "d_max_period", int(PERIODS[-1])))
    return FamilyD.from_config(config, alpha=alpha, two_sample=getattr(settings, "mode", "one-sample") == "two-sample",
                               periods=np.arange(2, max_period + 1))
