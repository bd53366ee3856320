"""Ingest entry points: partitions, quarantine, quality reports, idempotency, real data."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from tests.ingest.helpers import canonical_city
from traffic import lake
from traffic.config import PROJECT_ROOT, parse_city
from traffic.ingest import (
    REASONS,
    UNDATED,
    IngestError,
    available_dates,
    ingest_partition,
    ingest_range,
    ingest_registry,
)
from traffic.landing.contract import OBSERVATION_SCHEMAS, QUARANTINE_SCHEMA, REGISTRY_SCHEMA

TELRAAM = PROJECT_ROOT / "data/samples/berlin_telraam/observations/traffic_df_2024_10-2024_12.parquet"
LOS_SPEED = PROJECT_ROOT / "data/samples/la_metr/observations/los_speed.csv"
LOCATIONS = PROJECT_ROOT / "data/samples/la_metr/graph_sensor_locations.csv"


def read(dataset: str, city, date: str):
    return lake.read_partition(dataset, city=city.name, feed=city.feeds[0].name, date=date)


def report(city, date: str) -> dict:
    return lake.read_json(lake.partition("quality", city=city.name, feed=city.feeds[0].name, date=date) / "report.json")


def lake_files() -> dict[str, bytes]:
    root = lake.lake_root()
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def messy(tmp_path, points_registry):
    """Two days of a tiny sensor feed with one problem of each common kind, plus an undated row."""
    obs = pd.DataFrame(
        [
            ("a", "2024-06-01T10:00:00", 300, 50.0),
            ("a", "2024-06-01T10:00:00", 300, 51.0),  # duplicate
            ("b", "2024-06-01T11:00:00", 300, 0.0),  # detector fault
            ("zzz", "2024-06-01T12:00:00", 300, 40.0),  # unknown source
            ("a", "2024-06-01T13:00:00", 300, None),  # all values null
            ("b", "2024-06-01T23:30:00", 300, 45.0),  # late local evening: still 06-01
            ("b", "2024-06-01T23:30:00Z", 300, 45.0),  # 01:30 local on 06-02
            ("b", "2024-06-02T10:00:00", 300, 44.0),
            ("a", "", 300, 30.0),  # missing timestamp: no local date
        ],
        columns=["source_id", "timestamp", "interval_s", "speed_kmh"],
    )
    return canonical_city(tmp_path / "raw", obs, points_registry)


def test_partitions_reports_and_quarantine(messy):
    feed = messy.feeds[0]
    reports = ingest_range(messy, feed, "2024-05-31", "2024-06-03")
    # issue 9: the undated partition's report is returned too (totals reconcile over every partition)
    assert [r["date"] for r in reports] == ["2024-05-31", "2024-06-01", "2024-06-02", "2024-06-03", UNDATED]
    for r in reports:
        assert r["rows_read"] == r["rows_accepted"] + r["rows_quarantined"]
        assert r["rows_quarantined"] == sum(r["by_reason"].values())
        assert report(messy, r["date"]) == {k: v for k, v in r.items() if not k.endswith("_path") and k != "unchanged"}
    empty, day1, day2, _, _ = reports
    assert empty["rows_read"] == 0 and empty["first_timestamp"] is None
    assert read("observations", messy, "2024-05-31").num_rows == 0  # empty day: empty partition, not missing
    assert read("observations", messy, "2024-05-31").schema.equals(OBSERVATION_SCHEMAS["sensor"])
    assert day1["rows_read"] == 6 and day1["rows_accepted"] == 2
    assert {k: v for k, v in day1["by_reason"].items() if v} == {
        "conflicting_duplicate": 1,  # issue 9: other values than the kept copy -> own code
        "speed_out_of_range": 1,
        "unknown_source": 1,
        "all_values_null": 1,
    }
    assert set(day1["by_reason"]) == set(REASONS)
    assert day2["rows_read"] == 2 and day2["rows_accepted"] == 2
    assert day2["first_timestamp"] == "2024-06-01T23:30:00+00:00"

    obs = read("observations", messy, "2024-06-01")
    assert obs.schema.equals(OBSERVATION_SCHEMAS["sensor"])
    df = obs.to_pandas()
    assert df["source_id"].tolist() == ["a", "b"]
    assert df["speed_kmh"].tolist() == [50.0, 45.0]  # first copy kept
    assert df["timestamp"].tolist() == [pd.Timestamp("2024-06-01T08:00Z"), pd.Timestamp("2024-06-01T21:30Z")]

    q = read("quarantine", messy, "2024-06-01")
    assert q.schema.equals(QUARANTINE_SCHEMA)
    qd = q.to_pandas()
    rows = [json.loads(r) for r in qd["row"]]
    by_reason = dict(zip(qd["reason"], rows, strict=True))
    # issue 9: the quarantine keeps the row as delivered (CSV text + its line), not landing values
    assert by_reason["speed_out_of_range"]["speed_kmh"] == "0.0"
    assert by_reason["unknown_source"]["source_id"] == "zzz"
    assert by_reason["conflicting_duplicate"] == {
        "_line": 3,
        "source_id": "a",
        "timestamp": "2024-06-01T10:00:00",
        "interval_s": "300",
        "speed_kmh": "51.0",
    }

    undated = read("quarantine", messy, UNDATED).to_pandas()
    assert undated["reason"].tolist() == ["missing_timestamp"]
    assert report(messy, UNDATED)["rows_read"] == 1


def test_rerun_is_byte_identical_and_single_day_matches_range(messy):
    feed = messy.feeds[0]
    ingest_registry(messy, feed)
    ingest_range(messy, feed, "2024-06-01", "2024-06-02")
    first = lake_files()
    assert any("observations" in k for k in first) and any("quarantine" in k for k in first)
    ingest_registry(messy, feed)
    ingest_range(messy, feed, "2024-06-01", "2024-06-02")
    assert lake_files() == first
    ingest_partition(messy, feed, "2024-06-02")
    assert lake_files() == first


def test_available_dates_are_local_dates(messy):
    assert available_dates(messy, messy.feeds[0]) == ["2024-06-01", "2024-06-02"]


def test_dst_rows_through_ingest(tmp_path, points_registry):
    obs = pd.DataFrame(
        {
            "source_id": ["a", "a", "a", "b", "a"],
            "timestamp": [
                "2024-10-27T01:00",
                "2024-10-27T02:00",
                "2024-10-27T02:00",
                "2024-03-31T02:15",
                "2024-03-31T03:00",
            ],
            "interval_s": 3600,
            "speed_kmh": 30.0,
        }
    )
    city = canonical_city(tmp_path / "raw", obs, points_registry)
    autumn = ingest_partition(city, city.feeds[0], "2024-10-27")
    assert autumn["rows_accepted"] == 3
    ts = read("observations", city, "2024-10-27").column("timestamp").to_pylist()
    assert [t.isoformat() for t in ts] == [
        "2024-10-26T23:00:00+00:00",
        "2024-10-27T00:00:00+00:00",
        "2024-10-27T01:00:00+00:00",
    ]
    spring = ingest_partition(city, city.feeds[0], "2024-03-31")
    assert spring["by_reason"]["nonexistent_local_time"] == 1 and spring["rows_accepted"] == 1
    q = read("quarantine", city, "2024-03-31").to_pandas()
    assert q["timestamp"].isna().all()  # no instant exists
    assert json.loads(q["row"].iloc[0])["timestamp"] == "2024-03-31T02:15"


def test_metr_zero_and_blank_speeds_are_quarantined_with_reasons(tmp_path):
    speeds = tmp_path / "speed.csv"
    speeds.write_text("773869,767541\n60,0\n,55\n")
    city = parse_city(
        {
            "name": "mini_la",
            "timezone": "America/Los_Angeles",
            "crs_epsg": 26945,
            "bbox": [-118.56, 34.03, -118.17, 34.23],
            "cell_size_m": 1000,
            "time_bin": "15min",
            "feeds": [
                {
                    "name": "metr",
                    "kind": "sensor",
                    "adapter": "metr_la",
                    "observations": str(speeds),
                    "registry": str(LOCATIONS),
                    "channels": ["speed_kmh"],
                    # issue 9: a timestamp-less file must fit whole days, or say where it ends
                    "options": {
                        "start_local": "2012-03-01T00:00:00",
                        "interval_s": 300,
                        "end_local": "2012-03-01T00:10",
                    },
                }
            ],
        }
    )
    r = ingest_partition(city, city.feeds[0], "2012-03-01")
    assert (r["rows_read"], r["rows_accepted"]) == (4, 2)
    assert r["by_reason"]["speed_out_of_range"] == 1 and r["by_reason"]["all_values_null"] == 1
    q = read("quarantine", city, "2012-03-01").to_pandas()
    reasons = dict(zip(q["reason"], q["source_id"], strict=True))
    assert reasons == {"speed_out_of_range": "767541", "all_values_null": "773869"}


def test_schema_drift_raises_naming_file_and_column(tmp_path, points_registry):
    obs = pd.DataFrame({"source_id": ["a"], "when": ["2024-06-01T10:00"], "interval_s": [300], "speed_kmh": [3.0]})
    city = canonical_city(tmp_path / "raw", obs, points_registry)
    with pytest.raises(IngestError) as err:
        ingest_partition(city, city.feeds[0], "2024-06-01")
    assert "obs.csv" in str(err.value) and "`timestamp`" in str(err.value)


def test_registry_partition_version_and_rejections(tmp_path):
    registry = pd.DataFrame(
        {
            "source_id": ["a", "b", "c", "a", "d"],
            "lon": [13.40, 500.0, 13.42, 13.43, 13.44],
            "lat": [52.50, 52.51, None, 52.53, 52.54],
            "road": ["x", "y", "z", "w", "v"],
        }
    )
    obs = pd.DataFrame({"source_id": ["a"], "timestamp": ["2024-06-01T10:00"], "interval_s": [300], "speed_kmh": [3.0]})
    # issue 9: 3 of 5 sources rejected is more than the default share that fails ingest
    city = canonical_city(tmp_path / "raw", obs, registry, options={"registry_max_rejected_share": 0.8})
    feed = city.feeds[0]
    info = ingest_registry(city, feed)
    assert (info["n_sources"], info["n_invalid"]) == (2, 3)
    table = pq.read_table(info["path"])
    assert table.schema.remove_metadata().equals(REGISTRY_SCHEMA)
    assert table.schema.metadata[b"version"].decode() == info["version"]
    assert table.column("source_id").to_pylist() == ["a", "d"]
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    assert shapely.get_x(geoms).tolist() == [13.40, 13.44]
    assert json.loads(table.column("attributes")[0].as_py()) == {"road": "x"}
    rejected = pq.read_table(info["rejected_path"]).to_pandas()
    assert sorted(zip(rejected["source_id"], rejected["reason"], strict=True)) == [
        ("a", "duplicate_source_id"),
        ("b", "out_of_bounds"),
        ("c", "missing_geometry"),
    ]
    import geopandas as gpd

    g = gpd.read_parquet(info["path"])  # GeoParquet metadata makes it a GeoDataFrame in WGS84
    assert g.crs.to_epsg() in (4326, None) and g.crs.is_geographic
    # same content -> same version; different content -> different version
    assert ingest_registry(city, feed)["version"] == info["version"]
    registry.loc[4, "road"] = "changed"
    registry.to_csv(feed.registry, index=False)
    assert ingest_registry(city, feed)["version"] != info["version"]
    # an observation of a rejected source is unknown
    r = ingest_partition(city, feed, "2024-06-01")
    assert r["rows_accepted"] == 1


def test_registry_is_geoparquet_by_geopandas_and_reading_it_never_writes(tmp_path):
    """Issue 10: the registry written by GeoPandas; registry_sources only reads."""
    import geopandas as gpd

    from traffic.grid.assign import read_lake_registry
    from traffic.ingest import registry_sources

    registry = pd.DataFrame({"source_id": ["b", "a"], "lon": [13.41, 13.40], "lat": [52.51, 52.50]})
    obs = pd.DataFrame({"source_id": ["a"], "timestamp": ["2024-06-01T10:00"], "interval_s": [300], "speed_kmh": [3.0]})
    city = canonical_city(tmp_path / "raw", obs, registry)
    feed = city.feeds[0]
    with pytest.raises(FileNotFoundError, match=r"registry\.parquet does not exist.*traffic ingest"):
        registry_sources(city, feed)
    with pytest.raises(FileNotFoundError, match=r"registry\.parquet does not exist.*traffic ingest"):
        read_lake_registry(city, feed.name)
    assert lake_files() == {}  # the reads wrote nothing

    info = ingest_registry(city, feed)
    md = pq.read_schema(info["path"]).metadata
    geo = json.loads(md[b"geo"])
    assert geo["creator"]["library"] == "geopandas" and geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB" and geo["columns"]["geometry"]["geometry_types"] == ["Point"]
    assert md[b"version"].decode() == info["version"]
    assert pq.read_schema(info["path"]).remove_metadata().equals(REGISTRY_SCHEMA)
    g = gpd.read_parquet(info["path"])
    assert g.crs.to_epsg() == 4326 and g["source_id"].tolist() == ["a", "b"]

    before = lake_files()
    ids, version = registry_sources(city, feed)
    assert ids.tolist() == ["a", "b"] and version == info["version"]
    back, version = read_lake_registry(city, feed.name)
    assert version == info["version"] and back["source_id"].tolist() == ["a", "b"]
    assert shapely.get_x(back.geometry.to_numpy()).tolist() == [13.40, 13.41]
    assert lake_files() == before


def test_ingest_range_writes_an_absent_registry_first(tmp_path):
    registry = pd.DataFrame({"source_id": ["a"], "lon": [13.40], "lat": [52.50]})
    obs = pd.DataFrame({"source_id": ["a"], "timestamp": ["2024-06-01T10:00"], "interval_s": [300], "speed_kmh": [3.0]})
    city = canonical_city(tmp_path / "raw", obs, registry)
    [r] = ingest_range(city, city.feeds[0], "2024-06-01", "2024-06-01")
    assert r["rows_accepted"] == 1
    assert (lake.partition("registry", city=city.name, feed=city.feeds[0].name) / "registry.parquet").exists()


def test_bad_dates_are_rejected(messy):
    with pytest.raises(ValueError, match="before start"):
        ingest_range(messy, messy.feeds[0], "2024-06-02", "2024-06-01")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        ingest_partition(messy, messy.feeds[0], "2024-06-01T10:00")


# ------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def telraam_raw() -> pd.DataFrame:
    return pd.read_parquet(TELRAAM, columns=["segment_id", "date_local", "car_total"])


def test_berlin_dst_end_hour_neither_duplicated_nor_lost(berlin, telraam_raw):
    day = "2024-10-27"
    r = ingest_partition(berlin, berlin.feed("telraam"), day)
    raw = telraam_raw[telraam_raw["date_local"].dt.strftime("%Y-%m-%d") == day]
    assert r["rows_read"] == len(raw)
    doubled = raw[raw["date_local"] == pd.Timestamp(f"{day} 02:00")]["segment_id"].value_counts()
    assert (doubled == 2).any()  # the file really repeats the hour for some segments
    obs = read("observations", berlin, day).to_pandas()
    q = read("quarantine", berlin, day).to_pandas()
    raw_per_segment = raw["segment_id"].astype(str).value_counts()
    distinct_utc = obs.groupby("source_id")["timestamp"].nunique()
    quarantined = q["source_id"].value_counts()
    got = distinct_utc.add(quarantined, fill_value=0).astype(int)
    pd.testing.assert_series_equal(got.sort_index(), raw_per_segment.sort_index(), check_names=False)
    for seg in doubled[doubled == 2].index.astype(str):
        ts = set(obs.loc[obs["source_id"] == seg, "timestamp"])
        assert {pd.Timestamp("2024-10-27T00:00Z"), pd.Timestamp("2024-10-27T01:00Z")} <= ts


def test_berlin_night_hours_stay_absent(berlin, telraam_raw):
    day = "2024-11-05"
    ingest_partition(berlin, berlin.feed("telraam"), day)
    raw = telraam_raw[telraam_raw["date_local"].dt.strftime("%Y-%m-%d") == day]
    n_segments = raw["segment_id"].nunique()
    assert len(raw) < 24 * n_segments  # some hours are missing in the raw data
    obs = read("observations", berlin, day).to_pandas()
    q = read("quarantine", berlin, day).to_pandas()
    local_hours = obs["timestamp"].dt.tz_convert("Europe/Berlin").dt.hour
    got = set(zip(obs["source_id"], local_hours, strict=True))
    want = set(zip(raw["segment_id"].astype(str), raw["date_local"].dt.hour, strict=True))
    assert len(obs) + len(q) == len(raw)
    assert got <= want and len(want - got) == len(q)  # nothing invented, nothing filled with zeros


def test_los_angeles_registry_and_every_row_read(los_angeles):
    feed = los_angeles.feed("metr")
    info = ingest_registry(los_angeles, feed)
    header = pd.read_csv(LOS_SPEED, nrows=0).columns.tolist()
    assert info["n_sources"] == len(header) == 207 and info["n_invalid"] == 0
    table = pq.read_table(info["path"])
    assert set(table.column("source_id").to_pylist()) == set(header)
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    assert shapely.is_valid(geoms).all() and (shapely.get_type_id(geoms) == 0).all()
    lon0, lat0, lon1, lat1 = los_angeles.bbox
    assert ((shapely.get_x(geoms) > lon0 - 0.1) & (shapely.get_x(geoms) < lon1 + 0.1)).all()
    assert ((shapely.get_y(geoms) > lat0 - 0.1) & (shapely.get_y(geoms) < lat1 + 0.1)).all()
    dates = available_dates(los_angeles, feed)
    assert dates == [f"2012-03-0{d}" for d in range(1, 8)]
    reports = ingest_range(los_angeles, feed, dates[0], dates[-1])
    rows = len(pd.read_csv(LOS_SPEED))
    assert sum(r["rows_read"] for r in reports) == rows * len(header) == 2016 * 207
    assert all(r["n_sources"] == 207 for r in reports if r["rows_accepted"])


def test_all_shipped_days_ingest_quickly(berlin, los_angeles, telraam_raw):
    start = time.perf_counter()
    total = 0
    for city in (berlin, los_angeles):
        feed = city.feeds[0]
        dates = available_dates(city, feed)
        total += sum(r["rows_read"] for r in ingest_range(city, feed, dates[0], dates[-1]))
    elapsed = time.perf_counter() - start
    assert total == len(telraam_raw) + 2016 * 207
    assert elapsed < 60, f"ingesting every shipped day took {elapsed:.1f} s"
    assert len(lake.list_dates("observations", city="berlin", feed="telraam")) == 92
    assert np.isclose(
        sum(report(berlin, d)["rows_accepted"] for d in lake.list_dates("quality", city="berlin", feed="telraam")),
        len(telraam_raw)
        - sum(report(berlin, d)["rows_quarantined"] for d in lake.list_dates("quality", city="berlin", feed="telraam")),
    )
