"""Deliveries that go on (issue 18, part 4): landing folders, new days, re-delivered days, days not delivered."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import pandas as pd
import pytest

from tests.ingest.test_faults import SEGMENTS, TELRAAM
from tests.test_cli_errors import one_line, run_cli
from traffic import lake
from traffic.config import PROJECT_ROOT, parse_city
from traffic.ingest import IngestError, ingest_range, ingest_registry
from traffic.lake import Lake
from traffic.pipeline import check_quality

LA_FILE = PROJECT_ROOT / "data/samples/la_metr/observations/los_speed.csv"


def lake_files(root=None) -> dict[str, bytes]:
    root = root if root is not None else lake.lake_root()
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.fixture(scope="module")
def telraam_raw() -> pd.DataFrame:
    return pd.read_parquet(TELRAAM)


def telraam_rows(raw: pd.DataFrame, day: str) -> pd.DataFrame:
    return raw[raw["date_local"].dt.strftime("%Y-%m-%d") == day].reset_index(drop=True)


def telraam_folder_city(folder):
    """Berlin's settings, its feed reading ``folder`` (a landing folder of Telraam Parquet files)."""
    feed = {
        "name": "telraam",
        "kind": "camera",
        "adapter": "telraam",
        "observations": str(folder),
        "registry": str(SEGMENTS),
        "channels": ["car", "heavy", "bike", "pedestrian", "speed_kmh"],
    }
    raw = {
        "name": "berlin",
        "timezone": "Europe/Berlin",
        "crs_epsg": 25833,
        "bbox": [13.02, 52.24, 13.78, 52.76],
        "cell_size_m": 1000,
        "time_bin": "1h",
        "feeds": [feed],
    }
    return parse_city(raw, source="berlin.toml")


# ------------------------------------------------------------------ the shipped cities read a folder


@pytest.mark.parametrize(
    ("name", "file", "days"),
    [("berlin", TELRAAM, ("2024-10-27", "2024-10-28")), ("los_angeles", LA_FILE, ("2012-03-06", "2012-03-07"))],
)
def test_the_shipped_folder_config_ingests_the_same_rows_as_the_single_file(request, tmp_path, name, file, days):
    city = request.getfixturevalue(name)
    feed = city.feeds[0]
    assert feed.observations.endswith("/observations/") and feed.path("observations") == str(file.parent)
    by_folder = ingest_range(city, feed, *days)
    single = dataclasses.replace(feed, observations=str(file))  # as the city files were written before
    other = Lake(tmp_path / "single_file_lake")
    ingest_registry(city, single, lake=other)
    by_file = ingest_range(city, single, *days, lake=other)
    drop = ("observations_path", "quarantine_path", "report_path")
    assert [{k: v for k, v in r.items() if k not in drop} for r in by_folder] == [
        {k: v for k, v in r.items() if k not in drop} for r in by_file
    ]
    assert sum(r["rows_accepted"] for r in by_folder) > 0
    assert lake_files() == lake_files(other.root)  # byte-identical partitions and reports


def test_a_timestamp_less_feed_refuses_a_second_file(tmp_path, los_angeles):
    folder = tmp_path / "metr"
    shutil.copytree(LA_FILE.parent, folder)
    shutil.copy(LA_FILE, folder / "los_speed_2.csv")
    feed = dataclasses.replace(los_angeles.feeds[0], observations=str(folder))
    with pytest.raises(IngestError, match=r"feed 'metr' \(adapter 'metr_la'\) reads one file, found 2: "):
        ingest_range(los_angeles, feed, "2012-03-01", "2012-03-01")
    assert lake_files() == {}


# ------------------------------------------------------------------ a new day's file


def test_a_new_days_file_dropped_into_the_landing_folder_is_read_by_the_next_ingest(tmp_path, telraam_raw):
    folder = tmp_path / "landing"
    shutil.copytree(TELRAAM.parent, folder)  # a copy of Berlin's landing folder
    city = telraam_folder_city(folder)
    feed = city.feeds[0]
    with pytest.raises(IngestError, match=r"nothing delivered for 2025-01-01 \(the dates asked\)"):
        ingest_range(city, feed, "2025-01-01", "2025-01-01")
    new = telraam_rows(telraam_raw, "2024-12-31")
    new["date_local"] = new["date_local"] + pd.Timedelta(days=1)  # the next day's delivery arrives
    new.to_parquet(folder / "traffic_df_2025-01-01.parquet", index=False)
    [day] = ingest_range(city, feed, "2025-01-01", "2025-01-01")
    assert day["rows_read"] == len(new) and day["rows_accepted"] > 0 and not day["nothing_delivered"]
    assert day["superseded"] is None  # a new day: nothing of an older file replaced


# ------------------------------------------------------------------ a re-delivered day


