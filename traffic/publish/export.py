"""Maps of a published forecast run: GeoJSON, GeoParquet, PNG per horizon group, offline HTML.

The source is the analysts' DuckDB catalog (:func:`traffic.config.duckdb_path`), opened
read-only with :func:`traffic.publish.duckdb_publish.connect_catalog` (it never waits for, nor
blocks, a publish); only the stable relations ``forecast_runs``, ``forecasts`` and
``run_cells`` are read, with the statements of ``sql/export.sql`` (values bound as parameters),
in one session, so that the rows and the cells come from the same catalog.

What the store holds (docs/publishing.md): ``forecasts`` has rows **only** for the (cell,
channel) pairs the model had data for; ``run_cells`` has **every** grid cell of each run, with
``has_data`` and ``coverage``; every forecast row has ``lower``/``upper``, NULL where the run
has no bounds (or the value is NULL).

Layout
------
The data formats are built from one **long** GeoDataFrame (:func:`to_geodataframe`): one row per
published ``(cell, target_time, channel)`` of the run, EPSG:4326, with the columns

``run_id, city, cell_id, row, col, channel, horizon, horizon_group, target_time`` (UTC),
``target_time_local`` (ISO 8601 with the city's UTC offset), ``value``, ``lower``, ``upper``
(NULL without bounds), ``congestion_index``, ``congestion_level`` (NULL where the model gave
no value), ``has_data`` (always true: only rows with data are published), ``centroid_lon``,
``centroid_lat``, ``geometry`` (the cell outline).

* ``geoparquet``: that frame through :meth:`geopandas.GeoDataFrame.to_parquet`; reads back
  with :func:`geopandas.read_parquet`.
* ``geojson``: the same rows as RFC 7946 features (lon/lat, exterior rings counter-clockwise,
  a ``bbox`` per feature, no ``crs`` member); times as ISO strings (``target_time`` in UTC
  with ``Z``, ``target_time_local`` with the offset).

  **Which features:** GeoJSON and GeoParquet hold exactly the run's rows of ``forecasts`` (of
  the channel asked for), one feature each. A cell without data for a channel has **no**
  feature for it (there are no placeholder features with null values); the whole grid, with
  ``has_data`` and ``coverage``, is the catalog's ``run_cells`` view.
* ``png``: one map per horizon group (:func:`traffic.forecast.horizons.horizon_groups`), one
  panel per channel, drawing **every grid cell** of the run (:func:`cells_geodataframe`, from
  ``run_cells``): each cell coloured by the level of its worst congestion index over the
  group's steps, grey where it has none (no data). Files ``<run_id>[_<channel>]_<tag>.png``
  with tags ``h01``, ``h02-03``, ...
* ``html``: one self-contained file (data inline as JSON, every grid cell as an inline SVG
  polygon drawn by a small script, grey without data; a slider over target times, a channel
  select, hover/click details and a legend); it loads nothing from the network.

Files go to ``--out`` or, by default, to :func:`default_out_dir` (``<TRAFFIC_HOME>/exports``).
"""

from __future__ import annotations

import html as html_lib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traffic.config import home
from traffic.errors import ExportError
from traffic.forecast.horizons import group_tag, horizon_groups
from traffic.publish.congestion import (
    LEVEL_EDGES,
    LEVELS,
    VOLUME_LEVEL_EDGES,
    VOLUME_LEVELS,
    congestion_levels,
    is_speed_channel,
)

log = logging.getLogger(__name__)

#: Output formats of :func:`export_run`.
FORMATS = ("geojson", "geoparquet", "png", "html")
_EXTENSIONS = {"geojson": ".geojson", "geoparquet": ".parquet", "html": ".html"}
#: Fill colour of each congestion level (maps and HTML); cells without data get :data:`NO_DATA_COLOR`.
LEVEL_COLORS = {"free": "#1a9850", "moderate": "#fdd835", "heavy": "#f46d43", "severe": "#a50026"}
#: Fill colour of each volume level (a volume channel's maps: busyness, not congestion).
VOLUME_COLORS = {"quiet": "#deebf7", "normal": "#9ecae1", "busy": "#3182bd", "peak": "#08306b"}
NO_DATA_COLOR = "#bdbdbd"
#: Columns of the ``rows`` statement (one published forecast row with its cell).
ROW_COLUMNS = (
    "cell_id",
    "target_time",
    "horizon",
    "channel",
    "value",
    "lower",
    "upper",
    "congestion_index",
    "congestion_level",
    "volume_index",
    "volume_level",
    "has_data",
    "row",
    "col",
    "centroid_lon",
    "centroid_lat",
    "polygon_wkt",
)
#: Columns of the ``cells`` statement (every grid cell of a run).
CELL_COLUMNS = ("cell_id", "row", "col", "centroid_lon", "centroid_lat", "polygon_wkt", "has_data", "coverage")
#: Forecast values per cell in the HTML map (key in the page: column of the frame; ``index`` is the
#: channel's own, :func:`channel_scale`).
_HTML_FIELDS = {"value": "value", "lower": "lower", "upper": "upper", "index": "congestion_index"}


@dataclass(frozen=True)
class Scale:
    """How a channel's maps are coloured: congestion (speeds) or volume (counts), :func:`channel_scale`."""

    measure: str
    index: str
    level: str
    levels: tuple[str, ...]
    colors: dict[str, str]
    edges: tuple[float, ...]


def channel_scale(channel: str) -> Scale:
    """The index, level columns, level names and colours of a channel: congestion for speeds, volume otherwise."""
    if is_speed_channel(channel):
        return Scale("congestion", "congestion_index", "congestion_level", LEVELS, LEVEL_COLORS, LEVEL_EDGES)
    return Scale("volume", "volume_index", "volume_level", VOLUME_LEVELS, VOLUME_COLORS, VOLUME_LEVEL_EDGES)


#: Most run ids listed in an "unknown run" message.
_MAX_LISTED = 10
_PNG_DPI = 90


@dataclass(frozen=True)
class RunInfo:
    """One row of ``forecast_runs``: what the maps are titled and grouped by.

    ``channels`` are the exported channels, sorted: the run's, or the one asked for (a channel
    may have no published row at all: its maps are grey). ``target_start`` is the first target
    bin: horizon ``h`` starts at ``target_start + (h - 1) * bin_seconds``.
    """

    run_id: str
    city: str
    model_name: str
    model_version: str
    mlflow_run_id: str | None
    issued_at: pd.Timestamp
    horizon_steps: int
    bin_seconds: int
    target_start: pd.Timestamp
    channels: tuple[str, ...]

    def target_times(self) -> pd.DatetimeIndex:
        """UTC start of every horizon's bin, ``horizon_steps`` of them."""
        return pd.date_range(self.target_start, periods=self.horizon_steps, freq=pd.Timedelta(seconds=self.bin_seconds))


