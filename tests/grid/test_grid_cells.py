from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Transformer

from traffic import lake
from traffic.grid.cells import GridMismatchError, build_grid, grid_path, grid_shape, read_grid, write_grid


@pytest.mark.parametrize("which", ["tiny_city", "berlin", "los_angeles"])
def test_grid_shape_ids_and_cells(which, request):
    city = request.getfixturevalue(which)
    grid = build_grid(city)
    h, w = grid_shape(city)
    assert len(grid) == h * w
    assert grid.crs.to_epsg() == city.crs_epsg
    assert grid["cell_id"].dtype == np.int32
    assert grid["cell_id"].tolist() == list(range(h * w))
    assert (grid["cell_id"] == grid["row"] * w + grid["col"]).all()
    # row-major from the south-west: east along a row, north from one row to the next
    b = grid.geometry.bounds
    assert (b["minx"].to_numpy() == b["minx"].min()).sum() == h
    c0, c1, cw = b.iloc[0], b.iloc[1], b.iloc[w]
    assert c0["minx"] == b["minx"].min() and c0["miny"] == b["miny"].min()
    assert c1["minx"] == c0["maxx"] and c1["miny"] == c0["miny"]
    assert cw["miny"] == c0["maxy"] and cw["minx"] == c0["minx"]
    # squares of the configured size that tile the grid
    assert np.allclose(b["maxx"] - b["minx"], city.cell_size_m)
    assert np.allclose(b["maxy"] - b["miny"], city.cell_size_m)
    assert math.isclose(grid.geometry.area.sum(), shapely.union_all(grid.geometry.to_numpy()).area)
    # the projected bbox (densified outline) lies inside the grid
    tr = Transformer.from_crs(4326, city.crs_epsg, always_xy=True)
    x0, y0, x1, y1 = city.bbox
    lon = np.concatenate([np.linspace(x0, x1, 50), np.full(50, x1), np.linspace(x1, x0, 50), np.full(50, x0)])
    lat = np.concatenate([np.full(50, y0), np.linspace(y0, y1, 50), np.full(50, y1), np.linspace(y1, y0, 50)])
    px, py = tr.transform(lon, lat)
    gx0, gy0, gx1, gy1 = grid.total_bounds
    assert px.min() >= gx0 and px.max() <= gx1 and py.min() >= gy0 and py.max() <= gy1
    # ...and no whole row/column of cells lies beyond it
    assert gx1 - px.max() < city.cell_size_m and gy1 - py.max() < city.cell_size_m
    assert px.min() - gx0 < city.cell_size_m and py.min() - gy0 < city.cell_size_m


def test_write_grid_geoparquet_once_and_idempotent(tiny_city):
    path = write_grid(tiny_city)
    assert path == grid_path(tiny_city)
    assert str(path).endswith("grid/city=tiny/cells.parquet")
    md = pq.read_schema(str(path)).metadata
    assert b"geo" in md  # GeoParquet
    first = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert write_grid(tiny_city) == path
    assert path.stat().st_mtime_ns == mtime and path.read_bytes() == first
    stored = gpd.read_parquet(str(path))
    assert stored.crs.to_epsg() == tiny_city.crs_epsg
    back = read_grid(tiny_city)
    built = build_grid(tiny_city)
    assert back["cell_id"].dtype == np.int32
    assert back[["cell_id", "row", "col"]].equals(built[["cell_id", "row", "col"]])
    assert back.geometry.geom_equals(built.geometry).all()


def _lake_files() -> dict[str, bytes]:
    root = Path(str(lake.lake_root()))
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_read_grid_never_writes(tiny_city):
    """Issue 10: a read leaves the lake unchanged; the rasterize stage writes the grid."""
    assert not grid_path(tiny_city).exists()
    with pytest.raises(FileNotFoundError, match=r"cells\.parquet does not exist.*traffic rasterize tiny"):
        read_grid(tiny_city)
    assert _lake_files() == {}
    write_grid(tiny_city)
    before = _lake_files()
    mtime = grid_path(tiny_city).stat().st_mtime_ns
    assert len(read_grid(tiny_city)) == math.prod(grid_shape(tiny_city))
    assert _lake_files() == before and grid_path(tiny_city).stat().st_mtime_ns == mtime
    # a config that no longer matches the stored grid is refused by the read too, and nothing is written
    with pytest.raises(GridMismatchError, match="cells.parquet"):
        read_grid(dataclasses.replace(tiny_city, cell_size_m=500.0))
    assert _lake_files() == before


def test_changed_grid_is_refused_unless_replaced(tiny_city):
    write_grid(tiny_city)
    bigger = dataclasses.replace(tiny_city, cell_size_m=500.0)
    with pytest.raises(GridMismatchError, match="cells.parquet"):
        write_grid(bigger)
    write_grid(bigger, replace=True)
    assert len(read_grid(bigger)) == math.prod(grid_shape(bigger)) > math.prod(grid_shape(tiny_city))
