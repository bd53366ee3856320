"""Fault injection: one fault at a time, injected into a small delivery cut from the shipped real data.

Run it on its own with ``pytest tests/ingest/test_faults.py`` (the kill -9 case is marked
``slow``). Every case builds a clean delivery from ``data/samples/`` (one day of METR-LA
for 12 sensors, one day of Berlin Telraam), ingests it as the baseline, then injects one
fault and checks:

* the exact reason counts (the baseline's plus the injected ones; nothing else moves),
* every other row is accepted unchanged (same values, same timestamps: no shift),
* the quarantine keeps the value as delivered,
* a re-run gives byte-identical lake files;

or, for a file-level fault, one short :class:`IngestError` naming the file and the fault,
and a lake left exactly as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Transformer

from traffic import lake, pipeline, tempfiles
from traffic.config import PROJECT_ROOT, CityConfig, parse_city
from traffic.ingest import REASONS, UNDATED, IngestError, ingest_range, ingest_registry

SAMPLES = PROJECT_ROOT / "data/samples"
LOS_SPEED = SAMPLES / "la_metr/observations/los_speed.csv"
LOCATIONS = SAMPLES / "la_metr/graph_sensor_locations.csv"
TELRAAM = SAMPLES / "berlin_telraam/observations/traffic_df_2024_10-2024_12.parquet"
SEGMENTS = SAMPLES / "berlin_telraam/bzm_telraam_segments.geojson"
N_SENSORS = 12
METR_DAY = "2012-03-01"
TELRAAM_DAY = "2024-10-01"


# ------------------------------------------------------------------------- deliveries


def metr_lines() -> list[str]:
    """Header + the first local day (288 lines of 5 min) of the shipped METR-LA CSV, 12 sensors, text as shipped."""
    with LOS_SPEED.open() as fh:
        lines = [next(fh).rstrip("\n") for _ in range(289)]
    return [",".join(line.split(",")[:N_SENSORS]) for line in lines]


def city_config(folder: Path, feed: dict, *, name: str, timezone: str, epsg: int, bbox: list[float], time_bin: str):
    return parse_city(
        {
            "name": name,
            "timezone": timezone,
            "crs_epsg": epsg,
            "bbox": bbox,
            "cell_size_m": 1000,
            "time_bin": time_bin,
            "feeds": [feed],
        },
        source=str(folder / f"{name}.toml"),
    )


def metr_city(folder: Path, lines: list[str], *, registry: Path = LOCATIONS, **options) -> CityConfig:
    folder.mkdir(parents=True, exist_ok=True)
    obs = folder / "speed.csv"
    obs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    feed = {
        "name": "metr",
        "kind": "sensor",
        "adapter": "metr_la",
        "observations": str(obs),
        "registry": str(registry),
        "channels": ["speed_kmh"],
        "options": {"start_local": f"{METR_DAY}T00:00:00", "interval_s": 300, **options},
    }
    return city_config(
        folder,
        feed,
        name="la_faults",
        timezone="America/Los_Angeles",
        epsg=26945,
        bbox=[-118.56, 34.03, -118.17, 34.23],
        time_bin="15min",
    )


@pytest.fixture(scope="module")
def telraam_day() -> pd.DataFrame:
    raw = pd.read_parquet(TELRAAM)
    return raw[raw["date_local"].dt.strftime("%Y-%m-%d") == TELRAAM_DAY].reset_index(drop=True)


def telraam_city(folder: Path, frame: pd.DataFrame, *, mtime: float | None = None) -> CityConfig:
    folder.mkdir(parents=True, exist_ok=True)
    obs = folder / "telraam.parquet"
    frame.to_parquet(obs, index=False)
    if mtime is not None:
        os.utime(obs, (mtime, mtime))
    feed = {
        "name": "telraam",
        "kind": "camera",
        "adapter": "telraam",
        "observations": str(obs),
        "registry": str(SEGMENTS),
        "channels": ["car"],
    }
    return city_config(
        folder,
        feed,
        name="berlin_faults",
        timezone="Europe/Berlin",
        epsg=25833,
        bbox=[13.02, 52.24, 13.78, 52.76],
        time_bin="1h",
    )


# ------------------------------------------------------------------------- lake helpers


def lake_files() -> dict[str, bytes]:
    root = Path(str(lake.lake_root()))
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def ingest(city: CityConfig, day: str) -> dict:
    feed = city.feeds[0]
    ingest_registry(city, feed)
    reports = ingest_range(city, feed, day, day)
    return reports[0]


def ingest_twice(city: CityConfig, day: str) -> dict:
    """Ingest, then again: the lake must come out byte-identical."""
    report = ingest(city, day)
    first = lake_files()
    again = ingest(city, day)
    assert lake_files() == first, "a re-run changed the lake"
    assert again["unchanged"] and not report["unchanged"]  # the same bytes: not read again (incremental ingest)
    assert {k: v for k, v in again.items() if k != "unchanged"} == {k: v for k, v in report.items() if k != "unchanged"}
    return report


def accepted(city: CityConfig, day: str) -> pd.DataFrame:
    table = lake.read_partition("observations", city=city.name, feed=city.feeds[0].name, date=day)
    return table.to_pandas().reset_index(drop=True)


def quarantined(city: CityConfig, day: str) -> pd.DataFrame:
    table = lake.read_partition("quarantine", city=city.name, feed=city.feeds[0].name, date=day)
    return table.to_pandas()


def counts(report: dict) -> dict[str, int]:
    return {k: v for k, v in report["by_reason"].items() if v}


def plus(base: dict[str, int], **extra: int) -> dict[str, int]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = out.get(k, 0) + v
    return out


def without(frame: pd.DataFrame, keys: set[tuple[str, pd.Timestamp]]) -> pd.DataFrame:
    mask = [(s, t) not in keys for s, t in zip(frame["source_id"], frame["timestamp"], strict=True)]
    return frame[mask].reset_index(drop=True)


def reconciles(report: dict) -> None:
    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"]
    assert report["rows_quarantined"] == sum(report["by_reason"].values())
    assert set(report["by_reason"]) == set(REASONS)


@pytest.fixture
def metr_baseline(tmp_path):
    """The clean METR day: its report and accepted rows (under a lake that is then wiped)."""
    lines = metr_lines()
    city = metr_city(tmp_path / "clean", lines)
    report = ingest(city, METR_DAY)
    base = accepted(city, METR_DAY)
    reconciles(report)
    assert report["rows_read"] == 288 * N_SENSORS
    for p in sorted(Path(str(lake.lake_root())).rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    return lines, report, base


def good_cell(lines: list[str], start: int = 100) -> tuple[int, int]:
    """(line index, column) of a data line from ``start`` on whose every value is a positive speed."""
    for i in range(start, len(lines)):
        values = lines[i].split(",")
        if all(v and float(v) > 0 for v in values):
            return i, 3
    raise AssertionError("no fully valid line in the sample")


def metr_key(lines: list[str], i: int, j: int) -> tuple[str, pd.Timestamp]:
    sensor = lines[0].split(",")[j]
    local = pd.Timestamp(f"{METR_DAY}T00:00") + pd.Timedelta(minutes=5 * (i - 1))
    return sensor, local.tz_localize("America/Los_Angeles").tz_convert("UTC")


# ------------------------------------------------------------------------- METR: cell and line faults


@pytest.mark.parametrize(
    ("text", "reason"),
    [("abc", "unparseable_value"), ("12.5.1", "unparseable_value"), ("N/A", "marked_missing")],
)
def test_one_bad_cell_quarantines_that_value_only(tmp_path, metr_baseline, text, reason):
    lines, base_report, base = metr_baseline
    i, j = good_cell(lines)
    fields = lines[i].split(",")
    fields[j] = text
    bad = lines.copy()
    bad[i] = ",".join(fields)
    city = metr_city(tmp_path / "raw", bad)
    report = ingest_twice(city, METR_DAY)
    reconciles(report)
    assert counts(report) == plus(counts(base_report), **{reason: 1})
    assert report["rows_read"] == base_report["rows_read"]
    key = metr_key(lines, i, j)
    pd.testing.assert_frame_equal(accepted(city, METR_DAY), without(base, {key}))
    q = quarantined(city, METR_DAY)
    row = q[q["reason"] == reason]
    assert row["source_id"].tolist() == [key[0]] and row["timestamp"].tolist() == [key[1]]
    assert json.loads(row["row"].iloc[0]) == {"_line": i + 1, key[0]: text}  # as delivered, not km/h


def test_zero_speed_is_quarantined_as_delivered_mph_text(tmp_path, metr_baseline):
    lines, base_report, base = metr_baseline
    i, j = good_cell(lines)
    fields = lines[i].split(",")
    fields[j] = "0.000"
    bad = lines.copy()
    bad[i] = ",".join(fields)
    city = metr_city(tmp_path / "raw", bad)
    report = ingest_twice(city, METR_DAY)
    assert counts(report) == plus(counts(base_report), speed_out_of_range=1)
    q = quarantined(city, METR_DAY)
    key = metr_key(lines, i, j)
    mine = q[(q["source_id"] == key[0]) & (q["timestamp"] == key[1])]
    assert json.loads(mine["row"].iloc[0])[key[0]] == "0.000"


@pytest.mark.parametrize("change", ["drop_last_field", "extra_field"])
def test_a_line_with_the_wrong_field_count_quarantines_its_cells_and_shifts_nothing(tmp_path, metr_baseline, change):
    lines, base_report, base = metr_baseline
    i, _ = good_cell(lines)
    bad = lines.copy()
    bad[i] = lines[i].rsplit(",", 1)[0] if change == "drop_last_field" else lines[i] + ",77.1"
    city = metr_city(tmp_path / "raw", bad)
    report = ingest_twice(city, METR_DAY)
    reconciles(report)
    assert counts(report) == plus(counts(base_report), wrong_field_count=N_SENSORS)
    keys = {metr_key(lines, i, j) for j in range(N_SENSORS)}
    pd.testing.assert_frame_equal(accepted(city, METR_DAY), without(base, keys))
    q = quarantined(city, METR_DAY)
    rows = [json.loads(r) for r in q.loc[q["reason"] == "wrong_field_count", "row"]]
    assert {r["_line"] for r in rows} == {i + 1}
    assert {r["_fields"] for r in rows} == {N_SENSORS - 1 if change == "drop_last_field" else N_SENSORS + 1}


def test_one_duplicated_line_shifts_no_later_reading(tmp_path, metr_baseline):
    lines, base_report, base = metr_baseline
    i, _ = good_cell(lines)
    bad = lines[: i + 1] + [lines[i]] + lines[i + 1 :]  # 289 data lines: one too many for the day
    city = metr_city(tmp_path / "raw", bad)
    report = ingest_twice(city, METR_DAY)
    reconciles(report)
    assert report["rows_read"] == base_report["rows_read"] + N_SENSORS
    assert counts(report) == plus(counts(base_report), duplicate=N_SENSORS)
    pd.testing.assert_frame_equal(accepted(city, METR_DAY), base)  # every later reading at its own time


# ------------------------------------------------------------------------- METR: file-level faults


def assert_refused_and_lake_kept(city_factory, metr_baseline, tmp_path, lines, match: str) -> IngestError:
    clean = metr_city(tmp_path / "raw", metr_baseline[0])
    ingest(clean, METR_DAY)
    before = lake_files()
    bad = city_factory(tmp_path / "raw", lines)
    with pytest.raises(IngestError, match=match) as err:
        ingest(bad, METR_DAY)
    assert lake_files() == before, "a refused delivery changed the lake"
    message = str(err.value)
    assert "speed.csv" in message and len(message) < 600 and "\n" not in message
    assert err.value.file is not None and err.value.file.endswith("speed.csv")
    return err.value


def test_file_cut_in_the_middle_of_a_line_is_refused(tmp_path, metr_baseline):
    lines = metr_baseline[0]
    raw = "\n".join(lines) + "\n"
    cut = raw[: raw.index(lines[200]) + len(lines[200]) // 2]  # ends inside line 201, no newline

    def factory(folder, _lines):
        city = metr_city(folder, lines)
        Path(city.feeds[0].observations).write_text(cut)
        return city

    assert_refused_and_lake_kept(factory, metr_baseline, tmp_path, lines, r"truncated.*cut in the middle of a line")


def test_missing_lines_in_a_timestamp_less_feed_are_refused(tmp_path, metr_baseline):
    lines = metr_baseline[0]
    short = lines[:150] + lines[151:]  # one line lost at a line boundary
    err = assert_refused_and_lake_kept(metr_city, metr_baseline, tmp_path, short, r"do not fit whole days of 288")
    assert err.allowed is not None and "288" in err.allowed


def test_semicolon_header_with_bom_names_the_delimiter(tmp_path, metr_baseline):
    lines = [line.replace(",", ";") for line in metr_baseline[0]]

    def factory(folder, _lines):
        city = metr_city(folder, lines)
        Path(city.feeds[0].observations).write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode("utf-8"))
        return city

    err = assert_refused_and_lake_kept(factory, metr_baseline, tmp_path, lines, r"delimited by semicolon ';'")
    assert "csv_delimiter" in str(err) and err.value == ";"


def test_declared_semicolon_delimiter_with_bom_reads_the_same_day(tmp_path, metr_baseline):
    lines, base_report, base = metr_baseline
    city = metr_city(tmp_path / "raw", [line.replace(",", ";") for line in lines], csv_delimiter=";")
    path = Path(city.feeds[0].observations)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = ingest_twice(city, METR_DAY)
    assert counts(report) == counts(base_report)
    pd.testing.assert_frame_equal(accepted(city, METR_DAY), base)


def test_a_column_of_text_is_schema_drift_not_a_quarantine(tmp_path, metr_baseline):
    lines = metr_baseline[0]
    drift = [lines[0]] + [",".join(["fast"] + line.split(",")[1:]) for line in lines[1:]]
    assert_refused_and_lake_kept(metr_city, metr_baseline, tmp_path, drift, r"column `\d+` has wrong dtype")


# ------------------------------------------------------------------------- Telraam: row rules


@pytest.fixture
def telraam_baseline(tmp_path, telraam_day):
    city = telraam_city(tmp_path / "clean", telraam_day)
    report = ingest(city, TELRAAM_DAY)
    base = accepted(city, TELRAAM_DAY)
    reconciles(report)
    assert report["rows_read"] == len(telraam_day)
    for p in sorted(Path(str(lake.lake_root())).rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    return report, base


def telraam_key(row: pd.Series) -> tuple[str, pd.Timestamp]:
    return str(row["segment_id"]), row["date_local"].tz_localize("Europe/Berlin").tz_convert("UTC")


def pick_row(frame: pd.DataFrame) -> int:
    ok = (frame["uptime"] > 0.5) & (frame["car_total"] > 0) & frame["v85"].notna()
    return int(np.flatnonzero(ok.to_numpy())[len(np.flatnonzero(ok.to_numpy())) // 2])


def test_uptime_zero_is_flagged_with_the_delivered_counts(tmp_path, telraam_day, telraam_baseline):
    base_report, base = telraam_baseline
    frame = telraam_day.copy()
    k = pick_row(frame)
    frame.loc[k, "uptime"] = 0.0
    city = telraam_city(tmp_path / "raw", frame)
    report = ingest_twice(city, TELRAAM_DAY)
    reconciles(report)
    assert counts(report) == plus(counts(base_report), zero_uptime=1)
    key = telraam_key(frame.loc[k])
    pd.testing.assert_frame_equal(accepted(city, TELRAAM_DAY), without(base, {key}))
    q = quarantined(city, TELRAAM_DAY)
    row = json.loads(q.loc[q["reason"] == "zero_uptime", "row"].iloc[0])
    assert row["car_total"] == float(frame.loc[k, "car_total"]) > 0  # as delivered: not count x uptime = 0
    assert row["uptime"] == 0.0 and row["segment_id"] == int(frame.loc[k, "segment_id"])


def test_infinite_count_is_quarantined_as_delivered(tmp_path, telraam_day, telraam_baseline):
    base_report, base = telraam_baseline
    frame = telraam_day.copy()
    k = pick_row(frame)
    frame.loc[k, "heavy_total"] = np.inf
    city = telraam_city(tmp_path / "raw", frame)
    report = ingest_twice(city, TELRAAM_DAY)
    assert counts(report) == plus(counts(base_report), negative_count=1)
    q = quarantined(city, TELRAAM_DAY)
    row = json.loads(q.loc[q["reason"] == "negative_count", "row"].iloc[0])
    assert row["heavy_total"] == "inf"  # not null


@pytest.mark.parametrize(("delta", "reason"), [(0.0, "duplicate"), (1.0, "conflicting_duplicate")])
def test_duplicates_exact_and_conflicting_have_their_own_codes(tmp_path, telraam_day, telraam_baseline, delta, reason):
    base_report, base = telraam_baseline
    k = pick_row(telraam_day)
    copy = telraam_day.loc[[k]].copy()
    copy["car_total"] = copy["car_total"] + delta
    frame = pd.concat([telraam_day, copy], ignore_index=True)
    city = telraam_city(tmp_path / "raw", frame)
    report = ingest_twice(city, TELRAAM_DAY)
    reconciles(report)
    assert counts(report) == plus(counts(base_report), **{reason: 1})
    pd.testing.assert_frame_equal(accepted(city, TELRAAM_DAY), base)  # the first copy is kept
    q = quarantined(city, TELRAAM_DAY)
    row = json.loads(q.loc[q["reason"] == reason, "row"].iloc[0])
    assert row["car_total"] == float(telraam_day.loc[k, "car_total"]) + delta


def test_a_timestamp_years_in_the_future_is_quarantined(tmp_path, telraam_day, telraam_baseline):
    base_report, base = telraam_baseline
    frame = telraam_day.copy()
    k = pick_row(frame)
    frame.loc[k, "date_local"] = frame.loc[k, "date_local"] + pd.DateOffset(years=7)
    future_day = frame.loc[k, "date_local"].strftime("%Y-%m-%d")
    city = telraam_city(tmp_path / "raw", frame)
    report = ingest(city, TELRAAM_DAY)
    key = telraam_key(telraam_day.loc[k])
    pd.testing.assert_frame_equal(accepted(city, TELRAAM_DAY), without(base, {key}))
    future = ingest_twice(city, future_day)
    assert counts(future) == {"future_timestamp": 1} and future["rows_accepted"] == 0
    assert report["rows_read"] == base_report["rows_read"] - 1


def test_future_means_after_the_delivery_time_plus_one_bin(tmp_path, telraam_day, telraam_baseline):
    base_report, base = telraam_baseline
    delivered = pd.Timestamp(f"{TELRAAM_DAY}T12:00:00Z")  # file written at 14:00 Berlin time
    city = telraam_city(tmp_path / "raw", telraam_day, mtime=delivered.timestamp())
    report = ingest_twice(city, TELRAAM_DAY)
    utc = telraam_day["date_local"].dt.tz_localize("Europe/Berlin").dt.tz_convert("UTC")
    late = utc > delivered + pd.Timedelta(hours=1)  # 13:00 UTC still fits in the current bin
    assert 0 < late.sum() < len(telraam_day)
    assert report["by_reason"]["future_timestamp"] == int(late.sum())
    kept = accepted(city, TELRAAM_DAY)
    assert (kept["timestamp"] <= delivered + pd.Timedelta(hours=1)).all()
    early = base[base["timestamp"] <= delivered + pd.Timedelta(hours=1)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, early)


# ------------------------------------------------------------------------- registry


def projected_registry(folder: Path, epsg: int) -> Path:
    raw = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"})
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(
        raw["longitude"].to_numpy(), raw["latitude"].to_numpy()
    )
    out = raw.assign(longitude=x, latitude=y)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "locations_projected.csv"
    out.to_csv(path, index=False, float_format="%.4f")
    return path


def test_registry_in_metres_fails_ingest_with_a_hint(tmp_path, metr_baseline):
    registry = projected_registry(tmp_path / "reg", 26945)
    city = metr_city(tmp_path / "raw", metr_baseline[0], registry=registry)
    with pytest.raises(IngestError, match=r"rejects 207 of 207 sources.*out_of_bounds.*coordinates look projected"):
        ingest_registry(city, city.feeds[0])
    with pytest.raises(IngestError, match=r"registry_crs"):
        ingest_range(city, city.feeds[0], METR_DAY, METR_DAY)
    assert lake_files() == {}  # nothing written: no registry, no day quarantined as unknown_source


def test_declared_registry_crs_reprojects_a_csv_registry(tmp_path, metr_baseline):
    lines, base_report, base = metr_baseline
    registry = projected_registry(tmp_path / "reg", 26945)
    city = metr_city(tmp_path / "raw", lines, registry=registry, registry_crs="EPSG:26945")
    info = ingest_registry(city, city.feeds[0])
    assert (info["n_sources"], info["n_invalid"]) == (207, 0)
    geoms = shapely.from_wkb(pq.read_table(info["path"]).column("geometry").to_numpy(zero_copy_only=False))
    raw = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"}).sort_values("sensor_id")
    np.testing.assert_allclose(shapely.get_x(geoms), raw["longitude"], atol=1e-6)
    np.testing.assert_allclose(shapely.get_y(geoms), raw["latitude"], atol=1e-6)
    report = ingest_twice(city, METR_DAY)
    assert counts(report) == counts(base_report)


def test_registry_losing_a_share_below_the_limit_is_kept(tmp_path, metr_baseline):
    raw = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"})
    raw.loc[:9, "longitude"] = 500.0  # 10 of 207 out of bounds: under the default 50 %
    path = tmp_path / "reg.csv"
    raw.to_csv(path, index=False)
    city = metr_city(tmp_path / "raw", metr_baseline[0], registry=path)
    info = ingest_registry(city, city.feeds[0])
    assert info["by_reason"] == {"out_of_bounds": 10}
    strict = metr_city(tmp_path / "raw2", metr_baseline[0], registry=path, registry_max_rejected_share=0.01)
    with pytest.raises(IngestError, match=r"rejects 10 of 207"):
        ingest_registry(strict, strict.feeds[0])


# ------------------------------------------------------------------------- totals across partitions


def test_pipeline_totals_reconcile_with_undated_rows_and_registry_rejections(tmp_path):
    lines = metr_lines()
    ids = lines[0].split(",")
    rows = []
    for i, line in enumerate(lines[1:25], start=0):
        local = (pd.Timestamp(f"{METR_DAY}T00:00") + pd.Timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%S")
        for sid, value in zip(ids[:4], line.split(",")[:4], strict=True):
            rows.append(f"{sid},{local},300,{value}")
    rows[5] = rows[5].split(",")[0] + ",,300,55.0"  # no timestamp: undated
    rows[9] = rows[9].rsplit(",", 1)[0] + ",N/A"
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "obs.csv").write_text("source_id,timestamp,interval_s,speed_kmh\n" + "\n".join(rows) + "\n")
    reg = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"}).rename(
        columns={"sensor_id": "source_id", "longitude": "lon", "latitude": "lat"}
    )
    reg.loc[10, "lat"] = None
    reg.to_csv(folder / "reg.csv", index=False)
    feed = {
        "name": "f",
        "kind": "sensor",
        "adapter": "canonical",
        "observations": str(folder / "obs.csv"),
        "registry": str(folder / "reg.csv"),
        "channels": ["speed_kmh"],
    }
    city = city_config(
        folder,
        feed,
        name="la_long",
        timezone="America/Los_Angeles",
        epsg=26945,
        bbox=[-119, 33, -117, 35],
        time_bin="5min",
    )
    out = pipeline.ingest(city, METR_DAY, METR_DAY)["feeds"]["f"]
    assert out["rows_read"] == len(rows) == out["rows_accepted"] + out["rows_quarantined"]
    assert out["registry_rejected"] == 1 and out["registry_rejected_by_reason"] == {"missing_geometry": 1}
    undated = lake.read_json(lake.partition("quality", city=city.name, feed="f", date=UNDATED) / "report.json")
    day = lake.read_json(lake.partition("quality", city=city.name, feed="f", date=METR_DAY) / "report.json")
    assert counts(undated) == {"missing_timestamp": 1} and counts(day) == {"marked_missing": 1}
    assert out["rows_quarantined"] == 2 and out["partitions"] == 2
    q = quarantined(city, METR_DAY)
    assert json.loads(q["row"].iloc[0])["speed_kmh"] == "N/A"


def test_canonical_csv_cell_and_field_count_faults(tmp_path):
    lines = metr_lines()
    ids = lines[0].split(",")
    rows = []
    for i, line in enumerate(lines[1:13]):
        local = (pd.Timestamp(f"{METR_DAY}T00:00") + pd.Timedelta(minutes=5 * i)).strftime("%Y-%m-%dT%H:%M:%S")
        rows += [f"{sid},{local},300,{v}" for sid, v in zip(ids[:3], line.split(",")[:3], strict=True)]
    clean = "source_id,timestamp,interval_s,speed_kmh\n" + "\n".join(rows) + "\n"
    bad_rows = rows.copy()
    bad_rows[4] = bad_rows[4].rsplit(",", 1)[0] + ",fast"
    bad_rows[7] = bad_rows[7] + ",extra"
    folder = tmp_path / "raw"
    folder.mkdir()

    def run(text: str) -> tuple[dict, pd.DataFrame]:
        (folder / "obs.csv").write_text(text)
        reg = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"}).rename(
            columns={"sensor_id": "source_id", "longitude": "lon", "latitude": "lat"}
        )
        reg.to_csv(folder / "reg.csv", index=False)
        feed = {
            "name": "f",
            "kind": "sensor",
            "adapter": "canonical",
            "observations": str(folder / "obs.csv"),
            "registry": str(folder / "reg.csv"),
            "channels": ["speed_kmh"],
        }
        city = city_config(
            folder,
            feed,
            name="la_long",
            timezone="America/Los_Angeles",
            epsg=26945,
            bbox=[-119, 33, -117, 35],
            time_bin="5min",
        )
        return ingest_twice(city, METR_DAY), accepted(city, METR_DAY)

    base_report, base = run(clean)
    report, got = run("source_id,timestamp,interval_s,speed_kmh\n" + "\n".join(bad_rows) + "\n")
    assert counts(report) == plus(counts(base_report), unparseable_value=1, wrong_field_count=1)

    def key(text: str) -> tuple[str, pd.Timestamp]:
        sid, local = text.split(",")[:2]
        return sid, pd.Timestamp(local).tz_localize("America/Los_Angeles").tz_convert("UTC")

    pd.testing.assert_frame_equal(got, without(base, {key(rows[4]), key(rows[7])}))


# ------------------------------------------------------------------------- kill -9

CHILD = """
import pickle, sys
from traffic.ingest import ingest_range, ingest_registry
city = pickle.loads(bytes.fromhex(sys.argv[1]))
print("ready", flush=True)
while True:
    ingest_registry(city, city.feeds[0])
    ingest_range(city, city.feeds[0], sys.argv[2], sys.argv[3])
