"""Baselines on hand-built arrays with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from traffic.forecast import baselines
from traffic.forecast.baselines import (
    BASELINES,
    GradientBoostingLagBaseline,
    RidgeLagBaseline,
    evaluate_baselines,
    fit_seasonal_profile,
    persistence_forecast,
    seasonal_forecast,
    seasonal_period,
    time_positions,
)
from traffic.forecast.fallback import fit_baseline
from traffic.forecast.split import make_split
from traffic.grid.tensor import GridTensor

from .synth import synthetic_grid


def _tensor(values: np.ndarray, freq: str = "1h", start: str = "2024-03-04") -> GridTensor:
    values = values.astype(np.float32)
    mask = np.isfinite(values)
    t, c, h, w = values.shape
    times = pd.date_range(start, periods=t, freq=freq, tz="UTC")
    return GridTensor(
        values, mask, mask.astype(np.int32), times, tuple(f"f.c{i}" for i in range(c)), np.zeros((h, w), np.int32)
    )


def test_persistence_carries_the_last_observation_else_falls_back():
    nan = np.nan
    v = np.array([[1.0, 10.0], [2.0, nan], [nan, nan], [nan, nan], [5.0, 6.0]])[:, None, None, :]  # (T=5, C=1, 1, 2)
    g = _tensor(v)
    fallback = np.array([[[40.0, 50.0]]])
    pred = persistence_forecast(g, np.array([3, 4]), context_steps=3, horizon=2, fallback=fallback)
    assert pred.shape == (2, 2, 1, 1, 2)
    # t_end=3: context bins 1..3: cell 0 last seen at bin 1 (2.0); cell 1 unseen -> fallback 50
    np.testing.assert_array_equal(pred[0, :, 0, 0], [[2.0, 50.0], [2.0, 50.0]])
    # t_end=4: bin 4 observed in both cells
    np.testing.assert_array_equal(pred[1, :, 0, 0], [[5.0, 6.0], [5.0, 6.0]])


def test_seasonal_period_needs_two_weeks_for_time_of_week():
    assert seasonal_period(14 * 24, 60) == 168
    assert seasonal_period(13 * 24, 60) == 48  # shorter windows: the day-type profile (two days of bins)
    assert seasonal_period(5 * 96, 15) == 192


def test_day_type_positions_are_local_weekday_or_weekend_and_holiday():
    """Los Angeles is UTC-8: Friday 20:00 local (Saturday 04:00 UTC) is a weekday, Sunday 20:00 a weekend."""
    times = pd.DatetimeIndex(["2012-03-03 04:00", "2012-03-05 04:00", "2012-03-05 16:00"], tz="UTC")
    pos = time_positions(times, 60, 48, holiday=np.array([False, False, True]), offset_minutes=-480)
    assert pos.tolist() == [20, 24 + 20, 24 + 8]  # Fri 20:00 weekday; Sun 20:00 weekend; a Monday holiday at 08:00
    utc = time_positions(times, 60, 48)
    assert utc.tolist() == [24 + 4, 4, 16]  # in UTC the first would be a Saturday


def test_module_prior_uses_the_same_local_day_type_positions():
    """The module's own prior (decoded from the calendar features) equals the baselines' lookup."""
    from traffic.forecast.features import build_inputs
    from traffic.model import Forecaster, ForecasterConfig

    times = pd.date_range("2012-03-01 08:00", periods=7 * 96, freq="15min", tz="UTC")
    g = GridTensor(
        np.ones((len(times), 1, 1, 1), dtype=np.float32),
        np.ones((len(times), 1, 1, 1), dtype=bool),
        np.ones((len(times), 1, 1, 1), dtype=np.int32),
        times,
        ("metr.speed_kmh",),
        np.zeros((1, 1), dtype=np.int32),
    )
    cfg = ForecasterConfig(
        channels=("metr.speed_kmh",),
        grid_shape=(1, 1),
        context_steps=4,
        horizon=96,
        bin_minutes=15,
        profile_period=192,
        utc_offset_minutes=-480,
    )
    m = Forecaster(cfg)
    prof = np.arange(192, dtype=np.float32)[:, None, None, None]
    m.set_statistics(np.zeros(1), np.ones(1), prof)
    t_end = np.array([3, 200, 500])
    x = torch.from_numpy(build_inputs(g, t_end, 4, 96))
    got = m.prior_for(x)[:, :, 0, 0, 0].numpy()  # (B, T_in + H_out)
    idx = t_end[:, None] + np.arange(-3, 97)[None, :]
    want = time_positions(times.append(pd.date_range(times[-1], periods=100, freq="15min")[1:]), 15, 192, None, -480)[
        idx
    ]
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_seasonal_profile_levels_and_fallbacks():
    t = 14 * 24  # two weeks, hourly, from a Monday
    hours = np.arange(t) % 24
    week = np.arange(t) // 168
    day = (np.arange(t) // 24) % 7
    v = np.full((t, 1, 1, 3), np.nan)
    v[:, 0, 0, 0] = hours + 1000 * week  # cell A: every bin
    v[(day == 0) & (hours == 3) & (week == 0), 0, 0, 1] = 7.0  # cell B: Monday 03:00 twice, Tuesday 04:00 once
    v[(day == 0) & (hours == 3) & (week == 1), 0, 0, 1] = 9.0
    v[(day == 1) & (hours == 4) & (week == 1), 0, 0, 1] = 20.0
    g = _tensor(v)  # cell C: never observed
    prof = fit_seasonal_profile(g.values, g.mask, g.times, 60, seasonal_period(t, 60))
    assert prof.period == 168 and prof.profile.shape == (168, 1, 1, 3)
    p = prof.profile[:, 0, 0]
    np.testing.assert_allclose(p[:, 0], (np.arange(168) % 24) + 500.0)  # mean of the two weeks
    assert p[3, 1] == pytest.approx(8.0)  # Monday 03:00: time-of-week
    assert p[24 + 4, 1] == pytest.approx(20.0)  # Tuesday 04:00: time-of-week
    assert p[2 * 24 + 3, 1] == pytest.approx(8.0)  # Wednesday 03:00: time-of-day fallback
    assert p[2 * 24 + 4, 1] == pytest.approx(20.0)  # Wednesday 04:00: time-of-day fallback
    assert p[10, 1] == pytest.approx(12.0)  # never at 10:00: cell mean (7 + 9 + 20) / 3
    channel_mean = np.nanmean(v)
    np.testing.assert_allclose(p[:, 2], channel_mean, rtol=1e-6)  # never observed: channel mean
    assert prof.counts[3, 0, 0, 1] == 2 and prof.sums[3, 0, 0, 1] == pytest.approx(16.0)


def test_seasonal_forecast_reads_the_bins_after_t_end():
    t = 3 * 24
    v = (np.arange(t) % 24).astype(float)[:, None, None, None] * np.ones((1, 1, 2, 2))
    g = _tensor(v)
    prof = fit_seasonal_profile(g.values, g.mask, g.times, 60, seasonal_period(t, 60))
    pred = seasonal_forecast(prof, g, 60, np.array([5, 23]), horizon=3)
    np.testing.assert_allclose(pred[:, :, 0, 0, 0], [[6, 7, 8], [0, 1, 2]])


def test_ridge_recovers_an_exact_linear_recurrence():
    """x[t+1] = x[t] - x[t-1]: the next two bins are exact linear functions of the last two lags."""
    rng = np.random.default_rng(0)
    t, cells = 200, 12
    x = np.zeros((t, cells))
    x[:2] = rng.uniform(-5, 5, size=(2, cells))
    for i in range(2, t):  # a recurrence over bins
        x[i] = x[i - 1] - x[i - 2]
    x += 50.0  # a level: x - 50 follows the recurrence
    v = x[:, None, None, :].copy()
    v[180:][rng.random(v[180:].shape) < 0.1] = np.nan  # gaps only in the scored period
    g = _tensor(v)
    model = RidgeLagBaseline(lags=4, context_steps=4, horizon=2, alpha=1e-6).fit(
        g, np.arange(10, 150), np.full((1, 1, cells), 50.0)
    )
    te = np.arange(150, 197)
    tidx = te[:, None] + np.arange(1, 3)[None, :]
    pred = model.predict(g, te)
    target, mask = g.values[tidx], g.mask[tidx]
    full_context = g.mask[te[:, None] - np.arange(4)[None, :]].all(axis=1)[:, None]  # every lag observed
    sel = mask & full_context
    assert sel.sum() > 400
    assert np.abs(pred[sel] - target[sel]).max() < 0.01
    only = model.predict(g, te, where=mask)
    assert np.isnan(only[~mask]).all() and np.isfinite(only[mask]).all()
    # the lag features are gathered once per channel for the rows asked: other rows, the same forecast
    np.testing.assert_array_equal(only[mask], pred[mask])


def test_ridge_standardises_its_features_so_the_units_do_not_move_the_penalty():
    """Values in other units (x 1000: m/h for km/h) give the same forecast in those units: the
    lags are standardised before the penalty, while masks and calendar features keep theirs. A
    Ridge on raw features shrinks small-unit lags harder and would forecast differently."""
    g = synthetic_grid(days=6, freq="1h", seed=3, channels=("loop.speed_kmh",))
    s, prof, train, hold = _split_fit(g, context=6, horizon=2, holdout_days=1, train_days=4)
    big = dataclasses.replace(g, values=g.values * 1000)
    alpha = 2e3  # strong, so that the units would matter without the scaler
    a = RidgeLagBaseline(4, 6, 2, alpha=alpha).fit(g, train, prof.cell_mean).predict(g, hold)
    b = RidgeLagBaseline(4, 6, 2, alpha=alpha).fit(big, train, prof.cell_mean * 1000).predict(big, hold)
    np.testing.assert_allclose(b, 1000 * a, rtol=1e-4)
    assert len(RidgeLagBaseline(4, 6, 2).regressor().steps) == 2  # StandardScaler, then Ridge


def test_evaluate_baselines_scores_the_same_targets():
    g = synthetic_grid(days=6, freq="1h")
    s = make_split(g, context_steps=6, horizon_steps=3, holdout_days=1, train_days=4)
    split = {"context_steps": 6, "horizon_steps": 3, "holdout_days": 1, "train_days": 4, "val_fraction": 0.15}
    fitted = {name: fit_baseline(g, name, ridge_lags=12, **split) for name in BASELINES}
    assert all(fb.fit_window == (s.fit_start, s.fit_end) for fb in fitted.values())
    res = evaluate_baselines(g, fitted, holdout_t_end=s.holdout, horizon=3)
    assert set(res) == set(BASELINES) == {"persistence", "seasonal_average", "ridge", "gbm"}
    tidx = s.holdout[:, None] + np.arange(1, 4)[None, :]
    expected_n = g.mask[tidx].sum(axis=(0, 2, 3, 4))
    expected_n_mape = (g.mask[tidx] & (np.abs(np.nan_to_num(g.values[tidx])) >= 10.0)).sum(axis=(0, 2, 3, 4))
    for m in res.values():
        assert m.n == expected_n.tolist() and m.n_mape == expected_n_mape.tolist()
        assert all(np.isfinite(m.rmse)) and all(r >= a for r, a in zip(m.rmse, m.mae, strict=True))
        assert all(np.isfinite(m.mape)) and all(v > 0 for v in m.mape)


# --------------------------------------------------------------------------------------
# gradient boosting on lag features
# --------------------------------------------------------------------------------------


def _split_fit(g: GridTensor, context: int, horizon: int, holdout_days: float, train_days: float):
    """Split, seasonal profile of the fit window and the training / holdout sample ends."""
    s = make_split(g, context_steps=context, horizon_steps=horizon, holdout_days=holdout_days, train_days=train_days)
    win = g.slice_time(s.fit_start, s.fit_end)
    prof = fit_seasonal_profile(
        win.values, win.mask, win.times, 60, seasonal_period(s.fit_end - s.fit_start, 60), win.holiday
    )
    return s, prof, np.concatenate([s.train, s.val]), s.holdout


def _holdout_rmse(pred: np.ndarray, g: GridTensor, t_end: np.ndarray, horizon: int, sel=None) -> float:
    tidx = t_end[:, None] + np.arange(1, horizon + 1)[None, :]
    m = g.mask[tidx] if sel is None else g.mask[tidx] & sel
    return float(np.sqrt(np.mean((pred[m] - g.values[tidx][m]) ** 2)))


def _logistic_grid(days: int = 12, cells: int = 10, missing: float = 0.1) -> GridTensor:
    """Each cell follows the chaotic logistic map z' = 3.9 z (1 - z): next value a nonlinear function of the last."""
    rng = np.random.default_rng(5)
    t = days * 24
    z = np.empty((t, cells))
    z[0] = rng.uniform(0.1, 0.9, cells)
    for i in range(1, t):  # a recurrence over bins
        z[i] = 3.9 * z[i - 1] * (1 - z[i - 1])
    v = (20.0 + 60.0 * z)[:, None, None, :]  # (T, C=1, H=1, W=cells)
    v[rng.random(v.shape) < missing] = np.nan
    return _tensor(v)