def model_label(model_name: str, model_version: str) -> str:
    """What forecast a run published, for titles: ``traffic-berlin v3``, or ``gbm baseline (traffic-berlin)``."""
    version = str(model_version)
    if version.isdigit():
        return f"{model_name} v{version}"
    if version.startswith("baseline-"):
        return f"{version.removeprefix('baseline-')} baseline ({model_name})"
    return f"{model_name} {version}"


def default_out_dir() -> Path:
    """Folder exports go to when no ``out`` is given: ``<TRAFFIC_HOME>/exports`` (``var/exports``)."""
    return home() / "exports"


# --------------------------------------------------------------------------- reading


def _listed(values: Sequence[str]) -> str:
    shown = list(values[:_MAX_LISTED])
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" (and {more} older)" if more > 0 else "")


def read_run(
    db_path: str | Path | None,
    city: str,
    run_id: str | None = None,
    channel: str | None = None,
) -> tuple[RunInfo, pd.DataFrame, pd.DataFrame]:
    """Read one published run of a city from the catalog (one read-only session).

    Parameters
    ----------
    db_path : str or Path or None
        DuckDB catalog; None = :func:`traffic.config.duckdb_path`.
    city : str
        City name, one of the cities with a published run.
    run_id : str, optional
        A run of the city; default its newest (latest ``issued_at``).
    channel : str, optional
        Only this channel (one of the run's); default every channel of the run.

    Returns
    -------
    run : RunInfo
    rows : pandas.DataFrame
        :data:`ROW_COLUMNS`, one row per published (cell, target_time, channel): only the
        pairs with data (possibly none); ``target_time`` tz-aware UTC.
    cells : pandas.DataFrame
        :data:`CELL_COLUMNS`, every grid cell of the run (with or without data), by ``cell_id``.

    Raises
    ------
    ExportError
        Unknown city, run or channel (the message lists the allowed values), a run without
        cells, or forecast rows whose cell the run does not list.
    FileNotFoundError
        No catalog file.
    """
    from traffic.publish.duckdb_publish import _db, _reader
    from traffic.publish.sql import statements

    sql = statements("export.sql")
    path = _db(db_path)
    # the swapped catalog: a read-only session that never waits for, nor blocks, a publish
    with _reader(path) as con:
        return _read(con, sql, path, city, run_id, channel)


def _read(
    con: Any, sql: dict[str, str], path: Path, city: str, run_id: str | None, channel: str | None
) -> tuple[RunInfo, pd.DataFrame, pd.DataFrame]:
    cities = [r[0] for r in con.execute(sql["cities"]).fetchall()]
    if city not in cities:
        allowed = ", ".join(cities) if cities else "none (nothing is published yet: run `traffic publish CITY`)"
        raise ExportError(f"unknown city {city!r} in {path}; cities with a published run: {allowed}")
    runs = con.execute(sql["runs"], {"city": city}).df()
    ids = runs["run_id"].tolist()
    if run_id is None:
        run_id = ids[0]
    elif run_id not in ids:
        raise ExportError(f"unknown run {run_id!r} of {city} in {path}; runs, newest first: {_listed(ids)}")
    r = runs.loc[runs["run_id"] == run_id].iloc[0]
    channels = sorted(str(c) for c in r["channels"])
    if channel is not None:
        if channel not in channels:
            raise ExportError(f"unknown channel {channel!r} in run {run_id}; channels: {', '.join(channels)}")
        channels = [channel]
    run = RunInfo(
        run_id=str(r["run_id"]),
        city=city,
        model_name=str(r["model_name"]),
        model_version=str(r["model_version"]),
        mlflow_run_id=None if pd.isna(r["mlflow_run_id"]) else str(r["mlflow_run_id"]),
        issued_at=pd.Timestamp(r["issued_at"]).tz_convert("UTC"),
        horizon_steps=int(r["horizon_steps"]),
        bin_seconds=int(r["bin_seconds"]),
        target_start=pd.Timestamp(r["target_start"]).tz_convert("UTC"),
        channels=tuple(channels),
    )
    cells = con.execute(sql["cells"], {"run_id": run_id}).df()
    if cells.empty:
        raise ExportError(f"run {run_id} in {path} lists no grid cells in run_cells")
    params = {"run_id": run_id, "channel": channel}
    rows = con.execute(sql["rows"], params).df()
    (n_rows,) = con.execute(sql["n_rows"], params).fetchone()
    if len(rows) != n_rows:
        raise ExportError(
            f"run {run_id} in {path}: {n_rows - len(rows)} of its {n_rows} forecast rows are on cells "
            "that its run_cells do not list"
        )
    return run, rows, cells


# --------------------------------------------------------------------------- frame


def _orient_ccw(geoms: Any) -> Any:
    import shapely

    return shapely.orient_polygons(geoms)  # exterior rings counter-clockwise (RFC 7946 right-hand rule)


