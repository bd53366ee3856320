"""The city grid: its square cells, computed from the config, and the one grid file in the lake.

The grid covers the city's WGS84 ``bbox`` once projected to ``EPSG:city.crs_epsg``
(the envelope of the projected, densified bbox outline, so no corner of the lon/lat box
falls outside). Its origin is that envelope's south-west corner snapped down to a
multiple of ``cell_size_m``; the grid has ``H`` rows and ``W`` columns of
``cell_size_m`` squares, enough to reach the envelope's north-east corner.

Cells are numbered row-major from the south-west: ``cell_id = row * W + col`` with
row 0 on the southern edge and column 0 on the western edge (the layout of
:attr:`traffic.grid.tensor.GridTensor.cell_ids`). A cell is the half-open square
``[x0, x0 + size) x [y0, y0 + size)``; the grid's outer east/north edges belong to the
last column/row.

:func:`build_grid` computes the cells (pure: no I/O). :func:`write_grid` writes them once per
city to ``grid/city=<c>/cells.parquet`` (GeoParquet, written by GeoPandas); the rasterize stage
(:func:`traffic.pipeline.rasterize`) calls it before anything refers to cell ids. The file is
frozen for the life of the city's lake: rasters and assignments refer to its cell ids.
:func:`read_grid` only reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import shapely
from upath import UPath

from traffic.config import CityConfig
from traffic.errors import GridMismatchError
from traffic.lake import Lake, read_geoparquet, write_geoparquet

GRID_FILENAME = "cells.parquet"


@dataclass(frozen=True)
class GridSpec:
    """Geometry of a city grid.

    Attributes
    ----------
    crs_epsg : int
        Projected CRS (metres) of the cell coordinates.
    x0, y0 : float
        South-west corner of cell 0 in that CRS.
    cell_size_m : float
        Side of a square cell in metres.
    height, width : int
        Number of rows (south to north) and columns (west to east).
    """

    crs_epsg: int
    x0: float
    y0: float
    cell_size_m: float
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the whole grid in the projected CRS."""
        s = self.cell_size_m
        return (self.x0, self.y0, self.x0 + self.width * s, self.y0 + self.height * s)

    def digest(self) -> str:
        """Short content digest: equal digests mean identical cell geometry and ids."""
        payload = json.dumps(
            [
                self.crs_epsg,
                repr(float(self.x0)),
                repr(float(self.y0)),
                repr(float(self.cell_size_m)),
                self.height,
                self.width,
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def as_metadata(self) -> dict[str, str]:
        return {
            "grid_digest": self.digest(),
            "grid_spec": json.dumps(
                {
                    "crs_epsg": self.crs_epsg,
                    "x0": self.x0,
                    "y0": self.y0,
                    "cell_size_m": self.cell_size_m,
                    "height": self.height,
                    "width": self.width,
                }
            ),
        }


def grid_spec(city: CityConfig) -> GridSpec:
    """Compute the :class:`GridSpec` of a city from its bbox, CRS and cell size.

    Parameters
    ----------
    city : CityConfig

    Returns
    -------
    GridSpec
    """
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, city.crs_epsg, always_xy=True)
    xmin, ymin, xmax, ymax = tr.transform_bounds(*city.bbox, densify_pts=101)
    s = float(city.cell_size_m)
    x0 = math.floor(xmin / s) * s
    y0 = math.floor(ymin / s) * s
    width = max(1, math.ceil((xmax - x0) / s))
    height = max(1, math.ceil((ymax - y0) / s))
    return GridSpec(crs_epsg=int(city.crs_epsg), x0=x0, y0=y0, cell_size_m=s, height=height, width=width)


def grid_shape(city: CityConfig) -> tuple[int, int]:
    """``(H, W)``: rows (south to north) and columns (west to east) of the city grid."""
    return grid_spec(city).shape


def cells_from_spec(spec: GridSpec) -> gpd.GeoDataFrame:
    """Build the cell GeoDataFrame of a :class:`GridSpec` (see :func:`build_grid`)."""
    h, w = spec.shape
    rows, cols = np.divmod(np.arange(h * w, dtype=np.int64), w)
    s = spec.cell_size_m
    xmin = spec.x0 + cols * s
    ymin = spec.y0 + rows * s
    geoms = shapely.box(xmin, ymin, xmin + s, ymin + s)
    return gpd.GeoDataFrame(
        {
            "cell_id": np.arange(h * w, dtype=np.int32),
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
        },
        geometry=geoms,
        crs=f"EPSG:{spec.crs_epsg}",
    )


def build_grid(city: CityConfig) -> gpd.GeoDataFrame:
    """Square cells covering the city's bbox in its projected CRS.

    Parameters
    ----------
    city : CityConfig

    Returns
    -------
    geopandas.GeoDataFrame
        One row per cell, ordered by ``cell_id`` (int32, ``row * W + col``, row-major
        from the south-west), with ``row``, ``col`` (int32) and ``geometry`` (square
        polygons in ``EPSG:city.crs_epsg``).
    """
    return cells_from_spec(grid_spec(city))


def grid_path(city: CityConfig, *, lake: Lake | None = None) -> UPath:
    """Path of the city's GeoParquet grid file in ``lake`` (default :meth:`Lake.from_config`)."""
    return (lake if lake is not None else Lake.from_config()).partition("grid", city=city.name) / GRID_FILENAME


def _stored_digest(path: UPath) -> str | None:
    with path.open("rb") as fh:
        md = pq.read_schema(fh).metadata or {}
    raw = md.get(b"grid_digest")
    return raw.decode() if raw is not None else None


def _mismatch(path: UPath, stored: str | None, spec: GridSpec, city: CityConfig) -> GridMismatchError:
    return GridMismatchError(
        f"{path} holds grid {stored!r} but city {city.name!r} ({city.source or 'config'}) describes grid "
        f"{spec.digest()!r} (crs EPSG:{spec.crs_epsg}, {spec.height}x{spec.width} cells of {spec.cell_size_m} m); "
        "the grid is frozen for the life of the lake: restore the config or call write_grid(city, replace=True)"
    )


def write_grid(city: CityConfig, *, replace: bool = False, lake: Lake | None = None) -> UPath:
    """Write the city grid to ``grid/city=<c>/cells.parquet`` (GeoParquet), once.

    The file is written atomically. If it already exists with the same grid (same
    digest in its metadata) nothing is written, so re-running is idempotent.

    Parameters
    ----------
    city : CityConfig
    replace : bool, default False
        Overwrite a stored grid that differs from the configured one. Rasters and
        assignments written against the old grid then no longer match it.
    lake : Lake, optional
        The lake to write; default :meth:`Lake.from_config`.

    Returns
    -------
    UPath
        Path of the grid file.

    Raises
    ------
    GridMismatchError
        The stored grid differs from the config (bbox, CRS or cell size changed) and
        ``replace`` is False.
    """
    spec = grid_spec(city)
    path = grid_path(city, lake=lake)
    if path.exists() and not replace:
        stored = _stored_digest(path)
        if stored == spec.digest():
            return path
        raise _mismatch(path, stored, spec, city)
    write_geoparquet(cells_from_spec(spec), path, metadata=spec.as_metadata())
    return path


def read_grid(city: CityConfig, *, lake: Lake | None = None) -> gpd.GeoDataFrame:
    """Read the city grid from the lake (a read: it never writes; :func:`write_grid` does).

    Parameters
    ----------
    city : CityConfig
    lake : Lake, optional
        The lake to read; default :meth:`Lake.from_config`.

    Returns
    -------
    geopandas.GeoDataFrame
        As :func:`build_grid`.

    Raises
    ------
    FileNotFoundError
        No grid file yet; the message names it and the command that writes it.
    GridMismatchError
        The stored grid differs from the configured one (see :func:`write_grid`).
    """
    spec = grid_spec(city)
    path = grid_path(city, lake=lake)
    if not path.exists():
        raise FileNotFoundError(
            f"grid {path} does not exist: the rasterize stage writes it "
            f"(`traffic rasterize {city.name}`, or traffic.grid.write_grid(city))"
        )
    gdf, md = read_geoparquet(path)
    if md.get("grid_digest") != spec.digest():
        raise _mismatch(path, md.get("grid_digest"), spec, city)
    return gdf.astype({"cell_id": np.int32, "row": np.int32, "col": np.int32})
