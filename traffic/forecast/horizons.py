"""Horizon groups: the hours-ahead bands in which forecasts are summarised (maps, model card).

A forecast step ``k`` (1-based, ``forecasts.horizon``) covers the bin that ends
``k * bin_seconds`` after the forecast was issued; it belongs to hour
``ceil(k * bin_seconds / 3600)`` ahead. Hours are grouped into bands whose upper edges are
:data:`HOUR_EDGES` (1, 3, 6, 12, 24 hours: "1 h", "2–3 h", "4–6 h", "7–12 h", "13–24 h" for a
day-ahead forecast), continued by doubling (48, 96, ...) for longer horizons. Bands without
a step (e.g. "1 h" when bins are 2 h long) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

#: Upper edges, in hours ahead, of the first bands; later bands double the previous edge.
HOUR_EDGES = (1, 3, 6, 12, 24)
_DIGITS = re.compile(r"\d+")


class HorizonGroup(NamedTuple):
    """One band of hours ahead.

    Attributes
    ----------
    label : str
        ``"1 h"``, ``"2–3 h"``, ... (hours ahead, both ends included).
    steps : slice
        0-based positions of the band's steps in the horizon axis (``horizon - 1``).
    """

    label: str
    steps: slice


def _edges(last_hour: int) -> list[int]:
    edges = list(HOUR_EDGES)
    while edges[-1] < last_hour:
        edges.append(edges[-1] * 2)
    return edges


def horizon_groups(bin_seconds: int, horizon_steps: int) -> list[HorizonGroup]:
    """Bands of hours ahead covering every step of a forecast, in order.

    Parameters
    ----------
    bin_seconds : int
        Length of one forecast bin in seconds, > 0.
    horizon_steps : int
        Number of forecast steps, >= 1.

    Returns
    -------
    list of HorizonGroup
        ``(label, steps)`` pairs; the slices are contiguous, disjoint and together cover
        ``range(horizon_steps)``. E.g. 15-minute bins and 12 steps give
        ``[("1 h", slice(0, 4)), ("2–3 h", slice(4, 12))]``.

    Raises
    ------
    ValueError
        If ``bin_seconds`` or ``horizon_steps`` is not a positive integer.
    """
    for name, v in (("bin_seconds", bin_seconds), ("horizon_steps", horizon_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    hours = [-(-(k * bin_seconds) // 3600) for k in range(1, horizon_steps + 1)]  # ceil
    groups: list[HorizonGroup] = []
    lo = 0
    for hi in _edges(hours[-1]):
        idx = [i for i, h in enumerate(hours) if lo < h <= hi]
        if idx:
            label = f"{hi} h" if hi - lo == 1 else f"{lo + 1}–{hi} h"
            groups.append(HorizonGroup(label, slice(idx[0], idx[-1] + 1)))
        lo = hi
    return groups


def group_tag(label: str) -> str:
    """File-name tag of a group label: ``"1 h"`` -> ``"h01"``, ``"2–3 h"`` -> ``"h02-03"``.

    Parameters
    ----------
    label : str
        A :attr:`HorizonGroup.label`.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If the label names no hours.
    """
    nums = _DIGITS.findall(label)
    if not nums:
        raise ValueError(f"horizon group label {label!r} names no hours")
    return "h" + "-".join(f"{int(n):02d}" for n in nums)


def group_means(values: Sequence[float], groups: list[HorizonGroup]) -> dict[str, float]:
    """Mean of per-horizon ``values`` over each group, keyed by label (NaN horizons skipped; none left: NaN).

    Parameters
    ----------
    values : sequence of float
        One value per horizon step.
    groups : list of HorizonGroup
        From :func:`horizon_groups`.

    Returns
    -------
    dict
        ``{label: mean}`` in group order.
    """
    v = np.asarray(values, dtype=np.float64)
    out = {}
    for g in groups:
        part = v[g.steps]
        part = part[np.isfinite(part)]
        out[g.label] = float(part.mean()) if len(part) else float("nan")
    return out


def anomaly_autocorrelation(anomaly: np.ndarray, mask: np.ndarray, max_lag: int) -> np.ndarray:
    """Pooled autocorrelation of a seasonal anomaly at lags ``1 .. max_lag`` bins.

    Parameters
    ----------
    anomaly : np.ndarray
        ``(T, ...)`` observation minus its seasonal prior (any value where unobserved).
    mask : np.ndarray
        ``(T, ...)`` bool: observed.
    max_lag : int

    Returns
    -------
    np.ndarray
        ``(max_lag,)``: for lag ``k``, ``sum a_t a_{t+k} / sqrt(sum a_t^2 sum a_{t+k}^2)`` over the pairs
        observed at both ends, pooled over every series (cell, channel) after each series' anomaly is
        divided by its own standard deviation; NaN where no pair is observed.
    """
    m = np.asarray(mask, dtype=bool)
    a = np.where(m, np.asarray(anomaly, dtype=np.float64), 0.0)
    n = m.sum(axis=0)
    sd = np.sqrt((a * a).sum(axis=0) / np.maximum(n, 1))
    a = np.where(m, a / np.where(sd > 0, sd, 1.0), 0.0)  # (T, ...) standardised per series
    out = np.full(max_lag, np.nan)
    for k in range(1, min(max_lag, len(a) - 1) + 1):
        both = m[:-k] & m[k:]
        x, y = np.where(both, a[:-k], 0.0), np.where(both, a[k:], 0.0)
        den = np.sqrt((x * x).sum() * (y * y).sum())
        out[k - 1] = float((x * y).sum() / den) if den > 0 else np.nan
    return out


def signal_horizons(autocorrelation: np.ndarray, threshold: float, horizon: int) -> int:
    """The first forecast steps whose anomaly autocorrelation is at least ``threshold``: where recent data carry signal.

    Parameters
    ----------
    autocorrelation : np.ndarray
        ``(L,)`` lags ``1 .. L`` (:func:`anomaly_autocorrelation`).
    threshold : float
        Correlation below which the context says too little about the target (``0.2``: 4 % of the
        anomaly's variance).
    horizon : int
        Forecast steps.

    Returns
    -------
    int
        ``k`` in ``1 .. horizon``: steps ``1 .. k`` all reach ``threshold`` (at least 1).
    """
    ok = np.asarray(autocorrelation[:horizon], dtype=np.float64) >= threshold
    below = np.flatnonzero(~ok)
    k = int(below[0]) if len(below) else min(horizon, len(ok))
    return max(1, k)
