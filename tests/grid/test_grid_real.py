"""Real shipped data: the sensors and segments land on the configured city grids."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import shapely

from traffic.config import PROJECT_ROOT
from traffic.grid.assign import assign_sources, assignments_for
from traffic.grid.cells import build_grid, grid_spec, write_grid
from traffic.grid.loader import load_tensor
from traffic.grid.rasterize import rasterize_partition

LA = PROJECT_ROOT / "data/samples/la_metr"
BERLIN = PROJECT_ROOT / "data/samples/berlin_telraam"


def _la_registry() -> gpd.GeoDataFrame:
    s = pd.read_csv(LA / "graph_sensor_locations.csv", dtype={"sensor_id": str})
    return gpd.GeoDataFrame(
        {"source_id": s["sensor_id"]}, geometry=gpd.points_from_xy(s["longitude"], s["latitude"]), crs=4326
    )


def _berlin_registry() -> gpd.GeoDataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyogrio: nested JSON properties left as strings
        g = gpd.read_file(BERLIN / "bzm_telraam_segments.geojson", columns=["segment_id"])
    return gpd.GeoDataFrame({"source_id": g["segment_id"].astype(str)}, geometry=g.geometry, crs=g.crs)


def test_every_la_sensor_lands_in_the_la_grid(los_angeles):
    reg = _la_registry()
    grid = build_grid(los_angeles)
    a, rej = assign_sources(reg, grid, los_angeles)
    assert rej.empty
    assert len(reg) == 207 and sorted(a["source_id"]) == sorted(reg["source_id"])
    assert (a["weight"] == 1.0).all()
    # each sensor is inside (or on the edge of) the cell it was given
    pts = reg.to_crs(los_angeles.crs_epsg).set_index("source_id").geometry
    cells = grid.set_index("cell_id").geometry
    assert shapely.intersects(cells.loc[a["cell_id"]].to_numpy(), pts.loc[a["source_id"]].to_numpy()).all()


def test_berlin_segments_with_counts_land_in_the_berlin_grid(berlin, record_property):
    reg = _berlin_registry()
    counted = set(
        pq.read_table(BERLIN / "observations" / "traffic_df_2024_10-2024_12.parquet", columns=["segment_id"])
        .column("segment_id")
        .to_pandas()
        .astype(str)
        .unique()
    )
    grid = build_grid(berlin)
    a, rej = assign_sources(reg, grid, berlin)
    assert len(reg) == 255 and len(counted) == 128 and counted <= set(reg["source_id"])
    assert set(a["source_id"]) | set(rej["source_id"]) == set(reg["source_id"])
    assert set(rej["reason"]) <= {"outside_grid"}
    sums = a.groupby("source_id")["weight"].sum()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
    # independent check: rejected exactly the segments that miss the grid's extent
    extent = shapely.box(*grid_spec(berlin).bounds)
    projected = reg.to_crs(berlin.crs_epsg).set_index("source_id").geometry
    missing = set(projected.index[~projected.intersects(extent)])
    assert set(rej["source_id"]) == missing
    outside_bbox = int((~reg.intersects(shapely.box(*berlin.bbox))).sum())
    counted_out = sorted(counted & missing)
    record_property("berlin_segments_outside_grid", len(missing))
    record_property("berlin_segments_outside_lonlat_bbox", outside_bbox)
    record_property("berlin_counted_segments_outside_grid", len(counted_out))
    print(
        f"Berlin: {len(missing)}/255 segments outside the grid ({outside_bbox} outside the lon/lat bbox); "
        f"{len(counted_out)}/128 with counts outside: {counted_out}"
    )
    # most counted segments are in the city: the grid must not silently lose the feed
    assert len(counted - missing) > len(counted) / 2


def test_la_first_day_through_lake_raster_and_loader(los_angeles, write_registry, write_observations):
    """METR-LA's first local day: observations -> raster -> tensor, checked against pandas."""
    reg = _la_registry()
    write_registry(los_angeles, "metr", dict(zip(reg["source_id"], reg.geometry, strict=True)), version="la")
    wide = pd.read_csv(LA / "observations" / "los_speed.csv", nrows=288)  # 2012-03-01 local, every 5 min
    times = pd.date_range("2012-03-01", periods=len(wide), freq="5min", tz="America/Los_Angeles").tz_convert("UTC")
    long = pd.DataFrame(
        {
            "source_id": np.repeat(wide.columns.astype(str), len(wide)),
            "timestamp": np.tile(times.as_unit("us"), wide.shape[1]),
            "mph": wide.to_numpy(dtype=float).T.ravel(),
        }
    )
    # METR-LA writes 0 mph for "no reading" (as the adapter treats it)
    long["speed_kmh"] = long["mph"].where(long["mph"] > 0) * 1.609344
    write_observations(los_angeles, "metr", "2012-03-01", "sensor", long[["source_id", "timestamp", "speed_kmh"]])
    write_grid(los_angeles)
    out = rasterize_partition(los_angeles, "2012-03-01", assignments_for(los_angeles))
    g = load_tensor(los_angeles, "2012-03-01", "2012-03-01")
    assert g.shape[0] == 96 and g.channels == ("metr.speed_kmh",)
    assert out["bins"] == 96 and out["observations"] == 288 * 207
    # pandas: mean of every sensor's 5-min speeds per cell and 15-min bin
    a, _ = assign_sources(reg, build_grid(los_angeles), los_angeles)
    ref = long.dropna(subset=["speed_kmh"]).merge(a, on="source_id")
    ref["t"] = ((ref["timestamp"] - g.times[0]) // pd.Timedelta("15min")).astype(int)
    ref = ref.groupby(["t", "cell_id"])["speed_kmh"].agg(["mean", "size"]).reset_index()
    w = g.shape[3]
    rows, cols = np.divmod(ref["cell_id"].to_numpy(), w)
    np.testing.assert_allclose(g.values[ref["t"], 0, rows, cols], ref["mean"], rtol=1e-5)
    np.testing.assert_array_equal(g.coverage[ref["t"], 0, rows, cols], ref["size"])
    assert g.mask.sum() == len(ref) and out["cells"] == ref["cell_id"].nunique()
    assert 20 < np.nanmedian(g.values) < 130  # km/h on LA freeways
