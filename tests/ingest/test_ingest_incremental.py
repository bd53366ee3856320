"""Ingest only what is new: unchanged delivered bytes are not read again, unchanged days not written again."""

from __future__ import annotations

import dataclasses
import logging
import os

import pandas as pd
import pytest

from tests.ingest.helpers import canonical_city
from traffic import lake
from traffic.ingest import ingest_range, ingest_registry


def _day(date: str, speed: float) -> pd.DataFrame:
    return pd.DataFrame(
        [("a", f"{date}T10:00:00", 300, speed), ("b", f"{date}T11:00:00", 300, 40.0)],
        columns=["source_id", "timestamp", "interval_s", "speed_kmh"],
    )


@pytest.fixture
def landing(tmp_path, points_registry):
    """A city whose feed reads a landing folder holding one file per day (2024-06-01 only, so far)."""
    city = canonical_city(tmp_path / "raw", _day("2024-06-01", 50.0), points_registry)
    folder = tmp_path / "raw" / "landing"
    folder.mkdir()
    (tmp_path / "raw" / "obs.csv").rename(folder / "d1.csv")
    feed = dataclasses.replace(city.feeds[0], observations=str(folder))
    return dataclasses.replace(city, feeds=(feed,)), folder


def _stamps() -> dict[str, int]:
    root = lake.lake_root()
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.parquet") if "registry" not in str(p)}


def _ingest(city, start, end, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="traffic.ingest.run"):
        ingest_registry(city, city.feeds[0])
        reports = ingest_range(city, city.feeds[0], start, end)
    said = [r.getMessage() for r in caplog.records if "already in the lake" in r.getMessage()]
    return reports, said


def test_same_bytes_are_not_read_again_even_when_touched(landing, caplog, monkeypatch):
    city, folder = landing
    first, said = _ingest(city, "2024-06-01", "2024-06-01", caplog)
    assert said == ["tinytown/f: 0 day(s) already in the lake, 1 new"] and not first[0]["unchanged"]
    before = _stamps()
    os.utime(folder / "d1.csv", (1e9, 1e9))  # a new modification time, the same bytes

    def unread(feed):
        raise AssertionError("the delivery was read again")

    monkeypatch.setattr("traffic.ingest.run.read_delivery", unread)
    again, said = _ingest(city, "2024-06-01", "2024-06-01", caplog)
    assert said == ["tinytown/f: 1 day(s) already in the lake, 0 new"]
    assert again[0]["unchanged"] and again[0]["rows_accepted"] == first[0]["rows_accepted"] == 2
    assert again[0]["observations_path"] == first[0]["observations_path"]
    assert _stamps() == before  # nothing rewritten


def test_a_new_day_is_written_alone_and_a_redelivered_day_whole(landing, caplog):
    city, folder = landing
    _ingest(city, "2024-06-01", "2024-06-01", caplog)
    one = _stamps()
    _day("2024-06-02", 44.0).to_csv(folder / "d2.csv", index=False)  # the next day's file arrives
    reports, said = _ingest(city, "2024-06-01", "2024-06-02", caplog)
    assert said == ["tinytown/f: 1 day(s) already in the lake, 1 new"]
    assert [r["unchanged"] for r in reports] == [True, False]
    two = _stamps()
    assert {k: v for k, v in two.items() if "2024-06-01" in k} == one  # day 1 not rewritten
    # day 1 re-delivered with other bytes (same name): rewritten whole; day 2 stays
    _day("2024-06-01", 61.0).to_csv(folder / "d1.csv", index=False)
    reports, said = _ingest(city, "2024-06-01", "2024-06-02", caplog)
    assert said == ["tinytown/f: 1 day(s) already in the lake, 1 new"]
    assert [r["unchanged"] for r in reports] == [False, True]
    speeds = lake.read_partition("observations", city="tinytown", feed="f", date="2024-06-01").column("speed_kmh")
    assert 61.0 in speeds.to_pylist()
    three = _stamps()
    assert {k: v for k, v in three.items() if "2024-06-02" in k} == {k: v for k, v in two.items() if "2024-06-02" in k}
    # and then nothing is new: the fast path again
    _, said = _ingest(city, "2024-06-01", "2024-06-02", caplog)
    assert said == ["tinytown/f: 2 day(s) already in the lake, 0 new"] and _stamps() == three
