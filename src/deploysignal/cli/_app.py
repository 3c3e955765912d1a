"""``deploysignal`` command line: a thin adapter over the library (typer + rich).

Exit codes: 0 proceed / success, 3 extend, 4 rollback, 1 replay mismatch, 2 bad input or usage.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._exceptions import ConfigError, DeploySignalError, InputError, ReplayMismatch, SchemaError
from ._main import request_fast_exit
from ._progress import progress_enabled, stage_progress

if TYPE_CHECKING:  # the modules are imported in the commands that need them (a fast `deploysignal --help`)
    from ..calibration import CompiledConfig
    from ..gate import Decision, GateSettings
    from ..telemetry import Frame

__all__ = ["app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Anytime-valid deploy gate: proceed, extend or roll back.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)
EXIT = {"proceed": 0, "extend": 3, "rollback": 4}
#: gate runs longer than this many ticks get a progress bar (when enabled)
PROGRESS_TICKS = 2000
F = TypeVar("F", bound=Callable[..., Any])


def _guard(fn: F) -> F:
    """Turn library errors into a one-line message and exit code 2 (1 for a replay mismatch)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ReplayMismatch as exc:
            err.print(f"[red]replay mismatch[/red]: {exc}")
            raise typer.Exit(1) from None
        except (DeploySignalError, OSError) as exc:
            err.print(f"[red]error[/red]: {escape(str(exc))}")  # a message's "[lo, hi]" is text, not markup
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def load_config(path: Path) -> CompiledConfig:
    from ..calibration import CompiledConfig

    if not path.is_file():
        raise ConfigError(f"{path}: no such compiled config")
    try:
        return CompiledConfig.from_json(path.read_bytes())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_stream(path: Path, config: CompiledConfig, what: str) -> Frame:
    """Read a canary/control file and check it carries every signal of the config with some values."""
    import numpy as np

    from ..sources import read_frame

    frame = read_frame(path)
    missing = [n for n in config.names if n not in frame.signals]
    if missing:
        raise SchemaError(f"{path}: {what} lacks signal columns of the compiled config: {', '.join(missing)}", column=missing[0])
    sel = frame.select(config.names)
    empty = [n for j, n in enumerate(config.names) if np.all(np.isnan(sel.values[:, j]))]
    if empty:
        raise InputError(f"{path}: {what} signal has no values (all missing): {', '.join(empty)}", column=empty[0])
    return sel


def _summary(d: Decision | None, config: CompiledConfig, n_ticks: int) -> dict[str, Any]:
    if d is None:
        return {"verdict": "extend", "decided_at_tick": None, "fired_families": [], "baseline_version": config.version_id, "ticks": 0, "reasons": {}}
    verdict = d.verdict if d.verdict != "pending" else "extend"
    # a final extend (horizon reached, no extension left) is a decision too; a pending or non-final
    # extend at the end of the input is not
    decided = d.decided_at_tick if d.verdict in ("rollback", "proceed") or (d.verdict == "extend" and d.final) else None
    # only fires that count for the verdict: those before it became final (rollback families), and warnings
    counted = set(d.fired_families) | ({"B"} if verdict != "rollback" else set())
    reasons = {ev.family: {"reason": ev.reason, "drivers": list(ev.drivers), "action": ev.action} for ev in d.evidence if ev.fired and ev.family in counted and (ev.family in d.fired_families or ev.action == "warn")}
    out = {
        "verdict": verdict,
        "decided_at_tick": decided,
        "fired_families": list(d.fired_families),
        "baseline_version": config.version_id,
        "ticks": n_ticks,
        "reasons": reasons,
    }
    failed = d.records[-1].get("fail_closed")
    if failed:  # the gate failed closed (a family's evidence became NaN): say why, never silently
        out["fail_closed"] = failed
    return out


def _print_summary(s: dict[str, Any], title: str = "deploysignal gate") -> None:
    colour = {"proceed": "green", "extend": "yellow", "rollback": "red"}[s["verdict"]]
    t = Table(title=title, show_header=False)
    t.add_row("verdict", f"[bold {colour}]{s['verdict']}[/]")
    t.add_row("decided at tick", "-" if s["decided_at_tick"] is None else str(s["decided_at_tick"]))
    t.add_row("ticks evaluated", str(s["ticks"]))
    t.add_row("baseline", s["baseline_version"])
    if "basis" in s:
        t.add_row("basis", s["basis"])
    for fam, r in sorted(s["reasons"].items()):
        t.add_row(f"family {fam} ({r['action']})", r["reason"])
    if s.get("fail_closed"):
        t.add_row("[red]failed closed[/]", s["fail_closed"])
    out.print(t)


