"""The gate: compiled config + canary ticks (+ control ticks) -> one decision per tick."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._exceptions import InputError
from ..calibration import CompiledConfig, cell_keys, transform_values
from ..detectors import Evidence, FamilyA, FamilyB, Observation
from ..telemetry import Frame
from ._settings import GateSettings

__all__ = ["FAMILY_BUILDERS", "Decision", "Gate", "Standardizer"]

VERDICTS = ("pending", "proceed", "extend", "rollback")


class Standardizer:
    """Raw tick -> oriented, prewhitened, standardised innovations, with the AR(1) memory of one stream.

    .. math:: y_t = T(x_t) - \\mu_{c(t)}, \\quad z_t = s\\,(y_t - \\phi\\, y_{t-1})/\\sigma_e

    where :math:`T` is the variance-stabilising transform, :math:`\\mu_c` the cell median and
    :math:`y_{t-1}` the previous tick of the same stream if it is present and at most 1.5 baseline
    tick intervals earlier; otherwise :math:`z_t = s\\, y_t \\sqrt{1-\\phi^2}/\\sigma_e`.
    """

    def __init__(self, config: CompiledConfig) -> None:
        a = config.arrays
        self._rate, self._count = a["kind_rate"], a["kind_count"]
        self._loc, self._phi, self._scale, self._orient = a["location"], a["phi"], a["innov_scale"], a["orient"]
        self._root = np.sqrt(1.0 - self._phi**2)
        self._gap = 1.5 * config.tick_seconds
        self._prev_y = np.full(self._phi.size, np.nan)
        self._prev_t = -math.inf

    def __call__(self, timestamp: float, raw: np.ndarray, cell: int) -> np.ndarray:
        y = transform_values(raw, self._rate, self._count) - self._loc[cell]
        prev = self._prev_y if timestamp - self._prev_t <= self._gap else np.full_like(y, np.nan)
        innov = np.where(np.isnan(prev), y * self._root, y - self._phi * prev)
        self._prev_y, self._prev_t = y, timestamp
        return self._orient * innov / self._scale

    def state(self) -> dict[str, Any]:
        return {"prev_y": [None if math.isnan(v) else v for v in self._prev_y.tolist()], "prev_t": None if self._prev_t == -math.inf else self._prev_t}

    def load_state(self, st: dict[str, Any]) -> None:
        self._prev_y = np.array([math.nan if v is None else v for v in st["prev_y"]], dtype=float)
        self._prev_t = -math.inf if st["prev_t"] is None else float(st["prev_t"])


def _build_a(config: CompiledConfig, settings: GateSettings, alpha: float) -> FamilyA:
    return FamilyA(
        config,
        alpha=alpha,
        horizon=settings.horizon,
        two_sample=settings.mode == "two-sample",
        drift_allowance=settings.drift_allowance,
        tau=settings.tau,
        alpha_proceed=max(settings.proceed_share * settings.alpha, 1e-300),
    )


#: family -> builder(config, settings, alpha_share * alpha). Families C, D, E register here.
FAMILY_BUILDERS: dict[str, Callable[[CompiledConfig, GateSettings, float], Any]] = {"A": _build_a}


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class Decision:
    """The gate's output for one tick.

    ``verdict`` is ``pending`` inside a window, ``proceed``/``extend`` at a window end (or proceed
    early), ``rollback`` when a family with alpha or a rollback rule fires. ``final`` is true once the
    verdict can no longer change (rollback, proceed, or extend after the last allowed extension).
    """

    tick: int
    timestamp: float
    verdict: str
    final: bool
    decided_at_tick: int | None
    fired_families: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    records: list[dict[str, Any]] = field(repr=False)


class Gate:
    """Evaluate canary ticks against a compiled baseline with families A..E and an alpha budget.

    Parameters
    ----------
    config : CompiledConfig
    settings : GateSettings, optional

    Notes
    -----
    Guarantee: under the null of each family (see its docstring), the probability that the gate
    rolls back within the horizon because of a family with alpha is at most
    :math:`\\sum_f \\alpha_f \\le \\alpha` (Bonferroni over families, valid under any dependence).
    Rules of family B configured to roll back add their (measured, not guaranteed) false-fire rate.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.telemetry import Frame
    >>> from deploysignal.calibration import compile_baseline
    >>> rng = np.random.default_rng(0)
    >>> base = Frame(np.arange(2880.0) * 60, rng.normal(size=(2880, 2)), ("p99_latency_ms", "mfu"))
    >>> gate = Gate(compile_baseline(base), GateSettings(window=100))
    >>> decisions = gate.run(Frame(2880 * 60 + np.arange(100.0) * 60, rng.normal(size=(100, 2)), ("p99_latency_ms", "mfu")))
    >>> decisions[-1].verdict in ("proceed", "extend")
    True
    """

    def __init__(self, config: CompiledConfig, settings: GateSettings | None = None) -> None:
        self.config = config
        self.settings = settings or GateSettings()
        s = self.settings
        self._names = config.names
        self._k = len(self._names)
        self._two = s.mode == "two-sample"
        self._families: dict[str, Any] = {}
        for fam in sorted(s.shares):
            if fam in FAMILY_BUILDERS:
                self._families[fam] = FAMILY_BUILDERS[fam](config, s, s.shares[fam] * s.alpha)
        self._rules = FamilyB(config, s.rules, two_sample=self._two)
        self._alpha_alloc = {f: s.shares[f] * s.alpha for f in self._families}
        self._reset()

    def _reset(self) -> None:
        self._canary_std = Standardizer(self.config)
        self._control_std = Standardizer(self.config)
        self._tick = 0
        self._last_ts = -math.inf
        self._n_valid = 0
        self._max_log_wealth = {f: -math.inf for f in self._families}
        self._verdict = "pending"
        self._final = False
        self._decided_at: int | None = None
        self._fired: list[str] = []

    # ----------------------------------------------------------------- input handling
    def _coerce(self, values: Any, what: str) -> tuple[np.ndarray, str]:
        if isinstance(values, Mapping):
            arr = np.full(self._k, np.nan)
            missing, extra = [], []
            for key, v in values.items():
                if key in self._names:
                    try:
                        arr[self._names.index(key)] = math.nan if v is None else float(v)
                    except (TypeError, ValueError):
                        raise InputError(f"{what} value must be a number, got {v!r}", row=self._tick + 1, column=key) from None
                else:
                    extra.append(str(key))
            missing = [n for n in self._names if n not in values]
            parts = ([f"missing:{','.join(missing)}"] if missing else []) + ([f"extra:{','.join(sorted(extra))}"] if extra else [])
            cont = ";".join(parts) or "ok"
        else:
            try:
                arr = np.asarray(values, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise InputError(f"{what} values must be numbers", row=self._tick + 1) from None
            if arr.size != self._k:
                raise InputError(f"{what} has {arr.size} values; the compiled config has {self._k} signals", row=self._tick + 1)
            cont = "ok"
        bad = np.flatnonzero(np.isinf(arr))
        if bad.size:
            raise InputError(f"{what} value is infinite", row=self._tick + 1, column=self._names[bad[0]])
        return arr, cont

    def _cell(self, timestamp: float, tier: str) -> tuple[int, str]:
        cmap = self.config.cell_map
        for key in cell_keys(timestamp, tier):
            if key in cmap:
                return cmap[key], key
        return cmap["*"], "*"

    # ----------------------------------------------------------------- main loop
    def update(
        self,
        timestamp: float,
        values: Sequence[float] | np.ndarray | Mapping[str, float | None],
        *,
        cohort: str | None = None,
        control: Sequence[float] | np.ndarray | Mapping[str, float | None] | None = None,
    ) -> Decision:
        """Evaluate one tick.

        Raises
        ------
        InputError
            Non-finite or non-increasing timestamp, wrong number of values, non-numeric or infinite
            values, or a missing control tick in two-sample mode. Nothing is changed by a rejected tick.
        """
        try:
            ts = float(timestamp)
        except (TypeError, ValueError):
            raise InputError(f"timestamp must be a number, got {timestamp!r}", row=self._tick + 1, column="timestamp") from None
        if not math.isfinite(ts):
            raise InputError("timestamp is not finite", row=self._tick + 1, column="timestamp")
        if ts <= self._last_ts:
            raise InputError(f"timestamp {ts!r} is not after the previous tick ({self._last_ts!r})", row=self._tick + 1, column="timestamp")
        raw, continuity = self._coerce(values, "canary")
        craw = None
        if self._two:
            if control is None:
                raise InputError("two-sample mode needs a control tick beside every canary tick", row=self._tick + 1)
            craw, ccont = self._coerce(control, "control")
            if ccont != "ok":
                continuity = f"{continuity}|control:{ccont}"
        elif control is not None:
            raise InputError("control ticks given but the gate runs in one-sample mode", row=self._tick + 1)
        tier = "" if cohort is None else str(cohort)
        cell, cell_key = self._cell(ts, tier)
        z = self._canary_std(ts, raw, cell)
        cz = self._control_std(ts, craw, cell) if craw is not None else None
        obs = Observation(self._tick, ts, cell, z, raw, cz, craw)
        present = ~np.isnan(z) if cz is None else ~(np.isnan(z) | np.isnan(cz))
        valid = bool(present.sum() * 2 >= self._k)
        self._n_valid += valid
        evidence = [fam.update(obs) for fam in self._families.values()]
        evidence.append(self._rules.update(obs))
        decision = self._decide(ts, evidence, cell_key, continuity)
        self._last_ts = ts
        self._tick += 1
        return decision

    def _decide(self, ts: float, evidence: list[Evidence], cell_key: str, continuity: str) -> Decision:
        s = self.settings
        t = self._tick
        n = t + 1
        for ev in evidence:
            if ev.family in self._max_log_wealth and ev.log_wealth > self._max_log_wealth[ev.family]:
                self._max_log_wealth[ev.family] = ev.log_wealth
        if not self._final:
            newly = [ev.family for ev in evidence if ev.fired and ev.action == "rollback" and ev.family not in self._fired]
            if newly:
                self._fired.extend(newly)
                self._verdict, self._final, self._decided_at = "rollback", True, t
            else:
                valid_frac = self._n_valid / n
                at_end = n % s.window == 0
                a = self._families.get("A")
                if (
                    s.early_proceed
                    and a is not None
                    and not at_end
                    and n >= s.min_proceed_fraction * s.window
                    and valid_frac >= s.min_valid_fraction
                    and not self._suggestive(evidence)
                    and bool(np.all(a.harm_excluded()))
                ):
                    self._verdict, self._final, self._decided_at = "proceed", True, t
                elif at_end:
                    if valid_frac >= s.min_valid_fraction and not self._suggestive(evidence):
                        self._verdict, self._final, self._decided_at = "proceed", True, t
                    else:
                        self._verdict = "extend"
                        if n >= s.horizon:
                            self._final, self._decided_at = True, t
                else:
                    self._verdict = "pending"
        records = self._records(ts, evidence, cell_key, continuity)
        return Decision(t, ts, self._verdict, self._final, self._decided_at, tuple(self._fired), tuple(evidence), records)

    def _suggestive(self, evidence: list[Evidence]) -> bool:
        s = self.settings
        for ev in evidence:
            if ev.family == "B" and ev.fired:
                return True
            if ev.family in self._max_log_wealth and self._max_log_wealth[ev.family] >= s.suggestive_fraction * ev.log_threshold:
                return True
        return False

    def _records(self, ts: float, evidence: list[Evidence], cell_key: str, continuity: str) -> list[dict[str, Any]]:
        base = {"baseline_version": self.config.version_id, "cell_key": cell_key, "schema_continuity": continuity, "tick": self._tick, "timestamp": ts}
        out = []
        for ev in evidence:
            alloc = self._alpha_alloc.get(ev.family, 0.0)
            consumed = alloc if ev.fired and alloc > 0 else 0.0
            rec = dict(base)
            rec.update(
                family=ev.family,
                statistic=_num(ev.statistic),
                log_wealth=_num(ev.log_wealth),
                threshold=_num(ev.log_threshold),
                alpha_allocated=alloc,
                alpha_consumed=consumed,
                alpha_remaining=alloc - consumed,
                fire=ev.fired,
                fire_reason=ev.reason,
                action=ev.action if ev.fired else None,
                drivers=list(ev.drivers),
            )
            if ev.family in self._max_log_wealth:
                rec["p_value"] = min(1.0, math.exp(-self._max_log_wealth[ev.family])) if self._max_log_wealth[ev.family] > 0 else 1.0
            fam = self._families.get(ev.family)
            if fam is not None and hasattr(fam, "components"):
                rec["components"] = {k: _num(v) for k, v in fam.components().items()}
            out.append(rec)
        verdict = dict(base)
        verdict.update(
            family="gate",
            verdict=self._verdict,
            final=self._final,
            decided_at_tick=self._decided_at,
            fired_families=list(self._fired),
            valid_fraction=self._n_valid / (self._tick + 1),
            alpha=self.settings.alpha,
        )
        out.append(verdict)
        return out

    # ----------------------------------------------------------------- conveniences
    def run(self, frame: Frame, control: Frame | None = None) -> list[Decision]:
        """Evaluate every row of ``frame`` (columns matched by name; absent signals are missing)."""
        canary = frame.select(self._names)
        ctrl = control.select(self._names) if control is not None else None
        if ctrl is not None and len(ctrl) != len(canary):
            raise InputError(f"control has {len(ctrl)} rows, canary {len(canary)}; two-sample mode pairs ticks row by row")
        out = []
        for i in range(len(canary)):
            cohort = None if canary.cohort is None else str(canary.cohort[i])
            out.append(self.update(canary.timestamps[i], canary.values[i], cohort=cohort, control=None if ctrl is None else ctrl.values[i]))
        return out

    def state(self) -> dict[str, Any]:
        """Exact, JSON-serialisable state; ``Gate.from_state(config, settings, state)`` continues identically."""
        return {
            "tick": self._tick,
            "last_ts": None if self._last_ts == -math.inf else self._last_ts,
            "n_valid": self._n_valid,
            "max_log_wealth": {k: (None if v == -math.inf else v) for k, v in self._max_log_wealth.items()},
            "verdict": self._verdict,
            "final": self._final,
            "decided_at": self._decided_at,
            "fired": list(self._fired),
            "canary_std": self._canary_std.state(),
            "control_std": self._control_std.state(),
            "families": {f: fam.state() for f, fam in self._families.items()},
            "rules": self._rules.state(),
        }

    @classmethod
    def from_state(cls, config: CompiledConfig, settings: GateSettings, state: dict[str, Any]) -> Gate:
        gate = cls(config, settings)
        gate._tick = int(state["tick"])
        gate._last_ts = -math.inf if state["last_ts"] is None else float(state["last_ts"])
        gate._n_valid = int(state["n_valid"])
        gate._max_log_wealth = {k: (-math.inf if v is None else float(v)) for k, v in state["max_log_wealth"].items()}
        gate._verdict = state["verdict"]
        gate._final = bool(state["final"])
        gate._decided_at = state["decided_at"]
        gate._fired = list(state["fired"])
        gate._canary_std.load_state(state["canary_std"])
        gate._control_std.load_state(state["control_std"])
        for f, st in state["families"].items():
            gate._families[f].load_state(st)
        gate._rules.load_state(state["rules"])
        return gate
