"""Family A: per-signal anytime-valid tests for sustained shifts and changes at an unknown time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..calibration import C_HI, C_LO, CompiledConfig, stack_arrays
from ._base import Evidence, Observation, log_threshold
from ._drivers import DRIVERS_RULE, MOST, supported_drivers
from ._kernels import as_rows, check_cell, check_cells, family_a_run, family_a_step
from ._nuisance_band import BAND_SHARE, BET_TOP, nuisance_band
from ._nuisance_mixture import DELTAS, mixture_log_lr, mixture_step

__all__ = ["C_PAIR", "FamilyA", "GAMMAS", "NUISANCE_MODES"]

#: How family A's rollback test treats the nuisance terms: ``learned`` (default, 0.4.0) centres on their
#: posterior mean learnt from the canary, which can absorb a large harmful shift (issue 22); ``band``
#: (opt-in since 0.5.0) tests against the upper edge of the band the baseline justifies (monotone in
#: harm, but blind to shifts smaller than the band); ``capped`` (opt-in since 0.5.0) centres on the learned
#: mean capped at the band's upper edge; ``mixture`` (opt-in since 0.5.0) integrates the level nuisance out of a
#: Gaussian likelihood ratio (monotone in harm by construction) and adds the band's e-SR detector.
NUISANCE_MODES = ("learned", "band", "capped", "mixture")

#: Betting fractions mixed over (uniform weights). Each defines a test supermartingale; their average
#: is one too, so mixing costs at most log(len(GAMMAS)) nats against the best fraction in hindsight.
GAMMAS = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85])
#: Symmetric clip of paired differences in two-sample mode.
C_PAIR = 3.0


class FamilyA:
    r"""Per-signal sequential tests on prewhitened residuals, in each signal's harmful direction.

    **Nuisance band (``nuisance="band"``, opt-in since 0.5.0).** The one-sample null has three
    nuisance terms estimated from the baseline: each cell centre's error :math:`b_c` (prior variance
    :math:`v_c`), a global level offset :math:`g` (prior variance :math:`v_g`, below) and the AR(1)
    error :math:`\beta = \phi - \hat\phi` (prior sd :math:`se_\phi`), which adds :math:`\beta r_i` to
    innovation :math:`i` (:math:`r_i`: the previous de-seasonalised level in innovation units). None of
    them is learnt from the canary: the rollback bets test against the upper edge of the band the
    baseline justifies (:func:`~deploysignal.detectors._nuisance_band.nuisance_band`),

    .. math:: a_i = k\sqrt{v_c} + k\sqrt{v_g} + k\,se_\phi \min(|r_i|, R) + e, \qquad
              u_i = \min\{\max(s z_i/\hat\sigma_\psi - \hat m_c - a_i,\; -B_c),\; T/\hat\sigma_\psi - \hat m_c\},

    with :math:`B_c = C_{lo}/\hat\sigma_\psi + \hat m_c + a^{max}_c` (the band at its widest,
    :math:`|r| = R`), ``T = BET_TOP`` (30 sd) and :math:`e` the tail margin that pays for betting above
    the compiler's clip :math:`C_{hi}` (Scarf's bound; any innovation law of unit variance). Each tick
    bets :math:`1 + \gamma u_i / B_c`. On the event that every nuisance lies inside its band (probability
    at least :math:`1 - 0.2\alpha_A` under the compiler's Gaussian model of these errors and a
    stationary Gaussian AR(1) level for :math:`|r_i| \le R` over the horizon), :math:`E[u_i \mid
    \mathcal F_{i-1}] \le 0`, so every product below is a test supermartingale; the e-processes run at
    :math:`0.8\alpha_A`, and :math:`P(\text{family A fires within } H) \le \alpha_A`. **Monotone in
    harm**: :math:`u_i` is a nondecreasing function of :math:`s z_i/\hat\sigma_\psi - a_i`, and a harmful
    step of the (variance-stabilised) signal raises :math:`s z_i` by at least what it adds to
    :math:`a_i` wherever ``k se_phi <= min_g (1 - phi^g)/(g |phi|^(g-1))``
    (:meth:`not_monotone` names the channels where this fails: phi near 1 on a short baseline;
    the gate then reports the config uncertified). The bounds :math:`B_c` do not depend on the data,
    so the log-wealth of every betting fraction, of the mixtures below, of the e-SR recursion and their
    maximum never decrease when a harmful shift grows, and the rollback never comes later. A gross
    shift is bet on up to ``T`` sd, about two nats per tick: p99 x10 rolls back in about 6 ticks. The
    cost: a shift is only evidence beyond the band, measured 0.36-0.85 score sd (median over cells)
    on a one-week baseline, about 0.6 on two days, 0.8-1.8 on one day, plus ``k se_phi |r_i|``; a
    0.5 sd step of p99 (innovation shift about 0.37 sd) is then never detected (docs/one-sample.md).
    Two-sample mode has no level terms: :math:`u_i` is the paired difference minus the AR-error band,
    clipped below at :math:`-(C_{pair} + a^{max})` and above at ``T``, with the margin
    :math:`e = 1/(8(C_{pair} - a^{max}))`, which bounds what the lower clip adds to the mean of a
    difference symmetric about its conditional mean (canary and control exchangeable).

    **Capped (``nuisance="capped"``, opt-in since 0.5.0).** The learned centring below, capped at the
    band's upper edge: :math:`u_i = \min\{\max(s z_i/\hat\sigma_\psi - \hat m_c - c_i,\; -B_c),\;
    T/\hat\sigma_\psi - \hat m_c\}` with :math:`c_i = \min(\hat p_i, a_i - e) + e`, :math:`\hat p_i`
    the learned prediction (cell level, day offset and AR-error posterior means; the learner is fed as
    in ``learned``), and the band's :math:`a_i`, :math:`e`, :math:`B_c`, ``T`` and alpha split. A
    moderate shift is tested about as in ``learned`` (the cap rarely binds), a gross one as with the
    band (the centre stops at the band, so the shift cannot be explained away). Validity: on the event
    that the learned prediction never exceeds the band's upper edge, the bets are those of ``learned``
    plus the margin :math:`e`, so the guarantee is ``learned``'s (under the compiler's Gaussian model of
    the nuisance) up to the probability of that prediction leaving the band, which is measured by
    Monte Carlo, not bounded. Monotone in harm: *not proved* (below the cap the centre is the learned
    prediction, a nonlinear function of past scores); the hypothesis property test of
    ``tests/test_family_a_monotone.py`` has found no counterexample.

    **Mixture (``nuisance="mixture"``, opt-in since 0.5.0).** The "shifted since start" e-process is the
    Gaussian likelihood ratio with the level nuisances (cell centres' errors, global offset) integrated
    out under their prior and the shift averaged over ``DELTAS``
    (:mod:`~deploysignal.detectors._nuisance_mixture` states the construction): its log is linear in
    the scores with nonnegative data-free coefficients, so it is nondecreasing in a harmful shift of a
    one-sided signal **by construction** (not for two-sided signals, whose two channels move in
    opposite directions). Its validity is **approximate, not proved**: it would be a martingale if the
    scores were exactly the compiler's Gaussian model, but the one-sample score (clipped below at
    ``-C_LO``, recentred, divided by its sd of about 0.98) has a heavier right tail, and the per-tick
    factor on that law is above 1 (1.0011, 1.0071, 1.0401 at shifts 0.4, 0.8, 1.6 sd; computed exactly
    in ``tests/test_family_a_mixture_factor.py``); its false-alarm rate is measured (docs/one-sample.md),
    and it is exposed to innovation variance above 1 and autocorrelation left in the scores, which the
    band is not. Its evidence for a persistent shift is capped near ``Delta^2 / (2 v_g)`` nats, ``v_g``
    including ``drift_allowance`` squared. The "changed at an unknown time"
    e-process is the band's e-SR (above). Alpha: 20% of alpha_A for the band event (the AR-error band,
    which both use, and the level band of the e-SR), the rest split evenly between the mixture
    (threshold ``2/alpha_e``) and the e-SR (``2H/alpha_e``). Where the band's monotonicity condition
    fails, :meth:`not_monotone` names the channels (the AR-error term), as with the band. The audit's
    ``log_msprt`` component carries the mixture's log-likelihood ratio in this mode.

    **Learned (``nuisance="learned"``, the default, 0.4.0's treatment).** What follows describes it;
    it centres each bet on the nuisance's posterior mean *learnt from the canary*, which explains part
    of any harmful shift as nuisance, and all of a gross one (issue 22: family A alone extends on p99
    x10), so its evidence is **not** monotone in harm; it detects moderate shifts far sooner than the
    band. Early proceed (below) uses this predictor in both modes.

    Each signal contributes one *channel* per harmful direction (two for ``both`` signals). For a
    channel, the score of tick :math:`i` in calibration cell :math:`c` is

    .. math:: x_i = \mathrm{clip}(s\, z_i, -C_{lo}, C_{hi}) / \hat\sigma_\psi - \hat m_c ,

    where :math:`z_i` is the prewhitened, standardised innovation and :math:`\hat m_c` the baseline
    mean of the clipped score in cell :math:`c`. The estimate :math:`\hat m_c` carries error
    :math:`b_c \sim N(0, v_c)` (``v_c = 1/n_eff``, recorded by the compiler); under the null the canary
    score has conditional mean :math:`b_c`, which is predicted from past canary ticks by the Gaussian
    posterior :math:`\hat b_{c,i-1} = S_c / (v_c^{-1} + N_c)` plus the posterior mean of a global level
    offset :math:`g \sim N(0, v_g)` shared by all cells, :math:`v_g` = the compiler's between-day
    variance of the level (``day_bias_var``: canary day against baseline days) + ``drift_allowance``
    squared. With :math:`B_i = C_{lo}/\hat\sigma_\psi + \hat m_c + \hat b_{c,i-1}`, the
    centred score :math:`\xi_i = (x_i - \hat b_{c,i-1})/B_i \ge -1`. For a betting fraction
    :math:`\gamma \in [0, 1)` the increment

    .. math:: f_i(\gamma) = 1 + \gamma\, \xi_i > 0, \qquad E[f_i(\gamma) \mid \mathcal F_{i-1}] = 1
              \text{ under the null,}

    so :math:`\prod_i f_i(\gamma)` is a test martingale (testing by betting; Waudby-Smith & Ramdas
    2023). It dominates the empirical-Bernstein supermartingale
    :math:`\exp\{\gamma\xi - \psi_E(\gamma)\xi^2\}` (Fan et al. 2015), so it is at least as powerful.

    The prewhitening uses an estimate :math:`\hat\phi` whose error :math:`\phi - \hat\phi \sim N(0,
    se_\phi^2)` (recorded by the compiler) leaves :math:`(\phi - \hat\phi)\, \ell_{i}` in each
    innovation, :math:`\ell_i` being the previous de-seasonalised level in innovation units. The
    predicted mean therefore adds :math:`\hat\beta_{i-1} r_i` with :math:`r_i = s\,\ell_i/\hat\sigma_\psi`
    and :math:`\hat\beta` the Gaussian posterior mean of a regression of past centred scores on
    :math:`r` (prior variance :math:`se_\phi^2`); the cell bias and this term are updated coordinate-wise
    (an approximation to their joint posterior). The bounds :math:`B_i` include the whole predicted mean.

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
        given the past. No variance, symmetry or tail assumption is needed for that: the bets are
        bounded by the known lower bound of the clipped score, so heavy tails only cost power. The
        predicted bias is a Bayesian posterior mean, so the centring is exact **marginally over the
        draw of the baseline and of the canary's day** (not conditionally on one baseline) when (i) the
        error of each pooled cell mean is Gaussian with variance ``v_c`` (CLT; pooled cells add the
        compiler's upper bound on the between-cell variance), (ii) the canary's level offset against
        the baseline is Gaussian with the compiled between-day variance (stationary day-to-day
        variation; a baseline of a single day cannot measure it and records 0, and a trend that did not
        occur in the baseline is outside the null), (iii) the prewhitened innovations are uncorrelated
        with the past (AR(1) adequacy; missing ticks are bridged by g-step innovations, see
        :class:`~deploysignal.gate.Standardizer`). Estimation error in these variances affects the
        realised level; the Monte-Carlo tests measure it on iid, AR(1)+diurnal, Student-t(3), missing,
        bursty-missing, cell-wise-missing (where family A exceeds its share: 3.1% vs 2%), correlated
        and discrete-rate nulls; day effects are measured in docs/one-sample.md, not tested. **Two-sample mode** uses paired differences
        :math:`\mathrm{clip}((z^{canary}_i - z^{control}_i)/\sqrt 2, \pm 3)` with no baseline *level*
        term (the prewhitening still uses the compiled levels and :math:`\hat\phi`): the bound holds
        when the paired difference has conditional mean zero given the past, e.g. canary and control
        conditionally exchangeable (randomised request assignment) and paired at the same timestamps.

    Early proceed tests, per channel, :math:`H_0'`: the canary's scores are the null's plus a harm
    :math:`\delta \ge \tau` (``tau`` score sd), constant from the canary's first tick. Under the
    boundary :math:`\delta = \tau` the scores :math:`x_i - \tau` follow the null model, so their
    predicted mean :math:`\tilde b_{i-1}` is the same predictor (cell bias, global offset, AR-error
    regression) **fed with** :math:`x_j - \tau`, and :math:`\xi'_i = (\tau + \tilde b_{i-1} -
    x_i)/B'_i` with :math:`B'_i = C_{hi}/\hat\sigma_\psi - \hat m_c - \tau - \tilde b_{i-1}` has
    conditional mean 0 (marginally, as above). The predictor is linear in its inputs, so for
    :math:`\delta > \tau` the mean is :math:`-(\delta - \tau)(1 - a_i)` with :math:`a_i` the
    predictor's response to a constant unit input: :math:`a_i \in [0, 1]` exactly for the cell-bias and
    offset terms, and approximately once the AR-error regression is included (a level step also moves
    the lag regressor; the regression's prior precision :math:`1/se_\phi^2` keeps its share small). So
    :math:`\prod_i (1 + \gamma \xi'_i)` is a test supermartingale; its average over ``GAMMAS``
    crossing :math:`1/\alpha_{proceed}` rejects, and rejecting for every channel gives (Ville,
    intersection-union, no multiplicity correction) :math:`P(\text{proceed while some channel's
    harm} \ge \tau) \le \alpha_{proceed}`. Not covered: a harm that changes over time (a growing
    ramp, or a large harm that shrinks to :math:`\tau`: the predictor has absorbed the earlier excess).
    Before 0.4.0 the predictor was fed with :math:`x_j`, absorbing part of a harmful shift: 6.6% early
    proceeds at a harm of :math:`\tau` against a 1% budget. In one-sample mode the priors limit the
    evidence a good canary can show: a level :math:`d` below :math:`\tau` is partly explained as a
    negative cell bias (prior variance ``v_c``, renewed in every cell the canary enters) or day offset
    (``v_g``), so the test typically gains on the order of :math:`d^2 / (2 v)` nats per such term.

    Parameters
    ----------
    config : CompiledConfig or sequence of CompiledConfig
        One config, or several of one layout to evaluate ``P`` streams at once (all state arrays then
        carry a leading stream axis; see :meth:`step`).
    alpha : float
        Family A's share of the false-rollback budget.
    horizon : int
        Planned horizon ``H`` (ticks) for the e-SR threshold.
    two_sample : bool
    drift_allowance : float
        Standard deviation (score units) of a global baseline-to-canary drift treated as null, on top
        of the day-to-day drift the compiler measured in the baseline (0 = only that).
    tau : float
        Tolerated harmful shift (score sd units) for early proceed.
    alpha_proceed : float
        Error budget of early proceed (taken from the reserve, not from alpha).
    nuisance : {"learned", "band", "capped", "mixture"}
        How the rollback test treats the nuisance terms (above); ``learned`` is the default.

    References
    ----------
    Robbins (1970); Johari, Pekelis, Walsh (2017) always-valid A/B testing; Howard, Ramdas, McAuliffe,
    Sekhon (2021) time-uniform confidence sequences; Fan, Grama, Liu (2015) exponential inequalities for
    martingales; Waudby-Smith & Ramdas (2023) estimating means of bounded random variables by betting;
    Shin, Ramdas, Rinaldo (2022) e-detectors; Roberts (1966), Shiryaev (1963).

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
        config: CompiledConfig | Sequence[CompiledConfig],
        *,
        alpha: float,
        horizon: int,
        two_sample: bool = False,
        drift_allowance: float = 0.0,
        tau: float = 0.3,
        alpha_proceed: float = 0.01,
        nuisance: str = "learned",
        drivers_rule: int = DRIVERS_RULE,
    ) -> None:
        if nuisance not in NUISANCE_MODES:
            raise ValueError(f"nuisance must be one of {', '.join(NUISANCE_MODES)}, got {nuisance!r}")
        self.nuisance = nuisance
        if drivers_rule not in (1, 2):
            raise ValueError(f"drivers_rule must be 1 or 2, got {drivers_rule!r}")
        #: how a fire names its drivers (:mod:`deploysignal.detectors._drivers`; 1 = before issue 25)
        self.drivers_rule = int(drivers_rule)
        self.alpha = alpha
        self.horizon = int(horizon)
        self.two_sample = bool(two_sample)
        self.drift_allowance = float(drift_allowance)
        self.tau = float(tau)
        self.alpha_proceed = float(alpha_proceed)
        if self.horizon < 1:
            raise ValueError("horizon must be >= 1")
        first = config if isinstance(config, CompiledConfig) else config[0]
        arr = stack_arrays(config)
        self._k = k = len(first.signals)
        two = arr["two_sided"]
        self._sig = np.concatenate([np.arange(k), np.flatnonzero(two)]).astype(np.int64)
        self._dir = np.concatenate([np.zeros(k, dtype=int), np.ones(int(two.sum()), dtype=int)])
        self._sign = np.where(self._dir == 0, 1.0, -1.0)
        self._m = m = self._sig.size
        self._names = tuple(
            first.signals[s].name + ("" if not two[s] else ("+" if d == 0 else "-")) for s, d in zip(self._sig, self._dir)
        )
        per_signal = np.bincount(self._sig, minlength=k)[self._sig]
        self._logw = (np.log(1.0 / (k * per_signal))[:, None] - math.log(GAMMAS.size)) * np.ones((1, GAMMAS.size))  # (m, G)
        self._sd = np.ascontiguousarray(arr["score_sd"][:, self._dir, self._sig], dtype=float)  # (P, m)
        self._center = np.ascontiguousarray(np.moveaxis(arr["cell_center"][:, self._dir, :, self._sig], 0, -1), dtype=float)  # (P, cells, m)
        self._bias_var = np.ascontiguousarray(np.maximum(np.moveaxis(arr["cell_bias_var"][:, self._dir, :, self._sig], 0, -1), 1e-12))
        self._phi_var = np.ascontiguousarray(np.maximum(arr["phi_se"][:, self._sig] ** 2, 1e-12))  # (P, m)
        # prior variance of the global (day-to-day) level offset: the compiled between-day variance plus
        # the operator's drift allowance; 1/0 = inf switches the global term off
        g2 = arr["day_bias_var"][:, self._dir, self._sig] + self.drift_allowance**2  # (P, m)
        self._inv_g2 = np.ascontiguousarray(np.where(g2 > 0, 1.0 / np.where(g2 > 0, g2, 1.0), np.inf))
        self._P = self._sd.shape[0]
        self._band = nuisance_band(
            self._bias_var, g2, arr["phi"][:, self._sig], arr["phi_se"][:, self._sig], self._sd, alpha=alpha, horizon=self.horizon,
            two_sample=self.two_sample, c_hi=C_HI, c_pair=C_PAIR,
        )
        #: the e-processes' own level: all of alpha (learned) or what the band event leaves (band)
        alpha_e = alpha if nuisance == "learned" else alpha * (1.0 - BAND_SHARE)
        self._log_thr = log_threshold(alpha)
        self._log_thr_w = log_threshold(alpha_e / 2)
        self._log_thr_r = log_threshold(alpha_e / 2) + math.log(self.horizon)
        self._log_thr_p = log_threshold(alpha_proceed)
        self._mix = nuisance == "mixture"
        if self._mix:
            # the band's own mSPRT is replaced by the mixture (threshold 2/alpha_e); the kernel's band run
            # still computes it, with a threshold it can never reach
            self._log_thr_m, self._log_thr_w = self._log_thr_w, math.inf
            self._ARRAYS = FamilyA._ARRAYS + self._MIX_ARRAYS
        self._reset()

    def _reset(self) -> None:
        P, n_cells, m = self._center.shape
        G = GAMMAS.size
        self._S = np.zeros((P, n_cells, m))
        self._N = np.zeros((P, n_cells, m))
        self._U = np.zeros((P, m))
        self._A = np.zeros((P, m))
        self._logW = np.zeros((P, m, G))
        self._logR = np.full((P, m, G), -np.inf)
        self._logP = np.zeros((P, m, G))
        self._n_obs = np.zeros((P, m))
        self._ticks = np.zeros(P)  # ticks since the start: the e-SR statistic's null mean (drivers, rule 2)
        self._Qzr = np.zeros((P, m))
        self._Qrr = np.zeros((P, m))
        self._S2 = np.zeros((P, n_cells, m))  # the predictor's sums under early proceed's boundary null
        self._U2 = np.zeros((P, m))
        self._Qzr2 = np.zeros((P, m))
        if self._mix:
            self._Sm, self._Nm = np.zeros((P, n_cells, m)), np.zeros((P, n_cells, m))
            self._Um, self._Am = np.zeros((P, m)), np.zeros((P, m))
        self._fired = np.zeros(P, dtype=bool)
        self._fire_reason = ""
        self._fire_drivers: tuple[str, ...] = ()
        self._derived()

    # ------------------------------------------------------------------ core
    def step(
        self, z: np.ndarray, cell: int, control_z: np.ndarray | None = None, lag: np.ndarray | None = None, control_lag: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``P`` streams by one tick (``z``: (P, k)); return log-wealth (P,) and fired (P,).

        Each stream's statistic depends only on its own past: the predicted mean, the bounds and the
        bets used at this tick are computed before the tick's score enters the state (predictability).
        The posteriors see the tick only after it has been scored: the AR-error regression on the part
        not explained by the cell bias, the cell bias on the part not explained by the regression
        (compiled kernel :func:`~deploysignal.detectors._kernels.family_a_step`).
        """
        cell = check_cell(cell, self._center.shape[1])
        z, cz, lg, clg, has_lag = self._rows(z, control_z, lag, control_lag, self._P)
        log_wealth, log_w, log_r = np.empty(self._P), np.empty(self._P), np.empty(self._P)
        family_a_step(z, cz, lg, clg, has_lag, self.two_sample, cell, *self._kernel_args(), log_wealth, log_w, log_r, self._harm)
        if self._mix:
            mixture_step(z, cz, lg, clg, has_lag, self.two_sample, cell, *self._mix_args(), log_w)
            log_wealth = np.maximum(log_wealth, log_w - self._log_thr_m + self._log_thr)
        self._last = (log_w, log_r)
        self._ticks += 1.0
        newly = ~self._fired & (log_wealth >= self._log_thr)
        if newly.any() and self._P == 1:
            self._explain(log_w[0] - (self._log_thr_m if self._mix else self._log_thr_w) >= log_r[0] - self._log_thr_r)
        self._fired |= newly
        return log_wealth, self._fired.copy()

    def _rows(
        self, z: np.ndarray, control_z: np.ndarray | None, lag: np.ndarray | None, control_lag: np.ndarray | None, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """Checked (n, k) inputs for a kernel (which does not bounds-check): ``z``, the control, the lag
        regressors (stand-ins where the kernel ignores them) and whether lags are used."""
        if self.two_sample and control_z is None:
            raise ValueError("two-sample family A needs control_z")
        shape = (n, self._k)
        z = as_rows(z, shape, "z")
        cz = z if control_z is None else as_rows(control_z, shape, "control_z")
        has_lag = lag is not None and (control_lag is not None or not self.two_sample)
        lg = as_rows(lag, shape, "lag") if has_lag else z
        clg = as_rows(control_lag, shape, "control_lag") if has_lag and self.two_sample else lg
        return z, cz, lg, clg, has_lag

    def _mix_args(self) -> tuple[Any, ...]:
        """Parameters and state of the mixture kernel (:func:`~deploysignal.detectors._nuisance_mixture.mixture_step`)."""
        return (
            self._sig, self._sign, C_LO, C_HI, C_PAIR, self._sd, self._center, self._bias_var, self._inv_g2, self._band.k_phi,
            self._band.r_cap, DELTAS, np.ascontiguousarray(self._logw[:, 0] + math.log(GAMMAS.size)), self._Sm, self._Nm, self._Um, self._Am,
        )

    def _kernel_args(self) -> tuple[Any, ...]:
        """Parameters and state arrays, in the order of :func:`family_a_step` after the tick's cell."""
        return (
            self._sig, self._sign, C_LO, C_HI, C_PAIR, GAMMAS, self.tau, self._sd, self._center, self._bias_var, self._phi_var,
            self._inv_g2, self._logw, self._log_thr, self._log_thr_w, self._log_thr_r, self._log_thr_p,
            1 if self._mix else NUISANCE_MODES.index(self.nuisance), self._band.a_lvl, self._band.tail, self._band.k_phi, self._band.r_cap, BET_TOP,
            self._S, self._N, self._U, self._A, self._logW, self._logR, self._logP, self._n_obs, self._Qzr, self._Qrr,
            self._S2, self._U2, self._Qzr2,
        )

    #: names of the two components :meth:`run` reports per tick (columns 2 and 3 of its output)
    COMPONENTS = ("log_msprt", "log_esr")

    def run(
        self, z: np.ndarray, cells: np.ndarray, control_z: np.ndarray | None = None, lag: np.ndarray | None = None,
        control_lag: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance a single stream over ``T`` ticks (``z``: (T, k), ``cells``: (T,)), as ``T`` calls of
        :meth:`step` would (same kernel, same order, same explanations of a fire).

        Returns ``out`` (T, 4): log-wealth, statistic (log e-SR - log H), log mSPRT, log e-SR after each
        tick; ``fired`` (T,) (sticky); ``harm`` (T,): early-proceed test rejected for every channel.
        """
        if self._P != 1:
            raise ValueError("run() advances a single stream; use step() for several")
        T = np.shape(z)[0]
        z, cz, lg, clg, has_lag = self._rows(z, control_z, lag, control_lag, T)
        cells = check_cells(cells, T, self._center.shape[1])
        out, fired, harm = np.empty((T, 4)), np.empty(T, dtype=bool), np.empty(T, dtype=bool)
        if self._mix:  # two kernels per tick: stepped from Python (microseconds per tick)
            log_h = math.log(self.horizon)
            for t in range(T):
                lw, f = self.step(z[t:t + 1], int(cells[t]), cz[t:t + 1], lg[t:t + 1] if has_lag else None, clg[t:t + 1] if has_lag else None)
                out[t] = (lw[0], self._last[1][0] - log_h, self._last[0][0], self._last[1][0])
                fired[t], harm[t] = f[0], bool(self._harm[0].all())
            return out, fired, harm
        args = self._kernel_args()
        start, ticks = 0, float(self._ticks[0])
        while start < T:
            start, newly = family_a_run(
                z, cz, lg, clg, has_lag, self.two_sample, cells, *args, self._harm, self._fired, math.log(self.horizon), start, out, fired, harm,
            )
            if newly:
                t = start - 1
                self._ticks[0] = ticks + t + 1
                self._explain(out[t, 2] - self._log_thr_w >= out[t, 3] - self._log_thr_r)
        self._ticks[0] = ticks + T
        if T:
            self._last = (out[T - 1 :, 2].copy(), out[T - 1 :, 3].copy())
        return out, fired, harm

    def _log_components(self) -> tuple[np.ndarray, np.ndarray]:
        lw = self._logw
        log_w = np.logaddexp.reduce((self._logW + lw).reshape(self._P, -1), axis=1)
        log_r = np.logaddexp.reduce((self._logR + lw).reshape(self._P, -1), axis=1)
        return log_w, log_r

    def _explain(self, use_w: bool) -> None:
        which = "mSPRT (shift since start)" if use_w else "e-SR (change at an unknown time)"
        contrib = np.logaddexp.reduce((self._logW[0] if use_w else self._logR[0]) + self._logw, axis=1)
        if use_w and self._mix:
            which = "mixture over the nuisance (shift since start)"
            contrib = mixture_log_lr(self._Um, self._Am, self._inv_g2, self.two_sample)[0]
        more = 0
        if self.drivers_rule == 1:
            order = np.argsort(-contrib, kind="stable")
            self._fire_drivers = tuple(self._names[i] for i in order[:3])
        else:  # rule 2: each channel's own e-value at least LEVEL (module _drivers)
            if use_w and self._mix:
                own = contrib  # the channel's mixture likelihood ratio
            else:  # its wealth over its prior weight; e-SR: also over its null mean, the ticks since the start
                own = contrib - np.logaddexp.reduce(self._logw, axis=1) - (0.0 if use_w else math.log(max(self._ticks[0], 1.0)))
            self._fire_drivers, more = supported_drivers(self._names, own, most=MOST)
        named = ", ".join(self._fire_drivers) + (f" (and {more} more)" if more else "")
        self._fire_reason = f"{which} crossed its bound; driven by {named or 'no single channel'}"

    def update(self, obs: Observation) -> Evidence:
        """Add one tick of a single stream; return the family's evidence (fires are sticky)."""
        cz = None if obs.control_z is None else obs.control_z[None]
        lag = None if obs.lag is None else obs.lag[None]
        clag = None if obs.control_lag is None else obs.control_lag[None]
        log_wealth, fired = self.step(obs.z[None], obs.cell, cz, lag, clag)
        return Evidence(
            family="A",
            statistic=float(self._last[1][0]) - math.log(self.horizon),
            log_wealth=float(log_wealth[0]),
            log_threshold=self._log_thr,
            fired=bool(fired[0]),
            reason=self._fire_reason if fired[0] else "",
            drivers=self._fire_drivers if fired[0] else (),
        )

    # ------------------------------------------------------------------ early proceed, explanation
    def harm_excluded(self) -> np.ndarray:
        """Per stream and channel (P, m): has the e-process for 'harmful shift >= tau' crossed its bound?"""
        return self._harm.copy()

    def _derived(self) -> None:
        """Quantities the kernel updates every tick, recomputed from the state (after a reset or a load)."""
        self._harm = np.logaddexp.reduce(self._logP, axis=-1) - math.log(GAMMAS.size) >= self._log_thr_p
        self._last = self._log_components()

    def channel_names(self) -> tuple[str, ...]:
        return self._names

    def not_monotone(self) -> tuple[str, ...]:
        """Channels (of the first stream) whose rollback evidence is not guaranteed nondecreasing in a
        harmful shift: the AR-error band outgrows the score's response to a step (``phi`` near 1 and a
        short baseline; see :func:`~deploysignal.detectors._nuisance_band.nuisance_band`). Every
        channel in ``learned`` and ``capped`` modes, which make no such guarantee (issue 22; ``capped``
        is monotone in the property test, not by proof)."""
        if self.nuisance not in ("band", "mixture"):
            return self._names
        return tuple(n for n, ok in zip(self._names, self._band.monotone[0]) if not ok)

    def components(self) -> dict[str, float]:
        """Log-wealth of the two e-processes of a single stream (for audit records)."""
        log_w, log_r = self._last
        return {"log_msprt": float(log_w[0]), "log_esr": float(log_r[0])}

    # ------------------------------------------------------------------ state
    _ARRAYS = ("S", "N", "U", "A", "logW", "logR", "logP", "n_obs", "Qzr", "Qrr", "S2", "U2", "Qzr2")
    #: early proceed's predictor (0.4.0); a state saved before has none
    _PROCEED_ARRAYS = ("S2", "U2", "Qzr2")
    #: the mixture's sums (``nuisance="mixture"`` only)
    _MIX_ARRAYS = ("Sm", "Nm", "Um", "Am")

    def state(self) -> dict[str, Any]:
        """Exact JSON-serialisable state (``-inf`` written as ``None``)."""
        st: dict[str, Any] = {name: _finite_or_none(getattr(self, "_" + name)) for name in self._ARRAYS}
        st.update(fired=self._fired.tolist(), reason=self._fire_reason, drivers=list(self._fire_drivers))
        if self.drivers_rule != 1:  # the tick count is read by rule 2 only (rule 1's states keep their keys)
            st["ticks"] = self._ticks.tolist()
        return st

    def load_state(self, st: dict[str, Any]) -> FamilyA:
        """Restore a :meth:`state`. A state saved before 0.4.0 has no early-proceed predictor (its proceed
        test centred on the null's predictor and could proceed with harm >= tau more often than
        ``alpha_proceed``): that test is switched off for the rest of the run (its predictor is NaN and
        its e-process 0, so it never rejects and the gate proceeds only at the end of the window); the
        rollback tests continue exactly."""
        present = [name in st for name in self._PROCEED_ARRAYS]
        if any(present) and not all(present):
            missing = [n for n, p in zip(self._PROCEED_ARRAYS, present) if not p]
            raise ValueError(f"family A state has part of the early-proceed predictor: {', '.join(missing)} missing")
        if not any(present):
            st = {**st, "logP": np.zeros_like(self._logP).tolist()}
            st.update({name: None for name in self._PROCEED_ARRAYS})
        for name in self._ARRAYS:
            fill = -np.inf if name == "logR" else np.nan
            if st[name] is None and name in self._PROCEED_ARRAYS:
                setattr(self, "_" + name, np.full(getattr(self, "_" + name).shape, np.nan))
                continue
            arr = np.array(_none_to(st[name], fill), dtype=float)
            if arr.shape != getattr(self, "_" + name).shape:
                raise ValueError(f"state array {name} has shape {arr.shape}, expected {getattr(self, '_' + name).shape}")
            setattr(self, "_" + name, arr)
        self._fired = np.array(st["fired"], dtype=bool)
        self._fire_reason = st["reason"]
        self._fire_drivers = tuple(st["drivers"])
        # a state saved before the tick count (issue 25) counts at least the observed ticks
        self._ticks = np.array(st["ticks"], dtype=float) if "ticks" in st else self._n_obs.max(axis=1, initial=0.0)
        self._derived()
        return self


def _finite_or_none(a: np.ndarray) -> Any:
    """Nested lists of Python numbers with every non-finite entry as None (one pass in numpy)."""
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _none_to(v: Any, fill: float) -> Any:
    if isinstance(v, list):
        return [_none_to(x, fill) for x in v]
    return fill if v is None else v
