"""``deploysignal simulate`` and ``deploysignal demo``: seeded scenarios written to files or run through
the gate (thin adapters; their help lists the scenario names, so this module imports the simulator).

Exit codes: 0 success, 2 bad input or usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .._exceptions import InputError
from ..simulate import SCENARIOS
from ._app import _guard, out, run_gate
from ._split_eval import SPLIT_SCENARIOS

__all__ = ["demo", "simulate_cmd"]


@_guard
def simulate_cmd(
    scenario: str = typer.Argument(..., help=f"One of: {', '.join(SCENARIOS)}; split mode: {', '.join(SPLIT_SCENARIOS)}."),
    seed: int = typer.Option(0),
    output: Path = typer.Option(..., "-o", "--output", help="Directory for baseline.csv, canary.csv, control.csv, truth.json "
                                "(split scenarios: requests.csv, signals.json, truth.json)."),
    effect: str = typer.Option("none", help="Split scenarios: change injected into the canary arm (none = null); "
                               "see `deploysignal split-eval --help` and docs/split_eval.md for the list."),
    volume: float = typer.Option(500.0, help="Split scenarios: mean requests per tick (both arms)."),
    share: float = typer.Option(0.05, help="Split scenarios: canary traffic share."),
    ticks: int = typer.Option(60, help="Split scenarios: ticks of 60 s."),
    routing: Optional[str] = typer.Option(None, help="Split scenarios: randomise by request or by session (default: the scenario's)."),
    data_dir: Optional[Path] = typer.Option(None, help="split-azure: folder of the Azure LLM trace CSVs."),
) -> None:
    """Write a seeded scenario: baseline, canary, control and the ground truth; or, for a split scenario,
    a per-request log of both arms (the REQUESTS format of `gate --split`) with its signals file."""
    from ..simulate import simulate
    from ..sources import write_csv
    from ._split_eval import write_split_scenario

    if scenario in SPLIT_SCENARIOS:
        paths = write_split_scenario(scenario, output, seed=seed, effect=effect, volume=volume, share=share, ticks=ticks, routing=routing, data_dir=data_dir)
        out.print("wrote " + ", ".join(str(p) for p in paths))
        return
    given = [f"--{k.replace('_', '-')}" for k, v, d in (("effect", effect, "none"), ("volume", volume, 500.0), ("share", share, 0.05),
                                                         ("ticks", ticks, 60), ("routing", routing, None), ("data_dir", data_dir, None)) if v != d]
    if given:
        raise InputError(f"{', '.join(given)} apply to split scenarios ({', '.join(SPLIT_SCENARIOS)}), not to {scenario!r}")
    sim = simulate(scenario, seed=seed)
    output.mkdir(parents=True, exist_ok=True)
    write_csv(sim.baseline, output / "baseline.csv")
    write_csv(sim.canary, output / "canary.csv")
    write_csv(sim.control, output / "control.csv")
    (output / "truth.json").write_text(json.dumps(sim.truth, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    out.print(f"wrote {output}/baseline.csv, canary.csv, control.csv, truth.json")


@_guard
def demo(
    scenario: Optional[str] = typer.Argument(None, help="One scenario (default: all canned scenarios); a split-* scenario or "
                                             "'split' runs the randomised-split gate."),
    seed: int = typer.Option(7),
    two_sample: bool = typer.Option(False, help="Compare against the live control stream instead of the baseline."),
) -> None:
    """Run the gate on seeded built-in scenarios and show what it decided and why."""
    from ..calibration import compile_baseline
    from ..gate import GateSettings
    from ..simulate import simulate
    from ._split_eval import split_demo

    if scenario == "split" or scenario in SPLIT_SCENARIOS:
        split_demo(None if scenario == "split" else scenario, seed, out)
        return
    names = [scenario] if scenario else list(SCENARIOS)
    t = Table(title=f"deploysignal demo (seed {seed}, {'two' if two_sample else 'one'}-sample)")
    for col in ("scenario", "truth", "verdict", "decided at", "families"):
        t.add_column(col)
    wrong = 0
    whys: list[str] = []
    for name in names:
        sim = simulate(name, seed=seed)
        cfg = compile_baseline(sim.baseline, seed=seed, robust_covariance=False)
        settings = GateSettings(mode="two-sample" if two_sample else "one-sample")
        summary, _ = run_gate(cfg, settings, sim.canary, sim.control if two_sample else None, None)
        ok = summary["verdict"] == sim.truth["expected"]
        wrong += not ok
        colour = {"proceed": "green", "extend": "yellow", "rollback": "red"}[summary["verdict"]]
        t.add_row(name, sim.truth["expected"], f"[{colour}]{summary['verdict']}[/]", str(summary["decided_at_tick"]), ",".join(summary["fired_families"]) or "-")
        whys.extend(f"  {name}, family {fam} ({r['action']}): {r['reason']}" for fam, r in sorted(summary["reasons"].items()))
        if summary.get("runtime_check", {}).get("fired_at", -1) >= 0:  # a one-sample proceed held by the run-time model check
            whys.append(f"  {name}, {summary['runtime_check']['status']}")
    out.print(t)
    if whys:  # the reasons in full, one a line, below the table (a table column would cut or squeeze them)
        out.print("why:")
        for line in whys:
            out.print(escape(line), soft_wrap=True)
    out.print(f"{len(names) - wrong}/{len(names)} verdicts match the simulated truth")
