"""The compiled config's content id, computed without the standard library's JSON encoder.

:meth:`CompiledConfig.content_id <deploysignal.calibration.CompiledConfig.content_id>` hashes the
canonical JSON of the payload; :func:`~deploysignal.calibration.canonical_json` writes it with msgspec
only when every float lies where msgspec and the standard library print alike, and a compiled baseline's
reference samples (hundreds of standardised innovations per tier) nearly always hold a value below
1e-4, so most compiles went through the standard library (a fifth of a compile's time, with the Python
walk that checks the domain). Here the reference arrays are checked vectorised and each float outside
that domain is handed to msgspec as its ``repr`` (``msgspec.Raw``), which is exactly what the standard
library writes for a finite float; everything else of the payload is checked as
``canonical_json`` checks it. Anything this cannot vouch for (non-finite values, non-ASCII output, a
failed check) goes to ``CompiledConfig.content_id``: the id is the same bytes' hash either way.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from ._config import _FAST, _FAST_MAX, _FAST_MIN, _FAST_OK, CompiledConfig, _plain, id_of_canonical

__all__ = ["content_id"]


def _raw_lists(arr: np.ndarray) -> list | None:
    """``arr.tolist()`` with every float outside msgspec's agreeing domain as ``msgspec.Raw(repr)``;
    ``None`` for non-finite values (the standard library must refuse them)."""
    if not np.isfinite(arr).all():
        return None
    out = arr.tolist()
    mag = np.abs(arr)
    for idx in np.argwhere((arr != 0.0) & ((mag < _FAST_MIN) | (mag >= _FAST_MAX))).tolist():
        row = out
        for i in idx[:-1]:
            row = row[i]
        row[idx[-1]] = msgspec.Raw(repr(row[idx[-1]]).encode("ascii"))
    return out


def content_id(payload: dict[str, Any], arrays: dict[str, dict[str, np.ndarray]]) -> str:
    """``CompiledConfig.content_id(payload)``, bit for bit.

    ``arrays[key]`` maps the names of the dict ``payload[key]`` to float arrays whose ``tolist()`` is
    that dict's value (the compiler's reference samples per tier); the caller guarantees it.
    """
    body = {k: v for k, v in payload.items() if k != "version_id"}
    if not _FAST_OK or not _plain({k: v for k, v in body.items() if k not in arrays}):
        return CompiledConfig.content_id(payload)
    for key, named in arrays.items():
        lists = {name: _raw_lists(np.asarray(a, dtype=float)) for name, a in named.items()}
        if any(v is None for v in lists.values()) or set(lists) != set(body[key]):
            return CompiledConfig.content_id(payload)
        body[key] = lists
    try:
        out = _FAST.encode(body)  # type: ignore[union-attr]  # _FAST_OK implies _FAST
    except Exception:  # noqa: BLE001 - e.g. a lone surrogate: the standard library decides
        return CompiledConfig.content_id(payload)
    if not out.isascii() or b"\x7f" in out:
        return CompiledConfig.content_id(payload)
    return id_of_canonical(out)
