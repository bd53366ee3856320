"""Shared fixtures: every test writes under its own TRAFFIC_HOME, never into the repo."""

from __future__ import annotations

import os

# numpy/scipy's OpenBLAS runs one thread in tests (and in the Airflow and other children they start):
# on 2 cores shared with other work its spinning threads made the Ridge baseline's Gram products about
# 11x slower (200k x 40 X^T X: 0.26 s with 2 threads, 0.023 s with 1), a third of a nightly training in
# a test. Set before numpy is imported; the results differ only by rounding. An explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from traffic.config import CityConfig, load_city  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _airflow_templates():
    """Drop the migrated Airflow metadata templates (tests/airflow_helpers.py) when the session ends."""
    yield
    from tests.airflow_helpers import drop_templates

    drop_templates()


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
