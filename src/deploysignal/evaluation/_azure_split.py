"""The Azure LLM inference trace (2023) split at random into a canary and a stable arm.

The trace (Patel et al., "Splitwise", ISCA 2024; CC-BY-4.0) holds 28,185 real requests over about an hour
(``code``: 8,819, ``conv``: 19,366): arrival time, context tokens, generated tokens. It has no latency, no
errors and no session id. What is real and what is synthetic here:

* **Real**: arrival times (bursty, non-stationary), the two workloads (written as the ``tier`` column:
  ``code`` / ``conv``), the context and generated token counts of every request.
* **Synthetic** (drawn from the split's seed, independent of the arm): ``latency_ms`` = (30 ms + 0.05 ms per
  context token + 25 ms per generated token) x a lognormal factor (log-sd 0.25), so latency inherits the
  trace's real token mix and burstiness; ``errors``: 0.5% of requests; the session id (``unit``) when
  splitting by session: each workload's requests grouped in arrival order into sessions of geometric
  size (mean 4), since the trace has none.

A random split (each request, or each synthetic session, to the canary with probability ``share``)
makes the arm independent of every outcome: an exact null on real, non-stationary traffic. Effects,
injected into canary requests only after the split:

``truncate``      on 30% of canary requests the generated tokens are cut by 10% (floor), latency follows.
``error_bursts``  three 2-minute bursts at random ticks in which canary requests fail with probability 5%.
``context_tail``  canary latency x1.5 on requests whose context exceeds the trace's 90th percentile.

Metrics: ``generated_tokens`` (continuous, harm down), ``latency_ms`` (continuous, harm up), ``errors``
(event, harm up); ticks of 60 s from the minute of the first request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._exceptions import InputError
from ..simulate._split import SplitRequests
from ..split import MetricSpec
from ._realdata import default_data_dir

__all__ = ["AZURE_EFFECTS", "AZURE_METRICS", "AzureTrace", "azure_split", "load_azure_trace"]

AZURE_EFFECTS: dict[str, str] = {
    "none": "no change (null)",
    "truncate": "generated tokens cut by 10% on 30% of canary requests",
    "error_bursts": "three 2-minute bursts of 5% canary errors",
    "context_tail": "canary latency x1.5 on requests with context above the trace's 90th percentile",
}

AZURE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("errors", "event", "up"),
    # 19 edges -> 20 buckets, geometric: latency 100 ms .. 51.2 s, tokens 2 .. 1024
    MetricSpec("latency_ms", "continuous", "up", tuple(float(round(100.0 * 2.0 ** (9.0 * i / 18.0))) for i in range(19)), 0.1),
    MetricSpec("generated_tokens", "continuous", "down", tuple(float(round(2.0 ** (1.0 + 9.0 * i / 18.0), 1)) for i in range(19)), 0.1),
)
_FILES = (("code", "AzureLLMInferenceTrace_code.csv"), ("conv", "AzureLLMInferenceTrace_conv.csv"))


@dataclass(frozen=True)
class AzureTrace:
    """The merged trace in arrival order: epoch seconds, workload index (0 code, 1 conv), tokens."""

    timestamps: np.ndarray
    workload: np.ndarray
    context: np.ndarray
    generated: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamps.size)


def _data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir() / "azure_llm"


def load_azure_trace(data_dir: str | Path | None = None) -> AzureTrace:
    """Read both CSV files (``TIMESTAMP,ContextTokens,GeneratedTokens``) from ``data_dir`` (default:
    ``azure_llm`` under :func:`~deploysignal.evaluation._realdata.default_data_dir`).

    Raises
    ------
    InputError
        A file is missing or a row is not ``timestamp, integer, integer`` (naming file and line).
    """
    d = _data_dir(data_dir)
    ts, wl, ctx, gen = [], [], [], []
    for k, (_, fname) in enumerate(_FILES):
        p = d / fname
        if not p.is_file():
            raise InputError(f"{p}: no such file (the Azure LLM inference trace 2023; set --data-dir)")
        lines = p.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].strip() != "TIMESTAMP,ContextTokens,GeneratedTokens":
            raise InputError(f"{p}: expected the header TIMESTAMP,ContextTokens,GeneratedTokens")
        rows = [ln.split(",") for ln in lines[1:] if ln.strip()]
        for i, r in enumerate(rows):
            if len(r) != 3 or not r[1].strip().isdigit() or not r[2].strip().isdigit():
                raise InputError(f"{p}: line {i + 2}: expected timestamp,ContextTokens,GeneratedTokens with integer counts", row=i + 2)
        try:
            t = np.array([r[0] for r in rows], dtype="datetime64[ns]").astype(np.int64) / 1e9
        except ValueError as exc:
            raise InputError(f"{p}: unreadable TIMESTAMP ({exc})") from None
        ts.append(t)
        wl.append(np.full(t.size, k, dtype=np.int64))
        ctx.append(np.array([int(r[1]) for r in rows], dtype=float))
        gen.append(np.array([int(r[2]) for r in rows], dtype=float))
    t_all = np.concatenate(ts)
    order = np.argsort(t_all, kind="stable")
    return AzureTrace(t_all[order], np.concatenate(wl)[order], np.concatenate(ctx)[order], np.concatenate(gen)[order])


def azure_split(
    trace: AzureTrace, *, effect: str = "none", share: float = 0.5, routing: str = "request", seed: int = 0, tick_seconds: float = 60.0
) -> SplitRequests:
    """One random split of the trace with an optional injected effect (see the module docstring).

    Examples
    --------
    >>> tr = AzureTrace(np.arange(0.0, 600.0, 2.0), np.zeros(300, dtype=np.int64), np.full(300, 1000.0), np.full(300, 100.0))
    >>> r = azure_split(tr, share=0.5, seed=3)
    >>> r.n_ticks, len(r), sorted(r.values)
    (10, 300, ['errors', 'generated_tokens', 'latency_ms'])
    """
    if effect not in AZURE_EFFECTS:
        raise InputError(f"unknown Azure effect {effect!r}; choose from {', '.join(AZURE_EFFECTS)}")
    if not 0.0 < share < 1.0:
        raise InputError(f"canary share must lie in (0, 1), got {share}")
    if routing not in ("request", "session"):
        raise InputError(f"routing must be request or session, got {routing!r}")
    rng = np.random.default_rng(seed)
    n = len(trace)
    start = math.floor(float(trace.timestamps[0]) / tick_seconds) * tick_seconds
    tick = np.floor((trace.timestamps - start) / tick_seconds).astype(np.int64)
    n_ticks = int(tick[-1]) + 1
    # synthetic outcomes and sessions first, from the seed alone: independent of the arm
    noise = rng.standard_normal(n)
    u_err = rng.random(n)
    unit = np.empty(n, dtype=np.int64)
    next_id = 0
    for k in np.unique(trace.workload):
        idx = np.flatnonzero(trace.workload == k)
        sizes = rng.geometric(0.25, size=idx.size)
        ids = np.repeat(np.arange(sizes.size), sizes)[: idx.size]
        unit[idx] = next_id + ids
        next_id += int(ids[-1]) + 1
    if routing == "session":
        canary = (rng.random(next_id) < share)[unit]
    else:
        canary = rng.random(n) < share
    gen = trace.generated.copy()
    err_p = np.full(n, 0.005)
    lat_factor = np.ones(n)
    if effect == "truncate":
        cut = canary & (rng.random(n) < 0.3)
        gen = np.where(cut, np.floor(0.9 * gen), gen)
    elif effect == "error_bursts":
        burst = np.zeros(n_ticks, dtype=bool)
        for t in rng.choice(max(n_ticks - 1, 1), size=min(3, max(n_ticks - 1, 1)), replace=False):
            burst[t : t + 2] = True
        err_p = np.where(canary & burst[tick], 0.05, err_p)
    elif effect == "context_tail":
        lat_factor = np.where(canary & (trace.context > np.quantile(trace.context, 0.9)), 1.5, 1.0)
    errors = (u_err < err_p).astype(float)
    latency = (30.0 + 0.05 * trace.context + 25.0 * gen) * np.exp(0.25 * noise) * lat_factor
    latency = np.where(errors > 0, np.nan, np.round(latency, 3))
    truth = {
        "source": "Azure LLM inference trace 2023 (code + conv), real arrivals and tokens; synthetic latency, errors, sessions",
        "effect": effect,
        "effect_description": AZURE_EFFECTS[effect],
        "expected": "proceed" if effect == "none" else "rollback",
        "share": share,
        "routing": routing,
        "seed": seed,
        "ticks": n_ticks,
        "tick_seconds": tick_seconds,
        "requests": n,
        "canary_requests": int(canary.sum()),
    }
    return SplitRequests(
        timestamps=trace.timestamps.copy(),
        canary=canary,
        tick=tick,
        values={"errors": errors, "latency_ms": latency, "generated_tokens": gen},
        metrics=AZURE_METRICS,
        tier=np.asarray(("code", "conv"), dtype=object)[trace.workload],
        unit=unit if routing == "session" else None,
        start=start,
        tick_seconds=tick_seconds,
        n_ticks=n_ticks,
        truth=truth,
    )
