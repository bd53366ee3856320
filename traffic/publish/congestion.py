"""Congestion index of speed forecasts and volume index of count forecasts, per cell and channel (pure numpy).

The forecaster predicts raw quantities (speeds in km/h, counts per bin); analysts want
one comparable number per cell. The definitions are documented in ``docs/congestion.md``:

* **congestion** is read from speeds only (``<feed>.speed_kmh``, loop detectors and cameras
  that deliver one, e.g. Telraam's v85): ``congestion_index = clip(1 - v / free_flow, 0, 1)``
  where the cell's free-flow speed is the 85th percentile of its observed speeds over the
  reference window; levels :data:`LEVELS` cut it at 0.25 / 0.5 / 0.75;
* every other channel is a **volume** (counts, occupancy): ``volume_index = clip(v / ref, 0, 1.5)``
  where ``ref`` is the cell's 95th percentile over the reference window, floored at the
  channel's median p95 over its cells (:func:`volume_floor`), so that a cell that (almost)
  never sees traffic does not turn a fraction of a vehicle into its busiest hour; levels
  :data:`VOLUME_LEVELS` (``quiet`` .. ``peak``). A busy street is not a jam: a volume never has
  a congestion index, a speed never has a volume index.

A reference resting on fewer than :data:`MIN_REFERENCE_OBSERVATIONS` observed bins is no
reference (NaN): the pair is not published (``cell_channels`` keeps it, ``has_data`` false).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from traffic.channels import SPEED_CHANNEL

#: Level names, in increasing order of congestion; a level code is an index into this tuple.
LEVELS = ("free", "moderate", "heavy", "severe")
#: Lower edges of ``moderate``, ``heavy`` and ``severe``.
LEVEL_EDGES = (0.25, 0.5, 0.75)
#: Level code of a cell/channel without an index (no reference or no forecast value).
NO_LEVEL = -1
#: Percentile of observed speeds taken as a cell's free-flow speed.
FREE_FLOW_PERCENTILE = 85.0
#: Percentile of observed volumes taken as a cell's reference volume.
VOLUME_PERCENTILE = 95.0
#: Smallest volume reference (counts per bin) whatever the data say: below it the ratio is noise.
MIN_VOLUME_REFERENCE = 1.0
#: Upper clip of a volume index (volumes may exceed their p95).
MAX_VOLUME_INDEX = 1.5
#: Volume level names, from quiet to the cell's usual peak; a code is an index into this tuple.
VOLUME_LEVELS = ("quiet", "normal", "busy", "peak")
#: Lower edges of ``normal``, ``busy`` and ``peak`` (share of the cell's p95 volume).
VOLUME_LEVEL_EDGES = (0.25, 0.75, 1.0)
#: Fewest observed bins in the reference window for a reference (free-flow speed, p95 volume).
MIN_REFERENCE_OBSERVATIONS = 24


def is_speed_channel(channel: str) -> bool:
    """True for a speed channel (``<feed>.speed_kmh``), False for a volume channel."""
    return channel.rsplit(".", 1)[-1] == SPEED_CHANNEL


def _check_channels(n: int, channels: Sequence[str], what: str) -> np.ndarray:
    if len(channels) != n:
        raise ValueError(f"{what} has {n} channels but {len(channels)} channel names were given: {list(channels)}")
    return np.array([is_speed_channel(c) for c in channels], dtype=bool)


def masked_percentile(values: np.ndarray, mask: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Percentile along axis 0 of the values where ``mask`` is True, vectorised.

    Same result as ``np.nanpercentile(..., method="linear")`` on the masked values,
    without numpy's per-column Python loop.

    Parameters
    ----------
    values : np.ndarray
        ``(T, ...)`` values.
    mask : np.ndarray
        ``(T, ...)`` bool, True where a value was observed (and is finite).
    q : np.ndarray
        Percentile in ``[0, 100]`` broadcastable to ``values.shape[1:]``.

    Returns
    -------
    np.ndarray
        ``values.shape[1:]`` float64; NaN where no value was observed.
    """
    ok = mask & np.isfinite(values)
    x = np.where(ok, values.astype(np.float64, copy=False), np.inf)
    x.sort(axis=0)  # observed values first, padding (+inf) last
    n = ok.sum(axis=0)
    pos = (np.maximum(n, 1) - 1) * (np.broadcast_to(q, n.shape) / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = pos - lo
    v_lo = np.take_along_axis(x, lo[None], axis=0)[0]
    v_hi = np.take_along_axis(x, hi[None], axis=0)[0]
    with np.errstate(invalid="ignore"):
        out = v_lo + (v_hi - v_lo) * frac
    out[frac == 0] = v_lo[frac == 0]
    return np.where(n > 0, out, np.nan)


def reference_stats(
    values: np.ndarray,
    mask: np.ndarray,
    channels: Sequence[str],
    min_observations: int = MIN_REFERENCE_OBSERVATIONS,
) -> np.ndarray:
    """Per-cell reference of each channel over a reference window.

    Parameters
    ----------
    values : np.ndarray
        ``(T, C, H, W)`` observations in original units (e.g. ``GridTensor.values`` of
        the training window).
    mask : np.ndarray
        ``(T, C, H, W)`` bool, True where the cell had an observation in the bin.
    channels : sequence of str
        ``C`` channel names; ``*.speed_kmh`` are speeds, the rest volumes.
    min_observations : int
        Fewest observed bins a reference may rest on; with fewer it is NaN.

    Returns
    -------
    np.ndarray
        ``(C, H, W)`` float64: the free-flow speed (p85) for speed channels, the p95 volume
        for the others; NaN where the cell observed the channel in fewer than
        ``min_observations`` bins.
    """
    if values.ndim != 4 or mask.shape != values.shape:
        raise ValueError(f"values {values.shape} and mask {mask.shape} must both be (T, C, H, W)")
    speed = _check_channels(values.shape[1], channels, "values")
    q = np.where(speed, FREE_FLOW_PERCENTILE, VOLUME_PERCENTILE)[:, None, None]
    ok = mask.astype(bool, copy=False) & np.isfinite(values)
    ref = masked_percentile(values, ok, q)
    return np.where(ok.sum(axis=0) >= max(int(min_observations), 1), ref, np.nan)


def volume_floor(ref: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """``(C,)`` smallest reference of each volume channel: the median p95 of its cells, at least :data:`MIN_VOLUME_REFERENCE`.

    A cell whose p95 is below its channel's median reads its volume against that median: a
    quiet side street's "busiest hour" of two cyclists is not ranked with a main road's. NaN for
    speed channels (they have no floor) and for a channel without any reference.
    """
    speed = _check_channels(ref.shape[0], channels, "ref")
    flat = ref.reshape(ref.shape[0], -1)
    has = np.isfinite(flat).any(axis=1)
    med = np.full(ref.shape[0], np.nan)
    if has.any():
        med[has] = np.nanmedian(flat[has], axis=1)
    return np.where(speed | ~has, np.nan, np.fmax(med, MIN_VOLUME_REFERENCE))


def congestion_levels(index: np.ndarray, edges: Sequence[float] = LEVEL_EDGES) -> np.ndarray:
    """Level codes of an index (``LEVELS[code]``, or :data:`VOLUME_LEVELS` with ``edges=VOLUME_LEVEL_EDGES``).

    :data:`NO_LEVEL` where the index is NaN.
    """
    idx = np.asarray(index, dtype=np.float64)
    codes = np.digitize(idx, edges).astype(np.int8)
    codes[~np.isfinite(idx)] = NO_LEVEL
    return codes


def volume_levels(index: np.ndarray) -> np.ndarray:
    """Volume level codes (``VOLUME_LEVELS[code]``) of a volume index; :data:`NO_LEVEL` where it is NaN."""
    return congestion_levels(index, VOLUME_LEVEL_EDGES)


def _checked(forecast: np.ndarray, ref: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    if forecast.ndim != 4 or ref.shape != forecast.shape[1:]:
        raise ValueError(f"forecast {forecast.shape} must be (H_out, C, H, W) and ref {ref.shape} must be (C, H, W)")
    return _check_channels(forecast.shape[1], channels, "forecast")[:, None, None]


def congestion(forecast: np.ndarray, ref: np.ndarray, channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Congestion index and level of a forecast: speeds only.

    Parameters
    ----------
    forecast : np.ndarray
        ``(H_out, C, H, W)`` forecast in original units.
    ref : np.ndarray
        ``(C, H, W)`` reference from :func:`reference_stats`.
    channels : sequence of str
        ``C`` channel names.

    Returns
    -------
    index : np.ndarray
        ``(H_out, C, H, W)`` float64: ``clip(1 - v / free_flow, 0, 1)`` for speed channels; NaN
        for volume channels (:func:`volume`), and where the forecast or the reference is missing
        or a free-flow speed is not positive.
    level : np.ndarray
        ``(H_out, C, H, W)`` int8 level codes into :data:`LEVELS` (free < 0.25 <= moderate
        < 0.5 <= heavy < 0.75 <= severe), :data:`NO_LEVEL` where the index is NaN.
    """
    speed = _checked(forecast, ref, channels)
    v = forecast.astype(np.float64, copy=False)
    r = ref.astype(np.float64, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        free_flow = np.where(speed & (r > 0), r, np.nan)
        index = np.clip(1.0 - v / free_flow, 0.0, 1.0)
    return index, congestion_levels(index)


def volume(forecast: np.ndarray, ref: np.ndarray, channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Volume index and level of a forecast: how close to the cell's usual peak, volumes only.

    Parameters
    ----------
    forecast : np.ndarray
        ``(H_out, C, H, W)`` forecast in original units.
    ref : np.ndarray
        ``(C, H, W)`` reference from :func:`reference_stats` (the floor comes from it too).
    channels : sequence of str
        ``C`` channel names.

    Returns
    -------
    index : np.ndarray
        ``(H_out, C, H, W)`` float64 ``clip(v / max(p95, floor), 0, 1.5)`` for volume channels
        (``floor``: :func:`volume_floor`); NaN for speed channels and where the forecast or the
        reference is missing.
    level : np.ndarray
        int8 codes into :data:`VOLUME_LEVELS` (quiet < 0.25 <= normal < 0.75 <= busy < 1 <= peak),
        :data:`NO_LEVEL` where the index is NaN.
    """
    speed = _checked(forecast, ref, channels)
    v = forecast.astype(np.float64, copy=False)
    r = ref.astype(np.float64, copy=False)
    floor = volume_floor(r, channels)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.clip(v / np.fmax(r, floor), 0.0, MAX_VOLUME_INDEX)
    index = np.where(np.isnan(r) | speed, np.nan, index)  # fmax would hide a missing reference
    return index, volume_levels(index)