def test_a_redelivered_day_replaces_the_old_one_whole(tmp_path, telraam_raw, caplog):
    folder = tmp_path / "landing"
    folder.mkdir()
    day = "2024-10-09"
    old = telraam_rows(telraam_raw, day)
    old.to_parquet(folder / f"telraam_{day}.parquet", index=False)
    telraam_rows(telraam_raw, "2024-10-10").to_parquet(folder / "telraam_2024-10-10.parquet", index=False)
    city = telraam_folder_city(folder)
    feed = city.feeds[0]
    first, _ = ingest_range(city, feed, day, "2024-10-10")
    assert first["rows_read"] == len(old)
    # re-delivered later (a later name): other counts, and one segment's rows withdrawn
    gone = old["segment_id"].iloc[0]
    new = old[old["segment_id"] != gone].copy()
    new["car_total"] = new["car_total"] + 1
    new.to_parquet(folder / f"telraam_{day}_redelivered.parquet", index=False)
    with caplog.at_level(logging.WARNING, logger="traffic.ingest.run"):
        again, other = ingest_range(city, feed, day, "2024-10-10")
    assert again["rows_read"] == len(new) and again["rows_quarantined"] == first["rows_quarantined"] == 0
    assert again["superseded"] == {
        "rows": len(old),
        "files": [f"telraam_{day}.parquet"],
        "by": [f"telraam_{day}_redelivered.parquet"],
    }
    assert not again["unchanged"] and other["unchanged"]  # the other day is not rewritten
    assert any(f"{day} re-delivered by" in r.getMessage() for r in caplog.records)
    obs = lake.read_partition("observations", city="berlin", feed="telraam", date=day).to_pandas()
    assert str(gone) not in set(obs["source_id"])  # nothing of the old delivery is left: not half applied
    up = new["uptime"].to_numpy()
    got = obs.set_index(["source_id", "timestamp"])["car"].sort_index().to_numpy()
    assert len(obs) == len(new) and got.sum() == pytest.approx(((new["car_total"]) * up).sum())
    before = lake_files()
    assert [r["unchanged"] for r in ingest_range(city, feed, day, "2024-10-10")] == [True, True]  # idempotent
    assert lake_files() == before


def test_files_that_each_hold_part_of_a_day_are_both_read(tmp_path, telraam_raw):
    folder = tmp_path / "landing"
    folder.mkdir()
    day = "2024-10-09"
    rows = telraam_rows(telraam_raw, day)
    morning = rows["date_local"].dt.hour < 12
    rows[morning].to_parquet(folder / f"telraam_{day}_am.parquet", index=False)
    rows[~morning].to_parquet(folder / f"telraam_{day}_pm.parquet", index=False)
    city = telraam_folder_city(folder)
    [r] = ingest_range(city, city.feeds[0], day, day)
    assert r["rows_read"] == len(rows) and r["superseded"] is None


# ------------------------------------------------------------------ days no delivery holds


def test_a_range_no_delivery_holds_exits_2_with_one_line_and_writes_nothing(capsys, berlin):
    feed = berlin.feeds[0]
    ingest_range(berlin, feed, "2024-12-31", "2024-12-31")
    before = lake_files()
    code, _, err = run_cli(capsys, "ingest", "berlin", "--start", "2025-01-01", "--end", "2025-01-02")
    assert code == 2
    line = one_line(err)
    assert line == (
        f"traffic ingest: {feed.path('observations')}: feed 'telraam' of berlin: nothing delivered for "
        "2025-01-01 .. 2025-01-02 (the dates asked): the delivery holds local dates 2024-10-01 .. 2024-12-31; "
        "ingest dates in that range, or add the new days' files to the feed's landing folder "
        "(docs/landing.md, 'Deliveries day after day')"
    )
    assert lake_files() == before  # byte-identical lake


def test_a_range_no_delivery_holds_writes_no_registry_either(capsys, berlin):
    with pytest.raises(IngestError, match="nothing delivered"):
        ingest_range(berlin, berlin.feeds[0], "2025-01-01", "2025-01-01")
    assert lake_files() == {}
    # the ingest stage (`traffic ingest`, the DAG task) on an empty lake: nothing written either, registry included
    code, _, err = run_cli(capsys, "ingest", "berlin", "--start", "2025-01-01", "--end", "2025-01-02")
    assert code == 2 and "nothing delivered" in one_line(err)
    assert lake_files() == {}


def test_a_partly_delivered_range_reports_the_days_nothing_delivered_to_the_freshness_gate(capsys, caplog, berlin):
    with caplog.at_level(logging.WARNING, logger="traffic.ingest.run"):
        code, out, err = run_cli(capsys, "ingest", "berlin", "--start", "2024-12-31", "--end", "2025-01-01")
    assert code == 0, err
    [warning] = [r.getMessage() for r in caplog.records if "nothing delivered" in r.getMessage()]
    assert warning.startswith("berlin/telraam: nothing delivered for 2025-01-01 (asked 2024-12-31 .. 2025-01-01;")
    lk = Lake.from_config()
    delivered, missing = (
        lk.read_json(lk.partition("quality", city="berlin", feed="telraam", date=d) / "report.json")
        for d in ("2024-12-31", "2025-01-01")
    )
    assert delivered["rows_accepted"] > 0 and not delivered["nothing_delivered"]
    assert missing["nothing_delivered"] and missing["rows_read"] == 0
    with pytest.raises(Exception, match=r"feed telraam: nothing delivered for 2025-01-01 \(stale data") as info:
        check_quality(berlin, "2025-01-01")
    assert "newest delivered day 2024-12-31" in str(info.value)
