"""``hotspots(at=...)``: the hotspots of an earlier run (e.g. one step of an intraday replay)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.publish.conftest import make_case
from tests.publish.test_duckdb_publish import _hotspot_case
from traffic.publish import duckdb_publish as dp


def test_hotspots_of_the_newest_run_at_or_before_at(db):
    dp.publish_forecast(db, **_hotspot_case())  # issued 2024-12-02 06:00Z: cells 1001 and 1011 jam
    calm = make_case(issued_at="2024-12-02T09:00:00Z")
    fc = np.zeros_like(calm.forecast)
    fc[:, 1] = 50.0  # free flow, no volume: no hotspot
    dp.publish_forecast(db, **calm.kwargs(forecast=fc))

    assert dp.hotspots(db, "berlin").empty  # the newest run (09:00) is calm
    earlier = dp.hotspots(db, "berlin", at=pd.Timestamp("2024-12-02T08:59Z"))
    assert earlier["cell_id"].tolist() == [1001, 1011]
    assert set(earlier["run_id"]) == {"berlin_20241202T060000Z"}
    exact = dp.hotspots(db, "berlin", at="2024-12-02T06:00:00Z", limit=1)
    assert exact["cell_id"].tolist() == [1001]
    assert dp.hotspots(db, "berlin", at=pd.Timestamp("2024-12-02T09:00Z")).empty
    assert dp.hotspots(db, "berlin", at=pd.Timestamp("2024-12-02T05:59Z")).empty  # no run issued yet
