"""Which target bins a feed observes: a forecast is published only for the times of day a cell was seen.

Telraam cameras count in daylight: the Berlin window holds no (or almost no) car speeds at 02:00,
and a forecast for 02:00 is the model's extrapolation into hours it never saw. Per cell and
channel, :func:`observed_times_of_day` takes the share of the window's observed days on which the
cell observed the channel at each local time of day; :func:`observed_targets` says, per target
bin, whether that share reaches :data:`MIN_OBSERVED_SHARE`. The forecast stage
(:func:`traffic.pipeline.forecast`) stores a target only where it does (its ``mask``), so a bin
a feed (almost) never observes has no published row, no hotspot and no colour on a map; a feed
that observes around the clock (Los Angeles' loop detectors) keeps every bin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic.grid.tensor import GridTensor
from traffic.timebins import bin_minutes, bins_per_day

#: Smallest share of a cell's observed days with an observation at a time of day for that time to be published.
MIN_OBSERVED_SHARE = 0.1


def _local_time_of_day(times: pd.DatetimeIndex, timezone: str, minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin of the local day ``(T,)`` and local day number ``(T,)`` of every bin start."""
    t = times.tz_localize("UTC") if times.tz is None else times
    local = t.tz_convert(timezone)
    tod = ((local.hour.to_numpy() * 60 + local.minute.to_numpy()) // minutes).astype(np.int64)
    day = local.tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64)
    return tod, day


def observed_times_of_day(grid: GridTensor) -> np.ndarray:
    """Share of a cell's observed days with an observation at each local time of day.

    Parameters
    ----------
    grid : GridTensor
        The window (``mask`` ``(T, C, H, W)``, UTC ``times``, ``timezone``).

    Returns
    -------
    np.ndarray
        ``(B, C, H, W)`` float64 with ``B`` bins per day: for bin ``k`` of the local day, the
        number of the window's local days on which the cell observed the channel in bin ``k``,
        over the number of days on which it observed the channel at all (NaN where it never did).
        A repeated autumn hour counts twice.
    """
    minutes = bin_minutes(grid.times)
    per_day = bins_per_day(minutes)
    tod, day = _local_time_of_day(grid.times, grid.timezone, minutes)
    mask = np.asarray(grid.mask, dtype=bool)
    at_tod = np.zeros((per_day, *mask.shape[1:]), dtype=np.int64)
    for k in np.unique(tod):
        at_tod[k] = mask[tod == k].sum(axis=0)
    days = np.zeros(mask.shape[1:], dtype=np.int64)
    for d in np.unique(day):
        days += mask[day == d].any(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(days > 0, at_tod / np.maximum(days, 1), np.nan)


def observed_targets(grid: GridTensor, targets: pd.DatetimeIndex, min_share: float = MIN_OBSERVED_SHARE) -> np.ndarray:
    """``(H_out, C, H, W)`` bool: the cell observes the channel at the local time of day of each target bin.

    Parameters
    ----------
    grid : GridTensor
        The window the forecast read (:func:`observed_times_of_day`).
    targets : pandas.DatetimeIndex
        ``H_out`` target bin starts (UTC), any distance past the window.
    min_share : float
        Smallest :func:`observed_times_of_day` share that counts as observed.

    Returns
    -------
    np.ndarray
        True where the cell observed the channel at the target's local time of day on at least
        ``min_share`` of the days it observed the channel at all.
    """
    share = observed_times_of_day(grid)
    tod, _ = _local_time_of_day(pd.DatetimeIndex(targets), grid.timezone, bin_minutes(grid.times))
    with np.errstate(invalid="ignore"):
        return share[tod] >= min_share
