"""A baseline that serves while a city has no champion: fitted as the nightly run scored it, with 80 % bounds.

On a city's first nights no registered version may pass the promotion gate (it must beat every
gating baseline, GBM included). Analysts still get a forecast: the best gating baseline of the
latest nightly run, fitted here as the run fitted it for its backtest (the run fits its baselines
with :func:`fit_baseline` and scores them with :func:`traffic.forecast.baselines.evaluate_baselines`:
same split of the same window, same seed, same settings), then run from the forecast origin. A fit
is kept for the process, keyed by the grid's fingerprint and the settings, so the forecast task and
a replay after the run's training reuse the training's fits. The publisher labels such a run with the baseline's name in
``forecast_runs.model_kind`` (never ``model``).

Bounds: the 80 % interval of :mod:`traffic.forecast.intervals`, with quantiles of the baseline's
residuals on the training and validation samples of the window (never the holdout), scaled per
cell like the network's. For the fitted baselines (ridge, gbm) those residuals are in-sample, so
the bounds can be a little narrower than out-of-sample errors need; the holdout coverage of the
network's bounds (model card) is the reference for how that method behaves.

Targets past the last bin of the grid (a forecast from the newest bin) are appended as
unobserved bins, so every baseline predicts them from the context and the calendar only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from traffic.forecast.baselines import (
    BASELINES,
    GradientBoostingLagBaseline,
    RidgeLagBaseline,
    SeasonalProfile,
    persistence_forecast,
    seasonal_forecast,
    window_profile,
)
from traffic.forecast.features import target_index
from traffic.forecast.intervals import IntervalModel, cell_scale, fit_intervals
from traffic.forecast.split import make_split, spread
from traffic.grid.tensor import GridTensor
from traffic.timebins import bin_minutes

#: Training/validation samples (evenly spread) whose residuals fit the interval quantiles.
CALIBRATION_SAMPLES = 64
#: Samples predicted at a time (bounds the rows a fitted baseline predicts at once).
BATCH = 16


def extend_time(grid: GridTensor, n: int) -> GridTensor:
    """``grid`` followed by ``n`` unobserved bins (NaN values, False mask) on the same time step.

    Bin indices of ``grid`` stay valid in the result, so a baseline fitted on ``grid`` predicts
    on it; the new bins' holiday flags come from the grid's calendar (``GridTensor.holidays``).
    """
    if n <= 0:
        return grid
    step = grid.times[1] - grid.times[0]
    times = grid.times.append(pd.DatetimeIndex([grid.times[-1] + step * (k + 1) for k in range(n)]))
    shape = (n, *grid.shape[1:])
    return dataclasses.replace(
        grid,
        values=np.concatenate([grid.values, np.full(shape, np.nan, dtype=grid.values.dtype)]),
        mask=np.concatenate([grid.mask, np.zeros(shape, dtype=bool)]),
        coverage=np.concatenate([grid.coverage, np.zeros(shape, dtype=grid.coverage.dtype)]),
        times=times,
    )


@dataclass
class FittedBaseline:
    """A baseline fitted on a grid's training window, ready to forecast on that grid.

    Attributes
    ----------
    name : str
        One of :data:`traffic.forecast.baselines.BASELINES`.
    horizon : int
        Bins forecast.
    grid : GridTensor
        The grid it was fitted on (:meth:`predict` extends it by ``horizon`` unobserved bins on
        first use: forecasts from its last bin reach past the data).
    predict_on : callable
        ``predict_on(ext, t_end, where=None) -> (N, H_out, C, H, W)`` float32 forecasts after bins
        ``t_end`` of a grid ``ext`` extended by ``horizon`` bins (:func:`extend_time`; the fitted
        parts: profile, ridge, GBM, are not tied to the grid they were fitted on); with ``where``
        (bool, same shape) ridge and GBM predict only there (NaN elsewhere).
    intervals : IntervalModel
        80 % bounds from the residuals of the window's training and validation samples.
    fit_window : tuple of int
        ``[fit_start, fit_end)``: the bins the baseline was fitted on (the holdout comes after).
    context_steps : int or None
        The bins of context a forecast reads (:meth:`forecast_on` reads only those of the grid it
        is given); None: the whole grid.
    """

    name: str
    horizon: int
    grid: GridTensor
    predict_on: Callable[..., np.ndarray]
    intervals: IntervalModel
    fit_window: tuple[int, int]
    context_steps: int | None = None

    _extended: GridTensor | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def predict(self, t_end: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """``(N, H_out, C, H, W)`` float32 forecasts after bins ``t_end`` of the grid it was fitted on."""
        if self._extended is None:
            self._extended = extend_time(self.grid, self.horizon)
        return self.predict_on(self._extended, t_end, where)

    def forecast_on(self, grid: GridTensor, t_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast and 80 % bounds after bin ``t_end`` of another grid of the same cells and channels.

        The fit stays what it was (e.g. a registered version's window); only the context is read
        from ``grid``: a version's baselines fitted once forecast every later origin.

        Returns
        -------
        forecast, lower, upper : np.ndarray
            ``(H_out, C, H, W)`` float32.

        Raises
        ------
        ValueError
            When ``grid``'s cells or channels are not those the baseline was fitted on, or ``t_end`` is outside it.
        """
        if grid.shape[1:] != self.grid.shape[1:] or tuple(grid.channels) != tuple(self.grid.channels):
            raise ValueError(
                f"baseline {self.name}: fitted on a grid of shape {self.grid.shape[1:]} and channels "
                f"{list(self.grid.channels)}, asked to forecast on {grid.shape[1:]} / {list(grid.channels)}"
            )
        if not 0 <= int(t_end) < len(grid.times):
            raise ValueError(f"t_end {t_end} outside the {len(grid.times)} bins of the grid")
        t_end = int(t_end)
        if self.context_steps:  # from the context on (every predictor finds its fit by time, not by bin index)
            start = max(0, t_end - self.context_steps + 1)
            grid, t_end = grid.slice_time(start, len(grid.times)), t_end - start
        pred = self.predict_on(extend_time(grid, self.horizon), np.array([t_end]))[0].astype(np.float32)
        lower, upper = self.intervals.bounds(pred)
        return pred, lower, upper

    def forecast(self, t_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forecast and 80 % bounds after bin ``t_end`` (negative counts from the last data bin).

        Returns
        -------
        forecast, lower, upper : np.ndarray
            ``(H_out, C, H, W)`` float32.
        """
        n_data = len(self.grid.times)
        t = int(t_end) + n_data if t_end < 0 else int(t_end)
        if not 0 <= t < n_data:
            raise ValueError(f"t_end {t_end} outside the {n_data} data bins the baseline was fitted with")
        pred = self.predict(np.array([t]))[0].astype(np.float32)
        lower, upper = self.intervals.bounds(pred)
        return pred, lower, upper


def fit_baseline(
    grid: GridTensor,
    name: str,
    *,
    context_steps: int,
    horizon_steps: int,
    holdout_days: float,
    train_days: float,
    val_fraction: float,
    ridge_lags: int,
    seed: int = 0,
    gbm_max_rows: int = 100_000,
    calibration_samples: int = CALIBRATION_SAMPLES,
) -> FittedBaseline:
    """Fit one baseline on ``grid`` as the nightly run fitted it for the holdout, with 80 % bounds.

    The split is :func:`traffic.forecast.split.make_split` of ``grid`` with the same arguments
    as the training run, so on the nightly window this is the very baseline that was scored on
    the holdout: seasonal profile and fallbacks on ``[fit_start, fit_end)``, ridge and GBM
    fitted on the training and validation samples with ``seed``. The same grid and settings again
    (the forecast task after the training, the days of a replay) reuse the first fit (``_FITS``).

    Parameters
    ----------
    grid : GridTensor
        The window, ending with the last bin before the forecast origin.
    name : str
        One of :data:`traffic.forecast.baselines.BASELINES`.
    context_steps, horizon_steps : int
    holdout_days, train_days, val_fraction : float
        The split of the training run (``[forecast]`` of the city, ``[training] val_fraction``).
    ridge_lags : int
        ``[training] ridge_lags`` (lags of ridge and GBM).
    seed : int
    gbm_max_rows : int
        Training rows of the GBM (a seeded sample of the observed targets).
    calibration_samples : int
        Training and validation samples, evenly spread, whose residuals fit the bounds.

    Returns
    -------
    FittedBaseline

    Raises
    ------
    ValueError
        On an unknown baseline name (naming the allowed ones) or an unusable split.
    """
    if name not in BASELINES:
        raise ValueError(f"baseline {name!r} unknown; allowed: {list(BASELINES)}")
    settings: dict[str, Any] = {
        "context_steps": context_steps,
        "horizon_steps": horizon_steps,
        "holdout_days": holdout_days,
        "train_days": train_days,
        "val_fraction": val_fraction,
        "ridge_lags": ridge_lags,
        "seed": seed,
        "gbm_max_rows": gbm_max_rows,
        "calibration_samples": calibration_samples,
    }
    key = (grid.fingerprint(), name, *(float(v) for v in settings.values()))
    fit = _FITS.pop(key, None) or _fit(grid, name, **settings)
    _FITS[key] = fit  # the newest last
    while len(_FITS) > FITS_KEPT:
        _FITS.pop(next(iter(_FITS)))
    predict_on, intervals, fit_window = fit
    return FittedBaseline(name, horizon_steps, grid, predict_on, intervals, fit_window, context_steps)


#: Fits kept per process: ``(grid fingerprint, name, settings) -> (predict_on, intervals, fit window)``.
#: The nightly run's backtest, its forecast task and the day's replay fit the same baselines on the same
#: window (each in its own stage): the first fit serves the others in one process. A fit holds the
#: fitted parts only (profile, Ridge or GBM, bounds), never the grid.
_FITS: dict[tuple, tuple[Callable[..., np.ndarray], IntervalModel, tuple[int, int]]] = {}
FITS_KEPT = 16


def _profile(grid: GridTensor, fit_start: int, fit_end: int) -> SeasonalProfile:
    """:func:`window_profile` of the window, computed once for the baselines that share it (the newest few)."""
    key = (grid.fingerprint(), fit_start, fit_end)
    if key not in _PROFILES:
        while len(_PROFILES) >= 4:
            _PROFILES.pop(next(iter(_PROFILES)))
        _PROFILES[key] = window_profile(grid, fit_start, fit_end)
    return _PROFILES[key]


_PROFILES: dict[tuple[str, int, int], SeasonalProfile] = {}


def _fit(
    grid: GridTensor,
    name: str,
    *,
    context_steps: int,
    horizon_steps: int,
    holdout_days: float,
    train_days: float,
    val_fraction: float,
    ridge_lags: int,
    seed: int,
    gbm_max_rows: int,
    calibration_samples: int,
) -> tuple[Callable[..., np.ndarray], IntervalModel, tuple[int, int]]:
    """The fit of :func:`fit_baseline`: ``(predict_on, intervals, (fit_start, fit_end))``."""
    split = make_split(
        grid,
        context_steps=context_steps,
        horizon_steps=horizon_steps,
        holdout_days=holdout_days,
        train_days=train_days,
        val_fraction=val_fraction,
    )
    bm = bin_minutes(grid.times)
    win = grid.slice_time(split.fit_start, split.fit_end)
    prof = _profile(grid, split.fit_start, split.fit_end)
    fit_t_end = np.concatenate([split.train, split.val])

    Predict = Callable[[GridTensor, np.ndarray, "np.ndarray | None"], np.ndarray]

    def batched(fn: Predict) -> Callable[..., np.ndarray]:
        def run(on: GridTensor, t_end: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
            t_end = np.asarray(t_end, dtype=np.int64)
            parts = [
                fn(on, t_end[s : s + BATCH], None if where is None else where[s : s + BATCH])
                for s in range(0, len(t_end), BATCH)
            ]
            return np.concatenate(parts).astype(np.float32)

        return run

    # every predictor reads the context from the grid it is given (``on``): the fit is the window's
    if name == "persistence":
        predict_on = batched(
            lambda on, te, _: persistence_forecast(on, te, context_steps, horizon_steps, prof.cell_mean)
        )
    elif name == "seasonal_average":
        predict_on = batched(lambda on, te, _: seasonal_forecast(prof, on, bm, te, horizon_steps))
    elif name == "ridge":
        ridge = RidgeLagBaseline(ridge_lags, context_steps, horizon_steps, seed=seed).fit(
            grid, fit_t_end, prof.cell_mean
        )
        predict_on = batched(lambda on, te, where: ridge.predict(on, te, where=where))
    else:
        gbm = GradientBoostingLagBaseline(ridge_lags, context_steps, horizon_steps, max_rows=gbm_max_rows, seed=seed)
        gbm.fit(grid, fit_t_end, prof, split.fit_start, split.fit_end)
        predict_on = batched(lambda on, te, where: gbm.predict(on, te, where=where))

    # residuals of training and validation samples only (never the holdout), like the network's bounds
    cal = spread(fit_t_end, calibration_samples)
    batches = []
    for s in range(0, len(cal), BATCH):
        te = cal[s : s + BATCH]
        ti = target_index(te, horizon_steps)
        mask = grid.mask[ti]
        batches.append((predict_on(grid, te, mask), grid.values[ti], mask))  # residuals at observed targets only
    intervals = fit_intervals(batches, cell_scale(win.values, win.mask))
    return predict_on, intervals, (split.fit_start, split.fit_end)
