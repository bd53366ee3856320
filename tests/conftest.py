"""Shared fixtures: every test writes under its own TRAFFIC_HOME, never into the repo."""

from __future__ import annotations

import pytest

from traffic.config import CityConfig, load_city


@pytest.fixture(autouse=True)
def traffic_home(tmp_path, monkeypatch):
    """Point TRAFFIC_HOME (lake, MLflow, DuckDB, Airflow) at a fresh temporary folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TRAFFIC_HOME", str(home))
    for var in ("TRAFFIC_LAKE", "TRAFFIC_DUCKDB", "MLFLOW_TRACKING_URI", "TRAFFIC_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    # pipeline runs in tests train a few steps, not the cities' nightly budgets (tests check wiring, not skill)
    monkeypatch.setenv("TRAFFIC_TRAIN_STEPS", "20")
    return home


@pytest.fixture(scope="session")
def berlin() -> CityConfig:
    """The shipped Berlin config (Telraam camera counts)."""
    return load_city("berlin")


@pytest.fixture(scope="session")
def los_angeles() -> CityConfig:
    """The shipped Los Angeles config (METR-LA loop detectors)."""
    return load_city("los_angeles")
