"""Output comparison of a candidate model against the incumbent on the same inputs (``type: compare``).

Each input's two outputs are scored by one grader (a Python callable ``module:function`` or a command,
see :mod:`deploysignal.pipeline.graders` for classification, regression and text-generation examples),
and the paired difference

.. math::

    x_t = s^{inc}_t - s^{cand}_t \\in [-1, 1] \\qquad (\\text{positive = the candidate is worse})

feeds the sequential paired test of the migration protocol (:class:`~deploysignal.migration.BettingEProcess`,
adaptive aGRAPA bettor, reused as is): a non-inferiority test of :math:`H_0: E[x_t] \\ge` ``margin``
(rejected = ``pass``) and a harm test of :math:`H_0: E[x_t] \\le` ``tolerance`` (rejected = ``fail``),
read pair by pair in file order; the first rejection decides (``fail`` wins a tie), neither by the end
is ``inconclusive``, which is not a pass.

Guarantee (Ville's inequality, anytime-valid): if every pair's conditional mean given the pairs before
it is at least ``margin`` (the candidate worse by the margin or more), ``P(pass) <= alpha``; if every
pair's conditional mean is at most ``tolerance``, ``P(fail) <= alpha``. Assumption: scores in
``[0, 1]`` and that conditional-mean bound, which holds for pairs in random order (e.g. a random sample
of mirrored traffic); for pairs in an order that correlates with quality (sorted by difficulty, bursts
of one hard topic) the bound can fail and the guarantee with it; the stage's record says so. Measured
in tests/pipeline/test_compare.py (Monte Carlo, one-sided 99% Clopper-Pearson bounds).

References
----------
Waudby-Smith, I. & Ramdas, A. (2024). Estimating means of bounded random variables by betting. JRSS-B.
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._exceptions import ConfigError, InputError

__all__ = ["ASSUMPTION", "CompareStage", "GraderSpec", "PairedComparison", "compare_outputs", "load_grader",
           "paired_comparison", "read_pairs", "score_pairs", "sequential_verdicts"]

ASSUMPTION = ("pairs in random order: each pair's expected score difference given the earlier pairs obeys the "
              "null bound (not guaranteed when the order correlates with quality)")


def _expand(name: str) -> str:
    """A built-in grader's short name (``accuracy``) as ``module:function``; a ``module:function`` as is."""
    return name if ":" in name else f"deploysignal.pipeline.graders:{name}"


