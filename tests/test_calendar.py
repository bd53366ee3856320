"""Public-holiday flags: the package's tables, local dates, extra dates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traffic.calendar import HolidayCalendar, city_holidays, grid_holidays, holiday_calendar, holiday_flags
from traffic.config import load_city


def test_berlin_2024_holidays_come_from_the_package():
    dates = city_holidays(HolidayCalendar("DE", "BE"), 2024, 2024)
    assert {"2024-03-08", "2024-10-03", "2024-12-25", "2024-12-26"} <= set(dates)  # Women's Day is Berlin-only
    assert "2024-12-24" not in dates and "2024-10-31" not in dates  # not public holidays in Berlin
    assert "2024-03-08" not in city_holidays(HolidayCalendar("DE", "BY"), 2024, 2024)


def test_extra_dates_and_no_country():
    cal = HolidayCalendar(None, None, ("2024-12-24", "2024-12-31"))
    assert city_holidays(cal, 2024, 2025) == ("2024-12-24", "2024-12-31")


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Europe/Berlin", [False, True, True, True, False]),  # 23:00 UTC on the 24th is 00:00 on the 25th
        ("UTC", [False, False, True, True, True]),
        ("America/Los_Angeles", [False, False, False, False, True]),  # the 25th starts at 08:00 UTC in LA
    ],
)
def test_flags_are_read_in_local_time(tz, expected):
    times = pd.DatetimeIndex(
        ["2024-12-24 22:00", "2024-12-24 23:00", "2024-12-25 00:00", "2024-12-25 07:00", "2024-12-25 23:30"], tz="UTC"
    )
    got = holiday_flags(times, tz, ["2024-12-25"])
    np.testing.assert_array_equal(got, expected)


def test_shipped_cities_have_holiday_calendars():
    assert load_city("berlin").calendar == HolidayCalendar("DE", "BE")
    assert load_city("los_angeles").calendar == HolidayCalendar("US", "CA")
    assert holiday_flags(pd.DatetimeIndex([]), "UTC", ["2024-12-25"]).shape == (0,)


def test_a_holiday_spec_names_a_country_or_dates():
    assert holiday_calendar(None) == HolidayCalendar()
    assert holiday_calendar("us-ny") == HolidayCalendar("US", "NY")
    assert holiday_calendar("2015-07-05, 2015-07-03,2015-07-03") == HolidayCalendar(extra=("2015-07-03", "2015-07-05"))
    assert holiday_calendar(["2015-07-03"]) == HolidayCalendar(extra=("2015-07-03",))
    with pytest.raises(ValueError, match=r"give one country code \('US', 'US-NY'\) or ISO dates"):
        holiday_calendar("US,2015-07-03")
    with pytest.raises(ValueError, match="holiday country 'XX' is not known"):
        holiday_calendar("XX")


def test_a_grid_carries_the_holidays_of_its_years_and_the_next():
    times = pd.date_range("2024-12-30", periods=24, freq="1h", tz="UTC")
    dates = grid_holidays(HolidayCalendar("DE", "BE"), times)
    assert "2024-12-25" in dates and "2025-12-25" in dates and "2026-01-01" not in dates
    assert dates == city_holidays(HolidayCalendar("DE", "BE"), 2024, 2025)
    assert grid_holidays(HolidayCalendar("DE", "BE", ("2030-01-02",)), times[:0]) == ("2030-01-02",)
