"""Fixtures for grid tests: a tiny city, registries and observation writers."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pytest
import shapely

from traffic import lake
from traffic.config import CityConfig, parse_city
from traffic.landing.contract import OBSERVATION_SCHEMAS, REGISTRY_SCHEMA


@pytest.fixture
def tiny_city() -> CityConfig:
    """A ~2 x 2 km city in Berlin (UTM 33N), 15-min bins, a camera and a sensor feed."""
    return parse_city(
        {
            "name": "tiny",
            "timezone": "Europe/Berlin",
            "crs_epsg": 25833,
            "bbox": [13.400, 52.500, 13.430, 52.520],
            "cell_size_m": 1000,
            "time_bin": "15min",
            "feeds": [
                {
                    "name": "cam",
                    "kind": "camera",
                    "adapter": "canonical",
                    "observations": "unused",
                    "registry": "unused",
                    "channels": ["car", "bike"],
                },
                {
                    "name": "loop",
                    "kind": "sensor",
                    "adapter": "canonical",
                    "observations": "unused",
                    "registry": "unused",
                    "channels": ["speed_kmh"],
                },
            ],
        },
        source="tests/grid/tiny",
    )


@pytest.fixture
def write_registry():
    """Write ``{source_id: shapely geometry in EPSG:4326}`` as a registry partition, as ingest writes it.

    GeoParquet by GeoPandas with the columns of REGISTRY_SCHEMA (:func:`traffic.lake.write_geoparquet`).
    """

    def _write(city: CityConfig, feed: str, geoms: dict[str, shapely.Geometry | None], version: str | None = None):
        ids = list(geoms)
        frame = gpd.GeoDataFrame(
            {"source_id": ids, "geometry": list(geoms.values()), "attributes": [json.dumps({}) for _ in ids]},
            geometry="geometry",
            crs="EPSG:4326",
        )
        meta = {"version": version} if version is not None else None
        target = lake.partition("registry", city=city.name, feed=feed) / "registry.parquet"
        return lake.write_geoparquet(frame, target, schema=REGISTRY_SCHEMA, metadata=meta)

    return _write


@pytest.fixture
def write_observations():
    """Write a frame (source_id, timestamp, value columns) as an ingested day of a feed kind.

    As ingest does: the observation partition, then the day's quality report (what rasterize
    checks the partition against); ``report=False`` leaves the report out (an ingest cut short).
    """

    def _write(city: CityConfig, feed: str, date: str, kind: str, frame: pd.DataFrame, *, report: bool = True):
        schema = OBSERVATION_SCHEMAS[kind]
        cols = {}
        for field in schema:
            if field.name in frame.columns:
                cols[field.name] = pa.array(frame[field.name], type=field.type, from_pandas=True)
            else:
                cols[field.name] = pa.nulls(len(frame), field.type)
        path = lake.write_partition(pa.table(cols, schema=schema), "observations", city=city.name, feed=feed, date=date)
        if report:
            counts = {"rows_read": len(frame), "rows_accepted": len(frame), "rows_quarantined": 0}
            lake.write_json(
                {"city": city.name, "feed": feed, "date": date, **counts, "until": None, "partial": False},
                lake.partition("quality", city=city.name, feed=feed, date=date) / "report.json",
            )
        return path

    return _write


@pytest.fixture
def write_empty_days(write_observations):
    """Ingest days without rows for every feed of a city (empty partitions and reports, as ingest writes them)."""

    def _write(city: CityConfig, *dates: str) -> None:
        for date in dates:
            for feed in city.feeds:
                write_observations(
                    city,
                    feed.name,
                    date,
                    feed.kind,
                    pd.DataFrame({"source_id": pd.Series([], dtype=str), "timestamp": pd.DatetimeIndex([], tz="UTC")}),
                )

    return _write
