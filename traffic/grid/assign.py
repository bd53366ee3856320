"""The source-to-cell assignment: which grid cells each traffic source feeds, with what weight.

This is the only place where observation sources meet geometry: it reads a feed's lake
registry (:func:`read_lake_registry`) and the lake's grid, runs with GeoPandas once per
registry version, and caches the result (a small ``source_id -> cell_id, weight`` table) at
``assignment/city=<c>/feed=<f>/version=<registry version>/part.parquet`` with the
rejected sources next to it in ``rejected.parquet``. Rasterizing
(:mod:`traffic.grid.rasterize`) takes these tables (:func:`assignments_for`) and joins
observations to cells on integer codes only.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from traffic.config import CityConfig
from traffic.grid.cells import grid_spec, read_grid
from traffic.lake import Lake, read_geoparquet, write_table

#: Reasons a source gets no cell.
REJECT_REASONS = ("invalid_geometry", "outside_grid", "duplicate_source_id")

ASSIGNMENT_SCHEMA = pa.schema([("source_id", pa.string()), ("cell_id", pa.int32()), ("weight", pa.float64())])
REJECTED_SCHEMA = pa.schema([("source_id", pa.string()), ("reason", pa.string())])

_POINT_TYPES = ("Point", "MultiPoint")
_LINE_TYPES = ("LineString", "MultiLineString", "LinearRing")


def _empty_assignment() -> pd.DataFrame:
    return ASSIGNMENT_SCHEMA.empty_table().to_pandas()


def _frame(source_id: np.ndarray, cell_id: np.ndarray, weight: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_id": pd.array(source_id, dtype="str"),
            "cell_id": np.asarray(cell_id, dtype=np.int32),
            "weight": np.asarray(weight, dtype=np.float64),
        }
    )


def assign_sources(
    registry: gpd.GeoDataFrame, grid: gpd.GeoDataFrame, city: CityConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign every source of a registry to the grid cells it feeds.

    Rules
    -----
    * Geometry is projected to the grid's CRS (``EPSG:city.crs_epsg``) first.
    * Points: the cell that contains the point, weight 1 (spatial join). Cells are
      half-open squares, so a point exactly on a shared edge or corner goes to the
      cell to its north/east (the larger ``cell_id``); the grid's outer edges are
      inside. A MultiPoint is split into its points, each with weight ``1 / n``
      (summed per cell).
    * Lines (LineString / MultiLineString): the line is cut by the cell squares
      (overlay intersection). The weight of a cell is the share of the line's length
      that lies in it: ``len(line ∩ cell) / sum over cells of len(line ∩ cell)``. The
      denominator is the length *inside the grid*, so a line that leaves the grid
      keeps weights summing to 1 over the cells it does cross. Pieces of zero length
      (a line touching a cell corner or edge) get no weight.
    * The weights of every assigned source sum to 1.

    Rejected sources (one row each, never assigned):

    * ``invalid_geometry``: missing, empty, invalid (GEOS ``is_valid`` false),
      non-finite coordinates, a zero-length line, or a geometry type other than
      (multi)point / (multi)linestring.
    * ``outside_grid``: valid, but no part of it lies inside the grid.
    * ``duplicate_source_id``: a ``source_id`` already seen earlier in the registry
      (the first occurrence is kept).

    Parameters
    ----------
    registry : geopandas.GeoDataFrame
        ``source_id`` (str) and geometry, CRS EPSG:4326 (a frame without CRS is read
        as EPSG:4326).
    grid : geopandas.GeoDataFrame
        Cells from :func:`traffic.grid.cells.build_grid` / :func:`~traffic.grid.cells.read_grid`.
    city : CityConfig

    Returns
    -------
    assignment : pandas.DataFrame
        ``source_id`` (str), ``cell_id`` (int32), ``weight`` (float64), sorted by
        ``source_id`` then ``cell_id``.
    rejected : pandas.DataFrame
        ``source_id`` (str), ``reason`` (str), sorted by ``source_id``.

    Raises
    ------
    ValueError
        ``registry`` has no ``source_id`` column, or ``grid`` lacks ``cell_id``.
    """
    if "source_id" not in registry.columns:
        raise ValueError(f"registry has no 'source_id' column; columns: {list(registry.columns)}")
    if "cell_id" not in grid.columns:
        raise ValueError(f"grid has no 'cell_id' column; columns: {list(grid.columns)}")
    target_crs = f"EPSG:{city.crs_epsg}"
    if grid.crs is None or grid.crs.to_epsg() != city.crs_epsg:
        grid = grid.to_crs(target_crs) if grid.crs is not None else grid.set_crs(target_crs)

    reg = gpd.GeoDataFrame(
        {"source_id": registry["source_id"].astype("str").to_numpy()},
        geometry=registry.geometry.to_numpy(),
        crs=registry.crs or "EPSG:4326",
    )
    rejected: list[pd.DataFrame] = []

    def reject(mask: np.ndarray, reason: str) -> None:
        if mask.any():
            rejected.append(pd.DataFrame({"source_id": reg.loc[mask, "source_id"].to_numpy(), "reason": reason}))

    dup = reg["source_id"].duplicated(keep="first").to_numpy()
    reject(dup, "duplicate_source_id")
    reg = reg.loc[~dup].reset_index(drop=True)

    reg = reg.to_crs(target_crs)
    geoms = reg.geometry.to_numpy()
    gtype = np.asarray(shapely.get_type_id(geoms))
    is_point = np.isin(gtype, [0, 4])  # Point, MultiPoint
    is_line = np.isin(gtype, [1, 2, 5])  # LineString, LinearRing, MultiLineString
    coords_ok = np.zeros(len(reg), dtype=bool)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if present.any():
        # any non-finite coordinate (NaN/inf in the file, or a failed projection) is invalid
        coords, index = shapely.get_coordinates(geoms[present], return_index=True)
        finite = np.isfinite(coords).all(axis=1)
        bad_parts = np.zeros(int(present.sum()), dtype=bool)
        np.logical_or.at(bad_parts, index, ~finite)
        coords_ok[np.flatnonzero(present)] = ~bad_parts
    valid = present & coords_ok & (is_point | is_line)
    valid[valid] = shapely.is_valid(geoms[valid])
    zero_line = np.zeros(len(reg), dtype=bool)
    zero_line[valid & is_line] = shapely.length(geoms[valid & is_line]) <= 0
    valid &= ~zero_line
    reject(~valid, "invalid_geometry")

    parts: list[pd.DataFrame] = []
    cells = grid[["cell_id", "geometry"]]

    # points: spatial join; MultiPoints are exploded with weight 1/n per point
    pts = reg.loc[valid & is_point]
    if len(pts):
        pts = pts.explode(index_parts=False, ignore_index=False)
        n_parts = pts.groupby(level=0).size()
        pts = pts.assign(_src=pts.index.to_numpy(), _w=1.0 / n_parts.reindex(pts.index).to_numpy())
        pts = pts.reset_index(drop=True)
        pts["_part"] = np.arange(len(pts))
        joined = gpd.sjoin(pts, cells, how="inner", predicate="intersects")
        # a point on a shared edge/corner touches several cells: keep the north/east one
        joined = joined.sort_values("cell_id").drop_duplicates(subset="_part", keep="last") if len(joined) else joined
        if len(joined):
            parts.append(
                pd.DataFrame(
                    {
                        "_src": joined["_src"].to_numpy(),
                        "cell_id": joined["cell_id"].to_numpy(),
                        "w": joined["_w"].to_numpy(),
                    }
                )
            )

    lines = reg.loc[valid & is_line]
    if len(lines):
        lines = lines.assign(_src=lines.index.to_numpy()).reset_index(drop=True)
        pieces = gpd.overlay(lines[["_src", "geometry"]], cells, how="intersection", keep_geom_type=False)
        if len(pieces):
            length = shapely.length(pieces.geometry.to_numpy())
            keep = length > 0
            parts.append(
                pd.DataFrame(
                    {
                        "_src": pieces["_src"].to_numpy()[keep],
                        "cell_id": pieces["cell_id"].to_numpy()[keep],
                        "w": length[keep],
                    }
                )
            )

    if parts:
        a = pd.concat(parts, ignore_index=True)
        a = a.groupby(["_src", "cell_id"], as_index=False, sort=False)["w"].sum()
        a["w"] = a["w"] / a.groupby("_src")["w"].transform("sum")
        assigned_src = np.unique(a["_src"].to_numpy())
        assignment = _frame(
            reg["source_id"].to_numpy()[a["_src"].to_numpy()], a["cell_id"].to_numpy(), a["w"].to_numpy()
        )
        assignment = assignment.sort_values(["source_id", "cell_id"], ignore_index=True)
    else:
        assigned_src = np.array([], dtype=np.int64)
        assignment = _empty_assignment()

    outside = valid.copy()
    outside[assigned_src] = False
    reject(outside, "outside_grid")

    if rejected:
        rej = pd.concat(rejected, ignore_index=True)
        rej = rej.astype({"source_id": "str", "reason": "str"}).sort_values("source_id", ignore_index=True)
    else:
        rej = REJECTED_SCHEMA.empty_table().to_pandas()
    return assignment, rej