def to_geodataframe(rows: pd.DataFrame, run: RunInfo, timezone: str = "UTC") -> Any:
    """The long export frame of a run (see the module docstring), EPSG:4326.

    Parameters
    ----------
    rows : pandas.DataFrame
        As returned by :func:`read_run`.
    run : RunInfo
    timezone : str
        IANA zone of ``target_time_local``.

    Returns
    -------
    geopandas.GeoDataFrame
        Sorted by ``target_time, channel, cell_id``; one row per published row (none for a
        cell without data).

    Raises
    ------
    ExportError
        If a column of :data:`ROW_COLUMNS` is missing or a horizon lies outside the run.
    """
    import geopandas as gpd

    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ExportError(f"run {run.run_id}: rows lack columns {missing}; needed: {list(ROW_COLUMNS)}")
    horizon = rows["horizon"].to_numpy(np.int64)
    bad = np.unique(horizon[(horizon < 1) | (horizon > run.horizon_steps)])
    if bad.size:
        raise ExportError(f"run {run.run_id}: horizons {bad.tolist()} outside 1..{run.horizon_steps}")
    label = np.empty(run.horizon_steps, dtype=object)
    for g in horizon_groups(run.bin_seconds, run.horizon_steps):
        label[g.steps] = g.label
    tt = pd.to_datetime(rows["target_time"], utc=True)
    local = {t: t.tz_convert(timezone).isoformat() for t in tt.unique()}
    df = pd.DataFrame(
        {
            "run_id": run.run_id,
            "city": run.city,
            "cell_id": rows["cell_id"].astype("int32"),
            "row": rows["row"].astype("int32"),
            "col": rows["col"].astype("int32"),
            "channel": rows["channel"].astype(str),
            "horizon": rows["horizon"].astype("int16"),
            "horizon_group": label[horizon - 1].astype(str),
            "target_time": tt,
            "target_time_local": tt.map(local).astype(str),
            "value": rows["value"].astype("float64"),
            "lower": rows["lower"].astype("float64"),  # NULL (NaN) where the run has no bounds
            "upper": rows["upper"].astype("float64"),
            "congestion_index": rows["congestion_index"].astype("float64"),
            "congestion_level": rows["congestion_level"].astype(object).where(rows["congestion_level"].notna(), None),
            "volume_index": rows["volume_index"].astype("float64"),
            "volume_level": rows["volume_level"].astype(object).where(rows["volume_level"].notna(), None),
            "has_data": rows["has_data"].astype(bool),
            "centroid_lon": rows["centroid_lon"].astype("float64"),
            "centroid_lat": rows["centroid_lat"].astype("float64"),
        }
    )
    geometry = _orient_ccw(gpd.GeoSeries.from_wkt(rows["polygon_wkt"].to_numpy(), crs=4326).to_numpy())
    gdf = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    return gdf.sort_values(["target_time", "channel", "cell_id"], kind="stable").reset_index(drop=True)


