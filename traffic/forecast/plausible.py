"""Forecasts that can be true: every value in its channel's range and inside its own interval.

A network, a linear base or a regression forecasts numbers, not traffic: a count channel's
forecast can come out negative (Berlin's nightly published counts down to -192 vehicles/h), a
speed above anything a road allows, and an interval whose bounds were clipped at 0 while the
value was not. :func:`plausible_forecast` is the one place that turns a forecast into values
that can be true; :func:`traffic.pipeline.forecast` applies it to every forecast it stores
(the champion, a fallback baseline, a nightly or a refresh run), so every published kind goes
through it, and a backtest that wants to score what is published applies it to its forecasts.

The rule, per channel (:func:`traffic.channels.value_range`):

* the value and both bounds are clipped into ``[low, high]``: counts ``>= 0``, speeds in
  ``[0, SPEED_MAX_KMH]``, occupancy in ``[0, 1]``;
* then the interval is widened to hold the value: ``lower = min(lower, value)``,
  ``upper = max(upper, value)``.

Effect on the metrics: every observation lies inside its channel's range (validation
quarantines the rest), so clipping a forecast into the range never moves it further from any
observation: each absolute error of the clipped forecast is at most that of the raw one, and
its RMSE and MAE on any set of targets are at most the raw forecast's. Widening an interval
to hold its value only adds coverage. The holdout scores logged at training time are the raw
model's: they are upper bounds of the published forecast's errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from traffic.channels import value_range


def channel_ranges(channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(C,)`` float64 lowest and highest value of each channel (:func:`traffic.channels.value_range`)."""
    lo, hi = zip(*(value_range(c) for c in channels), strict=True) if channels else ((), ())
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def plausible_forecast(
    values: np.ndarray,
    channels: Sequence[str],
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Clip a forecast and its bounds into each channel's range, and the interval around the value.

    Parameters
    ----------
    values : np.ndarray
        ``(..., C, H, W)`` forecast in original units (NaN where there is none).
    channels : sequence of str
        ``C`` channel names (``<feed>.<channel>``).
    lower, upper : np.ndarray, optional
        Bounds of the interval, the shape of ``values``; both or neither.

    Returns
    -------
    values, lower, upper : np.ndarray
        New arrays of the input dtypes: ``low <= lower <= values <= upper <= high`` wherever the
        value is finite; NaN stays NaN. ``lower``/``upper`` are None when none were given.

    Raises
    ------
    ValueError
        When the channel count or a bound's shape does not match ``values``, or only one bound
        is given.
    """
    values = np.asarray(values)
    if values.ndim < 3 or values.shape[-3] != len(channels):
        raise ValueError(
            f"forecast of shape {values.shape} must be (..., C, H, W) with C = {len(channels)} channels {list(channels)}"
        )
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper bounds, or neither")
    lo, hi = (r[:, None, None] for r in channel_ranges(channels))
    out = np.clip(values, lo, hi).astype(values.dtype, copy=False)
    if lower is None or upper is None:
        return out, None, None
    bounds = []
    for name, b in (("lower", lower), ("upper", upper)):
        b = np.asarray(b)
        if b.shape != values.shape:
            raise ValueError(f"{name} bound has shape {b.shape}; it must be the forecast's {values.shape}")
        bounds.append(np.clip(b, lo, hi).astype(b.dtype, copy=False))
    with np.errstate(invalid="ignore"):
        new_lower = np.fmin(bounds[0], out).astype(bounds[0].dtype, copy=False)
        new_upper = np.fmax(bounds[1], out).astype(bounds[1].dtype, copy=False)
    return out, new_lower, new_upper