def run_gate(
    config: CompiledConfig, settings: GateSettings, canary: Frame, control: Frame | None, audit: Path | None, progress: bool = False
) -> tuple[dict[str, Any], list[Decision]]:
    from ..audit import AuditWriter
    from ..gate import Gate, check_paired

    gate = Gate(config, settings)
    if control is not None:
        check_paired(canary, control, config.tick_seconds)
    decisions: list[Decision] = []
    fh = audit.open("w", encoding="utf-8") if audit else None
    try:
        writer = AuditWriter(fh, config, settings) if fh else None
        with stage_progress(progress) as report:
            for i in range(len(canary)):
                cohort = None if canary.cohort is None else str(canary.cohort[i])
                d = gate.update(canary.timestamps[i], canary.values[i], cohort=cohort, control=None if control is None else control.values[i])
                decisions.append(d)
                if writer:
                    writer.write_lines(d.lines)
                if report is not None and (i % 256 == 255 or i == len(canary) - 1):
                    report("gate: ticks", i + 1, len(canary))
    finally:
        if fh:
            fh.close()
    summary = _summary(decisions[-1] if decisions else None, config, len(decisions))
    ood = [d.tick for d in decisions if "out-of-domain" in d.schema_continuity]
    if ood:  # --out-of-domain missing: said, never silent (each tick's records name the signals)
        summary["out_of_domain_ticks"] = len(ood)
        err.print(f"warning: {len(ood)} tick(s) held a value outside its signal's domain (first at tick {ood[0]}), taken as missing for"
                  " that signal and not counted as valid; the audit records' schema_continuity names the signals")
    return summary, decisions


@app.command()
@_guard
def calibrate(
    baseline: Path = typer.Argument(..., help="Healthy baseline telemetry (.csv, .parquet, .jsonl)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the compiled config (JSON)."),
    seed: int = typer.Option(0, help="Seed for the calibration split and subsampling."),
    signals: Optional[Path] = typer.Option(None, help="Signals file: direction/kind per signal (YAML/JSON/CSV)."),
    min_cell_samples: int = typer.Option(40, help="Pool a cell into its parent below this many rows."),
    robust: bool = typer.Option(True, help="Also fit MCD covariances (slower). A block whose MCD cannot be fitted "
                                "(about half its rows share one value: zero covariance) stores none, with a warning."),
    alpha: float = typer.Option(0.05, help="False-rollback budget the backtest replays (and certifies) the gate at."),
    window: int = typer.Option(480, help="Planned window (ticks) the backtest replays the gate with."),
    backtest_windows: int = typer.Option(8, help="Held-out windows of the rolling-origin backtest (each costs a compile); 0 skips it (uncertified)."),
    a_nuisance: str = typer.Option(
        "learned", "--a-nuisance", help="Family A's treatment the backtest replays and the certificate covers ('learned', 'band', 'capped', "
        "'mixture'; as `gate --a-nuisance`): a gate run with another treatment reports the config uncertified."
    ),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars on stderr (default: when stderr is a terminal)."),
) -> None:
    """Compile a healthy baseline into a frozen config; prints its version id on stdout and, on stderr,
    the model check, the backtest on the baseline's own history and whether the one-sample model is
    certified (and why not)."""
    from ..gate import certify_baseline
    from ..sources import read_frame, read_signals_file
    from ._certify import print_certification

    specs = read_signals_file(signals) if signals else None
    frame = read_frame(baseline, specs=specs)
    settings = _settings(alpha, window, "one-sample", False, a_nuisance=a_nuisance)
    with stage_progress(progress_enabled(progress)) as report:
        cfg = certify_baseline(frame, settings, seed=seed, min_cell_samples=min_cell_samples, robust_covariance=robust, windows=backtest_windows,
                               progress=report)
    output.write_text(cfg.to_json(), encoding="utf-8")
    out.print(cfg.version_id)
    print_certification(cfg, err)