def cells_geodataframe(cells: pd.DataFrame) -> Any:
    """Every grid cell of a run, EPSG:4326: what the PNG and HTML maps draw.

    Parameters
    ----------
    cells : pandas.DataFrame
        As returned by :func:`read_run` (:data:`CELL_COLUMNS`).

    Returns
    -------
    geopandas.GeoDataFrame
        ``cell_id, row, col, centroid_lon, centroid_lat, has_data, coverage, geometry``
        (exterior rings counter-clockwise), sorted by ``cell_id``.

    Raises
    ------
    ExportError
        If a column of :data:`CELL_COLUMNS` is missing.
    """
    import geopandas as gpd

    missing = [c for c in CELL_COLUMNS if c not in cells.columns]
    if missing:
        raise ExportError(f"cells lack columns {missing}; needed: {list(CELL_COLUMNS)}")
    df = pd.DataFrame(
        {
            "cell_id": cells["cell_id"].astype("int32"),
            "row": cells["row"].astype("int32"),
            "col": cells["col"].astype("int32"),
            "centroid_lon": cells["centroid_lon"].astype("float64"),
            "centroid_lat": cells["centroid_lat"].astype("float64"),
            "has_data": cells["has_data"].astype(bool),
            "coverage": cells["coverage"].astype("float64"),
        }
    )
    geometry = _orient_ccw(gpd.GeoSeries.from_wkt(cells["polygon_wkt"].to_numpy(), crs=4326).to_numpy())
    gdf = gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")
    return gdf.sort_values("cell_id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- sources

#: Registry attributes that name a source on the maps (its street), the first one present wins.
NAME_ATTRIBUTES = ("name", "street", "street_name", "road", "osm.name", "description")
#: Columns of :func:`read_sources`.
SOURCE_COLUMNS = ("feed", "source_id", "name", "kind", "cell_id", "geometry")


def _source_name(attributes: Any) -> str | None:
    if not isinstance(attributes, str) or not attributes:
        return None
    try:
        attrs = json.loads(attributes)
    except ValueError:
        return None
    for key in NAME_ATTRIBUTES:
        value = attrs.get(key) if isinstance(attrs, dict) else None
        if value not in (None, "", "nan", "None"):
            return str(value)
    return None


def read_sources(city: str, cells: Any, lake: Any = None) -> Any:
    """The sources of a city's feeds (road segments, sensors) cut to the run's grid cells: what the maps draw.

    Each source of each feed's ingested registry (``registry/city=/feed=/registry.parquet``) is
    cut by the cells it crosses: a segment becomes one piece per cell, a sensor stays a point in
    its cell, so each piece is coloured by its own cell's level. Its ``name`` is the first of
    :data:`NAME_ATTRIBUTES` the registry has (a street name), else None (the map shows the id).

    Parameters
    ----------
    city : str
    cells : geopandas.GeoDataFrame
        From :func:`cells_geodataframe`.
    lake : traffic.lake.Lake, optional
        Default :meth:`traffic.lake.Lake.from_config`.

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`SOURCE_COLUMNS` (``kind`` ``line`` or ``point``), EPSG:4326; empty when the city has
        no city file or no ingested registry (the maps then draw the cells alone).
    """
    import geopandas as gpd
    import shapely

    from traffic.config import load_city
    from traffic.grid.assign import read_lake_registry

    empty = gpd.GeoDataFrame({c: [] for c in SOURCE_COLUMNS[:-1]}, geometry=[], crs="EPSG:4326")
    try:
        c = load_city(city)
    except (FileNotFoundError, ValueError):
        return empty
    grid = cells[["cell_id", "geometry"]].reset_index(drop=True)
    parts = []
    for feed in c.feeds:
        try:
            reg, _ = read_lake_registry(c, feed.name, lake=lake)
        except FileNotFoundError:
            continue
        reg = reg.reset_index(drop=True)
        pairs = gpd.sjoin(reg[["source_id", "geometry"]], grid, predicate="intersects", how="inner")
        if pairs.empty:
            continue
        left = pairs.index.to_numpy()
        right = pairs["index_right"].to_numpy()
        pieces = shapely.intersection(reg.geometry.to_numpy()[left], grid.geometry.to_numpy()[right])
        names = reg["attributes"].map(_source_name) if "attributes" in reg.columns else pd.Series([None] * len(reg))
        part = gpd.GeoDataFrame(
            {
                "feed": feed.name,
                "source_id": reg["source_id"].to_numpy()[left].astype(str),
                "name": names.to_numpy()[left],
                "cell_id": grid["cell_id"].to_numpy()[right].astype("int32"),
            },
            geometry=pieces,
            crs="EPSG:4326",
        ).explode(index_parts=False)
        part = part[~part.geometry.is_empty & part.geometry.geom_type.isin(["LineString", "Point"])]
        part["kind"] = np.where(part.geometry.geom_type == "Point", "point", "line")
        parts.append(part)
    if not parts:
        return empty
    out = pd.concat(parts, ignore_index=True)[list(SOURCE_COLUMNS)]
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


def cell_places(
    db_path: str | Path | None, city: str, run_id: str, cell_ids: Sequence[int], lake: Any = None, most: int = 2
) -> dict[int, str]:
    """Where each cell is, in words: its road segments / sensors, ``name (id)``, for hotspot lists.

    Parameters
    ----------
    db_path : str or Path or None
        Catalog (read-only) with the run's cells.
    city, run_id : str
    cell_ids : sequence of int
        The cells to name.
    lake : traffic.lake.Lake, optional
        Where the registries are (:func:`read_sources`).
    most : int
        Sources named per cell; more are counted (``+3 more``).

    Returns
    -------
    dict
        ``{cell_id: text}`` for the cells with a source; a source without a name shows its id.
    """
    from traffic.publish.duckdb_publish import _db, _reader
    from traffic.publish.sql import statements

    with _reader(_db(db_path)) as con:
        cells = con.execute(statements("export.sql")["cells"], {"run_id": run_id}).df()
    cells = cells[cells["cell_id"].isin(list(cell_ids))]
    if cells.empty:
        return {}
    src = read_sources(city, cells_geodataframe(cells), lake)
    out: dict[int, str] = {}
    for cell, group in src.groupby("cell_id", sort=False):
        seen = group.drop_duplicates("source_id")
        labels = [
            f"{n} ({i})" if isinstance(n, str) and n else str(i)
            for n, i in zip(seen["name"], seen["source_id"], strict=True)
        ]
        more = len(labels) - most
        out[int(cell)] = ", ".join(labels[:most]) + (f" +{more} more" if more > 0 else "")
    return out


def nice_distance(span_m: float) -> float:
    """A round distance (1, 2 or 5 × 10^n metres) of about a fifth of ``span_m``: the scale bar's length."""
    target = max(span_m / 5.0, 1.0)
    base = 10 ** math.floor(math.log10(target))
    return float(max(m * base for m in (1, 2, 5) if m * base <= target))


def distance_label(metres: float) -> str:
    """``500 m``, ``2 km``."""
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


#: Metres per degree of latitude (and of longitude at the equator), for the scale bar.
METRES_PER_DEGREE = 111_320.0


# --------------------------------------------------------------------------- files


def _city_timezone(city: str) -> str:
    from traffic.publish.duckdb_publish import city_timezone

    return city_timezone(city)


def _written(path: str | Path, write) -> Path:
    """``path`` written atomically by the project's one atomic writer (:func:`traffic.tempfiles.atomic_write`)."""
    from traffic.tempfiles import atomic_write

    atomic_write(str(path), write)
    return Path(path)


def write_geoparquet(gdf: Any, path: str | Path) -> Path:
    """Write the export frame as GeoParquet (EPSG:4326), atomically.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`to_geodataframe`.
    path : str or Path

    Returns
    -------
    Path
    """
    from upath import UPath

    from traffic.lake import write_geoparquet as write_geo

    write_geo(gdf, UPath(path))  # the project's one GeoParquet writer (GeoPandas, atomic)
    return Path(path)


def geojson_dict(gdf: Any) -> dict[str, Any]:
    """RFC 7946 FeatureCollection of the export frame (WGS84 lon/lat, a ``bbox`` per feature).

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`to_geodataframe` (EPSG:4326).

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}``; NaN values are ``null``.
    """
    out = gdf.to_crs(4326).copy()
    out["target_time"] = out["target_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    fc = json.loads(out.to_json(na="null", show_bbox=False, drop_id=True, to_wgs84=False))
    for feature, bounds in zip(fc["features"], out.geometry.bounds.to_numpy(), strict=True):
        feature["bbox"] = [float(v) for v in bounds]  # [west, south, east, north]
    return fc


def write_geojson(gdf: Any, path: str | Path) -> Path:
    """Write :func:`geojson_dict` of the export frame to ``path``, atomically.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
    path : str or Path

    Returns
    -------
    Path
    """
    text = json.dumps(geojson_dict(gdf), separators=(",", ":"), allow_nan=False)
    return _written(path, lambda fh: fh.write(text.encode("utf-8")))


def _time_window(times: pd.Series, bin_seconds: int, timezone: str) -> str:
    start = times.min().tz_convert(timezone)
    end = (times.max() + pd.Timedelta(seconds=bin_seconds)).tz_convert(timezone)
    zone = start.strftime("%Z")
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} {zone}"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} {zone}"


def worst_levels(group: pd.DataFrame, cell_ids: np.ndarray, scale: Scale | None = None) -> np.ndarray:
    """Level name of each cell's worst index over the rows of ``group``.

    Parameters
    ----------
    group : pandas.DataFrame
        ``cell_id`` and the scale's index column (e.g. one channel, one horizon group).
    cell_ids : np.ndarray
        Cells to report, in order.
    scale : Scale, optional
        The channel's :func:`channel_scale`; default congestion.

    Returns
    -------
    np.ndarray
        Object array of level names, ``None`` where the cell has no index in the group.
    """
    scale = scale or channel_scale("speed_kmh")
    worst = group.groupby("cell_id")[scale.index].max().reindex(cell_ids)
    codes = congestion_levels(worst.to_numpy(np.float64), scale.edges)
    names = np.array([*scale.levels, None], dtype=object)
    return names[np.where(codes < 0, len(scale.levels), codes)]


def _draw_cells(ax: Any, cells: Any, levels: np.ndarray, colors: dict[str, str], sources: Any = None) -> None:
    """Cells coloured by level, then the sources over them (each piece in its cell's colour), scale bar, north arrow."""
    from matplotlib.collections import LineCollection, PolyCollection

    verts = [np.asarray(g.exterior.coords) for g in cells.geometry]
    fills = [NO_DATA_COLOR if lv is None else colors[lv] for lv in levels]
    has_sources = sources is not None and len(sources) > 0
    ax.add_collection(
        PolyCollection(verts, facecolors=fills, edgecolors="white", linewidths=0.3, alpha=0.45 if has_sources else 1.0)
    )
    x0, y0, x1, y1 = cells.total_bounds
    if has_sources:
        level_of = dict(zip(cells["cell_id"].to_numpy().tolist(), levels.tolist(), strict=True))
        color = np.array(
            [NO_DATA_COLOR if level_of.get(c) is None else colors[level_of[c]] for c in sources["cell_id"]],
            dtype=object,
        )
        line = (sources["kind"] == "line").to_numpy()
        if line.any():
            segs = [np.asarray(g.coords) for g in sources.geometry[line]]
            ax.add_collection(
                LineCollection(segs, colors=list(color[line]), linewidths=2.5, zorder=3, antialiaseds=False)
            )
        if (~line).any():
            pts = sources.geometry[~line]
            ax.scatter(pts.x, pts.y, s=14, c=list(color[~line]), edgecolors="black", linewidths=0.4, zorder=4)
    pad_x, pad_y = 0.02 * (x1 - x0 or 1e-3), 0.02 * (y1 - y0 or 1e-3)
    ax.set_xlim(x0 - pad_x, x1 + pad_x)
    ax.set_ylim(y0 - pad_y, y1 + pad_y)
    k = max(math.cos(math.radians((y0 + y1) / 2)), 1e-6)
    ax.set_aspect(1.0 / k)
    ax.locator_params(nbins=4)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("longitude (°E)", fontsize=7)
    ax.set_ylabel("latitude (°N)", fontsize=7)
    # scale bar (bottom left) and north arrow (top right)
    metres = nice_distance((x1 - x0) * k * METRES_PER_DEGREE)
    length = metres / (k * METRES_PER_DEGREE)
    bx, by = x0 + 0.04 * (x1 - x0), y0 + 0.05 * (y1 - y0)
    ax.plot([bx, bx + length], [by, by], color="black", linewidth=2.5, solid_capstyle="butt", zorder=5)
    ax.text(bx + length / 2, by + 0.015 * (y1 - y0), distance_label(metres), ha="center", va="bottom", fontsize=7)
    nx, ny = x1 - 0.05 * (x1 - x0), y1 - 0.14 * (y1 - y0)
    ax.annotate(
        "N",
        xy=(nx, ny + 0.1 * (y1 - y0)),
        xytext=(nx, ny),
        ha="center",
        va="top",
        fontsize=8,
        fontweight="bold",
        arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.2},
        zorder=5,
    )