def read_lake_registry(city: CityConfig, feed: str, *, lake: Lake | None = None) -> tuple[gpd.GeoDataFrame, str]:
    """Read a feed's registry partition in the lake (GeoParquet, read with GeoPandas) and its version.

    The partition is what :func:`traffic.ingest.ingest_registry` wrote. Without a ``version``
    key in its metadata, the digest of the file bytes is the version.

    Parameters
    ----------
    city : CityConfig
    feed : str
        Feed name of the city.
    lake : Lake, optional
        The lake to read; default :meth:`Lake.from_config`.

    Returns
    -------
    registry : geopandas.GeoDataFrame
        ``source_id``, ``attributes``, geometry in EPSG:4326 (None where missing).
    version : str

    Raises
    ------
    FileNotFoundError
        Naming the registry partition that is missing and the command that writes it.
    ValueError
        The file is not GeoParquet or lacks ``source_id`` (the message names the file).
    """
    path = (lake if lake is not None else Lake.from_config()).partition(
        "registry", city=city.name, feed=feed
    ) / "registry.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"registry partition {path} does not exist: the ingest stage writes it "
            f"(`traffic ingest {city.name}`: ingest the feed {feed!r} of {city.name!r} first)"
        )
    registry, md = read_geoparquet(path)
    if "source_id" not in registry.columns:
        raise ValueError(f"{path}: missing columns ['source_id']; has {list(registry.columns)}")
    version = md.get("version") or md["file_sha256"][:16]
    registry["source_id"] = registry["source_id"].astype("str")
    return registry.set_crs(4326, allow_override=True), version  # stored in WGS84 lon/lat


