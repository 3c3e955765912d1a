"""``deploysignal split-eval`` and the split scenarios of ``deploysignal simulate``: thin adapters.

Exit codes: 0 written, 2 bad input / usage.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._exceptions import DeploySignalError, InputError
from ..evaluation._split_eval import AZURE_DESIGN, SPLIT_METHODS, SplitEvalSettings, run_azure_eval, run_split_eval, summarise_split
from ..evaluation._split_report import write_split_report
from ..simulate._split import SPLIT_EFFECTS, SPLIT_WORLDS, simulate_split, write_split

__all__ = ["SPLIT_SCENARIOS", "split_eval", "write_split_scenario"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: ``deploysignal simulate`` names of the split scenarios: one per world, plus the real Azure trace.
SPLIT_SCENARIOS: tuple[str, ...] = tuple(f"split-{w.replace('_', '-')}" for w in SPLIT_WORLDS) + ("split-azure",)

#: (reps per null cell, reps per power cell, Azure runs divisor, peer runs on Azure) for --quick and full
QUICK = (4, 11, 50, 10)
FULL = (100, 55, 1, 200)


def _csv(value: Optional[str], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not value:
        return allowed
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad:
        raise InputError(f"unknown {what}: {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


def write_split_scenario(
    scenario: str, output: Path, *, seed: int, effect: str, volume: float, share: float, ticks: int, routing: Optional[str], data_dir: Optional[Path]
) -> list[Path]:
    """Write ``requests.csv``, ``signals.json`` and ``truth.json`` of a split scenario into ``output``."""
    if scenario == "split-azure":
        from ..evaluation._azure_split import AZURE_EFFECTS, azure_split, load_azure_trace

        if effect not in AZURE_EFFECTS:
            raise InputError(f"unknown effect {effect!r} for split-azure; choose from {', '.join(AZURE_EFFECTS)}")
        req = azure_split(load_azure_trace(data_dir), effect=effect, share=share, routing=routing or "request", seed=seed)
    else:
        world = scenario.removeprefix("split-").replace("-", "_")
        req = simulate_split(world, effect, volume=volume, share=share, ticks=ticks, routing=routing, seed=seed)
    return write_split(req, output)


def split_eval(
    quick: bool = typer.Option(False, "--quick", help=f"CI size: {QUICK[0]} runs per null cell, {QUICK[1]} per power cell, Azure runs / {QUICK[2]}."),
    output: Path = typer.Option(Path("docs/split_eval.md"), "-o", "--output", help="Markdown report (text above its generated mark is kept)."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="JSON report (default: the markdown path with .json)."),
    seed: int = typer.Option(0, help="Run seed; every replicate's seed derives from it."),
    alpha: float = typer.Option(0.05, help="False-rollback budget of every method."),
    reps_null: Optional[int] = typer.Option(None, help=f"Runs per null cell (default {QUICK[0]} quick, {FULL[0]} full)."),
    reps_power: Optional[int] = typer.Option(None, help=f"Runs per power cell (default {QUICK[1]} quick, {FULL[1]} full)."),
    volumes: str = typer.Option("50,500,5000", help="Requests per tick, comma-separated."),
    shares: str = typer.Option("0.05,0.5", help="Canary shares, comma-separated."),
    worlds: Optional[str] = typer.Option(None, help=f"Subset of: {', '.join(SPLIT_WORLDS)}."),
    effects: Optional[str] = typer.Option(None, help=f"Subset of: {', '.join(e for e in SPLIT_EFFECTS if e != 'none')}."),
    methods: Optional[str] = typer.Option(None, help=f"Subset of: {', '.join(SPLIT_METHODS)}."),
    azure: bool = typer.Option(True, "--azure/--no-azure", help="Also run random splits of the Azure LLM trace."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the Azure trace CSVs (default: $DEPLOYSIGNAL_DATA/azure_llm or ../shared/data/azure_llm)."),
    jobs: int = typer.Option(1, help="Worker processes (results do not depend on it)."),
) -> None:
    """Split gate against its peers (two-sample gate on aggregates, Kayenta, fixed-n at the end and at half)
    on the same seeded per-request logs; writes the markdown tables and a JSON report."""
    try:
        try:
            vols = tuple(float(v) for v in volumes.split(",") if v.strip())
            shs = tuple(float(v) for v in shares.split(",") if v.strip())
        except ValueError:
            raise InputError(f"volumes and shares must be comma-separated numbers, got {volumes!r} / {shares!r}") from None
        if jobs < 1:
            raise InputError("jobs must be >= 1")
        size = QUICK if quick else FULL
        settings = SplitEvalSettings(
            reps_null=size[0] if reps_null is None else reps_null,
            reps_power=size[1] if reps_power is None else reps_power,
            volumes=vols,
            shares=shs,
            worlds=_csv(worlds, tuple(SPLIT_WORLDS), "worlds"),
            effects=_csv(effects, tuple(e for e in SPLIT_EFFECTS if e != "none"), "effects"),
            seed=seed,
            alpha=alpha,
            methods=_csv(methods, SPLIT_METHODS, "methods"),
        )
        cmd = "deploysignal split-eval" + (" --quick" if quick else "")
        for flag, val, default in (
            ("--seed", seed, 0), ("--alpha", alpha, 0.05), ("--reps-null", reps_null, None), ("--reps-power", reps_power, None),
            ("--volumes", volumes, "50,500,5000"), ("--shares", shares, "0.05,0.5"), ("--worlds", worlds, None),
            ("--effects", effects, None), ("--methods", methods, None),
        ):
            if val != default:
                cmd += f" {flag} {val}"
        cmd += "" if azure else " --no-azure"
        cmd += f" -o {output}"
        t0 = time.perf_counter()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as prog:
            task = prog.add_task("split cells", total=None)
            raw = run_split_eval(settings, jobs=jobs, progress=lambda d, t: prog.update(task, completed=d, total=t))
            az = None
            if azure:
                design = tuple((e, r, s, max(1, n // size[2])) for e, r, s, n in AZURE_DESIGN)
                atask = prog.add_task("Azure trace splits", total=None)
                az = run_azure_eval(
                    design, seed=seed, alpha=alpha, methods=settings.methods, peer_runs=size[3], data_dir=data_dir, jobs=jobs,
                    progress=lambda d, t: prog.update(atask, completed=d, total=t),
                )
        rows = summarise_split(settings, raw)
        write_split_report(settings, rows, cmd, output, json_out or output.with_suffix(".json"), az)
    except (DeploySignalError, OSError) as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    if "split" in settings.methods and not any(r["method"] == "split" for r in rows):
        err.print("[yellow]the split gate (deploysignal.split) is not installed: its column is missing[/yellow]")
    out.print(f"report written to {output} and {json_out or output.with_suffix('.json')} in {time.perf_counter() - t0:.0f} s wall")
