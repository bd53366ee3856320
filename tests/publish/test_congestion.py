"""Congestion index and levels (traffic.publish.congestion)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from traffic.config import PROJECT_ROOT
from traffic.publish.congestion import (
    LEVELS,
    MAX_VOLUME_INDEX,
    MIN_REFERENCE_OBSERVATIONS,
    NO_LEVEL,
    VOLUME_LEVELS,
    congestion,
    congestion_levels,
    is_speed_channel,
    masked_percentile,
    reference_stats,
    volume,
    volume_floor,
    volume_levels,
)

MPH_TO_KMH = 1.609344


def _one(v: float, ref: float, channel: str) -> tuple[float, int]:
    index, level = congestion(np.array([[[[v]]]]), np.array([[[ref]]]), [channel])
    return float(index[0, 0, 0, 0]), int(level[0, 0, 0, 0])


@pytest.mark.parametrize(
    ("v", "free_flow", "expected"),
    [
        (50.0, 100.0, 0.5),
        (100.0, 100.0, 0.0),
        (130.0, 100.0, 0.0),  # faster than free flow: no congestion, not negative
        (0.0, 100.0, 1.0),
        (-4.0, 100.0, 1.0),  # a slightly negative model output stays in [0, 1]
        (20.0, 80.0, 0.75),
        (np.nan, 100.0, np.nan),  # no forecast value
        (50.0, np.nan, np.nan),  # cell never had data
        (50.0, 0.0, np.nan),  # a free-flow speed of 0 is no reference
    ],
)
def test_speed_index(v, free_flow, expected):
    index, level = _one(v, free_flow, "metr.speed_kmh")
    if np.isnan(expected):
        assert np.isnan(index) and level == NO_LEVEL
    else:
        assert index == pytest.approx(expected)
        assert 0.0 <= index <= 1.0


@pytest.mark.parametrize(
    ("v", "p95", "expected"),
    [
        (50.0, 100.0, 0.5),
        (100.0, 100.0, 1.0),
        (130.0, 100.0, 1.3),
        (400.0, 100.0, MAX_VOLUME_INDEX),  # clipped
        (-3.0, 10.0, 0.0),
        (0.5, 0.0, 0.5),  # reference floored at 1 count per bin: no division by zero
        (3.0, 0.2, MAX_VOLUME_INDEX),
        (np.nan, 10.0, np.nan),
        (5.0, np.nan, np.nan),
    ],
)
def test_volume_index(v, p95, expected):
    """One cell: its own p95 is the channel's median, so the data floor is the reference itself (at least 1)."""
    index, _ = volume(np.array([[[[v]]]]), np.array([[[p95]]]), ["telraam.car"])
    if np.isnan(expected):
        assert np.isnan(index[0, 0, 0, 0])
    else:
        assert index[0, 0, 0, 0] == pytest.approx(expected)


def test_a_volume_has_no_congestion_and_a_speed_no_volume_index():
    """Congestion means congestion: a count channel gets a volume index and level, never a congestion one."""
    fc = np.array([[[[90.0]], [[20.0]]]])  # (1, 2, 1, 1): 90 cars, 20 km/h
    ref = np.array([[[100.0]], [[50.0]]])
    channels = ["telraam.car", "telraam.speed_kmh"]
    c_index, c_level = congestion(fc, ref, channels)
    v_index, v_level = volume(fc, ref, channels)
    assert np.isnan(c_index[0, 0, 0, 0]) and c_level[0, 0, 0, 0] == NO_LEVEL
    assert c_index[0, 1, 0, 0] == pytest.approx(0.6) and LEVELS[c_level[0, 1, 0, 0]] == "heavy"
    assert v_index[0, 0, 0, 0] == pytest.approx(0.9) and VOLUME_LEVELS[v_level[0, 0, 0, 0]] == "busy"
    assert np.isnan(v_index[0, 1, 0, 0]) and v_level[0, 1, 0, 0] == NO_LEVEL


def test_the_volume_floor_is_the_channels_median_p95():
    """A cell whose p95 is one passenger reads its forecast against the channel's typical cell, not against 1."""
    ref = np.array([[[1.0, 40.0, 60.0, np.nan]], [[0.2, 0.3, 0.4, 0.1]], [[50.0, 30.0, 20.0, 10.0]]])
    channels = ["bus.count", "bus.pedestrian", "bus.speed_kmh"]
    floor = volume_floor(ref, channels)
    assert floor[0] == pytest.approx(40.0)  # median of 1, 40, 60
    assert floor[1] == pytest.approx(1.0)  # a median below 1 count per bin is floored at 1
    assert np.isnan(floor[2])  # speeds have no floor
    fc = np.broadcast_to(ref[None], (1, *ref.shape)).copy()
    fc[0, 0] = [[1.0, 40.0, 60.0, 5.0]]
    index, level = volume(fc, ref, channels)
    assert index[0, 0, 0].tolist()[:3] == pytest.approx([1.0 / 40.0, 1.0, 1.0])
    assert VOLUME_LEVELS[level[0, 0, 0, 0]] == "quiet" and np.isnan(index[0, 0, 0, 3])


@pytest.mark.parametrize(
    ("index", "level"),
    [
        (0.0, "quiet"),
        (0.2499, "quiet"),
        (0.25, "normal"),
        (0.75, "busy"),
        (0.9999, "busy"),
        (1.0, "peak"),
        (1.5, "peak"),
    ],
)
def test_volume_levels(index, level):
    assert VOLUME_LEVELS[volume_levels(np.array([index]))[0]] == level


