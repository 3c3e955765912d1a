"""``deploysignal eval``: scenario suite x methods Monte Carlo plus real-data benchmarks, written as a report.

Wire into the main app with ``app.add_typer(eval_app, name="eval")`` (the callback runs the command).
Exit codes: 0 report written, 2 bad input / usage.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._exceptions import DeploySignalError, InputError
from ..evaluation._realdata import run_realdata, summarise_realdata
from ..evaluation._report import headline_table, write_report
from ..evaluation._runner import METHOD_NAMES, build_methods, run_suite, summarise
from ..simulate._suite import SUITE

__all__ = ["QUICK", "FULL", "app", "eval_command"]

app = typer.Typer(add_completion=False, help="Evaluate the gate against peer methods on the scenario suite and real data.")
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

#: (replicates per scenario, real-data runs per dataset and kind: None = all)
QUICK = (10, 3)
FULL = (200, None)


def _split(value: Optional[str], allowed: tuple[str, ...], what: str) -> list[str]:
    if not value:
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise InputError(f"unknown {what}: {', '.join(bad)}; choose from {', '.join(allowed)}")
    return items


@app.callback(invoke_without_command=True)
def eval_command(
    quick: bool = typer.Option(False, "--quick", help=f"CI size: {QUICK[0]} replicates per scenario, {QUICK[1]} real-data runs per dataset and kind."),
    out_dir: Path = typer.Option(Path("eval-report"), "--out", "-o", help="Directory for report.md, report.json and the PNG plots."),
    reps: Optional[int] = typer.Option(None, help=f"Replicates per scenario (default {QUICK[0]} quick, {FULL[0]} full)."),
    seed: int = typer.Option(0, help="Run seed; every replicate's seed derives from it."),
    alpha: float = typer.Option(0.05, help="Gate alpha and t-test level."),
    mode: str = typer.Option("one-sample", help="one-sample (against the baseline) or two-sample (against the live control)."),
    scenarios: Optional[str] = typer.Option(None, help=f"Comma-separated subset of: {', '.join(SUITE)}."),
    methods: Optional[str] = typer.Option(None, help=f"Comma-separated subset of: {', '.join(METHOD_NAMES)}."),
    realdata: bool = typer.Option(True, "--realdata/--no-realdata", help="Also run the NAB / SMD / ASD benchmarks."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding nab/, smd/, asd/ (default: ../shared/data or $DEPLOYSIGNAL_DATA)."),
    jobs: int = typer.Option(min(2, os.cpu_count() or 1), help="Worker processes for the Monte Carlo (results do not depend on it)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots (needs matplotlib)."),
    matched: bool = typer.Option(True, "--matched/--no-matched", help="Also run every baseline calibrated to a false-rollback rate <= alpha on disjoint null draws (<name>@matched)."),
) -> None:
    """Run scenarios x methods and write the evaluation report."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        sc = _split(scenarios, tuple(SUITE), "scenario")
        ms = _split(methods, METHOD_NAMES, "method")
        if not 0.0 < alpha < 1.0:
            raise InputError(f"alpha must lie in (0, 1), got {alpha}")
        if mode not in ("one-sample", "two-sample"):
            raise InputError(f"mode must be one-sample or two-sample, got {mode!r}")
        n_reps = reps if reps is not None else (QUICK[0] if quick else FULL[0])
        if n_reps < 1 or jobs < 1:
            raise InputError("reps and jobs must be >= 1")
        max_real = QUICK[1] if quick else None
        cmd = "deploysignal eval" + (" --quick" if quick else "") + (f" --reps {reps}" if reps is not None else "")
        cmd += "".join(f" --{k} {shlex.quote(str(v))}" for k, v in (("seed", seed), ("alpha", alpha), ("mode", mode)) if v != {"seed": 0, "alpha": 0.05, "mode": "one-sample"}[k])
        cmd += (f" --scenarios {','.join(sc)}" if scenarios else "") + (f" --methods {','.join(ms)}" if methods else "")
        cmd += "" if realdata else " --no-realdata"
        cmd += "" if matched else " --no-matched"
        cmd += f" --out {out_dir}"
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False) as prog:
            ctask = prog.add_task("calibrating baselines on null draws", total=None, visible=matched)
            task = prog.add_task("scenarios x methods", total=len(sc) * n_reps)
            run = run_suite(
                sc, ms, reps=n_reps, seed=seed, alpha=alpha, mode=mode, jobs=jobs, matched=matched,
                progress=lambda d, t: prog.update(task, completed=d, total=t),
                calibration_progress=lambda d, t: prog.update(ctask, completed=d, total=t),
            )
            real = None
            real_rows = None
            if realdata:
                rtask = prog.add_task("real data", total=None)

                def rp(ds: str, i: int, n: int) -> None:
                    prog.update(rtask, description=f"real data: {ds}", completed=i, total=n)

                real = run_realdata(lambda w: build_methods(ms, window=w, alpha=alpha, seed=seed), data_dir=data_dir, max_runs=max_real, progress=rp)
                real_rows = summarise_realdata(real[0])
                for msg in real[1]:
                    err.print(f"[yellow]{msg}[/yellow]")
        write_report(run, out_dir, realdata=real, realdata_rows=real_rows, command=cmd, plots=plots)
    except DeploySignalError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    out.print(headline_table(summarise(run.outcomes)))
    out.print(f"report written to {out_dir}/report.md")


if __name__ == "__main__":  # pragma: no cover - ``python -m deploysignal.cli._eval`` before the app wires it
    app()