def _settings(alpha: float, window: int, mode: str, early_proceed: bool, drift_allowance: float = 0.0, a_nuisance: str = "learned",
              out_of_domain: str = "reject") -> GateSettings:
    from pydantic import ValidationError

    from ..gate import GateSettings

    try:
        return GateSettings(
            alpha=alpha, window=window, mode=mode, early_proceed=early_proceed, drift_allowance=drift_allowance,  # type: ignore[arg-type]
            a_nuisance=a_nuisance, out_of_domain=out_of_domain,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
        raise InputError("invalid gate settings: " + "; ".join(parts)) from None


@app.command()
@_guard
def gate(
    canary: Optional[Path] = typer.Argument(None, help="Canary telemetry (not with --split / --split-ticks)."),
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="Compiled config from `calibrate` (not with --split)."),
    control: Optional[Path] = typer.Option(None, help="Live control telemetry (two-sample mode), row-aligned with the canary."),
    audit: Optional[Path] = typer.Option(None, help="Write the audit log (JSONL) here."),
    alpha: float = typer.Option(0.05, help="False-rollback budget."),
    window: int = typer.Option(480, help="Planned window in ticks."),
    early_proceed: bool = typer.Option(False, help="Allow proceed before the window ends (bounds the average shift so far, not one still growing)."),
    drift_allowance: float = typer.Option(
        0.0, help="Extra baseline-to-canary level drift (score sd) treated as healthy, on top of the day-to-day drift the compiler measured. "
        "With --a-nuisance mixture it caps family A's evidence for a persistent shift: no detection by family A below about 4.2 x "
        "sqrt(day-to-day variance + allowance^2) sd (e.g. ~2.1 sd at 0.5); docs/one-sample.md."
    ),
    a_nuisance: str = typer.Option(
        "learned", "--a-nuisance", help="Family A's nuisance terms: 'learned' (default; a gross shift can be explained away) or 'band' "
        "(tested against the band the baseline justifies: never explained away, monotone in harm, blind to shifts smaller than the band) "
        "or 'capped' (learned, capped at the band's edge) or 'mixture' (level nuisance integrated out of a Gaussian likelihood ratio, "
        "monotone in harm by construction for one-sided signals, validity approximate and exposed to canary noise louder than the "
        "baseline's, plus the band's change detector); docs/one-sample.md. A config certifies only the treatment `calibrate --a-nuisance` backtested."
    ),
    split: Optional[Path] = typer.Option(None, "--split", help="Randomised split: per-request log (CSV/JSONL/Parquet) with an arm column; see docs/split.md."),
    split_ticks: Optional[Path] = typer.Option(None, "--split-ticks", help="Randomised split: aggregated split ticks (JSONL, per-arm counts and buckets)."),
    signals: Optional[Path] = typer.Option(None, help="Split mode: metric kinds (event/continuous), harm direction, edges, tolerance (YAML/JSON)."),
    canary_share: Optional[float] = typer.Option(None, help="Split mode: configured canary share of units; checks the sample ratio."),
    tick_seconds: Optional[float] = typer.Option(None, help="Split mode, request logs: tick length in seconds (default 60)."),
    unit_timeout: Optional[float] = typer.Option(None, help="Split mode, request logs with a unit column: a unit closes after this many idle seconds (default 1800)."),
    block_seconds: Optional[float] = typer.Option(None, help="Split mode, request logs: block units by the slot of this many seconds they started in (default: one tick)."),
    share_changes: Optional[str] = typer.Option(None, help="Split mode, request logs: times the router's weight changed (comma-separated, or a file with one a line; ISO-8601 or epoch seconds)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object as the last line."),
    out_of_domain: str = typer.Option(
        "reject", "--out-of-domain", help="A value outside its signal's domain (declared range): 'reject' (exit 2 naming row and "
        "signal) or 'missing' (only that value taken as missing, whichever side it lies on; recorded in the audit, "
        "the tick not counted as valid)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=f"A progress bar on stderr for runs of more than {PROGRESS_TICKS} "
                                            "ticks (default: when stderr is a terminal; never on stdout, so --json is unchanged)."),
) -> None:
    """Evaluate a canary; exit 0 proceed, 3 extend, 4 rollback, 2 bad input."""
    from ..calibration import canonical_json
    from ..gate import certification_status
    from ._certify import note_treatment, warn_uncertified

    if split is not None or split_ticks is not None:
        from ._split import gate_split

        if canary is not None or config is not None or control is not None or drift_allowance != 0.0 or a_nuisance != "learned" or out_of_domain != "reject":
            raise InputError("--split / --split-ticks take no CANARY, --config, --control, --drift-allowance, --a-nuisance or --out-of-domain")
        verdict = gate_split(out, split=split, split_ticks=split_ticks, signals=signals, audit=audit, as_json=as_json, alpha=alpha,
                             window=window, early_proceed=early_proceed, canary_share=canary_share, tick_seconds=tick_seconds,
                             unit_timeout=unit_timeout, block_seconds=block_seconds, share_changes=share_changes)
        raise typer.Exit(EXIT[verdict])
    if canary is None or config is None:
        raise InputError("give CANARY and --config (or --split / --split-ticks for the randomised-split mode)")
    if any(v is not None for v in (signals, canary_share, tick_seconds, unit_timeout, block_seconds, share_changes)):
        raise InputError("--signals, --canary-share, --tick-seconds, --unit-timeout, --block-seconds and --share-changes belong to --split / --split-ticks")
    cfg = load_config(config)
    settings = _settings(alpha, window, "two-sample" if control else "one-sample", early_proceed, drift_allowance, a_nuisance, out_of_domain)
    can = load_stream(canary, cfg, "canary")
    ctrl = load_stream(control, cfg, "control") if control else None
    status = certification_status(cfg, settings)
    warn_uncertified(status, err)
    note_treatment(settings.a_nuisance, err)
    summary, _ = run_gate(cfg, settings, can, ctrl, audit, progress=progress_enabled(progress) and len(can) > PROGRESS_TICKS)
    summary.update(certified=status["certified"], certification_reasons=status["reasons"], basis=status["basis"])
    if as_json:
        sys.stdout.write(canonical_json(summary) + "\n")
    else:
        _print_summary(summary)
    request_fast_exit()  # the audit file is closed: skip the interpreter's teardown (cli/_main.py)
    raise typer.Exit(EXIT[summary["verdict"]])