def test_gbm_learns_a_nonlinear_lag_relation_that_ridge_cannot():
    g = _logistic_grid()
    s, prof, train, hold = _split_fit(g, context=4, horizon=2, holdout_days=2, train_days=10)
    gbm = GradientBoostingLagBaseline(4, 4, 2).fit(g, train, prof, s.fit_start, s.fit_end)
    ridge = RidgeLagBaseline(4, 4, 2).fit(g, train, prof.cell_mean)
    last_seen = g.mask[hold][:, None]  # (N, 1, C, H, W): the last context bin of the cell observed
    gbm_rmse = _holdout_rmse(gbm.predict(g, hold), g, hold, 2, last_seen)
    ridge_rmse = _holdout_rmse(ridge.predict(g, hold), g, hold, 2, last_seen)
    assert gbm_rmse < 0.5 * ridge_rmse, (gbm_rmse, ridge_rmse)


def test_gbm_predicts_only_where_asked_and_ignores_values_under_the_mask():
    g = synthetic_grid(days=6, freq="1h", seed=2)
    s, prof, train, hold = _split_fit(g, context=6, horizon=3, holdout_days=1, train_days=4)
    tidx = hold[:, None] + np.arange(1, 4)[None, :]
    where = g.mask[tidx]
    a = GradientBoostingLagBaseline(4, 6, 3, seed=1).fit(g, train, prof, s.fit_start, s.fit_end)
    pa = a.predict(g, hold, where=where)
    assert pa.shape == where.shape
    assert np.isnan(pa[~where]).all() and np.isfinite(pa[where]).all()

    junk = dataclasses.replace(g, values=np.where(g.mask, g.values, 1e6).astype(np.float32))
    b = GradientBoostingLagBaseline(4, 6, 3, seed=1).fit(junk, train, prof, s.fit_start, s.fit_end)
    np.testing.assert_array_equal(b.predict(junk, hold, where=where), pa)
    # the same seed fits the same model: predictions are reproducible everywhere
    again = GradientBoostingLagBaseline(4, 6, 3, seed=1).fit(g, train, prof, s.fit_start, s.fit_end)
    np.testing.assert_array_equal(again.predict(g, hold), a.predict(g, hold))


