"""Per-request logs with an arm column, bucketed into ticks and blocks of randomised units.

Format (CSV, JSONL or Parquet): one row per request; ``timestamp`` (ISO-8601 or epoch seconds), ``arm``
(``canary`` or ``stable``), optional ``unit`` (the session / user id the router randomised; absent =
each request was randomised on its own), optional ``tier``, then one column per metric (empty = not
measured). Rows may come in any order.

Units and blocks. A request-randomised log has one unit per request, in the tick of its timestamp.
With a ``unit`` column, a unit closes ``unit_timeout`` seconds after its last request (or at the end of
the input) and enters the test once, in the tick it closes, with its summed outcomes: its label is then
independent of its outcomes and of the other units' labels under the null. Units are grouped into
blocks by (closing tick, starting tick, tier): within a block all units were randomised in one tick, so
with any time-varying share the canary units are a uniformly random subset of the block's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import InputError, SchemaError
from ..sources._files import _COHORT_COLUMNS, _TIME_COLUMNS, _parse_time, _parse_value, read_rows
from ._data import MetricBlocks, SplitData
from ._spec import MetricSpec

__all__ = ["EDGE_LEVELS", "RequestLog", "read_requests", "requests_to_data"]

#: most ticks a request log may span (a tick length far too short for the log is an error, not a huge allocation)
MAX_TICKS = 10_000_000
#: pooled quantile levels of derived edges (continuous metrics without edges in the signals file)
EDGE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class RequestLog:
    """Parsed per-request columns: timestamps, canary flags, unit ids (or ``None``), tiers and metric values."""

    def __init__(self, timestamps: np.ndarray, canary: np.ndarray, units: np.ndarray | None, tiers: np.ndarray, values: dict[str, np.ndarray]) -> None:
        self.timestamps, self.canary, self.units, self.tiers, self.values = timestamps, canary, units, tiers, values


def read_requests(path: str | Path) -> RequestLog:
    """Read a request log; errors name the file, the row and the column."""
    p = Path(path)
    header, rows, lines = read_rows(p)
    low = {h.lower(): h for h in header}
    tcol = next((low[c] for c in _TIME_COLUMNS if c in low), None)
    if tcol is None:
        raise SchemaError(f"{p}: no timestamp column (expected one of {', '.join(_TIME_COLUMNS)})")
    acol = low.get("arm")
    if acol is None:
        raise SchemaError(f"{p}: no arm column (canary or stable per request)")
    ucol = low.get("unit")
    ccol = next((low[c] for c in _COHORT_COLUMNS if c in low), None)
    metrics = [h for h in header if h not in (tcol, acol, ucol, ccol)]
    if not metrics:
        raise SchemaError(f"{p}: no metric columns besides timestamp, arm, unit, tier")
    if not rows:
        raise InputError(f"{p}: no data rows")
    n = len(rows)
    ts = np.empty(n)
    canary = np.empty(n, dtype=bool)
    units = [] if ucol else None
    tiers = []
    vals = {m: np.empty(n) for m in metrics}
    for i, rec in enumerate(rows):
        r = i + 1
        try:
            ts[i] = _parse_time(rec.get(tcol), r)
            arm = rec.get(acol)
            arm = arm.strip().lower() if isinstance(arm, str) else arm
            if arm not in ("canary", "stable"):
                raise InputError(f"arm must be 'canary' or 'stable', got {rec.get(acol)!r}", row=r, column=acol)
            canary[i] = arm == "canary"
            if units is not None:
                u = rec.get(ucol)
                if u is None or (isinstance(u, str) and not u.strip()):
                    raise InputError("unit is empty (every request needs the unit the router randomised)", row=r, column=ucol)
                units.append(str(u).strip())
            c = rec.get(ccol) if ccol else None
            tiers.append("" if c is None else str(c).strip())
            for m in metrics:
                vals[m][i] = _parse_value(rec.get(m), r, m)
        except InputError as exc:
            where = f"{p} line {lines[i]}" if lines is not None else str(p)
            raise InputError(f"{exc.message} ({where})", row=exc.row, column=exc.column) from None
    return RequestLog(ts, canary, None if units is None else np.array(units, dtype=object), np.array(tiers, dtype=object), vals)


def resolve_specs(log: RequestLog, signals: dict[str, dict[str, Any]] | None) -> tuple[list[MetricSpec], list[str]]:
    """Metric specs for the log's columns: from the signals file, else inferred (0/1 columns are event
    metrics, others continuous; harm ``up``). Continuous metrics without edges get pooled quantiles of
    both arms (:data:`EDGE_LEVELS`): a function of the outcomes only, never of the labels, so the
    split null's conditional argument is untouched. Returns the specs and notes on what was inferred."""
    notes = []
    cols = list(log.values)
    if signals is not None:
        extra = [c for c in cols if c not in signals]
        if extra:
            raise SchemaError(f"columns not in the signals file (declare them, or drop them): {', '.join(extra)}", column=extra[0])
        absent = [m for m in signals if m not in log.values]
        if absent:
            raise SchemaError(f"signals-file metrics with no column in the request log: {', '.join(absent)}", column=absent[0])
    specs = []
    for m in cols:
        v = log.values[m]
        got = v[~np.isnan(v)]
        if got.size == 0:
            raise InputError("metric has no values (all missing)", column=m)
        meta = dict(signals[m]) if signals is not None else {}
        if "kind" not in meta:
            meta["kind"] = "event" if np.all((got == 0) | (got == 1)) else "continuous"
            notes.append(f"{m}: inferred kind {meta['kind']}, harm {meta.get('direction', 'up')}")
        if meta["kind"] == "event":
            bad = np.flatnonzero(~np.isnan(v) & ((v < 0) | (v != np.floor(v))))
            if bad.size:
                raise InputError(f"an event metric takes non-negative integer counts per request, got {v[bad[0]]!r}", row=int(bad[0]) + 1, column=m)
        elif meta.get("edges") is None:
            meta["edges"] = sorted({float(x) for x in np.quantile(got, EDGE_LEVELS, method="lower")})
            notes.append(f"{m}: edges from pooled quantiles {list(EDGE_LEVELS)} of both arms of the whole file: " + ", ".join(f"{e:.4g}" for e in meta["edges"])
                         + " (they move with the data: a larger harm can give less evidence, and a decision may differ on a prefix of the"
                         " log; give fixed edges in the signals file)")
        specs.append(MetricSpec(m, meta["kind"], meta.get("direction", "up"), tuple(meta.get("edges") or ()),
                                meta.get("tolerance", 0.2), meta.get("alpha_share", 1.0)))
    return specs, notes


