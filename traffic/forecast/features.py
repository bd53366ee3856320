"""Model inputs: the only place where a :class:`~traffic.grid.tensor.GridTensor` becomes a tensor.

Layout of one input sample ``(T_in, F, H, W)`` float32, ``F = 2 C + K``:

* ``[0, C)``     raw values in original units, 0 where the cell/bin/channel is missing;
* ``[C, 2C)``    the observation mask (1.0 observed, 0.0 missing);
* ``[2C, 2C+K)`` calendar features of the bin (:data:`CALENDAR_FEATURES`), the same in every cell.

The last two calendar features are public-holiday flags (``traffic.calendar``; the grid's
``holidays``, read in its local time zone): ``holiday`` of the bin itself and
``holiday_ahead``, the flags of the local days after the sample's last context bin: context
slot ``q`` from the end (``q = 0``: the last bin) carries the flag of local day ``d + q + 1``,
``d`` the local day of the last context bin (:func:`holidays_ahead`). A forecast's target bins
lie on day ``d`` (the last bin's own ``holiday``) or on one of the ``context_steps`` days after
it, so an input sample carries the flag of every bin it forecasts (holidays are known in
advance), whatever the horizon, and the module still needs no side input
(``traffic.model.Forecaster.target_holidays`` reads them back). Targets further than
``context_steps`` days ahead read the furthest day's flag.

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
    "holiday_table",
    "holidays_ahead",
    "local_days",
    "minute_of_week",
    "n_features",
    "split_inputs",
    "target_index",
]

#: Calendar features, in order: hour-of-day phase, time-of-week phase (Monday 00:00 UTC = 0),
#: a Saturday/Sunday flag, the bin's public-holiday flag and that of a local day after the sample's
#: last context bin (the slot's distance from the end plus one day; see the module docstring).
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
    """Calendar features ``(T, K)`` of every bin of ``grid``; ``holiday_ahead`` is 0 here.

    ``holiday_ahead`` depends on the sample (its slot's distance from the last context bin): the
    input builders fill it in per sample from :func:`holiday_table` (:func:`build_inputs`).
    ``horizon`` is kept for the callers' signature.
    """
    return calendar_features(grid.times, grid.holiday)


def local_days(times: pd.DatetimeIndex, timezone: str) -> np.ndarray:
    """``(T,)`` int64 local day number (days since 1970-01-01 on the wall clock of ``timezone``) of each bin start."""
    t = times.tz_localize("UTC") if times.tz is None else times
    return t.tz_convert(timezone).tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64)


def holiday_table(grid: GridTensor, context_steps: int) -> tuple[np.ndarray, np.ndarray, int]:
    """What :func:`holidays_ahead` reads: every bin's local day, and holiday flags per local day.

    Returns
    -------
    days : np.ndarray
        ``(T,)`` int64 local day of every bin (:func:`local_days`).
    flags : np.ndarray
        ``(D,)`` float32: 1 where local day ``day0 + i`` is a holiday, for every day from the
        grid's first to ``context_steps + 1`` days after its last.
    day0 : int
        The local day of ``flags[0]``.
    """
    days = local_days(grid.times, grid.timezone) if len(grid.times) else np.zeros(0, np.int64)
    day0 = int(days.min()) if len(days) else 0
    n = (int(days.max()) - day0 if len(days) else 0) + context_steps + 2
    span = (np.arange(n) + day0).astype("datetime64[D]")
    hol = np.array(sorted({np.datetime64(str(d), "D") for d in grid.holidays}), dtype="datetime64[D]")
    return days, np.isin(span, hol).astype(np.float32), day0


def holidays_ahead(last_day: np.ndarray, flags: np.ndarray, day0: int, context_steps: int) -> np.ndarray:
    """``(B, T_in)`` ``holiday_ahead`` of samples whose last context bin is on local day ``last_day`` ``(B,)``.

    Slot ``p`` (``q = T_in - 1 - p`` bins from the end) holds the flag of local day
    ``last_day + q + 1`` (``flags``, ``day0`` from :func:`holiday_table`).
    """
    ahead = np.arange(context_steps, 0, -1, dtype=np.int64)  # slot p -> q + 1 = T_in - p
    return flags[np.asarray(last_day, dtype=np.int64)[:, None] + ahead[None, :] - day0]


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
        Bins predicted. The target bins' calendar the forecaster derives from the last context
        bin, their holiday flags from ``holiday_ahead`` (module docstring).

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
    days, flags, day0 = holiday_table(grid, context_steps)
    cal[:, :, HOLIDAY_AHEAD] = holidays_ahead(days[t_end], flags, day0, context_steps)
    x[:, :, 2 * n_c :] = cal[:, :, :, None, None]
    return x


def split_inputs(x: np.ndarray, n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``build_inputs`` output into values, mask (bool) and calendar ``(B, T_in, K)``."""
    c = n_channels
    return x[:, :, :c], x[:, :, c : 2 * c] > 0.5, x[:, :, 2 * c :, 0, 0]
