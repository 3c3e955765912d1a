"""``deploysignal gate --split`` / ``--split-ticks`` and ``deploysignal replay --split``: the split mode's adapter."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from .._exceptions import InputError
from ..calibration import canonical_json
from ..split import (
    MetricSpec, SplitData, SplitGate, SplitSettings, read_requests, read_split_signals, read_split_ticks, requests_to_data,
    resolve_specs, settings_error, ticks_to_data,
)
from ..split._spec import tick_specs
from ..sources._files import _parse_time
from ..split._audit import SplitAuditWriter, replay_split, split_header

__all__ = ["load_split", "replay_split_file", "run_split", "split_settings"]


def split_settings(**kw: Any) -> SplitSettings:
    try:
        return SplitSettings(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as exc:
        raise settings_error(exc) from None


def _tick_specs(signals: Path | None, where: Path) -> list[MetricSpec]:
    if signals is None:
        raise InputError(f"{where}: --split-ticks needs --signals (each metric's kind, direction and, for continuous ones, edges)")
    return tick_specs(read_split_signals(signals), str(signals))


def load_split(split: Path | None, split_ticks: Path | None, signals: Path | None, settings: SplitSettings) -> tuple[list[MetricSpec], SplitData, list[str], str]:
    """Specs, tick data, notes on inferred metadata and the input kind (``requests`` or ``ticks``)."""
    if (split is None) == (split_ticks is None):
        raise InputError("give exactly one of --split REQUESTS and --split-ticks FILE")
    if split_ticks is not None:
        specs = _tick_specs(signals, split_ticks)
        gaps: dict[str, list[tuple[int, str]]] = {}
        data = ticks_to_data(read_split_ticks(split_ticks), specs, where=f"{split_ticks} tick", gaps=gaps)
        notes = [f"{m}: present in one arm only in {len(g)} input objects ({', '.join(f'{i} ({arm} only)' for i, arm in g[:10])}"
                 f"{', ...' if len(g) > 10 else ''}): not tested there; sources must emit zero counts for both arms" for m, g in gaps.items()]
        for n in notes:
            sys.stderr.write(f"warning: {n}\n")
        return specs, data, notes, "ticks"
    assert split is not None
    log = read_requests(split)
    specs, notes = resolve_specs(log, read_split_signals(signals) if signals else None)
    for n in notes:  # inferred metadata changes what the verdict means: say so where a user sees it
        sys.stderr.write(f"warning: {n}\n")
    return specs, _bucket(log, specs, settings), notes, "requests"


def _bucket(log: Any, specs: list[MetricSpec], settings: SplitSettings) -> SplitData:
    return requests_to_data(log, specs, settings.tick_seconds, settings.unit_timeout, block_seconds=settings.block_seconds,
                            share_changes=settings.share_changes)


def parse_share_changes(value: str | None) -> tuple[float, ...] | None:
    """``--share-changes``: a file with one time a line, or comma-separated times (ISO-8601 or epoch seconds)."""
    if value is None:
        return None
    p = Path(value)
    items = [x.strip() for x in (p.read_text(encoding="utf-8").splitlines() if p.is_file() else value.split(","))]
    out = []
    for i, x in enumerate(items):
        if x:
            try:
                out.append(_parse_time(x, i + 1))
            except InputError as exc:
                raise InputError(f"--share-changes, item {i + 1}: {exc.message}") from None
    if not out:
        raise InputError("--share-changes: no times given")
    return tuple(sorted(out))


def run_split(specs: list[MetricSpec], settings: SplitSettings, data: SplitData, source: str, audit: Path | None) -> dict[str, Any]:
    """Run the gate tick by tick (writing the chained audit log when asked); the summary."""
    gate = SplitGate(specs, settings)
    if audit is None:
        gate.run_batch(data)
    else:
        with audit.open("w", encoding="utf-8") as fh:
            writer = SplitAuditWriter(fh, split_header(specs, settings, source))
            for t in range(data.n_ticks):
                writer.write(gate.update(data, t).records())
    return gate.summary()


def print_split(out: Console, s: dict[str, Any], notes: list[str]) -> None:
    colour = {"proceed": "green", "extend": "yellow", "rollback": "red"}[s["verdict"]]
    t = Table(title="deploysignal gate --split", show_header=False)
    t.add_row("verdict", f"[bold {colour}]{s['verdict']}[/]")
    t.add_row("decided at tick", "-" if s["decided_at_tick"] is None else str(s["decided_at_tick"]))
    t.add_row("ticks evaluated", str(s["ticks"]))
    if s["reason"]:
        t.add_row("why", s["reason"])
    for name, e in s["effects"].items():
        t.add_row(name, e["explain"])
    for n in notes:
        t.add_row("note", n)
    out.print(t)


def gate_split(out: Console, *, split: Path | None, split_ticks: Path | None, signals: Path | None, audit: Path | None, as_json: bool,
               **kw: Any) -> str:
    """The whole ``gate --split`` command; returns the verdict."""
    if split_ticks is not None and any(kw.get(k) is not None for k in ("tick_seconds", "unit_timeout", "block_seconds", "share_changes")):
        raise InputError("--tick-seconds, --unit-timeout, --block-seconds and --share-changes apply to --split request logs; split ticks are already ticks")
    kw["share_changes"] = parse_share_changes(kw.get("share_changes"))
    settings = split_settings(**kw)
    specs, data, notes, source = load_split(split, split_ticks, signals, settings)
    summary = run_split(specs, settings, data, source, audit)
    if settings.canary_share is None:
        notes = [*notes, "no --canary-share: the sample ratio is not checked, so a canary losing units (crashes, "
                 "timeouts the router retries on stable) is not seen"]
    summary["notes"] = notes
    if as_json:
        sys.stdout.write(canonical_json(summary) + "\n")
    else:
        print_split(out, summary, notes)
    return str(summary["verdict"])


def replay_split_file(audit: Path, split: Path | None, split_ticks: Path | None) -> int:
    """``deploysignal replay --split``: the audit log's lines re-derived from the input, byte for byte."""
    data = audit.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
    lines = text.splitlines()

    def load(specs: list[MetricSpec], settings: SplitSettings, source: str) -> SplitData:
        if source == "ticks":
            if split_ticks is None:
                raise InputError(f"{audit}: the log was written from split ticks: give --split-ticks FILE")
            return ticks_to_data(read_split_ticks(split_ticks), specs, where=f"{split_ticks} tick")
        if split is None:
            raise InputError(f"{audit}: the log was written from a request log: give --split REQUESTS")
        log = read_requests(split)
        if sorted(log.values) != sorted(sp.name for sp in specs):
            raise InputError(f"{split}: metric columns {sorted(log.values)} differ from the audit log's {sorted(sp.name for sp in specs)}")
        return _bucket(log, specs, settings)

    return replay_split(lines, load)
