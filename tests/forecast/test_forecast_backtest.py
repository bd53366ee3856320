"""The rolling-origin backtest: errors per target day, folds, paired intervals, the logged metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from traffic.config import default_backtest_folds
from traffic.forecast.backtest import (
    Backtest,
    Comparison,
    DailyErrors,
    backtest_metrics,
    comparisons_from_metrics,
    day_index,
    fold_plan,
    paired_interval,
)
from traffic.grid.tensor import GridTensor


def _grid(days: int = 4, bins_per_day: int = 24, tz: str = "Europe/Berlin", holidays=()) -> GridTensor:
    start = pd.Timestamp("2024-12-01 00:00").tz_localize(tz).tz_convert("UTC")
    t = days * bins_per_day
    times = pd.date_range(start, periods=t, freq=pd.Timedelta(hours=24 / bins_per_day))
    v = np.zeros((t, 1, 2, 2), dtype=np.float32)
    return GridTensor(
        v, np.ones_like(v, bool), np.ones_like(v, np.int32), times, ("a.x",), np.arange(4).reshape(2, 2), tz, holidays
    )


def test_day_index_reads_local_dates_from_the_holdout_start():
    g = _grid(days=3)
    day, days = day_index(g, 24)
    assert days == ("2024-12-02", "2024-12-03")
    assert (day[:24] == -1).all() and (day[24:48] == 0).all() and (day[48:] == 1).all()


def test_daily_errors_count_each_error_in_its_target_day():
    day = np.array([-1, -1, 0, 0, 1, 1])
    acc = DailyErrors(day, 2, horizon=2)
    # two samples: origin after bin 1 (targets 2, 3: day 0) and after bin 2 (targets 3: day 0, 4: day 1)
    tidx = np.array([[2, 3], [3, 4]])
    pred = np.zeros((2, 2, 1, 1, 2))
    target = np.full((2, 2, 1, 1, 2), 2.0)
    mask = np.ones_like(target, bool)
    mask[1, 1, 0, 0, 1] = False  # one missing value never counts
    acc.update(pred, target, mask, tidx)
    assert acc.n.tolist() == [[4, 2], [0, 1]]
    assert acc.sse.tolist() == [[16.0, 8.0], [0.0, 4.0]]
    assert acc.rmse().tolist() == [2.0, 2.0]
    assert np.isnan(acc.daily_rmse()).tolist() == [False, False]


def test_fold_plan_splits_days_in_order_and_flags_holiday_folds():
    days = [f"2024-12-{d:02d}" for d in range(4, 32)]
    folds = fold_plan(days, 4, ["2024-12-25", "2024-12-26"])
    assert [len(f.days) for f in folds] == [7, 7, 7, 7]
    assert [f.holiday for f in folds] == [False, False, False, True]
    assert folds[-1].holidays == ("2024-12-25", "2024-12-26") and folds[0].days[0] == "2024-12-04"
    with pytest.raises(ValueError, match="backtest_folds"):
        fold_plan(days[:2], 3)


def test_default_folds_are_weekly_from_two_weeks_else_daily():
    assert default_backtest_folds(2) == 2
    assert default_backtest_folds(7) == 7
    assert default_backtest_folds(28) == 4
    assert default_backtest_folds(10) == 10


def test_paired_interval_is_the_t_interval_for_few_days_and_widens_with_two():
    d = np.array([-0.02, -0.04, -0.03, -0.01, -0.05])
    c = paired_interval(d)
    half = stats.t.ppf(0.95, 4) * d.std(ddof=1) / math.sqrt(5)
    assert c.mean == pytest.approx(d.mean()) and c.lo == pytest.approx(d.mean() - half)
    assert c.hi == pytest.approx(d.mean() + half) and c.better and c.significant
    two = paired_interval(np.array([-0.02, -0.04]))
    assert two.hi - two.lo == pytest.approx(2 * 6.3138 * 0.01, rel=1e-3)  # t(0.95, 1) = 6.31
    one = paired_interval(np.array([-0.1]))
    assert math.isnan(one.lo) and not one.significant and one.n_days == 1
    noisy = paired_interval(np.array([-0.05, 0.04, -0.03, 0.05, -0.01, 0.02, -0.04, 0.03, 0.0, -0.02]))
    assert noisy.lo < 0 < noisy.hi and not noisy.significant


def _backtest(a_scale: float, b_scale: float, days: int = 6) -> Backtest:
    """Two candidates with constant errors a_scale / b_scale per day (b noisier on odd days)."""
    day = np.repeat(np.arange(days), 4)
    bt = Backtest(
        days=tuple(f"2024-12-{d + 1:02d}" for d in range(days)),
        folds=fold_plan([f"2024-12-{d + 1:02d}" for d in range(days)], 3),
        bin_seconds=3600,
        errors={n: DailyErrors(day, days, 2) for n in ("model", "gbm")},
    )
    rng = np.random.default_rng(0)
    for t0 in range(0, days * 4 - 2):
        tidx = np.array([[t0, t0 + 1]])
        target = np.zeros((1, 2, 1, 1, 1))
        mask = np.ones_like(target, bool)
        bt.errors["model"].update(np.full_like(target, a_scale), target, mask, tidx)
        bt.errors["gbm"].update(np.full_like(target, b_scale * (1 + 0.01 * rng.random())), target, mask, tidx)
    return bt


def test_backtest_metrics_name_every_figure_the_decision_reads():
    bt = _backtest(0.9, 1.0)
    m = backtest_metrics(bt)
    assert m["backtest.folds"] == 3 and m["backtest.days"] == 6 and m["backtest.holiday_folds"] == 0
    assert m["backtest.model.rmse_mean"] == pytest.approx(0.9)
    assert m["backtest.model.rmse.h01"] == pytest.approx(0.9) and m["backtest.model.rmse.h02-03"] == pytest.approx(0.9)
    assert m["backtest.model.rmse.h01.hi"] == pytest.approx(0.9)
    assert {f"backtest.model.fold{k}.rmse_mean" for k in (1, 2, 3)} <= set(m)
    assert m["backtest.model.vs_gbm.hi"] < 0 < m["backtest.gbm.vs_model.lo"]
    cmps = comparisons_from_metrics(m, ["model", "gbm"])
    assert cmps[("model", "gbm")] == Comparison(
        m["backtest.model.vs_gbm.mean"], m["backtest.model.vs_gbm.lo"], m["backtest.model.vs_gbm.hi"], 6
    )
    assert cmps[("model", "gbm")].better and not cmps[("gbm", "model")].better


def test_a_difference_that_changes_sign_from_day_to_day_is_not_significant():
    days = 6
    day = np.repeat(np.arange(days), 2)
    bt = Backtest(tuple(str(d) for d in range(days)), fold_plan([str(d) for d in range(days)], 2), 3600, {})
    bt.errors = {n: DailyErrors(day, days, 1) for n in ("model", "gbm")}
    for t in range(days * 2):
        target = np.zeros((1, 1, 1, 1, 1))
        mask = np.ones_like(target, bool)
        wobble = 1.03 if day[t] % 2 else 0.96  # gbm better on even days, worse on odd ones
        bt.errors["model"].update(np.ones_like(target), target, mask, np.array([[t]]))
        bt.errors["gbm"].update(np.full_like(target, wobble), target, mask, np.array([[t]]))
    c = bt.compare("model", "gbm")
    assert c.lo < 0 < c.hi and not c.significant and c.n_days == days


def test_every_channel_is_scored_apart_against_the_same_baselines():
    day = np.array([0, 0, 1, 1])
    bt = Backtest(("d0", "d1"), fold_plan(["d0", "d1"], 2), 3600, {}, channels=("a.count", "a.speed_kmh"))
    bt.errors = {n: DailyErrors(day, 2, 1) for n in ("model", "gbm")}
    target = np.zeros((4, 1, 2, 1, 1))
    mask = np.ones_like(target, bool)
    pred = np.zeros_like(target)
    pred[:, :, 0] = 3.0  # counts off by 3, speeds exact
    bt.errors["model"].update(pred, target, mask, np.arange(4)[:, None])
    bt.errors["gbm"].update(np.ones_like(target), target, mask, np.arange(4)[:, None])
    m = backtest_metrics(bt)
    assert m["backtest.model.channel.a.count.rmse_mean"] == pytest.approx(3.0)
    assert m["backtest.model.channel.a.speed_kmh.rmse_mean"] == pytest.approx(0.0)
    assert m["backtest.gbm.channel.a.speed_kmh.rmse_mean"] == pytest.approx(1.0)
    assert m["backtest.model.rmse_mean"] == pytest.approx(math.sqrt(4.5))  # pooled over both channels
