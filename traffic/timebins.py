"""Time bins: the bin-length rule and the arithmetic between days and bins.

A city's or an array's time axis is cut into bins of one length. The forecaster reads the bin of
the day and of the week from a bin's start, so a bin must be a whole number of minutes that
divides a day (5, 15, 30, 60, 120, ... 1440 min). :func:`check_bin_seconds` is that rule; every
reader of a bin length (a city's ``time_bin``, an array file's times, the model configuration)
applies it here. Days become bins with :func:`days_to_bins`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
SECONDS_PER_DAY = 60 * MINUTES_PER_DAY
#: Bin lengths in minutes named in the rule's message.
EXAMPLE_BIN_MINUTES = (5, 15, 30, 60, 120, 1440)


def check_bin_seconds(seconds: float, source: str = "") -> int:
    """Apply the bin-length rule to a bin of ``seconds`` and return its length in minutes.

    Parameters
    ----------
    seconds : float
        Length of one bin.
    source : str
        What the length came from (a file, a key), named first in the message; "" = nothing.

    Returns
    -------
    int
        Minutes per bin.

    Raises
    ------
    ValueError
        If the bin is not a whole number of minutes that divides a day.
    """
    minutes = seconds / 60
    if seconds <= 0 or minutes != int(minutes) or MINUTES_PER_DAY % int(minutes):
        raise ValueError(
            f"{_prefix(source)}bin length {seconds:g} s is not allowed: a bin must divide a day into whole minutes, "
            f"i.e. be a whole number of minutes that divides a day; allowed: e.g. "
            f"{', '.join(map(str, EXAMPLE_BIN_MINUTES))} min"
        )
    return int(minutes)


def time_bin_seconds(spec: str, source: str = "") -> int:
    """Seconds of a bin length written as a duration (``"15min"``, ``"1h"``), the rule applied.

    ``source`` names where ``spec`` came from, first in a message ("" = nothing).

    Raises
    ------
    ValueError
        If ``spec`` is not a duration, or breaks :func:`check_bin_seconds`.
    """
    try:
        seconds = pd.Timedelta(spec).total_seconds()
    except (TypeError, ValueError):
        raise ValueError(f"{_prefix(source)}is not a duration like '15min' or '1h', got {spec!r}") from None
    return 60 * check_bin_seconds(seconds, source)


def bin_minutes(times: pd.DatetimeIndex, source: str = "grid times") -> int:
    """Bin length of an evenly spaced time axis, in whole minutes (the rule applied).

    Raises
    ------
    ValueError
        If there are fewer than two bins, the spacing is uneven, or the bin breaks
        :func:`check_bin_seconds`.
    """
    if len(times) < 2:
        raise ValueError(f"{_prefix(source)}need at least 2 time bins to know the bin length, got {len(times)}")
    steps = np.diff(pd.DatetimeIndex(times).as_unit("ns").asi8)
    uneven = np.flatnonzero(steps != steps[0])
    if len(uneven):
        i = int(uneven[0]) + 1
        raise ValueError(
            f"{_prefix(source)}grid times are not evenly spaced: bin {i} ({times[i].isoformat()}) comes "
            f"{steps[i - 1] / 1e9:g} s after bin {i - 1}, bin 1 {steps[0] / 1e9:g} s after bin 0"
        )
    return check_bin_seconds(steps[0] / 1e9, source)


def _prefix(source: str) -> str:
    return f"{source}: " if source else ""


def bins_per_day(bin_minutes: int) -> int:
    """Bins in one day for bins of ``bin_minutes`` (the rule applied)."""
    return MINUTES_PER_DAY // check_bin_seconds(60 * bin_minutes, "bin_minutes")


def days_to_bins(days: float, bin_minutes: int) -> int:
    """Whole bins in ``days`` days (rounded to the nearest bin) for bins of ``bin_minutes``."""
    return int(round(days * bins_per_day(bin_minutes)))
