"""Throwaway GridTensor builders for the shipped real samples (accuracy reality check only).

The pipeline's own ingestion/rasterisation is the real path; these helpers exist so the
forecaster can be checked against baselines on real data without it. Points are binned
into square cells of a metric CRS over the city's bbox; a cell/bin value is the mean of
the observations in it, coverage their number.

* Los Angeles (METR-LA): speeds mph -> km/h, 5-min rows from 2012-03-01 00:00
  America/Los_Angeles, 15-min bins. Zero speeds are METR-LA's "no reading" and count as missing.
* Berlin (Telraam): hourly car/heavy/bike/pedestrian totals; the naive local time is
  treated as UTC (for this check only); a segment is placed at its first vertex. The DST
  duplicate hour averages its two rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer

from traffic.grid.tensor import GridTensor

ROOT = Path(__file__).resolve().parents[2]
LA_DIR = ROOT / "data" / "samples" / "la_metr"
BERLIN_DIR = ROOT / "data" / "samples" / "berlin_telraam"


def rasterize_points(
    lon: np.ndarray,
    lat: np.ndarray,
    obs_source: np.ndarray,
    obs_bin: np.ndarray,
    obs_values: np.ndarray,
    times: pd.DatetimeIndex,
    channels: tuple[str, ...],
    *,
    bbox: tuple[float, float, float, float],
    epsg: int,
    cell_m: float = 1000.0,
) -> GridTensor:
    """Mean of point observations per (time bin, channel, cell).

    Parameters
    ----------
    lon, lat : np.ndarray
        ``(S,)`` WGS84 positions of the sources.
    obs_source, obs_bin : np.ndarray
        ``(N,)`` source index and time-bin index of each observation.
    obs_values : np.ndarray
        ``(N, C)`` values, NaN where missing.
    """
    tr = Transformer.from_crs(4326, epsg, always_xy=True)
    x0, y0, x1, y1 = tr.transform_bounds(*bbox)
    w = int(np.ceil((x1 - x0) / cell_m))
    h = int(np.ceil((y1 - y0) / cell_m))
    sx, sy = tr.transform(lon, lat)
    col = np.floor((np.asarray(sx) - x0) / cell_m).astype(np.int64)
    row = np.floor((np.asarray(sy) - y0) / cell_m).astype(np.int64)  # row 0 = southern edge
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    cell = np.where(inside, row * w + col, -1)
    obs_cell = cell[obs_source]
    keep = (obs_cell >= 0) & (obs_bin >= 0) & (obs_bin < len(times))
    n_t, n_c = len(times), len(channels)
    sums = np.zeros((n_t, n_c, h * w))
    counts = np.zeros((n_t, n_c, h * w), dtype=np.int64)
    for ci in range(n_c):
        v = obs_values[keep, ci]
        ok = np.isfinite(v)
        flat = obs_bin[keep][ok] * (h * w) + obs_cell[keep][ok]
        sums[:, ci] = np.bincount(flat, weights=v[ok], minlength=n_t * h * w).reshape(n_t, h * w)
        counts[:, ci] = np.bincount(flat, minlength=n_t * h * w).reshape(n_t, h * w)
    mask = counts > 0
    values = np.where(mask, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
    shape = (n_t, n_c, h, w)
    return GridTensor(
        values.reshape(shape),
        mask.reshape(shape),
        counts.astype(np.int32).reshape(shape),
        times,
        channels,
        np.arange(h * w, dtype=np.int32).reshape(h, w),
    )


def la_grid() -> GridTensor:
    """METR-LA speeds on a ~1 km grid (EPSG:26945), 15-min bins, channel ``metr.speed_kmh``."""
    speed = pd.read_csv(LA_DIR / "observations" / "los_speed.csv")
    loc = pd.read_csv(LA_DIR / "graph_sensor_locations.csv", dtype={"sensor_id": str})
    loc = loc.set_index("sensor_id").reindex([str(c) for c in speed.columns])
    start = pd.Timestamp("2012-03-01 00:00", tz="America/Los_Angeles").tz_convert("UTC")
    n_rows, n_src = speed.shape
    times = pd.date_range(start, periods=int(np.ceil(n_rows / 3)), freq="15min")
    vals = speed.to_numpy(dtype=np.float64) * 1.609344
    vals[~(vals > 0)] = np.nan  # METR-LA writes 0 for "no reading"
    obs_bin = np.repeat(np.arange(n_rows) // 3, n_src)
    obs_source = np.tile(np.arange(n_src), n_rows)
    lon, lat = loc["longitude"].to_numpy(), loc["latitude"].to_numpy()
    return rasterize_points(
        np.nan_to_num(lon, nan=0.0),
        np.nan_to_num(lat, nan=0.0),
        obs_source,
        obs_bin,
        vals.reshape(-1, 1),
        times,
        ("metr.speed_kmh",),
        bbox=(-118.56, 34.03, -118.17, 34.23),
        epsg=26945,
    )


def berlin_grid() -> GridTensor:
    """Telraam counts on a ~1 km grid (EPSG:25833), hourly, four ``telraam.*`` channels."""
    cols = {"car_total": "car", "heavy_total": "heavy", "bike_total": "bike", "ped_total": "pedestrian"}
    df = pd.read_parquet(
        BERLIN_DIR / "observations" / "traffic_df_2024_10-2024_12.parquet", columns=["segment_id", "date_local", *cols]
    )
    feats = json.loads((BERLIN_DIR / "bzm_telraam_segments.geojson").read_text())["features"]
    seg = np.array([f["properties"]["segment_id"] for f in feats], dtype=np.int64)
    first = np.array([f["geometry"]["coordinates"][0][0] for f in feats], dtype=np.float64)  # first vertex
    ts = pd.DatetimeIndex(df["date_local"]).tz_localize("UTC").floor("h")
    times = pd.date_range(ts.min(), ts.max(), freq="h")
    src = pd.Index(seg).get_indexer(df["segment_id"].to_numpy())
    known = src >= 0
    obs_bin = ((ts - times[0]) // pd.Timedelta("1h")).to_numpy()
    return rasterize_points(
        first[:, 0],
        first[:, 1],
        src[known],
        obs_bin[known],
        df.loc[known, list(cols)].to_numpy(dtype=np.float64),
        times,
        tuple(f"telraam.{c}" for c in cols.values()),
        bbox=(13.08, 52.33, 13.77, 52.68),
        epsg=25833,
    )
