"""Fixtures for ingest tests: tiny hand-built canonical feeds and the two shipped cities."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def points_registry() -> pd.DataFrame:
    return pd.DataFrame({"source_id": ["a", "b"], "lon": [13.40, 13.41], "lat": [52.50, 52.51], "road": ["x", "y"]})
