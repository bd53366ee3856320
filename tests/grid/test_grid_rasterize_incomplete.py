"""Rasterize over a half-ingested lake: refused, nothing written, the good rasters stay as they were."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.ingest.helpers import canonical_city
from traffic import lake, pipeline
from traffic.grid import IncompleteIngestError

DAYS = ["2024-06-01", "2024-06-02", "2024-06-03", "2024-06-04"]


@pytest.fixture
def town(tmp_path):
    """Four local days (Berlin) of two sensors every 15 min, ingested and rasterized in full."""
    times = pd.date_range(f"{DAYS[0]} 00:00", f"{DAYS[-1]} 23:45", freq="15min")
    obs = pd.DataFrame(
        {
            "source_id": ["a"] * len(times) + ["b"] * len(times),
            "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%S") for t in times] * 2,
            "interval_s": 900,
            "speed_kmh": [30.0 + (i % 7) for i in range(2 * len(times))],
        }
    )
    registry = pd.DataFrame({"source_id": ["a", "b"], "lon": [13.40, 13.41], "lat": [52.50, 52.51]})
    city = canonical_city(tmp_path / "raw", obs, registry)
    pipeline.ingest(city, DAYS[0], DAYS[-1])
    pipeline.rasterize(city, DAYS[0], DAYS[-1])
    return city


def _paths(city, date):
    keys = {"city": city.name, "feed": "f", "date": date}
    return (
        lake.partition("observations", **keys) / "part.parquet",
        lake.partition("quality", **keys) / "report.json",
        lake.partition("raster", city=city.name, date=date) / "part.parquet",
    )


def _rasters(city) -> dict[str, bytes]:
    return {d: _paths(city, d)[2].read_bytes() for d in DAYS}


def test_a_half_ingested_lake_is_refused_and_good_rasters_survive(town):
    good = _rasters(town)
    assert all(pq.read_metadata(_paths(town, d)[2]).num_rows > 0 for d in DAYS)
    # what an ingest killed part-way leaves: day 2 re-written but not its report (a shorter
    # file next to the old report), day 3 never reached (lake re-created), day 4 without report
    obs2, _, _ = _paths(town, DAYS[1])
    table = pq.read_table(obs2)
    lake.write_table(table.slice(0, table.num_rows // 2), obs2)
    _paths(town, DAYS[2])[0].unlink()
    _paths(town, DAYS[3])[1].unlink()

    with pytest.raises(IncompleteIngestError) as err:
        pipeline.rasterize(town, DAYS[0], DAYS[-1])
    msg = str(err.value)
    assert "3 of 4 day(s) are not ingested whole, nothing rasterized" in msg
    assert f"{DAYS[1]}: feed f: {obs2} holds {table.num_rows // 2} rows but" in msg
    assert f"{DAYS[2]}: feed f: no observations partition" in msg and "not ingested" in msg
    assert f"{DAYS[3]}: feed f: no quality report" in msg
    assert f"traffic ingest {town.name} --start {DAYS[1]} --end {DAYS[3]}" in msg
    assert _rasters(town) == good  # not one byte of a good raster changed

    # one day alone is refused too; the complete day still rasterizes
    with pytest.raises(IncompleteIngestError, match=DAYS[2]):
        pipeline.rasterize(town, DAYS[2], DAYS[2])
    pipeline.rasterize(town, DAYS[0], DAYS[0])
    assert _rasters(town) == good

    # the ingest completed: everything rasterizes again, byte-identical to before
    pipeline.ingest(town, DAYS[0], DAYS[-1])
    pipeline.rasterize(town, DAYS[0], DAYS[-1])
    assert _rasters(town) == good


def test_observations_and_report_of_different_ingests_are_refused(town):
    """A partial re-ingest killed between its first report and the data: the report says partial, the data not."""
    _, report, _ = _paths(town, DAYS[3])
    rep = lake.read_json(report)
    lake.write_json({**rep, "until": "2024-06-04T10:00:00+00:00", "partial": True}, report)
    with pytest.raises(IncompleteIngestError, match="ingested until"):
        pipeline.rasterize(town, DAYS[3], DAYS[3])