def _assignment_dir(lake: Lake, city: CityConfig, feed: str, version: str):
    return lake.partition("assignment", city=city.name, feed=feed, version=version)


def assignment_for(city: CityConfig, feed: str, *, lake: Lake | None = None) -> pd.DataFrame:
    """The source-to-cell assignment of a feed's current registry, cached per version.

    Reads ``registry/city=<c>/feed=<f>/registry.parquet``; if
    ``assignment/city=<c>/feed=<f>/version=<version>/part.parquet`` exists and was
    computed against the same grid, returns it, otherwise computes it with
    :func:`assign_sources` and writes it (plus ``rejected.parquet``) atomically.

    Parameters
    ----------
    city : CityConfig
    feed : str
        Feed name of the city.
    lake : Lake, optional
        The lake to read and write; default :meth:`Lake.from_config`.

    Returns
    -------
    pandas.DataFrame
        ``source_id``, ``cell_id`` (int32), ``weight`` (float64); the registry version
        is in ``df.attrs["registry_version"]``. Rejected sources: :func:`rejected_for`.
    """
    city.feed(feed)  # validates the feed name
    store = lake if lake is not None else Lake.from_config()
    registry, version = read_lake_registry(city, feed, lake=store)
    folder = _assignment_dir(store, city, feed, version)
    target, rejected_path = folder / "part.parquet", folder / "rejected.parquet"
    digest = grid_spec(city).digest()
    if target.exists() and rejected_path.exists():
        with target.open("rb") as fh:
            table = pq.read_table(fh)
        md = table.schema.metadata or {}
        if md.get(b"grid_digest", b"").decode() == digest:
            out = table.to_pandas()
            out = out.astype({"source_id": "str", "cell_id": np.int32, "weight": np.float64})
            out.attrs["registry_version"] = version
            return out
    assignment, rej = assign_sources(registry, read_grid(city, lake=store), city)
    meta = {
        "registry_version": version,
        "grid_digest": digest,
        "summary": json.dumps(
            {
                "sources": len(registry),
                "assigned": int(assignment["source_id"].nunique()),
                "rejected": rej["reason"].value_counts().to_dict(),
            }
        ),
    }
    # rejected first: part.parquet existing means the cache entry is complete
    write_table(pa.Table.from_pandas(rej, schema=REJECTED_SCHEMA, preserve_index=False), rejected_path, metadata=meta)
    write_table(pa.Table.from_pandas(assignment, schema=ASSIGNMENT_SCHEMA, preserve_index=False), target, metadata=meta)
    assignment.attrs["registry_version"] = version
    return assignment


def assignments_for(
    city: CityConfig, feeds: list[str] | None = None, *, lake: Lake | None = None
) -> dict[str, pd.DataFrame]:
    """:func:`assignment_for` of the city's feeds: what rasterizing takes.

    Parameters
    ----------
    city : CityConfig
    feeds : list of str, optional
        Feed names. Default: every feed of the city.
    lake : Lake, optional
        The lake to read and write; default :meth:`Lake.from_config`.

    Returns
    -------
    dict
        Feed name -> assignment frame (``attrs["registry_version"]`` set), in the order given.
    """
    names = [feed.name for feed in city.feeds] if feeds is None else feeds
    store = lake if lake is not None else Lake.from_config()
    return {name: assignment_for(city, name, lake=store) for name in names}


def rejected_for(city: CityConfig, feed: str, *, lake: Lake | None = None) -> pd.DataFrame:
    """Sources of the feed's current registry that got no cell: ``source_id``, ``reason``.

    A read: the table is the one :func:`assignment_for` cached for the current registry version.

    Parameters
    ----------
    city : CityConfig
    feed : str
        Feed name of the city.
    lake : Lake, optional
        The lake to read; default :meth:`Lake.from_config`.

    Raises
    ------
    FileNotFoundError
        The registry partition is missing, or no assignment of its version was computed yet
        (the message names the file and the command that writes it).
    """
    store = lake if lake is not None else Lake.from_config()
    _, version = read_lake_registry(city, feed, lake=store)
    path = _assignment_dir(store, city, feed, version) / "rejected.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: the assignment of registry version {version!r} is computed by the "
            f"rasterize stage (`traffic rasterize {city.name}`, or traffic.grid.assign.assignment_for(city, {feed!r}))"
        )
    with path.open("rb") as fh:
        return pq.read_table(fh).to_pandas().astype({"source_id": "str", "reason": "str"})
