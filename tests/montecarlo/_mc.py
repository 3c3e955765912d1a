"""Vectorised Monte-Carlo harness: many baselines and canaries drawn from one process, one batch gate."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from deploysignal.calibration import CompiledConfig, compile_baseline
from deploysignal.gate import Gate, GateSettings
from deploysignal.simulate import NoiseSpec, Regression, simulate_streams
from deploysignal.simulate._core import _PROFILE, _apply
from deploysignal.telemetry import Frame

SIGNALS = tuple(_PROFILE)
BASELINE = 2880  # two days of one-minute ticks
WORKERS = min(2, os.cpu_count() or 1)


def cp_upper(k: int, n: int, conf: float = 0.99) -> float:
    """One-sided Clopper-Pearson upper bound for a binomial proportion."""
    return 1.0 if k >= n else float(beta.ppf(conf, k + 1, n - k))


def cp_lower(k: int, n: int, conf: float = 0.99) -> float:
    """One-sided Clopper-Pearson lower bound."""
    return 0.0 if k <= 0 else float(beta.ppf(1 - conf, k, n - k + 1))


def _compile(args: tuple[np.ndarray, np.ndarray, int, bool]) -> CompiledConfig:
    ts, vals, seed, prewhiten = args
    # no model check: these tests run the gate, not the check (tests/montecarlo/test_model_check.py does)
    return compile_baseline(Frame(ts, vals, SIGNALS), seed=seed, robust_covariance=False, prewhiten=prewhiten, check_model=False)


@dataclass
class MCResult:
    verdicts: np.ndarray  # (P,) codes
    decided_at: np.ndarray
    first_fire: np.ndarray  # (P, F)
    ever_fired: np.ndarray  # (P, F)
    families: tuple[str, ...]
    two_sample: MCResult | None = None
    """With ``also_two_sample``: the same paths in two-sample mode against an independent control."""
    harm_excluded: np.ndarray | None = None
    """With ``track_proceed``: (P, channels) did family A's early-proceed test of the channel reject
    'harm >= tau' at any tick; ``proceed_channels`` names the channels."""
    proceed_channels: tuple[str, ...] = ()
    variants: dict[str, MCResult] | None = None
    """With ``variants``: one result per named :class:`Variant`, run on the same compiled baselines."""

    def fired(self, family: str) -> np.ndarray:
        """Did the family fire at any tick of the horizon (regardless of the gate's verdict)?"""
        return self.ever_fired[:, self.families.index(family)]

    @property
    def rollback(self) -> np.ndarray:
        return self.verdicts == 3


@dataclass(frozen=True)
class Variant:
    """A further gate run on the paths of one :func:`run_mc`: its own ``settings``, ``regression`` applied
    to the same canary noise, the first ``ticks`` ticks of the canary (and control) streams, one- or
    two-sample (``settings.mode`` is set from ``two_sample``), and ``track_proceed`` as in :func:`run_mc`."""

    settings: GateSettings
    regression: Regression | None
    ticks: int
    two_sample: bool
    track_proceed: bool = False


def _run_gate(cfgs, settings: GateSettings, ts: np.ndarray, canary: np.ndarray, control, track: bool):
    """One batch gate run; with ``track``: also (P, channels) of family A's early-proceed rejections."""
    gate = Gate(cfgs, settings)
    ever, channels = None, ()
    if track:
        fam_a = gate._families["A"]
        ever, step = np.zeros((canary.shape[0], len(fam_a.channel_names())), dtype=bool), fam_a.step

        def tracked(*args, _step=step, _fam=fam_a, _ever=ever):
            out = _step(*args)
            _ever |= _fam.harm_excluded()
            return out

        fam_a.step = tracked
        channels = fam_a.channel_names()
    return gate.run_batch(ts, canary, control), ever, channels


def run_mc(
    seed: int,
    paths: int,
    canary_ticks: int,
    noise: NoiseSpec,
    settings: GateSettings,
    regression: Regression | None = None,
    prewhiten: bool = True,
    chunk: int = 500,
    baseline: int = BASELINE,
    common_shock: float = 0.0,
    also_two_sample: bool = False,
    track_proceed: bool = False,
    variants: dict[str, Variant] | None = None,
) -> MCResult:
    """Each path: its own baseline (BASELINE ticks) and canary (and control) from ``noise``.

    ``also_two_sample`` (one-sample ``settings``): also run every path in two-sample mode against an
    independent control stream of the same process, with the same compiled baselines and canaries
    (each of the two results is a valid Monte Carlo on its own; they are not independent of each other).
    ``track_proceed``: also record, per path and family-A channel, whether its early-proceed test ever
    rejected (read after every tick).
    ``variants``: also run each named :class:`Variant` on the same compiled baselines, canary noise (its
    own regression applied) and control streams (the first ``ticks`` of them), returned in
    ``result.variants``. Each is a valid Monte Carlo on its own (every path still has its own baseline,
    canary and control), but they are not independent of each other or of the main result: they share
    the noise, so their errors are correlated; one compile per path serves them all.
    """
    variants = variants or {}
    if any(v.ticks > canary_ticks for v in variants.values()):
        raise ValueError(f"a variant has more ticks than the canary's {canary_ticks}")
    rng = np.random.default_rng(seed)
    outs, outs_two = [], []
    v_outs: dict[str, list] = {n: [] for n in variants}
    two = settings.mode == "two-sample" or also_two_sample or any(v.two_sample for v in variants.values())
    with ProcessPoolExecutor(WORKERS) as pool:
        for start in range(0, paths, chunk):
            p = min(chunk, paths - start)
            ts, vals = simulate_streams(rng, p * (2 if two else 1), baseline + canary_ticks, noise=noise, signals=SIGNALS)
            base_ts, can_ts = ts[:baseline], ts[baseline:]
            seeds = rng.integers(2**31 - 1, size=p)
            jobs = [(base_ts, vals[i, :baseline], int(seeds[i]), prewhiten) for i in range(p)]
            cfgs = list(pool.map(_compile, jobs, chunksize=25))
            noise_c = vals[:p, baseline:]
            control = vals[p:, baseline:] if two else None
            shock = 0.0
            if common_shock > 0:  # a shared load process hitting canary and control alike (not the baseline)
                sd = np.array([_PROFILE[s][1] for s in SIGNALS])
                e = rng.standard_normal((p, canary_ticks))
                load = np.empty_like(e)
                load[:, 0] = e[:, 0]
                for t in range(1, canary_ticks):
                    load[:, t] = 0.95 * load[:, t - 1] + np.sqrt(1 - 0.95**2) * e[:, t]
                shock = common_shock * load[:, :, None] * sd
                control = None if control is None else control + shock
            canary = _apply(noise_c, SIGNALS, regression) + shock
            for name, v in variants.items():
                v_settings = v.settings.model_copy(update={"mode": "two-sample" if v.two_sample else "one-sample"})
                v_canary = _apply(noise_c, SIGNALS, v.regression) + shock
                v_control = control[:, : v.ticks] if v.two_sample else None
                v_outs[name].append(_run_gate(cfgs, v_settings, can_ts[: v.ticks], v_canary[:, : v.ticks], v_control, v.track_proceed))
            if also_two_sample:
                two_settings = settings.model_copy(update={"mode": "two-sample"})
                outs_two.append(Gate(cfgs, two_settings).run_batch(can_ts, canary, control))
            outs.append(_run_gate(cfgs, settings, can_ts, canary, control if settings.mode == "two-sample" else None, track_proceed))
    merged = _merge_runs(outs, track_proceed, _merge(outs_two) if outs_two else None)
    if variants:
        merged.variants = {name: _merge_runs(v_outs[name], v.track_proceed) for name, v in variants.items()}
    return merged


def _merge_runs(runs: list, track: bool, two_sample: MCResult | None = None) -> MCResult:
    """:func:`_merge` of :func:`_run_gate` chunks, with family A's early-proceed rejections when tracked."""
    merged = _merge([r[0] for r in runs], two_sample)
    if track:
        merged.harm_excluded, merged.proceed_channels = np.concatenate([r[1] for r in runs]), runs[0][2]
    return merged


def _merge(outs: list, two_sample: MCResult | None = None) -> MCResult:
    return MCResult(
        np.concatenate([o.verdict for o in outs]),
        np.concatenate([o.decided_at for o in outs]),
        np.concatenate([o.first_fire for o in outs]),
        np.concatenate([o.ever_fired for o in outs]),
        outs[0].families,
        two_sample,
    )
