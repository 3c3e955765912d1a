"""Common detector types: the per-tick observation a family sees and the evidence it returns.

A family detector is a small class with constant memory::

    update(obs: Observation) -> Evidence
    state() -> dict            # JSON-serialisable, exact (floats round-trip)
    from_state(config, state)  # classmethod, rebuilds an identical detector

It does no I/O and reads no clock: time comes in with ``obs.timestamp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Evidence", "FamilyDetector", "Observation", "log_threshold"]


def log_threshold(alpha: float) -> float:
    """``log(1/alpha)``: the Ville threshold for an e-process at level ``alpha``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return -math.log(alpha)


@dataclass(frozen=True, slots=True)
class Observation:
    """One tick as the families see it, already standardised by the compiled config.

    Attributes
    ----------
    tick : int
        0-based index of the tick in the canary stream.
    timestamp : float
        Epoch seconds of the tick.
    cell : int
        Index of the calibration cell (``CompiledConfig.cells``) the tick falls in.
    z : ndarray, shape (k,)
        Prewhitened, standardised innovations of the canary, oriented so that **positive means harmful**
        for ``up``/``down`` signals (``both`` signals keep their sign). NaN = missing.
    raw : ndarray, shape (k,)
        The raw canary values (NaN = missing), for rules on the original scale (family B).
    control_z : ndarray or None
        In two-sample mode, the same for the live control tick; ``None`` in one-sample mode.
    control_raw : ndarray or None
        Raw control values in two-sample mode.
    lag, control_lag : ndarray or None
        Oriented previous de-seasonalised level in innovation units (0 where there is none): ``z``
        contains ``(phi - phi_hat) * lag`` from the finite-sample error of the AR(1) estimate.
    """

    tick: int
    timestamp: float
    cell: int
    z: np.ndarray
    raw: np.ndarray
    control_z: np.ndarray | None = None
    control_raw: np.ndarray | None = None
    lag: np.ndarray | None = None
    control_lag: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one family says about one tick.

    Attributes
    ----------
    family : str
        ``"A"`` .. ``"E"``.
    statistic : float
        The family's headline statistic (family specific, documented per family).
    log_wealth : float
        Log of the e-process value the family compares to its bound (``-inf`` allowed for rules).
    log_threshold : float
        Log of the bound; the family fires when ``log_wealth >= log_threshold``.
    fired : bool
        Whether the family fires at this tick (fires are sticky: once fired, stays fired).
    reason : str
        Human-readable explanation, empty when not fired.
    drivers : tuple of str
        Signals (or signal/period pairs) that drive the evidence, most important first.
    action : str
        ``"rollback"`` or ``"warn"`` when fired (rules may be configured to warn only).
    """

    family: str
    statistic: float
    log_wealth: float
    log_threshold: float
    fired: bool
    reason: str = ""
    drivers: tuple[str, ...] = field(default=())
    action: str = "rollback"


@runtime_checkable
class FamilyDetector(Protocol):
    family: str
    alpha: float

    def update(self, obs: Observation) -> Evidence: ...

    def state(self) -> dict[str, Any]: ...