class GraderSpec(BaseModel):
    """A grader: ``callable: "module:function"`` (called as ``fn(input, output, reference, **options)``,
    returns a score in [0, 1]) or ``command: [argv...]`` (reads JSONL ``{input, reference, incumbent,
    candidate}`` on stdin, prints one JSON ``{"incumbent": s, "candidate": s}`` per line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    callable: str | None = None
    command: list[str] | None = Field(None, min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(300.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, v: Any) -> Any:
        if isinstance(v, str):  # grader: accuracy  /  grader: "pkg.mod:fn"
            return {"callable": _expand(v)}
        if isinstance(v, dict) and isinstance(v.get("callable"), str):  # {callable: absolute_error, options: ...}
            return {**v, "callable": _expand(v["callable"])}
        return v

    @model_validator(mode="after")
    def _one(self) -> GraderSpec:
        if (self.callable is None) == (self.command is None):
            raise ValueError("give exactly one of callable ('module:function') and command")
        if self.callable is not None and self.callable.count(":") != 1:
            raise ValueError(f"callable must be 'module:function', got {self.callable!r}")
        return self


class CompareStage(BaseModel):
    """Output comparison stage: ``outputs`` is a JSONL file of ``{input, reference, incumbent, candidate}``
    (the two models' outputs on the same inputs, in the order they were served)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["compare"]
    outputs: str
    grader: GraderSpec
    margin: float = Field(0.02, gt=0, lt=1)
    tolerance: float = Field(0.0, ge=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _order(self) -> CompareStage:
        if self.tolerance >= self.margin:
            raise ValueError(f"tolerance ({self.tolerance}) must be below margin ({self.margin})")
        return self


@dataclass(frozen=True)
class PairedComparison:
    """Verdict of the paired test: ``pass``, ``fail`` or ``inconclusive``, the pair (1-based) that decided
    it, the anytime-valid p-values at the end, and the mean scores of both models over the pairs read."""

    verdict: str
    pairs: int
    decided_at: int | None
    p_noninferiority: float
    p_harm: float
    incumbent_mean: float
    candidate_mean: float

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _tests(margin: float, tolerance: float, batch: int) -> tuple[Any, Any]:
    from ..migration import BettingEProcess

    ni = BettingEProcess(m=-margin, lo=-1.0, hi=1.0, batch=batch, bettor="agrapa", target=0.0)
    harm = BettingEProcess(m=tolerance, lo=-1.0, hi=1.0, batch=batch, bettor="agrapa")
    return ni, harm


def sequential_verdicts(x: NDArray[np.float64], *, margin: float, tolerance: float,
                        alpha: float) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Vectorised core over ``batch`` streams: ``x`` is ``(batch, n)`` paired differences in [-1, 1].

    Returns ``(verdict, decided_at, p_noninferiority, p_harm)``: verdict 1 pass, -1 fail, 0 inconclusive;
    ``decided_at`` the 1-based pair of the decision (0 when undecided); the anytime-valid p-values where
    each stream stopped (a decided stream takes no further pairs)."""
    x = np.asarray(x, dtype=float)
    b, n = x.shape
    ni, harm = _tests(margin, tolerance, b)
    thr = math.log(1.0 / alpha)
    verdict = np.zeros(b, dtype=np.int64)
    at = np.zeros(b, dtype=np.int64)
    for t in range(n):
        open_ = verdict == 0
        if not open_.any():
            break
        lp = ni.update(-x[:, t], open_)
        lh = harm.update(x[:, t], open_)
        f = open_ & (lh >= thr)
        p = open_ & ~f & (lp >= thr)
        verdict[f], verdict[p] = -1, 1
        at[f | p] = t + 1
    return verdict, at, ni.p_value(), harm.p_value()


def paired_comparison(incumbent: NDArray[np.float64], candidate: NDArray[np.float64], *, margin: float = 0.02,
                      tolerance: float = 0.0, alpha: float = 0.05) -> PairedComparison:
    """Sequential paired test of candidate vs incumbent scores (each in [0, 1], same inputs, in order).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> inc = (rng.random(400) < 0.80).astype(float); cand = (rng.random(400) < 0.80).astype(float)
    >>> paired_comparison(inc, np.maximum(inc, cand)).verdict          # never worse, often better
    'pass'
    >>> paired_comparison(inc, np.minimum(inc, cand)).verdict          # never better, often worse
    'fail'
    """
    inc = np.asarray(incumbent, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    if inc.shape != cand.shape or inc.ndim != 1 or inc.size == 0:
        raise InputError(f"need two equal-length non-empty score arrays, got {inc.shape} and {cand.shape}")
    for what, s in (("incumbent", inc), ("candidate", cand)):
        bad = np.flatnonzero(~np.isfinite(s) | (s < 0) | (s > 1))
        if bad.size:
            raise InputError(f"{what} score {s[bad[0]]} is not in [0, 1]", row=int(bad[0]) + 1, column=what)
    x = (inc - cand)[None, :]
    v, at, p_ni, p_harm = sequential_verdicts(x, margin=margin, tolerance=tolerance, alpha=alpha)
    stop = int(at[0]) or inc.size
    return PairedComparison(verdict={1: "pass", -1: "fail", 0: "inconclusive"}[int(v[0])], pairs=stop,
                            decided_at=int(at[0]) or None, p_noninferiority=float(p_ni[0]),
                            p_harm=float(p_harm[0]), incumbent_mean=float(inc[:stop].mean()),
                            candidate_mean=float(cand[:stop].mean()))


def read_pairs(path: Path, versions: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Read the JSONL of paired outputs; every line needs ``incumbent`` and ``candidate`` (``input`` and
    ``reference`` optional, passed to the grader). Optional ``incumbent_version`` / ``candidate_version``
    fields say which revisions produced the outputs: with ``versions`` = (incumbent, candidate) given, a
    line naming another revision is an :class:`InputError` (outputs left over from an earlier candidate
    must not answer for this one)."""
    from .._text import JSON_UNUSABLE, read_utf8

    rows = []
    for i, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except JSON_UNUSABLE:
            raise InputError(f"{path}: not valid JSON", row=i) from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: each line must be a JSON object", row=i)
        for k in ("incumbent", "candidate"):
            if k not in obj:
                raise InputError(f"{path}: line has no {k!r} output", row=i, column=k)
        for k, want in zip(("incumbent_version", "candidate_version"), versions or ()):
            if k in obj and str(obj[k]) != want:
                raise InputError(f"{path}: outputs of {k.split('_')[0]} {obj[k]!r}, but this deployment's is {want!r}",
                                 row=i, column=k)
        rows.append({"input": obj.get("input"), "reference": obj.get("reference"), "incumbent": obj["incumbent"],
                     "candidate": obj["candidate"]})
    if not rows:
        raise InputError(f"{path} holds no paired outputs")
    return rows


def _load_callable(spec: str) -> Callable[..., Any]:
    mod, _, fn = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except (Exception, SystemExit) as e:  # a user's module may raise anything at import (SyntaxError, ValueError...)
        raise ConfigError(f"grader {spec!r} cannot be loaded: {type(e).__name__}: {e}") from None
    if not callable(obj):
        raise ConfigError(f"grader {spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def load_grader(grader: GraderSpec) -> None:
    """Import a callable grader now (a command grader needs nothing): a module that fails to import or
    lacks the function is a :class:`ConfigError` naming the grader. The runner calls it before any
    traffic moves, so a broken grader cannot first show up with the candidate already serving.
    The module is imported with the process's ``sys.path`` (set ``PYTHONPATH`` for your own graders)."""
    if grader.callable is not None:
        _load_callable(grader.callable)


def _score(v: Any, row: int, column: str) -> float:
    """A grader's score as a float in [0, 1]: any real number type (int, float, numpy scalars,
    ``Decimal``, ``Fraction``) is accepted; a bool, a string or anything else is refused."""
    num = math.nan
    if isinstance(v, (numbers.Real, Decimal)) and not isinstance(v, (bool, np.bool_)):
        try:
            num = float(v)
        except (OverflowError, ValueError):  # an integer beyond float range, a signalling Decimal NaN
            pass
    if not math.isfinite(num) or not 0.0 <= num <= 1.0:
        raise InputError(f"grader score {v!r} is not a number in [0, 1]", row=row, column=column)
    return num


def score_pairs(rows: list[dict[str, Any]], grader: GraderSpec, base: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Score both outputs of every row with the grader; a score outside [0, 1] or a grader error is an
    :class:`InputError` naming the row (1-based) and the model."""
    inc, cand = np.empty(len(rows)), np.empty(len(rows))
    if grader.callable is not None:
        fn = _load_callable(grader.callable)
        for i, r in enumerate(rows):
            for k, dest in (("incumbent", inc), ("candidate", cand)):
                try:
                    s = fn(r["input"], r[k], r["reference"], **grader.options)
                except InputError as e:
                    raise InputError(f"grader {grader.callable}: {e}", row=i + 1, column=k) from None
                except Exception as e:  # a user's grader may raise anything: name the row, never crash
                    raise InputError(f"grader {grader.callable} raised {type(e).__name__}: {e}", row=i + 1,
                                     column=k) from None
                dest[i] = _score(s, i + 1, k)
        return inc, cand
    assert grader.command is not None
    payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    try:
        proc = subprocess.run(grader.command, cwd=base, input=payload, capture_output=True, text=True,
                              timeout=grader.timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InputError(f"grader command {grader.command[0]}: {e}") from None
    if proc.returncode != 0:
        raise InputError(f"grader command exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if len(lines) != len(rows):
        raise InputError(f"grader command printed {len(lines)} score lines for {len(rows)} pairs")
    for i, ln in enumerate(lines):
        try:
            obj = json.loads(ln)
        except ValueError:
            raise InputError("grader command output is not JSON", row=i + 1) from None
        if not isinstance(obj, dict):
            raise InputError("grader command output line is not a JSON object", row=i + 1)
        inc[i] = _score(obj.get("incumbent"), i + 1, "incumbent")
        cand[i] = _score(obj.get("candidate"), i + 1, "candidate")
    return inc, cand


def compare_outputs(stage: CompareStage, base: Path, outputs: str | None = None,
                    versions: tuple[str, str] | None = None) -> PairedComparison:
    """Read, grade and test the stage's paired outputs (``outputs`` overrides the stage's path;
    ``versions``: the deployment's (incumbent, candidate), checked against the lines' optional version
    fields, see :func:`read_pairs`)."""
    rows = read_pairs(base / (outputs or stage.outputs), versions)
    inc, cand = score_pairs(rows, stage.grader, base)
    return paired_comparison(inc, cand, margin=stage.margin, tolerance=stage.tolerance, alpha=stage.alpha)
