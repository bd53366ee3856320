from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely

from tests.grid.helpers import to_wgs84, utc
from traffic import lake
from traffic.grid.assign import assignments_for
from traffic.grid.cells import grid_shape, grid_spec, write_grid
from traffic.grid.loader import load_tensor, time_axis
from traffic.grid.rasterize import rasterize_range


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2024-05-06", "2024-05-06", 24),
        ("2024-05-06", "2024-05-08", 72),
        ("2024-10-27", "2024-10-27", 25),  # DST ends: the repeated hour is there
        ("2024-03-31", "2024-03-31", 23),  # DST starts
    ],
)
def test_time_axis_covers_local_days(tiny_city, start, end, hours):
    times = time_axis(tiny_city, start, end)
    assert len(times) == hours * 4
    assert times[0] == pd.Timestamp(start, tz="Europe/Berlin").tz_convert("UTC")
    assert (np.diff(times.asi8) == 900 * 10**6).all()
    assert str(times.tz) == "UTC"


@pytest.fixture
def gap_lake(tiny_city, write_registry, write_observations, write_empty_days):
    """One sensor in cell (row 1, col 2) with data on the 6th and 8th of May; nothing on the 7th."""
    spec = grid_spec(tiny_city)
    pt = to_wgs84([shapely.Point(spec.x0 + 2500, spec.y0 + 1500)], 25833)[0]
    write_registry(tiny_city, "loop", {"s": pt}, version="v")
    write_empty_days(tiny_city, "2024-05-06", "2024-05-07", "2024-05-08")  # the camera feed has no rows
    for date in ("2024-05-06", "2024-05-08"):
        ts = utc(f"{date} 06:00+02:00", f"{date} 06:05+02:00", f"{date} 23:50+02:00")
        frame = pd.DataFrame({"source_id": "s", "timestamp": ts, "speed_kmh": [40.0, 50.0, 0.0]})
        write_observations(tiny_city, "loop", date, "sensor", frame)
    write_grid(tiny_city)
    rasterize_range(tiny_city, "2024-05-06", "2024-05-08", assignments_for(tiny_city, ["loop"]))
    return spec


def test_gap_day_comes_back_masked_not_zero(tiny_city, gap_lake):
    g = load_tensor(tiny_city, "2024-05-06", "2024-05-08")
    h, w = grid_shape(tiny_city)
    assert g.shape == (72 * 4, 3, h, w)
    assert g.channels == tiny_city.channels == ("cam.car", "cam.bike", "loop.speed_kmh")
    assert g.values.dtype == np.float32 and g.mask.dtype == bool and g.coverage.dtype == np.int32
    assert (g.cell_ids == np.arange(h * w).reshape(h, w)).all()
    c = tiny_city.channels.index("loop.speed_kmh")
    day = 96
    t6 = 6 * 4  # 06:00 local: times start at local midnight
    assert g.times[t6] == pd.Timestamp("2024-05-06 06:00", tz="Europe/Berlin")
    assert g.values[t6, c, 1, 2] == 45.0 and g.coverage[t6, c, 1, 2] == 2 and g.mask[t6, c, 1, 2]
    # a zero speed is data, the night with no rows is not
    t_late = 23 * 4 + 3
    assert g.mask[t_late, c, 1, 2] and g.values[t_late, c, 1, 2] == 0.0
    assert not g.mask[t6 + 1, c, 1, 2] and np.isnan(g.values[t6 + 1, c, 1, 2])
    # the gap day: all masked, NaN, zero coverage
    gap = slice(day, 2 * day)
    assert not g.mask[gap].any() and np.isnan(g.values[gap]).all() and (g.coverage[gap] == 0).all()
    assert g.values[2 * day + t6, c, 1, 2] == 45.0
    # only the one cell/channel ever has data; NaN exactly where masked
    assert g.mask.sum() == 4 and (np.isnan(g.values) == ~g.mask).all()


def test_missing_raster_partition_is_masked_and_defaults_follow_partitions(tiny_city, gap_lake):
    g = load_tensor(tiny_city, "2024-05-05", "2024-05-06")  # the 5th was never rasterized
    assert len(g.times) == 2 * 96 and not g.mask[:96].any() and g.mask[96:].sum() == 2
    full = load_tensor(tiny_city)
    assert full.times[0] == pd.Timestamp("2024-05-06", tz="Europe/Berlin")
    assert full.times[-1] == pd.Timestamp("2024-05-08 23:45", tz="Europe/Berlin")


def test_load_tensor_without_partitions_says_what_to_do(tiny_city):
    with pytest.raises(FileNotFoundError, match="rasterize"):
        load_tensor(tiny_city)


def test_channels_follow_the_config_and_cells_must_fit_the_grid(tiny_city):
    h, w = grid_shape(tiny_city)
    raster = pa.table(
        {
            "bin_start": pa.array(utc("2024-05-06 00:00+02:00", "2024-05-06 00:00+02:00"), pa.timestamp("us", "UTC")),
            "cell_id": pa.array([1, 2], pa.int32()),
            "channel": ["cam.bike", "old.feed"],  # a channel the config no longer has
            "value": [3.0, 9.0],
            "coverage": pa.array([1, 1], pa.int32()),
        }
    )
    lake.write_partition(raster, "raster", city="tiny", date="2024-05-06")
    g = load_tensor(tiny_city)
    assert g.mask.sum() == 1 and g.values[0, tiny_city.channels.index("cam.bike"), 0, 1] == 3.0
    bad = raster.set_column(1, "cell_id", pa.array([1, h * w], pa.int32()))
    lake.write_partition(bad, "raster", city="tiny", date="2024-05-06")
    with pytest.raises(ValueError, match="outside the"):
        load_tensor(tiny_city)


def test_the_loader_reads_the_lake_it_is_given(tiny_city, tmp_path):
    from traffic.grid.loader import newest_observed_bin
    from traffic.lake import Lake

    other = Lake(tmp_path / "other-lake")
    raster = pa.table(
        {
            "bin_start": pa.array(utc("2024-05-06 01:00+02:00"), pa.timestamp("us", "UTC")),
            "cell_id": pa.array([1], pa.int32()),
            "channel": ["cam.bike"],
            "value": [3.0],
            "coverage": pa.array([1], pa.int32()),
        }
    )
    other.write_partition(raster, "raster", city="tiny", date="2024-05-06")
    with pytest.raises(FileNotFoundError, match="rasterize"):  # the configured lake has no raster
        load_tensor(tiny_city)
    g = load_tensor(tiny_city, lake=other)
    assert g.mask.sum() == 1 and g.times[0] == pd.Timestamp("2024-05-06", tz="Europe/Berlin")
    assert newest_observed_bin(tiny_city) is None
    assert newest_observed_bin(tiny_city, lake=other) == pd.Timestamp("2024-05-05T23:00Z")
