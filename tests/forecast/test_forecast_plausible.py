"""Values that can be true (traffic.forecast.plausible): in the channel's range, inside their own interval."""

from __future__ import annotations

import numpy as np
import pytest

from traffic.channels import SPEED_MAX_KMH, value_range
from traffic.forecast.baselines import BASELINES
from traffic.forecast.plausible import plausible_forecast

CHANNELS = ("telraam.car", "telraam.speed_kmh", "loops.occupancy", "bus.count")


def _invariants(values, lower, upper, channels):
    for k, name in enumerate(channels):
        low, high = value_range(name)
        v, lo, hi = values[:, k], lower[:, k], upper[:, k]
        ok = np.isfinite(v)
        assert (v[ok] >= low).all() and (v[ok] <= high).all(), name
        assert (lo[ok] >= low).all() and (hi[ok] <= high).all(), name
        assert (lo[ok] <= v[ok]).all() and (v[ok] <= hi[ok]).all(), name


def test_berlins_negative_counts_are_clipped_and_stay_inside_their_interval():
    """The nightly's -192 vehicles/h below a lower bound clipped at 0 becomes 0 inside [0, upper]."""
    values = np.array([[[[-192.0]], [[230.0]], [[1.4]], [[-0.3]]]])  # (1, 4, 1, 1)
    lower = np.array([[[[0.0]], [[180.0]], [[0.9]], [[-2.0]]]])
    upper = np.array([[[[12.0]], [[260.0]], [[1.6]], [[1.0]]]])
    v, lo, hi = plausible_forecast(values, CHANNELS, lower, upper)
    assert v[0, :, 0, 0].tolist() == [0.0, SPEED_MAX_KMH, 1.0, 0.0]
    assert lo[0, :, 0, 0].tolist() == [0.0, 180.0, 0.9, 0.0]
    assert hi[0, :, 0, 0].tolist() == [12.0, SPEED_MAX_KMH, 1.0, 1.0]
    _invariants(v, lo, hi, CHANNELS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_forecasts_and_bounds_come_out_true_and_nan_stays_nan(seed):
    rng = np.random.default_rng(seed)
    shape = (6, len(CHANNELS), 3, 4)
    values = rng.normal(20, 150, shape).astype(np.float32)
    values[0, :, 0, 0] = np.nan
    a, b = (values + rng.normal(0, 60, shape).astype(np.float32) for _ in range(2))
    v, lo, hi = plausible_forecast(values, CHANNELS, np.minimum(a, b), np.maximum(a, b))
    assert v.dtype == lo.dtype == hi.dtype == np.float32
    _invariants(v, lo, hi, CHANNELS)
    assert np.isnan(v[0, :, 0, 0]).all()
    inside = np.isfinite(values)
    for k, name in enumerate(CHANNELS):  # values already in range are left alone
        low, high = value_range(name)
        keep = inside[:, k] & (values[:, k] >= low) & (values[:, k] <= high)
        np.testing.assert_array_equal(v[:, k][keep], values[:, k][keep])


def test_the_clip_never_moves_a_forecast_away_from_what_can_be_observed():
    """Every observation is in range, so each absolute error of the clipped forecast is at most the raw one's."""
    rng = np.random.default_rng(3)
    raw = rng.normal(0, 50, (24, 1, 5, 5))
    observed = rng.uniform(0, 80, raw.shape)  # counts: never negative
    clipped, _, _ = plausible_forecast(raw, ["cam.car"])
    assert (np.abs(clipped - observed) <= np.abs(raw - observed)).all()
    assert np.sqrt(np.mean((clipped - observed) ** 2)) < np.sqrt(np.mean((raw - observed) ** 2))


def test_without_bounds_and_bad_shapes():
    v, lo, hi = plausible_forecast(np.full((2, 1, 1, 1), -1.0), ["a.car"])
    assert (v == 0).all() and lo is None and hi is None
    with pytest.raises(ValueError, match="both lower and upper"):
        plausible_forecast(np.zeros((2, 1, 1, 1)), ["a.car"], lower=np.zeros((2, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\) with C = 2"):
        plausible_forecast(np.zeros((2, 1, 1, 1)), ["a.car", "a.bike"])
    with pytest.raises(ValueError, match="upper bound has shape"):
        plausible_forecast(np.zeros((2, 1, 1, 1)), ["a.car"], np.zeros((2, 1, 1, 1)), np.zeros((1, 1, 1, 1)))


def _collapsing_counts():
    """A camera whose counts run at three times their level for a day, then stop (0 observed): the
    regressions' forecasts reach below zero, outside bounds that are clipped at 0."""
    from tests.forecast.synth import synthetic_grid

    g = synthetic_grid(days=8, channels=("cam.car", "cam.speed_kmh"), seed=4)
    g.values[-30:-6, 0] = np.where(g.mask[-30:-6, 0], g.values[-30:-6, 0] * 3, np.nan)
    g.values[-6:, 0] = np.where(g.mask[-6:, 0], 0.0, np.nan)
    return g


def _fallback(g, name):
    from traffic.forecast.fallback import fit_baseline

    fitted = fit_baseline(
        g, name, context_steps=6, horizon_steps=12, holdout_days=1, train_days=6, val_fraction=0.15, ridge_lags=6
    )
    return fitted.forecast(-1)


def test_the_ridge_fallbacks_negative_counts_outside_their_bounds_come_out_true():
    g = _collapsing_counts()
    raw, lower, upper = _fallback(g, "ridge")
    assert (raw[:, 0] < 0).any() and ((raw < lower) | (raw > upper)).any(), "premise: the issue's negative counts"
    v, lo, hi = plausible_forecast(raw, g.channels, lower, upper)
    _invariants(v, lo, hi, g.channels)


@pytest.mark.parametrize("name", BASELINES)
def test_every_fallback_baseline_comes_out_true_after_the_forecast_stages_clip(name):
    g = _collapsing_counts()
    raw, lower, upper = _fallback(g, name)
    v, lo, hi = plausible_forecast(raw, g.channels, lower, upper)
    _invariants(v, lo, hi, g.channels)
