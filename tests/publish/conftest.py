"""Tiny hand-built grids and forecasts for the publisher tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest


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


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty TRAFFIC_HOME; the DuckDB file follows it."""
    monkeypatch.setenv("TRAFFIC_HOME", str(tmp_path))
    monkeypatch.delenv("TRAFFIC_DUCKDB", raising=False)
    return tmp_path


@pytest.fixture
def db(home):
    return home / "forecasts.duckdb"
