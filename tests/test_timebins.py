"""The bin-length rule and the days -> bins arithmetic (traffic.timebins)."""

from __future__ import annotations

import pandas as pd
import pytest

from traffic import timebins
from traffic.forecast import features


@pytest.mark.parametrize(("seconds", "minutes"), [(300, 5), (900, 15), (3600, 60), (7200, 120), (86400, 1440)])
def test_a_bin_dividing_a_day_into_whole_minutes_is_allowed(seconds, minutes):
    assert timebins.check_bin_seconds(seconds) == minutes


@pytest.mark.parametrize("seconds", [420, 90, 30, 0, -3600, 25200])
def test_other_bins_are_refused_naming_the_source_and_the_rule(seconds):
    with pytest.raises(ValueError, match=rf"^cities/x.toml: bin length {seconds:g} s is not allowed: .*divides a day"):
        timebins.check_bin_seconds(seconds, "cities/x.toml")


def test_durations_are_read_and_checked():
    assert timebins.time_bin_seconds("15min") == 900
    assert timebins.time_bin_seconds("1h") == 3600
    with pytest.raises(ValueError, match="is not a duration like '15min' or '1h', got 'soon'"):
        timebins.time_bin_seconds("soon")
    with pytest.raises(ValueError, match="must divide a day"):
        timebins.time_bin_seconds("90s")  # whole seconds dividing a day, but not whole minutes


def test_bin_minutes_of_a_time_axis():
    assert timebins.bin_minutes(pd.date_range("2024-01-01", periods=3, freq="15min", tz="UTC")) == 15
    assert features.bin_minutes is timebins.bin_minutes  # one rule, re-exported for the model inputs
    with pytest.raises(ValueError, match="need at least 2 time bins"):
        timebins.bin_minutes(pd.date_range("2024-01-01", periods=1, freq="1h", tz="UTC"))
    uneven = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 03:00"], tz="UTC")
    with pytest.raises(ValueError, match=r"not evenly spaced: bin 2 \(2024-01-01T03:00:00\+00:00\) comes 7200 s"):
        timebins.bin_minutes(uneven)


def test_days_to_bins():
    assert timebins.bins_per_day(15) == 96
    assert timebins.days_to_bins(7, 60) == 168
    assert timebins.days_to_bins(0.5, 15) == 48
    assert timebins.days_to_bins(1 / 96, 15) == 1  # rounded to the nearest bin
    with pytest.raises(ValueError, match="bin_minutes: bin length 420 s is not allowed"):
        timebins.bins_per_day(7)
