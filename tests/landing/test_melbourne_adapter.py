"""Melbourne pedestrian counts: the adapter on slices of the shipped sample, its DST hours and missing counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from traffic.config import PROJECT_ROOT, CityConfig, load_city
from traffic.ingest import IngestError
from traffic.ingest.run import ingest_range, registry_tables
from traffic.ingest.validate import check_observations
from traffic.landing.adapters import read_delivery, read_feed_registry
from traffic.landing.contract import OBSERVATION_SCHEMAS

SAMPLE = PROJECT_ROOT / "data/samples/melbourne_pedestrian"
COUNTS = SAMPLE / "observations" / "counts_hourly.parquet"
SENSORS = SAMPLE / "sensors.csv"
TZ = "Australia/Melbourne"


@pytest.fixture(scope="module")
def melbourne() -> CityConfig:
    return load_city("melbourne")


def _slice(start: str, end: str) -> pd.DataFrame:
    """Rows of the shipped sample with ``start <= ts_local < end`` (naive local), in file order."""
    filters = [("ts_local", ">=", pd.Timestamp(start)), ("ts_local", "<", pd.Timestamp(end))]
    return pq.read_table(COUNTS, filters=filters).to_pandas()


def _city_on(city: CityConfig, folder: Path, counts: pd.DataFrame, sensors: pd.DataFrame | None = None) -> CityConfig:
    """``city`` with its feed reading ``counts`` (and ``sensors``, default the shipped file) written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    counts.to_parquet(folder / "counts.parquet", index=False)
    registry = SENSORS
    if sensors is not None:
        registry = folder / "sensors.csv"
        sensors.to_csv(registry, index=False)
    feed = dataclasses.replace(city.feeds[0], observations=str(folder / "counts.parquet"), registry=str(registry))
    return dataclasses.replace(city, feeds=(feed,))


def _checked(city: CityConfig) -> pd.DataFrame:
    feed = city.feeds[0]
    delivery = read_delivery(feed)
    known = read_feed_registry(feed)["source_id"]
    return check_observations(delivery.frame, tz=city.timezone, known_sources=known)


# ------------------------------------------------------------------------- config


def test_melbourne_config_loads(melbourne):
    assert melbourne.timezone == TZ and melbourne.crs_epsg == 7855 and melbourne.bin_seconds == 3600
    assert melbourne.channels == ("pcs.pedestrian",)  # a count channel: a volume index, never congestion
    feed = melbourne.feed("pcs")
    assert (feed.kind, feed.adapter) == ("camera", "melbourne_pedestrian")
    assert Path(feed.path("observations")) == COUNTS.parent and Path(feed.path("registry")) == SENSORS
    f = melbourne.forecast
    assert (f.context_steps, f.holdout_days, f.backtest_folds) == (24, 28, 4)
    assert f.train_days >= 112
    # every sensor lies inside the bbox, and 200 m cells keep most of them apart
    sensors = pd.read_csv(SENSORS)
    lon_min, lat_min, lon_max, lat_max = melbourne.bbox
    assert sensors["lon"].between(lon_min, lon_max).all() and sensors["lat"].between(lat_min, lat_max).all()
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, melbourne.crs_epsg, always_xy=True).transform(sensors["lon"], sensors["lat"])
    size = melbourne.cell_size_m
    cells = set(zip(np.floor(np.asarray(x) / size), np.floor(np.asarray(y) / size), strict=True))
    assert len(cells) >= 40


def test_melbourne_is_not_in_make_nightly():
    nightly = (PROJECT_ROOT / "Makefile").read_text().split("\nnightly:")[1].split("\n\n")[0]
    assert "nightly berlin los_angeles" in nightly and "melbourne" not in nightly


# ------------------------------------------------------------------------- adapter on the real sample


def test_the_sample_maps_every_row_with_counts_as_delivered(melbourne, tmp_path):
    raw = _slice("2022-03-01", "2022-03-03")
    city = _city_on(melbourne, tmp_path, raw)
    out = read_delivery(city.feeds[0]).frame
    assert list(out.columns[:9]) == OBSERVATION_SCHEMAS["camera"].names
    assert len(out) == len(raw) == 2 * 24 * 55  # nothing dropped, nothing filled
    assert (out["source_id"] == raw["sensor_id"].astype(str)).all()
    assert (out["timestamp"] == raw["ts_local"]).all()  # naive local: the contract's rule localises it
    np.testing.assert_array_equal(out["pedestrian"].to_numpy(), raw["count"].to_numpy(dtype=float, na_value=np.nan))
    assert (out["interval_s"] == 3600).all()
    assert out[["car", "heavy", "bike", "speed_kmh"]].isna().all().all()
    counted = raw["count"].notna().to_numpy()
    assert (out["uptime"][counted] == 1.0).all() and out["uptime"][~counted].isna().all()


def test_the_repeated_april_hour_is_delivered_once_and_read_as_the_dst_instant(melbourne, tmp_path):
    # 2021-04-04 03:00 AEDT -> 02:00 AEST: the wall clock shows 02:00 twice; the sample holds one row per sensor
    raw = _slice("2021-04-04 01:00", "2021-04-04 04:00")
    assert raw.groupby(["sensor_id", "ts_local"]).size().max() == 1
    checked = _checked(_city_on(melbourne, tmp_path, raw))
    assert checked["reason"].isna().sum() == raw["count"].notna().sum()  # nothing quarantined but missing counts
    one = checked[checked["source_id"] == "1"]
    # 01:00 AEDT, 02:00 AEDT (the first occurrence: DST), 03:00 AEST; 02:00 AEST (16:00 UTC) was not delivered
    assert one["timestamp"].dt.strftime("%H:%M").tolist() == ["14:00", "15:00", "17:00"]


