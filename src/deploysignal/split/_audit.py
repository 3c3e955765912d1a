"""Audit log of a split gate: hash-chained canonical JSON lines, and their byte-exact replay.

Line 1 is the header record (``family = "header"``, ``mode = "split"``: the metric specs, the settings,
the input kind and the deploysignal version); then, per tick, one record per family (``log_evidence``,
``peak_log_evidence``, ``threshold``, ``alpha``, ``fire``, ``reason``, ``effect`` with the confidence
sequence) and the gate's record (``verdict``, ``final``, ``decided_at_tick``, ``fired``, ``reason``).
Every line is chained (:mod:`deploysignal.audit._chain`): ``deploysignal audit verify`` checks it and
:func:`replay_split` re-derives every line from the input and compares byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from .. import __version__
from .._exceptions import ReplayMismatch
from .._text import JSON_UNUSABLE
from ..audit import compare_lines
from ..audit._chain import GENESIS, chain_records, verify_chain
from ._data import SplitData
from ._gate import SplitGate
from ._spec import LEGACY_RATIO_LABEL, MetricSpec, SplitSettings, with_legacy_label

__all__ = ["SplitAuditWriter", "replay_split", "split_header"]


def split_header(specs: list[MetricSpec], settings: SplitSettings, source: str) -> dict[str, Any]:
    """The header record: everything replay needs besides the input file."""
    st = settings.model_dump(mode="json")
    for k in ("block_seconds", "share_changes"):  # absent at their defaults: headers written before they existed replay
        if st[k] == SplitSettings.model_fields[k].default:
            del st[k]
    if st["ratio_label"] == LEGACY_RATIO_LABEL:  # what its absence means: a 0.4.0 analysis keeps its header's bytes
        del st["ratio_label"]
    return {"family": "header", "mode": "split", "source": source, "metrics": [s.to_dict() for s in specs],
            "settings": st, "gate_version": __version__}


class SplitAuditWriter:
    """Writes chained audit lines to ``fh``: the header first, then each tick's records, flushed per tick."""

    def __init__(self, fh: IO[str], header: dict[str, Any]) -> None:
        self._fh = fh
        self.head = GENESIS
        self.write([header])

    def write(self, records: list[dict[str, Any]]) -> None:
        lines, self.head = chain_records(records, self.head)
        self._fh.write("".join(line + "\n" for line in lines))
        self._fh.flush()


def _lines(header: dict[str, Any], specs: list[MetricSpec], settings: SplitSettings, data: SplitData) -> Iterator[str]:
    lines, head = chain_records([header])
    yield from lines
    gate = SplitGate(specs, settings)
    for t in range(data.n_ticks):
        lines, head = chain_records(gate.update(data, t).records(), head)
        yield from lines


def replay_split(lines: list[str], load: Callable[[list[MetricSpec], SplitSettings, str], SplitData]) -> int:
    """Re-run the split gate the audit header describes on ``load(specs, settings, source)`` and compare
    every line byte for byte (header included). Returns the number of lines matched.

    Raises :class:`ReplayMismatch` naming the line: a broken chain, an unusable header, a differing record.
    """
    if not lines:
        raise ReplayMismatch("audit log is empty", line=1)
    rep = verify_chain(lines)
    if not rep.ok:
        raise ReplayMismatch(f"hash chain broken: {rep.reason}", line=rep.bad_line)
    try:
        header = json.loads(lines[0])["record"]
        specs = [MetricSpec.from_dict(m) for m in header["metrics"]]
        settings = SplitSettings.model_validate(with_legacy_label(header["settings"]))
        source = str(header["source"])
    except (KeyError, TypeError, ValueError, *JSON_UNUSABLE) as exc:
        raise ReplayMismatch(f"audit header is not a split header ({exc})", line=1) from None
    if header.get("mode") != "split":
        raise ReplayMismatch("audit header is not a split-mode header (replay it without --split)", line=1)
    data = load(specs, settings, source)
    return compare_lines(_lines(header, specs, settings, data), lines, header, first_line=1)
