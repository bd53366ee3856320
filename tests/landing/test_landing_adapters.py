"""Landing adapters: shipped real data, tiny hand-built deliveries and schema drift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from traffic.config import PROJECT_ROOT, FeedConfig, load_city
from traffic.ingest import IngestError
from traffic.landing.adapters import MPH_TO_KMH, TELRAAM_MIN_SPEED_CARS, read_feed_registry, read_observations
from traffic.landing.contract import OBSERVATION_SCHEMAS

TELRAAM = PROJECT_ROOT / "data/samples/berlin_telraam/observations/traffic_df_2024_10-2024_12.parquet"
SEGMENTS = PROJECT_ROOT / "data/samples/berlin_telraam/bzm_telraam_segments.geojson"
LOS_SPEED = PROJECT_ROOT / "data/samples/la_metr/observations/los_speed.csv"
LOCATIONS = PROJECT_ROOT / "data/samples/la_metr/graph_sensor_locations.csv"


def feed(adapter: str, kind: str, observations, registry, **options) -> FeedConfig:
    channels = ("speed_kmh",) if kind == "sensor" else ("car",)
    return FeedConfig("f", kind, adapter, str(observations), str(registry), channels, options)


# ------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def telraam_raw() -> pd.DataFrame:
    return pd.read_parquet(TELRAAM)


def test_telraam_observations_map_every_raw_row(telraam_raw):
    berlin = load_city("berlin")
    out = read_observations(berlin.feed("telraam"))
    assert list(out.columns) == OBSERVATION_SCHEMAS["camera"].names
    assert len(out) == len(telraam_raw)  # nothing dropped, nothing filled
    assert (out["source_id"] == telraam_raw["segment_id"].astype(str)).all()
    assert (out["timestamp"] == telraam_raw["date_local"]).all()
    for src, dst in [
        ("car_total", "car"),
        ("heavy_total", "heavy"),
        ("bike_total", "bike"),
        ("ped_total", "pedestrian"),
    ]:
        # totals are extrapolated to the hour: the landing count is what the camera saw while up
        np.testing.assert_allclose(out[dst].to_numpy(), telraam_raw[src].to_numpy() * telraam_raw["uptime"].to_numpy())
    # v85 is a speed where the camera counted >= 10 cars in the hour; NaN stays NaN
    cars = telraam_raw["car_total"].to_numpy() * telraam_raw["uptime"].to_numpy()
    want = np.where(cars >= TELRAAM_MIN_SPEED_CARS, telraam_raw["v85"].to_numpy(), np.nan)
    np.testing.assert_array_equal(out["speed_kmh"].to_numpy(), want)
    assert 0.6 < np.isfinite(want).mean() < np.isfinite(telraam_raw["v85"].to_numpy()).mean()  # 76 % delivered
    assert (out["interval_s"] == 3600).all()


def test_telraam_registry_has_every_segment_with_osm_attributes():
    out = read_feed_registry(load_city("berlin").feed("telraam"))
    raw = json.loads(SEGMENTS.read_text())["features"]
    assert len(out) == len(raw) == 255
    assert out["source_id"].is_unique
    assert set(shapely.get_type_id(out["geometry"].to_numpy())) == {5}  # MultiLineString
    attrs = [json.loads(a) for a in out["attributes"]]
    by_id = {str(f["properties"]["segment_id"]): f["properties"]["osm"] for f in raw}
    for sid, a in zip(out["source_id"], attrs, strict=True):
        assert a["name"] == by_id[sid].get("name")
        assert a["highway"] == by_id[sid].get("highway")


def test_metr_la_melts_wide_csv_in_file_order():
    la = load_city("los_angeles")
    f = la.feed("metr")
    out = read_observations(f)
    wide = pd.read_csv(LOS_SPEED)
    assert wide.shape == (2016, 207)
    assert len(out) == 2016 * 207
    assert list(out.columns) == OBSERVATION_SCHEMAS["sensor"].names
    # row i, column j of the CSV is out row i*207 + j
    i, j = 1234, 56
    row = out.iloc[i * 207 + j]
    assert row["source_id"] == wide.columns[j]
    assert row["timestamp"] == pd.Timestamp(f.options["start_local"]) + pd.Timedelta(
        seconds=i * f.options["interval_s"]
    )
    assert row["speed_kmh"] == pytest.approx(wide.iat[i, j] * MPH_TO_KMH)
    assert out["count"].isna().all() and out["occupancy"].isna().all()
    assert (out["interval_s"] == 300).all()


def test_metr_la_registry_points_match_the_csv():
    out = read_feed_registry(load_city("los_angeles").feed("metr"))
    raw = pd.read_csv(LOCATIONS)
    assert len(out) == 207
    assert list(out["source_id"]) == raw["sensor_id"].astype(str).tolist()
    geoms = out["geometry"].to_numpy()
    np.testing.assert_allclose(shapely.get_x(geoms), raw["longitude"])
    np.testing.assert_allclose(shapely.get_y(geoms), raw["latitude"])


# ------------------------------------------------------------------------- tiny deliveries


def test_metr_la_keeps_blank_and_zero_cells(tmp_path):
    csv = tmp_path / "speed.csv"
    csv.write_text("s1,s2\n60,0\n,55.5\n")
    out = read_observations(
        feed(
            "metr_la",
            "sensor",
            csv,
            LOCATIONS,
            start_local="2012-03-01T00:00:00",
            interval_s=300,
            end_local="2012-03-01T00:10:00",  # issue 9: a timestamp-less file must fit days or say where it ends
        )
    )
    assert out["source_id"].tolist() == ["s1", "s2", "s1", "s2"]
    assert out["timestamp"].tolist() == [pd.Timestamp("2012-03-01 00:00")] * 2 + [pd.Timestamp("2012-03-01 00:05")] * 2
    assert out["speed_kmh"].iloc[1] == 0.0
    assert np.isnan(out["speed_kmh"].iloc[2])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_canonical_tolerates_missing_nullable_columns(tmp_path, fmt):
    df = pd.DataFrame(
        {
            "source_id": ["7", "8"],
            "timestamp": ["2024-06-01T10:00:00", "2024-06-01T10:00:00+02:00"],
            "interval_s": [900, 900],
            "car": [3, 4],
        }
    )
    path = tmp_path / f"obs.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path, index=False)
    out = read_observations(feed("canonical", "camera", path, path))
    assert list(out.columns) == OBSERVATION_SCHEMAS["camera"].names
    assert out["source_id"].tolist() == ["7", "8"]
    assert out["car"].tolist() == [3.0, 4.0]
    assert out[["heavy", "bike", "pedestrian", "uptime", "speed_kmh"]].isna().all().all()


def test_canonical_reads_a_folder_of_daily_files_and_interval_option(tmp_path):
    for day in ("01", "02"):
        pd.DataFrame({"source_id": ["a"], "timestamp": [f"2024-06-{day}T10:00:00"], "speed_kmh": [40.0]}).to_csv(
            tmp_path / f"day{day}.csv", index=False
        )
    out = read_observations(feed("canonical", "sensor", tmp_path, tmp_path, interval_s=300))
    assert out["timestamp"].tolist() == ["2024-06-01T10:00:00", "2024-06-02T10:00:00"]
    assert (out["interval_s"] == 300).all()


@pytest.mark.parametrize(
    ("columns", "n_valid"),
    [
        ({"lon": [13.4, None], "lat": [52.5, 52.6]}, 1),
        ({"geometry": ["POINT (13.4 52.5)", "LINESTRING (13.4 52.5, 13.5 52.6)"]}, 2),
        ({"geometry": ['{"type": "Point", "coordinates": [13.4, 52.5]}', "not wkt"]}, 1),
    ],
)
def test_canonical_registry_geometry_forms(tmp_path, columns, n_valid):
    path = tmp_path / "reg.csv"
    pd.DataFrame({"source_id": ["a", "b"], **columns, "district": ["x", "y"]}).to_csv(path, index=False)
    out = read_feed_registry(feed("canonical", "sensor", path, path))
    assert out["source_id"].tolist() == ["a", "b"]
    assert int(out["geometry"].notna().sum()) == n_valid
    assert json.loads(out["attributes"].iloc[0]) == {"district": "x"}


def test_canonical_registry_geojson_in_other_crs_is_reprojected(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    g = gpd.GeoDataFrame({"source_id": ["a"]}, geometry=[Point(13.4, 52.5)], crs=4326).to_crs(25833)
    path = tmp_path / "reg.geojson"
    g.to_file(path, driver="GeoJSON")
    out = read_feed_registry(feed("canonical", "sensor", path, path))
    pt = out["geometry"].iloc[0]
    assert (pt.x, pt.y) == pytest.approx((13.4, 52.5), abs=1e-6)


# ------------------------------------------------------------------------- schema drift


def test_telraam_missing_column_names_file_and_column(tmp_path, telraam_raw):
    bad = tmp_path / "drift.parquet"
    telraam_raw.head(10).drop(columns=["car_total"]).to_parquet(bad)
    with pytest.raises(IngestError) as err:
        read_observations(feed("telraam", "camera", bad, SEGMENTS))
    msg = str(err.value)
    assert str(bad) in msg and "`car_total`" in msg and "expected" in msg
    assert err.value.column == "car_total" and err.value.file == str(bad)


def test_telraam_without_v85_reads_volumes_unless_the_feed_asks_for_speeds(tmp_path, telraam_raw):
    """A camera feed with no v85 column: volumes only, unless the city file asks for speed_kmh (then an error)."""
    drift = tmp_path / "no_v85.parquet"
    telraam_raw.head(10).drop(columns=["v85"]).to_parquet(drift)
    out = read_observations(feed("telraam", "camera", drift, SEGMENTS))  # channels: car
    assert len(out) == 10 and out["speed_kmh"].isna().all() and out["car"].notna().all()
    asks = FeedConfig("f", "camera", "telraam", str(drift), str(SEGMENTS), ("car", "speed_kmh"), {})
    with pytest.raises(IngestError) as err:
        read_observations(asks)
    assert err.value.column == "v85" and str(drift) in str(err.value)


def test_telraam_min_speed_cars_option(tmp_path, telraam_raw):
    rows = telraam_raw[telraam_raw["v85"].notna()].head(50)
    path = tmp_path / "few.parquet"
    rows.to_parquet(path)
    cars = rows["car_total"].to_numpy() * rows["uptime"].to_numpy()
    out = read_observations(feed("telraam", "camera", path, SEGMENTS, min_speed_cars=0))
    np.testing.assert_array_equal(out["speed_kmh"].to_numpy(), rows["v85"].to_numpy())
    out = read_observations(feed("telraam", "camera", path, SEGMENTS, min_speed_cars=100))
    np.testing.assert_array_equal(out["speed_kmh"].notna().to_numpy(), cars >= 100)


def test_telraam_wrong_dtype_names_column(tmp_path, telraam_raw):
    bad = tmp_path / "drift.parquet"
    df = telraam_raw.head(10).copy()
    df["heavy_total"] = "many"
    df.to_parquet(bad)
    with pytest.raises(IngestError, match=r"column `heavy_total` has wrong dtype.*'many'.*expected a number") as err:
        read_observations(feed("telraam", "camera", bad, SEGMENTS))
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("source_id,interval_s,speed_kmh\na,300,40\n", r"missing column `timestamp`"),
        ("source_id,timestamp,speed_kmh\na,2024-06-01T10:00,40\n", r"missing column `interval_s`"),
        (
            "source_id,timestamp,interval_s,speed_kmh\na,2024-06-01T10:00,300,fast\n",
            r"column `speed_kmh` has wrong dtype",
        ),
    ],
)
def test_canonical_schema_drift(tmp_path, content, match):
    path = tmp_path / "obs.csv"
    path.write_text(content)
    with pytest.raises(IngestError, match=match) as err:
        read_observations(feed("canonical", "sensor", path, path))
    assert str(path) in str(err.value)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet")
    with pytest.raises(IngestError, match=r"cannot read .*junk.parquet as Parquet"):
        read_observations(feed("telraam", "camera", junk, SEGMENTS))
    with pytest.raises(IngestError, match=r"nowhere.csv: file does not exist"):
        read_observations(feed("canonical", "sensor", tmp_path / "nowhere.csv", tmp_path))


def test_metr_la_non_numeric_column_and_missing_option(tmp_path):
    csv = tmp_path / "speed.csv"
    csv.write_text("timestamp,s1\n2012-03-01 00:00,60\n")
    with pytest.raises(IngestError, match=r"column `timestamp` has wrong dtype.*expected speeds in mph"):
        read_observations(feed("metr_la", "sensor", csv, LOCATIONS, start_local="2012-03-01", interval_s=300))
    with pytest.raises(IngestError, match=r"needs option `start_local`"):
        read_observations(feed("metr_la", "sensor", LOS_SPEED, LOCATIONS, interval_s=300))


def test_registry_without_geometry_columns(tmp_path):
    path = tmp_path / "reg.csv"
    path.write_text("source_id,x,y\na,1,2\n")
    with pytest.raises(IngestError, match=r"reg.csv: missing column `lon`/`lat` or `geometry`"):
        read_feed_registry(feed("canonical", "sensor", path, path))


def test_adapter_options_table_names_every_option_the_code_reads():
    import re

    from traffic.ingest import run
    from traffic.landing import adapters

    code = Path(adapters.__file__).read_text() + Path(run.__file__).read_text()
    read = set(re.findall(r'options(?:\.get\(|\[)"([a-z_]+)"', code)) | set(
        re.findall(r'_option\(feed, "([a-z_]+)"', code)
    )
    read |= set(re.findall(r'_delimiter\(feed, "([a-z_]+)"\)', code)) | {"csv_delimiter"}
    listed = set().union(*(set(v) for v in adapters.ADAPTER_OPTIONS.values()))
    assert read <= listed, read - listed
    assert set(adapters.ADAPTER_OPTIONS) == set(adapters.OBSERVATION_ADAPTERS)
