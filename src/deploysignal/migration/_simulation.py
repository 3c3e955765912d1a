"""Simulation of the paired-migration evaluation: 12,000 NL-to-SQL queries over 45 days.

Each run draws a diurnal query stream (non-homogeneous Poisson, peak in the afternoon), a
31 / 44 / 25 % simple / multi-join / multi-step mix, and a paired incumbent / challenger outcome per
query with correlated dimensions (a shared query difficulty drives correctness and the semantic
grade of both agents, a shared load factor drives both latencies).  Scenarios:

``null`` (identical challenger), ``accuracy_improvement`` (+5 pp), ``accuracy_degradation`` (-5 pp),
``latency_regression`` (x1.35), ``intermittent_hallucination`` (15 % of hours: -30 pp),
``authorisation_violation`` (3 % of multi-step queries read an unauthorised table),
``mixed`` (+5 pp accuracy, x1.35 latency).

The same streams are fed to four policies: the confidence-gated protocol
(:class:`MigrationProtocol`), a fixed-window shadow evaluation (``fixed_window_days`` of shadow, then
fixed-sample paired one-sided z-tests with Holm, then cut-over or reject), a fixed ``canary_days`` canary
at 5 % that sees only the traffic it served (two-sample z-tests of the challenger's own outcomes on those
queries against the incumbent's on the others, no pairing; promoted unless harm shows), and blue-green
(everyone on the challenger at once; the same two-sample tests after one day, rollback if harm shows).
All use the protocol's alphas, margins and harm tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from .._exceptions import InputError
from ._protocol import CANARY, PROGRESSIVE, PROMOTED, ROLLED_BACK, SHADOW, MigrationProtocol, ProtocolSettings
from ._sequential import holm

__all__ = ["HARMFUL", "SCENARIOS", "SimResult", "evaluate", "markdown_table", "run_evaluation", "simulate_streams", "summary"]

SCENARIOS = ("null", "accuracy_improvement", "accuracy_degradation", "latency_regression",
             "intermittent_hallucination", "authorisation_violation", "mixed")
HARMFUL = frozenset({"accuracy_degradation", "latency_regression", "intermittent_hallucination",
                     "authorisation_violation", "mixed"})
DAY = 86_400.0
_MIX = np.array([0.31, 0.44, 0.25])
_ACC = np.array([0.93, 0.85, 0.74])
_LAT = np.array([700.0, 1400.0, 2400.0])
SLA_MS = 4000.0


def simulate_streams(scenario: str, runs: int, seed: int, *, n_queries: int = 12_000, days: float = 45.0,
                     shadow_fraction: float = 1.0) -> dict[str, NDArray]:
    """Draw ``runs`` independent query streams; returns arrays shaped ``(runs, n_queries[, 4])``.

    Keys: ``t`` (seconds), ``qtype`` (0 simple, 1 multi-join, 2 multi-step), ``x`` (paired scores,
    positive = challenger worse), ``paired`` (shadow sample drawn), ``harm`` (challenger answer worse
    on correctness or safety).
    """
    if scenario not in SCENARIOS:
        raise InputError(f"scenario must be one of {', '.join(SCENARIOS)}; got {scenario!r}", column="scenario")
    if not 0.0 < shadow_fraction <= 1.0:
        raise InputError("shadow_fraction must lie in (0, 1]", column="shadow_fraction")
    rng = np.random.default_rng(seed)
    r, n = runs, n_queries
    # diurnal arrivals by thinning: intensity 1 + 0.6 sin(2 pi (h - 8) / 24)
    grid = rng.random((r, 3 * n)) * days * DAY
    keep = rng.random((r, 3 * n)) < (1 + 0.6 * np.sin(2 * np.pi * (grid / 3600.0 - 8.0) / 24.0)) / 1.6
    t = np.empty((r, n))
    for i in range(r):
        kept = np.sort(grid[i][keep[i]])
        t[i] = kept[np.sort(rng.choice(kept.size, n, replace=False))]
    qtype = rng.choice(3, size=(r, n), p=_MIX)
    u = rng.random((r, n))
    same = rng.random((r, n)) < 0.8
    u_c = np.where(same, u, rng.random((r, n)))
    acc_i = _ACC[qtype]
    acc_c = acc_i.copy()
    lat_mult = np.ones((r, n))
    violate_c = rng.random((r, n)) < 0.001
    hour = np.floor(t / 3600.0).astype(np.int64)
    if scenario in ("accuracy_improvement", "mixed"):
        acc_c = acc_c + 0.05
    if scenario == "accuracy_degradation":
        acc_c = acc_c - 0.05
    if scenario in ("latency_regression", "mixed"):
        lat_mult *= 1.35
    if scenario == "intermittent_hallucination":
        burst_hours = rng.random((r, int(days * 24) + 1)) < 0.15
        acc_c = np.where(np.take_along_axis(burst_hours, hour, axis=1), acc_c - 0.30, acc_c)
    if scenario == "authorisation_violation":
        violate_c |= (qtype == 2) & (rng.random((r, n)) < 0.03)
    ok_i = u < acc_i
    ok_c = u_c < acc_c
    exact = rng.random((r, n)) < 0.7
    g_i = np.where(ok_i, np.where(exact, 2, 1), 0)
    g_c = np.where(ok_c, np.where(exact, 2, 1), 0)
    safe_i = rng.random((r, n)) >= 0.001
    safe_c = ~violate_c
    load = rng.lognormal(0.0, 0.35, (r, n))
    l_i = _LAT[qtype] * load * rng.lognormal(0.0, 0.15, (r, n))
    l_c = _LAT[qtype] * load * lat_mult * rng.lognormal(0.0, 0.15, (r, n))
    x = np.stack([ok_i.astype(float) - ok_c, np.clip((l_c - l_i) / SLA_MS, -1, 1),
                  np.sign(g_i - g_c).astype(float), safe_i.astype(float) - safe_c], axis=-1)
    paired = rng.random((r, n)) < shadow_fraction
    harm = (ok_i & ~ok_c) | (safe_i & ~safe_c)
    # each agent's own outcome per query, oriented like x (higher = worse): what an unpaired canary sees
    own = [np.stack([1.0 - ok, lat / SLA_MS, -g / 2.0, 1.0 - safe], axis=-1)
           for ok, lat, g, safe in ((ok_i, l_i, g_i, safe_i), (ok_c, l_c, g_c, safe_c))]
    return {"t": t, "qtype": qtype, "x": x, "paired": paired, "harm": harm, "inc": own[0], "chal": own[1]}


@dataclass(frozen=True)
class SimResult:
    """Outcome of one policy on one scenario over all runs (per-run arrays)."""

    policy: str
    scenario: str
    rolled_back: NDArray[np.bool_]
    promoted: NDArray[np.bool_]
    before_impact: NDArray[np.bool_]
    time_days: NDArray[np.float64]
    harmful_served: NDArray[np.float64]


def _run_protocol(s: dict[str, NDArray], settings: ProtocolSettings, seed: int) -> tuple[MigrationProtocol, NDArray, NDArray]:
    t, x, paired, harm = s["t"], s["x"], s["paired"], s["harm"]
    r, n = t.shape
    rng = np.random.default_rng(seed)
    proto = MigrationProtocol(settings, batch=r)
    max_exposure = np.zeros(r)
    harmful_served = np.zeros(r)
    coins = rng.random((r, n))
    for i in range(n):
        exp_ = proto.exposure()
        served = coins[:, i] < exp_
        harmful_served += served & harm[:, i]
        proto.update(t[:, i], x[:, i], paired[:, i], served)
        max_exposure = np.maximum(max_exposure, np.where(proto.phase == ROLLED_BACK, 0.0, exp_))
        if np.all(proto.phase >= PROMOTED):
            # every stream is decided: a promoted challenger answers all remaining queries of the 45 days
            harmful_served += (proto.phase == PROMOTED) * harm[:, i + 1 :].sum(axis=1)
            break
    return proto, max_exposure, harmful_served


def _fixed_tests(x: NDArray, use: NDArray, margins: NDArray, alpha_promote: float,
                 alpha_rollback: float, tolerances: NDArray) -> tuple[NDArray, NDArray]:
    """Fixed-sample one-sided z-tests per dimension with Holm: (reject harm any, non-inferior all).
    Harm null: mean difference <= the harm tolerance; non-inferiority null: difference >= the margin."""
    nobs = np.maximum(use.sum(axis=1), 2)[:, None]
    xm = np.where(use[..., None], x, 0.0)
    mean = xm.sum(axis=1) / nobs
    var = (np.where(use[..., None], x - mean[:, None, :], 0.0) ** 2).sum(axis=1) / (nobs - 1)
    se = np.sqrt(np.maximum(var, 1e-12) / nobs)
    p_harm = stats.norm.sf((mean - tolerances) / se)
    p_ni = stats.norm.cdf((mean - margins) / se)
    return holm(p_harm, alpha_rollback).any(axis=1), holm(p_ni, alpha_promote).all(axis=1)


def _unpaired_tests(chal: NDArray, use_c: NDArray, inc: NDArray, use_i: NDArray, settings: ProtocolSettings) -> tuple[NDArray, NDArray]:
    """Fixed-sample two-sample (Welch) z-tests per dimension with Holm on two populations: the challenger's
    own outcomes on the queries it served against the incumbent's on the others: (reject harm any, non-inferior all).
    Harm null: mean difference <= the harm tolerance; non-inferiority null: difference >= the margin."""
    def moments(v: NDArray, use: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        k = np.maximum(use.sum(axis=1), 2)[:, None]
        m = np.where(use[..., None], v, 0.0).sum(axis=1) / k
        var = (np.where(use[..., None], v - m[:, None, :], 0.0) ** 2).sum(axis=1) / (k - 1)
        return m, var, k

    mc, vc, nc = moments(chal, use_c)
    mi, vi, ni_ = moments(inc, use_i)
    diff = mc - mi
    se = np.sqrt(np.maximum(vc / nc + vi / ni_, 1e-12))
    p_harm = stats.norm.sf((diff - np.asarray(settings.harm_tolerances)) / se)
    p_ni = stats.norm.cdf((diff - np.asarray(settings.margins)) / se)
    return holm(p_harm, settings.alpha_rollback).any(axis=1), holm(p_ni, settings.alpha_promote).all(axis=1)


def evaluate(scenario: str, runs: int, seed: int, *, settings: ProtocolSettings | None = None,
             fixed_window_days: float = 14.0, canary_days: float = 7.0, n_queries: int = 12_000,
             days: float = 45.0, shadow_fraction: float = 1.0) -> list[SimResult]:
    """Run the protocol and both baselines on ``runs`` seeded streams of ``scenario``."""
    settings = settings or ProtocolSettings()
    s = simulate_streams(scenario, runs, seed, n_queries=n_queries, days=days, shadow_fraction=shadow_fraction)
    t, x, paired, harm = s["t"], s["x"], s["paired"], s["harm"]
    proto, max_exp, hs = _run_protocol(s, settings, seed + 1)
    rb = proto.phase == ROLLED_BACK
    done = proto.phase == PROMOTED
    # time to a safe state: 100 % cut-over of a challenger that is not rolled back (the monitoring tail
    # that follows is post-migration watch), or traffic back on the incumbent
    end = np.where(rb, proto.end_time, proto.cutover_time)
    end = np.where(np.isnan(end), days * DAY, end)
    ours = SimResult("confidence-gated", scenario, rb, done, rb & (max_exp <= settings.canary_fraction + 1e-12),
                     end / DAY, hs)
    margins = np.asarray(settings.margins)
    out = [ours]
    # fixed-window shadow: paired tests on every shadowed query of the window
    use = paired & (t < fixed_window_days * DAY)
    rej, ni = _fixed_tests(x, use, margins, settings.alpha_promote, settings.alpha_rollback,
                            np.asarray(settings.harm_tolerances))
    hs_b = np.where(~rej, (harm & (t >= fixed_window_days * DAY)).sum(axis=1), 0)
    out.append(SimResult("fixed-window", scenario, rej, ~rej & ni, rej, np.full(t.shape[0], fixed_window_days),
                         hs_b.astype(float)))
    # 7-day canary: 5 % of live traffic to the challenger, no pairing; at the end of the window the challenger's
    # own outcomes on the queries it served are compared with the incumbent's on the rest (two-sample tests)
    win = t < canary_days * DAY
    served = (np.random.default_rng(seed + 2).random(t.shape) < 0.05) & win
    rej, ni = _unpaired_tests(s["chal"], served, s["inc"], win & ~served, settings)
    hs_b = (served & harm).sum(axis=1) + np.where(~rej, (harm & ~win).sum(axis=1), 0)
    # a canary promotes unless it shows harm (it has too few queries to show non-inferiority: ``ni`` unused)
    del ni
    out.append(SimResult("7-day canary", scenario, rej, ~rej, rej, np.full(t.shape[0], canary_days), hs_b.astype(float)))
    # blue-green: every user on the challenger at once; after one day of monitoring its outcomes are compared
    # with the incumbent's on the same period (a stand-in for the incumbent's history), rollback if harm shows
    day1 = t < DAY
    rej, _ = _unpaired_tests(s["chal"], day1, s["inc"], day1, settings)
    hs_b = (harm & day1).sum(axis=1) + np.where(~rej, (harm & ~day1).sum(axis=1), 0)
    out.append(SimResult("blue-green", scenario, rej, ~rej, np.zeros_like(rej), np.where(rej, 1.0, 0.0), hs_b.astype(float)))
    return out


def _ci(k: int, n: int) -> str:
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def markdown_table(results: list[SimResult], runs: int, seed: int, command: str) -> str:
    """Render the evaluation as markdown (per-scenario rows and the summary the paper reports)."""
    lines = [
        "# Paired-migration evaluation (simulation)",
        "",
        f"{runs} seeded runs per scenario (seed {seed}); 12,000 NL-to-SQL queries over 45 days each, diurnal",
        "traffic, 31/44/25 % simple / multi-join / multi-step. Regenerate with:",
        "",
        f"    {command}",
        "",
        "Why the figures are what they are (hand-written, kept apart so regenerating this file keeps them):",
        "[migration_eval_notes.md](migration_eval_notes.md).",
        "",
        "Rates with exact 95 % Clopper-Pearson intervals. *Rolled back* = challenger rejected or rolled back;",
        "*before impact* = rolled back while the challenger never served more than the 5 % canary;",
        "*time* = days until a safe state: 100 % cut-over of a challenger never rolled back (the 1-day monitoring",
        "tail follows it; 45 days when neither happened), or traffic back on the incumbent. Baselines, all with",
        "Holm at the same alphas, margins and harm tolerances: *fixed-window* = 14 days of full shadow, then",
        "paired one-sided z-tests (cut-over when non-inferior on every dimension and no harm); *7-day canary* =",
        "5 % of live traffic for 7 days, then two-sample z-tests of the challenger's own outcomes on the ~5 % of",
        "queries it served against the incumbent's on the rest (no pairing; promoted unless harm shows);",
        "*blue-green* = everyone on the challenger at once, rolled back after one day if the same two-sample",
        "tests show harm. *Harmful answers* = live answers where the challenger was worse (correctness or",
        "safety); for a null challenger these are its share of symmetric discordant pairs.",
        "",
        "| scenario | policy | rolled back | before impact | promoted | mean time (days) | harmful answers served |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        n = res.rolled_back.size
        lines.append(f"| {res.scenario} | {res.policy} | {_ci(int(res.rolled_back.sum()), n)} | "
                     f"{_ci(int(res.before_impact.sum()), n)} | {_ci(int(res.promoted.sum()), n)} | "
                     f"{res.time_days.mean():.2f} | {res.harmful_served.mean():.1f} |")
    lines += ["", "## Summary", "", "Mean time = mean over the seven scenarios of the per-scenario mean time; benign = null and",
              "accuracy improvement (time to cut-over), harmful = the five regressions (time to rollback).", "",
              "| policy | detection (harmful) | detected before impact | false alarms (benign) |"
              " mean time to safe migration (days) | benign / harmful (days) | vs confidence-gated |"
              " confidence-gated benign faster by |",
              "|---|---|---|---|---|---|---|---|"]
    policies = list(dict.fromkeys(r.policy for r in results))
    mean_time = {}
    for pol in policies:
        rs = [r for r in results if r.policy == pol]
        mean_time[pol] = float(np.mean([r.time_days.mean() for r in rs]))
    for pol in policies:
        rs = [r for r in results if r.policy == pol]
        harm = [r for r in rs if r.scenario in HARMFUL]
        benign = [r for r in rs if r.scenario not in HARMFUL]
        det = sum(int(r.rolled_back.sum()) for r in harm)
        bi = sum(int(r.before_impact.sum()) for r in harm)
        nh = sum(r.rolled_back.size for r in harm)
        fa = sum(int(r.rolled_back.sum()) for r in benign)
        nb = sum(r.rolled_back.size for r in benign)
        ref = mean_time[policies[0]]
        speed = "-" if pol == policies[0] else f"ours {100 * (1 - ref / mean_time[pol]):.1f}% faster" \
            if ref <= mean_time[pol] else f"ours {ref / max(mean_time[pol], 1e-9):.1f}x slower"
        tb = np.mean([r.time_days.mean() for r in benign]) if benign else float("nan")
        th = np.mean([r.time_days.mean() for r in harm]) if harm else float("nan")
        ours_b = [r.time_days.mean() for r in results if r.policy == policies[0] and r.scenario not in HARMFUL]
        bspeed = "-" if pol == policies[0] or not ours_b or not tb > 0 else f"{100 * (1 - np.mean(ours_b) / tb):.1f}%"
        lines.append(f"| {pol} | {_ci(det, nh) if nh else '-'} | {_ci(bi, nh) if nh else '-'} | "
                     f"{_ci(fa, nb) if nb else '-'} | {mean_time[pol]:.2f} | {tb:.2f} / {th:.2f} | {speed} | {bspeed} |")
    return "\n".join(lines) + "\n"


def summary(results: list[SimResult]) -> dict[str, dict[str, float]]:
    """Detection, before-impact, false-alarm rates and mean time per policy (for tests and reports)."""
    out: dict[str, dict[str, float]] = {}
    for pol in dict.fromkeys(r.policy for r in results):
        rs = [r for r in results if r.policy == pol]
        harm = [r for r in rs if r.scenario in HARMFUL]
        benign = [r for r in rs if r.scenario not in HARMFUL]
        out[pol] = {
            "detection": float(np.mean(np.concatenate([r.rolled_back for r in harm]))) if harm else float("nan"),
            "before_impact": float(np.mean(np.concatenate([r.before_impact for r in harm]))) if harm else float("nan"),
            "false_alarm": float(np.mean(np.concatenate([r.rolled_back for r in benign]))) if benign else float("nan"),
            "mean_time_days": float(np.mean([r.time_days.mean() for r in rs])),
        }
    return out


EVAL_COMMAND = "deploysignal migrate eval --runs {runs} --seed {seed} --out docs/migration_eval.md"


def run_evaluation(runs: int = 200, seed: int = 0, scenarios: tuple[str, ...] = SCENARIOS, *,
                   settings: ProtocolSettings | None = None, seeds: int = 1) -> tuple[str, list[SimResult]]:
    """Evaluate every scenario (seed ``seed + 1000 * k`` for scenario ``k``); return markdown and results.

    ``seeds > 1`` repeats the whole evaluation for base seeds ``seed + 1 .. seed + seeds - 1`` and appends
    a seed-sensitivity table (the per-scenario tables and the returned results are those of ``seed``).
    """
    if runs < 1:
        raise InputError(f"runs must be >= 1, got {runs}", column="runs")
    if seeds < 1:
        raise InputError(f"seeds must be >= 1, got {seeds}", column="seeds")
    st = settings or ProtocolSettings()
    bettor = st.bettor
    per_seed: list[list[SimResult]] = []
    for sd in range(seed, seed + seeds):
        per_seed.append([r for k, sc in enumerate(scenarios) for r in evaluate(sc, runs, sd + 1000 * k, settings=settings)])
    command = EVAL_COMMAND.format(runs=runs, seed=seed) + ("" if seeds == 1 else f" --seeds {seeds}") + \
        ("" if bettor == "agrapa" else f" --bettor {bettor}") + \
        (" --no-ni-design" if bettor == "agrapa" and st.ni_design_difference is None else "")
    md = markdown_table(per_seed[0], runs, seed, command)
    if seeds > 1:
        md += seed_table(per_seed, seed)
    return md, per_seed[0]


def seed_table(per_seed: list[list[SimResult]], seed: int) -> str:
    """Markdown: the summary of each base seed's full evaluation, and all seeds pooled."""
    lines = ["", "## Seed sensitivity", "",
             f"The whole evaluation repeated with base seeds {seed} to {seed + len(per_seed) - 1} (same runs per scenario).",
             "", "| seed | mean time: ours / fixed-window / 7-day canary (days) | ours faster than fixed-window |"
             " ours faster than 7-day canary | detection (harmful) | false rollback of a null challenger |",
             "|---|---|---|---|---|---|"]
    times = [{p: v["mean_time_days"] for p, v in summary(res).items()} for res in per_seed]
    pooled = {p: float(np.mean([t[p] for t in times])) for p in times[0]}  # mean of the per-seed mean times
    rows = [(str(seed + i), res, t) for i, (res, t) in enumerate(zip(per_seed, times))]
    rows.append(("all", [r for res in per_seed for r in res], pooled))  # rates over all runs
    for label, res, t in rows:
        ours = res[0].policy
        harm = [r for r in res if r.policy == ours and r.scenario in HARMFUL]
        null = [r for r in res if r.policy == ours and r.scenario == "null"]
        det = sum(int(r.rolled_back.sum()) for r in harm)
        nh = sum(r.rolled_back.size for r in harm)
        fa = sum(int(r.rolled_back.sum()) for r in null)
        nn = sum(r.rolled_back.size for r in null)
        fixed, canary = t.get("fixed-window", float("nan")), t.get("7-day canary", float("nan"))
        lines.append(f"| {label} | {t[ours]:.2f} / {fixed:.2f} / {canary:.2f} | {100 * (1 - t[ours] / fixed):.1f}% | "
                     f"{100 * (1 - t[ours] / canary):.1f}% | {_ci(det, nh) if nh else '-'} | {_ci(fa, nn) if nn else '-'} |")
    return "\n".join(lines) + "\n"
