"""Fixtures of the publisher tests; the hand-built cases are in :mod:`publish_cases`."""

from __future__ import annotations

import pytest


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty TRAFFIC_HOME; the DuckDB file follows it."""
    monkeypatch.setenv("TRAFFIC_HOME", str(tmp_path))
    monkeypatch.delenv("TRAFFIC_DUCKDB", raising=False)
    return tmp_path


@pytest.fixture
def db(home):
    return home / "forecasts.duckdb"
