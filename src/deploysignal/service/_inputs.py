"""Text the service refuses before any endpoint sees it: lone surrogates and NUL in JSON bodies, NUL in
the request path or query, control characters in names.

A JSON string may spell a lone UTF-16 surrogate (``"\\ud800"``): Python's JSON decoder accepts it, but
the resulting text cannot be encoded as UTF-8, so hashing it (a Flagger ``metadata.token``), storing it
or writing it to the audit chain failed with a 500. NUL (``"\\u0000"``) cannot be stored by PostgreSQL
(``text`` columns refuse it) and truncates C strings. Neither can be meant by any field of this API, so
:class:`InputGuard` refuses both anywhere in a JSON body, and NUL (``%00``) anywhere in the request
path or query string, with a 422 (400 for the path) that names the field. Names that end up in the
audit chain, in metric labels and in error messages (signal, metric, cohort and tier names) may in
addition hold no control characters and no invisible format characters: Unicode category Cf (bidi
overrides such as U+202E, zero-width characters, U+FEFF) and the line and paragraph separators U+2028,
U+2029, which can spoof or break what a name is shown in (:func:`check_name`, :func:`name_problem`).

Cost: a search for a backslash over the body (0.1 ms for a 2 MB, 10,000-tick batch; 3-5 ms with a
regular expression on the same 2 core machine), then, only if one is found, a regular expression for
escapes of a surrogate or of NUL, and only if one of those is found, a second decoding of the body to name the field. A
correctly paired surrogate (an emoji written as two escapes) passes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, model_validator
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._exceptions import InputError

__all__ = ["CONTROL_CHARS", "MAX_DEPTH", "InputGuard", "Shallow", "check_name", "depth_problem", "name_problem", "string_problem", "text_problem"]

#: control characters (C0, DEL, C1): not allowed in names
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")
_SUSPECT = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_problem(s: str) -> str | None:
    """Why ``s`` cannot be accepted as text anywhere in a request, or None.

    >>> text_problem("ok \\U0001F600"), text_problem("a\\ud800"), text_problem("a\\x00b")
    (None, 'holds a lone UTF-16 surrogate (\\\\ud800), which is not Unicode text', 'holds a NUL character (\\\\u0000)')
    """
    m = _BAD_TEXT.search(s)
    if m is None:
        return None
    if m.group() == "\x00":
        return "holds a NUL character (\\u0000)"
    return f"holds a lone UTF-16 surrogate (\\u{ord(m.group()):04x}), which is not Unicode text"


def string_problem(doc: Any, root: str = "body") -> str | None:
    """The first string (object key or value) of a decoded JSON document that :func:`text_problem`
    refuses, as ``"<location>: <why>"``; None when there is none. Iterative: any nesting depth.

    >>> string_problem({"metadata": {"token": "\\udc00"}})
    'body.metadata.token: holds a lone UTF-16 surrogate (\\\\udc00), which is not Unicode text'
    >>> string_problem({"ticks": [{"cohort": "a\\x00"}]}), string_problem({"a\\x00": 1})
    ('body.ticks.0.cohort: holds a NUL character (\\\\u0000)', "body: the key 'a' holds a NUL character (\\\\u0000)")
    """
    stack: list[tuple[str, Any]] = [(root, doc)]
    while stack:
        loc, v = stack.pop()
        if isinstance(v, str):
            why = text_problem(v)
            if why is not None:
                return f"{loc}: {why}"
        elif isinstance(v, dict):
            items = list(v.items())
            for k, _ in items:
                why = text_problem(k)
                if why is not None:
                    return f"{loc}: the key {_shown(k)} {why}"
            stack.extend((f"{loc}.{k}", x) for k, x in reversed(items))
        elif isinstance(v, list):
            stack.extend((f"{loc}.{i}", x) for i, x in reversed(list(enumerate(v))))
    return None


#: nesting allowed in a request model that takes free-form values (Flagger's payload, a Kayenta
#: execution request, an analysis' config): a real one nests less than 10 levels; pydantic cannot
#: serialise a value nested about 255 deep, so such a value was accepted, then answered 500 (and a
#: Flagger event recorded with it would have made GET /v1/flagger/events fail)
MAX_DEPTH = 64


def depth_problem(doc: Any, limit: int = MAX_DEPTH, root: str = "body") -> str | None:
    """Where a decoded JSON document nests deeper than ``limit`` objects/arrays, as ``"<location>:
    <why>"``; None when it does not. Iterative: any nesting depth.

    >>> depth_problem({"a": [[1]]}, limit=3) is None, depth_problem({"a": [[[1]]]}, limit=3)
    (True, 'body.a.0.0: nested deeper than 3 objects/arrays (the limit of this request)')
    """
    stack: list[tuple[str, Any, int]] = [(root, doc, 1)]
    while stack:
        loc, v, d = stack.pop()
        if isinstance(v, dict | list):
            if d > limit:
                return f"{loc}: nested deeper than {limit} objects/arrays (the limit of this request)"
            items = v.items() if isinstance(v, dict) else enumerate(v)
            stack.extend((f"{loc}.{_printable(str(k)) or '...'}", x, d + 1) for k, x in items if isinstance(x, dict | list))
    return None


class Shallow(BaseModel):
    """Base of request models that take free-form values: input nested deeper than
    :data:`MAX_DEPTH` is a validation error (422) naming where, before any field is read."""

    @model_validator(mode="before")
    @classmethod
    def _shallow(cls, data: Any) -> Any:
        why = depth_problem(data)
        if why is not None:
            raise ValueError(why)
        return data


def _shown(s: str) -> str:
    """A name as it may be echoed in a message: its printable characters only, at most 40.

    >>> _shown("a\\x00b"), _shown("\\ud800")
    ("'ab'", '...')
    """
    kept = _printable(s)
    return repr(kept) if kept else "..."


def _printable(s: str) -> str:
    """The printable characters of the first 40 of ``s`` (no control characters, no surrogates)."""
    return "".join(ch for ch in s[:40] if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF)


_INVISIBLE = frozenset(("Cf", "Zl", "Zp"))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a name (a control or invisible format character), or None (the caller
    checks :func:`text_problem` first).

    >>> name_problem("p99"), name_problem("caf\u00e9"), name_problem("a\u202eb")
    (None, None, 'holds an invisible format character (U+202E; names may not)')
    """
    if CONTROL_CHARS.search(name):
        return "holds a control character (names may not)"
    if not name.isascii():
        for ch in name:
            if unicodedata.category(ch) in _INVISIBLE:
                return f"holds an invisible format character (U+{ord(ch):04X}; names may not)"
    return None


