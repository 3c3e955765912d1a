"""Real-data loaders and runs (skipped when shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deploysignal.evaluation import KayentaJudge, PeekingTTest
from deploysignal.evaluation._realdata import DATASETS, default_data_dir, iter_runs, load_dataset, run_realdata, summarise_realdata

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "nab").is_dir(), reason=f"real data not found at {DATA}")


@needs_data
def test_nab_windows_and_onsets() -> None:
    series = load_dataset("nab")
    assert len(series) == 24
    assert sum(len(s.onsets) for s in series) == 49  # 30 AWS + 19 KnownCause windows (README)
    clean = [s for s in series if s.name.endswith("ec2_cpu_utilization_c6585a.csv")][0]
    assert clean.onsets == () and not clean.labels.any()
    for s in series:
        assert np.all(np.diff(s.timestamps) > 0)


@needs_data
@pytest.mark.parametrize("name,entities,segments", [("smd", 4, 71), ("asd", 12, 76)])
def test_multivariate_segments(name: str, entities: int, segments: int) -> None:
    series = load_dataset(name)
    assert len(series) == entities
    assert sum(len(s.onsets) for s in series) == segments
    for s in series:
        assert all(s.labels[o] and (o == 0 or not s.labels[o - 1]) for o in s.onsets)


@needs_data
@pytest.mark.parametrize("name", list(DATASETS))
def test_runs_are_clean_before_onset(name: str) -> None:
    _, nb, nc = DATASETS[name]
    for s in load_dataset(name)[:3]:
        for kind, row, base, can in iter_runs(s, nb, nc, max_null=3):
            i0 = int(np.searchsorted(s.timestamps, base.timestamps[0]))
            assert not s.labels[i0:row].any()
            assert base.timestamps[-1] < can.timestamps[0]
            assert nb // 2 <= len(base) <= nb and 2 <= len(can) <= nc
            if kind == "anomaly":
                assert s.labels[row]
            else:
                assert not s.labels[row : row + len(can)].any()
            assert np.all(np.nanmax(base.values, axis=0) > np.nanmin(base.values, axis=0))


@needs_data
def test_run_realdata_small() -> None:
    recs, skipped = run_realdata(lambda w: [PeekingTTest(window=w), KayentaJudge(window=w, interval=w // 4)], ("asd",), max_runs=2)
    assert not skipped
    assert {r["kind"] for r in recs} == {"anomaly", "clean"} and len(recs) == 2 * 2 * 2
    rows = summarise_realdata(recs)
    assert {r["method"] for r in rows} == {"ttest_peek", "kayenta"}
    for r in rows:
        assert r["segments"] == 2 and r["clean_runs"] == 2


def test_absent_dataset_is_skipped_with_message(tmp_path: Path) -> None:
    recs, skipped = run_realdata(lambda w: [PeekingTTest(window=w)], ("nab",), data_dir=tmp_path)
    assert recs == [] and len(skipped) == 1 and "not found" in skipped[0]