@app.command("replay")
@_guard
def replay_cmd(
    canary: Optional[Path] = typer.Argument(None, help="The canary telemetry the audit log was written from."),
    config: Optional[Path] = typer.Option(None, "-c", "--config"),
    audit: Path = typer.Option(..., help="Audit log (JSONL) to verify."),
    control: Optional[Path] = typer.Option(None),
    split: Optional[Path] = typer.Option(None, "--split", help="The request log a split-mode audit log was written from."),
    split_ticks: Optional[Path] = typer.Option(None, "--split-ticks", help="The split ticks a split-mode audit log was written from."),
) -> None:
    """Re-derive every audit record; exit 0 only if all match byte for byte (1 otherwise)."""
    from ..audit import check_chain, read_audit, replay

    if split is not None or split_ticks is not None:
        from ._split import replay_split_file

        if canary is not None or config is not None or control is not None:
            raise InputError("--split / --split-ticks take no CANARY, --config or --control")
        if not audit.is_file():
            raise InputError(f"{audit}: no such file")
        n = replay_split_file(audit, split, split_ticks)
        out.print(f"replay ok: {n} lines match")
        return
    if canary is None or config is None:
        raise InputError("give CANARY and --config (or --split / --split-ticks for a split-mode audit log)")
    cfg = load_config(config)
    header, lines = read_audit(audit)
    can = load_stream(canary, cfg, "canary")
    ctrl = load_stream(control, cfg, "control") if control else None
    n = replay(cfg, can, lines, header, ctrl)
    chain = check_chain(audit)
    if chain is None:
        out.print(f"replay ok: {n} records match (unchained log of format 1, written by deploysignal {header.get('gate_version', '< 0.2.0')}:"
                  " no hash chain to check)")
    elif not chain.ok:
        raise ReplayMismatch(f"the records match but the hash chain is broken: {chain.reason}", line=chain.bad_line)
    else:
        out.print(f"replay ok: {n} records match, hash chain intact (head {chain.head})")


