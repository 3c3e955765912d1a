"""Family A: per-signal anytime-valid tests for sustained shifts and changes at an unknown time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..calibration import C_HI, C_LO, CompiledConfig
from ._base import Evidence, Observation, log_threshold

__all__ = ["FamilyA", "GAMMAS", "psi_e"]

#: Betting fractions mixed over (uniform weights). Each defines a test supermartingale; their average
#: is one too, so mixing costs at most log(len(GAMMAS)) nats against the best fraction in hindsight.
GAMMAS = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85])
#: Symmetric clip of paired differences in two-sample mode.
C_PAIR = 3.0


def psi_e(gamma: np.ndarray) -> np.ndarray:
    """:math:`\\psi_E(\\gamma) = -\\log(1-\\gamma) - \\gamma` (Fan et al. 2015; Howard et al. 2021)."""
    return -np.log1p(-gamma) - gamma


_PSI = psi_e(GAMMAS)


class FamilyA:
    r"""Per-signal sequential tests on prewhitened residuals, in each signal's harmful direction.

    Each signal contributes one *channel* per harmful direction (two for ``both`` signals). For a
    channel, the score of tick :math:`i` in calibration cell :math:`c` is

    .. math:: x_i = \mathrm{clip}(s\, z_i, -C_{lo}, C_{hi}) / \hat\sigma_\psi - \hat m_c ,

    where :math:`z_i` is the prewhitened, standardised innovation and :math:`\hat m_c` the baseline
    mean of the clipped score in cell :math:`c`. The estimate :math:`\hat m_c` carries error
    :math:`b_c \sim N(0, v_c)` (``v_c = 1/n_eff``, recorded by the compiler); under the null the canary
    score has conditional mean :math:`b_c`, which is predicted from past canary ticks by the Gaussian
    posterior :math:`\hat b_{c,i-1} = S_c / (v_c^{-1} + N_c)` (plus a global drift allowance level when
    ``drift_allowance > 0``). With :math:`B_i = C_{lo}/\hat\sigma_\psi + \hat m_c + \hat b_{c,i-1}`, the
    centred score :math:`\xi_i = (x_i - \hat b_{c,i-1})/B_i \ge -1`, and for every
    :math:`\gamma \in [0, 1)` (Fan et al. 2015, Howard et al. 2021)

    .. math:: \exp\{\gamma \xi - \psi_E(\gamma)\xi^2\} \le 1 + \gamma\xi,
              \qquad \psi_E(\gamma) = -\log(1-\gamma) - \gamma .

    Two e-processes are built from these increments, each averaged over channels and over the
    betting fractions ``GAMMAS``:

    * **mSPRT** ("shifted since start"): :math:`W_t = \prod_{i\le t} f_i`, fires when
      :math:`\bar W_t \ge 2/\alpha_A`. Ville: :math:`P(\exists t: \bar W_t \ge 2/\alpha_A) \le \alpha_A/2`.
    * **e-SR detector** ("changed at an unknown time"): :math:`R_t = (1 + R_{t-1}) f_t`, so
      :math:`E[R_t] \le t`; fires when :math:`\bar R_t \ge 2H/\alpha_A` with ``H`` the planned horizon.
      Doob's maximal inequality for the non-negative submartingale bound:
      :math:`P(\max_{t \le H} \bar R_t \ge 2H/\alpha_A) \le \alpha_A/2` (finite-horizon bound).

    So :math:`P(\text{family A fires within } H) \le \alpha_A`.

    Guarantee and assumptions
        The bound holds whenever the canary scores have conditional mean equal to the predicted bias
        :math:`\hat b_{c,i-1}` given the past. No variance, symmetry or tail assumption is needed for
        that: heavy tails only cost power (self-normalised by :math:`\xi^2`). The centring is exact
        when the baseline-estimation error of each cell mean is Gaussian with variance ``v_c``
        (CLT, exact for Gaussian scores) and the prewhitened innovations are uncorrelated with the
        past (AR(1) adequacy). **Two-sample mode** uses paired differences
        :math:`\mathrm{clip}((z^{canary}_i - z^{control}_i)/\sqrt 2, \pm 3)` with no baseline term:
        the bound is then exact whenever canary and control are conditionally exchangeable given the
        past (e.g. randomised request assignment).

    Early proceed uses the dual e-process of :math:`H_0': E[x_i - \hat b] \ge \tau` (harm at least
    ``tau`` sd), betting downwards with :math:`\xi'_i = (\tau + \hat b - x_i)/B'_i`; rejecting it for
    every channel at level ``alpha_proceed`` gives :math:`P(\text{proceed while some shift} \ge \tau)
    \le \alpha_{proceed}` (intersection-union, no multiplicity correction needed).

    Parameters
    ----------
    config : CompiledConfig
    alpha : float
        Family A's share of the false-rollback budget.
    horizon : int
        Planned horizon ``H`` (ticks) for the e-SR threshold.
    two_sample : bool
    drift_allowance : float
        Standard deviation (score units) of a global baseline-to-canary drift treated as null (0 = none).
    tau : float
        Tolerated harmful shift (score sd units) for early proceed.
    alpha_proceed : float
        Error budget of early proceed (taken from the reserve, not from alpha).

    References
    ----------
    Robbins (1970); Johari, Pekelis, Walsh (2017) always-valid A/B testing; Howard, Ramdas, McAuliffe,
    Sekhon (2021) time-uniform confidence sequences; Fan, Grama, Liu (2015) exponential inequalities for
    martingales; Shin, Ramdas, Rinaldo (2022) e-detectors; Roberts (1966), Shiryaev (1963).

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.telemetry import Frame
    >>> from deploysignal.calibration import compile_baseline
    >>> from deploysignal.detectors import Observation
    >>> rng = np.random.default_rng(3)
    >>> cfg = compile_baseline(Frame(np.arange(1440.0) * 60, rng.normal(size=(1440, 1)), ("lat",)))
    >>> a = FamilyA(cfg, alpha=0.02, horizon=500)
    >>> fired = [a.update(Observation(t, 0.0, 0, np.array([1.0 + rng.normal()]), np.array([0.0]))).fired
    ...          for t in range(200)]
    >>> fired.index(True) < 60
    True
    """

    family = "A"

    def __init__(
        self,
        config: CompiledConfig,
        *,
        alpha: float,
        horizon: int,
        two_sample: bool = False,
        drift_allowance: float = 0.0,
        tau: float = 0.3,
        alpha_proceed: float = 0.01,
    ) -> None:
        self.config = config
        self.alpha = alpha
        self.horizon = int(horizon)
        self.two_sample = bool(two_sample)
        self.drift_allowance = float(drift_allowance)
        self.tau = float(tau)
        self.alpha_proceed = float(alpha_proceed)
        if self.horizon < 1:
            raise ValueError("horizon must be >= 1")
        arr = config.arrays
        k = len(config.signals)
        two = arr["two_sided"]
        self._sig = np.concatenate([np.arange(k), np.flatnonzero(two)])
        self._dir = np.concatenate([np.zeros(k, dtype=int), np.ones(int(two.sum()), dtype=int)])
        self._sign = np.where(self._dir == 0, 1.0, -1.0)
        m = self._sig.size
        self._names = tuple(
            config.signals[s].name + ("" if not two[s] else ("+" if d == 0 else "-")) for s, d in zip(self._sig, self._dir)
        )
        per_signal = np.bincount(self._sig, minlength=k)[self._sig]
        w = 1.0 / (k * per_signal)
        self._logw = np.log(w)[:, None] - math.log(GAMMAS.size)  # (m, G), sums to 1
        self._sd = arr["score_sd"][self._dir, self._sig]  # (m,)
        self._center = arr["cell_center"][self._dir, :, self._sig].T  # (cells, m)
        self._bias_var = np.maximum(arr["cell_bias_var"][self._dir, :, self._sig].T, 1e-12)  # (cells, m)
        self._log_thr = log_threshold(alpha)
        self._log_thr_w = log_threshold(alpha / 2)
        self._log_thr_r = log_threshold(alpha / 2) + math.log(self.horizon)
        self._log_thr_p = log_threshold(alpha_proceed)
        self._m = m
        self._reset()

    def _reset(self) -> None:
        n_cells, m = self._center.shape
        G = GAMMAS.size
        self._S = np.zeros((n_cells, m))
        self._N = np.zeros((n_cells, m))
        self._U = np.zeros(m)
        self._A = np.zeros(m)
        self._logW = np.zeros((m, G))
        self._logR = np.full((m, G), -np.inf)
        self._logP = np.zeros((m, G))
        self._n_obs = np.zeros(m)
        self._fired = False
        self._fire_reason = ""
        self._fire_drivers: tuple[str, ...] = ()

    # ------------------------------------------------------------------ core
    def _scores(self, obs: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per channel: score x, predicted bias b, lower bound B of x - b, upper bound B' of x - b."""
        if self.two_sample:
            if obs.control_z is None:
                raise ValueError("two-sample family A needs control_z")
            d = (obs.z[self._sig] - obs.control_z[self._sig]) / math.sqrt(2.0)
            x = np.clip(self._sign * d, -C_PAIR, C_PAIR)
            bound = np.full(self._m, C_PAIR)
            return x, np.zeros(self._m), bound, bound
        c = obs.cell
        psi = np.clip(self._sign * obs.z[self._sig], -C_LO, C_HI)
        center = self._center[c]
        x = psi / self._sd - center
        v = self._bias_var[c]
        S, N = self._S[c], self._N[c]
        if self.drift_allowance > 0.0:
            pg = 1.0 / self.drift_allowance**2 + self._A
            kc = N / (1.0 / v + N)
            bhat = (self._U / pg) * (1.0 - kc) + S / (1.0 / v + N)
        else:
            bhat = S / (1.0 / v + N)
        lo = C_LO / self._sd + center + bhat
        hi = C_HI / self._sd - center - bhat
        return x, bhat, lo, hi

    def update(self, obs: Observation) -> Evidence:
        """Add one tick; return the family's evidence (fires are sticky)."""
        x, bhat, lo, hi = self._scores(obs)
        xc = x - bhat
        ok = ~np.isnan(xc) & (lo > 0)
        xi = np.where(ok, xc / np.where(lo > 0, lo, 1.0), 0.0)
        logf = GAMMAS * xi[:, None] - _PSI * (xi * xi)[:, None]
        self._logW += logf
        self._logR = np.logaddexp(0.0, self._logR) + logf
        hi_p = hi - self.tau
        okp = ok & (hi_p > 0)
        xip = np.where(okp, (self.tau - xc) / np.where(hi_p > 0, hi_p, 1.0), 0.0)
        self._logP += GAMMAS * xip[:, None] - _PSI * (xip * xip)[:, None]
        self._n_obs += ok
        if not self.two_sample:  # the bias posterior sees the tick only after it has been scored
            c = obs.cell
            v = self._bias_var[c]
            old_a = self._N[c] / (1.0 + self._N[c] * v)
            old_u = self._S[c] / (1.0 + self._N[c] * v)
            self._S[c] += np.where(ok, x, 0.0)
            self._N[c] += ok
            self._A += self._N[c] / (1.0 + self._N[c] * v) - old_a
            self._U += self._S[c] / (1.0 + self._N[c] * v) - old_u
        return self._evidence()

    def _evidence(self) -> Evidence:
        comp = self.components()
        score_w = comp["log_msprt"] - self._log_thr_w + self._log_thr
        score_r = comp["log_esr"] - self._log_thr_r + self._log_thr
        log_wealth = max(score_w, score_r)
        if not self._fired and log_wealth >= self._log_thr:
            self._fired = True
            use_w = score_w >= score_r
            which = "mSPRT (shift since start)" if use_w else "e-SR (change at an unknown time)"
            contrib = np.logaddexp.reduce((self._logW if use_w else self._logR) + self._logw, axis=1)
            order = np.argsort(-contrib, kind="stable")
            self._fire_drivers = tuple(self._names[i] for i in order[:3])
            self._fire_reason = f"{which} crossed its bound; driven by {', '.join(self._fire_drivers)}"
        return Evidence(
            family="A",
            statistic=comp["log_esr"] - math.log(self.horizon),
            log_wealth=log_wealth,
            log_threshold=self._log_thr,
            fired=self._fired,
            reason=self._fire_reason,
            drivers=self._fire_drivers,
        )

    # ------------------------------------------------------------------ early proceed, explanation
    def harm_excluded(self) -> np.ndarray:
        """Per channel: has the e-process for 'harmful shift >= tau' crossed ``1/alpha_proceed``?"""
        return np.logaddexp.reduce(self._logP, axis=1) - math.log(GAMMAS.size) >= self._log_thr_p

    def channel_names(self) -> tuple[str, ...]:
        return self._names

    def components(self) -> dict[str, float]:
        """Log-wealth of the two e-processes (for audit records)."""
        lw = self._logw
        return {
            "log_msprt": float(np.logaddexp.reduce((self._logW + lw).ravel())),
            "log_esr": float(np.logaddexp.reduce((self._logR + lw).ravel())),
        }

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "S": self._S.tolist(), "N": self._N.tolist(), "U": self._U.tolist(), "A": self._A.tolist(),
            "logW": self._logW.tolist(), "logR": [[None if not np.isfinite(v) else v for v in row] for row in self._logR.tolist()],
            "logP": self._logP.tolist(), "n_obs": self._n_obs.tolist(), "fired": self._fired,
            "reason": self._fire_reason, "drivers": list(self._fire_drivers),
        }

    def load_state(self, st: dict[str, Any]) -> FamilyA:
        self._S = np.array(st["S"], dtype=float)
        self._N = np.array(st["N"], dtype=float)
        self._U = np.array(st["U"], dtype=float)
        self._A = np.array(st["A"], dtype=float)
        self._logW = np.array(st["logW"], dtype=float)
        self._logR = np.array([[-np.inf if v is None else v for v in row] for row in st["logR"]], dtype=float)
        self._logP = np.array(st["logP"], dtype=float)
        self._n_obs = np.array(st["n_obs"], dtype=float)
        self._fired = bool(st["fired"])
        self._fire_reason = st["reason"]
        self._fire_drivers = tuple(st["drivers"])
        return self