"""


@pytest.mark.slow
def test_kill_9_mid_ingest_then_rerun_leaves_no_temporaries_and_the_same_lake(tmp_path, monkeypatch):
    import pickle

    raw = pd.read_parquet(TELRAAM)
    days = sorted(raw["date_local"].dt.strftime("%Y-%m-%d").unique())[:20]
    city = telraam_city(tmp_path / "raw", raw[raw["date_local"].dt.strftime("%Y-%m-%d") <= days[-1]])
    feed = city.feeds[0]

    monkeypatch.setenv("TRAFFIC_HOME", str(tmp_path / "clean_home"))
    ingest_registry(city, feed)
    ingest_range(city, feed, days[0], days[-1])
    clean = lake_files()

    monkeypatch.setenv("TRAFFIC_HOME", str(tmp_path / "killed_home"))
    rng = np.random.default_rng(9)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), pickle.dumps(city).hex(), days[0], days[-1]],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(1.0, 3.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # one more leftover, as a killed writer leaves it: named after a process that is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = Path(str(lake.partition("observations", city=city.name, feed=feed.name, date=days[3])))
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / f".part.parquet.{tempfiles._HOST}.{dead.pid}.{'0' * 16}.tmp"
    stale.write_bytes(b"half a parquet file")

    ingest_registry(city, feed)
    ingest_range(city, feed, days[0], days[-1])
    root = Path(str(lake.lake_root()))
    assert list(root.rglob(".*.tmp")) == [], "temporary files survived the re-run"
    assert lake_files() == clean  # identical to a run that was never killed