@app.command()
@_guard
def bench(
    ticks: int = typer.Option(5000, help="Ticks to time after warm-up."),
    seed: int = typer.Option(0),
    fleet: bool = typer.Option(False, "--fleet", help="Also time one fleet-observer update (10,000 shards x 12 signals)."),
    split: bool = typer.Option(True, "--split/--no-split", help="Also time the split gate (12 metrics x 20 buckets x 2 arms)."),
    split_ticks: int = typer.Option(100, help="Ticks timed for the split gate (each path)."),
    split_only: bool = typer.Option(False, "--split-only", help="Time the split gate only (not the one- and two-sample gate)."),
    noisy_neighbour: bool = typer.Option(False, "--noisy-neighbour", help="Instead: the service's noisy-neighbour benchmark (a real `serve` on loopback; B's single-tick latency alone and while A sends maximal batches)."),
    noisy_seconds: float = typer.Option(20.0, min=1.0, help="--noisy-neighbour: seconds per phase."),
    noisy_batch: int = typer.Option(10_000, min=1, help="--noisy-neighbour: ticks per request of client A."),
    noisy_rate: float = typer.Option(20.0, min=0.1, help="--noisy-neighbour: single-tick requests per second of client B."),
    noisy_store: Optional[str] = typer.Option(None, help="--noisy-neighbour: the server's --store (default: a new SQLite file)."),
    server_pythonpath: Optional[str] = typer.Option(None, help="--noisy-neighbour: run the server from this source tree (PYTHONPATH), e.g. an earlier version."),
    noisy_isolate: bool = typer.Option(False, "--noisy-isolate", help="--noisy-neighbour: A's batches go to a second server with its own store (the machine's share of B's slowdown)."),
    noisy_replays: int = typer.Option(0, min=0, help="--noisy-neighbour: instead of batches, this many clients replay A (5,000 ticks) back to back (serve --max-replays N)."),
    noisy_replay_in: str = typer.Option("process", help="--noisy-neighbour with --noisy-replays: the server's --replay-in (process or thread)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-tick latency of the gate on a 12-signal stream (median, p99, microseconds): the live
    ``update`` path with audit records, ``run_batch`` one tick at a time without them, and
    ``update_many`` in batches of 500 (batch time / 500: throughput, not a tick's latency), and the
    kernel floor: each part's compiled loop over the whole stream, per tick. With
    ``--noisy-neighbour``, the service benchmark of docs/performance.md instead."""
    from ..calibration import canonical_json

    if noisy_neighbour:
        _bench_noisy(noisy_seconds, noisy_batch, noisy_rate, seed, noisy_store, server_pythonpath, as_json, noisy_isolate, noisy_replays, noisy_replay_in)
        return
    from ..bench import bench_gate

    res = {"results": [], "floor": []} if split_only else bench_gate(ticks=ticks, seed=seed)
    split = split or split_only
    if fleet:
        from ..fleet._bench import bench_fleet

        res["fleet"] = bench_fleet(seed=seed)
    if split:
        from ..bench import bench_split

        res["split"] = bench_split(ticks=split_ticks, seed=seed)
    if as_json:
        sys.stdout.write(canonical_json(res) + "\n")
        return
    if not split_only:
        t = Table(title="gate per-tick latency (12 signals)")
        for col in ("mode", "path", "families", "median us", "p99 us", "ticks"):
            t.add_column(col)
        for r in res["results"]:
            t.add_row(r["mode"], r["path"], ",".join(r["families"]), f"{r['median_us']:.1f}", f"{r['p99_us']:.1f}", str(r["ticks"]))
        out.print(t)
        t = Table(title="kernel floor: each part's compiled loop over the stream (us per tick, no per-tick Python, no records)")
        parts = list(res["floor"][0]["us_per_tick"]) if res["floor"] else []
        for col in ("mode", *parts, "total", "ticks"):
            t.add_column(col)
        for r in res["floor"]:
            t.add_row(r["mode"], *(f"{r['us_per_tick'][p]:.1f}" for p in parts), f"{r['total_us']:.1f}", str(r["ticks"]))
        out.print(t)
    if split:
        sp = res["split"]
        t = Table(title=f"split gate per-tick latency ({sp['metrics']} metrics x {sp['buckets']} buckets x {sp['arms']} arms)")
        for col in ("path", "median us", "p99 us", "CPU us (mean)", "ticks"):
            t.add_column(col)
        for r in sp["results"]:
            t.add_row(r["path"], f"{r['median_us']:.1f}", f"{r['p99_us']:.1f}", f"{r['cpu_us']:.1f}", str(r["ticks"]))
        out.print(t)
        out.print("split paths: update = the compiled step on tick t of the parsed run, verdict only (a library caller that reads no records); "
                  "the CLI's audit path and the service run update+records every tick (the service parses first)")
        fl = sp["floor"]
        out.print(f"split floor (CPU): one call of an empty compiled step with the same arguments {fl['dispatch_us']:.2f} us; "
                  f"the step's arithmetic {fl['arithmetic_us']:.2f} us a tick (all ticks in one call)")
    if fleet:
        f = res["fleet"]
        out.print(f"fleet observer update, {f['n_shards']} shards x {f['n_signals']} signals: median {f['median_ms']:.1f} ms, "
                  f"min {f['min_ms']:.1f} ms over {f['repeats']} updates")


def _bench_noisy(seconds: float, batch: int, rate: float, seed: int, store: str | None, pythonpath: str | None, as_json: bool,
                 isolate: bool = False, replays: int = 0, replay_in: str = "process") -> None:
    from ..calibration import canonical_json

    from ..service._bench import bench_noisy_neighbour

    res = bench_noisy_neighbour(seconds=seconds, batch=batch, rate=rate, seed=seed, store=store, server_pythonpath=pythonpath, isolate=isolate,
                                replays=replays, replay_in=replay_in)
    if as_json:
        sys.stdout.write(canonical_json(res) + "\n")
        return
    where = (", A on a second server" if res["isolated"] else "") + (f", instead: {replays} client(s) replaying A ({replay_in})" if replays else "")
    t = Table(title=f"noisy neighbour: B sends 1 tick x {res['rate']:g}/s, A sends {res['batch']}-tick batches back to back ({res['store']}{where}, {res['seconds']:g} s per phase)")
    for col in ("B", "requests", "p50 ms", "p99 ms", "max ms", "server p50 ms", "server p99 ms"):
        t.add_column(col)
    for label, key in (("alone", "b_alone"), ("with neighbour A", "b_with_neighbour")):
        r = res[key]
        t.add_row(label, str(r["n"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}", f"{r['server']['p50_ms']:.1f}", f"{r['server']['p99_ms']:.1f}")
    out.print(t)
    verdict = "met" if res["p99_ratio"] <= 2 else "NOT met"
    out.print(f"B's p99 with the neighbour / alone: x{res['p99_ratio']:.2f} (goal <= 2: {verdict}); p50 x{res['p50_ratio']:.2f}; "
              f"A: {res['a']['batches']} batches, {res['a']['ticks_per_s']:.0f} ticks/s; load average {res['load_average_before']} -> "
              f"{res['load_average_after']} on {res['cores']} cores (client and server share them)")
    if res["a"]["ran_out_of_batches"]:
        out.print("[yellow]A sent every batch it had before the phase ended: part of the phase measured B without its neighbour (a longer stock: fewer seconds or larger batches)[/yellow]")


def _register_subcommands() -> None:
    """Adapters living in their own modules: service (serve, service, audit), evaluation (eval),
    paired migration and release pipeline (migrate, pipeline, drill) and the fleet observer (fleet).
    Called by :func:`deploysignal.cli._main.full_app` (the entry point imports each module on demand)."""
    if any(g.name == "eval" for g in app.registered_groups):  # registered already
        return
    from . import _dashboard, _eval, _fleet, _migration, _prometheus, _scenarios, _service
    from ._split_eval import split_eval

    _service.register(app)
    _dashboard.register(app)  # ui, report
    app.add_typer(_eval.app, name="eval")
    app.add_typer(_migration.migrate_app, name="migrate")
    app.add_typer(_migration.pipeline_app, name="pipeline")
    app.command("drill")(_migration.drill)
    app.add_typer(_fleet.app, name="fleet")
    app.add_typer(_prometheus.app, name="prometheus")
    app.command("split-eval")(split_eval)
    app.command("simulate")(_scenarios.simulate_cmd)
    app.command("demo")(_scenarios.demo)