def check_name(name: object, field: str) -> None:
    """Refuse a name (signal, metric, cohort, tier) that is not a string or holds a control character
    or a lone surrogate: :class:`InputError` naming ``field``.

    >>> check_name("p99_latency_ms", "signals")
    >>> check_name("bad\\nname", "signals")
    Traceback (most recent call last):
    ...
    deploysignal._exceptions.InputError: column 'signals': name 'badname' holds a control character (names may not)
    """
    if not isinstance(name, str):
        raise InputError(f"a name must be a string, got {type(name).__name__}", column=field)
    why = text_problem(name) or name_problem(name)
    if why is not None:
        raise InputError(f"name {_shown(name)} {why}", column=field)


def check_names(names: Iterable[object], field: str) -> None:
    """:func:`check_name` on each of ``names``."""
    for n in names:
        check_name(n, field)


def _json_problem(body: bytes) -> str | None:
    if body.find(b"\\") < 0 or not _SUSPECT.search(body):  # the common case, no backslash at all: one memchr scan
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON (or too deep for the decoder): the endpoint's own parser says so
    return string_problem(doc)


class InputGuard:
    """Pure ASGI middleware: 400 for NUL (``%00``) in the request path or query string, 422 for a JSON
    body with a lone surrogate or NUL in any string, naming the field (see the module docstring).
    Place it inside the body-size limit: it reads the whole body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
        for what, raw in (("path", raw_path), ("query string", scope.get("query_string", b""))):
            if b"%00" in raw or b"\x00" in raw:
                await JSONResponse({"detail": f"the request {what} holds a NUL character (%00)"}, status_code=400)(scope, receive, send)
                return
        chunks: list[bytes] = []
        first: Message | None = None
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                first = msg
                break
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _json_problem(body)
        if problem is not None:
            await JSONResponse({"detail": f"invalid request: {problem}", "errors": [{"loc": problem.split(":", 1)[0].split("."), "msg": problem.split(": ", 1)[1]}]},
                               status_code=422)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first if first is not None and not chunks else {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