def requests_to_data(log: RequestLog, specs: list[MetricSpec], tick_seconds: float, unit_timeout: float, *,
                     block_seconds: float | None = None, share_changes: tuple[float, ...] | list[float] = ()) -> SplitData:
    """Bucket a request log into ticks of ``tick_seconds`` from its first request and into blocks.

    A block holds the units randomised under one assignment probability: units (or requests) are grouped
    by closing tick, by the *block slot* they started in (``block_seconds`` from the first request,
    default one tick), by the *share segment* they started in (between consecutive ``share_changes``:
    epoch seconds at which the router's weight changed) and by tier. With ``share_changes`` a unit
    (session) is cut at each change it spans: the part before enters the test when the change happens
    (or earlier, when it closes), the part after is a new unit whose block also holds the arm of the
    unit's previous part (a sticky router moves only some units at a weight step: given their previous
    arm, the parts are exchangeable again). Sample-ratio counts count each unit once, where it first closes.

    Guarantee condition: the assignment probability is constant within each block. A router weight
    change inside a block that is not declared in ``share_changes`` breaks it (an outcome change at the
    same moment then looks like an effect of the version).
    """
    t0 = float(log.timestamps.min())
    span = (float(log.timestamps.max()) - t0) / tick_seconds
    if span >= MAX_TICKS:
        raise InputError(f"the log spans {span:.3g} ticks of {tick_seconds:g} s (at most {MAX_TICKS:,}): use longer ticks", column="timestamp")
    bsec = tick_seconds if block_seconds is None else float(block_seconds)
    if (float(log.timestamps.max()) - t0) / bsec >= MAX_TICKS:
        raise InputError(f"the log spans more than {MAX_TICKS:,} blocks of {bsec:g} s: use longer blocks", column="timestamp")
    chg = np.unique(np.asarray(share_changes, dtype=float))
    ts = log.timestamps
    rtick = np.floor((ts - t0) / tick_seconds).astype(np.int64)
    T = int(rtick.max()) + 1
    rseg = np.searchsorted(chg, ts, side="right").astype(np.int64)  # share segment of each request
    if log.units is None:
        pid = np.arange(len(rtick))
        ucan, close, utier = log.canary, rtick, log.tiers
        slot, seg, hist = np.floor((ts - t0) / bsec).astype(np.int64), rseg, np.zeros(len(rtick), dtype=np.int64)
        fresh = np.ones(len(rtick), dtype=bool)
    else:
        names, uid = np.unique(log.units, return_inverse=True)
        uid = uid.reshape(-1)
        # pieces: a unit's requests within one share segment
        pkey, pid = np.unique(uid * (len(chg) + 1) + rseg, return_inverse=True)
        pid = pid.reshape(-1)
        P = len(pkey)
        punit, seg = pkey // (len(chg) + 1), pkey % (len(chg) + 1)
        first = np.full(P, len(pid))
        np.minimum.at(first, pid, np.arange(len(pid)))
        ncan = np.bincount(pid, weights=log.canary, minlength=P)
        cnt = np.bincount(pid, minlength=P)
        mixed = np.flatnonzero((ncan > 0) & (ncan < cnt))
        if mixed.size:
            q = mixed[0]
            row = int(np.flatnonzero((pid == q) & (log.canary != log.canary[first[q]]))[0]) + 1
            raise InputError(f"unit {names[punit[q]]!r} has requests in both arms (it moved at {ts[row - 1]:.6g} s): the router did not "
                             "randomise by unit, or its weight changed then: declare the change with --share-changes", row=row, column="unit")
        ucan = ncan > 0
        tmin = np.full(P, np.inf)
        tmax = np.full(P, -np.inf)
        np.minimum.at(tmin, pid, ts)
        np.maximum.at(tmax, pid, ts)
        slot = np.floor((tmin - t0) / bsec).astype(np.int64)
        close = np.floor((tmax + unit_timeout - t0) / tick_seconds)
        cut = seg < len(chg)  # the piece ends at the next share change: it enters the test then at the latest
        close[cut] = np.minimum(close[cut], np.floor((chg[seg[cut]] - t0) / tick_seconds))
        close = np.minimum(close, T - 1).astype(np.int64)
        utier = log.tiers[first]
        # the arm history of the unit's earlier pieces (pieces are sorted by unit, then segment)
        prev = np.r_[False, punit[1:] == punit[:-1]]
        fresh = ~prev
        hist = np.zeros(P, dtype=np.int64)
        if prev.any():
            for k in np.unique(seg[prev]).tolist():  # in segment order: a piece's history depends on its predecessor's
                at = np.flatnonzero(prev & (seg == k))
                pair = hist[at - 1] * 2 + ucan[at - 1]
                hist[at] = np.unique(pair, return_inverse=True)[1].reshape(-1) + 1
    _, tier_code = np.unique(utier.astype(str), return_inverse=True)
    rows = np.stack([close, slot, seg, hist, tier_code.reshape(-1).astype(np.int64)], axis=1)
    ukey, ublock = np.unique(rows, axis=0, return_inverse=True)  # blocks in (close, slot, segment, history, tier) order
    ublock = ublock.reshape(-1)
    nb = len(ukey)
    tptr = np.searchsorted(ukey[:, 0], np.arange(T + 1), side="left").astype(np.int64)
    cu = np.bincount(close[fresh], weights=ucan[fresh], minlength=T).astype(np.int64)
    un = np.bincount(close[fresh], minlength=T).astype(np.int64)
    U = len(ucan)
    out = {}
    for s in specs:
        v = log.values[s.name]
        meas_r = ~np.isnan(v)
        meas = np.bincount(pid, weights=meas_r, minlength=U) > 0
        cols = []
        for k in range(s.n_events):
            y_r = np.where(meas_r, v if s.kind == "event" else (v > s.edges[k]), 0).astype(np.int64)
            cols.append(np.bincount(pid, weights=y_r, minlength=U).astype(np.int64) if log.units is not None else y_r)
        Y = np.stack(cols, axis=1)
        out[s.name] = _blocks(Y, meas, ucan, ublock, nb, tptr)
    return SplitData(t0 + tick_seconds * np.arange(T), cu, un, out)


