"""Partial current days: ingest and rasterize up to ``until``, replacement, and the freshness gate."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.ingest.helpers import canonical_city
from traffic import lake, pipeline
from traffic.config import ForecastConfig
from traffic.grid import newest_observed_bin
from traffic.intraday import parse_until
from traffic.lake import Lake


@pytest.fixture
def town(tmp_path, points_registry):
    """Two local days (Berlin) of two sensors reporting every 15 min, 1-h bins; a 2-day window."""
    times = pd.date_range("2024-06-01 00:00", "2024-06-02 23:45", freq="15min")
    obs = pd.DataFrame(
        {
            "source_id": ["a"] * len(times) + ["b"] * len(times),
            "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%S") for t in times] * 2,
            "interval_s": 900,
            "speed_kmh": 40.0,
        }
    )
    city = canonical_city(tmp_path / "raw", obs, points_registry)
    return dataclasses.replace(city, forecast=ForecastConfig(train_days=1, holdout_days=1))


def report(city, date):
    return lake.read_json(lake.partition("quality", city=city.name, feed="f", date=date) / "report.json")


def observations(city, date):
    with (lake.partition("observations", city=city.name, feed="f", date=date) / "part.parquet").open("rb") as fh:
        return pq.read_table(fh)


def raster(city, date):
    with (lake.partition("raster", city=city.name, date=date) / "part.parquet").open("rb") as fh:
        return pq.read_table(fh)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_parse_until_forms():
    assert parse_until("2024-06-02 08:30", "Europe/Berlin") == utc("2024-06-02 06:30")
    assert parse_until("2024-06-02T08:30:00", "Europe/Berlin") == utc("2024-06-02 06:30")
    assert parse_until("2024-06-02T06:30Z", "Europe/Berlin") == utc("2024-06-02 06:30")
    assert parse_until("2024-06-02T08:30+02:00", "America/Los_Angeles") == utc("2024-06-02 06:30")
    assert parse_until("2024-03-31 02:30", "Europe/Berlin") == utc("2024-03-31 01:00")  # skipped hour: moved on
    for bad in ("08:30", "2024-06-02", "2024-13-02 08:30", "tomorrow"):
        with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM|not a valid date"):
            parse_until(bad, "Europe/Berlin")


def test_partial_day_is_cut_marked_and_replaced(town):
    pipeline.ingest(town, "2024-06-01", "2024-06-01")
    pipeline.rasterize(town, "2024-06-01", "2024-06-01")
    out = pipeline.ingest(town, "2024-06-02", "2024-06-02", until="2024-06-02 08:30")
    assert out["feeds"]["f"]["partial"] == ["2024-06-02"]
    rep = report(town, "2024-06-02")
    assert rep["partial"] is True and rep["until"] == "2024-06-02T06:30:00+00:00"
    # rows up to 08:15 local (06:15 UTC): 34 quarter-hours from midnight, two sensors
    assert rep["rows_read"] == rep["rows_accepted"] == 68
    obs = observations(town, "2024-06-02")
    assert obs.num_rows == 68 and max(obs.column("timestamp").to_pylist()) == utc("2024-06-02 06:15")
    assert obs.schema.metadata[b"until"] == b"2024-06-02T06:30:00+00:00"
    assert report(town, "2024-06-01")["partial"] is False  # the other day is untouched

    # rasterize keeps the bins that had ended by until: 00:00..07:00 local; 08:00-09:00 is still filling
    ras = pipeline.rasterize(town, "2024-06-02", "2024-06-02")
    assert ras["partial"] == {"2024-06-02": "2024-06-02T06:30:00+00:00"}
    bins = sorted(set(raster(town, "2024-06-02").column("bin_start").to_pylist()))
    assert bins == list(pd.date_range(utc("2024-06-01 22:00"), utc("2024-06-02 05:00"), freq="1h"))
    assert raster(town, "2024-06-02").schema.metadata[b"until"] == b"2024-06-02T06:30:00+00:00"
    assert newest_observed_bin(town) == utc("2024-06-02 05:00")
    assert newest_observed_bin(town, until="2024-06-02 05:00") == utc("2024-06-02 02:00")
    assert newest_observed_bin(town, until="2024-06-02 00:30") == utc("2024-06-01 21:00")  # the day before

    # more rows arrive: the day is replaced whole
    pipeline.ingest(town, "2024-06-02", "2024-06-02", until="2024-06-02 10:00")
    pipeline.rasterize(town, "2024-06-02", "2024-06-02")
    assert report(town, "2024-06-02")["rows_accepted"] == 80
    assert newest_observed_bin(town) == utc("2024-06-02 07:00")
    # an explicit until earlier than the observations' cuts the raster further
    pipeline.rasterize(town, "2024-06-02", "2024-06-02", until="2024-06-02 09:59")
    assert newest_observed_bin(town) == utc("2024-06-02 06:00")

    # the full day: no longer partial anywhere
    pipeline.ingest(town, "2024-06-02", "2024-06-02")
    pipeline.rasterize(town, "2024-06-02", "2024-06-02")
    rep = report(town, "2024-06-02")
    assert rep["partial"] is False and rep["until"] is None and rep["rows_accepted"] == 192
    assert b"until" not in observations(town, "2024-06-02").schema.metadata
    assert b"until" not in raster(town, "2024-06-02").schema.metadata
    assert newest_observed_bin(town) == utc("2024-06-02 21:00")


def test_until_at_or_after_midnight_after_the_day_is_a_complete_day(town):
    pipeline.ingest(town, "2024-06-01", "2024-06-01", until="2024-06-02 00:00")
    assert report(town, "2024-06-01")["partial"] is False and report(town, "2024-06-01")["rows_accepted"] == 192
    with pytest.raises(ValueError, match="2024-06-02 begins at or after until"):
        pipeline.ingest(town, "2024-06-02", "2024-06-02", until="2024-06-01 23:00")
    with pytest.raises(ValueError, match="begins at or after until"):
        pipeline.rasterize(town, "2024-06-01", "2024-06-02", until="2024-06-01 23:00")


def test_freshness_gate_refuses_a_partial_day(town):
    pipeline.ingest(town, "2024-06-01", "2024-06-02")
    pipeline.rasterize(town, "2024-06-01", "2024-06-02")
    assert pipeline.check_quality(town, "2024-06-02")["feeds"]["f"]["rows_accepted"] == 384

    pipeline.ingest(town, "2024-06-02", "2024-06-02", until="2024-06-02 08:30")
    pipeline.rasterize(town, "2024-06-02", "2024-06-02")
    with pytest.raises(pipeline.QualityError, match=r"feed f: partial day\(s\) \{'2024-06-02'"):
        pipeline.check_quality(town, "2024-06-02")

    # complete observations but a raster still cut (e.g. rasterized with until): refused as well
    pipeline.ingest(town, "2024-06-02", "2024-06-02")
    pipeline.rasterize(town, "2024-06-02", "2024-06-02", until="2024-06-02 12:00")
    with pytest.raises(pipeline.QualityError, match="raster partitions of partial day") as err:
        pipeline.check_quality(town, "2024-06-02")
    assert "feed f: partial" not in str(err.value)

    pipeline.rasterize(town, "2024-06-02", "2024-06-02")
    pipeline.check_quality(town, "2024-06-02")


def test_a_crash_between_partition_writes_never_fools_the_gate(town, monkeypatch):
    """The report of a partial day is written before its data, that of a complete day after it."""
    pipeline.ingest(town, "2024-06-01", "2024-06-02")
    pipeline.rasterize(town, "2024-06-01", "2024-06-02")
    real_partition, real_json = Lake.write_partition, Lake.write_json

    def crash_on_observations(self, table, dataset, **kw):
        if dataset == "observations":
            raise OSError("killed")
        return real_partition(self, table, dataset, **kw)

    # complete -> partial, killed before the data: the report already says partial
    monkeypatch.setattr(Lake, "write_partition", crash_on_observations)
    with pytest.raises(OSError, match="killed"):
        pipeline.ingest(town, "2024-06-02", "2024-06-02", until="2024-06-02 08:30")
    monkeypatch.setattr(Lake, "write_partition", real_partition)
    assert observations(town, "2024-06-02").num_rows == 192  # the old, complete data
    assert report(town, "2024-06-02")["partial"] is True
    with pytest.raises(pipeline.QualityError, match="partial day"):
        pipeline.check_quality(town, "2024-06-02")

    # partial -> complete, killed before the report: the data are complete, the report still says partial
    pipeline.ingest(town, "2024-06-02", "2024-06-02", until="2024-06-02 08:30")

    def crash_on_report(self, obj, target):
        raise OSError("killed")

    monkeypatch.setattr(Lake, "write_json", crash_on_report)
    with pytest.raises(OSError, match="killed"):
        pipeline.ingest(town, "2024-06-02", "2024-06-02")
    monkeypatch.setattr(Lake, "write_json", real_json)
    assert observations(town, "2024-06-02").num_rows == 192
    with pytest.raises(pipeline.QualityError, match="partial day"):
        pipeline.check_quality(town, "2024-06-02")
    # re-running heals it
    pipeline.ingest(town, "2024-06-02", "2024-06-02")
    pipeline.check_quality(town, "2024-06-02")
