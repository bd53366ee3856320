"""Helpers for ingest tests: write a tiny canonical delivery and a city config pointing at it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from traffic.config import CityConfig, parse_city


def canonical_city(
    folder: Path,
    observations: pd.DataFrame,
    registry: pd.DataFrame,
    *,
    kind: str = "sensor",
    timezone: str = "Europe/Berlin",
    obs_name: str = "obs.csv",
    options: dict | None = None,
    bbox: list[float] | None = None,
) -> CityConfig:
    """Write a canonical delivery (observations + registry CSV) and a city config pointing at it."""
    folder.mkdir(parents=True, exist_ok=True)
    obs_path = folder / obs_name
    if obs_name.endswith(".parquet"):
        observations.to_parquet(obs_path, index=False)
    else:
        observations.to_csv(obs_path, index=False)
    reg_path = folder / "registry.csv"
    registry.to_csv(reg_path, index=False)
    channels = ["speed_kmh"] if kind == "sensor" else ["car"]
    return parse_city(
        {
            "name": "tinytown",
            "timezone": timezone,
            "crs_epsg": 25833,
            "bbox": bbox or [13.0, 52.0, 14.0, 53.0],
            "cell_size_m": 1000,
            "time_bin": "1h",
            "feeds": [
                {
                    "name": "f",
                    "kind": kind,
                    "adapter": "canonical",
                    "observations": str(obs_path),
                    "registry": str(reg_path),
                    "channels": channels,
                    "options": options or {},
                }
            ],
        },
        source=str(folder / "tinytown.toml"),
    )
