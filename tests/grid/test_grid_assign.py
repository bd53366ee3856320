from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from tests.grid.helpers import to_wgs84
from traffic import lake
from traffic.grid.assign import assign_sources, assignment_for, rejected_for
from traffic.grid.cells import build_grid, grid_spec, write_grid


def _registry(geoms: dict, crs) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"source_id": list(geoms)}, geometry=list(geoms.values()), crs=crs)


def _cell(spec, x, y) -> int:
    col = int((x - spec.x0) // spec.cell_size_m)
    row = int((y - spec.y0) // spec.cell_size_m)
    return row * spec.width + col


def test_points_land_in_containing_cell(tiny_city):
    spec = grid_spec(tiny_city)
    rng = np.random.default_rng(1)
    x0, y0, x1, y1 = spec.bounds
    xy = np.column_stack([rng.uniform(x0 + 1, x1 - 1, 40), rng.uniform(y0 + 1, y1 - 1, 40)])
    pts = to_wgs84([shapely.Point(x, y) for x, y in xy], tiny_city.crs_epsg)
    reg = _registry({f"s{i}": p for i, p in enumerate(pts)}, 4326)
    a, rej = assign_sources(reg, build_grid(tiny_city), tiny_city)
    assert rej.empty
    assert a["cell_id"].dtype == np.int32 and a["weight"].dtype == np.float64
    assert (a["weight"] == 1.0).all()
    expected = {f"s{i}": _cell(spec, x, y) for i, (x, y) in enumerate(xy)}
    assert dict(zip(a["source_id"], a["cell_id"], strict=True)) == expected


def test_point_on_shared_edge_goes_north_east(tiny_city):
    spec = grid_spec(tiny_city)
    s = spec.cell_size_m
    corner = shapely.Point(spec.x0 + s, spec.y0 + s)  # shared by cells 0, 1, W, W+1
    edge = shapely.Point(spec.x0 + s, spec.y0 + 0.5 * s)  # shared by cells 0 and 1
    outer = shapely.Point(spec.x0 + spec.width * s, spec.y0 + 0.5 * s)  # the grid's east edge
    reg = _registry({"corner": corner, "edge": edge, "outer": outer}, f"EPSG:{tiny_city.crs_epsg}")
    a, rej = assign_sources(reg, build_grid(tiny_city), tiny_city)
    assert rej.empty
    got = dict(zip(a["source_id"], a["cell_id"], strict=True))
    assert got == {"corner": spec.width + 1, "edge": 1, "outer": spec.width - 1}


@pytest.mark.parametrize(
    ("xs", "expected"),
    [
        ((500, 2500), {0: 0.25, 1: 0.5, 2: 0.25}),  # three cells: 500 m, 1000 m, 500 m
        ((100, 900), {0: 1.0}),  # inside one cell
        ((-1500, 500), {0: 1.0}),  # leaves the grid to the west: weights over the part inside
        ((200, 1000), {0: 1.0}),  # ends on a cell edge: the zero-length touch gets nothing
    ],
)
def test_line_split_weights_follow_length(tiny_city, xs, expected):
    spec = grid_spec(tiny_city)
    y = spec.y0 + 300
    line = shapely.LineString([(spec.x0 + xs[0], y), (spec.x0 + xs[1], y)])
    reg = _registry({"seg": line}, f"EPSG:{tiny_city.crs_epsg}")
    a, rej = assign_sources(reg, build_grid(tiny_city), tiny_city)
    assert rej.empty
    got = dict(zip(a["cell_id"].tolist(), a["weight"].tolist(), strict=True))
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected)
    assert a["weight"].sum() == pytest.approx(1.0)


def test_multilinestring_in_wgs84_weights_sum_to_one_and_follow_length(tiny_city):
    spec = grid_spec(tiny_city)
    s = spec.cell_size_m
    # an L-shaped route: 700 m east in row 0 from the cell-0/1 edge, then 1200 m north in column 1
    a_part = shapely.LineString([(spec.x0 + 300, spec.y0 + 400), (spec.x0 + s + 700, spec.y0 + 400)])
    b_part = shapely.LineString([(spec.x0 + s + 700, spec.y0 + 400), (spec.x0 + s + 700, spec.y0 + 1600)])
    mls = shapely.MultiLineString([a_part, b_part])
    reg = _registry({"route": to_wgs84([mls], tiny_city.crs_epsg)[0]}, 4326)
    a, _ = assign_sources(reg, build_grid(tiny_city), tiny_city)
    got = dict(zip(a["cell_id"].tolist(), a["weight"].tolist(), strict=True))
    total = a_part.length + b_part.length  # 1400 + 1200
    expected = {0: 700 / total, 1: (700 + 600) / total, spec.width + 1: 600 / total}
    assert got == pytest.approx(expected, abs=1e-4)  # reprojection round trip: millimetres
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)


