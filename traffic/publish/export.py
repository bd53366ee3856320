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
from traffic.publish.congestion import LEVELS, congestion_levels

log = logging.getLogger(__name__)

#: Output formats of :func:`export_run`.
FORMATS = ("geojson", "geoparquet", "png", "html")
_EXTENSIONS = {"geojson": ".geojson", "geoparquet": ".parquet", "html": ".html"}
#: Fill colour of each congestion level (maps and HTML); cells without data get :data:`NO_DATA_COLOR`.
LEVEL_COLORS = {"free": "#1a9850", "moderate": "#fdd835", "heavy": "#f46d43", "severe": "#a50026"}
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
    "has_data",
    "row",
    "col",
    "centroid_lon",
    "centroid_lat",
    "polygon_wkt",
)
#: Columns of the ``cells`` statement (every grid cell of a run).
CELL_COLUMNS = ("cell_id", "row", "col", "centroid_lon", "centroid_lat", "polygon_wkt", "has_data", "coverage")
#: Forecast values per cell in the HTML map (key in the page: column of the frame).
_HTML_FIELDS = {"value": "value", "lower": "lower", "upper": "upper", "index": "congestion_index"}
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


def worst_levels(group: pd.DataFrame, cell_ids: np.ndarray) -> np.ndarray:
    """Level name of each cell's worst congestion index over the rows of ``group``.

    Parameters
    ----------
    group : pandas.DataFrame
        ``cell_id, congestion_index`` rows (e.g. one channel, one horizon group).
    cell_ids : np.ndarray
        Cells to report, in order.

    Returns
    -------
    np.ndarray
        Object array of level names, ``None`` where the cell has no index in the group.
    """
    worst = group.groupby("cell_id")["congestion_index"].max().reindex(cell_ids)
    codes = congestion_levels(worst.to_numpy(np.float64))
    names = np.array([*LEVELS, None], dtype=object)
    return names[np.where(codes < 0, len(LEVELS), codes)]


def _draw_cells(ax: Any, cells: Any, levels: np.ndarray) -> None:
    from matplotlib.collections import PolyCollection

    verts = [np.asarray(g.exterior.coords) for g in cells.geometry]
    colors = [NO_DATA_COLOR if lv is None else LEVEL_COLORS[lv] for lv in levels]
    ax.add_collection(PolyCollection(verts, facecolors=colors, edgecolors="white", linewidths=0.3))
    x0, y0, x1, y1 = cells.total_bounds
    pad_x, pad_y = 0.02 * (x1 - x0 or 1e-3), 0.02 * (y1 - y0 or 1e-3)
    ax.set_xlim(x0 - pad_x, x1 + pad_x)
    ax.set_ylim(y0 - pad_y, y1 + pad_y)
    ax.set_aspect(1.0 / max(math.cos(math.radians((y0 + y1) / 2)), 1e-6))
    ax.locator_params(nbins=4)
    ax.tick_params(labelsize=7)