def _blocks(Y: np.ndarray, meas: np.ndarray, ucan: np.ndarray, ublock: np.ndarray, nb: int, tptr: np.ndarray) -> MetricBlocks:
    K = Y.shape[1]
    bm = ublock[meas]
    cm = ucan[meas]
    Ym = Y[meas]
    n = np.bincount(bm, minlength=nb).astype(np.int64)
    nc = np.bincount(bm, weights=cm, minlength=nb).astype(np.int64)
    a = np.zeros((nb, K), dtype=np.int64)
    c1 = np.zeros((nb, K), dtype=np.int64)
    xs = []
    for k in range(K):
        y = Ym[:, k]
        a[:, k] = np.bincount(bm, weights=y * cm, minlength=nb).astype(np.int64)
        c1[:, k] = np.bincount(bm, weights=(y == 1), minlength=nb).astype(np.int64)
        big = y >= 2
        if big.any():
            trip, cnt = np.unique(np.stack([bm[big], np.full(int(big.sum()), k), y[big]], axis=1), axis=0, return_counts=True)
            xs.append(np.column_stack([trip, cnt]))
    x = np.concatenate(xs) if xs else np.zeros((0, 4), dtype=np.int64)
    x = x[np.lexsort((x[:, 2], x[:, 1], x[:, 0]))] if len(x) else x
    xptr = np.searchsorted(x[:, 0], np.arange(nb + 1), side="left").astype(np.int64)
    return MetricBlocks(tptr, nc, n, a, c1, xptr, np.ascontiguousarray(x[:, 1], dtype=np.int64), np.ascontiguousarray(x[:, 2], dtype=np.int64),
                        np.ascontiguousarray(x[:, 3], dtype=np.int64))
