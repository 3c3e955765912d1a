"""The gate: compiled config + canary ticks (+ control ticks) -> one decision per tick."""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import msgspec
import numpy as np

from .._exceptions import InputError
from ..calibration import CompiledConfig, canonical_json, cell_keys, g_step_innovation, level_neighbour, stack_arrays, transform_values
from ..calibration._config import _FAST_MAX, _FAST_MIN, _FAST_OK, _plain
from ..detectors import Evidence, FamilyA, FamilyB, build_family_c, build_family_d, build_family_e
from ..detectors._kernels import Z_BOUND, decide_run, decide_step, in_domain_run, scale_bounded
from ..telemetry import Frame, check_domain, check_epoch_seconds, enforce_domain, signal_domains
from ._settings import GateSettings

__all__ = ["FAMILY_BUILDERS", "VERDICTS", "BatchResult", "Decision", "Gate", "Standardizer", "check_paired"]

VERDICTS = ("pending", "proceed", "extend", "rollback")

_LOG = logging.getLogger(__name__)


def _encodable(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (a lone surrogate, e.g. an undecodable byte of a command line, does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Standardizer:
    r"""Raw ticks -> oriented, prewhitened, standardised innovations, with the AR(1) memory of the streams.

    .. math:: y_t = T(x_t) - \mu_t, \qquad
              z_t = s\,\frac{y_t - \phi^g\, y_{t-g}}{\sigma_e \sqrt{(1-\phi^{2g})/(1-\phi^2)}}

    where :math:`T` is the variance-stabilising transform, :math:`\mu_t` the pooled cell levels
    interpolated between hour mid-points (:func:`~deploysignal.calibration.level_neighbour`) and
    :math:`y_{t-g}` the last *observed* value of the same signal, ``g`` ticks earlier (``g`` = elapsed
    time / tick interval, rounded, at least 1). Under an AR(1) the ``g``-step prediction error has
    variance :math:`\sigma_e^2 (1-\phi^{2g})/(1-\phi^2)`, so under a correct AR(1) with known
    :math:`\phi`, values missing independently of their size and canary ticks spaced like the
    baseline's, :math:`z_t` is a standardised martingale difference whatever the gaps. Known
    approximation: a level error :math:`\delta` moves a g-step score by
    :math:`\delta(1-\phi^g)/\sqrt{(1-\phi^{2g})/(1-\phi^2)}`, while family A sizes the level and
    day-offset bias with the one-step factor :math:`1-\phi` (exact only for consecutive ticks). A
    signal with no earlier observation gets :math:`z_t = s\, y_t \sqrt{1-\phi^2}/\sigma_e` (the
    limit :math:`g \to \infty`). Works on ``P`` streams at once (``raw``: (P, k)) sharing timestamps.

    ``lag`` holds, per stream and signal, the regressor that carries the AR(1) estimation error into
    :math:`z_t`: :math:`z_t` contains :math:`(\phi^g - \hat\phi^g)\,y_{t-g}/\sqrt{\cdot} \approx
    (\phi - \hat\phi)\, g\hat\phi^{g-1} y_{t-g}/\sqrt{\cdot}` (oriented, innovation units).

    Spikes: a de-seasonalised value more than ``Z_BOUND`` marginal sd from its level that would count as
    evidence *for* the canary (a canary value in the signal's good direction, a control value in its
    bad direction; never for a two-sided signal) is returned as missing (NaN), so a finite absurd value
    cannot buy a family a loss of wealth and delay or prevent a rollback; one in the harmful direction is
    kept (the families bet on it at their clip). ``spikes`` holds the mask of the last call.
    """

    def __init__(self, config: CompiledConfig | Sequence[CompiledConfig], *, control: bool = False) -> None:
        first = config if isinstance(config, CompiledConfig) else config[0]
        a = stack_arrays(config)
        self._rate, self._count, self._orient = a["kind_rate"], a["kind_count"], a["orient"]
        self._loc, self._phi, self._scale = a["location"], a["phi"], a["innov_scale"]
        self._root = np.sqrt(1.0 - self._phi**2)
        self._tick = float(first.tick_seconds)
        self._prev_y = np.full(self._phi.shape, np.nan)
        self._prev_t = np.full(self._phi.shape, np.nan)
        self.lag = np.zeros(self._phi.shape)
        #: a de-seasonalised value beyond Z_BOUND marginal sd is a spike: not an AR(1) predecessor
        self._spike = Z_BOUND * self._scale / self._root
        self._orient2 = np.ascontiguousarray(np.broadcast_to(self._orient, self._scale.shape), dtype=float)
        #: spikes dropped as missing: oriented sign that counts for the canary (-1 canary, +1 control), 0 if two-sided
        self._drop = np.where(np.asarray(a["two_sided"], dtype=bool), 0.0, 1.0 if control else -1.0) * self._orient2
        self.spikes = np.zeros(self._scale.shape, dtype=bool)
        self._scale = np.ascontiguousarray(self._scale, dtype=float)

    def __call__(self, timestamp: float, raw: np.ndarray, cell: int, neighbour: int, weight: float) -> np.ndarray:
        level = weight * self._loc[:, cell] + (1.0 - weight) * self._loc[:, neighbour]
        y = transform_values(raw, self._rate, self._count) - level
        innov, lag = g_step_innovation(y, self._prev_y, (timestamp - self._prev_t) / self._tick, self._phi, self._root)
        self.lag = self._bounded(lag)
        seen = np.abs(y) <= self._spike  # False for NaN: missing values and spikes leave the AR(1) memory alone
        self._prev_y = np.where(seen, y, self._prev_y)
        self._prev_t = np.where(seen, timestamp, self._prev_t)
        return self._drop_spikes(y, self._bounded(innov))

    def _drop_spikes(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``z`` with the spikes of ``y`` that count for the canary set missing (see the class); sets ``spikes``."""
        self.spikes = (np.abs(y) > self._spike) & (self._drop * y > 0.0)
        if self.spikes.any():
            z = np.where(self.spikes, np.nan, z)
        return z

    def _bounded(self, v: np.ndarray) -> np.ndarray:
        """Oriented, scaled ``v`` held to ``[-Z_BOUND, Z_BOUND]`` (NaN stays NaN; an overflow to infinity
        becomes the bound): what the families are fed (:data:`Z_BOUND`). Compiled
        (:func:`~deploysignal.detectors._kernels.scale_bounded`): the numpy expression with an error
        state and a clip costs ~5x as much on the single-tick path."""
        out = np.empty(v.shape)
        scale_bounded(np.ascontiguousarray(v, dtype=float), self._orient2, self._scale, Z_BOUND, out)
        return out

    def run(self, timestamps: np.ndarray, raw: np.ndarray, cells: np.ndarray, neighbours: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``T`` ticks of a single stream at once (``raw``: (T, k); per-tick cells, neighbour cells and own
        weights): the same values as ``T`` calls of the standardizer, each value's AR(1) predecessor being
        the last *observed* value of its signal (in this batch or before it). Returns ``z`` (T, k) and
        sets ``lag`` to the regressors of all ``T`` ticks."""
        ts = np.asarray(timestamps, dtype=float)
        T, k = raw.shape
        if T == 1:  # one tick: the per-tick path (same arithmetic, fewer array operations)
            return self(float(ts[0]), raw, int(cells[0]), int(neighbours[0]), float(weights[0]))
        w = np.asarray(weights, dtype=float)[:, None]
        loc = self._loc[0]
        y = transform_values(raw, self._rate, self._count) - (w * loc[cells] + (1.0 - w) * loc[neighbours])
        Y = np.concatenate([self._prev_y, np.where(np.abs(y) <= self._spike, y, np.nan)])  # row 0: the state before the batch; spikes are not remembered
        times = np.concatenate([self._prev_t, np.broadcast_to(ts[:, None], (T, k))])
        rows = np.where(np.isnan(Y), 0, np.arange(T + 1)[:, None])
        np.maximum.accumulate(rows, axis=0, out=rows)  # last observed row at or before each row
        prev_y = np.take_along_axis(Y, rows[:-1], axis=0)
        prev_t = np.take_along_axis(times, rows[:-1], axis=0)
        innov, lag = g_step_innovation(y, prev_y, (ts[:, None] - prev_t) / self._tick, self._phi, self._root)
        self.lag = self._bounded(lag)
        cols = np.arange(k)
        self._prev_y = Y[rows[-1], cols][None]
        self._prev_t = times[rows[-1], cols][None]
        return self._drop_spikes(y, self._bounded(innov))

    def state(self) -> dict[str, Any]:
        def _rows(a: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else v for v in row] for row in a.tolist()]

        return {"prev_y": _rows(self._prev_y), "prev_t": _rows(self._prev_t)}

    def load_state(self, st: dict[str, Any]) -> None:
        def _arr(rows: Any) -> np.ndarray:
            return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)

        arr = _arr(st["prev_y"])
        if arr.shape != self._prev_y.shape:
            raise ValueError(f"standardizer state has shape {arr.shape}, expected {self._prev_y.shape}")
        pt = st["prev_t"]
        if pt is None or isinstance(pt, (int, float)):  # state written before per-signal gap tracking
            times = np.where(np.isnan(arr), np.nan, math.nan if pt is None else float(pt))
        else:
            times = _arr(pt)
            if times.shape != arr.shape:
                raise ValueError(f"standardizer prev_t has shape {times.shape}, expected {arr.shape}")
        self._prev_y, self._prev_t = arr, times


def check_paired(canary: Frame, control: Frame, tick_seconds: float) -> None:
    """Two-sample mode pairs canary and control row by row: the rows must be ticks taken at the same
    time (within half a tick). Raises :class:`InputError` naming the first unpaired row."""
    if len(control) != len(canary):
        raise InputError(f"control has {len(control)} rows, canary {len(canary)}; two-sample mode pairs ticks row by row")
    off = np.flatnonzero(np.abs(control.timestamps - canary.timestamps) > 0.5 * tick_seconds)
    if off.size:
        i = int(off[0])
        raise InputError(
            f"control tick at {control.timestamps[i]!r} is not paired with the canary tick at {canary.timestamps[i]!r}"
            " (two-sample mode pairs ticks taken at the same time)",
            row=i + 1,
            column="timestamp",
        )


def _build_a(config: CompiledConfig | Sequence[CompiledConfig], settings: GateSettings, alpha: float) -> FamilyA:
    return FamilyA(
        config,
        alpha=alpha,
        horizon=settings.horizon,
        two_sample=settings.mode == "two-sample",
        drift_allowance=settings.drift_allowance,
        tau=settings.tau,
        alpha_proceed=max(settings.proceed_share * settings.alpha, 1e-300),
        nuisance=settings.a_nuisance,
        drivers_rule=settings.drivers_rule,
    )


#: family -> builder(config, settings, alpha_share * alpha). Families C, D, E register here.
FAMILY_BUILDERS: dict[str, Callable[[Any, GateSettings, float], Any]] = {
    "A": _build_a,
    "C": build_family_c,
    "D": build_family_d,
    "E": build_family_e,
}


_GC_LOCK = threading.Lock()
_GC_PAUSE = {"depth": 0, "was_enabled": False, "since": 0.0}
#: Longest stretch (seconds) overlapping pauses from several threads keep the collector off before the
#: pause that ends then runs a young-generation collection itself.
GC_STARVATION_SECONDS = 1.0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the (process-wide) cyclic garbage collector; nested and concurrent pauses from several
    threads end with the collector in the state it had before the first of them began.

    Pauses that keep overlapping (threads ingesting into different analyses back to back) could keep
    the collector off indefinitely while other code creates cyclic garbage: a pause that ends while
    others are still running, more than :data:`GC_STARVATION_SECONDS` after the collector was last on
    (or last collected here), collects generations 0 and 1 itself."""
    with _GC_LOCK:
        if _GC_PAUSE["depth"] == 0:
            _GC_PAUSE["was_enabled"] = gc.isenabled()
            _GC_PAUSE["since"] = time.monotonic()
            gc.disable()
        _GC_PAUSE["depth"] += 1
    try:
        yield
    finally:
        starved = False
        with _GC_LOCK:
            _GC_PAUSE["depth"] -= 1
            if _GC_PAUSE["was_enabled"]:
                if _GC_PAUSE["depth"] == 0:
                    gc.enable()
                elif time.monotonic() - _GC_PAUSE["since"] > GC_STARVATION_SECONDS:
                    starved = True
                    _GC_PAUSE["since"] = time.monotonic()
        if starved:  # outside the lock: finalizers run by the collection may pause it themselves
            gc.collect(1)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


# Audit records as structs whose fields are the record's keys in sorted order, built positionally:
# msgspec writes a struct's fields in declaration order, so a plain encoder gives the canonical
# (sorted-key) JSON without sorting at every call (tests check the declarations are sorted).


class _FamilyRecord(msgspec.Struct):
    """Audit record of a family with wealth (A, C, D, E)."""

    action: str | None
    alpha_allocated: float
    alpha_consumed: float
    alpha_remaining: float
    baseline_version: str
    cell_key: str
    components: dict[str, float | None]  # two entries, inserted in sorted key order
    drivers: list[str]
    family: str
    fire: bool
    fire_reason: str
    log_wealth: float | None
    p_value: float
    schema_continuity: str
    statistic: float | None
    threshold: float | None
    tick: int
    timestamp: float


class _RuleRecord(msgspec.Struct):
    """Audit record of family B (rules: no p-value, no components, no wealth)."""

    action: str | None
    alpha_allocated: float
    alpha_consumed: float
    alpha_remaining: float
    baseline_version: str
    cell_key: str
    drivers: list[str]
    family: str
    fire: bool
    fire_reason: str
    log_wealth: None
    schema_continuity: str
    statistic: float | None
    threshold: float | None
    tick: int
    timestamp: float


class _GateRecord(msgspec.Struct):
    """The gate's own record of a tick (the verdict)."""

    alpha: float
    baseline_version: str
    cell_key: str
    decided_at_tick: int | None
    family: str
    final: bool
    fired_families: list[str]
    schema_continuity: str
    tick: int
    timestamp: float
    valid_fraction: float
    verdict: str


_RECORD_STRUCTS = (_FamilyRecord, _RuleRecord, _GateRecord)
_IN_ORDER = msgspec.json.Encoder()  # declaration order: sorted for the record structs


def _lines_agree() -> bool:
    """Import-time check that the plain encoder writes a record struct (boundary floats, escapes, big
    ints, None) exactly as :func:`canonical_json` writes its dict; if not, lines take the checked path."""
    sample = _FamilyRecord(
        "rollback", 0.020000000000000004, -0.0, 1e-4, "cc-0", "h=1|t=", {"a": 9999999999999998.0, "b": None},
        ["q\"\\/\n\r\t\b\f\x00\x1f~"], "A", True, "", -0.00010000000000000002, 1.0, "ok", 1 / 3, None, 2**63, 1700259200.0,
    )
    try:
        return _FAST_OK and _IN_ORDER.encode(sample).decode("ascii") == canonical_json(msgspec.structs.asdict(sample))
    except Exception:  # noqa: BLE001 - any surprise disables the fast path
        return False


_LINES_OK = _lines_agree()


class _Source(NamedTuple):
    """Plain per-tick values a :class:`Decision` builds its records, lines and evidence from (no
    reference to the detectors)."""

    static: tuple[tuple[str, float, float | None, tuple[str, str] | None, float], ...]  # Gate._static_parts()
    version: str
    alpha: float
    cell_key: str
    continuity: str
    out: list[list[float]]  # per family: log-wealth, statistic, two components
    fired: list[bool]
    b_roll: bool
    b_reason: str
    b_drivers: tuple[str, ...]
    explained: list[tuple[str, tuple[str, ...]]]  # per family: fire reason and drivers
    first: list[int]  # per family: first counted fire or -1
    max_lw: list[float]
    n_valid: int
    fail_closed: str  # why the gate failed closed (a family's evidence became NaN), "" if it has not
    fast: bool  # every float of the records lies where msgspec writes what the standard library does


@dataclass(frozen=True, eq=False)
class Decision:
    """The gate's output for one tick.

    ``verdict`` is ``pending`` inside a window, ``proceed``/``extend`` at a window end (or proceed
    early), ``rollback`` when a family with alpha or a rollback rule fires. ``final`` is true once the
    verdict can no longer change (rollback, proceed, or extend after the last allowed extension).
    ``records`` are the tick's audit records (one dict per family, then the gate's), ``lines`` their
    canonical JSON (what an audit log holds and its hash chain covers), ``evidence`` one
    :class:`~deploysignal.detectors.Evidence` per family. All three are built on first use from the
    plain values the gate leaves in ``_source`` (``lines`` from those values, not from ``records``,
    which callers must not change). Equality compares the summary fields and the records; like the
    records, a decision is not hashable.
    """

    tick: int
    timestamp: float
    verdict: str
    final: bool
    decided_at_tick: int | None
    fired_families: tuple[str, ...]
    _source: _Source = field(repr=False, compare=False)

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        mine = (self.tick, self.timestamp, self.verdict, self.final, self.decided_at_tick, self.fired_families)
        theirs = (other.tick, other.timestamp, other.verdict, other.final, other.decided_at_tick, other.fired_families)
        return mine == theirs and self.records == other.records

    @property
    def schema_continuity(self) -> str:
        """The tick's ``schema_continuity`` (``ok``, or what was missing, extra, a spike or out of its domain)."""
        return self._source.continuity

    @cached_property
    def evidence(self) -> tuple[Evidence, ...]:
        src = self._source
        evidence = []
        for j, (name, _alloc, _thr, comps, log_thr) in enumerate(src.static):
            lw, stat, _c1, _c2 = src.out[j]
            on = src.fired[j]
            if comps is None:  # family B: rules, no wealth
                evidence.append(Evidence("B", stat, math.nan, math.nan, on, src.b_reason if on else "", src.b_drivers, "rollback" if src.b_roll else "warn"))
            else:
                reason, drivers = src.explained[j]
                evidence.append(Evidence(name, stat, lw, log_thr, on, reason if on else "", drivers if on else ()))
        return tuple(evidence)

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """The tick's audit records: one per family (``_fam_names`` order, B last), then the gate's (with
        ``fail_closed``, why, once the gate has failed closed: only such ticks carry the field)."""
        records = [msgspec.structs.asdict(r) for r in self._structs()]
        if self._source.fail_closed:
            records[-1]["fail_closed"] = self._source.fail_closed
        return records

    @cached_property
    def lines(self) -> list[str]:
        """Canonical JSON of each record (:func:`~deploysignal.calibration.canonical_json`)."""
        if self._source.fast and _LINES_OK and not self._source.fail_closed:
            out = []
            for r in self._structs():
                try:
                    b = _IN_ORDER.encode(r)
                except Exception:  # noqa: BLE001 - e.g. a lone surrogate in a recorded name: the checked path decides
                    break
                if not b.isascii() or b"\x7f" in b:  # the standard library escapes these
                    break
                out.append(b.decode("ascii"))
            else:
                return out
        return [canonical_json(r) for r in self.records]

    def _structs(self) -> list[Any]:
        """The records as structs (fields = keys, sorted; see :class:`_FamilyRecord`)."""
        src, tick, ts = self._source, self.tick, self.timestamp
        version, cell_key, cont = src.version, src.cell_key, src.continuity
        out, fired, first, max_lw = src.out, src.fired, src.first, src.max_lw
        records: list[Any] = []
        for j, (name, alloc, thr, comps, _log_thr) in enumerate(src.static):
            lw, stat, c1, c2 = out[j]
            on = fired[j]
            consumed = alloc if first[j] >= 0 else 0.0
            if comps is None:  # family B: rules, no wealth
                reason, action = (src.b_reason, "rollback" if src.b_roll else "warn") if on else ("", None)
                records.append(_RuleRecord(
                    action, alloc, consumed, alloc - consumed, version, cell_key, list(src.b_drivers), name, on, reason, None, cont,
                    _num(stat), thr, tick, ts,
                ))
            else:
                reason, drivers = src.explained[j] if on else ("", ())
                m = max_lw[j]
                components = {comps[0]: _num(c1), comps[1]: _num(c2)} if comps[0] < comps[1] else {comps[1]: _num(c2), comps[0]: _num(c1)}
                records.append(_FamilyRecord(
                    "rollback" if on else None, alloc, consumed, alloc - consumed, version, cell_key, components, list(drivers), name, on,
                    reason, _num(lw), min(1.0, math.exp(-m)) if m > 0 else 1.0, cont, _num(stat), thr, tick, ts,
                ))
        records.append(_GateRecord(
            src.alpha, version, cell_key, self.decided_at_tick, "gate", self.final, list(self.fired_families), cont, tick, ts,
            src.n_valid / (tick + 1), self.verdict,
        ))
        return records


PENDING, PROCEED, EXTEND, ROLLBACK = range(4)


@dataclass(frozen=True)
class BatchResult:
    """Outcome of :meth:`Gate.run_batch` for ``P`` streams.

    ``verdict``: codes into :data:`VERDICTS` (pending = no decision by the end); ``decided_at``: tick
    of the final decision or -1; ``first_fire``: per family (``families`` order) the first tick its
    fire was counted toward the verdict, or -1; ``ever_fired``: whether the family fired at any tick of
    the run, even after the verdict was final (B: any rule, warn or rollback); ``families``: names,
    ``B`` last.
    """

    verdict: np.ndarray
    decided_at: np.ndarray
    first_fire: np.ndarray
    ever_fired: np.ndarray
    families: tuple[str, ...]

    def verdicts(self) -> list[str]:
        return [VERDICTS[int(v)] for v in self.verdict]


class Gate:
    r"""Evaluate canary ticks against a compiled baseline with families A..E and an alpha budget.

    Parameters
    ----------
    config : CompiledConfig, or a sequence of configs of one layout
        One config for a live gate; several to evaluate ``P`` independent streams at once with
        :meth:`run_batch` (same code path, used by the Monte-Carlo validity tests).
    settings : GateSettings, optional

    Notes
    -----
    Guarantee: under the null of each family (see its docstring), the probability that the gate
    rolls back within the horizon because of a family with alpha is at most
    :math:`\sum_f \alpha_f \le \alpha` (Bonferroni over families, valid under any dependence).
    Rules of family B configured to roll back add their (measured, not guaranteed) false-fire rate.

    Examples
    --------
    >>> import numpy as np
    >>> from deploysignal.telemetry import Frame
    >>> from deploysignal.calibration import compile_baseline
    >>> rng = np.random.default_rng(0)
    >>> base = Frame(np.arange(2880.0) * 60, rng.normal(size=(2880, 2)), ("p99_latency_ms", "ttft_ms"))
    >>> gate = Gate(compile_baseline(base), GateSettings(window=100))
    >>> decisions = gate.run(Frame(2880 * 60 + np.arange(100.0) * 60, rng.normal(size=(100, 2)), ("p99_latency_ms", "ttft_ms")))
    >>> decisions[-1].verdict in ("proceed", "extend")
    True
    """

    def __init__(self, config: CompiledConfig | Sequence[CompiledConfig], settings: GateSettings | None = None, *,
                 screen: bool = True) -> None:
        self.config = config if isinstance(config, CompiledConfig) else config[0]
        #: whether ticks are screened as new input (epoch seconds, each value in its kind's domain). Off only
        #: to rebuild or replay ticks accepted before (an analysis or log of 0.4.0 that holds a rate of 95
        #: or a millisecond stamp must stay readable: the ingest that accepted them did not screen them)
        self.screen = screen
        self._configs = config
        self.settings = settings or GateSettings()
        s = self.settings
        self._names = self.config.names
        self._k = len(self._names)
        self._two = s.mode == "two-sample"
        self._families: dict[str, Any] = {}
        for fam in sorted(s.shares):
            if fam in FAMILY_BUILDERS:
                self._families[fam] = FAMILY_BUILDERS[fam](config, s, s.shares[fam] * s.alpha)
        self._rules = FamilyB(config, s.rules, two_sample=self._two, drivers_rule=s.drivers_rule)
        self._fam_names = tuple(self._families) + ("B",)
        self._alpha_alloc = {f: s.shares[f] * s.alpha for f in self._families}
        self._log_thr = np.array([-math.log(self._alpha_alloc[f]) for f in self._families] + [math.inf])
        self._P = 1 if isinstance(config, CompiledConfig) else len(config)
        self._static = self._static_parts()
        #: the floats every record repeats (alpha shares, thresholds, alpha) lie in the fast domain
        self._static_ok = _plain([s.alpha] + [v for _n, alloc, thr, _c, _l in self._static for v in (alloc, thr) if v is not None])
        self._cell_memo: dict[tuple[int, str], tuple[int, str]] = {}
        #: each signal's domain (declared range, or its kind's default: :mod:`deploysignal.telemetry._domain`)
        self.domains = signal_domains(self.config.signals)
        self._reset()

    def _reset(self) -> None:
        P, F = self._P, len(self._fam_names)
        #: cohort -> (canary standardizer, control standardizer, last timestamp of the cohort)
        self._cohorts: dict[str, list[Any]] = {}
        self._tick = 0
        self._last_ts = -math.inf
        #: clock of a cohort not seen yet: -inf, except after restoring a state written before
        #: per-cohort clocks (one shared clock), whose last timestamp then stays the floor
        self._ts_floor = -math.inf
        self._n_valid = np.zeros(P, dtype=int)
        self._max_lw = np.full((P, F), -np.inf)
        self._verdict = np.zeros(P, dtype=int)
        self._final = np.zeros(P, dtype=bool)
        self._decided_at = np.full(P, -1)
        self._first_fire = np.full((P, F), -1)
        self._b_warn = np.zeros(P, dtype=bool)
        #: failed closed or voided: never proceeds, a later fire still rolls back (decide_step)
        self._closed = np.zeros(P, dtype=bool)
        #: why the gate failed closed (single stream; see _fail_closed_reasons), "" while it has not
        self._fail_reason = ""

    # ----------------------------------------------------------------- input handling
    def _coerce(self, values: Any, what: str, row: int) -> tuple[np.ndarray, str]:
        if isinstance(values, Mapping):
            arr = np.full(self._k, np.nan)
            extra = []
            for key, v in values.items():
                if key in self._names:
                    try:
                        arr[self._names.index(key)] = math.nan if v is None else float(v)
                    except (TypeError, ValueError, OverflowError):
                        raise InputError(f"{what} value must be a number, got {v!r}", row=row, column=key) from None
                else:
                    extra.append(str(key))
            missing = [n for n in self._names if n not in values]
            parts = ([f"missing:{','.join(missing)}"] if missing else []) + ([f"extra:{','.join(sorted(extra))}"] if extra else [])
            cont = ";".join(parts) or "ok"
        else:
            try:
                arr = np.asarray(values, dtype=float).reshape(-1)
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"{what} values must be numbers", row=row) from None
            if arr.size != self._k:
                raise InputError(f"{what} has {arr.size} values; the compiled config has {self._k} signals", row=row)
            cont = "ok"
        bad = np.flatnonzero(np.isinf(arr))
        if bad.size:
            raise InputError(f"{what} value is infinite", row=row, column=self._names[bad[0]])
        return arr, cont

    def _matrix(self, values: Any, n: int) -> tuple[np.ndarray | None, int]:
        """``values`` as a new float (n, k) array and its first row holding an infinity (``n`` if none),
        when it is a numeric numpy array of that shape; ``(None, n)`` otherwise (checked row by row)."""
        if not isinstance(values, np.ndarray) or values.shape != (n, self._k) or values.dtype.kind not in "biuf":
            return None, n
        arr = np.array(values, dtype=float)
        inf = np.flatnonzero(np.isinf(arr).any(axis=1))
        return arr, int(inf[0]) if inf.size else n

    def _cohort(self, cohort: str) -> list[Any]:
        """AR(1) memory and clock of one cohort (tier): cohorts are separate streams of the same canary."""
        if cohort not in self._cohorts:
            self._cohorts[cohort] = [Standardizer(self._configs), Standardizer(self._configs, control=True), self._ts_floor]
        return self._cohorts[cohort]

    def cohort_clock(self, cohort: str = "") -> float:
        """Last accepted timestamp of ``cohort`` (``""`` = no cohort); a tick must come strictly after it."""
        return self._cohorts[cohort][2] if cohort in self._cohorts else self._ts_floor

    def _check_time(self, timestamp: Any, cohort: str = "", *, row: int | None = None, last: float | None = None) -> float:
        """A tick's timestamp as a float strictly after ``last`` (default: the cohort's clock)."""
        row = self._tick + 1 if row is None else row
        try:
            ts = float(timestamp)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"timestamp must be a number, got {timestamp!r}", row=row, column="timestamp") from None
        if not math.isfinite(ts):
            raise InputError("timestamp is not finite", row=row, column="timestamp")
        if self.screen:
            check_epoch_seconds(ts, row=row)  # a millisecond stamp accepted would make every later correct tick "out of order"
        last = self.cohort_clock(cohort) if last is None else last
        if ts <= last:
            what = "the previous tick" if not cohort else f"the previous tick of cohort {cohort!r}"
            raise InputError(f"timestamp {ts!r} is not after {what} ({last!r})", row=row, column="timestamp")
        return ts

    def _cell(self, timestamp: float, tier: str) -> tuple[int, str]:
        """Finest calibration cell of a tick. The cell depends on the hour of the week and the tier only,
        so lookups are memoised on those (at most 168 entries per tier)."""
        memo = (int(math.floor(timestamp)) // 3600 % 168, tier)
        hit = self._cell_memo.get(memo)
        if hit is None:
            cmap = self.config.cell_map
            hit = next(((cmap[key], key) for key in cell_keys(timestamp, tier) if key in cmap), (cmap["*"], "*"))
            if len(self._cell_memo) >= 168 * 64:  # many distinct tiers: bounded memory
                self._cell_memo.clear()
            self._cell_memo[memo] = hit
        return hit

    def _locate(self, timestamp: float, tier: str) -> tuple[int, str, int, float]:
        """Cell, its key, the neighbour cell for level interpolation and the own weight."""
        cell, key = self._cell(timestamp, tier)
        offset, weight = level_neighbour(timestamp, self.config.tick_seconds)
        neighbour, _ = self._cell(timestamp + float(offset), tier)
        return cell, key, neighbour, float(weight)

    # ----------------------------------------------------------------- main loop
    def update(
        self,
        timestamp: float,
        values: Sequence[float] | np.ndarray | Mapping[str, float | None],
        *,
        cohort: str | None = None,
        control: Sequence[float] | np.ndarray | Mapping[str, float | None] | None = None,
    ) -> Decision:
        """Evaluate one tick of a single stream.

        ``values`` (and ``control``) are numbers in the config's signal order, or a mapping from signal
        name to value (absent names are missing and recorded as a schema discontinuity; unknown names
        are ignored and recorded). NaN / None = missing.

        Raises
        ------
        InputError
            Non-finite or non-increasing timestamp, a timestamp that cannot be epoch seconds
            (:func:`~deploysignal.telemetry.check_epoch_seconds`: milliseconds), wrong number of values, non-numeric or infinite
            values, a value outside its domain (declared range or its kind's default:
            :func:`~deploysignal.telemetry.check_domain`) with ``out_of_domain="reject"`` (with
            ``"missing"`` only that signal is affected: :func:`~deploysignal.telemetry.enforce_domain`),
            a control tick missing in two-sample mode (or given in one-sample mode). A rejected tick
            changes nothing.
        """
        return self.update_many([timestamp], [values], cohorts=None if cohort is None else [cohort], control=None if control is None else [control])[0]

    def update_many(
        self,
        timestamps: Sequence[float] | np.ndarray,
        values: Sequence[Any] | np.ndarray,
        *,
        cohorts: Sequence[str | None] | None = None,
        control: Sequence[Any] | np.ndarray | None = None,
    ) -> list[Decision]:
        """Evaluate ``T`` ticks of a single stream in order: the same decisions and audit records as ``T``
        calls of :meth:`update` (this is what :meth:`update` runs, with ``T = 1``).

        Every tick is checked before any is evaluated; an :class:`InputError` names the first bad tick
        (``row`` = its 1-based position in the whole stream) and nothing changes. The families advance
        over the ticks in compiled loops (``run``), stopping only to explain a fire from the state of its
        tick.
        """
        if self._P != 1:
            raise InputError("update() evaluates a single stream; use run_batch() for a gate over several configs")
        n = len(timestamps)
        if len(values) != n or (control is not None and len(control) != n) or (cohorts is not None and len(cohorts) != n):
            raise InputError(
                f"{n} timestamps but {len(values)} value rows" + ("" if control is None else f", {len(control)} control rows")
                + ("" if cohorts is None else f", {len(cohorts)} cohorts")
            )
        if control is not None and not self._two:
            given = next((i for i, c in enumerate(control) if c is not None), None)
            if given is not None:
                raise InputError("control ticks given but the gate runs in one-sample mode", row=self._tick + given + 1)
            control = None
        if n == 0:
            return []
        k = self._k
        # numeric (n, k) arrays are converted and checked for infinities at once, not row by row
        arr, bad = self._matrix(values, n)
        carr, cbad = self._matrix(control, n) if self._two else (None, n)
        raw = np.empty((n, k)) if arr is None else arr
        craw = (np.empty((n, k)) if carr is None else carr) if self._two else None
        tiers: list[str] = []
        stamps = np.empty(n)
        conts: list[str] = []
        clocks: dict[str, float] = {}
        for i in range(n):
            row = self._tick + i + 1
            tier = "" if cohorts is None or cohorts[i] is None else str(cohorts[i])
            ts = self._check_time(timestamps[i], tier, row=row, last=clocks.get(tier))
            if arr is None:
                raw[i], cont = self._coerce(values[i], "canary", row)
            else:
                cont = "ok"
                if i == bad:
                    self._coerce(arr[i], "canary", row)  # raises, naming the infinite signal
            if self._two:
                if carr is None:
                    if control is None or control[i] is None:
                        raise InputError("two-sample mode needs a control tick beside every canary tick", row=row)
                    craw[i], ccont = self._coerce(control[i], "control", row)  # type: ignore[index]
                    if ccont != "ok":
                        cont = f"{cont}|control:{ccont}"
                elif i == cbad:
                    self._coerce(carr[i], "control", row)  # raises, naming the infinite signal
            clocks[tier] = ts
            stamps[i] = ts
            tiers.append(tier)
            conts.append(cont)
        s = self.settings
        ood = None  # ticks with a value out of its domain (policy "missing")
        if s.out_of_domain == "missing":  # part of the evaluation: replay and rebuild apply it too
            raw, craw, ood = self._enforce_domain(raw, craw, conts)
        elif self.screen:
            check_domain(raw, self.domains, self._names, what="canary", first_row=self._tick + 1)
            if craw is not None:
                check_domain(craw, self.domains, self._names, what="control", first_row=self._tick + 1)
        # ---- every tick is valid: evaluate
        cells, nbs, keys = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), []
        offsets, weights = level_neighbour(stamps, self.config.tick_seconds)
        for i in range(n):
            cells[i], key = self._cell(stamps[i], tiers[i])
            nbs[i] = self._cell(stamps[i] + float(offsets[i]), tiers[i])[0]
            keys.append(key)
        z, lag = np.empty((n, k)), np.empty((n, k))
        cz, clag = (np.empty((n, k)), np.empty((n, k))) if self._two else (None, None)
        groups: dict[str, list[int]] = {}
        for i, tier in enumerate(tiers):
            groups.setdefault(tier, []).append(i)
        ctl_spk = np.zeros((n, k), dtype=bool) if self._two else None  # control spikes
        can_spk = np.zeros((n, k), dtype=bool)
        for tier, members in groups.items():
            idx = np.array(members, dtype=np.int64)
            state = self._cohort(tier)
            z[idx] = state[0].run(stamps[idx], raw[idx], cells[idx], nbs[idx], weights[idx])
            lag[idx] = state[0].lag
            can_spk[idx] = state[0].spikes
            if self._two:
                cz[idx] = state[1].run(stamps[idx], craw[idx], cells[idx], nbs[idx], weights[idx])  # type: ignore[index]
                clag[idx] = state[1].lag  # type: ignore[index]
                ctl_spk[idx] = state[1].spikes  # type: ignore[index]
            state[2] = float(stamps[idx[-1]])
        self._note_spikes(conts, can_spk, ctl_spk)
        F = len(self._fam_names)
        out = np.full((n, F, 4), np.nan)
        fired = np.zeros((n, F), dtype=bool)
        harm = np.zeros(n, dtype=bool)
        for f, fam in enumerate(self._families.values()):
            if isinstance(fam, FamilyA):
                out[:, f], fired[:, f], harm = fam.run(z, cells, cz, lag, clag)
            else:
                out[:, f], fired[:, f] = fam.run(z, cells, cz)
        b_drift, b_fired, b_roll, _, b_reason, b_frozen = self._rules.run(z, raw, cells, cz, craw)
        out[:, -1, 1] = b_drift
        fired[:, -1] = b_roll  # family B counts toward a rollback only through rules that roll back
        valid = self._valid(z, cz) if ood is None else self._valid(z, cz) & ~ood
        verdict, final, decided = np.empty(n, dtype=np.int64), np.empty(n, dtype=bool), np.empty(n, dtype=np.int64)
        first, max_lw, n_valid = np.empty((n, F), dtype=np.int64), np.empty((n, F)), np.empty(n, dtype=np.int64)
        decide_run(
            self._tick, np.ascontiguousarray(out[:, :, 0]), fired, b_fired, valid, harm, self._log_thr, s.window, s.horizon,
            s.min_valid_fraction, s.suggestive_fraction, s.early_proceed, s.min_proceed_fraction, self._n_valid, self._max_lw,
            self._verdict, self._final, self._decided_at, self._first_fire, self._b_warn, self._closed,
            verdict, final, decided, first, max_lw, n_valid,
        )
        fired[:, -1] = b_fired  # the evidence of family B reports any fired rule
        # per-tick values as Python objects in bulk (indexing numpy scalars per field costs more than the records)
        b_drivers = [d if on else () for d, on in zip(b_frozen, b_fired.tolist())]
        explained = [(fam._fire_reason, fam._fire_drivers) for fam in self._families.values()]
        fast = self._in_domain(stamps, out, max_lw, n_valid, n)
        cols = zip(stamps.tolist(), keys, conts, out.tolist(), fired.tolist(), b_roll.tolist(), b_reason, verdict.tolist(),
                   final.tolist(), decided.tolist(), first.tolist(), max_lw.tolist(), n_valid.tolist(), b_drivers, fast.tolist(),
                   self._fail_closed_reasons(out[:, :-1, 0], verdict, n))
        with gc_paused():  # thousands of small per-tick objects: the cyclic collector would rescan them at every threshold
            decisions = [self._decision(self._tick + i, explained, *c) for i, c in enumerate(cols)]
        self._last_ts = max(self._last_ts, float(stamps.max()))
        self._tick += n
        return decisions

    def _enforce_domain(self, raw: np.ndarray, craw: np.ndarray | None, conts: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Policy ``missing`` (:func:`~deploysignal.telemetry.enforce_domain`): each value out of its
        domain taken as missing, noted in its tick's ``schema_continuity`` (``out-of-domain:<signals>``,
        ``control-out-of-domain:<signals>``); returns the values and the mask of ticks holding such a
        value (not valid ticks)."""
        raw, miss = enforce_domain(raw, self.domains)
        ood = miss.any(axis=1)
        notes = [("out-of-domain", miss)]
        if craw is not None:
            craw, cmiss = enforce_domain(craw, self.domains)
            ood |= cmiss.any(axis=1)
            notes.append(("control-out-of-domain", cmiss))
        self._note_masks(conts, notes)
        return raw, craw, ood

    def _note_spikes(self, conts: list[str], canary: np.ndarray, control: np.ndarray | None) -> None:
        """Record in a tick's ``schema_continuity`` the signals whose value was a spike counting for the
        canary and was therefore taken as missing (:class:`Standardizer`): ``spike:<signals>`` and
        ``control-spike:<signals>``. Valid input has none, so its records do not change."""
        self._note_masks(conts, [("spike", canary), ("control-spike", control)])

    def _note_masks(self, conts: list[str], masks: list[tuple[str, np.ndarray | None]]) -> None:
        """Append ``<what>:<signals>`` to the ``schema_continuity`` of each tick where ``mask`` has a signal."""
        for what, mask in masks:
            if mask is None or not mask.any():
                continue
            for i in np.flatnonzero(mask.any(axis=1)).tolist():
                note = f"{what}:{','.join(n for n, m in zip(self._names, mask[i].tolist()) if m)}"
                conts[i] = note if conts[i] == "ok" else f"{conts[i]};{note}"

    def void(self, reason: str, *, screen: bool = True) -> Decision:
        """Void the analysis (an operator's act, e.g. after a tick from the future was accepted and
        wedged it): a tick that carries no telemetry and no evidence (every family's record has a null
        log-wealth and does not fire) and ends the analysis. An open verdict, or a ``proceed`` already
        given, becomes a final ``extend`` (a voided analysis answers no promotion any more); a rollback
        stays. The analysis stays *closed* to promotion but not to harm: ticks ingested after the void
        are still evaluated, and a family that fires then turns the verdict into a ``rollback``
        (:func:`~deploysignal.detectors._kernels.decide_step`). The gate record of this
        tick and of every later one carries ``fail_closed = "voided by operator: <reason>"``, and the
        state keeps it. Replaying the same ticks and the same void reproduces the records byte for byte.

        ``screen`` (a new void, not one rebuilt from a store): the reason must be printable UTF-8 on one
        line (no NUL, newline or other control character: it goes into logs) and the analysis must not
        be voided already; otherwise :class:`InputError` and nothing changes.
        """
        if self._P != 1:
            raise InputError("void() ends a single stream's analysis")
        reason = str(reason).strip()
        if not reason:
            raise InputError("a void needs a reason (it is recorded in the audit)", column="reason")
        if screen and (not reason.isprintable() or not _encodable(reason)):
            raise InputError("a void reason must be printable UTF-8 text on one line (no control characters)", column="reason")
        if screen and self._fail_reason.startswith("voided by operator: "):
            raise InputError(f"the analysis is already voided ({self._fail_reason!r})", column="reason")
        tick = self._tick
        if not self._final[0] or self._verdict[0] == PROCEED:
            self._verdict[0], self._final[0], self._decided_at[0] = EXTEND, True, tick
        self._closed[0] = self._verdict[0] != ROLLBACK  # never proceeds from here; a later fire still rolls back
        self._fail_reason = f"voided by operator: {reason}"
        ts = self._last_ts if math.isfinite(self._last_ts) else 0.0
        F = len(self._fam_names)
        src = _Source(self._static, self.config.version_id, self.settings.alpha, "*", "void", [[math.nan] * 4] * F, [False] * F, False, "",
                      (), [("", ())] * F, self._first_fire[0].tolist(), self._max_lw[0].tolist(), int(self._n_valid[0]), self._fail_reason,
                      False)
        fired = tuple(f for f, ff in zip(self._fam_names, self._first_fire[0].tolist()) if ff >= 0)
        decided = int(self._decided_at[0])
        self._tick += 1
        return Decision(tick, ts, VERDICTS[int(self._verdict[0])], True, None if decided < 0 else decided, fired, src)

    def _fail_closed_reasons(self, lw: np.ndarray, verdict: np.ndarray, n: int) -> list[str]:
        """Per tick of a batch: why the gate has failed closed by then ("" before, and always on valid
        input). :func:`~deploysignal.detectors._kernels.decide_step` turns an open verdict into a final
        ``extend`` at the first tick where a family with alpha reports a NaN log-wealth; the
        reason names the family and the tick, is logged once (error) and stays in every later gate
        record and in the state."""
        reasons = [self._fail_reason] * n
        if not self._fail_reason:
            bad = np.argwhere(np.isnan(lw))
            if bad.size:
                i, f = (int(x) for x in bad[0])
                name, tick = self._fam_names[f], self._tick + i
                outcome = ("the rollback decided at this tick stands" if verdict[i] == ROLLBACK
                           else "verdict held at extend (final); a later fire still rolls back")
                self._fail_reason = (f"fail closed: family {name} log-wealth became NaN at tick {tick} (its evidence can no longer"
                                     f" be trusted); the gate will not proceed: {outcome}")
                _LOG.error("%s", self._fail_reason)
                reasons[i:] = [self._fail_reason] * (n - i)
        return reasons

    def _static_parts(self) -> tuple[tuple[str, float, float | None, tuple[str, str] | None, float], ...]:
        """Per family (``_fam_names`` order): name, alpha allocated, log threshold as recorded (None if
        not finite), component names (None for family B), log threshold (NaN for family B)."""
        parts = [(f, self._alpha_alloc[f], _num(fam._log_thr), fam.COMPONENTS, float(fam._log_thr)) for f, fam in self._families.items()]
        return (*parts, ("B", 0.0, None, None, math.nan))

    def _in_domain(self, stamps: np.ndarray, out: np.ndarray, max_lw: np.ndarray, n_valid: np.ndarray, n: int) -> np.ndarray:
        """Per tick: whether every float of its records lies where msgspec writes what the standard
        library does (:func:`~deploysignal.calibration._config.canonical_json_in_domain`): 0 or
        ``1e-4 <= |x| < 1e16``; non-finite outputs are recorded as null. Conservative (a p-value
        below ~1e-4 counts as outside); a tick outside goes through :func:`canonical_json`'s own check."""

        fast = np.empty(n, dtype=bool)
        # compiled (comparisons only): a dozen numpy calls cost ~40 us on the single-tick path
        in_domain_run(np.ascontiguousarray(stamps, dtype=float), out, max_lw, n_valid, float(self._tick), bool(self._static_ok),
                      _FAST_MIN, _FAST_MAX, 9.2,  # p = exp(-max log-wealth) >= 1.01e-4
                      1.0001e-4, fast)
        return fast

    def _decision(
        self, tick: int, explained: list[tuple[str, tuple[str, ...]]], ts: float, cell_key: str, continuity: str, out: list[list[float]],
        fired: list[bool], b_roll: bool, b_reason: str, verdict: int, final: bool, decided: int, first: list[int], max_lw: list[float],
        n_valid: int, b_drivers: tuple[str, ...], fast: bool, fail_closed: str = "",
    ) -> Decision:
        """Decision of one tick from the per-tick outputs of the families (Python lists); its records
        and lines are built when first asked for."""
        fired_fams = tuple(f for f, ff in zip(self._fam_names, first) if ff >= 0)
        source = _Source(self._static, self.config.version_id, self.settings.alpha, cell_key, continuity, out, fired, b_roll, b_reason,
                         b_drivers, explained, first, max_lw, n_valid, fail_closed, fast)
        return Decision(tick, ts, VERDICTS[verdict], final, None if decided < 0 else decided, fired_fams, source)

    def _valid(self, z: np.ndarray, cz: np.ndarray | None) -> np.ndarray:
        present = ~np.isnan(z) if cz is None else ~(np.isnan(z) | np.isnan(cz))
        return present.sum(axis=1) * 2 >= self._k

    def _decide(self, lw: np.ndarray, fired: np.ndarray, b_fired: np.ndarray, valid: np.ndarray, harm: np.ndarray) -> None:
        """Verdict update for P streams at this tick (lw, fired: (P, F); the rest (P,)); compiled kernel
        :func:`~deploysignal.detectors._kernels.decide_step`, shared with :meth:`update_many`."""
        s = self.settings
        decide_step(
            self._tick, np.ascontiguousarray(lw, dtype=float), np.ascontiguousarray(fired, dtype=bool),
            np.ascontiguousarray(b_fired, dtype=bool), np.ascontiguousarray(valid, dtype=bool), np.ascontiguousarray(harm, dtype=bool),
            self._log_thr, s.window, s.horizon, s.min_valid_fraction, s.suggestive_fraction, s.early_proceed, s.min_proceed_fraction,
            self._n_valid, self._max_lw, self._verdict, self._final, self._decided_at, self._first_fire, self._b_warn, self._closed,
        )

    def run_batch(self, timestamps: np.ndarray, values: np.ndarray, control: np.ndarray | None = None) -> BatchResult:
        """Evaluate ``P`` streams (``values``: (P, n, k)) on one timeline without building records.

        Uses the families' vectorised ``step`` and the same verdict logic as :meth:`update`.
        """
        vals = np.asarray(values, dtype=float)
        if vals.ndim != 3 or vals.shape[0] != self._P or vals.shape[2] != self._k:
            raise InputError(f"values must have shape ({self._P}, n, {self._k}), got {vals.shape}")
        if self._two and control is None:
            raise InputError("two-sample mode needs control values")
        ever = np.zeros((self._P, len(self._fam_names)), dtype=bool)
        for i, ts in enumerate(np.asarray(timestamps, dtype=float)):
            ts = self._check_time(ts)
            cell, _, nb, w = self._locate(ts, "")
            state = self._cohort("")
            can_std, ctl_std = state[0], state[1]
            raw = vals[:, i]
            craw = None if control is None else control[:, i]
            ood = None
            if self.settings.out_of_domain == "missing":  # the same per-signal handling as update_many
                raw, craw, ood = self._enforce_domain(raw, craw, [""] * self._P)
            z = can_std(ts, raw, cell, nb, w)
            cz = None if craw is None else ctl_std(ts, craw, cell, nb, w)
            lws, fires = [], []
            lag, clag = can_std.lag, (None if cz is None else ctl_std.lag)
            for fam in self._families.values():
                lw, f = fam.step(z, cell, cz, lag, clag) if isinstance(fam, FamilyA) else fam.step(z, cell, cz)
                lws.append(lw)
                fires.append(f)
            _, b_fired, b_roll = self._rules.step(z, raw, cell, cz, craw)
            lws.append(np.full(self._P, np.nan))
            ever |= np.stack(fires + [b_fired], axis=1)
            fires.append(b_roll)
            harm = self._families["A"].harm_excluded().all(axis=1) if "A" in self._families else np.zeros(self._P, dtype=bool)
            valid = self._valid(z, cz) if ood is None else self._valid(z, cz) & ~ood
            self._decide(np.stack(lws, axis=1), np.stack(fires, axis=1), b_fired, valid, harm)
            state[2] = ts
            self._last_ts = max(self._last_ts, ts)
            self._tick += 1
        return BatchResult(self._verdict.copy(), self._decided_at.copy(), self._first_fire.copy(), ever, self._fam_names)

    # ----------------------------------------------------------------- conveniences
    def run(self, frame: Frame, control: Frame | None = None) -> list[Decision]:
        """Evaluate every row of ``frame`` (columns matched by name; absent signals are missing)."""
        canary = frame.select(self._names)
        ctrl = control.select(self._names) if control is not None else None
        if ctrl is not None:
            check_paired(canary, ctrl, self.config.tick_seconds)
        cohorts = None if canary.cohort is None else [str(c) for c in canary.cohort]
        return self.update_many(canary.timestamps, canary.values, cohorts=cohorts, control=None if ctrl is None else ctrl.values)

    _ARRAYS = ("n_valid", "verdict", "final", "decided_at", "first_fire", "b_warn")

    def state(self) -> dict[str, Any]:
        """Exact, JSON-serialisable state; ``Gate.from_state(config, settings, state)`` continues identically."""
        st: dict[str, Any] = {name: getattr(self, "_" + name).tolist() for name in self._ARRAYS}
        st["max_lw"] = [[None if not math.isfinite(v) else v for v in row] for row in self._max_lw.tolist()]
        st.update(
            tick=self._tick,
            last_ts=None if self._last_ts == -math.inf else self._last_ts,
            cohorts={
                c: {"canary_std": v[0].state(), "control_std": v[1].state(), "last_ts": None if v[2] == -math.inf else v[2]}
                for c, v in sorted(self._cohorts.items())
            },
            families={f: fam.state() for f, fam in self._families.items()},
            rules=self._rules.state(),
        )
        if self._ts_floor != -math.inf:
            st["ts_floor"] = self._ts_floor
        if self._fail_reason:
            st["fail_closed"] = self._fail_reason
        if self._closed.any():  # written only once closed: states of valid runs stay as they were
            st["closed"] = self._closed.tolist()
        return st

    @classmethod
    def from_state(cls, config: CompiledConfig, settings: GateSettings, state: dict[str, Any], *, screen: bool = True) -> Gate:
        gate = cls(config, settings, screen=screen)
        for name in cls._ARRAYS:
            cur = getattr(gate, "_" + name)
            setattr(gate, "_" + name, np.array(state[name], dtype=cur.dtype).reshape(cur.shape))
        gate._max_lw = np.array([[-math.inf if v is None else v for v in row] for row in state["max_lw"]], dtype=float)
        gate._tick = int(state["tick"])
        gate._last_ts = -math.inf if state["last_ts"] is None else float(state["last_ts"])
        cohorts = state.get("cohorts")
        if cohorts is None:  # single-cohort state written before per-cohort memory: one shared clock
            cohorts = {"": {"canary_std": state["canary_std"], "control_std": state["control_std"], "last_ts": state["last_ts"]}}
            gate._ts_floor = gate._last_ts
        elif state.get("ts_floor") is not None:
            gate._ts_floor = float(state["ts_floor"])
        for c, cst in cohorts.items():
            entry = gate._cohort(c)
            entry[0].load_state(cst["canary_std"])
            entry[1].load_state(cst["control_std"])
            entry[2] = -math.inf if cst["last_ts"] is None else float(cst["last_ts"])
        for f, st in state["families"].items():
            gate._families[f].load_state(st)
        gate._rules.load_state(state["rules"])
        gate._fail_reason = str(state.get("fail_closed") or "")
        if "closed" in state:
            gate._closed = np.array(state["closed"], dtype=bool).reshape(gate._closed.shape)
        elif gate._fail_reason:  # a state written before 'closed' existed: failed closed or voided, not rolled back
            gate._closed = gate._verdict != ROLLBACK
        return gate
