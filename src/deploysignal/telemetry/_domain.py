"""The domain of a signal's values, checked (or enforced per signal) where ticks enter the gate.

Each signal has a *declared range* ``[lo, hi]``: the ``range`` of its entry in the signals file
(``range: [lo, hi]``, ``null`` for an open end), else the catalogue's, else its kind's default
(:func:`~deploysignal.telemetry.declared_range`). A compiled config carries declared ranges; a config
compiled before ranges existed has none, so its signals get their kind's default.

===================  ==================  ====================================================
signal               declared range      notes
===================  ==================  ====================================================
kind ``rate``        ``[0, 1]``          a declared range must lie inside ``[0, 1]``
kind ``count``       ``>= 0``            a declared range must lie inside ``[0, inf)``
kind ``continuous``  any finite number   latencies, cost, tokens: declare ``[0, null]``
``eval_score``       ``[0, 1]``          the catalogue's
===================  ==================  ====================================================

A value is *in its domain* when it lies in ``[lo, hi]``, ends included, give or take float rounding
(:data:`ROUNDING_TOLERANCE`, relative: ``1 + 1e-12`` is a rate of 1, ``1.0001`` is not). Nothing else
is: not a success rate of 1.05, not a count of -1, not a score of 1.2. Missing values (NaN, ``null``)
are always accepted; infinities are rejected before this check. A value out of its domain is never
clamped to its bound and never used as given; the gate setting ``out_of_domain`` decides:

- ``"reject"`` (the gate's and the CLI's default): :class:`~deploysignal.InputError` naming the row
  and the signal (:func:`check_domain`); nothing of the batch is evaluated. Files are fixed and run
  again: the gate never guesses what a success rate of 95 meant.
- ``"missing"`` (the service's default for new analyses; the only policy of the Prometheus pull):
  that signal of that tick is **missing** (:func:`enforce_domain`), whichever side it lies on, and
  the tick's records say so in ``schema_continuity`` (``out-of-domain:<signals>``,
  ``control-out-of-domain:<signals>``). The tick's other signals are evaluated as usual. Every
  family's evidence is then exactly that of the same input with those values deleted: an absurd value
  counts neither for nor against the canary, so it cannot make a regression roll back later than the
  input without it, nor a healthy canary proceed earlier.

  Such a tick does not count as valid toward ``min_valid_fraction`` (0.8 by default): the verdict
  proceeds only if at least that fraction of the window's ticks were valid. A source that sends
  out-of-domain values on more than ``1 - min_valid_fraction`` (20%) of its ticks therefore holds the
  gate at ``extend``; one that sends them on fewer ticks does not: those values are simply missing
  and the gate decides on the rest, as it would with those values deleted (a healthy canary with a
  score of 2.0 on every 10th tick can proceed). The service's ingest response and log say which values were taken as
  missing; the gate does not second-guess a source that is mostly right.

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
``tests/test_domain_values.py``, ``tests/test_domain_strict.py``).

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

__all__ = ["ROUNDING_TOLERANCE", "Domains", "check_domain", "enforce_domain", "out_of_domain_mask", "out_of_domain_reason", "signal_domains"]

#: Float rounding accepted beyond a finite end of a declared range, relative to ``max(1, |end|)``.
ROUNDING_TOLERANCE = 1e-9


class Domains(NamedTuple):
    """Per signal (``(k,)`` float arrays, infinite for an open end): the declared range ``lo``, ``hi``
    and the values accepted, ``lo_ok <= x <= hi_ok`` (the range give or take float rounding);
    ``kinds`` and ``declared`` (whether the range was declared, not the kind's default) name the
    domain in messages."""

    lo: np.ndarray
    hi: np.ndarray
    lo_ok: np.ndarray
    hi_ok: np.ndarray
    kinds: tuple[str, ...]
    declared: tuple[bool, ...]


def _slack(end: float) -> float:
    return ROUNDING_TOLERANCE * max(1.0, abs(end)) if math.isfinite(end) else 0.0


def signal_domains(signals: Sequence[Any]) -> Domains:
    """The :class:`Domains` of signals (:class:`~deploysignal.telemetry.SignalSpec` or a compiled
    config's signals: anything with ``kind`` and an optional ``range``).

    >>> from deploysignal.telemetry import CATALOGUE
    >>> d = signal_domains([CATALOGUE["tool_success_rate"], CATALOGUE["eval_score"], CATALOGUE["ttft_ms"]])
    >>> d.lo.tolist(), d.hi.tolist(), d.hi_ok.tolist()
    ([0.0, 0.0, -inf], [1.0, 1.0, inf], [1.000000001, 1.000000001, inf])
    """
    lo, hi, lo_ok, hi_ok, kinds, declared = [], [], [], [], [], []
    for s in signals:
        a, b = declared_range(s)
        a_, b_ = -math.inf if a is None else a, math.inf if b is None else b
        lo.append(a_)
        hi.append(b_)
        lo_ok.append(a_ - _slack(a_))
        hi_ok.append(b_ + _slack(b_))
        kinds.append(str(s.kind))
        declared.append(getattr(s, "range", None) is not None)
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


def out_of_domain_reason(domains: Domains, names: Sequence[str], j: int, x: float, *, what: str = "canary") -> str:
    """Why value ``x`` of signal ``j`` is out of its domain, e.g. ``canary value 95.0 is outside the
    domain of a rate, [0, 1] (a percentage? give rates as fractions)``."""
    if domains.declared[j]:
        msg = f"{what} value {x!r} is outside the domain of {names[j]}, {_describe(domains, j)}"
    else:
        msg = f"{what} value {x!r} is outside the domain of {_describe(domains, j)}"
    if domains.kinds[j] == "rate" and 1.0 < x <= 100.0:
        msg += " (a percentage? give rates as fractions)"
    return msg


def check_domain(values: np.ndarray, domains: Domains, names: Sequence[str], *, what: str = "canary", first_row: int = 1,
                 hint: str = "") -> None:
    """Raise :class:`InputError` at the first value (row-major order) out of its domain (the ``reject``
    policy; see the module).

    ``values``: (n, k) floats, NaN = missing; ``domains``: :func:`signal_domains`; ``first_row``: the
    1-based row number of ``values[0]`` in the caller's stream; ``hint``: appended to the message of a
    declared range. Compiled scan (``_first_outside``, numba): it runs on every tick.

    >>> import numpy as np
    >>> from deploysignal.telemetry import CATALOGUE
    >>> d = signal_domains([CATALOGUE["tool_success_rate"], CATALOGUE["eval_score"]])
    >>> check_domain(np.array([[0.5, 1.0], [1.0 + 1e-12, np.nan]]), d, ("tool_success_rate", "eval_score"))
    >>> check_domain(np.array([[95.0, 0.8]]), d, ("tool_success_rate", "eval_score"), first_row=7)
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 7, column 'tool_success_rate': canary value 95.0 is outside the domain of a rate, [0, 1] (a percentage? give rates as fractions)
    >>> check_domain(np.array([[0.9, 1.05]]), d, ("tool_success_rate", "eval_score"))
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: row 1, column 'eval_score': canary value 1.05 is outside the domain of eval_score, its declared range [0, 1]
    """
    v = np.ascontiguousarray(values, dtype=float)
    if v.ndim != 2 or v.size == 0:
        return
    at = _first_outside(v, domains.lo_ok, domains.hi_ok)
    if at < 0:
        return
    i, j = divmod(int(at), v.shape[1])
    msg = out_of_domain_reason(domains, names, j, float(v[i, j]), what=what)
    raise InputError(msg + (hint if domains.declared[j] else ""), row=first_row + i, column=str(names[j]))


def out_of_domain_mask(values: np.ndarray, domains: Domains) -> np.ndarray:
    """``(n, k)`` mask of the values out of their domain (NaN is not)."""
    v = np.asarray(values, dtype=float)
    return (v < domains.lo_ok) | (v > domains.hi_ok)


def enforce_domain(values: np.ndarray, domains: Domains) -> tuple[np.ndarray, np.ndarray]:
    """The ``missing`` policy (see the module): ``values`` ((n, k), NaN = missing) with each value out
    of its domain replaced by NaN, and the mask of those values. Values inside their domain are
    returned as they are (the same array when there is nothing to change).

    >>> import numpy as np
    >>> from deploysignal.telemetry import CATALOGUE
    >>> d = signal_domains([CATALOGUE["eval_score"], CATALOGUE["refusal_rate"]])
    >>> out, missing = enforce_domain(np.array([[2.0, 7.0], [-5.0, 0.1], [1.0, 0.0]]), d)
    >>> out.tolist(), missing.tolist()
    ([[nan, nan], [nan, 0.1], [1.0, 0.0]], [[True, True], [True, False], [False, False]])
    """
    v = np.ascontiguousarray(values, dtype=float)
    if v.ndim != 2 or v.size == 0 or _first_outside(v, domains.lo_ok, domains.hi_ok) < 0:
        return v, np.zeros(v.shape, dtype=bool)
    missing = out_of_domain_mask(v, domains)
    return np.where(missing, np.nan, v), missing
