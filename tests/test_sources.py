from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploysignal import InputError, SchemaError
from deploysignal.sources import read_frame, read_signals_file, write_csv
from deploysignal.telemetry import Frame


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_iso_and_epoch_timestamps_missing_cells(tmp_path):
    p = _write(tmp_path, "a.csv", "timestamp,tier,lat,err\n2026-01-01T00:00:00Z,a,1.5,\n2026-01-01T00:01:00Z,a,nan,0.1\n")
    f = read_frame(p)
    assert f.signals == ("lat", "err")
    assert f.cohort.tolist() == ["a", "a"]
    assert f.timestamps[1] - f.timestamps[0] == 60.0
    assert np.isnan(f.values[0, 1]) and np.isnan(f.values[1, 0])
    p2 = _write(tmp_path, "b.csv", "timestamp,lat\n1700000000,1\n1700000060,2\n")
    assert read_frame(p2).timestamps.tolist() == [1700000000.0, 1700000060.0]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("timestamp,lat\n1,abc\n", "row 1, column 'lat': expected a number, got 'abc'"),
        ("timestamp,lat\n2,1\n1,2\n", "row 2, column 'timestamp': timestamps must be strictly increasing"),
        ("timestamp,lat\n1,1\n1,2\n", "row 2, column 'timestamp'"),
        ("timestamp,lat\nyesterday,1\n", "row 1, column 'timestamp'"),
        ("lat,err\n1,2\n", "no timestamp column"),
        ("timestamp\n1\n", "no signal columns"),
        ("timestamp,lat\n", "no data rows"),
        ("", "file is empty"),
        ("timestamp,lat\n1,1,3\n", "row 1: "),
        ("timestamp,lat\n1,inf\n", "row 1, column 'lat': value is infinite"),
        ("timestamp,lat,lat\n1,1,2\n", "duplicate columns"),
    ],
)
def test_csv_errors_name_row_and_column(tmp_path, text, needle):
    p = _write(tmp_path, "bad.csv", text)
    with pytest.raises(InputError) as exc:
        read_frame(p)
    assert needle in str(exc.value)


def test_jsonl_and_schema_change(tmp_path):
    rows = [{"timestamp": 1, "lat": 1.0}, {"timestamp": 2, "lat": None}]
    p = _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    f = read_frame(p)
    assert np.isnan(f.values[1, 0])
    p2 = _write(tmp_path, "b.jsonl", '{"timestamp": 1, "lat": 1}\n{"timestamp": 2, "lat": 1, "new": 3}\n')
    with pytest.raises(SchemaError, match="row 2.*'new' appears first here"):
        read_frame(p2)
    p3 = _write(tmp_path, "c.jsonl", '{"timestamp": 1, "lat": 1}\nnot json\n')
    with pytest.raises(InputError, match="row 2"):
        read_frame(p3)
    p4 = _write(tmp_path, "d.jsonl", '{"timestamp": 1, "lat": "x"}\n')
    with pytest.raises(InputError, match="row 1, column 'lat'"):
        read_frame(p4)
    p5 = _write(tmp_path, "e.jsonl", '{"timestamp": 1, "lat": true}\n')
    with pytest.raises(InputError, match="column 'lat'"):
        read_frame(p5)


@pytest.mark.parametrize(
    "line, needle",
    [
        ('{"timestamp": 2, "lat": 1%s}' % ("0" * 400), r"row 2, column 'lat': value is infinite \(integer beyond float range\) \(\S*h.jsonl line 2\)"),
        ('{"timestamp": 1%s, "lat": 1}' % ("0" * 400), r"row 2, column 'timestamp': timestamp is out of range \(\S*h.jsonl line 2\)"),
        ('{"timestamp": 2, "lat": 1%s}' % ("0" * 5000), r"row 2: \S*h.jsonl line 2: not usable JSON \(Exceeds the limit"),
    ],
    ids=["value-beyond-float", "timestamp-beyond-float", "digit-limit"],
)
def test_jsonl_huge_integers_name_the_row(tmp_path, line, needle):
    """JSON integers beyond float range (OverflowError) or beyond Python's digit limit (plain ValueError)."""
    p = _write(tmp_path, "h.jsonl", '{"timestamp": 1, "lat": 1}\n' + line + "\n")
    with pytest.raises(InputError, match=needle):
        read_frame(p)


