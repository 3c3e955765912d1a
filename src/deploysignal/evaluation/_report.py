"""Report writer: Markdown + JSON + PNG plots (matplotlib, Agg backend) from an evaluation run."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..simulate._suite import SUITE
from ._matched import MATCHED_SUFFIX
from ._runner import EvalRun, method_order, pooled, summarise

__all__ = ["headline_table", "write_report"]


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _rate(r: dict[str, Any] | None) -> str:
    if not r or r.get("rate") is None:
        return "-"
    return f"{_pct(r['rate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] ({r['k']}/{r['n']})"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def headline_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table: per method, pooled false-rollback rate on the nulls and detection on the regressions."""
    pool = pooled(rows)
    med: dict[str, list[float]] = {}
    for r in rows:
        if r["expected"] == "rollback":
            med.setdefault(r["method"], []).extend(r["delays"])
    lines = [
        "| method | false rollback, healthy nulls | detection, regressions | median delay (ticks) |",
        "|---|---|---|---|",
    ]
    for m in sorted(pool, key=method_order):
        d = pool[m]
        delays = med.get(m, [])
        lines.append(f"| {m} | {_rate(d['false_rollback'])} | {_rate(d['detection'])} | {_num(float(np.median(delays)) if delays else None)} |")
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _plots(run: EvalRun, rows: Sequence[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = {"Software": None}
    files = []
    scen = [s for s in SUITE if any(k[0] == s for k in run.traces)]
    # 1. wealth vs bound: gate trace (median and 10-90% band over replicates), per scenario
    if scen:
        cols = 4
        nrow = math.ceil(len(scen) / cols)
        fig, axes = plt.subplots(nrow, cols, figsize=(4 * cols, 2.6 * nrow), squeeze=False)
        for ax, s in zip(axes.flat, scen):
            for name, colour in (("gate", "C0"), ("ttest_peek", "C3")):
                trs = run.traces.get((s, name))
                if not trs:
                    continue
                L = max(len(t) for t in trs)
                mat = np.full((len(trs), L), np.nan)
                for i, t in enumerate(trs):
                    mat[i, : len(t)] = t
                # after a method stops, carry its last value (a rollback stays above the bound)
                for i in range(mat.shape[0]):
                    row = mat[i]
                    ok = np.flatnonzero(~np.isnan(row))
                    if ok.size:
                        row[ok[-1] + 1 :] = row[ok[-1]]
                x = np.arange(L)
                with np.errstate(all="ignore"):
                    import warnings

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        lo, md, hi = (np.nanquantile(mat, q, axis=0) for q in (0.1, 0.5, 0.9))
                label = "gate: max log-wealth / log-bound" if name == "gate" else "peeking t: max t / critical"
                ax.plot(x, md, color=colour, lw=1.2, label=label)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
            ax.axhline(1.0, color="k", ls="--", lw=0.8)
            onset = SUITE[s].onset
            if onset is not None:
                ax.axvline(onset, color="grey", ls=":", lw=0.8)
            ax.set_title(s, fontsize=9)
            ax.set_ylim(-0.5, 2.5)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(scen) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6, loc="upper left")
        fig.suptitle("Statistic / alarm bound over canary ticks (median, 10-90% band); alarm at 1 (dashed); onset dotted", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "wealth_vs_bound.png", dpi=90, metadata=meta)
        plt.close(fig)
        files.append("wealth_vs_bound.png")
    # 2. detection-delay distributions per regression scenario
    regs = [s for s in SUITE if SUITE[s].expected == "rollback" and any(r["scenario"] == s for r in rows)]
    methods = sorted({r["method"] for r in rows}, key=method_order)
    if regs:
        cols = 4
        nrow = math.ceil(len(regs) / cols)
        fig, axes = plt.subplots(nrow, cols, figsize=(4 * cols, 2.8 * nrow), squeeze=False)
        for ax, s in zip(axes.flat, regs):
            data = []
            for m in methods:
                r = next((r for r in rows if r["scenario"] == s and r["method"] == m), None)
                data.append(r["delays"] if r and r["delays"] else [np.nan])
            ax.boxplot([np.asarray(d, dtype=float) for d in data], showfliers=True)
            ax.set_xticks(range(1, len(methods) + 1), [m.replace("_", "\n").replace("@", "\n@") for m in methods], fontsize=5)
            ax.set_title(s, fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
        for ax in list(axes.flat)[len(regs) :]:
            ax.axis("off")
        fig.suptitle("Detection delay (ticks after onset), detected runs only", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "detection_delay.png", dpi=90, metadata=meta)
        plt.close(fig)
        files.append("detection_delay.png")
    # 3. ROC-style: pooled false-rollback vs pooled detection
    pool = pooled(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for m in methods:
        d = pool.get(m)
        if not d or not d["false_rollback"] or not d["detection"]:
            continue
        i = method_order(m)[0]  # a calibrated baseline shares its default's colour
        fr, de = d["false_rollback"], d["detection"]
        ax.errorbar(
            fr["rate"], de["rate"],
            xerr=[[fr["rate"] - fr["ci_low"]], [fr["ci_high"] - fr["rate"]]],
            yerr=[[de["rate"] - de["ci_low"]], [de["ci_high"] - de["rate"]]],
            fmt="s" if m.endswith(MATCHED_SUFFIX) else "o", color=f"C{i % 10}", label=m, capsize=2,
        )
        # faint: each regression scenario's detection against the method's pooled false-rollback rate
        per = [r["detection"]["rate"] for r in rows if r["method"] == m and r["expected"] == "rollback"]
        ax.scatter([fr["rate"]] * len(per), per, color=f"C{i % 10}", alpha=0.25, s=12, marker="_")
    alpha = run.settings.get("alpha")
    if alpha:
        ax.axvline(alpha, color="k", ls="--", lw=0.8, label=f"alpha = {alpha}")
    ax.set_xlabel("false-rollback rate, healthy nulls (pooled)")
    ax.set_ylabel("detection rate, regressions (pooled)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    ax.set_title("False alarm vs detection (95% Clopper-Pearson; squares: baselines\ncalibrated to alpha on disjoint null draws; ticks: per-scenario detection)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=90, metadata=meta)
    plt.close(fig)
    files.append("roc.png")
    return files


def findings(rows: Sequence[dict[str, Any]], alpha: float | None) -> list[str]:
    """Generated findings: the gate's validity per null, and every regression where a baseline beats it."""
    pool = pooled(rows)
    out = ["## Validity on the healthy nulls", "", "| scenario | gate false rollback | one-sided 95% CP upper bound | peeking t-test | its one-sided 95% CP lower bound |", "|---|---|---|---|---|"]
    by = {(r["scenario"], r["method"]): r for r in rows}
    for s in SUITE:
        g, t = by.get((s, "gate")), by.get((s, "ttest_peek"))
        if g is None or g["expected"] != "proceed":
            continue
        tt = "-" if t is None else f"{_pct(t['false_rollback']['rate'])} | {_pct(t['false_rollback']['cp_lower'])}"
        out.append(f"| {s} | {_pct(g['false_rollback']['rate'])} ({g['false_rollback']['k']}/{g['n']}) | {_pct(g['false_rollback']['cp_upper'])} | {tt} |")
    if alpha is not None:
        out += ["", f"alpha = {alpha}. The gate's guarantee is P(false rollback) <= alpha per run; the upper bound above tests it."]
    out += ["", "## Where a baseline beats the gate", "",
            "Regression scenarios on which a baseline's detection rate is higher than the gate's, with that baseline's pooled",
            "false-rollback rate on the healthy nulls (a detection bought with false rollbacks is not a like-for-like win).", ""]
    lines = []
    for s in SUITE:
        g = by.get((s, "gate"))
        if g is None or g["expected"] != "rollback":
            continue
        for m in sorted({r["method"] for r in rows} - {"gate"}, key=method_order):
            b = by.get((s, m))
            if b is None or b["detection"]["rate"] <= g["detection"]["rate"]:
                continue
            fr = pool[m]["false_rollback"]
            lines.append(f"| {s} | {m} | {_pct(b['detection']['rate'])} vs gate {_pct(g['detection']['rate'])} | {_num(b['delay_median'])} vs {_num(g['delay_median'])} | {_pct(fr['rate']) if fr else '-'} |")
    if lines:
        out += ["| scenario | baseline | detection | median delay (ticks) | baseline's pooled false rollback |", "|---|---|---|---|---|"] + lines
    else:
        out.append("None: the gate's detection rate is at least every baseline's on every regression scenario.")
    return out


def matched_section(rows: Sequence[dict[str, Any]], cal: dict[str, dict[str, Any]] | None, alpha: float | None) -> list[str]:
    """The like-for-like comparison: each baseline calibrated to the gate's alpha on disjoint null draws."""
    if not cal:
        return []
    pool = pooled(rows)
    gate = pool.get("gate")
    nulls = next(iter(cal.values()))["nulls"]
    out = ["## At a matched false-rollback rate", "",
           "Each baseline's sensitivity knob is calibrated on healthy draws of every null scenario",
           f"({', '.join(nulls)}) with seeds disjoint from this evaluation's: the calibrated baseline",
           "(`<name>@matched`) uses, on each draw, the more sensitive of the two neighbouring grid values that",
           f"bracket alpha = {alpha} with probability p (a seeded coin), the other otherwise, so that its expected",
           "pooled calibration false-rollback rate is alpha exactly (or the default's, when that is already below",
           "alpha; `deploysignal.evaluation._matched`). It then runs on the same draws as everything else.", "",
           "| baseline | knob | default | matched setting | calibration false rollback | false rollback here | detection here | gate detection |",
           "|---|---|---|---|---|---|---|---|"]
    worse = []
    for name, c in sorted(cal.items(), key=lambda kv: method_order(kv[0])):
        d = pool.get(name + MATCHED_SUFFIX)
        if d is None:
            continue
        if not c["matched"]:
            setting = f"{c['value']} (alpha not reached: least sensitive grid value)"
        elif c["p_lo"] > 0:
            setting = f"{c['lo_value']} w.p. {c['p_lo']:.2f}, else {c['value']}"
        else:
            setting = f"{c['value']}"
        out.append(f"| {name} | {c['label']} | {c['curve'][0]['value']} | {setting} | {_pct(c['calibration_rate'])} (n = {c['curve'][0]['n']}) | "
                   f"{_rate(d['false_rollback'])} | {_rate(d['detection'])} | {_rate(gate['detection']) if gate else '-'} |")
        if c["matched"] and gate and d["detection"] and gate["detection"] and d["detection"]["rate"] > gate["detection"]["rate"]:
            worse.append(name)
    out.append("")
    if gate is None:
        return out
    if worse:
        out.append(f"The gate detects less than: {', '.join(worse)} (at matched false-rollback rate).")
    else:
        out.append("The gate's pooled detection rate is at least that of every baseline that reached alpha.")
    return out


def _realdata_md(rows: Sequence[dict[str, Any]], skipped: Sequence[str]) -> str:
    lines = ["| dataset | method | segments detected | detection [95% CI] | false alarms (clean runs) | false-alarm rate [95% CI] | median delay | errors |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], method_order(r["method"]))):
        det = "-" if r["detection"] is None else f"{_pct(r['detection'])} [{_pct(r['detection_ci'][0])}, {_pct(r['detection_ci'][1])}]"
        fa = "-" if r["false_alarm"] is None else f"{_pct(r['false_alarm'])} [{_pct(r['false_alarm_ci'][0])}, {_pct(r['false_alarm_ci'][1])}]"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['detected']}/{r['segments']} | {det} | {r['false_alarms']}/{r['clean_runs']} | {fa} | {_num(r['delay_median'])} | {r['errors']} |")
    for msg in skipped:
        lines.append(f"\n> {msg}")
    return "\n".join(lines)


def write_report(
    run: EvalRun,
    out_dir: str | Path,
    *,
    realdata: tuple[list[dict[str, Any]], list[str]] | None = None,
    realdata_rows: list[dict[str, Any]] | None = None,
    command: str = "deploysignal eval",
    plots: bool = True,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and PNG plots into ``out_dir``; return the JSON payload.

    Deterministic given the run: no timestamps, floats rounded to 6 digits, PNGs saved without metadata.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(run.outcomes)
    pool = pooled(rows)
    files = _plots(run, rows, out) if plots else []
    payload: dict[str, Any] = {
        "command": command,
        "settings": run.settings,
        "scenarios": {s: {"description": SUITE[s].description, "expected": SUITE[s].expected, "onset": SUITE[s].onset, "window": SUITE[s].window} for s in run.settings.get("scenarios", [])},
        "summary": rows,
        "pooled": pool,
        "realdata": realdata_rows,
        "realdata_skipped": realdata[1] if realdata else None,
        "plots": files,
    }
    payload = _clean(payload)
    (out / "report.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    st = run.settings
    md = [
        "# deploysignal evaluation report",
        "",
        f"Regenerate with `{command}` (deterministic given the seed). Mode: {st.get('mode')}; alpha = {st.get('alpha')}; "
        f"{st.get('reps')} seeded replicates per scenario (seed {st.get('seed')}).",
        "",
        "Every method watches every canary tick (continuous monitoring) until it decides. *False rollback*: share of",
        "healthy-null runs rolled back at any tick. *Detection*: share of regression runs rolled back at or after the",
        "onset (alarms before the onset are counted separately as pre-onset alarms). Intervals are two-sided 95%",
        "Clopper-Pearson. Delays are ticks from the onset, over detected runs. Time to proceed is the tick of a",
        "correct proceed on the nulls.",
        "",
        "## Headline",
        "",
        headline_table(rows),
        "",
        "## Methods",
        "",
        f"* **gate**: deploysignal's gate (compiled baseline, families with alpha + rules), `GateSettings(alpha, window)`; families with"
        f" alpha at this revision: {', '.join(st.get('gate_families', [])) or '-'} (plus family B rules).",
        "* **kayenta**: Kayenta's NetflixACAJudge (Mann-Whitney 98% interval, tolerance 0.25, mean-ratio effect gate,",
        "  IQR outlier removal), 8 judgements per window over a growing lookback, pass 95 / marginal 75.",
        "* **static**: a classical controller's static checks (error rate +50%, latency x2, success < 70%) on 5-tick averages.",
        "* **flagger**: Flagger-style checks every tick (5-tick averages vs. ranges set at the worst baseline value),",
        "  rollback after 5 failed checks.",
        "* **ttest_peek**: Welch t-test per signal at every tick on all data so far, one-sided in the harmful",
        "  direction, Bonferroni across signals only (peeking).",
        "* **page_hinkley / adwin**: River's detectors with library defaults on baseline-standardised signals.",
        "* **<name>@matched**: the same baseline with its sensitivity knob calibrated to a false-rollback rate <= alpha",
        "  (see *At a matched false-rollback rate*).",
        "",
        "## Per scenario",
        "",
        "| scenario | expected | method | false rollback / detection [95% CI] | pre-onset alarms | median / p90 delay | median / p90 time to proceed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["expected"] == "proceed":
            md.append(f"| {r['scenario']} | proceed | {r['method']} | {_rate(r['false_rollback'])} | - | - | {_num(r['time_to_proceed_median'])} / {_num(r['time_to_proceed_p90'])} |")
        else:
            md.append(f"| {r['scenario']} | rollback | {r['method']} | {_rate(r['detection'])} | {r['pre_onset_alarm']['k']} | {_num(r['delay_median'])} / {_num(r['delay_p90'])} | - |")
    md += [""] + matched_section(rows, st.get("matched"), st.get("alpha"))
    md += [""] + findings(rows, st.get("alpha"))
    md += ["", "## Scenarios", ""]
    for s in st.get("scenarios", []):
        md.append(f"* **{s}** ({SUITE[s].expected}): {SUITE[s].description}")
    if realdata_rows is not None or realdata is not None:
        md += ["", "## Real data (NAB, SMD, ASD)", "", "Segment-level: a labelled anomaly is detected if the method rolls back within the canary stretch",
               "from its onset; false alarms from sliding label-free (baseline, canary) pairs. See",
               "`deploysignal.evaluation._realdata` for the exact protocol. *errors*: runs on which the method raised",
               "(excluded from both rates).", "", _realdata_md(realdata_rows or [], realdata[1] if realdata else [])]
    if files:
        md += ["", "## Plots", ""] + [f"![{f}]({f})" for f in files]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return payload
