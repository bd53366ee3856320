"""Tiny hand-built grids and forecasts for the publisher tests (a module of its own, so that child
processes import it by a name no other test folder uses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Case:
    """Everything :func:`publish_forecast` needs, for a tiny city."""

    city: str
    forecast: np.ndarray
    target_times: pd.DatetimeIndex
    channels: list[str]
    cells: pd.DataFrame
    cell_ids: np.ndarray
    has_data: np.ndarray
    reference: np.ndarray
    run: dict[str, Any] = field(default_factory=dict)

    def kwargs(self, **override: Any) -> dict[str, Any]:
        kw = {
            "city": self.city,
            "run": self.run,
            "forecast": self.forecast,
            "target_times": self.target_times,
            "channels": self.channels,
            "cells": self.cells,
            "cell_ids": self.cell_ids,
            "has_data": self.has_data,
            "reference": self.reference,
        }
        kw.update(override)
        return kw


def make_case(
    city: str = "berlin",
    issued_at: str = "2024-12-02T06:00:00Z",
    h_out: int = 3,
    shape: tuple[int, int] = (3, 4),
    freq: str = "1h",
    seed: int = 0,
) -> Case:
    """A 2-channel city (``t.car`` volume, ``m.speed_kmh`` speed) with random forecasts."""
    h, w = shape
    rng = np.random.default_rng(seed)
    ids = (np.arange(h * w, dtype=np.int32) + 1000).reshape(h, w)
    rows, cols = np.divmod(np.arange(h * w), w)
    cells = pd.DataFrame(
        {
            "cell_id": ids.ravel(),
            "row": rows,
            "col": cols,
            "centroid_lon": 13.0 + 0.01 * cols,
            "centroid_lat": 52.0 + 0.01 * rows,
            "polygon_wkt": [
                f"POLYGON (({13 + 0.01 * c} {52 + 0.01 * r}, {13.01 + 0.01 * c} {52 + 0.01 * r}, {13.01 + 0.01 * c} {52.01 + 0.01 * r}, {13 + 0.01 * c} {52 + 0.01 * r}))"
                for r, c in zip(rows, cols, strict=True)
            ],
        }
    )
    reference = np.stack([np.full((h, w), 100.0), np.full((h, w), 50.0)])  # p95 volume, free-flow km/h
    forecast = np.stack([rng.uniform(0, 150, (h_out, h, w)), rng.uniform(0, 60, (h_out, h, w))], axis=1)
    issued = pd.Timestamp(issued_at)
    return Case(
        city=city,
        forecast=forecast,
        target_times=pd.date_range(issued, periods=h_out, freq=freq),
        channels=["t.car", "m.speed_kmh"],
        cells=cells,
        cell_ids=ids,
        has_data=np.ones((2, h, w), bool),
        reference=reference,
        run={"model_name": f"traffic-{city}", "model_version": "3", "mlflow_run_id": "abc123", "issued_at": issued},
    )


def metr_la_case() -> dict[str, Any]:
    """METR-LA oracle: 207 sensors as a 9 x 23 grid; reference from six days, 'forecast' = day seven's
    07:00-10:00 local (15-minute means of the real speeds), three sensors without any reading."""
    from traffic.config import PROJECT_ROOT
    from traffic.publish.congestion import reference_stats

    raw = pd.read_csv(PROJECT_ROOT / "data/samples/la_metr/observations/los_speed.csv")
    times = pd.date_range("2012-03-01", periods=len(raw), freq="5min", tz="America/Los_Angeles")
    kmh = raw.to_numpy(np.float64) * 1.609344
    values = kmh.reshape(len(raw), 1, 9, 23)
    day7 = times >= pd.Timestamp("2012-03-07", tz="America/Los_Angeles")
    mask = np.isfinite(values) & (values > 0)
    mask[:, :, 8, 20:] = False  # three sensors without any reading: must not be hotspots
    reference = reference_stats(values[~day7], mask[~day7], ["metr.speed_kmh"])
    sel = day7 & (times.hour >= 7) & (times.hour < 10)
    fc = values[sel].reshape(12, 3, 1, 9, 23).mean(axis=1)
    tt = times[sel][::3].tz_convert("UTC")
    ids = np.array([int(s) for s in raw.columns], dtype=np.int64).reshape(9, 23)
    locs = (
        pd.read_csv(PROJECT_ROOT / "data/samples/la_metr/graph_sensor_locations.csv")
        .set_index("sensor_id")
        .loc[ids.ravel()]
    )
    rows, cols = np.divmod(np.arange(ids.size), 23)
    cells = pd.DataFrame(
        {
            "cell_id": ids.ravel(),
            "row": rows,
            "col": cols,
            "centroid_lon": locs["longitude"].to_numpy(),
            "centroid_lat": locs["latitude"].to_numpy(),
            "polygon_wkt": [f"POINT ({x} {y})" for x, y in zip(locs["longitude"], locs["latitude"], strict=True)],
        }
    )
    return {
        "city": "los_angeles",
        "run": {
            "model_name": "oracle",
            "model_version": "day7",
            "issued_at": tt[0],
            "data_start": times[0],
            "data_end": times[~day7][-1],
        },
        "forecast": fc,
        "target_times": tt,
        "channels": ["metr.speed_kmh"],
        "cells": cells,
        "cell_ids": ids,
        "has_data": mask[~day7].any(axis=0),
        "reference": reference,
        "lower": fc * 0.85,
        "upper": fc * 1.1,
        "coverage": mask[~day7].mean(axis=0),
    }
