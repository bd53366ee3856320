"""A fitted baseline forecasts later origins of a longer grid from their own context, its fit unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from tests.forecast.synth import synthetic_grid
from traffic.forecast.baselines import BASELINES
from traffic.forecast.fallback import fit_baseline


def _fit(g, name):
    return fit_baseline(
        g, name, context_steps=6, horizon_steps=12, holdout_days=1, train_days=5, val_fraction=0.15, ridge_lags=6
    )


@pytest.mark.parametrize("name", BASELINES)
def test_a_fitted_baseline_forecasts_a_later_grid_from_that_grids_context(name):
    full = synthetic_grid(days=9, channels=("cam.car", "cam.speed_kmh"), seed=7)
    early = full.slice_time(0, full.shape[0] - 24)  # the version's window: a day less
    fitted = _fit(early, name)
    t = early.shape[0] - 1
    # the same origin on the grid it was fitted on and on the longer one: the same forecast and bounds
    for a, b in zip(fitted.forecast(t), fitted.forecast_on(full, t), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
    # a later origin: read from the longer grid's context (the day after the fit), not the fit grid's
    later = full.shape[0] - 1
    pred, lower, upper = fitted.forecast_on(full, later)
    assert pred.shape == (12, *full.shape[1:]) and np.isfinite(pred).all()
    assert np.isfinite(lower).all() and np.isfinite(upper).all() and (lower <= upper).all()
    if name == "persistence":  # the last value of the longer grid's context carries forward
        seen = full.mask[later]
        np.testing.assert_allclose(pred[0][seen], full.values[later][seen], rtol=1e-6)
    # the fit stays that of the early window: refitting on the longer grid gives another forecast
    if name in ("ridge", "gbm", "seasonal_average"):
        assert not np.allclose(pred, _fit(full, name).forecast(later)[0])


@pytest.mark.parametrize("name", BASELINES)
def test_the_same_origin_on_a_grid_that_starts_later_gets_the_same_forecast(name):
    """Inside the fit window GBM's prior leaves a bin's own value out: found by time, not by bin index."""
    full = synthetic_grid(days=9, channels=("cam.car", "cam.speed_kmh"), seed=7)
    fitted = _fit(full, name)
    t = fitted.fit_window[0] + 12  # context and targets inside the fit window, before index fit_start + 24
    later = full.slice_time(24, full.shape[0])  # the same data from a day later on: every index moves by 24
    for a, b in zip(fitted.forecast(t), fitted.forecast_on(later, t - 24), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, equal_nan=True)


def test_a_fitted_baseline_refuses_a_grid_of_other_cells_or_channels():
    g = synthetic_grid(days=8, channels=("cam.car", "cam.speed_kmh"), seed=7)
    fitted = _fit(g, "seasonal_average")
    other = synthetic_grid(days=8, channels=("cam.car",), seed=7)
    with pytest.raises(ValueError, match="channels"):
        fitted.forecast_on(other, other.shape[0] - 1)


def test_the_same_grid_and_settings_reuse_the_fit_and_any_change_refits(monkeypatch):
    """A fit is kept per process by the grid's fingerprint and the settings (the training's backtest,
    the forecast task and a replay fit the same baselines on the same window): a copy of the grid
    reuses it, one changed value or setting fits again, and the forecasts are those of a fresh fit."""
    from traffic.forecast import fallback

    calls = []
    real = fallback._fit
    monkeypatch.setattr(fallback, "_fit", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(fallback, "_FITS", {})
    g = synthetic_grid(days=8, channels=("cam.car",), seed=11)
    first = _fit(g, "gbm")
    copy = synthetic_grid(days=8, channels=("cam.car",), seed=11)  # equal content, other arrays
    again = _fit(copy, "gbm")
    assert len(calls) == 1
    t = g.shape[0] - 1
    for a, b in zip(first.forecast(t), again.forecast(t), strict=True):
        np.testing.assert_array_equal(a, b)
    values = g.values.copy()
    values[np.argmax(g.mask)] += 1.0  # one observed value differs
    import dataclasses

    changed = dataclasses.replace(g, values=values)
    _fit(changed, "gbm")
    fit_baseline(
        g, "gbm", context_steps=6, horizon_steps=12, holdout_days=1, train_days=5, val_fraction=0.15, ridge_lags=4
    )
    assert len(calls) == 3
    monkeypatch.setattr(fallback, "_FITS", {})
    fresh = _fit(g, "gbm")
    for a, b in zip(first.forecast(t), fresh.forecast(t), strict=True):
        np.testing.assert_array_equal(a, b)
