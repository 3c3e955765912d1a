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
from ..evaluation._split_report import settings_from_report, write_split_report
from ..simulate._split import SPLIT_EFFECTS, SPLIT_WORLDS, simulate_split, write_split

__all__ = ["DEMO_CASES", "SPLIT_SCENARIOS", "split_demo", "split_eval", "write_split_scenario"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: ``deploysignal simulate`` names of the split scenarios: one per world, plus the real Azure trace.
SPLIT_SCENARIOS: tuple[str, ...] = tuple(f"split-{w.replace('_', '-')}" for w in SPLIT_WORLDS) + ("split-azure",)

#: (reps per null cell, reps per power cell, peer runs per Azure row) for --quick and the full run
QUICK = (4, 4, 4)
FULL = (3, 11, 20)
#: what --quick runs unless told otherwise: worlds, effects, volumes, shares, Azure design
QUICK_WORLDS = ("iid", "bursts", "share_step", "sessions")
QUICK_EFFECTS = ("errors_x2", "p99_tail")
QUICK_AZURE = (("none", "request", 0.5, 40), ("truncate", "request", 0.5, 8), ("error_bursts", "request", 0.5, 8), ("context_tail", "request", 0.5, 8))


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


#: ``deploysignal demo split``: (world, effect, requests per tick, canary share) of each row
DEMO_CASES: tuple[tuple[str, str, float, float], ...] = (
    ("iid", "none", 2000.0, 0.05),
    ("long_memory", "none", 2000.0, 0.05),
    ("bursts", "none", 2000.0, 0.05),
    ("share_step", "none", 2000.0, 0.05),
    ("sessions", "none", 2000.0, 0.5),
    ("bursts", "errors_x2", 2000.0, 0.05),
    ("diurnal", "p99_tail", 2000.0, 0.05),
    ("regimes", "eval_drop", 2000.0, 0.5),
    ("trending", "tier_shift", 2000.0, 0.5),
)


def split_demo(scenario: Optional[str], seed: int, console: Console) -> None:
    """Run the split gate (defaults, 60-tick window, no extension) on seeded split logs and show the
    verdict and the gate's reason; ``scenario`` (a ``split-*`` name) restricts to that world."""
    from rich.table import Table

    from ..evaluation._split_gate import SplitGateMethod
    from ..split import SplitGate, SplitSettings

    if scenario == "split-azure":
        raise InputError("the demo runs generated split worlds; for the Azure trace use `deploysignal simulate split-azure` and `gate --split`")
    world = None if scenario is None else scenario.removeprefix("split-").replace("-", "_")
    cases = [c for c in DEMO_CASES if world is None or c[0] == world] or [(world or "iid", "none", 2000.0, 0.05), (world or "iid", "errors_x2", 2000.0, 0.05)]
    t = Table(title=f"deploysignal demo: randomised split (seed {seed}, 60 ticks)")
    for col in ("world", "effect", "req/tick", "share", "truth", "verdict", "decided at", "why"):
        t.add_column(col)
    wrong = 0
    method = SplitGateMethod()
    for w, effect, volume, share in cases:
        req = simulate_split(w, effect, volume=volume, share=share, seed=seed)
        data, _ = method.data(req)
        gate = SplitGate(list(req.metrics), SplitSettings(window=req.n_ticks, max_extensions=0, unit_timeout=method.unit_timeout))
        gate.run_batch(data)
        summ = gate.summary()
        expected = req.truth["expected"]
        wrong += summ["verdict"] != expected
        colour = {"proceed": "green", "extend": "yellow", "rollback": "red"}[summ["verdict"]]
        why = "; ".join(e["explain"] for e in summ["effects"].values() if e["fired"]) or summ["reason"] or "-"
        t.add_row(w, effect, f"{volume:g}", "5->50%" if w == "share_step" else f"{100 * share:g}%", expected, f"[{colour}]{summ['verdict']}[/]",
                  str(summ["decided_at_tick"]), why)
    console.print(t)
    console.print(f"{len(cases) - wrong}/{len(cases)} verdicts match the simulated truth")


def _render(saved: Path, output: Path, json_out: Optional[Path]) -> None:
    import json

    try:
        doc = json.loads(saved.read_text(encoding="utf-8"))
        settings = settings_from_report(doc)
        target = json_out or output.with_suffix(".json")
        write_split_report(settings, doc["rows"], doc["command"], output, target, doc.get("azure"))
    except (DeploySignalError, OSError, ValueError, KeyError, TypeError) as exc:
        err.print(f"[red]error[/red]: cannot re-render {saved}: {exc!r}")
        raise typer.Exit(2) from None
    out.print(f"{saved} re-rendered into {output} and {target}")


def split_eval(
    quick: bool = typer.Option(False, "--quick", help=f"CI size: worlds {', '.join(QUICK_WORLDS)}, effects {', '.join(QUICK_EFFECTS)}, "
                               f"500 requests per tick, {QUICK[0]} runs per cell, 64 Azure splits."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Markdown report (text above its generated mark is kept; "
                                          "default docs/split_eval.md, with --render the saved JSON's .md sibling)."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="JSON report (default: the markdown path with .json)."),
    seed: int = typer.Option(0, help="Run seed; every replicate's seed derives from it."),
    alpha: float = typer.Option(0.05, help="False-rollback budget of every method."),
    reps_null: Optional[int] = typer.Option(None, help=f"Runs per null cell (default {QUICK[0]} quick, {FULL[0]} full)."),
    reps_power: Optional[int] = typer.Option(None, help=f"Runs per power cell (default {QUICK[1]} quick, {FULL[1]} full)."),
    volumes: Optional[str] = typer.Option(None, help="Requests per tick, comma-separated (default 50,500,5000; 500 with --quick)."),
    shares: str = typer.Option("0.05,0.5", help="Canary shares, comma-separated."),
    worlds: Optional[str] = typer.Option(None, help=f"Subset of: {', '.join(SPLIT_WORLDS)}."),
    effects: Optional[str] = typer.Option(None, help=f"Subset of: {', '.join(e for e in SPLIT_EFFECTS if e != 'none')}."),
    methods: Optional[str] = typer.Option(None, help=f"Subset of: {', '.join(SPLIT_METHODS)}."),
    synthetic: bool = typer.Option(True, "--synthetic/--no-synthetic", help="Run the generated null and power cells."),
    azure: bool = typer.Option(True, "--azure/--no-azure", help="Also run random splits of the Azure LLM trace."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the Azure trace CSVs (default: $DEPLOYSIGNAL_DATA/azure_llm or ../shared/data/azure_llm)."),
    jobs: int = typer.Option(1, help="Worker processes (results do not depend on it)."),
    render: Optional[Path] = typer.Option(None, "--render", help="Re-render a saved JSON report (its rows, command and "
                                          "settings) with the current report code into -o (default: the JSON's .md sibling) "
                                          "and --json-out (default: the -o path with .json); runs nothing and takes no other option."),
) -> None:
    """Split gate against its peers (two-sample gate on aggregates, Kayenta, fixed-n at the end and at half)
    on the same seeded per-request logs; writes the markdown tables and a JSON report."""
    if render is not None:
        others = (quick, seed != 0, alpha != 0.05, reps_null is not None, reps_power is not None, volumes, shares != "0.05,0.5",
                  worlds, effects, methods, not synthetic, not azure, data_dir, jobs != 1)
        if any(others):
            err.print("[red]error[/red]: --render re-renders a saved run as it was: it takes only -o/--output and --json-out")
            raise typer.Exit(2)
        _render(render, output or render.with_suffix(".md"), json_out)
        return
    output = output or Path("docs/split_eval.md")
    try:
        try:
            vols = tuple(float(v) for v in (volumes or ("500" if quick else "50,500,5000")).split(",") if v.strip())
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
            worlds=_csv(worlds, tuple(SPLIT_WORLDS), "worlds") if worlds or not quick else QUICK_WORLDS,
            effects=_csv(effects, tuple(e for e in SPLIT_EFFECTS if e != "none"), "effects") if effects or not quick else QUICK_EFFECTS,
            seed=seed,
            alpha=alpha,
            methods=_csv(methods, SPLIT_METHODS, "methods"),
        )
        cmd = "deploysignal split-eval" + (" --quick" if quick else "")
        for flag, val, default in (
            ("--seed", seed, 0), ("--alpha", alpha, 0.05), ("--reps-null", reps_null, None), ("--reps-power", reps_power, None),
            ("--volumes", volumes, None), ("--shares", shares, "0.05,0.5"), ("--worlds", worlds, None),
            ("--effects", effects, None), ("--methods", methods, None),
        ):
            if val != default:
                cmd += f" {flag} {val}"
        cmd += ("" if synthetic else " --no-synthetic") + ("" if azure else " --no-azure")
        cmd += f" -o {output}"
        t0 = time.perf_counter()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as prog:
            task = prog.add_task("split cells", total=None)
            raw = run_split_eval(settings, jobs=jobs, progress=lambda d, t: prog.update(task, completed=d, total=t)) if synthetic else {}
            az = None
            if azure:
                design = QUICK_AZURE if quick else AZURE_DESIGN
                atask = prog.add_task("Azure trace splits", total=None)
                az = run_azure_eval(
                    design, seed=seed, alpha=alpha, methods=settings.methods, peer_runs=size[2], data_dir=data_dir, jobs=jobs,
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
