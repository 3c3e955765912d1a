r"""Backtest on the user's own history, and the certification of a one-sample config.

:func:`backtest` replays the gate over disjoint held-out windows of a healthy baseline with a rolling
origin: for each window, compile on every row before it, run the gate (one-sample mode, the given
settings) over the window, and count false rollbacks (the baseline is healthy by the user's
statement, so every rollback is false). Windows are ``window * (1 + max_extensions)`` ticks long (the
gate's whole horizon), placed back to back at the end of the baseline, each with at least
``min_train`` ticks before it.

Guarantee
---------
None by itself: it is an empirical check on few windows. It reports the rollback rate with a one-sided
99% Clopper-Pearson interval and *flags* the baseline when the lower bound exceeds alpha (the
binomial test of "rate <= alpha" rejects at 1%). With the default eight windows that needs three
rollbacks, so it catches gross failures (false-rollback rates of roughly 40% and more); the model
check (:func:`~deploysignal.calibration.model_check`) screens for the subtler ones. Windows share the
baseline's past, so they are not independent; the interval is a description, not a test with exact
level.

:func:`certify_baseline` compiles, backtests and stores the decision in the config
(:func:`~deploysignal.calibration.certificate`); :func:`certification_status` is what a gate run reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._exceptions import InputError
from ..calibration import CompiledConfig, certificate
from ..calibration._certificate import RECOMMENDATION
from ..telemetry import Frame
from ._gate import Gate
from ._settings import GateSettings

__all__ = ["BACKTEST_LEVEL", "backtest", "certification_status", "certify_baseline"]

#: level of the backtest's binomial test of "false-rollback rate <= alpha"
BACKTEST_LEVEL = 0.01


def _cp(k: int, n: int) -> tuple[float, float]:
    """One-sided 99% Clopper-Pearson lower and upper bounds of k/n."""
    from scipy.stats import beta  # seconds to import: only the backtest needs it, not a gate's start

    lo = 0.0 if k <= 0 else float(beta.ppf(BACKTEST_LEVEL, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - BACKTEST_LEVEL, k + 1, n - k))
    return lo, hi


def _slice(frame: Frame, rows: np.ndarray) -> Frame:
    return Frame(frame.timestamps[rows], frame.values[rows], frame.signals, None if frame.cohort is None else frame.cohort[rows], frame.specs)


def backtest(
    frame: Frame,
    settings: GateSettings | None = None,
    *,
    windows: int = 8,
    min_train: int | None = None,
    seed: int = 0,
    min_cell_samples: int = 40,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Rolling-origin backtest of the one-sample gate on a healthy baseline.

    Parameters
    ----------
    frame : Frame
        The healthy baseline (rows in time order per tier).
    settings : GateSettings
        Gate settings to replay (mode forced to one-sample, the run-time model check off:
        ``runtime_check=0``); default ``GateSettings()``. The run-time check watches for departures
        after the baseline, which a window cut from the baseline cannot contain; it can only hold a
        proceed, and a run where it never fires is the run without it, so the gate's false-rollback
        rate with the check is at most this backtest's plus the check's budget.
    windows : int
        At most this many held-out windows (the most recent ones); each costs one compile.
    min_train : int or None
        Distinct timestamps before the first window; default one day of ticks (at least 30 and
        ``2 * min_cell_samples``).
    seed, min_cell_samples
        Passed to :func:`~deploysignal.calibration.compile_baseline` for each training prefix.
    progress : callable, optional
        Called as ``progress("backtest", done, total)`` before the first window and after each (for a
        progress display; it does not change the result).

    Returns
    -------
    dict
        ``windows`` (number run), ``window_ticks``, ``rollbacks``, ``rate``, ``cp99_lower``,
        ``cp99_upper``, ``flagged`` (lower bound > alpha), ``families`` (per family: windows on which
        a fire of it counted toward the verdict, and its alpha share; B = rules), ``starts`` (first timestamp of each window) and ``reason``.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.telemetry import Frame
    >>> rng = np.random.default_rng(0)
    >>> f = Frame(np.arange(2400.0) * 60, rng.normal(size=(2400, 1)), ("a",))
    >>> r = backtest(f, GateSettings(window=240), windows=2)
    >>> (r["windows"], r["window_ticks"])
    (2, 480)
    """
    settings = (settings or GateSettings()).model_copy(update={"mode": "one-sample", "runtime_check": 0.0})  # see `settings`
    if windows < 0:
        raise InputError("backtest windows must be >= 0", column="windows")
    horizon = settings.window * (1 + settings.max_extensions)
    stamps = np.unique(frame.timestamps)
    tick = float(np.median(np.diff(stamps))) if stamps.size > 1 else 1.0
    if min_train is None:
        min_train = max(int(round(86400.0 / tick)), 30, 2 * min_cell_samples)
    fit = max(0, (stamps.size - min_train) // horizon)
    n_win = min(windows, fit)
    out: dict[str, Any] = {"windows": 0, "window_ticks": horizon, "min_train": int(min_train), "rollbacks": 0, "rate": None,
                           "cp99_lower": None, "cp99_upper": None, "flagged": False, "families": {}, "starts": []}
    if n_win == 0:
        out["reason"] = (f"no held-out window fits: {stamps.size} ticks, need {min_train} to train and {horizon} per window"
                         if windows else "backtest not requested (0 windows)")
        return out
    fired: dict[str, int] = {}
    rollbacks = 0
    if progress is not None:
        progress("backtest", 0, n_win)
    for i in range(n_win):
        lo_t = stamps[stamps.size - (n_win - i) * horizon]
        hi_t = stamps[stamps.size - (n_win - i - 1) * horizon - 1]
        train = np.flatnonzero(frame.timestamps < lo_t)
        test = np.flatnonzero((frame.timestamps >= lo_t) & (frame.timestamps <= hi_t))
        from ..calibration import compile_baseline  # scipy.stats, statsmodels: loaded by the commands that compile

        cfg = compile_baseline(_slice(frame, train), seed=seed, min_cell_samples=min_cell_samples, robust_covariance=False, check_model=False)
        gate = Gate(cfg, settings)
        # update_many (the live path's batch form) is ~10x faster than run_batch for a single stream
        decisions = gate.run(_slice(frame, test))
        rolled = bool(decisions and decisions[-1].verdict == "rollback")
        counted = {f for d in decisions for f in d.fired_families}
        ever = {f: f in counted for f in (*settings.shares, "B")}
        rollbacks += rolled
        for f, v in ever.items():
            fired[f] = fired.get(f, 0) + int(v)
        out["starts"].append(float(lo_t))
        if progress is not None:
            progress("backtest", i + 1, n_win)
    lo, hi = _cp(rollbacks, n_win)
    alpha = settings.alpha
    out.update(windows=n_win, rollbacks=rollbacks, rate=rollbacks / n_win, cp99_lower=lo, cp99_upper=hi, flagged=lo > alpha)
    out["families"] = {f: {"fired": k, "share": settings.shares.get(f)} for f, k in sorted(fired.items())}
    out["reason"] = (f"{rollbacks} of {n_win} held-out windows rolled back (rate {rollbacks / n_win:.0%}, 99% lower bound "
                     f"{lo:.1%} > alpha {alpha:g})" if lo > alpha else
                     f"{rollbacks} of {n_win} held-out windows rolled back (99% upper bound {hi:.0%}; few windows: a screen, not a proof)")
    return out


def certify_baseline(
    frame: Frame,
    settings: GateSettings | None = None,
    *,
    seed: int = 0,
    min_cell_samples: int = 40,
    robust_covariance: bool = True,
    windows: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
) -> CompiledConfig:
    """Compile ``frame``, run the model check and the backtest, and store the decision in the config.

    The config is certified for one-sample mode at ``settings`` (alpha, window, max_extensions and family
    A's ``a_nuisance`` treatment, which the backtest replays; the scope names ``a_nuisance`` only when it
    is not ``learned``, so default configs keep their bytes) when
    every model check ran and passed and the backtest ran at least one window without being flagged;
    otherwise uncertified, with the reasons (see :mod:`deploysignal.calibration._certificate`). The
    result is deterministic (same frame, settings and seed -> same bytes). ``progress`` is called as
    ``progress(stage, done, total)``: stage ``"compile"`` (compile and model check, 0 then 1 of 1), then
    :func:`backtest`'s; it does not change the result.

    Returns
    -------
    CompiledConfig
        With ``certification`` filled; its ``version_id`` covers it.
    """
    settings = settings or GateSettings()
    from ..calibration import compile_baseline

    if progress is not None:
        progress("compile", 0, 1)
    cfg = compile_baseline(frame, seed=seed, min_cell_samples=min_cell_samples, robust_covariance=robust_covariance)
    if progress is not None:
        progress("compile", 1, 1)
    checks = cfg.certification["checks"] if cfg.certification else []
    bt = backtest(frame, settings, windows=windows, seed=seed, min_cell_samples=min_cell_samples, progress=progress)
    payload = cfg.model_dump(mode="json")
    payload["certification"] = certificate(checks, bt, _scope(settings))
    payload["version_id"] = CompiledConfig.content_id(payload)
    return CompiledConfig.model_validate(payload)


def _scope(settings: GateSettings) -> dict[str, Any]:
    """The settings a certificate holds for. ``a_nuisance`` is named only when it is not ``learned``: a
    scope without it (every config certified before 0.5.0's treatments, and every default one) was
    backtested with ``learned``."""
    scope: dict[str, Any] = {"alpha": settings.alpha, "window": settings.window, "max_extensions": settings.max_extensions}
    if settings.a_nuisance != "learned":
        scope["a_nuisance"] = settings.a_nuisance
    return scope


def _not_monotone(config: CompiledConfig, settings: GateSettings) -> tuple[str, ...]:
    """Family A's channels whose band test is not guaranteed monotone in harm (issue 22; empty when
    family A does not run or runs 0.4.0's learned centring, which :class:`GateSettings` documents)."""
    share = settings.shares.get("A")
    if share is None or settings.a_nuisance not in ("band", "mixture"):
        return ()
    from ..detectors import FamilyA

    fam = FamilyA(config, alpha=share * settings.alpha, horizon=settings.horizon, two_sample=settings.mode == "two-sample",
                  drift_allowance=settings.drift_allowance, nuisance=settings.a_nuisance)
    return fam.not_monotone()


def certification_status(config: CompiledConfig, settings: GateSettings) -> dict[str, Any]:
    """What a gate run says about its model: ``certified``, ``reasons`` and ``basis``.

    ``basis`` is ``"one-sample, model checked"`` or ``"one-sample, uncertified"`` in one-sample mode,
    ``"two-sample"`` otherwise (the certificate concerns the one-sample model; it is still reported).
    A certificate holds only for the settings it was backtested with (alpha, window, max_extensions and
    family A's ``a_nuisance`` treatment; a scope without ``a_nuisance`` was backtested with ``learned``).
    A gate whose family A cannot guarantee evidence monotone in harm for some signal (phi near 1 on a
    short baseline; :meth:`~deploysignal.detectors.FamilyA.not_monotone`) is uncertified and says which.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.calibration import compile_baseline
    >>> from deploysignal.telemetry import Frame
    >>> f = Frame(np.arange(600.0) * 60, np.random.default_rng(0).normal(size=(600, 1)), ("a",))
    >>> cfg = compile_baseline(f, check_model=False)
    >>> certification_status(cfg, GateSettings())["reasons"][0]
    'compiled before model checks'
    """
    cert = config.certification
    if cert is None:
        certified, reasons = False, ["compiled before model checks"]
    else:
        certified, reasons = bool(cert["certified"]), list(cert["reasons"])
        scope = cert.get("scope")
        if certified and scope is not None:
            now = {"alpha": settings.alpha, "window": settings.window, "max_extensions": settings.max_extensions}
            if any(scope[k] != v for k, v in now.items()):
                certified = False
                reasons.append("backtested at " + ", ".join(f"{k}={scope[k]}" for k in now) + "; this gate runs "
                               + ", ".join(f"{k}={v}" for k, v in now.items()) + ": recalibrate with these settings")
            backtested = scope.get("a_nuisance", "learned")
            if backtested != settings.a_nuisance:
                certified = False
                reasons.append(f"certified for a_nuisance={backtested}, gated with {settings.a_nuisance}: family A's treatment changes"
                               f" its false-rollback rate; recalibrate with `calibrate --a-nuisance {settings.a_nuisance}`")
    flat = _not_monotone(config, settings)
    if flat:
        certified = False
        reasons.append(f"family A's evidence is not guaranteed monotone in harm for {', '.join(flat)}: AR(1) phi near 1 on a short"
                       " baseline, so the AR-error band can outgrow a step's response; use a longer baseline")
    if not certified:
        reasons.append(RECOMMENDATION)
    if settings.mode == "two-sample":
        basis = "two-sample"
    else:
        basis = "one-sample, model checked" if certified else "one-sample, uncertified"
    return {"certified": certified, "reasons": reasons, "basis": basis}
