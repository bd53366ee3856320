"""Model inputs: the only place where a :class:`~traffic.grid.tensor.GridTensor` becomes a tensor.

Layout of one input sample ``(T_in, F, H, W)`` float32, ``F = 2 C + K``:

* ``[0, C)``     raw values in original units, 0 where the cell/bin/channel is missing;
* ``[C, 2C)``    the observation mask (1.0 observed, 0.0 missing);
* ``[2C, 2C+K)`` calendar features of the bin (:data:`CALENDAR_FEATURES`), the same in every cell.

The last two calendar features are public-holiday flags (``traffic.calendar``; the grid's
``holidays``, read in its local time zone): ``holiday`` of the bin itself and
``holiday_ahead``, the flag of the bin ``horizon`` bins later. The forecaster reads the
holiday flag of its target bin ``t_end + j`` from ``holiday_ahead`` of context bin
``t_end - horizon + j``, so an input sample carries the flags of every bin it forecasts
(holidays are known in advance) and the module still needs no side input.

Calendar features are computed from the grid's UTC bin starts (the grid carries no time
zone). Seasonality is therefore learnt in UTC; a city's DST switch moves its local rush
hours by one UTC hour twice a year, which the model sees in the data like any other change.

The time-of-week phase (``tow_sin``/``tow_cos``) is continuous (day of week plus the fraction
of the day), so the exact bin of the week can be recovered from one bin's features: the
forecaster uses that to look up its seasonal prior for the context and target bins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic.grid.tensor import GridTensor
from traffic.timebins import MINUTES_PER_DAY, MINUTES_PER_WEEK, bin_minutes

# MINUTES_PER_DAY, MINUTES_PER_WEEK and bin_minutes belong to traffic.timebins; listed here because
# model inputs are read in their terms and importers of this module use them.
__all__ = [
    "CALENDAR_FEATURES",
    "HOLIDAY",
    "HOLIDAY_AHEAD",
    "MINUTES_PER_DAY",
    "MINUTES_PER_WEEK",
    "N_CALENDAR",
    "N_PERIODIC",
    "bin_minutes",
    "build_inputs",
    "calendar_features",
    "context_index",
    "grid_calendar",
    "minute_of_week",
    "n_features",
    "split_inputs",
    "target_index",
]

#: Calendar features, in order: hour-of-day phase, time-of-week phase (Monday 00:00 UTC = 0),
#: a Saturday/Sunday flag, the bin's public-holiday flag and that of the bin ``horizon`` bins later.
CALENDAR_FEATURES = ("tod_sin", "tod_cos", "tow_sin", "tow_cos", "weekend", "holiday", "holiday_ahead")
#: The periodic features, a function of the time of week alone.
N_PERIODIC = 5
N_CALENDAR = len(CALENDAR_FEATURES)
#: Indices of the two holiday flags among the calendar features.
HOLIDAY, HOLIDAY_AHEAD = CALENDAR_FEATURES.index("holiday"), CALENDAR_FEATURES.index("holiday_ahead")


def n_features(n_channels: int) -> int:
    """Number of input features ``F = 2 C + K`` for ``n_channels`` channels."""
    return 2 * n_channels + N_CALENDAR


def minute_of_week(times: pd.DatetimeIndex) -> np.ndarray:
    """Minutes since Monday 00:00 UTC for every bin start, int64 ``(T,)``."""
    t = times.tz_convert("UTC") if times.tz is not None else times
    return (t.day_of_week.to_numpy() * MINUTES_PER_DAY + t.hour.to_numpy() * 60 + t.minute.to_numpy()).astype(np.int64)


def calendar_features(
    times: pd.DatetimeIndex, holiday: np.ndarray | None = None, holiday_ahead: np.ndarray | None = None
) -> np.ndarray:
    """Calendar features of bin starts, ``(T, K)`` float32 in :data:`CALENDAR_FEATURES` order.

    ``holiday`` / ``holiday_ahead`` are ``(T,)`` bool flags (see the module docstring); None = 0.
    """
    mow = minute_of_week(times).astype(np.float64)
    tod = 2 * np.pi * (mow % MINUTES_PER_DAY) / MINUTES_PER_DAY
    tow = 2 * np.pi * mow / MINUTES_PER_WEEK
    weekend = (mow >= 5 * MINUTES_PER_DAY).astype(np.float64)  # Saturday and Sunday
    zero = np.zeros(len(mow))
    hol = zero if holiday is None else np.asarray(holiday, dtype=np.float64)
    ahead = zero if holiday_ahead is None else np.asarray(holiday_ahead, dtype=np.float64)
    return np.stack([np.sin(tod), np.cos(tod), np.sin(tow), np.cos(tow), weekend, hol, ahead], axis=1).astype(
        np.float32
    )


def grid_calendar(grid: GridTensor, horizon: int) -> np.ndarray:
    """Calendar features ``(T, K)`` of every bin of ``grid``, with holiday flags ``horizon`` bins ahead."""
    step = grid.times[1] - grid.times[0] if len(grid.times) > 1 else pd.Timedelta(0)
    return calendar_features(grid.times, grid.holiday, grid.holiday_at(grid.times + horizon * step))


def context_index(t_end: np.ndarray, context_steps: int) -> np.ndarray:
    """Bin indices of the context windows ending at ``t_end``, ``(B, context_steps)``."""
    return np.asarray(t_end, dtype=np.int64)[:, None] + np.arange(-context_steps + 1, 1, dtype=np.int64)[None, :]


def target_index(t_end: np.ndarray, horizon: int) -> np.ndarray:
    """Bin indices of the targets after ``t_end``, ``(B, horizon)``."""
    return np.asarray(t_end, dtype=np.int64)[:, None] + np.arange(1, horizon + 1, dtype=np.int64)[None, :]


def build_inputs(grid: GridTensor, t_end: np.ndarray, context_steps: int, horizon: int) -> np.ndarray:
    """Build model inputs for the context windows ending at bins ``t_end``.

    Parameters
    ----------
    grid : GridTensor
        Observations ``(T, C, H, W)``.
    t_end : array of int
        Index of the last context bin of each sample (the forecast is issued at the end of
        that bin and predicts bins ``t_end + 1 .. t_end + horizon``). Targets may lie beyond
        the grid (that is what forecasting is).
    context_steps : int
        Bins of context ``T_in``.
    horizon : int
        Bins predicted: the ``holiday_ahead`` feature looks this many bins ahead. The rest of
        the target bins' calendar the forecaster derives from the last context bin.

    Returns
    -------
    np.ndarray
        ``(B, T_in, F, H, W)`` float32, ``F = 2 C + K`` (see module docstring).

    Raises
    ------
    ValueError
        If a context window starts before bin 0 or ends after the last bin.
    """
    t_end = np.atleast_1d(np.asarray(t_end, dtype=np.int64))
    if context_steps < 1 or horizon < 1:
        raise ValueError(f"context_steps ({context_steps}) and horizon ({horizon}) must be >= 1")
    n_t, n_c, h, w = grid.shape
    bad = (t_end - context_steps + 1 < 0) | (t_end >= n_t)
    if bad.any():
        raise ValueError(
            f"t_end {t_end[bad][:5].tolist()} out of range: context of {context_steps} bins needs "
            f"{context_steps - 1} <= t_end <= {n_t - 1}"
        )
    idx = context_index(t_end, context_steps)  # (B, T_in)
    b = len(t_end)
    x = np.empty((b, context_steps, n_features(n_c), h, w), dtype=np.float32)
    mask = grid.mask[idx]  # (B, T_in, C, H, W)
    x[:, :, :n_c] = np.where(mask, grid.values[idx], 0.0)
    x[:, :, n_c : 2 * n_c] = mask
    cal = grid_calendar(grid, horizon)[idx]  # (B, T_in, K)
    x[:, :, 2 * n_c :] = cal[:, :, :, None, None]
    return x


def split_inputs(x: np.ndarray, n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``build_inputs`` output into values, mask (bool) and calendar ``(B, T_in, K)``."""
    c = n_channels
    return x[:, :, :c], x[:, :, c : 2 * c] > 0.5, x[:, :, 2 * c :, 0, 0]
