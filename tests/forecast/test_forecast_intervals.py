"""80 % intervals: validation residual quantiles, scaled per cell; horizon groups."""

from __future__ import annotations

import numpy as np
import pytest

from traffic.forecast.horizons import group_means, group_tag, horizon_groups
from traffic.forecast.intervals import CoverageAccumulator, IntervalModel, cell_scale, fit_intervals
from traffic.forecast.metrics import observed_points


def _noisy(rng, n, h_out=4, c=2, hw=(5, 6), sd=None):
    """Forecasts and targets whose errors are normal with a per-cell spread ``sd`` (C, H, W)."""
    pred = rng.uniform(20, 60, size=(n, h_out, c, *hw)).astype(np.float32)
    noise = rng.normal(size=pred.shape) * sd[None, None] * (1 + np.arange(h_out))[None, :, None, None, None]
    target = (pred + noise).astype(np.float32)
    mask = rng.random(pred.shape) > 0.2
    return pred, np.where(mask, target, np.nan), mask


def test_intervals_cover_80_percent_of_new_data_per_horizon_and_widen_with_the_horizon():
    rng = np.random.default_rng(0)
    sd = rng.uniform(1, 10, size=(2, 5, 6))  # quiet and busy cells
    scale = sd.astype(np.float32)
    im = fit_intervals([_noisy(rng, 40, sd=sd) for _ in range(3)], scale)
    assert im.q_lo.shape == im.q_hi.shape == (4, 2)
    assert (im.q_lo < 0).all() and (im.q_hi > 0).all()
    assert (np.diff(im.q_hi[:, 0]) > 0).all()  # errors grow with the horizon, so do the bounds
    cov = CoverageAccumulator(4)
    pred, y, m = _noisy(rng, 200, sd=sd)  # data the quantiles never saw
    lo, hi = im.bounds(pred)
    assert (lo <= pred).all() and (hi >= pred).all() and (lo >= 0).all()
    cov.update(lo, hi, y, m)
    got = np.array(cov.result())
    assert np.all(np.abs(got - 0.8) < 0.03), got
    # the per-cell scale matters: a busy cell gets a wider interval than a quiet one
    wide = (hi - lo)[0, 0, 0]
    assert wide[np.unravel_index(sd[0].argmax(), sd[0].shape)] > 3 * wide[np.unravel_index(sd[0].argmin(), sd[0].shape)]


def test_interval_model_round_trips_without_pickle_and_checks_shapes():
    rng = np.random.default_rng(1)
    sd = np.ones((2, 5, 6))
    im = fit_intervals([_noisy(rng, 10, sd=sd)], sd.astype(np.float32))
    back = IntervalModel.from_bytes(im.to_bytes())
    np.testing.assert_array_equal(back.q_lo, im.q_lo)
    np.testing.assert_array_equal(back.scale, im.scale)
    assert back.level == pytest.approx(0.8)
    with pytest.raises(ValueError, match="does not match the interval model"):
        im.bounds(np.zeros((3, 2, 5, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="no held-out samples"):
        fit_intervals([], sd)


def test_cell_scale_is_positive_and_falls_back_to_the_channel_spread():
    rng = np.random.default_rng(2)
    v = rng.normal(50, 5, size=(100, 1, 2, 2)).astype(np.float32)
    m = np.ones(v.shape, dtype=bool)
    m[:, 0, 1, 1] = False  # never observed
    v[:, 0, 0, 1] = 50.0  # constant
    s = cell_scale(v, m)
    assert (s > 0).all()
    assert s[0, 0, 0] == pytest.approx(5, rel=0.2)
    assert s[0, 1, 1] == pytest.approx(np.std(v[m]), rel=0.01)  # channel spread
    assert s[0, 0, 1] == pytest.approx(0.05 * np.std(v[m]), rel=0.01)  # floored


def test_horizon_groups_by_hours_ahead():
    day_15min = horizon_groups(900, 96)
    assert [g.label for g in day_15min] == ["1 h", "2–3 h", "4–6 h", "7–12 h", "13–24 h"]
    assert [(g.steps.start, g.steps.stop) for g in day_15min] == [(0, 4), (4, 12), (12, 24), (24, 48), (48, 96)]
    assert [(g.steps.start, g.steps.stop) for g in horizon_groups(3600, 24)][-1] == (12, 24)
    assert [group_tag(g.label) for g in horizon_groups(3600, 3)] == ["h01", "h02-03"]
    means = group_means([1.0, 2.0, np.nan, 4.0], horizon_groups(3600, 4))
    assert means == {"1 h": 1.0, "2–3 h": 2.0, "4–6 h": 4.0}


def test_bounds_and_coverage_at_the_observed_targets_equal_the_dense_ones():
    """Scoring reads the observed targets only: the same bounds and coverage as on the dense batch."""
    rng = np.random.default_rng(2)
    shape = (5, 4, 3, 6, 7)  # (B, H_out, C, H, W)
    model = IntervalModel(
        0.8, -rng.random((4, 3)), rng.random((4, 3)), (0.5 + rng.random((3, 6, 7))).astype(np.float32)
    )
    pred = rng.normal(1.0, 1.0, shape).astype(np.float32)
    target = rng.normal(1.0, 1.0, shape).astype(np.float32)
    mask = rng.random(shape) < 0.2
    target[~mask] = np.nan
    idx = np.flatnonzero(mask)
    lo, hi = model.bounds(pred)
    lo_at, hi_at = model.bounds_at(pred, observed_points(mask))
    np.testing.assert_allclose(lo_at, lo.reshape(-1)[idx], rtol=1e-6)
    np.testing.assert_allclose(hi_at, hi.reshape(-1)[idx], rtol=1e-6)
    dense, sparse = CoverageAccumulator(4), CoverageAccumulator(4)
    dense.update(lo, hi, target, mask)
    sparse.update_model(model, pred, target, mask)
    assert dense.result() == sparse.result()
    # the dense rule, written out: observed and inside
    inside = mask & (np.nan_to_num(target) >= lo) & (np.nan_to_num(target) <= hi)
    np.testing.assert_allclose(sparse.result(), inside.sum(axis=(0, 2, 3, 4)) / mask.sum(axis=(0, 2, 3, 4)))
