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
    scikit-learn ``Ridge`` on lag features, pooled over cells, one model per horizon and
    channel (channels have different units): the last ``L`` values (0 where missing) and
    their masks, the last observed value in the context (persistence rule above) and the
    calendar features of the target bin. Fitted on the training samples' observed targets
    (at most ``max_rows`` rows per model, drawn with a fixed seed).

Time-of-week/day bins are taken in UTC, like the model's calendar features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traffic.forecast.features import MINUTES_PER_DAY, MINUTES_PER_WEEK, calendar_features, minute_of_week
from traffic.forecast.metrics import MetricAccumulator
from traffic.forecast.result import HorizonMetrics
from traffic.grid.tensor import GridTensor

BASELINES = ("persistence", "seasonal_average", "ridge")


def seasonal_period(n_fit_bins: int, bin_minutes: int, min_weeks: int = 2) -> int:
    """Period of the seasonal profile in bins: a week if the fit window holds ``min_weeks`` weeks, else a day."""
    per_week = MINUTES_PER_WEEK // bin_minutes
    return per_week if n_fit_bins >= min_weeks * per_week else MINUTES_PER_DAY // bin_minutes


def time_positions(times: pd.DatetimeIndex, bin_minutes: int, period: int) -> np.ndarray:
    """Bin of the week (UTC, Monday 00:00 = 0) of every bin start, modulo ``period`` bins."""
    return (minute_of_week(times) // bin_minutes) % period


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
    values: np.ndarray, mask: np.ndarray, times: pd.DatetimeIndex, bin_minutes: int, period: int
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
        Bins per week (time-of-week profile) or per day (time-of-day profile).

    Returns
    -------
    SeasonalProfile
    """
    per_day = MINUTES_PER_DAY // bin_minutes
    if period not in (per_day, 7 * per_day):
        raise ValueError(f"period {period} must be bins per day ({per_day}) or per week ({7 * per_day})")
    mask = mask.astype(bool)
    pos = time_positions(times, bin_minutes, period)
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
    profile: SeasonalProfile, times: pd.DatetimeIndex, bin_minutes: int, t_end: np.ndarray, horizon: int
) -> np.ndarray:
    """Seasonal-average forecast ``(N, H_out, C, H, W)`` for targets after bins ``t_end`` of ``times``."""
    t0 = minute_of_week(times[np.asarray(t_end)]) // bin_minutes  # (N,)
    pos = (t0[:, None] + np.arange(1, horizon + 1)[None, :]) % profile.period
    return profile.profile[pos]


class RidgeLagBaseline:
    """Ridge regression on lag features, pooled over cells; one model per (horizon, channel).

    Parameters
    ----------
    lags : int
        Number of most recent context values used as features.
    context_steps : int
        Context length (for the carried-forward last value).
    horizon : int
    alpha : float
        Ridge penalty.
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

    def _features(self, grid: GridTensor, t_end: np.ndarray, h: int, n: np.ndarray, c: np.ndarray, k: np.ndarray):
        """Feature rows for samples ``n``, channels ``c`` and flat cells ``k`` at horizon index ``h``."""
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
        cal = calendar_features(grid.times[t] + (h + 1) * (grid.times[1] - grid.times[0]))
        return np.hstack([lag_v, lag_m, last[:, None], has[:, None].astype(np.float32), cal]).astype(np.float64)

    def fit(self, grid: GridTensor, t_end: np.ndarray, fallback: np.ndarray) -> RidgeLagBaseline:
        """Fit on samples ending at ``t_end`` (targets observed in ``grid``); ``fallback`` ``(C, H, W)``."""
        from sklearn.linear_model import Ridge

        self.fallback = np.asarray(fallback, dtype=np.float32)
        rng = np.random.default_rng(self.seed)
        t_end = np.asarray(t_end)
        n_c = grid.shape[1]
        flat_values = grid.values.reshape(len(grid.times), n_c, -1)
        for h in range(self.horizon):
            tm = grid.mask[t_end + h + 1].reshape(len(t_end), n_c, -1)  # (N, C, HW)
            for ci in range(n_c):
                n, k = np.nonzero(tm[:, ci])
                if len(n) > self.max_rows:
                    keep = np.sort(rng.choice(len(n), self.max_rows, replace=False))
                    n, k = n[keep], k[keep]
                if len(n) == 0:
                    continue
                c = np.full(len(n), ci)
                x = self._features(grid, t_end, h, n, c, k)
                y = flat_values[t_end[n] + h + 1, ci, k]
                self.models[(h, ci)] = Ridge(alpha=self.alpha).fit(x, y)
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
        for h in range(self.horizon):
            for ci in range(n_c):
                n, k = np.nonzero(sel[:, h, ci])
                if len(n) == 0:
                    continue
                model = self.models.get((h, ci))
                if model is None:
                    out[n, h, ci, k] = self.fallback[ci].reshape(-1)[k]
                    continue
                x = self._features(grid, t_end, h, n, np.full(len(n), ci), k)
                out[n, h, ci, k] = model.predict(x)  # type: ignore[attr-defined]
        return out.reshape(len(t_end), self.horizon, n_c, hh, ww)


def evaluate_baselines(
    grid: GridTensor,
    *,
    fit_start: int,
    fit_end: int,
    train_t_end: np.ndarray,
    holdout_t_end: np.ndarray,
    context_steps: int,
    horizon: int,
    ridge_lags: int = 12,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, HorizonMetrics]:
    """Fit the three baselines on the training window and score them on the holdout samples.

    Parameters
    ----------
    grid : GridTensor
    fit_start, fit_end : int
        Training window ``[fit_start, fit_end)`` in bins (the seasonal profile and the fallbacks).
    train_t_end, holdout_t_end : array of int
        Last context bin of the training samples (Ridge fit) and of the holdout samples.
    context_steps, horizon : int
    ridge_lags : int
    seed : int
    batch_size : int
        Holdout samples scored at a time (bounds memory on big grids).

    Returns
    -------
    dict
        ``{"persistence": HorizonMetrics, "seasonal_average": ..., "ridge": ...}``.
    """
    from traffic.forecast.features import bin_minutes as _bin_minutes

    bm = _bin_minutes(grid.times)
    win = grid.slice_time(fit_start, fit_end)
    prof = fit_seasonal_profile(win.values, win.mask, win.times, bm, seasonal_period(fit_end - fit_start, bm))
    ridge = RidgeLagBaseline(ridge_lags, context_steps, horizon, seed=seed).fit(grid, train_t_end, prof.cell_mean)
    acc = {name: MetricAccumulator(horizon) for name in BASELINES}
    holdout_t_end = np.asarray(holdout_t_end)
    for s in range(0, len(holdout_t_end), batch_size):
        te = holdout_t_end[s : s + batch_size]
        tidx = te[:, None] + np.arange(1, horizon + 1)[None, :]
        target, mask = grid.values[tidx], grid.mask[tidx]
        acc["persistence"].update(persistence_forecast(grid, te, context_steps, horizon, prof.cell_mean), target, mask)
        acc["seasonal_average"].update(seasonal_forecast(prof, grid.times, bm, te, horizon), target, mask)
        acc["ridge"].update(ridge.predict(grid, te, where=mask), target, mask)
    return {name: a.result() for name, a in acc.items()}
