"""Kayenta's NetflixACAJudge (Spinnaker automated canary analysis), transcribed as a baseline.

What is transcribed, from spinnaker/kayenta (``kayenta-judge``, ``kayenta-mannwhitney``):

* **Preprocessing** (``NetflixACAJudge.transformMetric``) as configured per metric with
  ``nanStrategy: remove`` and ``outliers: {strategy: remove}`` (Kayenta's defaults are ``none`` for
  both, which replaces NaNs by 0 and keeps outliers): NaNs removed, then outliers removed by
  ``IQRDetector(factor=3.0, reduceSensitivity=true)``: a value is an outlier outside
  ``[min(Q1 - 3 IQR, P1), max(Q3 + 3 IQR, P99)]``.
* **Metric classification** (``MannWhitneyClassifier(tolerance=0.25, confLevel=0.98)``): the asymptotic
  two-sample Wilcoxon confidence interval of R's ``wilcox.test`` (continuity-corrected, tie-corrected
  variance), found by root-finding on the standardised rank-sum as in ``MannWhitney.scala``; the metric is
  *High* when the lower interval end exceeds ``tolerance * |estimate|`` and the effect size (mean ratio
  canary/baseline) is at least ``allowed_increase``; *Low* symmetrically; otherwise *Pass*. The metric's
  direction (``increase``/``decrease``/``either``) is configured from the signal's direction of harm,
  as a Kayenta user would.
* **Scoring** (``WeightedSumScorer``, one group): 0 when 50% or more of the metrics are *Nodata*
  (``tooManyNodata``), else ``score = 100 * #Pass / #(Pass + High + Low)`` rounded to two decimals;
  ``ThresholdScoreClassifier(pass=95, marginal=75)``. The effect size is Kayenta's ``meanRatio``: NaN
  when either mean is 0, in which case the effect-size condition is skipped.
* **Canary stage** (Spinnaker): a judgement every ``interval`` ticks over a *growing* lookback (all canary
  data so far), compared with the baseline over the same ticks (the live control in two-sample mode; the
  baseline one day earlier otherwise). Any interim score below *marginal* fails the canary at once; the
  last run must score at least *pass*, otherwise the canary fails at the end of the window.

One deliberate departure: when both samples are constant (and differ), Kayenta adds Gaussian noise of sd
``1e-5 * value`` before testing; here the classification is decided directly from the two constants
(the outcome Kayenta reaches with overwhelming probability), keeping the baseline deterministic.

No error rate is guaranteed: each metric test runs at 98% confidence, repeated over intervals and metrics,
and the score thresholds are heuristics.

References
----------
spinnaker/kayenta, ``NetflixACAJudge.scala``, ``MannWhitneyClassifier.scala``, ``MannWhitney.scala``,
``IQRDetector.scala``, ``WeightedSumScorer.scala``, ``ThresholdScoreClassifier.scala``.
R Core Team, ``wilcox.test`` (stats package), asymptotic confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from ..telemetry import Frame
from ._method import MethodResult, harm_signs, reference_values

__all__ = ["KayentaJudge", "classify_metric", "iqr_outliers", "mann_whitney_interval"]


def iqr_outliers(values: np.ndarray, factor: float = 3.0, reduce_sensitivity: bool = True) -> np.ndarray:
    """Boolean mask of outliers per Kayenta's ``IQRDetector``."""
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    p25, p75 = np.percentile(values, [25, 75])
    iqr = p75 - p25
    lo, hi = p25 - factor * iqr, p75 + factor * iqr
    if reduce_sensitivity:
        p01, p99 = np.percentile(values, [1, 99])
        lo, hi = min(lo, p01), max(hi, p99)
    return (values < lo) | (values > hi)


def _tie_sum(a_sorted: np.ndarray) -> float:
    r""":math:`\sum (t^3 - t)` over the groups of equal values of a sorted array."""
    if a_sorted.size < 2:
        return 0.0
    edges = np.flatnonzero(a_sorted[1:] != a_sorted[:-1]) + 1
    counts = np.diff(np.concatenate(([0], edges, [a_sorted.size]))).astype(float)
    return float(np.sum(counts**3 - counts))


