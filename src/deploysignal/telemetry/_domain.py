"""The domain of a signal's values, checked (or enforced per signal) where ticks enter the gate.

Each signal has a *declared range* ``[lo, hi]``: the ``range`` of its entry in the signals file
(``range: [lo, hi]``, ``null`` for an open end), else the catalogue's, else its kind's default
(:func:`~deploysignal.telemetry.declared_range`). A compiled config carries declared ranges; a config
compiled before ranges existed has none, so its signals get their kind's default.

===================  ==================  ===========================================================
signal               declared range      values accepted as they are
===================  ==================  ===========================================================
kind ``rate``        ``[0, 1]``          ``[-1, 2]`` (:data:`RATE_SLACK`): the variance-stabilising
                                         transform clips to ``[0, 1]`` as it always did (rounding,
                                         counter extrapolation: a ratio of Prometheus ``rate()``
                                         results can exceed 1)
kind ``count``      ``>= 0``            ``>= -1`` (:data:`COUNT_SLACK`), clipped to 0 by the transform
kind ``continuous`` any finite number   any finite number
``eval_score``      ``[0, 1]``          ``[-0.25, 1.25]`` (catalogue)
declared ``[lo,hi]`` as declared        ``RANGE_TOLERANCE`` (a quarter) of ``hi - lo`` beyond each
                                         end; a half-open range (``[0, null]``) nothing below ``lo``
===================  ==================  ===========================================================

A value beyond what is accepted is *out of its domain*; the gate setting ``out_of_domain`` decides:

- ``"reject"`` (the gate's and the CLI's default): :class:`~deploysignal.InputError` naming the row
  and the signal (:func:`check_domain`); nothing of the batch is evaluated. Files are fixed and run
  again: the gate never guesses what a success rate of 95 meant.
- ``"missing"`` (the service's default for new analyses; the only policy of the Prometheus pull):
  only that signal of that tick is affected (:func:`enforce_domain`), the tick's other signals are
  evaluated as usual, and the tick's records say so in ``schema_continuity``. A value on the side
  that would count *for* the canary (a canary value in its signal's good direction, a control value
  in its bad one) is taken as **missing** (``out-of-domain-missing:<signals>``); one on the harmful
  side, and either side of a two-sided signal, is taken at the **declared bound** it crossed
  (``out-of-domain-bound:<signals>``; control: ``control-out-of-domain-...``), the most harmful value
  the signal can really take. So an absurd value never counts as more benign evidence than a real
  one, and a harmful one never as less (evidence stays monotone in harm; a regression whose scorer
  starts emitting negative scores is not silenced). A tick with any out-of-domain value does not
  count as valid toward ``min_valid_fraction``: an exporter that keeps sending such values keeps the
  gate from proceeding (the verdict becomes ``extend``), however benign the rest looks.

Magnitude: a finite value inside its domain is accepted however large (a continuous signal without a
declared range). Against its baseline scale it can still be far beyond what the families' arithmetic
could carry (``-1e307`` for a signal whose baseline sd is 0.02 is ~1e309 sd, an overflow); the gate's
standardiser therefore holds every standardised innovation and AR(1) regressor to ``+-Z_BOUND``
(:data:`deploysignal.detectors._kernels.Z_BOUND`, 1e6 sd). A *spike*, a value more than ``Z_BOUND``
marginal sd from its cell's baseline level, is not kept as the signal's AR(1) predecessor; one that
would count for the canary is taken as missing and noted (``spike:<signals>``,
``control-spike:<signals>``); one in the harmful direction is bet on at the families' clip. Every
family clips its data term at 6 sd or less, so a value's evidence is at most that of a 6-sd value,
never NaN, and it cannot silence a family for the ticks after it (``tests/test_issue23_values.py``,
``tests/test_domain_values.py``).

The ``reject`` check screens *new* input only (the CLI ``gate``, the service's ingest); ticks accepted
before it (a 0.4.0 log or stored analysis, whose settings have no ``out_of_domain``) are replayed and
rebuilt as they were accepted. ``missing`` is part of the evaluation: replay and rebuild apply it
again, so the records replay byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from .._exceptions import InputError
from ._signals import declared_range

__all__ = ["COUNT_SLACK", "RANGE_TOLERANCE", "RATE_SLACK", "Domains", "check_domain", "enforce_domain", "signal_domains"]

#: How far outside [0, 1] a rate with the kind's default range may lie and still be taken as noise
#: (clipped by the transform) rather than out of its domain.
RATE_SLACK = 1.0
#: How far below 0 a count with the kind's default range may lie and still be taken as noise.
COUNT_SLACK = 1.0
#: Share of a declared finite range's width accepted beyond each of its ends (rounding, interpolation).
RANGE_TOLERANCE = 0.25


class Domains(NamedTuple):
    """Per signal (``(k,)`` float arrays, infinite for an open end): the declared range ``lo``, ``hi``
    and the values accepted as they are, ``lo_ok <= x <= hi_ok``; ``kinds`` and ``declared`` (whether
    the range was declared, not the kind's default) name the domain in messages."""

    lo: np.ndarray
    hi: np.ndarray
    lo_ok: np.ndarray
    hi_ok: np.ndarray
    kinds: tuple[str, ...]
    declared: tuple[bool, ...]


def signal_domains(signals: Sequence[Any]) -> Domains:
    """The :class:`Domains` of signals (:class:`~deploysignal.telemetry.SignalSpec` or a compiled
    config's signals: anything with ``kind`` and an optional ``range``).

    >>> from deploysignal.telemetry import CATALOGUE
    >>> d = signal_domains([CATALOGUE["tool_success_rate"], CATALOGUE["eval_score"], CATALOGUE["ttft_ms"]])
    >>> d.lo_ok.tolist(), d.hi_ok.tolist()
    ([-1.0, -0.25, -inf], [2.0, 1.25, inf])
    """
    lo, hi, lo_ok, hi_ok, kinds, declared = [], [], [], [], [], []
    for s in signals:
        a, b = declared_range(s)
        a_, b_ = -math.inf if a is None else a, math.inf if b is None else b
        given = getattr(s, "range", None) is not None
        if not given and s.kind == "rate":
            slack_lo = slack_hi = RATE_SLACK
        elif not given and s.kind == "count":
            slack_lo, slack_hi = COUNT_SLACK, 0.0
        else:
            slack_lo = slack_hi = RANGE_TOLERANCE * (b_ - a_) if math.isfinite(b_ - a_) else 0.0
        lo.append(a_)
        hi.append(b_)
        lo_ok.append(a_ - slack_lo)
        hi_ok.append(b_ + slack_hi)
        kinds.append(str(s.kind))
        declared.append(given)
    arr = [np.ascontiguousarray(v, dtype=float) for v in (lo, hi, lo_ok, hi_ok)]
    for v in arr:
        v.setflags(write=False)
    return Domains(*arr, tuple(kinds), tuple(declared))


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


def _describe(domains: Domains, j: int) -> str:
    """The domain of signal ``j`` in words, e.g. ``a rate, [0, 1]`` or ``its declared range [0, 1]``."""
    lo, hi = domains.lo[j], domains.hi[j]
    text = f">= {lo:g}" if math.isinf(hi) else f"<= {hi:g}" if math.isinf(lo) else f"[{lo:g}, {hi:g}]"
    if domains.declared[j]:
        return f"its declared range {text}"
    return f"a {domains.kinds[j]}, {text}"


def check_domain(values: np.ndarray, domains: Domains, names: Sequence[str], *, what: str = "canary", first_row: int = 1) -> None:
    """Raise :class:`InputError` at the first value (row-major order) out of its domain (the ``reject``
    policy; see the module).

    ``values``: (n, k) floats, NaN = missing; ``domains``: :func:`signal_domains`; ``first_row``: the
    1-based row number of ``values[0]`` in the caller's stream. Compiled scan (``_first_outside``,
    numba): it runs on every tick.

    >>> import numpy as np
    >>> from deploysignal.telemetry import CATALOGUE
    >>> d = signal_domains([CATALOGUE["tool_success_rate"], CATALOGUE["eval_score"]])
    >>> check_domain(np.array([[0.5, 1.1], [1.05, np.nan]]), d, ("tool_success_rate", "eval_score"))
    >>> check_domain(np.array([[95.0, 0.8]]), d, ("tool_success_rate", "eval_score"), first_row=7)
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 7, column 'tool_success_rate': canary value 95.0 is outside the domain of a rate, [0, 1] (a percentage? give rates as fractions)
    >>> check_domain(np.array([[0.9, 2.0]]), d, ("tool_success_rate", "eval_score"))
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 1, column 'eval_score': canary value 2.0 is outside the domain of eval_score, its declared range [0, 1]
    """
    v = np.ascontiguousarray(values, dtype=float)
    if v.ndim != 2 or v.size == 0:
        return
    at = _first_outside(v, domains.lo_ok, domains.hi_ok)
    if at < 0:
        return
    i, j = divmod(int(at), v.shape[1])
    x = float(v[i, j])
    if domains.declared[j]:
        msg = f"{what} value {x!r} is outside the domain of {names[j]}, {_describe(domains, j)}"
    else:
        hint = " (a percentage? give rates as fractions)" if domains.kinds[j] == "rate" and 1.0 < x <= 100.0 else ""
        msg = f"{what} value {x!r} is outside the domain of {_describe(domains, j)}{hint}"
    raise InputError(msg, row=first_row + i, column=str(names[j]))


def enforce_domain(values: np.ndarray, domains: Domains, orient: np.ndarray, two_sided: np.ndarray, *,
                   control: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``missing`` policy (see the module): ``values`` ((n, k), NaN = missing) with each value out
    of its domain replaced, and the masks of those taken as missing and those taken at their bound.

    ``orient``: +1 where larger values are harmful, -1 where smaller are (per signal); ``two_sided``:
    signals harmful in both directions; ``control``: the values are a two-sample control, for which the
    side that counts for the canary is the other one. Values inside their domain are returned as they
    are (the same array when there is nothing to change).

    >>> import numpy as np
    >>> from deploysignal.telemetry import CATALOGUE
    >>> d = signal_domains([CATALOGUE["eval_score"], CATALOGUE["refusal_rate"]])  # down, up
    >>> out, missing, bound = enforce_domain(np.array([[2.0, 7.0], [-5.0, 0.1]]), d, np.array([-1.0, 1.0]), np.array([False, False]))
    >>> out.tolist(), missing.tolist(), bound.tolist()
    ([[nan, 1.0], [0.0, 0.1]], [[True, False], [False, False]], [[False, True], [True, False]])
    """
    v = np.ascontiguousarray(values, dtype=float)
    none = np.zeros(v.shape, dtype=bool)
    if v.ndim != 2 or v.size == 0 or _first_outside(v, domains.lo_ok, domains.hi_ok) < 0:
        return v, none, none
    above, below = v > domains.hi_ok, v < domains.lo_ok
    side = np.where(above, 1.0, np.where(below, -1.0, 0.0))
    counts_for_canary = (side * np.asarray(orient, dtype=float) * (1.0 if control else -1.0) > 0.0) & ~np.asarray(two_sided, dtype=bool)
    missing = (above | below) & counts_for_canary
    bound = (above | below) & ~counts_for_canary
    out = np.where(missing, np.nan, np.where(bound & above, domains.hi, np.where(bound & below, domains.lo, v)))
    return out, missing, bound