def write_pngs(
    gdf: Any,
    cells: Any,
    run: RunInfo,
    out_dir: str | Path,
    *,
    timezone: str = "UTC",
    suffix: str = "",
    sources: Any = None,
) -> list[Path]:
    """One PNG map per horizon group of the run, one panel per channel of ``run.channels``.

    Every cell of ``cells`` is drawn: coloured by its worst level in the group (congestion for a
    speed channel, volume for a volume channel: :func:`channel_scale`), grey where it has no row
    (or no index) in it; the city's road segments (lines) and sensors (points) of ``sources``
    over them in their cell's colour, with lon/lat ticks, a scale bar and a north arrow.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`to_geodataframe` (the published rows).
    cells : geopandas.GeoDataFrame
        From :func:`cells_geodataframe` (every grid cell of the run).
    run : RunInfo
    out_dir : str or Path
        Folder of the files ``<run_id><suffix>_<tag>.png``.
    timezone : str
        Zone of the time window in the titles.
    suffix : str
        Inserted after the run id (e.g. ``"_t.car"`` for a one-channel export).
    sources : geopandas.GeoDataFrame, optional
        From :func:`read_sources`; None or empty draws the cells alone.

    Returns
    -------
    list of Path
        The files, in horizon-group order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    out_dir = Path(out_dir)
    cells = cells.sort_values("cell_id")
    cell_ids = cells["cell_id"].to_numpy()
    channels = list(run.channels)
    times = run.target_times()
    scales = {ch: channel_scale(ch) for ch in channels}
    handles = []
    for measure in dict.fromkeys(sc.measure for sc in scales.values()):
        sc = next(v for v in scales.values() if v.measure == measure)
        handles += [Patch(facecolor=sc.colors[lv], label=f"{lv} ({measure})") for lv in sc.levels]
    handles.append(Patch(facecolor=NO_DATA_COLOR, label="no data"))
    paths = []
    for group in horizon_groups(run.bin_seconds, run.horizon_steps):
        steps = range(group.steps.start + 1, group.steps.stop + 1)
        rows = gdf[gdf["horizon"].isin(steps)]  # may be empty: then every cell is grey
        n = len(channels)
        fig = Figure(figsize=(4.2 * n + 1.6, 4.8))
        window = _time_window(pd.Series(times[group.steps]), run.bin_seconds, timezone)
        fig.suptitle(
            f"{run.city} · run {run.run_id} · {model_label(run.model_name, run.model_version)} · {group.label} ahead"
            f"\n{window} · worst level per cell and street segment / sensor",
            fontsize=10,
        )
        for i, ch in enumerate(channels):
            ax = fig.add_subplot(1, n, i + 1)
            sc = scales[ch]
            _draw_cells(ax, cells, worst_levels(rows[rows["channel"] == ch], cell_ids, sc), sc.colors, sources)
            ax.set_title(f"{ch} ({sc.measure})", fontsize=9)
        fig.legend(handles=handles, loc="center right", fontsize=8, title="level", title_fontsize=8)
        fig.subplots_adjust(left=0.06, right=1.0 - 1.4 / (4.2 * n + 1.6), top=0.83, bottom=0.08, wspace=0.25)
        FigureCanvasAgg(fig)
        path = out_dir / f"{run.run_id}{suffix}_{group_tag(group.label)}.png"
        paths.append(_written(path, lambda fh, fig=fig: fig.savefig(fh, dpi=_PNG_DPI, format="png")))
    return paths


# --------------------------------------------------------------------------- html


def _nan_to_none(a: np.ndarray, digits: int = 3) -> list[Any]:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in a.ravel()]


def html_payload(gdf: Any, cells: Any, run: RunInfo, timezone: str = "UTC", sources: Any = None) -> dict[str, Any]:
    """The data the HTML map embeds: every grid cell (outline), the sources, times and per-channel matrices.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`to_geodataframe` (the published rows).
    cells : geopandas.GeoDataFrame
        From :func:`cells_geodataframe` (every grid cell of the run).
    run : RunInfo
    timezone : str
    sources : geopandas.GeoDataFrame, optional
        From :func:`read_sources`: drawn over the cells in their cell's colour.

    Returns
    -------
    dict
        ``cells`` (``[cell_id, row, col, [[lon, lat], ...]]``, every grid cell), ``sources``
        (``[feed, source_id, name, kind, cell index, coordinates]``: a line's ``[[lon, lat], ...]``
        or a point's ``[lon, lat]``), ``times`` (local ISO strings, one per horizon) and
        ``time_labels`` (the same for display), ``groups`` (horizon-group label per horizon),
        ``channels`` (``run.channels``), ``scales[channel]`` (``measure``, ``levels``, ``colors``:
        congestion for speeds, volume for counts) and ``data[channel][field]`` as
        ``horizon × cell`` lists (``value``, ``lower``, ``upper``, ``index`` (the channel's own),
        ``level`` (a code into its scale's levels); ``null`` where the cell has no row or the
        value is NULL).
    """
    cells = cells.sort_values("cell_id")
    cell_ids = cells["cell_id"].to_numpy()
    horizons = np.arange(1, run.horizon_steps + 1)
    times = run.target_times().tz_convert(timezone)
    labels = np.empty(run.horizon_steps, dtype=object)
    for g in horizon_groups(run.bin_seconds, run.horizon_steps):
        labels[g.steps] = g.label
    data: dict[str, Any] = {}
    scales: dict[str, Any] = {}
    for ch in run.channels:
        sc = channel_scale(ch)
        level_code = {lv: i for i, lv in enumerate(sc.levels)}
        sub = gdf[gdf["channel"] == ch]
        entry: dict[str, Any] = {}
        for key, col in {**_HTML_FIELDS, "index": sc.index}.items():
            m = _matrix(sub, col, horizons, cell_ids)
            entry[key] = [_nan_to_none(m[k]) for k in range(len(horizons))]
        m = _matrix(sub.assign(code=sub[sc.level].map(level_code)), "code", horizons, cell_ids)
        entry["level"] = [[None if not np.isfinite(v) else int(v) for v in m[k]] for k in range(len(horizons))]
        data[ch] = entry
        scales[ch] = {"measure": sc.measure, "levels": list(sc.levels), "colors": [sc.colors[lv] for lv in sc.levels]}
    outlines = [
        [int(c), int(r), int(k), [[round(x, 6), round(y, 6)] for x, y in g.exterior.coords]]
        for c, r, k, g in zip(cells["cell_id"], cells["row"], cells["col"], cells.geometry, strict=True)
    ]
    position = {int(c): i for i, c in enumerate(cell_ids)}
    drawn = []
    for row in [] if sources is None else sources.itertuples(index=False):
        g = row.geometry
        coords = (
            [round(g.x, 6), round(g.y, 6)] if row.kind == "point" else [[round(x, 6), round(y, 6)] for x, y in g.coords]
        )
        name = None if row.name is None or (isinstance(row.name, float) and math.isnan(row.name)) else str(row.name)
        drawn.append([row.feed, row.source_id, name, row.kind, position.get(int(row.cell_id)), coords])
    return {
        "city": run.city,
        "run_id": run.run_id,
        "model": model_label(run.model_name, run.model_version),
        "issued_local": f"{run.issued_at.tz_convert(timezone):%Y-%m-%d %H:%M %Z}",
        "timezone": timezone,
        "levels": list(LEVELS),
        "colors": [LEVEL_COLORS[lv] for lv in LEVELS],
        "no_data_color": NO_DATA_COLOR,
        "times": [t.isoformat() for t in times],
        "time_labels": [f"{t:%a %Y-%m-%d %H:%M %Z}" for t in times],
        "groups": [str(g) for g in labels],
        "channels": list(run.channels),
        "scales": scales,
        "fields": [*_HTML_FIELDS, "level"],
        "cells": outlines,
        "sources": drawn,
        "metres_per_degree": METRES_PER_DEGREE,
        "data": data,
    }


def _matrix(rows: pd.DataFrame, col: str, horizons: np.ndarray, cell_ids: np.ndarray) -> np.ndarray:
    """``horizon × cell`` float matrix of ``col`` (NaN where a cell has no row at a horizon)."""
    out = np.full((len(horizons), len(cell_ids)), np.nan)
    if rows.empty:
        return out
    hi = np.searchsorted(horizons, rows["horizon"].to_numpy(np.int64))
    order = np.argsort(cell_ids)
    ci = order[np.searchsorted(cell_ids, rows["cell_id"].to_numpy(), sorter=order)]
    out[hi, ci] = pd.to_numeric(rows[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return out


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 12px; color: #222; }
#bar { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
#wrap { display: flex; gap: 16px; align-items: flex-start; }
#map { width: 640px; height: 520px; background: #f4f4f4; border: 1px solid #ccc; }
#map polygon { stroke: #fff; stroke-width: 0.6; vector-effect: non-scaling-stroke; cursor: pointer; }
#map.sources polygon { fill-opacity: 0.4; }
#map polygon.sel { stroke: #000; stroke-width: 2; }
#map polyline.src { fill: none; stroke-width: 3.5; stroke-linecap: round; vector-effect: non-scaling-stroke; cursor: pointer; }
#map circle.src { stroke: #000; stroke-width: 0.8; vector-effect: non-scaling-stroke; cursor: pointer; }
#map .src.sel { stroke-width: 6; }
#map text { font: 22px system-ui, sans-serif; fill: #333; }
#map .axis { stroke: #666; stroke-width: 1; vector-effect: non-scaling-stroke; }
#side { min-width: 220px; }
.sw { display: inline-block; width: 14px; height: 14px; margin-right: 6px; vertical-align: -2px; }
#info { margin-top: 12px; white-space: pre; font-family: ui-monospace, monospace; font-size: 12px; }
</style>
</head>
<body>
<h3 id="title"></h3>
<div id="bar">
<label>channel <select id="channel"></select></label>
<label>target time <input id="step" type="range" min="0" value="0" step="1"></label>
<span id="when"></span>
</div>
<div id="wrap">
<svg id="map" preserveAspectRatio="xMidYMid meet" shape-rendering="geometricPrecision"></svg>
<div id="side"><b id="legend-title">level</b><div id="legend"></div><div id="info">hover or click a cell, segment or sensor</div></div>
</div>
<p id="status"></p>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
$("title").textContent = D.city + " · run " + D.run_id + " · " + D.model + " · issued " + D.issued_local;
// equirectangular projection scaled by cos(latitude) so that cells keep their shape
let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
for (const c of D.cells) for (const [x, y] of c[3]) {
  x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
}
const k = Math.cos((y0 + y1) / 2 * Math.PI / 180), S = 1000 / Math.max((x1 - x0) * k, y1 - y0, 1e-9);
const px = (x) => ((x - x0) * k * S).toFixed(2), py = (y) => ((y1 - y) * S).toFixed(2);
const W = (x1 - x0) * k * S, H = (y1 - y0) * S;
const svg = $("map");
svg.setAttribute("viewBox", "-110 -20 " + (W + 140).toFixed(1) + " " + (H + 100).toFixed(1));
let html = D.cells.map((c, i) =>
  '<polygon data-i="' + i + '" points="' + c[3].map(([x, y]) => px(x) + "," + py(y)).join(" ") + '"></polygon>').join("");
// road segments as lines, sensors as points, over the cells
html += D.sources.map((s, j) => s[3] === "point"
  ? '<circle class="src" data-s="' + j + '" cx="' + px(s[5][0]) + '" cy="' + py(s[5][1]) + '" r="7"></circle>'
  : '<polyline class="src" data-s="' + j + '" points="' + s[5].map(([x, y]) => px(x) + "," + py(y)).join(" ") + '"></polyline>').join("");
// lon/lat ticks on the frame
function ticks(lo, hi) {
  const span = hi - lo, raw = span / 4, base = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * base).find((v) => v >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toFixed(6));
  return out;
}
html += '<rect class="axis" x="0" y="0" width="' + W.toFixed(1) + '" height="' + H.toFixed(1) + '" fill="none"></rect>';
for (const v of ticks(x0, x1)) html += '<line class="axis" x1="' + px(v) + '" y1="' + H.toFixed(1) + '" x2="' + px(v) +
  '" y2="' + (H + 10).toFixed(1) + '"></line><text class="tick" x="' + px(v) + '" y="' + (H + 34).toFixed(1) +
  '" text-anchor="middle">' + v.toFixed(2) + '°E</text>';
for (const v of ticks(y0, y1)) html += '<line class="axis" x1="-10" y1="' + py(v) + '" x2="0" y2="' + py(v) +
  '"></line><text class="tick" x="-14" y="' + py(v) + '" text-anchor="end" dominant-baseline="middle">' + v.toFixed(2) + '°N</text>';
// scale bar: a round distance of about a fifth of the map's width
const widthM = (x1 - x0) * k * D.metres_per_degree, fifth = Math.max(widthM / 5, 1);
const b10 = Math.pow(10, Math.floor(Math.log10(fifth)));
const metres = [5, 2, 1].map((m) => m * b10).find((v) => v <= fifth);
const barW = metres / ((x1 - x0) * k * D.metres_per_degree) * W;
html += '<g id="scalebar"><rect x="20" y="' + (H - 40).toFixed(1) + '" width="' + barW.toFixed(1) + '" height="8" fill="#000"></rect>' +
  '<text x="' + (20 + barW / 2).toFixed(1) + '" y="' + (H - 50).toFixed(1) + '" text-anchor="middle">' +
  (metres >= 1000 ? metres / 1000 + " km" : metres + " m") + '</text></g>';
html += '<g id="north"><path d="M ' + (W - 30).toFixed(1) + ' 30 l -14 36 l 14 -9 l 14 9 z" fill="#000"></path>' +
  '<text x="' + (W - 30).toFixed(1) + '" y="90" text-anchor="middle">N</text></g>';
svg.innerHTML = html;
if (D.sources.length) svg.classList.add("sources");
const polys = Array.from(svg.querySelectorAll("polygon"));
const srcs = Array.from(svg.querySelectorAll(".src"));
for (const ch of D.channels) $("channel").add(new Option(ch, ch));
$("step").max = String(D.times.length - 1);
let pinned = null;
function kindName(s) { return s[3] === "point" ? "sensor" : "segment"; }
function show(i, j) {
  const ch = $("channel").value, t = +$("step").value, d = D.data[ch], c = D.cells[i], sc = D.scales[ch];
  const lines = [];
  if (j !== null && j !== undefined) {
    const s = D.sources[j];
    lines.push(kindName(s) + " " + s[1] + (s[2] ? " · " + s[2] : "") + " (feed " + s[0] + ")");
  }
  if (c === undefined) { $("info").textContent = lines.concat(["outside the grid"]).join("\\n"); return; }
  const lv = d.level[t][i];
  lines.push("cell " + c[0] + " (row " + c[1] + ", col " + c[2] + ")", ch, D.time_labels[t]);
  for (const f of D.fields) if (f !== "level") lines.push((f === "index" ? sc.measure + " index" : f) + ": " + (d[f][t][i] === null ? "–" : d[f][t][i]));
  lines.push("level: " + (lv === null ? "no data" : sc.levels[lv]));
  $("info").textContent = lines.join("\\n");
}
function legend() {
  const sc = D.scales[$("channel").value];
  $("legend-title").textContent = sc.measure === "volume" ? "volume level (share of the usual peak)" : "congestion level (speed against free flow)";
  $("legend").innerHTML = sc.levels.map((lv, i) => '<div><span class="sw" style="background:' + sc.colors[i] + '"></span>' + lv + "</div>")
    .join("") + '<div><span class="sw" style="background:' + D.no_data_color + '"></span>no data</div>';
}
function draw() {
  const ch = $("channel").value, t = +$("step").value, lv = D.data[ch].level[t], sc = D.scales[ch];
  const color = (code) => code === null || code === undefined ? D.no_data_color : sc.colors[code];
  polys.forEach((p, i) => {
    p.setAttribute("fill", color(lv[i]));
    p.dataset.level = lv[i] === null ? "none" : sc.levels[lv[i]];
  });
  srcs.forEach((e) => {
    const i = D.sources[+e.dataset.s][4], code = i === null ? null : lv[i];
    e.setAttribute(e.tagName === "circle" ? "fill" : "stroke", color(code));
    e.dataset.level = code === null || code === undefined ? "none" : sc.levels[code];
  });
  legend();
  $("when").textContent = D.time_labels[t] + "  (" + (D.groups[t] || "") + " ahead, step " + (t + 1) + ")";
  $("status").textContent = "drawn " + polys.length + " cells, " + srcs.length + " sources";
  if (pinned !== null) show(pinned[0], pinned[1]);
}
function hitOf(e) {
  if (e.target.dataset.s !== undefined) { const j = +e.target.dataset.s; return [D.sources[j][4], j]; }
  if (e.target.dataset.i !== undefined) return [+e.target.dataset.i, null];
  return null;
}
svg.addEventListener("mouseover", (e) => { const hit = hitOf(e); if (pinned === null && hit) show(hit[0], hit[1]); });
svg.addEventListener("click", (e) => {
  polys.concat(srcs).forEach((p) => p.classList.remove("sel"));
  const hit = hitOf(e);
  pinned = hit && !(pinned && pinned[0] === hit[0] && pinned[1] === hit[1]) ? hit : null;
  if (pinned !== null) { e.target.classList.add("sel"); show(pinned[0], pinned[1]); }
});
$("channel").addEventListener("change", draw);
$("step").addEventListener("input", draw);
draw();
</script>
</body>
</html>
"""


def render_html(payload: dict[str, Any]) -> str:
    """Self-contained HTML map of :func:`html_payload`: no network, data inline as JSON.

    Parameters
    ----------
    payload : dict

    Returns
    -------
    str
    """
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c")  # nothing inside the JSON can close the <script>
    title = html_lib.escape(f"{payload['city']} · {payload['run_id']} · congestion forecast")
    return _HTML.replace("__TITLE__", title).replace("__DATA__", data)


def write_html(
    gdf: Any, cells: Any, run: RunInfo, path: str | Path, *, timezone: str = "UTC", sources: Any = None
) -> Path:
    """Write the self-contained HTML map of the export frame, atomically.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`to_geodataframe`.
    cells : geopandas.GeoDataFrame
        From :func:`cells_geodataframe`: every cell is drawn.
    run : RunInfo
    path : str or Path
    timezone : str
    sources : geopandas.GeoDataFrame, optional
        From :func:`read_sources`: road segments and sensors drawn over the cells.

    Returns
    -------
    Path
    """
    text = render_html(html_payload(gdf, cells, run, timezone, sources))
    return _written(path, lambda fh: fh.write(text.encode("utf-8")))


# --------------------------------------------------------------------------- entry points


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is one of :data:`FORMATS`.

    Parameters
    ----------
    fmt : str

    Returns
    -------
    str

    Raises
    ------
    ExportError
        Naming the format and listing :data:`FORMATS`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    return fmt


def export_run(
    city: str,
    fmt: str,
    *,
    run_id: str | None = None,
    out: str | Path | None = None,
    channel: str | None = None,
    db_path: str | Path | None = None,
    timezone: str | None = None,
    lake: Any = None,
) -> list[Path]:
    """Export a published run of a city as files.

    Parameters
    ----------
    city : str
    fmt : {"geojson", "geoparquet", "png", "html"}
    run_id : str, optional
        Default the city's newest run.
    out : str or Path, optional
        For ``png`` a folder; otherwise a file, or an existing folder (or a path ending in
        ``/``) to put ``<run_id>[_<channel>].<ext>`` in. Default :func:`default_out_dir`.
    channel : str, optional
        Only this channel.
    db_path : str or Path, optional
        Catalog; default :func:`traffic.config.duckdb_path`.
    timezone : str, optional
        Zone of local times; default the city file's.
    lake : traffic.lake.Lake, optional
        Where the city's source registries are (the maps draw its segments and sensors,
        :func:`read_sources`); default :meth:`traffic.lake.Lake.from_config`.

    Returns
    -------
    list of Path
        Files written.

    Raises
    ------
    ExportError
        Unknown format, city, run or channel.
    """
    check_format(fmt)
    run, rows, cell_rows = read_run(db_path, city, run_id, channel)
    tz = timezone or _city_timezone(city)
    gdf = to_geodataframe(rows, run, tz)
    suffix = "" if channel is None else "_" + _safe(channel)
    target = Path(out) if out is not None else default_out_dir()
    if fmt == "png":
        grid = cells_geodataframe(cell_rows)
        sources = read_sources(city, grid, lake)
        return write_pngs(gdf, grid, run, target, timezone=tz, suffix=suffix, sources=sources)
    if out is None or target.is_dir() or str(out).endswith(("/", os.sep)):
        target = target / f"{run.run_id}{suffix}{_EXTENSIONS[fmt]}"
    if fmt == "geojson":
        return [write_geojson(gdf, target)]
    if fmt == "geoparquet":
        return [write_geoparquet(gdf, target)]
    grid = cells_geodataframe(cell_rows)
    return [write_html(gdf, grid, run, target, timezone=tz, sources=read_sources(city, grid, lake))]


def _safe(text: str) -> str:
    from traffic.registry.plots import safe_name

    return safe_name(text)


def log_maps(mlflow_run_id: str, paths: Sequence[str | Path], *, tracking_uri: str | None = None) -> list[str]:
    """Log map files to an MLflow run under the artifact folder ``maps``.

    Parameters
    ----------
    mlflow_run_id : str
        The MLflow run (e.g. the published run's ``mlflow_run_id``).
    paths : sequence of path
    tracking_uri : str, optional
        Default :func:`traffic.config.mlflow_uri`.

    Returns
    -------
    list of str
        Artifact paths (``maps/<file name>``).
    """
    import mlflow

    from traffic.config import mlflow_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri or mlflow_uri())
    logged = []
    for p in paths:
        client.log_artifact(mlflow_run_id, str(p), artifact_path="maps")
        logged.append(f"maps/{Path(p).name}")
    return logged


def log_published_maps(
    db_path: str | Path | None,
    city: str,
    run_id: str,
    mlflow_run_id: str | None,
    *,
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    lake: Any = None,
) -> list[str]:
    """After a publish: write the run's PNG maps and log them to its MLflow run; never raises.

    Any failure (no MLflow run id, unreachable tracking server, unreadable catalog) is logged
    as a warning and gives an empty list, so that a map can never fail a publish.

    Parameters
    ----------
    db_path : str or Path or None
        Catalog the run was published to.
    city, run_id : str
    mlflow_run_id : str or None
        MLflow run to log to; None logs nothing.
    out_dir : str or Path, optional
        Where the PNGs are written; default :func:`default_out_dir`.
    tracking_uri : str, optional
    lake : traffic.lake.Lake, optional
        Where the city's source registries are (:func:`read_sources`).

    Returns
    -------
    list of str
        Artifact paths logged.
    """
    if not mlflow_run_id:
        log.warning("run %s has no MLflow run id; its maps are not logged", run_id)
        return []
    try:
        run, rows, cells = read_run(db_path, city, run_id)
        tz = _city_timezone(city)
        gdf, grid = to_geodataframe(rows, run, tz), cells_geodataframe(cells)
        sources = read_sources(city, grid, lake)
        paths = write_pngs(gdf, grid, run, out_dir or default_out_dir(), timezone=tz, sources=sources)
        return log_maps(mlflow_run_id, paths, tracking_uri=tracking_uri)
    except Exception as exc:  # maps are a by-product: a publish must never fail over them
        log.warning(
            "maps of run %s not logged to MLflow run %s: %s: %s", run_id, mlflow_run_id, type(exc).__name__, exc
        )
        return []