def _rank_stat(x_sorted: np.ndarray, y_sorted: np.ndarray, mu: float, y_ties: float) -> tuple[float, float]:
    """Centred rank sum of ``x - mu`` among ``(x - mu, y)`` and the tie-corrected sd (``y_ties``: the tie
    sum of ``y`` alone). ``x - mu`` stays sorted, so its ties are adjacent; the pooled tie sum is the two
    samples' own sums unless a value of ``x - mu`` equals one of ``y`` (then it is recounted)."""
    nx, ny = x_sorted.size, y_sorted.size
    xs = x_sorted - mu
    less = np.searchsorted(y_sorted, xs, side="left")
    leq = np.searchsorted(y_sorted, xs, side="right")
    cross = int((leq - less).sum())
    # rank sum of x in the pooled sample minus nx(nx+1)/2 = #(x > y) + 0.5 #(x == y)
    dz = float(less.sum() + 0.5 * cross) - nx * ny / 2.0
    if cross:
        _, counts = np.unique(np.concatenate([xs, y_sorted]), return_counts=True)
        ties = float(np.sum(counts.astype(float) ** 3 - counts))
    else:
        ties = _tie_sum(xs) + y_ties
    n = nx + ny
    sigma = math.sqrt(nx * ny / 12.0 * ((n + 1) - ties / (n * (n - 1))))
    return dz, sigma


def mann_whitney_interval(experiment: np.ndarray, control: np.ndarray, conf_level: float = 0.98) -> tuple[float, float, float]:
    """Asymptotic Wilcoxon interval and estimate for the shift ``experiment - control``.

    Transcribes ``MannWhitney.calculateConfidenceInterval`` (itself R's ``wilcox.test`` asymptotic branch
    with ``correct=TRUE``): the interval ends solve

    .. math:: \\frac{W(\\mu) - n_x n_y/2 - \\tfrac12\\operatorname{sign}(\\cdot)}{\\sigma(\\mu)} = \\pm z_{1-\\alpha/2}

    where :math:`W(\\mu)` is the Mann-Whitney count of ``experiment - mu`` against ``control``; the estimate
    solves it with right-hand side 0.

    Returns
    -------
    (lower, upper, estimate)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lo, hi, est = mann_whitney_interval(rng.normal(1.0, 1, 200), rng.normal(0.0, 1, 200))
    >>> bool(lo < 1.0 < hi), bool(0.7 < est < 1.3)
    (True, True)
    """
    x = np.sort(np.asarray(experiment, dtype=float))
    y = np.sort(np.asarray(control, dtype=float))
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    mu_min, mu_max = float(x.min() - y.max()), float(x.max() - y.min())

    y_ties = _tie_sum(y)

    def f(mu: float, q: float) -> float:
        dz, sigma = _rank_stat(x, y, mu, y_ties)
        if sigma == 0:
            raise ValueError("cannot compute confidence interval when all observations are tied")
        corr = 0.0 if dz == 0 else math.copysign(0.5, dz)
        return (dz - corr) / sigma - q

    tol = max(1e-12, 1e-9 * (mu_max - mu_min))

    def root(q: float) -> float:
        if f(mu_min, q) <= 0:
            return mu_min
        if f(mu_max, q) >= 0:
            return mu_max
        return float(optimize.brentq(f, mu_min, mu_max, args=(q,), xtol=tol))

    z = float(stats.norm.ppf((1.0 - conf_level) / 2.0))
    return root(-z), root(z), root(0.0)


def classify_metric(
    experiment: np.ndarray,
    control: np.ndarray,
    direction: str,
    *,
    tolerance: float = 0.25,
    conf_level: float = 0.98,
    allowed_increase: float = 1.0,
    allowed_decrease: float = 1.0,
) -> str:
    """Kayenta's per-metric classification: ``"Pass"``, ``"High"``, ``"Low"`` or ``"Nodata"``.

    ``direction`` is ``"increase"``, ``"decrease"`` or ``"either"`` (which deviations fail the metric).
    Inputs are the already preprocessed values (NaNs and outliers removed).
    """
    if experiment.size == 0 or control.size == 0:
        return "Nodata"
    if np.array_equal(np.sort(experiment), np.sort(control)):
        return "Pass"
    if np.unique(np.concatenate([experiment, control])).size == 1:
        return "Pass"
    if np.unique(experiment).size == 1 and np.unique(control).size == 1:
        return "High" if experiment[0] > control[0] and direction != "decrease" else (
            "Low" if experiment[0] < control[0] and direction != "increase" else "Pass"
        )
    lo, hi, est = mann_whitney_interval(experiment, control, conf_level)
    # EffectSizes.meanRatio: NaN when either mean is 0, and a NaN effect size skips the effect-size check
    cmean, emean = float(np.mean(control)), float(np.mean(experiment))
    deviation = math.nan if cmean == 0.0 or emean == 0.0 else emean / cmean
    crit = tolerance * abs(est)
    if direction in ("increase", "either") and lo > crit and (math.isnan(deviation) or deviation >= allowed_increase):
        return "High"
    if direction in ("decrease", "either") and hi < -crit and (math.isnan(deviation) or deviation <= allowed_decrease):
        return "Low"
    return "Pass"


