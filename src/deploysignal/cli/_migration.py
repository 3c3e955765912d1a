"""CLI for paired migration and the release pipeline: ``migrate``, ``pipeline run``, ``drill``.

Exit codes: 0 promoted / success, 3 promotion halted (gate blocked, monitor not conclusive, migration
unfinished), 4 rolled back, 5 an actuator failed, 2 bad input or usage.  There is no option that
skips or overrides a promotion gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional, TypeVar

import httpx
import typer
from rich.console import Console

from .._exceptions import DeploySignalError
from ..migration import ProtocolSettings, QualityAggregator, ShadowCostModel, http_agent
from ..migration._live import ALLOWED_TABLES, SimulatedSQLPair, reference_db, run_migration
from ..migration._plan import PAPER_QUERIES_PER_DAY, AgentProfile, simulate_plan
from ..migration._settings_file import settings_from_mapping
from ..migration._simulation import SCENARIOS, run_evaluation, summary
from ..pipeline import DeploymentStore, load_pipeline, read_served_version, run_drill, run_pipeline
from ..pipeline._spec import FileActuator
from ._outputs import report_path

__all__ = ["app", "drill", "migrate_app", "pipeline_app"]

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
STATUS_EXIT = {"promoted": 0, "drill": 0, "blocked": 3, "running": 3, "rolled_back": 4, "failed": 5}

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Paired migration and release pipeline.")
migrate_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Paired migration of an AI agent.")
pipeline_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Versioned release pipelines.")
app.add_typer(migrate_app, name="migrate")
app.add_typer(pipeline_app, name="pipeline")


@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Bad input (library errors, unreadable files) -> one line on stderr and exit code 2, no traceback."""
    try:
        yield
    except (DeploySignalError, OSError) as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None


def _guard(fn: F) -> F:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _input_errors():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


def _load_queries(path: Path) -> list[dict[str, str]]:
    from .._exceptions import InputError
    from .._text import JSON_UNUSABLE, read_utf8
    from ..migration._quality import golden_problem

    rows = []
    first: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except JSON_UNUSABLE:  # JSONDecodeError (a ValueError), an integer beyond the digit limit, too deep nesting
            raise InputError(f"{path}: not valid JSON", row=i) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
            raise InputError("each line needs a string 'question' (optional 'qtype')", row=i, column="question")
        # the HTTP path has no grader callback: correctness is graded against the golden SQL only
        golden = obj.get("golden")
        if not isinstance(golden, str):
            got = "nothing" if golden is None else type(golden).__name__
            raise InputError(f"{path}: each line needs a string 'golden' (the reference SQL the answers are graded "
                             f"against), got {got}", row=i, column="golden")
        why = golden_problem(golden)  # one read query: a placeholder or a write is not a reference
        if why is not None:
            raise InputError(f"{path}: {why}: {golden[:80]!r}", row=i, column="golden")
        q = obj["question"]
        if q in first and first[q][1] != golden:  # answers are matched to their golden by the question text
            raise InputError(f"{path}: question {q[:80]!r} already on line {first[q][0]} with another golden",
                             row=i, column="question")
        first.setdefault(q, (i, golden))
        rows.append({"question": q, "qtype": str(obj.get("qtype", "default")), "golden": golden})
    if not rows:
        raise InputError(f"{path} holds no queries")
    return rows


def _settings(path: Optional[Path], latency_tolerance: Optional[float], sla_quantile: Optional[float],
              strategy: Optional[str]) -> ProtocolSettings:
    """Protocol settings: defaults, then the ``--settings`` YAML, then every command-line option given (an
    option left unset is None and keeps the file's value; one given always wins over the file)."""
    import yaml

    from .._exceptions import InputError
    from .._text import read_utf8

    raw: Any = None
    if path is not None:
        try:
            raw = yaml.safe_load(read_utf8(path))
        except yaml.YAMLError as e:
            raise InputError(f"{path}: not valid YAML: {e}", column="settings") from None
    st = settings_from_mapping(raw, ProtocolSettings())
    cli: dict[str, Any] = {}
    if strategy is not None:
        cli["strategy"] = strategy
    if latency_tolerance is not None:
        cli["harm_tolerances"] = {"latency": latency_tolerance}
    if sla_quantile is not None:
        cli["sla_quantile"] = sla_quantile
    return settings_from_mapping(cli, st)


