"""Reading text files that must be UTF-8: errors name the file and the first line with a bad byte."""

from __future__ import annotations

from pathlib import Path

from ._exceptions import InputError

__all__ = ["JSON_UNUSABLE", "bad_utf8_line", "error_head", "is_utf8", "not_utf8_message", "read_utf8"]

#: what ``json.loads`` raises besides ``JSONDecodeError`` (a ``ValueError``): an integer beyond Python's
#: digit limit (``ValueError``), absurdly deep nesting (``RecursionError``)
JSON_UNUSABLE = (ValueError, RecursionError)


def bad_utf8_line(path: str | Path, data: bytes | None = None) -> int | None:
    """1-based line of the first byte of ``data`` (read from ``path`` when not given) that is not UTF-8;
    ``None`` when it decodes or cannot be read."""
    try:
        raw = Path(path).read_bytes() if data is None else data
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw.count(b"\n", 0, exc.start) + 1
    except OSError:
        pass
    return None


def error_head(exc: BaseException) -> str:
    """The error message up to its first ``;`` (Python's digit-limit error appends advice after it).

    >>> error_head(ValueError("Exceeds the limit (4300 digits): value has 4301 digits; use sys.set_int_max_str_digits()"))
    'Exceeds the limit (4300 digits): value has 4301 digits'
    """
    return str(exc).split(";")[0]


def is_utf8(line: str) -> bool:
    """False for text holding lone surrogates (bytes that were not UTF-8, decoded with ``surrogateescape``).

    >>> is_utf8("caf\\u00e9"), is_utf8(b"caf\\xe9".decode("utf-8", errors="surrogateescape"))
    (True, False)
    """
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def not_utf8_message(path: str | Path, data: bytes | None = None) -> str:
    """``"<path>: not UTF-8 text (line N)"`` (without the line when it cannot be found)."""
    line = bad_utf8_line(path, data)
    return f"{path}: not UTF-8 text" + (f" (line {line})" if line is not None else "")


def read_utf8(path: str | Path) -> str:
    """The file's text; :class:`InputError` naming the first line that is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(not_utf8_message(path, data)) from None
