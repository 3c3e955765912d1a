"""Example graders for output comparison (``type: compare``): one score in ``[0, 1]`` per output.

A grader is any callable ``grade(input, output, reference, **options) -> float`` in ``[0, 1]``
(1 = right), named in a pipeline file as ``module:function`` (``grader: {callable:
"deploysignal.pipeline.graders:accuracy"}``, or the short name ``grader: accuracy``). The pipeline
scores the incumbent's and the candidate's output on the same input with the same grader and feeds the
paired difference to the sequential paired test of :mod:`deploysignal.migration`.

* :func:`accuracy` - classification: the label equals the reference;
* :func:`absolute_error` - regression: ``1 - min(|output - reference| / scale, 1)`` (an error of
  ``scale`` or more scores 0);
* :func:`exact_match` - text generation: equal after case folding and whitespace collapsing;
* :func:`similarity` - text generation: :class:`difflib.SequenceMatcher` ratio of the normalised texts.

Each needs the line's ``reference``; a line without one is an error naming the line (a missing
reference must not score both models 0 and hide a difference).

Examples
--------
>>> accuracy("img-3", "cat", "cat"), absolute_error(None, 10.5, 10.0, scale=2.0)
(1.0, 0.75)
>>> exact_match("q", "  Paris ", "paris"), round(similarity("q", "the cat sat", "the cat sat down"), 3)
(1.0, 0.815)
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from .._exceptions import InputError

__all__ = ["BUILTIN", "absolute_error", "accuracy", "exact_match", "similarity"]


def _need(reference: Any) -> None:
    if reference is None:
        raise InputError("the line has no 'reference' (the built-in graders score each output against it)")


def _label(v: Any) -> str:
    """A label's comparable form: a string stripped; a number by value (``1`` and ``1.0`` are one label,
    a bool is not a number); anything else its ``str``."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return repr(float(v))
        except OverflowError:  # an integer beyond float range: compared exactly
            return str(v)
    return str(v)


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise InputError(f"a text grader needs strings, got {type(v).__name__}")
    return " ".join(v.split()).casefold()


def accuracy(input: Any, output: Any, reference: Any) -> float:
    """Classification: 1.0 when the predicted label equals the reference (strings stripped, numbers
    compared by value: ``1`` equals ``1.0``), else 0.0."""
    _need(reference)
    return 1.0 if _label(output) == _label(reference) else 0.0


def absolute_error(input: Any, output: Any, reference: Any, *, scale: float = 1.0) -> float:
    """Regression: ``1 - min(|output - reference| / scale, 1)``; a non-numeric or non-finite output scores 0
    (a wrong answer), a non-numeric reference is an error."""
    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise InputError(f"absolute_error needs a finite scale > 0, got {scale!r}")
    if isinstance(reference, bool) or not isinstance(reference, (int, float)) or not math.isfinite(reference):
        raise InputError(f"absolute_error needs a finite numeric reference, got {reference!r}")
    if isinstance(output, bool) or not isinstance(output, (int, float)) or not math.isfinite(output):
        return 0.0
    return 1.0 - min(abs(float(output) - float(reference)) / float(scale), 1.0)


def exact_match(input: Any, output: Any, reference: Any) -> float:
    """Text generation: 1.0 when equal after case folding and collapsing whitespace; a non-string output
    scores 0."""
    _need(reference)
    if not isinstance(output, str):
        return 0.0
    return 1.0 if _text(output) == _text(reference) else 0.0


def similarity(input: Any, output: Any, reference: Any) -> float:
    """Text generation: :class:`difflib.SequenceMatcher` ratio of the normalised texts (1 = identical);
    a non-string output scores 0."""
    _need(reference)
    if not isinstance(output, str):
        return 0.0
    return difflib.SequenceMatcher(None, _text(output), _text(reference), autojunk=False).ratio()


#: short names a pipeline file may use for the graders above
BUILTIN = {"accuracy": accuracy, "absolute_error": absolute_error, "exact_match": exact_match, "similarity": similarity}
