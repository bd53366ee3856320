"""Baselines the forecaster must beat, scored on the same holdout with the same masked metrics.

persistence
    The last value observed for the cell/channel within the context window, carried
    forward to every horizon. **Rule for cells/channels without any observation in the
    context:** predict the cell's mean over the training window (the channel's mean over
    all cells when the cell was never observed in training). Every method therefore
    predicts every target and all methods are scored on exactly the same observed targets.
seasonal_average
    Mean per time-of-week bin, cell and channel over the training window
    (:func:`fit_seasonal_profile`). With less than ``min_weeks`` (2) weeks of training
    history every time-of-week bin would rest on at most one value, so the profile falls
    back to time-of-day bins. A bin never observed at that level falls back to
    time-of-day, then to the cell's mean, then to the channel's mean.
ridge
    scikit-learn ``Ridge`` on standardised lag features (a ``StandardScaler -> Ridge``
    pipeline), pooled over cells, one model per horizon and channel (channels have different
    units): the last ``L`` values (0 where missing) and their masks, the last observed value
    in the context (persistence rule above) and the calendar features of the target bin.
    Fitted on the training samples' observed targets (at most ``max_rows`` rows per model,
    drawn with a fixed seed).
gbm
    scikit-learn ``HistGradientBoostingRegressor`` on lag features
    (:class:`GradientBoostingLagBaseline`): one model pooled over cells, channels and
    horizons (horizon and channel are features), predicting the target's anomaly from the
    seasonal profile above in units of the channel's standard deviation, from the last
    lag anomalies, the last observed value, the target bin's prior, hour of day, day of
    week and (when the grid has holiday flags) the holiday flag. Fitted on at most
    ``max_rows`` observed training targets drawn with the seed; deterministic given it.

Time-of-week/day bins are taken in UTC, like the model's calendar features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from traffic import timebins
from traffic.forecast.backtest import DailyErrors
from traffic.forecast.features import calendar_features, minute_of_week
from traffic.forecast.intervals import CoverageAccumulator
from traffic.forecast.metrics import MetricAccumulator
from traffic.forecast.result import HorizonMetrics
from traffic.forecast.threads import cpu_threads
from traffic.grid.tensor import GridTensor

BASELINES = ("persistence", "seasonal_average", "ridge", "gbm")
#: Targets scanned at a time when the gradient-boosting baseline samples its training rows.
GBM_SCAN_TARGETS = 4_000_000


def seasonal_period(n_fit_bins: int, bin_minutes: int, min_weeks: int = 2) -> int:
    """Period of the seasonal profile in bins: a week if the fit window holds ``min_weeks`` weeks, else
    two days, the *day type* profile (time of day on weekdays; on weekends and public holidays).

    A window of a few days holds too few of each weekday for a time-of-week mean, but a pure
    time-of-day mean mixes weekend traffic into the weekday rush hours (Los Angeles, 5 days:
    holdout RMSE 11.41 with time of day, 9.74 with the day type in local time).
    """
    per_day = timebins.bins_per_day(bin_minutes)
    return 7 * per_day if n_fit_bins >= min_weeks * 7 * per_day else 2 * per_day


def utc_offset_minutes(timezone: str, at: pd.Timestamp) -> int:
    """Minutes local time is ahead of UTC in ``timezone`` at ``at`` (the profile's one offset)."""
    off = pd.Timestamp(at).tz_convert(timezone).utcoffset() if pd.Timestamp(at).tzinfo else None
    return int(off.total_seconds() // 60) if off is not None else 0


def time_positions(
    times: pd.DatetimeIndex,
    bin_minutes: int,
    period: int,
    holiday: np.ndarray | None = None,
    offset_minutes: int = 0,
) -> np.ndarray:
    """Position in the seasonal profile of every bin start, in local time (UTC + ``offset_minutes``).

    * weekly period (bins per week): the bin of the local week, Monday 00:00 = 0; a bin flagged in
      ``holiday`` ``(T,)`` takes the Sunday at the same time of day (a public holiday's traffic
      is a Sunday's, ``traffic.calendar``);
    * day type (two days of bins): the bin of the local day, plus one day on Saturdays, Sundays
      and holidays;
    * daily period: the bin of the local day; holidays do not move it.

    The offset is one number for the whole profile (the city's at the end of its fit window): a
    daylight-saving switch shifts local time by an hour, as it did for the UTC profile before.
    """
    # minutes since local Monday 00:00
    local = (minute_of_week(times) + int(offset_minutes)) % timebins.MINUTES_PER_WEEK
    per_day = timebins.bins_per_day(bin_minutes)
    week_bin = local // bin_minutes
    tod = week_bin % per_day
    hol = np.zeros(len(local), dtype=bool) if holiday is None else np.asarray(holiday, dtype=bool)
    if period == 7 * per_day:
        return np.where(hol, 6 * per_day + tod, week_bin)
    if period == 2 * per_day:
        return tod + per_day * ((local >= 5 * timebins.MINUTES_PER_DAY) | hol)
    return tod % period


@dataclass
class SeasonalProfile:
    """A per-cell seasonal mean with its fallbacks, fitted on a training window.

    Attributes
    ----------
    period : int
        Profile length in bins (bins per week or per day).
    profile : np.ndarray
        ``(P, C, H, W)`` float32, complete (fallbacks filled in, no NaN).
    sums, counts : np.ndarray
        ``(P, C, H, W)`` sum (float64) and number (int64) of observations at the primary level.
    cell_mean : np.ndarray
        ``(C, H, W)`` float32 mean over the window (channel mean where the cell was never observed).
    channel_mean : np.ndarray
        ``(C,)`` float32 mean over all observed cells and bins (0 for a channel never observed).
    """

    period: int
    profile: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    cell_mean: np.ndarray
    channel_mean: np.ndarray
    offset_minutes: int = 0  # local time = UTC + offset (time_positions)


def _group_sums(
    values: np.ndarray, mask: np.ndarray, positions: np.ndarray, period: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masked sums and counts of ``(T, ...)`` arrays grouped by ``positions`` into ``(period, ...)``."""
    order = np.argsort(positions, kind="stable")
    pos = positions[order]
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
    shape = (period, *values.shape[1:])
    sums = np.zeros(shape, dtype=np.float64)
    counts = np.zeros(shape, dtype=np.int64)
    if len(pos):
        v = np.where(mask, values, 0.0)[order].astype(np.float64)
        sums[pos[starts]] = np.add.reduceat(v, starts, axis=0)
        counts[pos[starts]] = np.add.reduceat(mask[order].astype(np.int64), starts, axis=0)
    return sums, counts


def fit_seasonal_profile(
    values: np.ndarray,
    mask: np.ndarray,
    times: pd.DatetimeIndex,
    bin_minutes: int,
    period: int,
    holiday: np.ndarray | None = None,
    offset_minutes: int = 0,
) -> SeasonalProfile:
    """Fit a seasonal mean per bin of ``period``, cell and channel, with fallbacks.

    Parameters
    ----------
    values, mask : np.ndarray
        ``(T, C, H, W)`` training window (values may be NaN where ``mask`` is False).
    times : pd.DatetimeIndex
        ``T`` bin starts.
    bin_minutes : int
        Bin length.
    period : int
        Bins per week (time-of-week profile), per two days (day-type profile) or per day
        (time-of-day profile).
    holiday : np.ndarray, optional
        ``(T,)`` bool holiday flags: holiday bins count towards Sunday's (or the weekend's)
        profile (see :func:`time_positions`).
    offset_minutes : int
        Local time = UTC + this (:func:`time_positions`).

    Returns
    -------
    SeasonalProfile
    """
    per_day = timebins.bins_per_day(bin_minutes)
    if period not in (per_day, 2 * per_day, 7 * per_day):
        raise ValueError(
            f"period {period} must be bins per day ({per_day}), per two days ({2 * per_day}) or per week ({7 * per_day})"
        )
    mask = mask.astype(bool)
    pos = time_positions(times, bin_minutes, period, holiday, offset_minutes)
    sums, counts = _group_sums(values, mask, pos, period)
    n_cell = counts.sum(axis=0)
    s_cell = sums.sum(axis=0)
    n_chan = n_cell.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        channel_mean = np.where(n_chan > 0, s_cell.sum(axis=(1, 2)) / np.maximum(n_chan, 1), 0.0)
        cell_mean = np.where(n_cell > 0, s_cell / np.maximum(n_cell, 1), channel_mean[:, None, None])
        profile = np.broadcast_to(cell_mean, sums.shape).copy()
        if period != per_day:  # time-of-day level under the time-of-week level
            day_of = np.arange(period) % per_day
            s_day = np.zeros((per_day, *sums.shape[1:]))
            n_day = np.zeros((per_day, *sums.shape[1:]), dtype=np.int64)
            np.add.at(s_day, day_of, sums)
            np.add.at(n_day, day_of, counts)
            tod = np.where(n_day > 0, s_day / np.maximum(n_day, 1), cell_mean)
            profile = tod[day_of]
        profile = np.where(counts > 0, sums / np.maximum(counts, 1), profile)
    return SeasonalProfile(
        period=period,
        profile=profile.astype(np.float32),
        sums=sums,
        counts=counts,
        cell_mean=cell_mean.astype(np.float32),
        channel_mean=channel_mean.astype(np.float32),
        offset_minutes=int(offset_minutes),
    )


def window_profile(grid: GridTensor, fit_start: int, fit_end: int, min_weeks: int = 2) -> SeasonalProfile:
    """The seasonal profile of ``grid``'s training window ``[fit_start, fit_end)``.

    The period follows :func:`seasonal_period` (weekly with ``min_weeks`` weeks of window, else
    the day type), holiday bins count as the grid's calendar says, and local time is the
    grid's zone at the window's last bin (:func:`utc_offset_minutes`).
    """
    bm = timebins.bin_minutes(grid.times)
    win = grid.slice_time(fit_start, fit_end)
    return fit_seasonal_profile(
        win.values,
        win.mask,
        win.times,
        bm,
        seasonal_period(fit_end - fit_start, bm, min_weeks),
        win.holiday,
        utc_offset_minutes(grid.timezone, grid.times[fit_end - 1]),
    )


def last_observed(values: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last observed value along axis 1 of ``(B, T, ...)`` arrays.

    Returns the value ``(B, ...)`` (``fallback`` broadcast where nothing was observed) and
    a bool array ``(B, ...)`` telling whether anything was observed.
    """
    mask = mask.astype(bool)
    steps = np.arange(1, values.shape[1] + 1).reshape((1, -1) + (1,) * (values.ndim - 2))
    last = np.argmax(mask * steps, axis=1)  # index of the last True (0 if none)
    val = np.take_along_axis(values, last[:, None], axis=1)[:, 0]
    has = np.asarray(mask.any(axis=1))
    return np.where(has, val, fallback).astype(np.float32), has


def persistence_forecast(
    grid: GridTensor, t_end: np.ndarray, context_steps: int, horizon: int, fallback: np.ndarray
) -> np.ndarray:
    """Persistence forecast ``(N, H_out, C, H, W)``: last observed value in the context, else ``fallback`` ``(C, H, W)``."""
    idx = np.asarray(t_end)[:, None] + np.arange(-context_steps + 1, 1)[None, :]
    val, _ = last_observed(grid.values[idx], grid.mask[idx], fallback)
    return np.repeat(val[:, None], horizon, axis=1)


def seasonal_forecast(
    profile: SeasonalProfile, grid: GridTensor, bin_minutes: int, t_end: np.ndarray, horizon: int
) -> np.ndarray:
    """Seasonal-average forecast ``(N, H_out, C, H, W)`` for targets after bins ``t_end`` of ``grid``.

    Targets may lie past the grid's last bin; holidays (``grid.holiday_at``) take Sunday's profile.
    """
    t_end = np.asarray(t_end)
    steps = np.tile(np.arange(1, horizon + 1), len(t_end))  # (N * H_out,)
    tgt = grid.times[np.repeat(t_end, horizon)] + pd.to_timedelta(steps * bin_minutes, unit="min")  # target starts
    pos = time_positions(tgt, bin_minutes, profile.period, grid.holiday_at(tgt), profile.offset_minutes)
    return profile.profile[pos.reshape(len(t_end), horizon)]


class RidgeLagBaseline:
    """Ridge regression on lag features, pooled over cells; one model per (horizon, channel).

    The features are standardised before the Ridge (a scikit-learn pipeline ``StandardScaler ->
    Ridge``, :meth:`regressor`), so the penalty weighs lags in km/h, 0/1 masks and calendar
    phases alike rather than shrinking the small-unit features hardest.

    Parameters
    ----------
    lags : int
        Number of most recent context values used as features.
    context_steps : int
        Context length (for the carried-forward last value).
    horizon : int
    alpha : float
        Ridge penalty, on standardised features.
    max_rows : int
        Cap on training rows per model (a seeded random subset above it).
    seed : int
    """

    def __init__(
        self, lags: int, context_steps: int, horizon: int, alpha: float = 1.0, max_rows: int = 200_000, seed: int = 0
    ):
        self.lags = min(lags, context_steps)
        self.context_steps = context_steps
        self.horizon = horizon
        self.alpha = alpha
        self.max_rows = max_rows
        self.seed = seed
        self.models: dict[tuple[int, int], object] = {}
        self.fallback: np.ndarray | None = None

    def _lag_features(self, grid: GridTensor, t_end: np.ndarray, n: np.ndarray, c: np.ndarray, k: np.ndarray):
        """The features of samples ``n``, channels ``c`` and flat cells ``k`` that no horizon changes.

        ``(R, 2 lags + 2)`` float32: the last ``lags`` context values (0 where missing), their masks, the
        last observed value (the fallback where none) and whether there was one.
        """
        _, n_c, hh, ww = grid.shape
        vals = grid.values.reshape(len(grid.times), n_c, hh * ww)
        msk = grid.mask.reshape(len(grid.times), n_c, hh * ww)
        t = np.asarray(t_end)[n]
        idx = t[:, None] - np.arange(self.context_steps)[None, ::-1]  # (R, T_in) oldest .. newest
        cv = vals[idx, c[:, None], k[:, None]]
        cm = msk[idx, c[:, None], k[:, None]]
        assert self.fallback is not None
        last, has = last_observed(cv, cm, self.fallback.reshape(n_c, -1)[c, k])
        lag_v = np.where(cm, cv, 0.0)[:, -self.lags :]
        lag_m = cm[:, -self.lags :].astype(np.float32)
        return np.hstack([lag_v, lag_m, last[:, None], has[:, None].astype(np.float32)])

    def _features(self, grid: GridTensor, t_end: np.ndarray, h: int, n: np.ndarray, lag: np.ndarray) -> np.ndarray:
        """Feature rows at horizon index ``h``: ``lag`` (:meth:`_lag_features` of the rows, samples ``n``) and the
        calendar of each row's target bin."""
        # calendar of the target bins: computed once per distinct sample, not per row (rows share samples)
        uniq, inv = np.unique(np.asarray(t_end)[n], return_inverse=True)
        tt = grid.times[uniq] + (h + 1) * (grid.times[1] - grid.times[0])  # target bin starts
        cal = calendar_features(tt, grid.holiday_at(tt))[inv]
        return np.hstack([lag, cal]).astype(np.float64)

    def _channel_lags(self, grid: GridTensor, t_end: np.ndarray, ci: int, rows: np.ndarray):
        """:meth:`_lag_features` of channel ``ci`` at every (sample, cell) of ``rows`` ``(N, HW)`` (bool), once
        for all horizons; returns the block and ``(N, HW)`` row positions into it (-1 where not in ``rows``)."""
        n, k = np.nonzero(rows)
        pos = np.full(rows.shape, -1, dtype=np.int32)
        pos[n, k] = np.arange(len(n), dtype=np.int32)
        return self._lag_features(grid, t_end, n, np.full(len(n), ci), k), pos

    def regressor(self):
        """A new unfitted regressor of one (horizon, channel): ``StandardScaler`` then ``Ridge(alpha)``."""
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # each fit gets its own freshly built feature array: scale and centre it in place
        return make_pipeline(StandardScaler(copy=False), Ridge(alpha=self.alpha, copy_X=False))

    def fit(self, grid: GridTensor, t_end: np.ndarray, fallback: np.ndarray) -> RidgeLagBaseline:
        """Fit on samples ending at ``t_end`` (targets observed in ``grid``); ``fallback`` ``(C, H, W)``."""
        from threadpoolctl import threadpool_limits

        self.fallback = np.asarray(fallback, dtype=np.float32)
        rng = np.random.default_rng(self.seed)
        t_end = np.asarray(t_end)
        n_c = grid.shape[1]
        flat_values = grid.values.reshape(len(grid.times), n_c, -1)

        def observed(h: int) -> np.ndarray:  # (N, C, HW) the observed targets at horizon index h
            return grid.mask[t_end + h + 1].reshape(len(t_end), n_c, -1)

        # the lag features of a (sample, cell) serve every horizon: computed once, for every observed target
        rows = np.zeros((len(t_end), n_c, flat_values.shape[2]), dtype=bool)
        for h in range(self.horizon):
            rows |= observed(h)
        lags = {ci: self._channel_lags(grid, t_end, ci, rows[:, ci]) for ci in range(n_c)}
        # one BLAS thread: on a shared CPU two busy-waiting BLAS threads made each X'X 10-25x slower
        with threadpool_limits(limits=1, user_api="blas"):
            for h in range(self.horizon):
                tm = observed(h)
                for ci in range(n_c):
                    n, k = np.nonzero(tm[:, ci])
                    if len(n) > self.max_rows:
                        keep = np.sort(rng.choice(len(n), self.max_rows, replace=False))
                        n, k = n[keep], k[keep]
                    if len(n) == 0:
                        continue
                    block, pos = lags[ci]
                    x = self._features(grid, t_end, h, n, block[pos[n, k]])
                    y = flat_values[t_end[n] + h + 1, ci, k]
                    self.models[(h, ci)] = self.regressor().fit(x, y)
        return self

    def predict(self, grid: GridTensor, t_end: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Forecast ``(N, H_out, C, H, W)`` after bins ``t_end``; only at ``where`` (bool, same shape) if given, NaN elsewhere.

        A (horizon, channel) without a fitted model (nothing observed in training) predicts the fallback.
        """
        assert self.fallback is not None, "fit first"
        t_end = np.asarray(t_end)
        _, n_c, hh, ww = grid.shape
        out = np.full((len(t_end), self.horizon, n_c, hh * ww), np.nan, dtype=np.float32)
        sel = np.ones(out.shape, dtype=bool) if where is None else where.reshape(out.shape)
        for ci in range(n_c):
            fitted = [h for h in range(self.horizon) if (h, ci) in self.models]
            # the lag features of every (sample, cell) a fitted horizon predicts, once for all horizons
            block, pos = self._channel_lags(grid, t_end, ci, np.asarray(sel[:, fitted, ci].any(axis=1)))
            for h in range(self.horizon):
                n, k = np.nonzero(sel[:, h, ci])
                if len(n) == 0:
                    continue
                model = self.models.get((h, ci))
                if model is None:
                    out[n, h, ci, k] = self.fallback[ci].reshape(-1)[k]
                    continue
                x = self._features(grid, t_end, h, n, block[pos[n, k]])
                out[n, h, ci, k] = model.predict(x)  # type: ignore[attr-defined]
        return out.reshape(len(t_end), self.horizon, n_c, hh, ww)


class GradientBoostingLagBaseline:
    """Gradient boosting on lag anomalies: one scikit-learn ``HistGradientBoostingRegressor``
    pooled over cells, channels and horizons.

    A row is one observed target (sample, horizon, channel, cell). Units are made comparable
    across channels by the channel's standard deviation ``s_c`` over the fit window, and the
    model predicts the target's anomaly from the seasonal prior ``p`` (the seasonal-average
    baseline's profile): ``pred = p(target) + s_c * f(features)``. Features, with NaN where a
    value is missing (the trees route missing values natively):

    * the last ``lags`` context anomalies ``(v - p) / s_c``;
    * the last observed context value ``/ s_c`` (persistence rule: the cell's training mean
      when nothing was observed) and the number of bins since it was observed;
    * the prior of the target bin ``/ s_c`` (the cell's level and season);
    * calendar of the target bin from ``grid.times`` (UTC hour of day with its fraction, day of
      week) and, when the grid has ``holiday`` flags, the holiday flag;
    * the horizon (1 .. ``H_out``) and the channel (categorical).

    One model with the horizon as a feature rather than one per horizon: it fits once per
    night instead of ``H_out`` times, every horizon learns from all the sampled rows (the
    anomaly decays smoothly with lead time, which a split on the horizon captures), and the
    row budget is not cut into ``H_out`` slices.

    The prior of a bin inside the fit window leaves that bin's own value out (leave-one-out,
    as the forecaster's training does): otherwise a training target would be part of its own
    prior and the fitted anomalies would be shrunk compared with the holdout's.

    Parameters
    ----------
    lags : int
        Number of most recent context anomalies used as features (at most ``context_steps``).
    context_steps : int
        Context length (for the last observed value).
    horizon : int
    max_rows : int
        Training rows, drawn with the seed from all observed training targets (all if fewer).
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf : optional
        ``HistGradientBoostingRegressor`` settings (no early stopping: the fit is deterministic
        given the seed).
    n_threads : int
        OpenMP threads of the fit. 1 by default: on a shared CPU the busy-waiting
        OpenMP threads of scikit-learn's histogram code made a 6,000-row fit take 13-35 s
        instead of 0.4 s (2 cores, other jobs running). Prediction takes every core when the
        machine is quiet, one when it is busy (:func:`traffic.forecast.threads.cpu_threads`).
    seed : int
    """

    def __init__(
        self,
        lags: int,
        context_steps: int,
        horizon: int,
        *,
        max_rows: int = 100_000,
        max_iter: int = 150,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 40,
        n_threads: int = 1,
        seed: int = 0,
    ):
        if lags < 1 or context_steps < 1 or horizon < 1 or max_rows < 1:
            raise ValueError(
                f"lags ({lags}), context_steps ({context_steps}), horizon ({horizon}) and max_rows ({max_rows}) "
                "must all be >= 1"
            )
        self.lags = min(lags, context_steps)
        self.context_steps = context_steps
        self.horizon = horizon
        self.max_rows = max_rows
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.n_threads = n_threads
        self.seed = seed
        self.model: object | None = None
        self.n_rows = 0  # rows the model was fitted on
        self.use_holiday = False
        self._profile: SeasonalProfile | None = None
        self._window = (0, 0)
        self._window_times: tuple[pd.Timestamp, pd.Timestamp] | None = None  # [start, end) of the fit window
        self._scale = np.ones(0, dtype=np.float64)

    @staticmethod
    def _holiday(grid: GridTensor) -> np.ndarray | None:
        hol = getattr(grid, "holiday", None)
        if hol is None:
            return None
        hol = np.asarray(hol, dtype=bool)
        if hol.shape != (len(grid.times),):
            raise ValueError(f"grid.holiday has shape {hol.shape}; expected ({len(grid.times)},) (one flag per bin)")
        return hol

    def _window_on(self, grid: GridTensor) -> tuple[int, int]:
        """The fit window's bins ``[lo, hi)`` in ``grid``, found by time (a later grid of the same cells)."""
        if self._window_times is None:
            return self._window
        start, end = self._window_times
        return int(grid.times.searchsorted(start, side="left")), int(grid.times.searchsorted(end, side="left"))

    def _prior(self, grid: GridTensor, pos: np.ndarray, bins: np.ndarray, c: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Prior ``(R, S)`` at bins ``(R, S)`` of channel ``c`` and flat cell ``k`` ``(R,)``, leave-one-out in the window."""
        prof = self._profile
        assert prof is not None
        n_c = grid.shape[1]
        p = pos[bins]  # (R, S) profile positions
        cc, kk = c[:, None], k[:, None]
        prior = prof.profile.reshape(prof.period, n_c, -1)[p, cc, kk].astype(np.float64)
        lo, hi = self._window_on(grid)
        own = (bins >= lo) & (bins < hi) & grid.mask.reshape(len(grid.times), n_c, -1)[bins, cc, kk]
        if own.any():
            v = grid.values.reshape(len(grid.times), n_c, -1)[bins, cc, kk].astype(np.float64)
            s = prof.sums.reshape(prof.period, n_c, -1)[p, cc, kk]
            n = prof.counts.reshape(prof.period, n_c, -1)[p, cc, kk]
            with np.errstate(invalid="ignore", divide="ignore"):
                loo = np.where(
                    n > 1, (s - np.where(own, v, 0.0)) / np.maximum(n - 1, 1), prof.cell_mean.reshape(n_c, -1)[cc, kk]
                )
            prior = np.where(own, loo, prior)
        return prior

    def _rows(
        self,
        grid: GridTensor,
        pos: np.ndarray,
        hol: np.ndarray | None,
        t_end: np.ndarray,
        n: np.ndarray,
        h: np.ndarray,
        c: np.ndarray,
        k: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features ``(R, F)``, target prior ``(R,)`` and channel scale ``(R,)`` of rows (sample, horizon, channel, cell)."""
        n_t, n_c = grid.shape[:2]
        vals = grid.values.reshape(n_t, n_c, -1)
        msk = grid.mask.reshape(n_t, n_c, -1)
        t = t_end[n]
        ctx = t[:, None] - np.arange(self.context_steps)[None, ::-1]  # (R, T_in) oldest .. newest
        tgt = t + h + 1  # (R,)
        cv = vals[ctx, c[:, None], k[:, None]].astype(np.float64)
        cm = msk[ctx, c[:, None], k[:, None]]
        s = self._scale[c]  # (R,)
        lag_bins = ctx[:, -self.lags :]
        lag_p = self._prior(grid, pos, lag_bins, c, k)  # (R, L)
        anom = np.where(cm[:, -self.lags :], (cv[:, -self.lags :] - lag_p) / s[:, None], np.nan)
        prof = self._profile
        assert prof is not None
        last, has = last_observed(cv, cm, prof.cell_mean.reshape(n_c, -1)[c, k])
        steps = np.arange(1, self.context_steps + 1)[None, :]
        since = np.where(has, self.context_steps - np.max(cm * steps, axis=1), self.context_steps)
        p_tgt = self._prior(grid, pos, tgt[:, None], c, k)[:, 0]
        # calendar per grid bin, then per row (pandas' field access on every row is the slow part)
        hour = np.asarray(grid.times.hour + grid.times.minute / 60, dtype=np.float64)  # (T,)
        dow = np.asarray(grid.times.day_of_week, dtype=np.float64)  # (T,)
        cols = [
            anom,
            (last / s)[:, None],
            since[:, None],
            (p_tgt / s)[:, None],
            hour[tgt][:, None],
            dow[tgt][:, None],
        ]
        if self.use_holiday:
            assert hol is not None
            cols.append(hol[tgt][:, None])
        cols += [(h + 1)[:, None], c[:, None]]  # the channel last: the categorical feature
        return np.hstack(cols).astype(np.float64), p_tgt, s

    def _positions(self, grid: GridTensor, hol: np.ndarray | None) -> np.ndarray:
        assert self._profile is not None
        return time_positions(
            grid.times, timebins.bin_minutes(grid.times), self._profile.period, hol, self._profile.offset_minutes
        )

    def _check_range(self, grid: GridTensor, t_end: np.ndarray) -> None:
        bad = (t_end - self.context_steps + 1 < 0) | (t_end + self.horizon >= len(grid.times))
        if bad.any():
            raise ValueError(
                f"t_end {t_end[bad][:5].tolist()} out of range: the context ({self.context_steps} bins) and the "
                f"{self.horizon} target bins must lie inside the grid's {len(grid.times)} bins"
            )

    def _sample_targets(self, grid: GridTensor, t_end: np.ndarray) -> tuple[np.ndarray, ...]:
        """At most ``max_rows`` observed training targets as index arrays (sample, horizon, channel, flat cell).

        Drawn uniformly without replacement with the seed. Samples are scanned in chunks of
        about :data:`GBM_SCAN_TARGETS` targets so that long, dense grids (years of a 32 x 32
        benchmark) never hold the index arrays of every observed target at once.
        """
        n_c, hw = grid.shape[1], grid.shape[2] * grid.shape[3]
        per = self.horizon * n_c * hw  # targets per sample
        size = max(1, GBM_SCAN_TARGETS // per)
        starts = list(range(0, len(t_end), size))
        steps = np.arange(1, self.horizon + 1)[None, :]

        def observed(s: int) -> np.ndarray:  # (B, H_out * C * HW) bool
            te = t_end[s : s + size]
            return grid.mask[te[:, None] + steps].reshape(len(te), per)

        counts = np.array([int(observed(s).sum()) for s in starts], dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        quota = counts if counts.sum() <= self.max_rows else rng.multivariate_hypergeometric(counts, self.max_rows)
        parts = []
        for s, q in zip(starts, quota, strict=True):
            if q == 0:
                continue
            flat = np.flatnonzero(observed(s))
            if q < len(flat):
                flat = flat[np.sort(rng.choice(len(flat), int(q), replace=False))]
            b, rest = np.divmod(flat, per)
            h, rest = np.divmod(rest, n_c * hw)
            c, k = np.divmod(rest, hw)
            parts.append((b + s, h, c, k))
        if not parts:
            return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
        return tuple(np.concatenate(a) for a in zip(*parts, strict=True))

    def fit(
        self, grid: GridTensor, t_end: np.ndarray, profile: SeasonalProfile, fit_start: int, fit_end: int
    ) -> GradientBoostingLagBaseline:
        """Fit on the observed targets of the samples ending at ``t_end``.

        Parameters
        ----------
        grid : GridTensor
        t_end : array of int
            Last context bin of the training samples; targets must lie inside ``grid``.
        profile : SeasonalProfile
            Fitted on bins ``[fit_start, fit_end)`` of ``grid`` (:func:`fit_seasonal_profile`,
            with the grid's holiday flags if it has them).
        fit_start, fit_end : int
            The profile's fit window: priors of bins inside it leave the bin's own value out.
        """
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        t_end = np.asarray(t_end, dtype=np.int64)
        self._check_range(grid, t_end)
        n_t, n_c = grid.shape[:2]
        self._profile, self._window = profile, (int(fit_start), int(fit_end))
        step = grid.times[1] - grid.times[0] if len(grid.times) > 1 else pd.Timedelta(0)
        end = grid.times[fit_end] if fit_end < len(grid.times) else grid.times[-1] + step
        self._window_times = (grid.times[fit_start], end)
        hol = self._holiday(grid)
        self.use_holiday = hol is not None
        win_v, win_m = grid.values[fit_start:fit_end], grid.mask[fit_start:fit_end]
        scale = np.ones(n_c)
        for ci in range(n_c):  # masked standard deviation per channel; 1 for a flat or unobserved channel
            obs = win_v[:, ci][win_m[:, ci]].astype(np.float64)
            if obs.size > 1 and np.std(obs) > 1e-6:
                scale[ci] = np.std(obs)
        self._scale = scale
        n, h, c, k = self._sample_targets(grid, t_end)
        self.n_rows = len(n)
        if len(n) == 0:
            self.model = None
            return self
        pos = self._positions(grid, hol)
        x, p_tgt, s = self._rows(grid, pos, hol, t_end, n, h, c, k)
        y = (grid.values.reshape(n_t, n_c, -1)[t_end[n] + h + 1, c, k] - p_tgt) / s
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.model = HistGradientBoostingRegressor(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                categorical_features=[x.shape[1] - 1],
                early_stopping=False,
                random_state=self.seed,
            ).fit(x, y)
        return self

    def predict(self, grid: GridTensor, t_end: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Forecast ``(N, H_out, C, H, W)`` after bins ``t_end``; only at ``where`` (bool, same shape) if given, NaN elsewhere.

        Without a fitted model (no observed training target) the prior is predicted.
        """
        from threadpoolctl import threadpool_limits

        if self._profile is None:
            raise RuntimeError("GradientBoostingLagBaseline: fit first")
        t_end = np.asarray(t_end, dtype=np.int64)
        self._check_range(grid, t_end)
        _, n_c, hh, ww = grid.shape
        hol = self._holiday(grid)
        if self.use_holiday and hol is None:
            raise ValueError("the model was fitted with holiday flags; the grid to predict on has none (grid.holiday)")
        out = np.full((len(t_end), self.horizon, n_c, hh * ww), np.nan, dtype=np.float32)
        sel = np.ones(out.shape, dtype=bool) if where is None else np.asarray(where, dtype=bool).reshape(out.shape)
        n, h, c, k = np.nonzero(sel)
        if len(n):
            pos = self._positions(grid, hol)
            x, p_tgt, s = self._rows(grid, pos, hol, t_end, n, h, c, k)
            # prediction is per row (the same for any thread count): every core on a quiet machine
            with threadpool_limits(limits=cpu_threads(), user_api="openmp"):
                f = self.model.predict(x) if self.model is not None else 0.0  # type: ignore[attr-defined]
            out[n, h, c, k] = p_tgt + s * f
        return out.reshape(len(t_end), self.horizon, n_c, hh, ww)


def evaluate_baselines(
    grid: GridTensor,
    fitted: Mapping[str, Any],
    *,
    holdout_t_end: np.ndarray,
    horizon: int,
    batch_size: int = 64,
    daily: Mapping[str, DailyErrors] | None = None,
) -> dict[str, HorizonMetrics]:
    """Score fitted baselines on the holdout samples of ``grid``: errors and the coverage of their 80 % bounds.

    The fits are :func:`traffic.forecast.fallback.fit_baseline`'s, the very baselines that serve
    when one is the stop-gap and that a combination's forecast uses (so the backtest scores what
    serves, and a later stage in the same process reuses the fit).

    Parameters
    ----------
    grid : GridTensor
        The window the baselines were fitted on (the holdout at its end).
    fitted : mapping of str to FittedBaseline
        Per baseline name, fitted on ``grid``: ``predict(t_end, where)`` forecasts (Ridge and GBM
        only where the target is observed) and ``intervals`` its 80 % bounds (quantiles of its
        residuals on training and validation samples, never the holdout).
    holdout_t_end : array of int
        Last context bin of the holdout samples.
    horizon : int
    batch_size : int
        Holdout samples scored at a time (bounds memory on big grids).
    daily : mapping of str to DailyErrors, optional
        Per baseline name, also adds every error to it per target day (the backtest).

    Returns
    -------
    dict
        ``{name: HorizonMetrics}`` in the order of ``fitted``, each with ``coverage``: the share of
        observed holdout targets inside the baseline's 80 % bounds.
    """
    acc = {name: MetricAccumulator(horizon) for name in fitted}
    cov = {name: CoverageAccumulator(horizon) for name in fitted}
    holdout_t_end = np.asarray(holdout_t_end)
    for s in range(0, len(holdout_t_end), batch_size):
        te = holdout_t_end[s : s + batch_size]
        tidx = te[:, None] + np.arange(1, horizon + 1)[None, :]
        target, mask = grid.values[tidx], grid.mask[tidx]
        for name, fb in fitted.items():
            pred = fb.predict_on(grid, te, mask)  # targets inside the grid: no extension needed
            acc[name].update(pred, target, mask)
            cov[name].update_model(fb.intervals, pred, target, mask)
            if daily is not None and name in daily:
                daily[name].update(pred, target, mask, tidx)
    out = {name: a.result() for name, a in acc.items()}
    for name, m in out.items():
        m.coverage = cov[name].result()
    return out
