"""Baselines on hand-built arrays with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traffic.forecast.baselines import (
    RidgeLagBaseline,
    evaluate_baselines,
    fit_seasonal_profile,
    persistence_forecast,
    seasonal_forecast,
    seasonal_period,
)
from traffic.forecast.train import make_split
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
    assert seasonal_period(13 * 24, 60) == 24
    assert seasonal_period(5 * 96, 15) == 96


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
    pred = seasonal_forecast(prof, g.times, 60, np.array([5, 23]), horizon=3)
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


def test_evaluate_baselines_scores_the_same_targets():
    g = synthetic_grid(days=6, freq="1h")
    s = make_split(g, context_steps=6, horizon_steps=3, holdout_days=1, train_days=4)
    res = evaluate_baselines(
        g,
        fit_start=s.fit_start,
        fit_end=s.fit_end,
        train_t_end=np.concatenate([s.train, s.val]),
        holdout_t_end=s.holdout,
        context_steps=6,
        horizon=3,
    )
    assert set(res) == {"persistence", "seasonal_average", "ridge"}
    assert res["persistence"].n == res["seasonal_average"].n == res["ridge"].n
    expected_n = g.mask[s.holdout[:, None] + np.arange(1, 4)[None, :]].sum(axis=(0, 2, 3, 4))
    assert res["ridge"].n == expected_n.tolist()
    for m in res.values():
        assert all(np.isfinite(m.rmse)) and all(r >= a for r, a in zip(m.rmse, m.mae, strict=True))
