"""Shared pieces of families C, D and E: config blocks, exact JSON state, the single-stream API."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..calibration import C_HI, CompiledConfig, stack_arrays
from ._base import Evidence, Observation
from ._kernels import ONS_C, as_rows, check_cell, check_cells

__all__ = ["ONS_C", "ConfigBlocks", "StreamFamily", "config_blocks", "dump_arrays", "load_arrays", "top_drivers"]

class ConfigBlocks:
    """Per covariance block (tier, or the global block) of ``P`` stacked configs.

    Attributes
    ----------
    chol : (P, B, k, k)
        Cholesky factor of the Ledoit-Wolf covariance of the baseline innovations.
    chol_inv : (P, B, k, k)
        Its inverse (whitening matrix).
    ref : (P, B, n, k)
        Calibration-split innovation vectors of the block's tier (NaN-padded to a common ``n``).
    ref_n : (P, B)
        Number of valid reference rows.
    cell_block : (cells,)
        Block of each calibration cell.
    cell_bias_var : (P, cells, k)
        Variance (score sd units) of the cell-level estimation error recorded by the compiler.
    seed : int
        The compiled seed of the first config.
    """

    def __init__(self, configs: CompiledConfig | Sequence[CompiledConfig]) -> None:
        cfgs = [configs] if isinstance(configs, CompiledConfig) else list(configs)
        arr = stack_arrays(cfgs)
        self.chol = np.asarray(arr["chol"], dtype=float)
        self.chol_inv = np.linalg.inv(self.chol)
        self.cell_block = np.asarray(cfgs[0].arrays["cov_index"], dtype=int)
        self.cell_bias_var = np.asarray(arr["cell_bias_var"][:, 0], dtype=float)  # (P, cells, k)
        self.seed = int(cfgs[0].seed)
        self.names = cfgs[0].names
        k = len(self.names)
        rows: list[list[np.ndarray]] = []
        for c in cfgs:
            per_block = []
            for blk in c.covariances:
                if blk.key == "*":
                    parts = [np.asarray(v, dtype=float).reshape(-1, k) for _, v in sorted(c.reference.items())]
                    ref = np.concatenate(parts) if parts else np.empty((0, k))
                else:
                    ref = np.asarray(c.reference.get(blk.key[2:], []), dtype=float).reshape(-1, k)
                per_block.append(np.clip(ref, -C_HI, C_HI))
            rows.append(per_block)
        n = max(1, max(r.shape[0] for blocks in rows for r in blocks))
        self.ref = np.full((len(cfgs), len(rows[0]), n, k), np.nan)
        self.ref_n = np.zeros((len(cfgs), len(rows[0])), dtype=int)
        for p, blocks in enumerate(rows):
            for b, r in enumerate(blocks):
                self.ref[p, b, : r.shape[0]] = r
                self.ref_n[p, b] = r.shape[0]


def top_drivers(names: Sequence[str], score: np.ndarray, share: float = 0.5, most: int = 3) -> tuple[str, ...]:
    """Names with the largest ``score`` (at most ``most``), keeping only those with at least ``share`` of
    the top score, so the explanation names what carries the evidence and not the noise after it."""
    order = np.argsort(-score, kind="stable")
    top = float(score[order[0]])
    keep = [i for i in order[:most] if i == order[0] or (top > 0 and float(score[i]) >= share * top)]
    return tuple(names[i] for i in keep)


def config_blocks(configs: CompiledConfig | Sequence[CompiledConfig]) -> ConfigBlocks:
    return ConfigBlocks(configs)


def dump_arrays(obj: Any, names: Sequence[str]) -> dict[str, Any]:
    """Exact JSON-friendly dump of float arrays (non-finite values written as strings)."""
    out: dict[str, Any] = {}
    for name in names:
        a = np.asarray(getattr(obj, "_" + name))
        if a.dtype == bool:
            out[name] = a.tolist()
        else:
            flat = [v if math.isfinite(v) else repr(v) for v in a.astype(float).ravel().tolist()]
            out[name] = {"shape": list(a.shape), "data": flat}
    return out


def load_arrays(obj: Any, st: dict[str, Any], names: Sequence[str]) -> None:
    """Inverse of :func:`dump_arrays`; checks shapes against the freshly built detector."""
    for name in names:
        cur = np.asarray(getattr(obj, "_" + name))
        if cur.dtype == bool:
            arr = np.array(st[name], dtype=bool)
        else:
            d = st[name]
            arr = np.array([float(v) for v in d["data"]], dtype=float).reshape(d["shape"])
        if arr.shape != cur.shape:
            raise ValueError(f"state array {name} has shape {arr.shape}, expected {cur.shape}")
        setattr(obj, "_" + name, arr)


class StreamFamily:
    """Shared single-stream API of families C, D, E over their vectorised ``step``.

    Subclasses define ``family``, ``_ARRAYS`` (state arrays), ``step(z, cell, control_z)``,
    ``_statistic()`` and ``from_config``; ``_fired``, ``_log_thr``, ``_fire_reason`` and
    ``_fire_drivers`` are set by them.
    """

    family = "?"
    _ARRAYS: tuple[str, ...] = ()
    two_sample: bool
    _P: int
    _k: int
    _cell_block: np.ndarray
    _log_thr: float
    _fired: np.ndarray
    _fire_reason: str
    _fire_drivers: tuple[str, ...]

    def step(self, z: np.ndarray, cell: int, control_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _statistic(self) -> float:
        raise NotImplementedError

    def _tick_inputs(self, z: np.ndarray, cell: int, control_z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
        """Checked inputs of one tick for a kernel (which does not bounds-check): ``z``, the control (``z``
        itself in one-sample mode, where the kernel ignores it) and the covariance block of ``cell``."""
        z, cz = self._rows(z, control_z, self._P)
        return z, cz, int(self._cell_block[check_cell(cell, self._cell_block.size)])

    def _rows(self, z: np.ndarray, control_z: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``z`` and the control as checked (n, k) rows (the control is ``z`` itself in one-sample mode)."""
        if self.two_sample and control_z is None:
            raise ValueError(f"two-sample family {self.family} needs control_z")
        shape = (n, self._k)
        z = as_rows(z, shape, "z")
        return z, (z if control_z is None else as_rows(control_z, shape, "control_z"))

    def _settle(self, log_wealth: np.ndarray, explain: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sticky fires: mark streams whose log-wealth reached the bound, explaining a single stream's
        first fire with ``explain()``; return (log-wealth, fired)."""
        newly = ~self._fired & (log_wealth >= self._log_thr)
        if newly.any() and log_wealth.size == 1:
            explain()
        self._fired |= newly
        return log_wealth, self._fired.copy()

    #: names of the two components :meth:`run` reports per tick (columns 2 and 3 of its output)
    COMPONENTS: tuple[str, str] = ("", "")

    def _run_kernel(self, z: np.ndarray, cz: np.ndarray, cells: np.ndarray, start: int, out: np.ndarray, fired: np.ndarray) -> tuple[int, bool]:
        raise NotImplementedError

    def _explain_tick(self, t: int, z: np.ndarray, cz: np.ndarray | None, cells: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def run(self, z: np.ndarray, cells: np.ndarray, control_z: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Advance a single stream over ``T`` ticks (``z``: (T, k), ``cells``: (T,)), as ``T`` calls of
        ``step`` would (same kernel, same order, a fire explained from the state of its tick).

        Returns ``out`` (T, 4): log-wealth, statistic, and the two :attr:`COMPONENTS` after each tick,
        and ``fired`` (T,) (sticky).
        """
        if self._P != 1:
            raise ValueError("run() advances a single stream; use step() for several")
        T = np.shape(z)[0]
        z, cz = self._rows(z, control_z, T)
        cells = check_cells(cells, T, self._cell_block.size)
        out, fired = np.empty((T, 4)), np.empty(T, dtype=bool)
        start = 0
        while start < T:
            start, newly = self._run_kernel(z, cz, cells, start, out, fired)
            if newly:
                self._explain_tick(start - 1, z, None if control_z is None else cz, cells, out)
        return out, fired

    def update(self, obs: Observation) -> Evidence:
        """Add one tick of a single stream; return the family's evidence (fires are sticky)."""
        cz = None if obs.control_z is None else np.asarray(obs.control_z, dtype=float)[None]
        log_wealth, fired = self.step(np.asarray(obs.z, dtype=float)[None], obs.cell, cz)
        return Evidence(
            family=self.family,
            statistic=self._statistic(),
            log_wealth=float(log_wealth[0]),
            log_threshold=self._log_thr,
            fired=bool(fired[0]),
            reason=self._fire_reason if fired[0] else "",
            drivers=self._fire_drivers if fired[0] else (),
        )

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, st: dict[str, Any]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        """Exact JSON-serialisable state (non-finite floats written as strings)."""
        st = dump_arrays(self, self._ARRAYS)
        st.update(self._extra_state(), reason=self._fire_reason, drivers=list(self._fire_drivers))
        return st

    def load_state(self, st: dict[str, Any]) -> Any:
        """Restore a :meth:`state` into a detector built from the same config and settings."""
        load_arrays(self, st, self._ARRAYS)
        self._load_extra_state(st)
        self._fire_reason = st["reason"]
        self._fire_drivers = tuple(st["drivers"])
        return self

    @classmethod
    def from_state(cls, config: CompiledConfig, state: dict[str, Any], **kwargs: Any) -> Any:
        """Rebuild from a config and the same keyword arguments, then load ``state``."""
        return cls.from_config(config, **kwargs).load_state(state)  # type: ignore[attr-defined]
