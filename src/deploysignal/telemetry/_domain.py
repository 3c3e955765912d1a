"""The domain of a signal's values, by kind, checked where ticks enter the gate.

===============  ===========================================================================
kind             accepted values
===============  ===========================================================================
``rate``         ``[0, 1]``; values at most :data:`RATE_SLACK` (one unit) outside are clipped to
                 the range, as the variance-stabilising transform always did (rounding and
                 counter-extrapolation noise: a ratio of Prometheus ``rate()`` results can
                 exceed 1); beyond that a value cannot be a fraction and is rejected
``count``        ``>= 0``; values at most :data:`COUNT_SLACK` (one) below 0 are clipped to 0
``continuous``   any finite number
===============  ===========================================================================

Missing values (NaN, ``null``) are always accepted. Infinities are rejected before this check.
Anything else outside its kind's domain (a success rate of 95 given in percent, a negative request
count) is rejected with an :class:`~deploysignal.InputError` naming the row and the signal: the
gate never guesses what such a value meant.

Magnitude: a finite ``continuous`` value is accepted however large. Against its signal's baseline
scale it can still be far beyond anything the families' arithmetic could carry (``-1e307`` for an
eval score whose baseline sd is 0.02 is ~1e309 sd, an overflow); the gate's standardiser therefore
holds every standardised innovation and AR(1) regressor to ``+-Z_BOUND``
(:data:`deploysignal.detectors._kernels.Z_BOUND`, 1e6 sd). A *spike*, a value more than ``Z_BOUND``
marginal sd from its cell's baseline level, is not kept as the signal's AR(1) predecessor (the next
tick is predicted from the last ordinary value). A spike that would count for the canary (a canary
value in its signal's good direction, a control value in its bad one; not for two-sided signals) is
taken as missing and noted in the tick's ``schema_continuity`` (``spike:<signals>``,
``control-spike:<signals>``); one in the harmful direction is bet on by family A at its clip without
learning cell bias or AR-error regression from it. Every family clips its data term at 6 sd or less,
so a spike's evidence is at most that of a 6-sd value, never NaN, and it cannot silence a family for
the ticks after it (``tests/test_issue23_values.py``, ``tests/test_hardfix_review.py``).

These checks screen *new* input (the CLI ``gate``, the service's ingest); ticks accepted before them
(a 0.4.0 log or stored analysis) are replayed and rebuilt as accepted.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._exceptions import InputError

__all__ = ["COUNT_SLACK", "RATE_SLACK", "check_domain", "domain_bounds"]

#: How far outside [0, 1] a rate may lie and still be taken as noise (clipped) rather than rejected.
RATE_SLACK = 1.0
#: How far below 0 a count may lie and still be taken as noise (clipped) rather than rejected.
COUNT_SLACK = 1.0


@njit(cache=True)
def _first_outside(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> int:  # pragma: no cover - compiled
    """Row-major flat index of the first ``v[i, j]`` outside ``[lo[j], hi[j]]`` (NaN is inside), or -1."""
    n, k = v.shape
    for i in range(n):
        for j in range(k):
            x = v[i, j]
            if x < lo[j] or x > hi[j]:
                return i * k + j
    return -1


def domain_bounds(kind_rate: np.ndarray, kind_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per signal, the lowest and highest value accepted (``-inf``/``inf`` where unbounded), from
    the ``(k,)`` masks of rate and count signals: what :func:`check_domain` compares against."""
    rate, count = np.asarray(kind_rate, dtype=bool), np.asarray(kind_count, dtype=bool)
    lo = np.where(rate, -RATE_SLACK, np.where(count, -COUNT_SLACK, -np.inf))
    hi = np.where(rate, 1.0 + RATE_SLACK, np.inf)
    return np.ascontiguousarray(lo, dtype=float), np.ascontiguousarray(hi, dtype=float)


def check_domain(values: np.ndarray, bounds: tuple[np.ndarray, np.ndarray], names: tuple[str, ...] | list[str],
                 *, what: str = "canary", first_row: int = 1) -> None:
    """Raise :class:`InputError` at the first value (row-major order) outside its kind's domain.

    ``values``: (n, k) floats, NaN = missing; ``bounds``: :func:`domain_bounds`; ``first_row``: the
    1-based row number of ``values[0]`` in the caller's stream. Compiled scan
    (``_first_outside``, numba): it runs on every tick.

    >>> import numpy as np
    >>> b = domain_bounds(np.array([True, False]), np.array([False, False]))
    >>> check_domain(np.array([[0.5, -1e300], [1.05, np.nan]]), b, ("tool_success_rate", "eval_score"))
    >>> check_domain(np.array([[95.0, 1.0]]), b, ("tool_success_rate", "eval_score"), first_row=7)
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 7, column 'tool_success_rate': canary value 95.0 is outside the domain of a rate, [0, 1] (a percentage? give rates as fractions)
    """
    v = np.ascontiguousarray(values, dtype=float)
    if v.ndim != 2 or v.size == 0:
        return
    lo, hi = bounds
    at = _first_outside(v, lo, hi)
    if at < 0:
        return
    i, j = divmod(int(at), v.shape[1])
    x = float(v[i, j])
    if hi[j] < np.inf:  # a rate
        hint = " (a percentage? give rates as fractions)" if 1.0 < x <= 100.0 else ""
        msg = f"{what} value {x!r} is outside the domain of a rate, [0, 1]{hint}"
    else:
        msg = f"{what} value {x!r} is outside the domain of a count, >= 0"
    raise InputError(msg, row=first_row + i, column=str(names[j]))