def test_a_reference_on_too_few_observations_is_none():
    values = np.arange(60.0).reshape(60, 1, 1, 1) * np.ones((1, 1, 1, 2))
    mask = np.ones(values.shape, bool)
    mask[MIN_REFERENCE_OBSERVATIONS - 1 :, 0, 0, 1] = False  # one observation short
    ref = reference_stats(values, mask, ["t.car"])
    assert np.isfinite(ref[0, 0, 0]) and np.isnan(ref[0, 0, 1])


@pytest.mark.parametrize(
    ("index", "level"),
    [
        (0.0, "free"),
        (0.2499, "free"),
        (0.25, "moderate"),
        (0.4999, "moderate"),
        (0.5, "heavy"),
        (0.7499, "heavy"),
        (0.75, "severe"),
        (1.0, "severe"),
        (1.5, "severe"),
    ],
)
def test_levels_cut_at_quarter_points(index, level):
    assert LEVELS[congestion_levels(np.array([index]))[0]] == level


def test_nan_index_has_no_level():
    codes = congestion_levels(np.array([np.nan, 0.3, np.inf * 0]))
    assert codes.tolist() == [NO_LEVEL, LEVELS.index("moderate"), NO_LEVEL]


@pytest.mark.parametrize(
    ("channel", "speed"),
    [
        ("metr.speed_kmh", True),
        ("telraam.car", False),
        ("x.count", False),
        ("speed_kmh", True),
        ("a.speed_kmh_x", False),
    ],
)
def test_speed_channel_names(channel, speed):
    assert is_speed_channel(channel) is speed


def test_reference_by_hand():
    # one cell, two channels, five bins; a masked-out 999 must not count
    speeds = [10.0, 20.0, 30.0, 40.0, 50.0, 999.0]
    counts = [0.0, 1.0, 2.0, 3.0, 4.0, 999.0]
    values = np.array([speeds, counts]).T.reshape(6, 2, 1, 1)
    mask = np.ones_like(values, dtype=bool)
    mask[-1] = False
    ref = reference_stats(values, mask, ["m.speed_kmh", "m.count"], min_observations=1)
    # p85 of 10..50: position 0.85 * 4 = 3.4 -> 40 + 0.4 * 10; p95 of 0..4: 0.95 * 4 = 3.8
    assert ref[0, 0, 0] == pytest.approx(44.0)
    assert ref[1, 0, 0] == pytest.approx(3.8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_matches_numpy_nanpercentile(seed):
    rng = np.random.default_rng(seed)
    t, c, h, w = 40, 3, 4, 5
    values = rng.gamma(2.0, 20.0, (t, c, h, w))
    mask = rng.random(values.shape) < rng.uniform(0.05, 0.9)
    mask[:, :, 0, 0] = False  # a cell that never had data
    mask[:, :, 1, 1] = False
    mask[7, :, 1, 1] = True  # a cell with a single observation
    channels = ["a.speed_kmh", "a.count", "b.speed_kmh"]
    ref = reference_stats(values, mask, channels, min_observations=1)
    masked = np.where(mask, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        expected = np.stack(
            [
                np.nanpercentile(masked[:, i], 85 if is_speed_channel(ch) else 95, axis=0)
                for i, ch in enumerate(channels)
            ]
        )
    np.testing.assert_allclose(ref, expected, rtol=1e-12, equal_nan=True)
    assert np.isnan(ref[:, 0, 0]).all()
    np.testing.assert_allclose(ref[:, 1, 1], values[7, :, 1, 1])


def test_masked_percentile_ignores_nonfinite_even_if_masked_true():
    values = np.array([[1.0], [np.nan], [3.0], [np.inf]])
    assert masked_percentile(values, np.ones_like(values, bool), np.array(50.0))[0] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("values_shape", "mask_shape", "channels"),
    [
        ((4, 2, 1, 1), (4, 2, 1, 1), ["a.count"]),
        ((4, 2, 1), (4, 2, 1), ["a", "b"]),
        ((4, 1, 1, 1), (3, 1, 1, 1), ["a"]),
    ],
)
def test_reference_rejects_bad_shapes(values_shape, mask_shape, channels):
    with pytest.raises(ValueError, match="channel|must"):
        reference_stats(np.zeros(values_shape), np.ones(mask_shape, bool), channels)


def test_congestion_rejects_mismatched_reference():
    """The forecast and the reference must be of the same grid."""
    with pytest.raises(ValueError, match="ref"):
        congestion(np.zeros((2, 1, 3, 3)), np.zeros((1, 3, 4)), ["a.count"])


def test_real_metr_la_rush_hour_is_more_congested_than_night():
    """METR-LA speeds (207 sensors as cells): free flow is freeway-like, rush hours congest."""
    raw = pd.read_csv(PROJECT_ROOT / "data/samples/la_metr/observations/los_speed.csv")
    kmh = raw.to_numpy(np.float64) * MPH_TO_KMH  # (T, 207), 5-minute bins, mph
    times = pd.date_range("2012-03-01", periods=len(raw), freq="5min", tz="America/Los_Angeles")
    values = kmh[:, None, None, :]
    mask = np.isfinite(values) & (values > 0)  # METR-LA writes 0 for "no reading"
    ref = reference_stats(values, mask, ["metr.speed_kmh"])
    assert np.isfinite(ref).all()
    assert 80.0 < np.median(ref) <= 70 * MPH_TO_KMH + 1e-9  # freeway free flow, capped at 70 mph in the data

    index, level = congestion(values, ref, ["metr.speed_kmh"])
    weekday = times.day_of_week < 5
    night = weekday & (times.hour >= 1) & (times.hour < 4)
    rush = weekday & (((times.hour >= 7) & (times.hour < 9)) | ((times.hour >= 16) & (times.hour < 19)))
    assert index[rush].mean() > index[night].mean() + 0.05
    heavy = level >= LEVELS.index("heavy")
    assert heavy[rush].mean() > heavy[night].mean()