@pytest.mark.parametrize("scan", [10**9, 500])  # one chunk of samples, or many
@pytest.mark.parametrize("max_rows", [50, 100_000])
def test_gbm_samples_observed_training_targets(max_rows, scan, monkeypatch):
    monkeypatch.setattr(baselines, "GBM_SCAN_TARGETS", scan)
    g = synthetic_grid(days=5, freq="1h", seed=3)
    s, prof, train, _ = _split_fit(g, context=6, horizon=2, holdout_days=1, train_days=3)
    tm = g.mask[train[:, None] + np.arange(1, 3)[None, :]].reshape(len(train), 2, 2, -1)  # (N, H_out, C, HW)
    gbm = GradientBoostingLagBaseline(6, 6, 2, max_rows=max_rows)
    rows = set(zip(*(a.tolist() for a in gbm._sample_targets(g, train)), strict=True))
    observed = set(zip(*(a.tolist() for a in np.nonzero(tm)), strict=True))
    assert len(rows) == min(max_rows, len(observed)) and rows <= observed
    gbm.fit(g, train, prof, s.fit_start, s.fit_end)
    assert gbm.n_rows == len(rows)


def test_gbm_uses_holiday_flags_when_the_grid_has_them():
    """Holidays carry a third of the usual traffic: the flag tells the model before the lags show it."""
    rng = np.random.default_rng(0)
    days, cells = 20, 8
    t = days * 24
    hour = np.arange(t) % 24
    base = 100.0 + 80.0 * np.sin(2 * np.pi * (hour - 8) / 24)
    day = np.arange(t) // 24
    holidays = [2, 6, 9, 13, 16, 19]  # from 2024-03-06: weekdays and weekend days, the last one in the holdout
    level = np.where(np.isin(day, holidays), 0.3, 1.0)
    v = (base * level)[:, None] * rng.uniform(0.8, 1.2, size=(1, cells)) + rng.normal(0, 3, size=(t, cells))
    plain = _tensor(v[:, None, None, :], start="2024-03-04")
    dates = tuple(str(d.date()) for d in pd.Timestamp("2024-03-04") + pd.to_timedelta(holidays, unit="D"))
    flagged = dataclasses.replace(plain, holidays=dates)
    assert flagged.holiday.sum() == 24 * len(holidays) and not plain.holiday.any()
    context, horizon = 3, 3
    scores = {}
    for name, g in (("plain", plain), ("flagged", flagged)):
        s, prof, train, hold = _split_fit(g, context=context, horizon=horizon, holdout_days=1, train_days=19)
        gbm = GradientBoostingLagBaseline(context, context, horizon).fit(g, train, prof, s.fit_start, s.fit_end)
        # the first hours of the holiday: the context still shows an ordinary day
        first = hold[(hold + 1) % 24 < 3]
        sel = flagged.holiday[first[:, None] + np.arange(1, horizon + 1)[None, :]][:, :, None, None, None]
        assert sel.any()
        scores[name] = _holdout_rmse(gbm.predict(g, first), g, first, horizon, sel)
    assert scores["flagged"] < 0.5 * scores["plain"], scores


def test_gbm_rejects_samples_outside_the_grid():
    g = synthetic_grid(days=3, freq="1h")
    s, prof, train, _ = _split_fit(g, context=6, horizon=2, holdout_days=1, train_days=1)
    gbm = GradientBoostingLagBaseline(6, 6, 2)
    with pytest.raises(ValueError, match=r"t_end \[71\] out of range"):
        gbm.fit(g, np.array([71]), prof, s.fit_start, s.fit_end)
    with pytest.raises(RuntimeError, match="fit first"):
        gbm.predict(g, train)
