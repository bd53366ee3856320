"""Model inputs built from a GridTensor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traffic.forecast.features import CALENDAR_FEATURES, bin_minutes, build_inputs, calendar_features, n_features
from traffic.grid.tensor import GridTensor


def _grid(t=10, c=2, hw=(3, 4), start="2024-03-04 00:00", freq="1h"):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(t, c, *hw)).astype(np.float32)
    mask = rng.random(values.shape) > 0.4
    times = pd.date_range(start, periods=t, freq=freq, tz="UTC")
    chans = tuple(f"f.c{i}" for i in range(c))
    return GridTensor(np.where(mask, values, np.nan), mask, mask.astype(np.int32), times, chans, np.zeros(hw, np.int32))


def test_layout_values_masks_calendar():
    g = _grid()
    x = build_inputs(g, np.array([3, 9]), context_steps=4, horizon=2)
    assert x.shape == (2, 4, n_features(2), 3, 4) == (2, 4, 2 * 2 + len(CALENDAR_FEATURES), 3, 4)
    assert x.dtype == np.float32
    idx = np.array([[0, 1, 2, 3], [6, 7, 8, 9]])
    np.testing.assert_array_equal(x[:, :, :2], np.where(g.mask[idx], g.values[idx], 0.0))
    np.testing.assert_array_equal(x[:, :, 2:4], g.mask[idx].astype(np.float32))
    cal = calendar_features(g.times)[idx]
    np.testing.assert_array_equal(x[:, :, 4:], np.broadcast_to(cal[:, :, :, None, None], x[:, :, 4:].shape))
    assert np.isfinite(x).all()


@pytest.mark.parametrize(
    "stamp,expected",
    [
        ("2024-03-04 00:00", [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]),  # Monday midnight UTC
        ("2024-03-04 06:00", [1.0, 0.0, np.sin(2 * np.pi / 28), np.cos(2 * np.pi / 28), 0.0, 0.0, 0.0]),
        ("2024-03-09 12:00", [0.0, -1.0, np.sin(2 * np.pi * 5.5 / 7), np.cos(2 * np.pi * 5.5 / 7), 1.0, 0.0, 0.0]),
    ],
)
def test_calendar_features_known_values(stamp, expected):
    got = calendar_features(pd.DatetimeIndex([pd.Timestamp(stamp, tz="UTC")]))[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_context_out_of_range_is_an_error():
    g = _grid()
    with pytest.raises(ValueError, match="out of range"):
        build_inputs(g, np.array([2]), context_steps=4, horizon=1)
    with pytest.raises(ValueError, match="out of range"):
        build_inputs(g, np.array([10]), context_steps=4, horizon=1)
    build_inputs(g, np.array([9]), context_steps=4, horizon=5)  # targets past the grid are fine


def test_bin_minutes():
    assert bin_minutes(_grid(freq="15min").times) == 15
    assert bin_minutes(_grid(freq="1h").times) == 60
    with pytest.raises(ValueError, match="divides a day"):
        bin_minutes(pd.date_range("2024-01-01", periods=3, freq="7min", tz="UTC"))
    with pytest.raises(ValueError, match="evenly spaced"):
        bin_minutes(pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 03:00"], tz="UTC"))


def test_holiday_flags_in_local_time_and_ahead():
    """Berlin's Christmas Day starts at 23:00 UTC on the 24th; ``holiday_ahead`` holds the days after the last bin's."""
    times = pd.date_range("2024-12-24 20:00", periods=8, freq="1h", tz="UTC")
    values = np.zeros((8, 1, 1, 1), dtype=np.float32)
    mask = np.ones(values.shape, dtype=bool)
    g = GridTensor(
        values, mask, mask.astype(np.int32), times, ("f.c0",), np.zeros((1, 1), np.int32),
        timezone="Europe/Berlin", holidays=("2024-12-25",),
    )  # fmt: skip
    np.testing.assert_array_equal(g.holiday, [0, 0, 0, 1, 1, 1, 1, 1])
    x = build_inputs(g, np.array([3]), context_steps=4, horizon=2)  # bins 20:00 .. 23:00 UTC
    k = CALENDAR_FEATURES.index("holiday")
    np.testing.assert_array_equal(x[0, :, 2 + k, 0, 0], [0, 0, 0, 1])
    # last bin 23:00 UTC = 00:00 on the 25th (local); slots hold the 29th, 28th, 27th, 26th
    np.testing.assert_array_equal(x[0, :, 2 + k + 1, 0, 0], [0, 0, 0, 0])
    x = build_inputs(g, np.array([2]), context_steps=3, horizon=2)  # last bin 22:00 UTC = 23:00 on the 24th
    np.testing.assert_array_equal(x[0, :, 2 + k + 1, 0, 0], [0, 0, 1])  # the 27th, 26th, 25th