_SETTINGS_HELP = ("YAML of protocol settings (ProtocolSettings fields, e.g. harm_tolerances: {latency: 0.05}, "
                  "sla_quantile: 0.99, margins: {...}); command-line options override it.")
_LAT_TOL_HELP = ("Latency harm tolerance in SLA units: rollback for latency needs the challenger slower than the "
                 "incumbent by more than this on average [default 0.05 = 10 ms at a 200 ms SLA], or its "
                 "--sla-quantile latency beyond the SLA.")
_STRATEGY_HELP = "shadow | canary | direct [default: the --settings file's strategy, else shadow]."
_SLA_Q_HELP = "Latency quantile the SLA bounds (harm when the challenger exceeds the SLA more often) [default 0.99]."


@migrate_app.command("run")
@_guard
def migrate_run(
    incumbent_url: Optional[str] = typer.Option(None, help="HTTP endpoint of the incumbent (POST {query})."),
    challenger_url: Optional[str] = typer.Option(None, help="HTTP endpoint of the challenger."),
    queries: Optional[Path] = typer.Option(None, help="JSONL of {question, golden, qtype} (with the URLs); 'golden' "
                                           "is the reference SQL each pair is graded against, 'qtype' optional."),
    simulate_regression: Optional[float] = typer.Option(
        None, min=0.0, max=1.0, help="Built-in pair: the challenger's error rate (the incumbent's is 0.05; unset = "
        "0.05, no regression; 0.0 = a challenger that is never wrong)."),
    strategy: Optional[str] = typer.Option(None, help=_STRATEGY_HELP),
    max_queries: int = typer.Option(5000, min=1),
    sla_ms: float = typer.Option(2000.0, min=1.0),
    time_scale: float = typer.Option(86_400.0, min=1.0, help="Protocol seconds per wall second (simulated pair)."),
    seed: int = typer.Option(0),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the run (phases, per-dimension evidence per pair) as JSON here (`deploysignal ui --migration`, `report --migration`)."),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=_SETTINGS_HELP),
    latency_tolerance: Optional[float] = typer.Option(None, help=_LAT_TOL_HELP),
    sla_quantile: Optional[float] = typer.Option(None, help=_SLA_Q_HELP),
) -> None:
    """Run a migration against configured HTTP agents, or the built-in simulated NL-to-SQL pair."""
    settings = _settings(settings_file, latency_tolerance, sla_quantile, strategy)
    if (incumbent_url is None) != (challenger_url is None) or (incumbent_url is not None and queries is None):
        err.print("error: give both --incumbent-url and --challenger-url and --queries, or none (built-in pair)")
        raise typer.Exit(2)

    async def main() -> Any:
        if incumbent_url is not None and challenger_url is not None and queries is not None:
            rows = _load_queries(queries)
            gold = {r["question"]: r["golden"] for r in rows}
            it = iter(rows)

            def nxt() -> tuple[str, str]:
                r = next(it)
                return r["question"], r["qtype"]

            async with httpx.AsyncClient() as client:
                return await run_migration(http_agent(incumbent_url, client), http_agent(challenger_url, client), nxt,
                                           QualityAggregator(sla_ms=sla_ms), gold.get, settings=settings,
                                           max_queries=min(max_queries, len(rows)), time_scale=1.0, seed=seed)
        pair = SimulatedSQLPair(seed=seed)
        if simulate_regression is not None:  # 0.0 is honoured: a challenger that is never wrong
            pair.challenger_error = simulate_regression
        agg = QualityAggregator(sla_ms=sla_ms, db=reference_db(seed), allowed_tables=ALLOWED_TABLES)
        return await run_migration(pair.incumbent, pair.challenger, pair.next_query, agg, pair.golden.get,
                                   settings=settings, max_queries=max_queries, time_scale=time_scale,
                                   interval_s=0.0005, seed=seed)

    rep = asyncio.run(main())
    if json_out is not None:
        json_out.write_text(json.dumps(rep.to_json(settings), sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    out.print(f"final phase: {rep.final_phase}  pairs: {rep.pairs}  queries: {rep.queries}  shadow drops: {rep.drops}")
    if rep.rollback_reason:
        out.print(f"rollback reason: {rep.rollback_reason}" + (f" ({rep.rollback_dimension})" if rep.rollback_dimension else ""))
    out.print("phases: " + " -> ".join(f"{e['phase']} (pair {e['pair']})" for e in rep.timeline))
    if rep.trace:
        from ..migration import DIMENSIONS

        ev = rep.trace[-1]
        out.print("evidence, -log p (non-inferiority / harm): " + ", ".join(
            f"{d} {ev['non_inferiority_max'][k]:.2f} / {ev['harm_max'][k]:.2f}" for k, d in enumerate(DIMENSIONS)))
    raise typer.Exit({"promoted": 0, "rolled_back": 4}.get(rep.final_phase, 3))


@migrate_app.command("plan")
@_guard
def migrate_plan(
    incumbent: str = typer.Option(..., help="accuracy=0.842,latency_ms=38,p99_ms=140,violations=0.004 (fractions, ms)."),
    challenger: str = typer.Option(..., help="Same fields for the challenger."),
    sla_ms: float = typer.Option(..., help="Latency SLA in ms (the --sla-quantile latency must stay within it)."),
    queries_per_day: float = typer.Option(PAPER_QUERIES_PER_DAY, help="Paired queries per day [default: the paper's "
                                          "12,000 over 45 days]."),
    runs: int = typer.Option(200, help="Seeded simulated migrations."),
    seed: int = typer.Option(0),
    max_days: float = typer.Option(45.0, help="Simulated days per run (undecided after)."),
    settings_file: Optional[Path] = typer.Option(None, "--settings", help=_SETTINGS_HELP),
    latency_tolerance: Optional[float] = typer.Option(None, help=_LAT_TOL_HELP),
    sla_quantile: Optional[float] = typer.Option(None, help=_SLA_Q_HELP),
    strategy: Optional[str] = typer.Option(None, help=_STRATEGY_HELP),
    json_only: bool = typer.Option(False, "--json", help="Print only the full result as one JSON line."),
) -> None:
    """Before a migration: simulate the protocol for a described incumbent / challenger pair and print the
    probability of promotion and of rollback and the time to each (last line JSON). Deterministic per seed."""
    settings = _settings(settings_file, latency_tolerance, sla_quantile, strategy)
    res = simulate_plan(AgentProfile.parse(incumbent, "incumbent"), AgentProfile.parse(challenger, "challenger"),
                        sla_ms=sla_ms, queries_per_day=queries_per_day, runs=runs, seed=seed, max_days=max_days,
                        settings=settings)
    if json_only:
        typer.echo(json.dumps(res.to_json(), sort_keys=True, allow_nan=False))
        return

    def days(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.2f} days"

    lo, hi = res.promoted_ci99
    out.print(f"{runs} simulated migrations over at most {max_days:g} days at {queries_per_day:.1f} paired queries/day "
              f"(seed {seed}), SLA {sla_ms:g} ms at quantile {settings.sla_quantile:g}, latency harm tolerance "
              f"{settings.harm_tolerances[1]:g} SLA units")
    out.print(f"promoted:    {100 * res.promoted:.1f}% (one-sided 99% Clopper-Pearson bounds [{100 * lo:.1f}, {100 * hi:.1f}]), median "
              f"{days(res.median_days_to_promotion)} (100% cut-over {days(res.median_days_to_cutover)}, shadow "
              f"{days(res.median_days_in_shadow)})")
    lo, hi = res.rolled_back_ci99
    why = ", ".join(f"{k} {v}" for k, v in res.rollback_dimensions.items()) or "none"
    out.print(f"rolled back: {100 * res.rolled_back:.1f}% (one-sided 99% Clopper-Pearson bounds [{100 * lo:.1f}, {100 * hi:.1f}]), median "
              f"{days(res.median_days_to_rollback)}; by dimension: {why}")
    out.print(f"undecided after {max_days:g} days: {100 * res.undecided:.1f}%")
    out.print(f"model: challenger exceeds the SLA on {100 * res.challenger_sla_exceedance:.2f}% of answers (incumbent "
              f"{100 * res.incumbent_sla_exceedance:.2f}%), mean latency {res.expected_differences['latency_ms_mean']:+.1f} ms")
    typer.echo(json.dumps({k: getattr(res, k) for k in ("promoted", "rolled_back", "undecided", "median_days_to_promotion",
                                                          "median_days_to_rollback")}, sort_keys=True, allow_nan=False))


@migrate_app.command("eval")
@_guard
def migrate_eval(
    runs: int = typer.Option(200, min=1, help="Seeded runs per scenario."),
    seed: int = typer.Option(0),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Markdown table to write (default: migration_eval.md in a new temporary "
                                            "directory; the path is printed)."),
    scenario: Optional[list[str]] = typer.Option(None, help=f"Subset of: {', '.join(SCENARIOS)}."),
    seeds: int = typer.Option(1, min=1, help="Repeat the evaluation for this many base seeds (seed-sensitivity table)."),
    bettor: str = typer.Option("agrapa", help="Bettor of the protocol's e-processes: agrapa or grid."),
    ni_design: bool = typer.Option(True, "--ni-design/--no-ni-design",
                                   help="Non-inferiority tests also bet for equal quality (adaptive bettor only)."),
) -> None:
    """Reproduce the paper's evaluation in simulation and write the markdown table."""
    settings = ProtocolSettings(bettor=bettor, ni_design_difference=0.0 if ni_design else None)  # type: ignore[arg-type]
    md, res = run_evaluation(runs, seed, tuple(scenario) if scenario else SCENARIOS, settings=settings, seeds=seeds)
    out_path = report_path(out_path, "migration_eval.md", "migrate-eval")
    out_path.write_text(md, encoding="utf-8")
    out.print(f"wrote {out_path}")
    for pol, s in summary(res).items():
        out.print(f"{pol}: " + ", ".join(f"{k}={v:.4g}" for k, v in s.items()))


@migrate_app.command("cost")
@_guard
def migrate_cost(
    queries_per_day: float = typer.Option(..., min=0.0), horizon_days: float = typer.Option(..., min=0.0),
    shadow_cost: float = typer.Option(..., help="Cost of one shadowed challenger call."),
    regression_prior: float = typer.Option(...), regression_effect: float = typer.Option(...),
    harm_cost: float = typer.Option(..., help="Cost of one harmful answer served."),
    exposure: float = typer.Option(0.05), alpha: float = typer.Option(0.05), sigma: float = typer.Option(0.35),
) -> None:
    """Optimal shadow fraction: shadow compute vs the expected cost of an undetected regression."""
    m = ShadowCostModel(queries_per_day=queries_per_day, horizon_days=horizon_days, shadow_cost_per_query=shadow_cost,
                        regression_prior=regression_prior, regression_effect=regression_effect,
                        cost_per_harmful_answer=harm_cost, exposure=exposure, alpha=alpha, sigma=sigma)
    f = m.optimal_fraction()
    typer.echo(json.dumps({"optimal_fraction": f, "total_cost": m.total_cost(f), "detection_days": m.detection_days(f),
                          "cost_at_full_shadow": m.total_cost(1.0)}, sort_keys=True))


@pipeline_app.command("run")
@_guard
def pipeline_run(pipeline: Path = typer.Argument(..., help="Pipeline YAML."),
                 store: Optional[Path] = typer.Option(None, help="SQLite history (default: the file's 'store').")) -> None:
    """Run a pipeline: blocking gates, actuation, telemetry monitor, rollback stage."""
    spec = load_pipeline(pipeline)
    base = pipeline.resolve().parent
    db = DeploymentStore(store if store is not None else base / spec.store)
    try:
        rec = run_pipeline(spec, base, db)
    finally:
        db.close()
    out.print(f"{rec.id}: {rec.status}" + (f" ({rec.rollback_reason})" if rec.rollback_reason else ""))
    for st in rec.stages:
        out.print(f"  {st['stage']}: " + json.dumps({k: v for k, v in st.items() if k != 'stage'}, sort_keys=True, default=str))
    raise typer.Exit(STATUS_EXIT[rec.status])


@pipeline_app.command("history")
@_guard
def pipeline_history(store: Path = typer.Argument(...), limit: int = typer.Option(20, min=1)) -> None:
    """Show the DeploymentRecord history."""
    if not store.exists():
        err.print(f"error: no such store {store}")
        raise typer.Exit(2)
    db = DeploymentStore(store)
    try:
        for r in db.history(limit):
            out.print(f"{r.id} {r.pipeline} {r.incumbent_version}->{r.candidate_version} {r.strategy} {r.status} "
                      f"rollback_s={r.rollback_duration_s} reason={r.rollback_reason}")
    finally:
        db.close()


@app.command("drill")
@_guard
def drill(pipeline: Optional[Path] = typer.Argument(None, help="Pipeline whose rollback actuators to exercise."),
          store: Optional[Path] = typer.Option(None, help="SQLite history."),
          seed: int = typer.Option(0)) -> None:
    """Rollback drill: regression onset on a live (simulated) migration -> decision -> traffic back on the
    incumbent, plus the pipeline's rollback actuators; records the measured durations."""
    spec = load_pipeline(pipeline) if pipeline is not None else None
    base = pipeline.resolve().parent if pipeline is not None else Path.cwd()
    db = DeploymentStore(store if store is not None else (base / spec.store if spec else ":memory:"))
    pair = SimulatedSQLPair(seed=seed)
    agg = QualityAggregator(sla_ms=2000.0, db=reference_db(seed), allowed_tables=ALLOWED_TABLES)
    holder: dict[str, Any] = {}

    def on_rollback(reason: str) -> bool:
        if spec is None:
            return True
        files = [a for a in spec.rollback.actuators if isinstance(a, FileActuator)]

        def verify() -> bool:
            return all(read_served_version(base / a.path, a.key) == spec.deployment.incumbent for a in files)

        rec = run_drill(spec, base, db, verify=verify)
        holder["record"] = rec
        return rec.status == "drill"

    def regress() -> None:
        pair.challenger_error = 0.6

    rep = asyncio.run(run_migration(pair.incumbent, pair.challenger, pair.next_query, agg, pair.golden.get,
                                    settings=ProtocolSettings(strategy="direct", tail_s=1e12), max_queries=20_000,
                                    onset=(100, regress), on_rollback=on_rollback, seed=seed))
    db.close()
    ok = rep.final_phase == "rolled_back" and rep.incumbent_serving_at is not None and rep.actuation_ok
    res = {"ok": ok, "rollback_reason": rep.rollback_reason, "onset_to_incumbent_s": rep.onset_to_incumbent_s,
           "decision_to_incumbent_s": rep.decision_to_incumbent_s, "pairs": rep.pairs}
    if "record" in holder:
        res["record_id"] = holder["record"].id
        res["actuators_s"] = holder["record"].rollback_duration_s
    typer.echo(json.dumps(res, sort_keys=True))
    raise typer.Exit(0 if ok else 5)


def main() -> None:  # pragma: no cover - console entry for standalone use
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
