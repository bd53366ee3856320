"""Only the hours a feed observes are published (traffic.forecast.observed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic.forecast.observed import MIN_OBSERVED_SHARE, observed_targets, observed_times_of_day
from traffic.grid.tensor import GridTensor


def _grid(mask: np.ndarray, times: pd.DatetimeIndex, timezone: str) -> GridTensor:
    values = np.where(mask, 10.0, np.nan).astype(np.float32)
    return GridTensor(
        values, mask, mask.astype(np.int32), times, ("cam.car", "loop.speed_kmh"), np.zeros((1, 2), np.int32),
        timezone=timezone,
    )  # fmt: skip


def test_a_daylight_camera_publishes_no_night_and_a_loop_detector_every_hour():
    """Camera (cell 0): counts 07:00-18:00 Berlin time, once at 02:00 in 28 days. Loop (cell 1): all day."""
    times = pd.date_range("2024-11-04", periods=28 * 24, freq="1h", tz="Europe/Berlin").tz_convert("UTC")
    hour = times.tz_convert("Europe/Berlin").hour.to_numpy()
    mask = np.zeros((len(times), 2, 1, 2), dtype=bool)
    mask[:, :, 0, 0] = ((hour >= 7) & (hour < 18))[:, None]
    mask[50, :, 0, 0] = True  # one night observation (02:00 on the third day) is "almost never"
    mask[:, :, 0, 1] = True
    g = _grid(mask, times, "Europe/Berlin")
    share = observed_times_of_day(g)
    assert share.shape == (24, 2, 1, 2)
    assert share[2, 0, 0, 0] == 1 / 28 < MIN_OBSERVED_SHARE and share[8, 0, 0, 0] == 1.0
    assert (share[:, :, 0, 1] == 1.0).all()
    targets = pd.date_range("2024-12-02", periods=24, freq="1h", tz="Europe/Berlin").tz_convert("UTC")
    seen = observed_targets(g, targets)
    assert seen.shape == (24, 2, 1, 2)
    np.testing.assert_array_equal(seen[:, 0, 0, 0], (np.arange(24) >= 7) & (np.arange(24) < 18))
    assert seen[:, :, 0, 1].all()


def test_local_time_of_day_follows_the_clock_across_daylight_saving():
    """A camera counting 08:00-16:00 local before and after the October switch: the same local hours."""
    times = pd.date_range("2024-10-14", "2024-11-10 23:00", freq="1h", tz="Europe/Berlin").tz_convert("UTC")
    hour = times.tz_convert("Europe/Berlin").hour.to_numpy()
    mask = np.zeros((len(times), 2, 1, 2), dtype=bool)
    mask[:, :, 0, 0] = ((hour >= 8) & (hour < 16))[:, None]
    g = _grid(mask, times, "Europe/Berlin")
    targets = pd.date_range("2024-11-11", periods=24, freq="1h", tz="Europe/Berlin").tz_convert("UTC")
    seen = observed_targets(g, targets)[:, 0, 0, 0]
    np.testing.assert_array_equal(seen, (np.arange(24) >= 8) & (np.arange(24) < 16))
    assert not observed_targets(g, targets)[:, :, 0, 1].any()  # a cell that never observed: nothing published
