"""A tiny real city for the verification tests: a 2 x 3 km grid, hourly bins, one count and one speed channel.

Everything is real: the city file is loaded from a temporary cities folder (``TRAFFIC_CITIES``),
the raster partitions are written to the lake as rasterize writes them (``RASTER_SCHEMA``), runs are
published through :func:`traffic.publish.publish_forecast` into the DuckDB store, and MLflow is the
SQLite store of :class:`traffic.resources.Resources.under`. Observations follow a daily profile
plus a per-day offset, so the seasonal reference is good but not perfect.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from traffic.config import CityConfig, load_city
from traffic.grid.cells import cells_from_spec, grid_spec
from traffic.grid.rasterize import RASTER_SCHEMA
from traffic.resources import Resources

CITY = "tiny"
TZ = "Europe/Berlin"
CHANNELS = ("s.count", "s.speed_kmh")
BBOX = "[13.400, 52.500, 13.440, 52.515]"

CITY_TOML = """
name = "tiny"
timezone = "Europe/Berlin"
crs_epsg = 25833
bbox = {bbox}
cell_size_m = 1000
time_bin = "1h"

[forecast]
context_steps = 2
train_days = 3
holdout_days = 1
verify_days = {verify_days}

[[feeds]]
name = "s"
kind = "sensor"
adapter = "canonical"
observations = "obs.csv"
registry = "registry.csv"
channels = ["count", "speed_kmh"]
[feeds.options]
interval_s = 3600
"""


def write_city(folder: Path, monkeypatch: Any, *, bbox: str = BBOX, verify_days: int = 2) -> CityConfig:
    """Write ``tiny.toml`` into ``folder`` and point ``TRAFFIC_CITIES`` at it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.toml").write_text(CITY_TOML.format(bbox=bbox, verify_days=verify_days))
    monkeypatch.setenv("TRAFFIC_CITIES", str(folder))
    return load_city(CITY)


def day_bins(day: str) -> pd.DatetimeIndex:
    """UTC starts of the hourly bins of local day ``day``."""
    start = pd.Timestamp(day).tz_localize(TZ)
    end = start + pd.Timedelta(days=1)
    return pd.date_range(start.tz_convert("UTC"), end.tz_convert("UTC"), freq="1h", inclusive="left")


def truth(c: CityConfig, times: pd.DatetimeIndex, day_offset: float = 0.0) -> np.ndarray:
    """Observed values ``(T, C, H, W)``: a daily profile per cell (counts) and a rush-hour dip (speeds)."""
    h, w = grid_spec(c).shape
    hour = np.asarray(times.tz_convert(TZ).hour, dtype=float)[:, None, None]
    cell = np.arange(h * w, dtype=float).reshape(h, w)[None]
    count = 20 + 10 * np.sin(hour / 24 * 2 * np.pi) + cell + day_offset
    speed = 50 - 15 * np.exp(-(((hour - 8) / 2) ** 2)) - cell - day_offset / 2
    return np.stack([count, speed], axis=1)


def write_raster(c: CityConfig, res: Resources, day: str, *, day_offset: float = 0.0, silent: bool = False) -> None:
    """One raster partition of local day ``day`` (every cell observed; none with ``silent``)."""
    times = day_bins(day)
    vals = truth(c, times, day_offset)
    t, n_c, h, w = vals.shape
    if silent:
        table = RASTER_SCHEMA.empty_table()
    else:
        ti, ci, cell = np.meshgrid(np.arange(t), np.arange(n_c), np.arange(h * w), indexing="ij")
        table = pa.table(
            {
                "bin_start": pa.array(times.as_unit("us").asi8[ti.ravel()], pa.int64()).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "cell_id": pa.array(cell.ravel().astype(np.int32)),
                "channel": pa.array(np.asarray(CHANNELS, dtype=object)[ci.ravel()].tolist(), pa.string()),
                "value": pa.array(vals.reshape(t, n_c, h * w)[ti.ravel(), ci.ravel(), cell.ravel()]),
                "coverage": pa.array(np.ones(ti.size, np.int32)),
            }
        ).cast(RASTER_SCHEMA)
    res.lake.write_partition(table, "raster", city=c.name, date=day, metadata={"bin_seconds": str(c.bin_seconds)})
    report = {"rows_read": 0 if silent else 24, "rows_accepted": 0 if silent else 24, "rows_quarantined": 0}
    res.lake.write_json(report, res.lake.partition("quality", city=c.name, feed="s", date=day) / "report.json")


def cells_frame(c: CityConfig) -> pd.DataFrame:
    """The city's grid cells as ``pipeline.publish`` builds them."""
    grid = cells_from_spec(grid_spec(c))
    cent = grid.geometry.centroid.to_crs(4326)
    return pd.DataFrame(
        {
            "cell_id": grid["cell_id"].to_numpy(),
            "row": grid["row"].to_numpy(),
            "col": grid["col"].to_numpy(),
            "centroid_lon": cent.x.to_numpy(),
            "centroid_lat": cent.y.to_numpy(),
            "polygon_wkt": grid.geometry.to_crs(4326).to_wkt().to_numpy(),
        }
    )


def publish_day_ahead(
    c: CityConfig,
    res: Resources,
    as_of: str,
    *,
    mlflow_run_id: str | None = None,
    bias: float = 1.0,
    kind: str = "nightly",
    model_kind: str = "gbm",
    window_days: int = 2,
    model_spec: str | None = None,
) -> dict[str, Any]:
    """Publish the day-ahead run issued at local midnight after ``as_of``: truth of the next day + ``bias``."""
    from traffic.publish import publish_forecast, reference_stats

    target_day = (dt.date.fromisoformat(as_of) + dt.timedelta(days=1)).isoformat()
    tt = day_bins(target_day)
    fc = truth(c, tt, 0.0) + bias
    h, w = grid_spec(c).shape
    first = (dt.date.fromisoformat(as_of) - dt.timedelta(days=window_days - 1)).isoformat()
    data_start = day_bins(first)[0]
    data_end = day_bins(as_of)[-1]
    hist = truth(c, day_bins(as_of), 0.0)
    reference = reference_stats(hist, np.ones(hist.shape, bool), list(CHANNELS))
    run: dict[str, Any] = {
        "model_name": f"traffic-{c.name}",
        "model_version": f"baseline-{model_kind}" if model_kind != "model" else "1",
        "model_kind": model_kind,
        "kind": kind,
        "issued_at": tt[0],
        "data_start": data_start,
        "data_end": data_end,
        "mlflow_run_id": mlflow_run_id,
        "timezone": TZ,
    }
    if model_spec is not None:
        run["model_spec"] = model_spec
    return publish_forecast(
        res.warehouse.path,
        city=c.name,
        run=run,
        forecast=fc,
        target_times=tt,
        channels=list(CHANNELS),
        cells=cells_frame(c),
        cell_ids=np.arange(h * w, dtype=np.int32).reshape(h, w),
        has_data=np.ones((len(CHANNELS), h, w), bool),
        reference=reference,
        lower=fc - 3.0,
        upper=fc + 3.0,
    )