def test_two_rows_for_the_repeated_hour_are_dst_then_standard_time(melbourne, tmp_path):
    raw = _slice("2021-04-04 02:00", "2021-04-04 03:00")
    twice = pd.concat([raw, raw.assign(count=raw["count"] + 1)], ignore_index=True)  # file order: DST copy first
    checked = _checked(_city_on(melbourne, tmp_path, twice))
    utc = checked["timestamp"].dt.tz_convert("UTC")
    n = len(raw)
    assert (utc[:n] == pd.Timestamp("2021-04-03 15:00", tz="UTC")).all()  # 02:00 AEDT (+11)
    assert (utc[n:] == pd.Timestamp("2021-04-03 16:00", tz="UTC")).all()  # 02:00 AEST (+10)
    assert checked["reason"].isna().sum() == 2 * raw["count"].notna().sum()  # two hours, no duplicates


def test_the_skipped_october_hour_is_quarantined_not_a_zero_count(melbourne, tmp_path):
    # 2021-10-03 02:00 AEST -> 03:00 AEDT: 02:00 never existed, yet the sample holds it with 0 for every sensor
    raw = _slice("2021-10-03 01:00", "2021-10-03 04:00")
    skipped = (raw["ts_local"] == pd.Timestamp("2021-10-03 02:00")).to_numpy()
    assert skipped.sum() == 55 and (raw["count"][skipped] == 0).all()
    checked = _checked(_city_on(melbourne, tmp_path, raw))
    assert (checked["reason"][skipped] == "nonexistent_local_time").all()
    kept = checked[checked["reason"].isna()]
    # 01:00 AEST = 15:00 UTC, 03:00 AEDT = 16:00 UTC: consecutive UTC hours, no hour missing in between
    assert sorted(kept["timestamp"].dt.strftime("%H:%M").unique()) == ["15:00", "16:00"]


def test_minus_one_and_null_are_missing_counts_and_zero_is_a_count(melbourne, tmp_path):
    raw = _slice("2022-06-01 12:00", "2022-06-01 13:00").head(4).copy()
    raw["count"] = pd.array([-1, None, 0, 17], dtype="Int32")
    checked = _checked(_city_on(melbourne, tmp_path, raw))
    assert checked["reason"].tolist()[:2] == ["marked_missing", "all_values_null"]
    assert checked["reason"][2:].isna().all()
    assert np.isnan(checked["pedestrian"][:2]).all() and checked["pedestrian"][2:].tolist() == [0.0, 17.0]


def test_a_missing_count_column_names_file_and_column(melbourne, tmp_path):
    raw = _slice("2022-06-01 12:00", "2022-06-01 13:00").rename(columns={"count": "counts"})
    with pytest.raises(IngestError, match=r"counts.parquet: missing column `count`"):
        read_delivery(_city_on(melbourne, tmp_path, raw).feeds[0])


# ------------------------------------------------------------------------- sensors


def test_sensors_are_points_with_their_name_and_installation_date(melbourne):
    out = read_feed_registry(melbourne.feed("pcs"))
    raw = pd.read_csv(SENSORS)
    assert len(out) == len(raw) == 55 and out["source_id"].is_unique
    assert [g.x for g in out["geometry"]] == raw["lon"].tolist()
    assert json.loads(out["attributes"][0]) == {"installed": raw["installed"][0], "name": raw["name"][0]}


def test_a_sensor_without_location_is_refused(melbourne, tmp_path):
    sensors = pd.read_csv(SENSORS, dtype={"lat": "string", "lon": "string"})
    sensors.loc[0, "lat"] = pd.NA  # no location: this sensor is kept out, the others stay
    city = _city_on(melbourne, tmp_path, _slice("2022-06-01 12:00", "2022-06-01 13:00"), sensors)
    registry, rejected, _ = registry_tables(read_feed_registry(city.feeds[0]))
    assert registry.num_rows == 54
    assert rejected.column("source_id").to_pylist() == [str(sensors["sensor_id"][0])]
    assert rejected.column("reason").to_pylist() == ["missing_geometry"]
    sensors.loc[0, "lat"] = "-37.81x"  # not a number: the file is refused, naming file, column and value
    city = _city_on(melbourne, tmp_path, _slice("2022-06-01 12:00", "2022-06-01 13:00"), sensors)
    with pytest.raises(IngestError, match=r"sensors.csv: column `lat`.*-37.81x") as info:
        read_feed_registry(city.feeds[0])
    assert info.value.file.endswith("sensors.csv") and info.value.column == "lat"


# ------------------------------------------------------------------------- ingest


def test_a_small_ingest_of_the_sample_across_the_october_change(melbourne, tmp_path):
    raw = _slice("2021-10-02", "2021-10-04")
    city = _city_on(melbourne, tmp_path, raw)
    reports = ingest_range(city, city.feeds[0], "2021-10-02", "2021-10-03")
    assert [r["date"] for r in reports] == ["2021-10-02", "2021-10-03"]
    assert sum(r["rows_read"] for r in reports) == len(raw) == 2 * 24 * 55
    day2 = reports[1]
    assert day2["by_reason"]["nonexistent_local_time"] == 55
    assert day2["rows_accepted"] + day2["rows_quarantined"] == day2["rows_read"]
    assert reports[0]["rows_accepted"] == raw["count"][raw["ts_local"] < "2021-10-03"].notna().sum()