def test_parquet_roundtrip_with_timestamp_type(tmp_path):
    t = pa.table({"timestamp": pa.array([1_700_000_000_000_000, 1_700_000_060_000_000], type=pa.timestamp("us", tz="UTC")), "lat": [1.0, None]})
    p = tmp_path / "a.parquet"
    pq.write_table(t, p)
    f = read_frame(p)
    assert f.timestamps.tolist() == [1_700_000_000.0, 1_700_000_060.0]
    assert np.isnan(f.values[1, 0])
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read Parquet"):
        read_frame(tmp_path / "bad.parquet")


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_frame(tmp_path / "nope.csv")
    p = _write(tmp_path, "a.txt", "x")
    with pytest.raises(InputError, match="unknown format"):
        read_frame(p)


def test_signals_file_yaml_and_csv(tmp_path):
    p = _write(tmp_path, "s.yaml", "lat: {direction: up}\nacc: {direction: down, kind: rate}\n")
    specs = read_signals_file(p)
    assert specs["acc"].kind == "rate" and specs["lat"].direction == "up"
    f = read_frame(_write(tmp_path, "a.csv", "timestamp,lat,acc\n1,1,0.5\n"), specs=specs)
    assert [s.direction for s in f.specs] == ["up", "down"]
    bad = _write(tmp_path, "t.yaml", "lat: {direction: sideways}\n")
    with pytest.raises(InputError, match="direction must be one of"):
        read_signals_file(bad)
    bad2 = _write(tmp_path, "u.yaml", "lat: {colour: red}\n")
    with pytest.raises(InputError, match="unknown keys"):
        read_signals_file(bad2)
    c = _write(tmp_path, "s.csv", "name,direction,kind\nlat,up,continuous\n")
    assert read_signals_file(c)["lat"].direction == "up"


@pytest.mark.parametrize("name", ["s.yaml", "s.json", "s.csv"])
def test_signals_file_not_utf8_names_the_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"name,direction\nlat,up\nlat\xe9,down\n" if name.endswith(".csv") else b"lat\xe9: {direction: up}\n")
    with pytest.raises(InputError, match=f"{name}: not UTF-8 text"):
        read_signals_file(p)


def test_write_csv_roundtrip_is_exact(tmp_path, rng):
    f = Frame(np.arange(5.0) * 60 + 0.123456789, rng.normal(size=(5, 2)), ("a", "b"), np.array(["x"] * 5))
    vals = f.values.copy()
    vals[2, 1] = np.nan
    f = Frame(f.timestamps, vals, f.signals, f.cohort)
    write_csv(f, tmp_path / "o.csv")
    g = read_frame(tmp_path / "o.csv")
    np.testing.assert_array_equal(g.timestamps, f.timestamps)
    np.testing.assert_array_equal(g.values, f.values)
    assert g.cohort.tolist() == ["x"] * 5


def test_frame_validation():
    with pytest.raises(InputError, match="row 2, column 'timestamp'"):
        Frame(np.array([1.0, 1.0]), np.zeros((2, 1)), ("a",))
    with pytest.raises(InputError, match="within cohort"):
        Frame(np.array([2.0, 3.0, 1.5]), np.zeros((3, 1)), ("a",), np.array(["x", "y", "x"]))
    # interleaved cohorts with their own increasing clocks are fine
    Frame(np.array([1.0, 1.0, 2.0]), np.zeros((3, 1)), ("a",), np.array(["x", "y", "x"]))
    with pytest.raises(SchemaError):
        Frame(np.array([1.0]), np.zeros((1, 2)), ("a", "a"))
