"""CLI presentation of a config's certification: the model-check table and backtest that ``calibrate``
prints, and the warning line ``gate`` prints when the one-sample model is uncertified (all on stderr,
so stdout keeps the version id / the verdict for scripts)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..calibration import CompiledConfig

__all__ = ["apply_runtime_check", "note_treatment", "print_certification", "warn_uncertified"]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_certification(config: CompiledConfig, err: Console) -> None:
    """The check table (signal, check, statistic, p, pass/fail, meaning), the backtest line and the
    decision, with the reasons when uncertified."""
    cert = config.certification
    if cert is None:
        err.print("[yellow]no model check was run[/yellow]")
        return
    t = Table(title="model check (each test at the level shown; a screen with its own false-flag rate, not a guarantee)")
    for col in ("signal", "check", "statistic", "p", "level", "result", "meaning"):
        t.add_column(col)
    for r in cert["checks"]:
        res = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]not run[/]"}[r["passed"]]
        t.add_row(r["signal"], r["check"], _fmt(r["statistic"]), _fmt(r["p_value"]), _fmt(r["level"]), res, "" if r["passed"] else r["meaning"])
    err.print(t)
    bt = cert.get("backtest")
    if bt is not None:
        fams = ", ".join(f"{f} {v['fired']}" for f, v in bt.get("families", {}).items())
        err.print(f"backtest ({bt['windows']} held-out windows of {bt['window_ticks']} ticks, rolling origin): {bt['reason']}"
                  + (f"; windows with a counted fire per family: {fams}" if fams else ""))
    if cert["certified"]:
        err.print("[green]certified[/green]: one-sample, model checked (for " + ", ".join(f"{k}={v}" for k, v in cert["scope"].items()) + ")")
    else:
        err.print("[yellow]uncertified[/yellow]: " + "; ".join(cert["reasons"]))


def warn_uncertified(status: dict[str, Any], err: Console) -> None:
    """One warning line on stderr when a one-sample gate runs on an uncertified config."""
    if status["basis"] == "one-sample, uncertified":
        err.print("[yellow]warning[/yellow]: one-sample, uncertified: " + "; ".join(status["reasons"]))


def apply_runtime_check(summary: dict[str, Any], err: Console) -> None:
    """Once the run-time model check has fired (``summary["runtime_check"]``, from
    :attr:`deploysignal.gate.Gate.runtime_status`): ``certified``, ``certification_reasons`` and ``basis``
    as :func:`deploysignal.gate.runtime_certification` gives them, and a warning on stderr that
    recommends the split mode."""
    from ..calibration._certificate import RECOMMENDATION
    from ..gate import runtime_certification

    rt = summary.get("runtime_check")
    if not rt or rt["fired_at"] < 0:
        return
    status = runtime_certification({"certified": summary["certified"], "reasons": summary["certification_reasons"], "basis": summary["basis"]}, rt)
    summary.update(certified=status["certified"], certification_reasons=status["reasons"], basis=status["basis"])
    held = " (the gate did not proceed: it extends instead)" if summary["verdict"] == "extend" else ""
    err.print(f"[yellow]warning[/yellow]: {rt['status']}{held}; {RECOMMENDATION}")


def note_treatment(a_nuisance: str, err: Console) -> None:
    """One note on stderr when family A runs ``a_nuisance="mixture"``, whose validity is approximate
    (docs/one-sample.md): the user hears at run time what the docs say."""
    if a_nuisance == "mixture":
        err.print("note: --a-nuisance mixture: family A's false-rollback control is approximate (measured, not proved) and exceeds "
                  "its share when the canary's noise is louder or more autocorrelated than the baseline's; 'band' holds there "
                  "(docs/one-sample.md)")