def write_pngs(
    gdf: Any, cells: Any, run: RunInfo, out_dir: str | Path, *, timezone: str = "UTC", suffix: str = ""
) -> list[Path]:
    """One PNG map per horizon group of the run, one panel per channel of ``run.channels``.

    Every cell of ``cells`` is drawn: coloured by its worst level in the group, grey where it
    has no row (or no index) in it.

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
    handles = [Patch(facecolor=LEVEL_COLORS[lv], label=lv) for lv in LEVELS]
    handles.append(Patch(facecolor=NO_DATA_COLOR, label="no data"))
    paths = []
    for group in horizon_groups(run.bin_seconds, run.horizon_steps):
        steps = range(group.steps.start + 1, group.steps.stop + 1)
        rows = gdf[gdf["horizon"].isin(steps)]  # may be empty: then every cell is grey
        n = len(channels)
        fig = Figure(figsize=(4.2 * n + 1.6, 4.8))
        window = _time_window(pd.Series(times[group.steps]), run.bin_seconds, timezone)
        fig.suptitle(
            f"{run.city} · run {run.run_id} · {group.label} ahead\n{window} · worst congestion level per cell",
            fontsize=10,
        )
        for i, ch in enumerate(channels):
            ax = fig.add_subplot(1, n, i + 1)
            _draw_cells(ax, cells, worst_levels(rows[rows["channel"] == ch], cell_ids))
            ax.set_title(ch, fontsize=9)
        fig.legend(handles=handles, loc="center right", fontsize=8, title="level", title_fontsize=8)
        fig.subplots_adjust(left=0.06, right=1.0 - 1.4 / (4.2 * n + 1.6), top=0.83, bottom=0.08, wspace=0.25)
        FigureCanvasAgg(fig)
        path = out_dir / f"{run.run_id}{suffix}_{group_tag(group.label)}.png"
        paths.append(_written(path, lambda fh, fig=fig: fig.savefig(fh, dpi=_PNG_DPI, format="png")))
    return paths


# --------------------------------------------------------------------------- html


def _nan_to_none(a: np.ndarray, digits: int = 3) -> list[Any]:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in a.ravel()]


def html_payload(gdf: Any, cells: Any, run: RunInfo, timezone: str = "UTC") -> dict[str, Any]:
    """The data the HTML map embeds: every grid cell (outline), times and per-channel matrices.

    Parameters
    ----------
    gdf : geopandas.GeoDataFrame
        From :func:`to_geodataframe` (the published rows).
    cells : geopandas.GeoDataFrame
        From :func:`cells_geodataframe` (every grid cell of the run).
    run : RunInfo
    timezone : str

    Returns
    -------
    dict
        ``cells`` (``[cell_id, row, col, [[lon, lat], ...]]``, every grid cell), ``times``
        (local ISO strings, one per horizon) and ``time_labels`` (the same for display),
        ``groups`` (horizon-group label per horizon), ``channels`` (``run.channels``) and
        ``data[channel][field]`` as ``horizon × cell`` lists (``value``, ``lower``, ``upper``,
        ``index``, ``level``; ``null`` where the cell has no row or the value is NULL).
    """
    cells = cells.sort_values("cell_id")
    cell_ids = cells["cell_id"].to_numpy()
    horizons = np.arange(1, run.horizon_steps + 1)
    times = run.target_times().tz_convert(timezone)
    labels = np.empty(run.horizon_steps, dtype=object)
    for g in horizon_groups(run.bin_seconds, run.horizon_steps):
        labels[g.steps] = g.label
    level_code = {lv: i for i, lv in enumerate(LEVELS)}
    data: dict[str, Any] = {}
    for ch in run.channels:
        sub = gdf[gdf["channel"] == ch]
        entry: dict[str, Any] = {}
        for key, col in _HTML_FIELDS.items():
            m = _matrix(sub, col, horizons, cell_ids)
            entry[key] = [_nan_to_none(m[k]) for k in range(len(horizons))]
        m = _matrix(sub.assign(code=sub["congestion_level"].map(level_code)), "code", horizons, cell_ids)
        entry["level"] = [[None if not np.isfinite(v) else int(v) for v in m[k]] for k in range(len(horizons))]
        data[ch] = entry
    outlines = [
        [int(c), int(r), int(k), [[round(x, 6), round(y, 6)] for x, y in g.exterior.coords]]
        for c, r, k, g in zip(cells["cell_id"], cells["row"], cells["col"], cells.geometry, strict=True)
    ]
    return {
        "city": run.city,
        "run_id": run.run_id,
        "model": f"{run.model_name} v{run.model_version}",
        "issued_local": f"{run.issued_at.tz_convert(timezone):%Y-%m-%d %H:%M %Z}",
        "timezone": timezone,
        "levels": list(LEVELS),
        "colors": [LEVEL_COLORS[lv] for lv in LEVELS],
        "no_data_color": NO_DATA_COLOR,
        "times": [t.isoformat() for t in times],
        "time_labels": [f"{t:%a %Y-%m-%d %H:%M %Z}" for t in times],
        "groups": [str(g) for g in labels],
        "channels": list(run.channels),
        "fields": [*_HTML_FIELDS, "level"],
        "cells": outlines,
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
#map polygon.sel { stroke: #000; stroke-width: 2; }
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
<svg id="map" preserveAspectRatio="xMidYMid meet" shape-rendering="crispEdges"></svg>
<div id="side"><b>level</b><div id="legend"></div><div id="info">hover or click a cell</div></div>
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
const svg = $("map");
svg.setAttribute("viewBox", "-10 -10 " + ((x1 - x0) * k * S + 20).toFixed(1) + " " + ((y1 - y0) * S + 20).toFixed(1));
svg.innerHTML = D.cells.map((c, i) =>
  '<polygon data-i="' + i + '" points="' + c[3].map(([x, y]) => px(x) + "," + py(y)).join(" ") + '"></polygon>').join("");
const polys = Array.from(svg.querySelectorAll("polygon"));
$("legend").innerHTML = D.levels.map((lv, i) => '<div><span class="sw" style="background:' + D.colors[i] + '"></span>' + lv + "</div>")
  .join("") + '<div><span class="sw" style="background:' + D.no_data_color + '"></span>no data</div>';
for (const ch of D.channels) $("channel").add(new Option(ch, ch));
$("step").max = String(D.times.length - 1);
let pinned = null;
function show(i) {
  const ch = $("channel").value, t = +$("step").value, d = D.data[ch], c = D.cells[i];
  const lv = d.level[t][i];
  const lines = ["cell " + c[0] + " (row " + c[1] + ", col " + c[2] + ")", ch, D.time_labels[t]];
  for (const f of D.fields) if (f !== "level") lines.push(f + ": " + (d[f][t][i] === null ? "–" : d[f][t][i]));
  lines.push("level: " + (lv === null ? "no data" : D.levels[lv]));
  $("info").textContent = lines.join("\\n");
}
function draw() {
  const ch = $("channel").value, t = +$("step").value, lv = D.data[ch].level[t];
  polys.forEach((p, i) => {
    p.setAttribute("fill", lv[i] === null ? D.no_data_color : D.colors[lv[i]]);
    p.dataset.level = lv[i] === null ? "none" : D.levels[lv[i]];
  });
  $("when").textContent = D.time_labels[t] + "  (" + (D.groups[t] || "") + " ahead, step " + (t + 1) + ")";
  $("status").textContent = "drawn " + polys.length + " cells";
  if (pinned !== null) show(pinned);
}
svg.addEventListener("mouseover", (e) => { if (pinned === null && e.target.dataset.i) show(+e.target.dataset.i); });
svg.addEventListener("click", (e) => {
  polys.forEach((p) => p.classList.remove("sel"));
  pinned = e.target.dataset.i && pinned !== +e.target.dataset.i ? +e.target.dataset.i : null;
  if (pinned !== null) { polys[pinned].classList.add("sel"); show(pinned); }
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


def write_html(gdf: Any, cells: Any, run: RunInfo, path: str | Path, *, timezone: str = "UTC") -> Path:
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

    Returns
    -------
    Path
    """
    text = render_html(html_payload(gdf, cells, run, timezone))
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
        return write_pngs(gdf, cells_geodataframe(cell_rows), run, target, timezone=tz, suffix=suffix)
    if out is None or target.is_dir() or str(out).endswith(("/", os.sep)):
        target = target / f"{run.run_id}{suffix}{_EXTENSIONS[fmt]}"
    if fmt == "geojson":
        return [write_geojson(gdf, target)]
    if fmt == "geoparquet":
        return [write_geoparquet(gdf, target)]
    return [write_html(gdf, cells_geodataframe(cell_rows), run, target, timezone=tz)]


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
        paths = write_pngs(gdf, grid, run, out_dir or default_out_dir(), timezone=tz)
        return log_maps(mlflow_run_id, paths, tracking_uri=tracking_uri)
    except Exception as exc:  # maps are a by-product: a publish must never fail over them
        log.warning(
            "maps of run %s not logged to MLflow run %s: %s: %s", run_id, mlflow_run_id, type(exc).__name__, exc
        )
        return []