@dataclass
class KayentaJudge:
    """Kayenta's judge run as a Spinnaker canary stage (see module docstring).

    Parameters
    ----------
    window : int
        Canary analysis lifetime in ticks; the last judgement is at its end.
    interval : int
        Ticks between judgements (growing lookback from the canary start).
    pass_score, marginal_score : float
        Score thresholds (Spinnaker defaults in the issue: 95 / 75).
    tolerance, conf_level, allowed_increase, allowed_decrease : float
        Classifier parameters (``NetflixACAJudge`` defaults: 0.25, 0.98, mean ratio 1.0 / 1.0).
    """

    window: int = 480
    interval: int = 60
    pass_score: float = 95.0
    marginal_score: float = 75.0
    tolerance: float = 0.25
    conf_level: float = 0.98
    allowed_increase: float = 1.0
    allowed_decrease: float = 1.0
    name: str = "kayenta"

    def score(self, experiment: np.ndarray, control: np.ndarray, directions: list[str]) -> float:
        """One judgement: columns are metrics; returns the summary score in [0, 100]."""
        labels = []
        for j, direction in enumerate(directions):
            e, c = experiment[:, j], control[:, j]
            e, c = e[~np.isnan(e)], c[~np.isnan(c)]
            e, c = e[~iqr_outliers(e)], c[~iqr_outliers(c)]
            try:
                labels.append(
                    classify_metric(
                        e, c, direction, tolerance=self.tolerance, conf_level=self.conf_level,
                        allowed_increase=self.allowed_increase, allowed_decrease=self.allowed_decrease,
                    )
                )
            except ValueError:
                labels.append("Error")
        # WeightedSumScorer: 50% or more Nodata metrics fail the run (score 0); else Pass / (Pass + High +
        # Low), rounded to two decimals (Precision.round)
        if labels and 100.0 * labels.count("Nodata") / len(labels) >= 50.0:
            return 0.0
        n_pass = labels.count("Pass")
        total = n_pass + labels.count("High") + labels.count("Low")
        return round(100.0 * n_pass / total, 2) if total else 0.0

    def judgements(self, baseline: Frame, canary: Frame, control: Frame | None = None, *, stop_below: float | None = None) -> list[tuple[int, float]]:
        """(end tick, score) of every judgement over a growing lookback, stopping after the first score
        below ``stop_below`` (no judgement after a failed interim run is ever looked at)."""
        signs = harm_signs(canary)
        directions = ["increase" if s > 0 else "decrease" if s < 0 else "either" for s in signs]
        ref = reference_values(baseline, canary, control)
        vals = canary.values
        last = min(len(canary), self.window)
        ends = list(range(self.interval, last + 1, self.interval))
        if not ends or ends[-1] != last:
            ends.append(last)
        out = []
        for end in ends:
            out.append((end, self.score(vals[:end], ref[:end], directions)))
            if stop_below is not None and out[-1][1] < stop_below:
                break
        return out

    def decide(self, judgements: list[tuple[int, float]], n: int) -> MethodResult:
        """The stage's verdict from the judgements: rollback at the first interim score below *marginal*,
        else at the end of the window when the last score is below *pass*, else proceed."""
        trace = np.full(n, np.nan)
        prev = 0
        last = min(n, self.window)
        for end, score in judgements:
            trace[prev:end] = score
            prev = end
            if score < self.marginal_score:
                return MethodResult(end - 1, "rollback", end - 1, trace, None, "Kayenta score")
        if last < self.window:  # stream ended before the analysis lifetime
            return MethodResult(None, "extend", None, trace, None, "Kayenta score")
        if judgements[-1][1] < self.pass_score:
            return MethodResult(last - 1, "rollback", last - 1, trace, None, "Kayenta score")
        return MethodResult(None, "proceed", last - 1, trace, None, "Kayenta score")

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult:
        return self.decide(self.judgements(baseline, canary, control, stop_below=self.marginal_score), len(canary))
