"""How an audit record becomes a line: RFC 8785 (JSON Canonicalization Scheme) for new logs, and the
encoding of logs written before it, which stay verifiable and replay byte for byte.

An audit log names its encoding in its header record (line 1), field ``encoding``:

``"jcs"`` (:data:`JCS`: ``gate --audit``, ``gate --split --audit`` and service analyses created since 0.5.0)
    RFC 8785: keys sorted by their UTF-16 code units, no whitespace, strings as UTF-8 with only ``"``,
    ``\\`` and control characters escaped, numbers as ECMAScript writes an IEEE-754 double (``1``
    for ``1.0``, ``0`` for ``-0.0``, ``0.00001``, ``1e-7``, ``1e+21``). An auditor in any language
    re-creates the bytes with a JCS library. Encoded by the ``rfc8785`` package (Trail of Bits);
    :func:`jcs_line` takes msgspec's faster route where its bytes are provably the same (below).
``"repr"`` (:data:`REPR`, what a header *without* ``encoding`` means: every log written before)
    Python's ``json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)``: ASCII
    with ``\\uXXXX`` escapes, floats as Python's ``repr`` (``1.0``, ``-0.0``, ``1e-05``, ``1e+16``):
    :func:`deploysignal.calibration.canonical_json`, which also defines compiled configs' content ids
    (configs do not change encoding).

The hash chain (:mod:`~deploysignal.audit._chain`) covers each line's text whatever its encoding, and
:func:`~deploysignal.audit._chain.verify_chain` re-encodes each record with the encoding its log's
header names; the header's own line is hashed like any other, so the encoding cannot be switched
without breaking the chain. Non-finite numbers never reach an encoder: records write them as ``null``;
given one anyway, both encodings raise :class:`ValueError` (NaN and infinities are not JSON), as do
integers beyond :math:`\\pm(2^{53}-1)` under JCS (RFC 8785 numbers are doubles).

Fast route (guarantee): msgspec (``order="sorted"``) writes strings exactly as RFC 8785 does (every BMP
code point but the surrogates, and U+10000, U+1F600, U+10FFFF, as a string value: checked by
``tests/test_audit_jcs.py`` with msgspec 0.23.0; lone surrogates are refused by both), sorts ASCII keys as UTF-16 does, writes integers alike, and writes a
finite non-integral float ``x`` with :math:`10^{-5} \\le |x| < 10^{16}` as the same shortest round-trip
digits in the same plain notation. :func:`jcs_line` therefore hands msgspec a copy of the record in which
every integral float of magnitude below :math:`2^{53}` is an ``int`` (the same number: JCS writes it
without a fraction) and sends anything else -- a float outside that range, a non-ASCII key, an integer
beyond :math:`2^{53}-1`, a type other than dict, list, tuple, str, int, float, bool, None, nesting
beyond 32 -- to the ``rfc8785`` library itself. ``tests/test_audit_jcs.py`` compares the two on random
records over the whole float range (bit patterns, notation boundaries; at least half of them through the
fast route), on every BMP code point as a string value, and on every record the gate writes in its
scenarios. Since the route depends on msgspec's output, the module checks it at import on probes at the
edges of its domain (:data:`FAST_ROUTE`); if a msgspec release writes anything differently there, every
line goes through the library (slower, same bytes).

References
----------
Rundgren, A., Jordan, B. and Erdtman, S. (2020). JSON Canonicalization Scheme (JCS). RFC 8785.
ECMA-262, Number::toString (section 6.1.6.1.20).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import rfc8785

from .._exceptions import InputError
from ..calibration import canonical_json

__all__ = ["ENCODINGS", "FAST_ROUTE", "JCS", "REPR", "check_jcs_settings", "encoder", "encoding_of", "jcs_line", "unsafe_integer"]

#: RFC 8785 lines (headers since 0.5.0 say ``"encoding": "jcs"``)
JCS = "jcs"
#: Python-repr canonical JSON: every log whose header names no encoding
REPR = "repr"
ENCODINGS = (JCS, REPR)

_SORTED = msgspec.json.Encoder(order="sorted")
#: non-integral floats msgspec writes in RFC 8785's notation: _LO <= |x| < _HI
_LO, _HI = 1e-5, 1e16
_MAX_INT = 2**53 - 1
_MAX_FLOAT = float(2**53)
_MAX_DEPTH = 32
_PLAIN = frozenset((str, bool, type(None)))


class _Outside(Exception):
    """A value outside the fast route's domain: the library encodes the record."""


