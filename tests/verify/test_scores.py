"""The scoring math on a case small enough to check by hand, and the seasonal reference's data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from traffic.grid.tensor import GridTensor
from traffic.verify.scores import SUMS, figures, score_run, seasonal_reference

NAN = np.nan


def _case():
    # 2 horizons of 1 h, 1 volume channel, a 1 x 3 grid; cell 2 is never observed
    pred = np.array([[[[10.0, 20.0, 5.0]]], [[[30.0, NAN, 5.0]]]])
    obs = np.array([[[[12.0, 20.0, 0.0]]], [[[25.0, 99.0, 0.0]]]])
    mask = np.array([[[[True, True, False]]], [[[True, True, False]]]])
    lower = np.array([[[[8.0, 21.0, 0.0]]], [[[20.0, NAN, 0.0]]]])
    upper = np.array([[[[13.0, 25.0, 9.0]]], [[[40.0, NAN, 9.0]]]])
    ref_pred = np.array([[[[11.0, 24.0, 7.0]]], [[[27.0, 50.0, 7.0]]]])
    reference = np.full((1, 1, 3), 40.0)  # p95 volume: index = value / 40
    return pred, obs, mask, lower, upper, ref_pred, reference


def test_scores_of_a_hand_checked_case():
    pred, obs, mask, lower, upper, ref_pred, reference = _case()
    s = score_run(
        pred, obs, mask, ref_pred, reference, ["s.count"], np.array([[7, 8, 9]]), 3600, lower=lower, upper=upper
    )
    g = s.groups.set_index("horizon_group")
    assert list(g.index) == ["h01", "h02-03"]  # the card's group names (traffic.forecast.horizons)
    # h01: errors -2 (12 -> 10) and 0; bounds [8, 13] hold 12, [21, 25] miss 20; volume levels 0.25/0.30 normal,
    # 0.5/0.5 normal: both hit; reference errors -1 and +4
    h1 = g.loc["h01"]
    assert (h1.n, h1.n_interval, h1.n_covered, h1.n_level, h1.n_level_hit) == (2, 2, 1, 2, 2)
    assert h1.mae == 1.0 and h1.bias == -1.0 and h1.rmse == pytest.approx(math.sqrt(2))
    assert h1.coverage == 0.5 and h1.level_hit_rate == 1.0
    assert h1.ref_rmse == pytest.approx(math.sqrt(8.5)) and h1.ref_mae == 2.5 and h1.ref_bias == 1.5
    assert h1.skill == pytest.approx(1 - math.sqrt(2 / 8.5))
    # h02-03: only cell 7 (cell 8 published nothing there): error +5, inside [20, 40], busy (0.75) vs normal (0.625)
    h2 = g.loc["h02-03"]
    assert (h2.n, h2.n_covered, h2.n_level_hit) == (1, 1, 0)
    assert (h2.rmse, h2.mae, h2.bias, h2.coverage, h2.level_hit_rate, h2.ref_rmse) == (5, 5, 5, 1, 0, 2)
    assert h2.skill == pytest.approx(-1.5)
    c = s.cells.set_index("cell_id")
    assert list(c.index) == [7, 8, 9]
    assert c.loc[7, "n"] == 2 and c.loc[7, "rmse"] == pytest.approx(math.sqrt(29 / 2)) and c.loc[7, "bias"] == 1.5
    assert c.loc[7, "skill"] == pytest.approx(1 - math.sqrt(29 / 5))
    assert (c.loc[8, "n"], c.loc[8, "rmse"], c.loc[8, "coverage"], c.loc[8, "ref_rmse"], c.loc[8, "skill"]) == (
        1,
        0,
        0,
        4,
        1,
    )
    # published but never observed: counted nowhere, every figure undefined
    assert c.loc[9, "n"] == 0 and c.loc[[9], list(("rmse", "mae", "coverage", "skill"))].isna().all(axis=None)


def test_pooling_the_sums_gives_the_figures_of_the_union():
    pred, obs, mask, lower, upper, ref_pred, reference = _case()
    s = score_run(
        pred, obs, mask, ref_pred, reference, ["s.count"], np.array([[7, 8, 9]]), 3600, lower=lower, upper=upper
    )
    pooled = figures(s.groups[list(SUMS)].sum().to_frame().T)
    assert pooled.loc[0, "rmse"] == pytest.approx(math.sqrt((4 + 0 + 25) / 3))
    assert pooled.loc[0, "coverage"] == pytest.approx(2 / 3)


def test_a_run_without_bounds_has_no_coverage():
    pred, obs, mask, _, _, ref_pred, reference = _case()
    s = score_run(pred, obs, mask, ref_pred, reference, ["s.count"], np.array([[7, 8, 9]]), 3600)
    assert s.groups["n_interval"].eq(0).all() and s.groups["coverage"].isna().all()


def test_the_seasonal_reference_reads_only_its_window():
    times = pd.date_range("2024-03-04", periods=72, freq="1h", tz="UTC")  # Monday .. Wednesday
    hour = np.asarray(times.hour, dtype=float)
    values = (10 + hour + 100 * (np.arange(72) >= 48))[:, None, None, None] * np.ones((72, 1, 1, 2))
    grid = GridTensor(
        values=values.astype(np.float32),
        mask=np.ones(values.shape, bool),
        coverage=np.ones(values.shape, np.int32),
        times=times,
        channels=("s.count",),
        cell_ids=np.array([[0, 1]]),
        timezone="UTC",
    )
    ref = seasonal_reference(grid.slice_time(0, 48), 24)  # issued after Tuesday, from Monday and Tuesday
    assert ref.shape == (24, 1, 1, 2)
    np.testing.assert_allclose(ref[:, 0, 0, 0], 10 + np.arange(24))  # the window's day-type profile
    # Wednesday (+100) is after the window: it changes the reference only when it is in the window
    assert not np.allclose(seasonal_reference(grid, 24), ref)
