"""Real labelled server telemetry: NAB, SMD and ASD as deploy-gate benchmarks.

Reads the compact evaluation sets under ``shared/data`` at run time (nothing is copied into the
repository) and turns each labelled anomaly into a deploy decision:

* **detection runs**: for each labelled anomaly onset, *baseline* = the clean stretch immediately before it
  (up to ``baseline_ticks`` label-free rows, stopping at the previous labelled stretch; runs with fewer
  than half that are skipped), *canary* = ``canary_ticks`` rows from the onset (cut at the next labelled
  onset). A method *detects* the segment if it rolls back anywhere in the canary.
* **false-alarm runs**: sliding pairs (baseline, canary) of the same lengths lying entirely in label-free
  rows, stepping by ``canary_ticks``; any rollback is a false alarm.

Per dataset:

``nab``  NAB ``realAWSCloudwatch`` + ``realKnownCause`` (univariate, timestamps; rows whose timestamp is
         not after every earlier one are dropped, the first kept). Labelled stretches are the official NAB windows; the onset is the window
         start. 5-minute data: baseline 576 ticks (2 days), canary 144 (12 hours).
``smd``  Server Machine Dataset, 4 machines x 38 metrics, 1-minute ticks: the stored training tail
         (treated as clean, as its authors do) followed by the test half; onsets from
         ``*_segments.csv``. Baseline 1440 ticks (1 day), canary 240 (4 hours).
``asd``  Application Server Dataset, 12 servers x 19 metrics, 5-minute ticks: training half then test
         half. Baseline 576, canary 144.

Metrics are anonymous, so every signal has direction ``both``. Columns constant over a run's baseline
are dropped for that run (a user would not gate on them).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import DeploySignalError, InputError
from ..telemetry import Frame
from ._method import Method
from ._stats import clopper_pearson

__all__ = ["DATASETS", "Series", "default_data_dir", "iter_runs", "load_dataset", "run_realdata", "summarise_realdata"]

log = logging.getLogger(__name__)

#: dataset -> (tick seconds, baseline ticks, canary ticks)
DATASETS: dict[str, tuple[float, int, int]] = {"nab": (300.0, 576, 144), "smd": (60.0, 1440, 240), "asd": (300.0, 576, 144)}


@dataclass(frozen=True)
class Series:
    """One labelled series: timestamps, values (n, k), per-row label and the onset rows of labelled stretches."""

    dataset: str
    name: str
    timestamps: np.ndarray
    values: np.ndarray
    signals: tuple[str, ...]
    labels: np.ndarray
    onsets: tuple[int, ...]


def default_data_dir() -> Path:
    """``shared/data`` next to the repository (``../shared/data`` from the working tree), or ``$DEPLOYSIGNAL_DATA``."""
    import os

    env = os.environ.get("DEPLOYSIGNAL_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("../shared/data")


def _read_numeric_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [[float(x) if x != "" else np.nan for x in r] for r in reader if r]
    return header, np.asarray(rows, dtype=float).reshape(len(rows), len(header))


def _parse_ts(s: str) -> float:
    s = s.strip().split(".")[0]
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def _load_nab(root: Path) -> list[Series]:
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    out = []
    for folder in ("realAWSCloudwatch", "realKnownCause"):
        for path in sorted((root / folder).glob("*.csv")):
            key = f"{folder}/{path.name}"
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            ts = np.array([_parse_ts(r["timestamp"]) for r in rows])
            vals = np.array([float(r["value"]) if r["value"] != "" else np.nan for r in rows])
            keep = np.concatenate([[True], ts[1:] > np.maximum.accumulate(ts)[:-1]])  # drop duplicate / backwards stamps
            ts, vals = ts[keep], vals[keep]
            labels = np.zeros(ts.size, dtype=bool)
            onsets = []
            for start, end in windows.get(key, []):
                a, b = _parse_ts(start), _parse_ts(end)
                inside = (ts >= a) & (ts <= b)
                if inside.any():
                    labels |= inside
                    onsets.append(int(np.flatnonzero(inside)[0]))
            out.append(Series("nab", key, ts, vals[:, None], ("value",), labels, tuple(sorted(onsets))))
    return out


def _segments(path: Path, offset: int, n: int) -> tuple[np.ndarray, tuple[int, ...]]:
    labels = np.zeros(n, dtype=bool)
    onsets = []
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            a, b = int(r["start_idx"]) + offset, int(r["end_idx_inclusive"]) + offset
            labels[a : b + 1] = True
            onsets.append(a)
    return labels, tuple(sorted(onsets))


def _load_multivariate(root: Path, dataset: str, train_suffix: str) -> list[Series]:
    step = DATASETS[dataset][0]
    out = []
    for seg in sorted(root.glob("*_segments.csv")):
        entity = seg.name[: -len("_segments.csv")]
        h_tr, tr = _read_numeric_csv(root / f"{entity}_{train_suffix}.csv")
        h_te, te = _read_numeric_csv(root / f"{entity}_test.csv")
        if h_tr != h_te:
            raise InputError(f"{entity}: train and test columns differ")
        vals = np.vstack([tr[:, 1:], te[:, 1:]])
        n = vals.shape[0]
        labels, onsets = _segments(seg, tr.shape[0], n)
        ts = 1_600_000_000.0 + step * np.arange(n)
        out.append(Series(dataset, entity, ts, vals, tuple(h_tr[1:]), labels, onsets))
    return out


def load_dataset(name: str, data_dir: Path | None = None) -> list[Series]:
    """Load one dataset (``nab``, ``smd`` or ``asd``) from ``data_dir`` (default :func:`default_data_dir`).

    Raises
    ------
    FileNotFoundError
        When the dataset folder is absent (callers skip it with a message).
    """
    root = (data_dir or default_data_dir()) / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset {name!r} not found (see shared/data/README.txt)")
    if name == "nab":
        return _load_nab(root)
    if name == "smd":
        return _load_multivariate(root, "smd", "train_tail")
    if name == "asd":
        return _load_multivariate(root, "asd", "train")
    raise InputError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def _frame(s: Series, a: int, b: int, cols: np.ndarray) -> Frame:
    return Frame(s.timestamps[a:b], s.values[a:b][:, cols], tuple(np.asarray(s.signals)[cols]))


def iter_runs(series: Series, baseline_ticks: int, canary_ticks: int, *, max_null: int = 10) -> Iterator[tuple[str, int, Frame, Frame]]:
    """Yield ``(kind, start_row, baseline, canary)`` with kind ``"anomaly"`` or ``"clean"`` (see module doc)."""
    lab = series.labels
    n = lab.size
    min_base = baseline_ticks // 2
    onsets = list(series.onsets)
    for i, on in enumerate(onsets):
        a = on
        while a > 0 and not lab[a - 1] and on - a < baseline_ticks:
            a -= 1
        if on - a < min_base:
            continue
        end = min(n, on + canary_ticks, onsets[i + 1] if i + 1 < len(onsets) else n)
        if end - on < 2:
            continue
        yield from _with_cols(series, "anomaly", on, a, on, end)
    # clean sliding pairs
    clean = np.concatenate([[0], np.cumsum(lab)])
    count, start = 0, 0
    while start + baseline_ticks + canary_ticks <= n and count < max_null:
        stop = start + baseline_ticks + canary_ticks
        if clean[stop] - clean[start] == 0:
            yield from _with_cols(series, "clean", start + baseline_ticks, start, start + baseline_ticks, stop)
            count += 1
            start = stop
        else:
            start += canary_ticks
    return


def _with_cols(series: Series, kind: str, row: int, a: int, on: int, end: int) -> Iterator[tuple[str, int, Frame, Frame]]:
    base = series.values[a:on]
    ok = ~np.isnan(base)
    spread = np.where(ok.any(axis=0), np.nanmax(np.where(ok, base, -np.inf), axis=0) - np.nanmin(np.where(ok, base, np.inf), axis=0), 0.0)
    cols = np.flatnonzero(spread > 0)
    if cols.size == 0:
        return
    yield kind, row, _frame(series, a, on, cols), _frame(series, on, end, cols)


def run_realdata(
    methods: Callable[[int], Sequence[Method]],
    datasets: Sequence[str] = ("nab", "smd", "asd"),
    *,
    data_dir: Path | None = None,
    max_null: int = 10,
    max_runs: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every method on every detection and false-alarm run of the datasets.

    ``methods(window)`` builds the methods for a canary of ``window`` ticks. Returns one record per
    (dataset, series, kind, row, method) and the list of messages for datasets skipped because absent.
    ``max_runs`` caps runs per dataset and kind (first ones in file order) for quick runs.
    """
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    for ds in datasets:
        try:
            series = load_dataset(ds, data_dir)
        except FileNotFoundError as exc:
            msg = f"skipping {ds}: {exc}"
            log.warning(msg)
            skipped.append(msg)
            continue
        _, nb, nc = DATASETS[ds]
        runs = [(s, r) for s in series for r in iter_runs(s, nb, nc, max_null=max_null)]
        if max_runs is not None:
            kept, seen = [], {"anomaly": 0, "clean": 0}
            for s, r in runs:
                if seen[r[0]] < max_runs:
                    kept.append((s, r))
                    seen[r[0]] += 1
            runs = kept
        ms = methods(nc)
        for i, (s, (kind, row, base, can)) in enumerate(runs):
            for m in ms:
                rec = {"dataset": ds, "series": s.name, "kind": kind, "row": row, "method": m.name}
                try:
                    res = m.run(base, can)
                except (DeploySignalError, ValueError, ArithmeticError, RuntimeWarning) as exc:
                    log.debug("%s on %s/%s row %d failed: %s", m.name, ds, s.name, row, exc)
                    rec.update(alarm=None, first_alarm=None, verdict="error", error=str(exc))
                else:
                    rec.update(alarm=res.first_alarm is not None, first_alarm=res.first_alarm, verdict=res.verdict)
                records.append(rec)
            if progress is not None:
                progress(ds, i + 1, len(runs))
        for m in ms:
            bad = [r for r in records if r["dataset"] == ds and r["method"] == m.name and r["alarm"] is None]
            if bad:
                log.warning("%s raised on %d of %d %s runs (first: %s)", m.name, len(bad), len(runs), ds, bad[0]["error"])
    return records, skipped


def summarise_realdata(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dataset, method): segment detection rate and false-alarm rate with Clopper-Pearson 95% intervals,
    the median detection delay (ticks from onset) and the number of runs on which the method raised
    (excluded from both rates, reported as ``errors``)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    rows = []
    for (ds, m), rs in groups.items():
        errors = sum(r["alarm"] is None for r in rs)
        an = [r for r in rs if r["kind"] == "anomaly" and r["alarm"] is not None]
        cl = [r for r in rs if r["kind"] == "clean" and r["alarm"] is not None]
        kd, kf = sum(r["alarm"] for r in an), sum(r["alarm"] for r in cl)
        delays = [r["first_alarm"] for r in an if r["alarm"]]
        rows.append(
            {
                "dataset": ds,
                "method": m,
                "segments": len(an),
                "detected": kd,
                "detection": kd / len(an) if an else None,
                "detection_ci": clopper_pearson(kd, len(an)) if an else None,
                "clean_runs": len(cl),
                "false_alarms": kf,
                "false_alarm": kf / len(cl) if cl else None,
                "false_alarm_ci": clopper_pearson(kf, len(cl)) if cl else None,
                "delay_median": float(np.median(delays)) if delays else None,
                "errors": errors,
            }
        )
    return rows
