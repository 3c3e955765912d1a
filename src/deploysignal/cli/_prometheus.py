"""``deploysignal prometheus ...``: check a Prometheus spec against the server; read per-arm split ticks.

A thin adapter over :mod:`deploysignal.sources`. A spec file (YAML or JSON) is either the ``prometheus``
object of a pull-mode analysis (``canary`` / ``control`` queries) or a split spec (``arm_label``,
``arms``, ``units``, ``events``, ``histograms``); see docs/integrations.md. Secrets named by the spec
(files, environment variables) are read by this process without restriction. Exit codes: 0 ok, 2 bad
spec or a query the server refuses, 5 the server cannot be reached.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console

from .._exceptions import InputError
from .._text import read_utf8
from ..sources import PromAPIError, PrometheusSource, PrometheusSplitSource, PromUnavailable, PullSpec, SplitSpec
from ._app import _guard

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Prometheus: check specs, read per-arm split ticks.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _load(path: Path) -> PullSpec | SplitSpec:
    text = read_utf8(path)
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object")
    model: type[PullSpec] | type[SplitSpec] = SplitSpec if "arms" in data else PullSpec
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"{path}: {'.'.join(map(str, first['loc'])) or 'spec'}: {first['msg']}") from None


def _time(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        pass
    try:
        d = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise InputError(f"time {s!r} is neither epoch seconds nor ISO-8601") from None
    if d.tzinfo is None:
        raise InputError(f"time {s!r} has no time zone (add Z or +00:00)")
    return d.timestamp()


@app.command("check")
@_guard
def check(spec: Path = typer.Argument(..., help="Pull spec or split spec (YAML/JSON).")) -> None:
    """Evaluate every query of SPEC once now: each must parse and return one series (pull) or carry the
    arm label and the configured bucket bounds (split). Prints a warning per query with no series now."""
    s = _load(spec)
    src: Any = PrometheusSplitSource(s) if isinstance(s, SplitSpec) else PrometheusSource(s.url, s.canary, s.control, connection=s)
    try:
        warnings = src.validate(time.time())
    except PromUnavailable as exc:
        err.print(f"[red]error[/red]: prometheus at {s.url} cannot be reached: {exc}")
        raise typer.Exit(5) from None
    finally:
        src.close()
    for w in warnings:
        err.print(f"[yellow]warning[/yellow]: {w}")
    out.print(f"ok: {spec} ({'split' if isinstance(s, SplitSpec) else 'pull'} spec, {len(warnings)} warning(s))")


@app.command("split-ticks")
@_guard
def split_ticks_cmd(
    spec: Path = typer.Argument(..., help="Split spec (YAML/JSON)."),
    start: str = typer.Option(..., help="First grid time (epoch seconds or ISO-8601 with zone); rounded up to the grid."),
    end: str = typer.Option(..., help="Last grid time; rounded down to the grid."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="JSONL file (default: stdout)."),
) -> None:
    """Read the aggregated split ticks (one JSON object per line) for every grid time in [START, END];
    grid times where an arm's units are unknown are gaps, and metrics left out of an arm's tick are
    missing, both listed on stderr with their reason. A grid time later than now minus settle_seconds
    is refused (exit 2): its scrapes may still be in flight."""
    s = _load(spec)
    if not isinstance(s, SplitSpec):
        raise InputError(f"{spec}: not a split spec (needs arm_label, arms, units)")
    t0, t1 = _time(start), _time(end)
    if t1 < t0:
        raise InputError("--end is before --start")
    src = PrometheusSplitSource(s)
    try:
        got = src.read(src.grid(t0, t1))
    except PromUnavailable as exc:
        err.print(f"[red]error[/red]: prometheus at {s.url} cannot be reached: {exc}")
        raise typer.Exit(5) from None
    except PromAPIError as exc:
        raise InputError(f"prometheus refused a query of {spec}: {exc}") from None
    finally:
        src.close()
    for g in got.gaps:
        err.print(f"[yellow]gap[/yellow] {g['timestamp']}: {g['reason']}")
    for m in got.missing:
        err.print(f"[yellow]missing[/yellow] {m['timestamp']} {m['arm']} {m['metric']}: {m['reason']}")
    text = "".join(json.dumps(t, separators=(",", ":"), sort_keys=True) + "\n" for t in got.ticks)
    if output is None:
        out.file.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"{len(got.ticks)} ticks, {len(got.gaps)} gaps, {len(got.missing)} missing metrics -> {output}")
