"""River's streaming drift detectors (Page-Hinkley, ADWIN) as deploy baselines.

``river`` is an optional dependency (``pip install deploysignal[eval]``); constructing these methods
without it raises :class:`ImportError` with that hint.

Usage mirrors how a monitoring user applies them: each signal is standardised by the baseline mean and
standard deviation and oriented so that positive is harmful; one detector per signal is warmed up on the
last ``warmup`` baseline ticks (alarms there are ignored), then fed the canary ticks. The first drift
flagged on any signal during the canary is a rollback (Page-Hinkley in ``mode="up"`` for signals with a
direction of harm, ``"both"`` otherwise; ADWIN flags change in either direction, as the library does).
Missing values are skipped. Neither detector controls a false-alarm probability over a finite window:
Page-Hinkley is tuned by its threshold, ADWIN bounds the false-alarm rate per window split with
``delta`` (Bifet & Gavaldà 2007) and pays it at every tick.

References
----------
Page, E. S. (1954). Continuous inspection schemes. Biometrika 41.
Bifet, A., Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing. SDM.
Montiel, J. et al. (2021). River: machine learning for streaming data in Python. JMLR 22.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..telemetry import Frame
from ._method import MethodResult, finish, harm_signs

__all__ = ["ADWINMethod", "PageHinkleyMethod", "river_available"]


def river_available() -> bool:
    try:
        import river  # noqa: F401
    except ImportError:
        return False
    return True


def _drift() -> Any:
    try:
        from river import drift
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("river is needed for this baseline: pip install 'deploysignal[eval]'") from exc
    return drift


@dataclass
class _RiverMethod:
    window: int = 480
    warmup: int = 240
    params: dict[str, Any] = field(default_factory=dict)
    name: str = "river"

    def _make(self, sign: float) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, baseline: Frame, canary: Frame, control: Frame | None = None) -> MethodResult:
        b = baseline.select(canary.signals).values
        mu, sd = np.nanmean(b, axis=0), np.nanstd(b, axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        signs = harm_signs(canary)
        orient = np.where(signs == 0, 1.0, signs)
        warm = (b[-self.warmup :] - mu) / sd * orient if self.warmup else np.empty((0, b.shape[1]))
        n = min(len(canary), self.window)
        z = (canary.values[:n] - mu) / sd * orient
        k = z.shape[1]
        detectors = [self._make(signs[j]) for j in range(k)]
        for j, det in enumerate(detectors):
            for v in warm[:, j]:
                if v == v:
                    det.update(float(v))
        trace = np.full(len(canary), np.nan)
        for t in range(n):
            row = z[t]
            for j, det in enumerate(detectors):
                v = row[j]
                if v == v:
                    det.update(float(v))
                    if det.drift_detected:
                        trace[t] = 1.0
                        return finish(t, n, self.window, trace, 1.0, "drift flag")
            trace[t] = 0.0
        return finish(None, n, self.window, trace, 1.0, "drift flag")


@dataclass
class PageHinkleyMethod(_RiverMethod):
    """``river.drift.PageHinkley`` per signal (library defaults unless ``params`` says otherwise)."""

    name: str = "page_hinkley"

    def _make(self, sign: float) -> Any:
        params = {"mode": "up" if sign != 0 else "both", **self.params}
        return _drift().PageHinkley(**params)


@dataclass
class ADWINMethod(_RiverMethod):
    """``river.drift.ADWIN`` per signal (library defaults unless ``params`` says otherwise)."""

    name: str = "adwin"

    def _make(self, sign: float) -> Any:
        return _drift().ADWIN(**self.params)
