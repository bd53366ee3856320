"""``hotspots(at=...)`` picks the newest run covering ``at``: one step of an intraday replay, not the newest run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from publish_cases import make_case

from tests.publish.test_duckdb_publish import _hotspot_case
from traffic.publish import duckdb_publish as dp


def test_hotspots_of_the_run_covering_at(db):
    dp.publish_forecast(db, **_hotspot_case())  # issued 2024-12-02 06:00Z, 3 hourly targets: cells 1001 and 1011 jam
    calm = make_case(issued_at="2024-12-02T09:00:00Z")
    fc = np.zeros_like(calm.forecast)
    fc[:, 1] = 50.0  # free flow, no volume: no hotspot
    dp.publish_forecast(db, **calm.kwargs(forecast=fc))

    def cells(**kw):
        return dp.hotspots(db, "berlin", min_level="heavy", **kw)["cell_id"].tolist()

    assert cells() == []  # the newest run (09:00) is calm
    assert cells(at=pd.Timestamp("2024-12-02T06:00Z"), hours=3) == [1001, 1011]
    assert cells(at="2024-12-02T08:00:00Z", hours=1) == [1001]  # 1011 jams at 06:00 and 07:00 only
    assert cells(at=pd.Timestamp("2024-12-02T09:00Z")) == []  # the calm run covers 09:00
    with pytest.raises(dp.HotspotError):
        cells(at=pd.Timestamp("2024-12-02T05:59Z"))  # no run covers it