def _ready(obj: Any, depth: int) -> Any:
    """``obj`` with integral floats as ints (a copy where one changed; ``obj`` itself otherwise), or
    :class:`_Outside` when msgspec's bytes could differ from RFC 8785's."""
    t = type(obj)
    if t is dict:
        if depth >= _MAX_DEPTH or not "".join(obj).isascii():  # a non-str key: TypeError, the library decides
            raise _Outside
        out = None
        for k, v in obj.items():
            tv = type(v)
            if tv is float:
                if v.is_integer():
                    if not -_MAX_FLOAT < v < _MAX_FLOAT:
                        raise _Outside
                    if out is None:
                        out = obj.copy()
                    out[k] = int(v)
                elif not _LO <= abs(v) < _HI:  # NaN and infinities too
                    raise _Outside
            elif tv in _PLAIN:
                continue
            elif tv is int:
                if not -_MAX_INT <= v <= _MAX_INT:
                    raise _Outside
            elif (w := _ready(v, depth + 1)) is not v:
                if out is None:
                    out = obj.copy()
                out[k] = w
        return obj if out is None else out
    if t is list or t is tuple:
        if depth >= _MAX_DEPTH:
            raise _Outside
        new = [_ready(v, depth + 1) for v in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else new
    if t is float:
        if obj.is_integer():
            if not -_MAX_FLOAT < obj < _MAX_FLOAT:
                raise _Outside
            return int(obj)
        if not _LO <= abs(obj) < _HI:
            raise _Outside
        return obj
    if t in _PLAIN or (t is int and -_MAX_INT <= obj <= _MAX_INT):
        return obj
    raise _Outside


def _fast_route_holds() -> bool:
    """Whether this msgspec writes, on probes at the edges of the fast route's domain, exactly the bytes of
    the ``rfc8785`` library (checked once at import: the fast route depends on msgspec's float and string
    output, which a future msgspec could change; when it does, :func:`jcs_line` uses the library only)."""
    probes = [{"b": [1e-5, -1e-5, 999999999999999.9, 3.0, -0.0, 2.0**52, 0.1, 123.456, 2.5e-5, 1.7976931348623157e15, 5e-5], "a": 0, "A": -(2**53 - 1),
               "s": "\x00\x1f\x7f\"\\/\u2028\u2029\u00e9\ufeff\uffff\U0001f600", "t": [True, None, False, 2**53 - 1]}]
    try:
        return all(_SORTED.encode(_ready(p, 0)).decode("utf-8") == rfc8785.dumps(p).decode("utf-8") for p in probes)
    except Exception:  # noqa: BLE001 - any failure: no fast route
        return False


#: the fast route is taken only when msgspec passed the import-time check
FAST_ROUTE = _fast_route_holds()


def jcs_line(record: Any) -> str:
    """The RFC 8785 encoding of ``record`` (a line of a ``"jcs"`` audit log, without newline).

    Bytes equal ``rfc8785.dumps(record)`` decoded as UTF-8 (see the module's fast route). Raises
    :class:`ValueError` for what RFC 8785 cannot hold (NaN, infinities, integers beyond
    :math:`\\pm(2^{53}-1)`, lone surrogates, non-string keys).

    >>> jcs_line({"b": [1e21, 1e-7, -0.0, 5e-324, 2.0, 0.00001], "a": "é"})
    '{"a":"é","b":[1e+21,1e-7,0,5e-324,2,0.00001]}'
    """
    if FAST_ROUTE:
        try:
            return _SORTED.encode(_ready(record, 0)).decode("utf-8")
        except (_Outside, TypeError, msgspec.EncodeError, UnicodeError, RecursionError):
            pass
    return rfc8785.dumps(record).decode("utf-8")


def encoding_of(header: Mapping[str, Any]) -> str:
    """The encoding an audit log's header record names (:data:`REPR` when it names none: written before
    0.5.0). Raises :class:`ValueError` naming the field for an encoding this version does not know."""
    enc = header.get("encoding", REPR)
    if enc not in ENCODINGS:
        raise ValueError(f"the header's encoding {enc!r} is unknown to deploysignal (known: {', '.join(map(repr, ENCODINGS))})")
    return enc


def encoder(encoding: str) -> Callable[[Any], str]:
    """The function writing a record's line in ``encoding`` (:data:`JCS` or :data:`REPR`).

    >>> encoder(JCS)({"x": 1.0}), encoder(REPR)({"x": 1.0})
    ('{"x":1}', '{"x":1.0}')
    """
    if encoding == JCS:
        return jcs_line
    if encoding == REPR:
        return canonical_json
    raise ValueError(f"unknown audit encoding {encoding!r} (known: {', '.join(map(repr, ENCODINGS))})")


def unsafe_integer(record: Any, path: str = "") -> tuple[str, int] | None:
    """The dotted path and value of the first integer (not bool) beyond :math:`\\pm(2^{53}-1)` in
    ``record`` (dict keys in sorted order), or None: what an RFC 8785 line cannot hold.

    >>> unsafe_integer({"settings": {"window": 2**53 + 1, "alpha": 0.05}}), unsafe_integer({"a": [1, True]})
    (('settings.window', 9007199254740993), None)
    """
    if type(record) is int:
        return None if -_MAX_INT <= record <= _MAX_INT else (path, record)
    if isinstance(record, Mapping):
        for k in sorted(record, key=str):
            if (hit := unsafe_integer(record[k], f"{path}.{k}" if path else str(k))) is not None:
                return hit
    elif isinstance(record, (list, tuple)):
        for i, v in enumerate(record):
            if (hit := unsafe_integer(v, f"{path}[{i}]")) is not None:
                return hit
    return None


def check_jcs_settings(settings: Mapping[str, Any], option: Callable[[str], str] | None = None) -> None:
    """Refuse, before anything is written, settings that an RFC 8785 audit header cannot hold: an integer
    beyond :math:`2^{53}-1` (RFC 8785 numbers are IEEE-754 doubles). Raises :class:`InputError` naming
    the setting: as ``option(dotted field name)`` (a CLI's ``--option``), or without ``option`` as the
    error's ``column`` (the service's field).

    >>> check_jcs_settings({"window": 2**53 + 1}, lambda f: "--" + f.replace("_", "-"))
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: --window: 9007199254740993 is beyond 9007199254740991 (2^53 - 1), the largest integer an RFC 8785 audit line holds; give a smaller value (a window longer than the stream is never reached anyway)
    """
    hit = unsafe_integer(settings)
    if hit is not None:
        name, value = hit
        why = (f"{value} is beyond {_MAX_INT} (2^53 - 1), the largest integer an RFC 8785 audit line holds;"
               " give a smaller value (a window longer than the stream is never reached anyway)")
        raise InputError(why, column=name) if option is None else InputError(f"{option(name)}: {why}")
