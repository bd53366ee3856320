"""traffic.grid.arrays and traffic.grid.writers: loading/saving (T, C, H, W) arrays, the one npz layout, their checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from traffic.channels import model_channels
from traffic.grid.arrays import load_array, read_forecast, read_npz
from traffic.grid.tensor import GridTensor
from traffic.grid.writers import save_array, write_npz

from .arrays_data import flows, long_table, make_grid


# ----------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_round_trip_keeps_everything(tmp_path, suffix):
    g = make_grid()
    path = save_array(g, tmp_path / f"a{suffix}")
    back = load_array(path)
    assert back.shape == g.shape
    np.testing.assert_array_equal(back.mask, g.mask)
    np.testing.assert_array_equal(back.values, g.values)  # NaN where missing in both
    np.testing.assert_array_equal(back.coverage, g.coverage)
    np.testing.assert_array_equal(back.cell_ids, g.cell_ids)
    assert back.channels == g.channels
    assert (back.times == g.times).all()
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_save_is_atomic_on_failure(tmp_path, suffix, monkeypatch):
    g = make_grid(t=8, h=2, w=2)
    path = save_array(g, tmp_path / f"a{suffix}")
    before = path.read_bytes()
    bad = GridTensor(g.values, g.mask, g.coverage, g.times, g.channels, g.cell_ids)
    bad.times = None  # type: ignore[assignment]  # breaks the writer after the temporary file exists
    with pytest.raises(TypeError):
        save_array(bad, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))


def test_mask_defaults_to_finite_values_and_times_from_start(tmp_path):
    v = flows(t=10, h=3, w=2)
    np.savez(tmp_path / "a.npz", values=v)
    g = load_array(tmp_path / "a.npz", start="2015-01-01T00:00", bin_minutes=30)
    np.testing.assert_array_equal(g.mask, np.isfinite(v))
    assert g.times[0] == pd.Timestamp("2015-01-01", tz="UTC")  # naive start labelled UTC
    assert (np.diff(g.times.asi8) == pd.Timedelta("30min").value).all() and len(g.times) == 10
    assert g.channels == ("grid.c0", "grid.c1")
    assert g.coverage.sum() == g.mask.sum()


def test_npz_accepts_the_data_alias_iso_times_and_channel_names(tmp_path):
    v = flows(t=6, h=2, w=2, missing=0)
    times = np.array([f"2016-05-01T0{i}:00" for i in range(6)])
    np.savez(tmp_path / "a.npz", data=v, times=times, channels=np.array(["inflow", "taxi.outflow"]))
    g = load_array(tmp_path / "a.npz")
    assert g.channels == ("grid.inflow", "taxi.outflow")
    assert g.times[1] - g.times[0] == pd.Timedelta("1h")
    np.testing.assert_array_equal(g.values, v)
    g2 = load_array(tmp_path / "a.npz", channels=["in", "out"])
    assert g2.channels == ("grid.in", "grid.out")


def test_explicit_mask_hides_values(tmp_path):
    v = flows(t=4, h=2, w=2, missing=0)
    m = np.ones(v.shape, dtype=np.uint8)
    m[0, 0, 0, 0] = 0
    np.savez(tmp_path / "a.npz", values=v, mask=m)
    g = load_array(tmp_path / "a.npz", start="2015-01-01", bin_minutes=60)
    assert not g.mask[0, 0, 0, 0] and np.isnan(g.values[0, 0, 0, 0]) and g.mask.sum() == m.sum()


def test_fill_gaps_inserts_unobserved_bins(tmp_path):
    v = flows(t=5, h=2, w=2, missing=0)
    times = pd.to_datetime(
        ["2015-01-01 00:00", "2015-01-01 00:30", "2015-01-01 02:00", "2015-01-01 02:30", "2015-01-01 03:00"]
    )
    np.savez(tmp_path / "a.npz", values=v, times=times.values.astype("datetime64[ns]").astype(np.int64))
    with pytest.raises(ValueError, match=r"not evenly spaced: bin 2 .*--fill-gaps"):
        load_array(tmp_path / "a.npz")
    g = load_array(tmp_path / "a.npz", fill_gaps=True)
    assert g.shape[0] == 7
    assert g.mask.any(axis=(1, 2, 3)).tolist() == [True, True, False, False, True, True, True]
    np.testing.assert_array_equal(g.values[4], v[2])


def test_parquet_long_table_with_indices_and_missing_rows(tmp_path):
    # t/c indices: 3 bins, 2 channels, a 2x3 grid, most rows absent (= missing)
    tbl = long_table(
        t=pa.array([0, 0, 2, 1], pa.int16()),
        c=pa.array([0, 1, 1, 0], pa.int8()),
        row=pa.array([0, 1, 1, 0], pa.int32()),
        col=pa.array([2, 0, 2, 1], pa.int32()),
        value=pa.array([1.5, 2.0, None, 4.0], pa.float64()),
        observed=pa.array([True, True, False, False]),
    )
    pq.write_table(tbl, tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"pass start and bin_minutes \(CLI: --start, --bin-minutes\)"):
        load_array(tmp_path / "a.parquet")
    g = load_array(tmp_path / "a.parquet", start="2015-01-01T00:00Z", bin_minutes=60)
    assert g.shape == (3, 2, 2, 3)
    assert g.mask.sum() == 2 and g.values[0, 0, 0, 2] == 1.5 and g.values[0, 1, 1, 0] == 2.0
    assert not g.mask[1, 0, 0, 1]  # observed=False hides the value 4.0
    assert g.times[-1] == pd.Timestamp("2015-01-01T02:00Z")


def test_parquet_with_times_and_channel_names(tmp_path):
    times = pd.to_datetime(["2015-01-01T00:00", "2015-01-01T01:30", "2015-01-01T00:30"]).tz_localize("UTC")
    tbl = long_table(
        time=pa.array(times),
        channel=pa.array(["out", "in", "in"]),
        row=pa.array([0, 0, 1]),
        col=pa.array([0, 1, 0]),
        value=pa.array([1, 2, 3]),
    )
    pq.write_table(tbl, tmp_path / "a.parquet")
    g = load_array(tmp_path / "a.parquet")
    assert g.channels == ("grid.in", "grid.out")  # sorted names
    assert g.shape == (4, 2, 2, 2)  # 00:00 .. 01:30 at the common 30-minute step; 01:00 empty
    assert g.values[3, 0, 0, 1] == 2 and g.values[1, 0, 1, 0] == 3 and not g.mask[2].any()
    g2 = load_array(tmp_path / "a.parquet", channels=["out", "in", "extra"])
    assert g2.channels == ("grid.out", "grid.in", "grid.extra") and not g2.mask[:, 2].any()
    assert g2.values[0, 0, 0, 0] == 1


# ---------------------------------------------------------------------------------------- errors
def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    ("arrays", "kwargs", "match"),
    [
        (
            {"values": np.zeros((4, 3, 3))},
            {},
            r"bad.npz: values has shape \(4, 3, 3\); expected 4 axes .*values\[:, None\]",
        ),
        (
            {"values": np.zeros((4, 1, 2, 2)), "mask": np.ones((4, 1, 2, 3), bool)},
            {},
            r"mask has shape \(4, 1, 2, 3\), values \(4, 1, 2, 2\)",
        ),
        ({"values": np.zeros((4, 1, 2, 2))}, {"bin_minutes": 30}, r"bad.npz has no times: pass start \(CLI: --start\)"),
        (
            {"values": np.zeros((4, 1, 2, 2)), "data": np.zeros((4, 1, 2, 2))},
            {},
            r"exactly one of the keys \['values', 'data', 'X'\]",
        ),
        ({"values": np.zeros((4, 1, 2, 2)), "time": np.arange(4)}, {}, r"unknown keys \['time'\]; allowed: \['values'"),
        (
            {"values": np.zeros((4, 1, 2, 2))},
            {"start": "2015-01-01", "bin_minutes": 7},
            r"bin length 420 s is not allowed",
        ),
        (
            {"values": np.full((4, 1, 2, 2), np.inf), "mask": np.ones((4, 1, 2, 2), bool)},
            {"start": "2015-01-01", "bin_minutes": 60},
            r"NaN/inf where the mask says observed, first at .* \(0, 0, 0, 0\)",
        ),
        (
            {"values": np.zeros((3, 1, 1, 1)), "times": np.array([0, 2, 1]) * 3_600_000_000_000},
            {},
            r"times must increase: bin 2",
        ),
        (
            {"values": np.zeros((2, 1, 1, 1)), "channels": np.array(["calendar.x"])},
            {"start": "2015-01-01", "bin_minutes": 60},
            r"feed names \['calendar'\] are reserved",
        ),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_array(_npz(tmp_path, **arrays), **kwargs)


def _pq(tmp_path, **cols):
    pq.write_table(pa.table(cols), tmp_path / "bad.parquet")
    return tmp_path / "bad.parquet"


BASE_COLS = {"t": [0, 1], "c": [0, 0], "row": [0, 0], "col": [0, 1], "value": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("cols", "match"),
    [
        ({**BASE_COLS, "speed": [1, 2]}, r"bad.parquet: unknown columns \['speed'\]; allowed: \['time', 't'"),
        ({**BASE_COLS, "row": [0.0, 1.0]}, r"column 'row' has type double; allowed: integer"),
        ({**BASE_COLS, "col": [0, -1]}, r"column 'col' is -1 at row 1; allowed: >= 0"),
        (
            {**BASE_COLS, "t": [0, 0], "col": [1, 1]},
            r"duplicate \(time, channel, row, col\) = \(2015-01-01T00:00:00\+00:00, c0, 0, 1\) at rows 0 and 1",
        ),
        ({k: v for k, v in BASE_COLS.items() if k != "value"}, r"needs column 'value'"),
        ({**BASE_COLS, "time": ["2015-01-01", "2015-01-02"]}, r"exactly one of column 'time' or 't'"),
        ({**BASE_COLS, "value": [1.0, float("inf")]}, r"column 'value' is inf at row 1"),
        ({**BASE_COLS, "mask": [1, 0]}, r"column 'mask' has type int64; allowed: bool"),
    ],
)
def test_parquet_errors_name_the_problem(tmp_path, cols, match):
    with pytest.raises(ValueError, match=match):
        load_array(_pq(tmp_path, **cols), start="2015-01-01T00:00Z", bin_minutes=60)


def test_parquet_duplicates_are_reported_in_file_order(tmp_path):
    cols = {"t": [3, 0, 1, 0, 1], "c": [0] * 5, "row": [0] * 5, "col": [0] * 5, "value": [1.0] * 5}
    with pytest.raises(ValueError, match=r"at rows 1 and 3"):
        load_array(_pq(tmp_path, **cols), start="2015-01-01", bin_minutes=60)


def test_parquet_times_off_the_bins(tmp_path):
    times = pd.to_datetime(["2015-01-01T00:00Z", "2015-01-01T00:30Z", "2015-01-01T00:45Z"])
    path = _pq(tmp_path, time=pa.array(times), c=[0, 0, 0], row=[0, 0, 0], col=[0, 0, 0], value=[1.0, 2.0, 3.0])
    with pytest.raises(
        ValueError, match=r"column 'time' is 2015-01-01T00:45:00\+00:00 at row 2; allowed: 30-minute bins"
    ):
        load_array(path, bin_minutes=30)
    assert load_array(path).shape[0] == 4  # without a bin length: the common 15-minute step


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"unknown file type '.csv'; allowed: \['.npz', '.parquet', '.pq'\]"):
        load_array(tmp_path / "a.csv")
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "a.npz")


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["in", "out"], ("grid.in", "grid.out")), (["cam.car", "speed"], ("cam.car", "grid.speed"))],
)
def test_model_channels(names, expected):
    assert model_channels(names) == expected


@pytest.mark.parametrize(
    ("names", "match"), [(["in", "grid.in"], "repeat"), (["a."], "non-empty"), (["prior.x"], "reserved")]
)
def test_model_channels_errors(names, match):
    with pytest.raises(ValueError, match=match):
        model_channels(names)


def test_holidays_from_a_country_code_or_dates(tmp_path):
    np.savez(tmp_path / "a.npz", values=flows(t=48, h=1, w=1))
    g = load_array(tmp_path / "a.npz", start="2015-07-02", bin_minutes=60, holidays="US")
    assert "2015-07-03" in g.holidays and "2015-12-25" in g.holidays  # Independence Day observed on the Friday
    assert not g.holiday[:24].any() and g.holiday[24:].all()
    g2 = load_array(tmp_path / "a.npz", start="2015-07-02", bin_minutes=60, holidays="2015-07-03,2015-07-05")
    assert g2.holidays == ("2015-07-03", "2015-07-05") and g2.holiday.sum() == 24
    back = load_array(save_array(g2, tmp_path / "b.parquet"))
    assert back.holidays == g2.holidays


# ------------------------------------------------------------------------------- the one npz layout
def _forecast_arrays(h_out: int = 3, c: int = 1, h: int = 2, w: int = 3) -> dict:
    rng = np.random.default_rng(1)
    return {
        "values": rng.uniform(10, 100, (h_out, c, h, w)).astype(np.float32),
        "times": pd.date_range("2012-03-08T08:00Z", periods=h_out, freq="15min"),
        "mask": rng.random((h_out, c, h, w)) < 0.7,
        "channels": ("metr.speed_kmh",),
        "cell_ids": np.arange(h * w, dtype=np.int32).reshape(h, w),
    }


def test_write_npz_stores_times_as_int64_ns_utc_and_read_npz_gives_them_back(tmp_path):
    a = _forecast_arrays()
    berlin = a["times"].tz_convert("Europe/Berlin")  # any zone: stored as UTC
    write_npz(tmp_path / "f.npz", values=a["values"], times=berlin, mask=a["mask"], channels=a["channels"])
    with np.load(tmp_path / "f.npz") as z:
        assert z["times"].dtype == np.int64
        assert z["times"].tolist() == a["times"].as_unit("ns").asi8.tolist()
        assert sorted(z.files) == ["channels", "mask", "times", "values"]  # nothing the caller did not give
    back = read_npz(tmp_path / "f.npz")
    assert back.times.equals(a["times"].as_unit("ns")) and str(back.times.tz) == "UTC"
    np.testing.assert_array_equal(back.values, a["values"])
    np.testing.assert_array_equal(back.mask, a["mask"])
    assert back.channels == a["channels"] and back.cell_ids is None and back.extra == {}


def test_read_npz_refuses_a_file_without_times_instead_of_inventing_them(tmp_path):
    np.savez(tmp_path / "g.npz", values=np.zeros((4, 1, 2, 2)))
    with pytest.raises(
        ValueError, match=r"g.npz has no times: pass start and bin_minutes \(CLI: --start, --bin-minutes"
    ):
        read_npz(tmp_path / "g.npz")
    with pytest.raises(ValueError, match=r"g.npz has no times: pass start \(CLI: --start\)"):
        read_npz(tmp_path / "g.npz", bin_minutes=60)
    built = read_npz(tmp_path / "g.npz", start="2015-01-01", bin_minutes=60)  # only from what the caller says
    assert built.times[0] == pd.Timestamp("2015-01-01", tz="UTC") and built.bin_minutes == 60


def test_write_npz_refuses_what_the_layout_cannot_hold(tmp_path):
    a = _forecast_arrays()
    with pytest.raises(ValueError, match=r"f.npz: 2 times for 3 time bins of values"):
        write_npz(tmp_path / "f.npz", values=a["values"], times=a["times"][:2])
    with pytest.raises(ValueError, match=r"extra arrays \['mask'\] are named like keys of the layout \['values'"):
        write_npz(tmp_path / "f.npz", values=a["values"], times=a["times"], extra={"mask": a["mask"]})
    with pytest.raises(ValueError, match=r"values has shape \(3, 2, 3\); expected 4 axes"):
        write_npz(tmp_path / "f.npz", values=a["values"][:, 0], times=a["times"])
    assert not (tmp_path / "f.npz").exists()


def test_extra_arrays_only_where_the_reader_allows_them_and_in_their_shape(tmp_path):
    a = _forecast_arrays()
    ref = np.full((1, 2, 3), 100.0, np.float32)
    write_npz(tmp_path / "f.npz", values=a["values"], times=a["times"], extra={"reference": ref})
    with pytest.raises(ValueError, match=r"unknown keys \['reference'\]; allowed: \['values', 'data', 'X', 'mask'"):
        read_npz(tmp_path / "f.npz")
    back = read_npz(tmp_path / "f.npz", extra={"reference": "CHW"})
    np.testing.assert_array_equal(back.extra["reference"], ref)
    with pytest.raises(ValueError, match=r"reference \(shape \(1, 2, 3\), dtype float32\) must be numbers of shape "):
        read_npz(tmp_path / "f.npz", extra={"reference": "HW"})


def test_read_forecast_reads_the_one_layout_and_files_written_before_it(tmp_path):
    a = _forecast_arrays()
    lower, upper = a["values"] * 0.9, a["values"] * 1.1
    ref = np.full((1, 2, 3), 100.0, np.float32)
    share = a["mask"][0].astype(np.float32) * 0.5
    write_npz(
        tmp_path / "new.npz",
        **a,
        extra={"lower": lower, "upper": upper, "reference": ref, "window_coverage": share},
    )
    np.savez_compressed(  # the keys traffic.pipeline.forecast wrote before the one layout (times in µs)
        tmp_path / "old.npz",
        forecast=a["values"],
        lower=lower,
        upper=upper,
        target_times=a["times"].as_unit("us").asi8,
        has_data=a["mask"],
        coverage=share,
        reference=ref,
        cell_ids=a["cell_ids"],
        channels=np.array(a["channels"]),
    )
    new, old = read_forecast(tmp_path / "new.npz"), read_forecast(str(tmp_path / "old.npz"))
    for f in (new, old):
        assert f.times.equals(a["times"].as_unit("ns"))
        np.testing.assert_array_equal(f.values, a["values"])
        np.testing.assert_array_equal(f.mask, a["mask"])
        assert f.channels == a["channels"] and sorted(f.extra) == ["lower", "reference", "upper", "window_coverage"]
        np.testing.assert_array_equal(f.extra["window_coverage"], share)
    write_npz(tmp_path / "bare.npz", values=a["values"], times=a["times"], mask=a["mask"])
    with pytest.raises(
        ValueError, match=r"bare.npz: a forecast file needs the keys .*missing \['channels', 'cell_ids', 'reference'\]"
    ):
        read_forecast(tmp_path / "bare.npz")


def test_the_npz_writer_and_reader_go_through_fsspec_paths():
    from upath import UPath

    a = _forecast_arrays()
    target = UPath("memory://grid-tests/forecasts/f.npz")
    write_npz(target, values=a["values"], times=a["times"], mask=a["mask"], channels=a["channels"])
    back = read_npz("memory://grid-tests/forecasts/f.npz")
    assert back.source == "memory://grid-tests/forecasts/f.npz" and back.times.equals(a["times"].as_unit("ns"))
    np.testing.assert_array_equal(back.values, a["values"])
    assert [p.name for p in target.parent.iterdir()] == ["f.npz"]  # no temporary file left
    target.unlink()