def test_rejections(tiny_city):
    spec = grid_spec(tiny_city)
    x0, y0, x1, y1 = spec.bounds
    crs = f"EPSG:{tiny_city.crs_epsg}"
    geoms = {
        "ok": shapely.Point(x0 + 10, y0 + 10),
        "far_point": shapely.Point(x1 + 5000, y0 + 10),
        "far_line": shapely.LineString([(x0 - 3000, y0 - 3000), (x0 - 2000, y0 - 2500)]),
        "empty": shapely.Point(),
        "missing": None,
        "polygon": shapely.box(x0, y0, x0 + 10, y0 + 10),
        "nan": shapely.Point(np.nan, y0 + 10),
        "zero_line": shapely.LineString([(x0 + 5, y0 + 5), (x0 + 5, y0 + 5)]),
    }
    reg = _registry(geoms, crs)
    reg = pd.concat([reg, _registry({"ok": shapely.Point(x0 + 1500, y0 + 10)}, crs)], ignore_index=True)
    a, rej = assign_sources(reg, build_grid(tiny_city), tiny_city)
    assert a["source_id"].tolist() == ["ok"] and a["cell_id"].tolist() == [0]
    assert dict(zip(rej["source_id"], rej["reason"], strict=True)) == {
        "far_point": "outside_grid",
        "far_line": "outside_grid",
        "empty": "invalid_geometry",
        "missing": "invalid_geometry",
        "polygon": "invalid_geometry",
        "nan": "invalid_geometry",
        "zero_line": "invalid_geometry",
        "ok": "duplicate_source_id",  # the second "ok": the first one is kept
    }
    assert len(rej) == 8


def test_assignment_for_caches_per_registry_version(tiny_city, write_registry):
    write_grid(tiny_city)
    spec = grid_spec(tiny_city)
    pts = to_wgs84([shapely.Point(spec.x0 + 100, spec.y0 + 100), shapely.Point(spec.x0 - 900, spec.y0)], 25833)
    write_registry(tiny_city, "loop", {"a": pts[0], "out": pts[1]}, version="v1")
    a = assignment_for(tiny_city, "loop")
    assert a["source_id"].tolist() == ["a"] and a["cell_id"].tolist() == [0]
    assert a.attrs["registry_version"] == "v1"
    folder = lake.partition("assignment", city="tiny", feed="loop", version="v1")
    part, rejected = folder / "part.parquet", folder / "rejected.parquet"
    assert part.exists() and rejected.exists()
    assert pq.read_table(str(rejected)).to_pylist() == [{"source_id": "out", "reason": "outside_grid"}]
    assert rejected_for(tiny_city, "loop").to_dict("list") == {"source_id": ["out"], "reason": ["outside_grid"]}
    mtime = part.stat().st_mtime_ns
    again = assignment_for(tiny_city, "loop")
    assert part.stat().st_mtime_ns == mtime  # reused, not recomputed
    pd.testing.assert_frame_equal(again, a)
    # a new registry version gets its own assignment
    write_registry(tiny_city, "loop", {"a": pts[0], "b": pts[0]}, version="v2")
    b = assignment_for(tiny_city, "loop")
    assert b["source_id"].tolist() == ["a", "b"] and b.attrs["registry_version"] == "v2"
    assert (lake.partition("assignment", city="tiny", feed="loop", version="v2") / "part.parquet").exists()


def test_rejected_for_only_reads(tiny_city, write_registry):
    """Issue 10: reads never write; the assignment (and its rejections) is computed by assignment_for."""
    write_grid(tiny_city)
    spec = grid_spec(tiny_city)
    pts = to_wgs84([shapely.Point(spec.x0 + 100, spec.y0 + 100), shapely.Point(spec.x0 - 900, spec.y0)], 25833)
    write_registry(tiny_city, "loop", {"a": pts[0], "out": pts[1]}, version="v1")
    with pytest.raises(FileNotFoundError, match=r"version=v1/rejected\.parquet does not exist.*traffic rasterize tiny"):
        rejected_for(tiny_city, "loop")
    assert not lake.partition("assignment", city="tiny").exists()
    assignment_for(tiny_city, "loop")
    assert rejected_for(tiny_city, "loop").to_dict("list") == {"source_id": ["out"], "reason": ["outside_grid"]}


def test_assignment_for_missing_registry_names_the_path(tiny_city):
    with pytest.raises(FileNotFoundError, match="registry.parquet"):
        assignment_for(tiny_city, "loop")
