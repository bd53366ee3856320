"""The dense grid tensor that the forecaster reads, and its summary (:func:`describe`).

Files of it are :mod:`traffic.grid.arrays` (read) and :mod:`traffic.grid.writers` (write).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from traffic.calendar import holiday_flags
from traffic.timebins import MINUTES_PER_DAY, bin_minutes

#: ``id(grid) -> (weak reference, ids of its arrays, fingerprint)`` (:meth:`GridTensor.fingerprint`).
_FINGERPRINTS: dict[int, tuple[weakref.ref, tuple[int, ...], str]] = {}


@dataclass
class GridTensor:
    """Observations of a city on its grid, dense in time, channel and space.

    Attributes
    ----------
    values : np.ndarray
        ``(T, C, H, W)`` float32 in original units; NaN where ``mask`` is False.
    mask : np.ndarray
        ``(T, C, H, W)`` bool: True where the cell had at least one observation in the bin.
    coverage : np.ndarray
        ``(T, C, H, W)`` int32: number of source observations aggregated into the value.
    times : pd.DatetimeIndex
        ``T`` bin starts, UTC, evenly spaced by the city's ``time_bin``.
    channels : tuple of str
        ``C`` channel names (``<feed>.<channel>``).
    cell_ids : np.ndarray
        ``(H, W)`` int32 grid cell ids; row 0 is the southern edge.
    timezone : str
        IANA zone of the city: the local dates of :attr:`holidays` are read in it.
    holidays : tuple of str
        Local dates ``YYYY-MM-DD`` that are public holidays (``traffic.calendar``), covering the
        grid's span and beyond it (forecasts reach past the last bin); empty = none known.
    """

    values: np.ndarray
    mask: np.ndarray
    coverage: np.ndarray
    times: pd.DatetimeIndex
    channels: tuple[str, ...]
    cell_ids: np.ndarray
    timezone: str = "UTC"
    holidays: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t, c, h, w = self.values.shape
        if self.mask.shape != self.values.shape or self.coverage.shape != self.values.shape:
            raise ValueError(
                f"mask {self.mask.shape} / coverage {self.coverage.shape} must match values {self.values.shape}"
            )
        if len(self.times) != t or len(self.channels) != c or self.cell_ids.shape != (h, w):
            raise ValueError(
                f"times ({len(self.times)}), channels ({len(self.channels)}), cell_ids {self.cell_ids.shape} "
                f"do not match values {self.values.shape}"
            )
        self.holidays = tuple(sorted({str(d) for d in self.holidays}))

    def holiday_at(self, times: pd.DatetimeIndex) -> np.ndarray:
        """``(N,)`` bool: each of ``times`` (UTC bin starts, may lie beyond the grid) starts on a holiday."""
        return holiday_flags(times, self.timezone, self.holidays)

    @property
    def holiday(self) -> np.ndarray:
        """``(T,)`` bool: the bin starts on a public holiday (local date)."""
        return self.holiday_at(self.times)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.values.shape  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """A digest of everything a fit can read: values, mask, coverage, times, channels, cells, calendar.

        Two grids with the same fingerprint give the same fit of any deterministic estimator (the
        baselines' fits are memoised by it within a process: :func:`traffic.forecast.fallback.fit_baseline`).
        Computed once per grid object (a grid is never changed in place: a changed grid is a new
        object, ``dataclasses.replace``); about 1 s for Berlin's 92-day window.
        """
        key = (id(self.values), id(self.mask), id(self.coverage), id(self.times))
        known = _FINGERPRINTS.get(id(self))
        if known is not None and known[0]() is self and known[1] == key:
            return known[2]
        import hashlib

        h = hashlib.blake2b(digest_size=20)
        h.update(repr((self.shape, self.values.dtype.str, self.channels, self.timezone, self.holidays)).encode())
        for a in (self.values, self.mask, self.coverage, self.times.asi8, self.cell_ids):
            a = np.asarray(a)
            h.update(repr(a.tolist()).encode() if a.dtype == object else np.ascontiguousarray(a).tobytes())
        digest = h.hexdigest()
        for k in [k for k, v in _FINGERPRINTS.items() if v[0]() is None]:  # grids gone since
            del _FINGERPRINTS[k]
        _FINGERPRINTS[id(self)] = (weakref.ref(self), key, digest)
        return digest

    def slice_time(self, start: int, stop: int) -> GridTensor:
        """Bins ``start:stop`` as a new tensor (views, no copy)."""
        return GridTensor(
            self.values[start:stop],
            self.mask[start:stop],
            self.coverage[start:stop],
            self.times[start:stop],
            self.channels,
            self.cell_ids,
            self.timezone,
            self.holidays,
        )


def describe(grid: GridTensor) -> dict[str, Any]:
    """Shape, channels, time span and observed share of ``grid`` (JSON-able; ``traffic grid info``)."""
    t = grid.shape[0]
    step = bin_minutes(grid.times) if t > 1 else None
    per_channel = grid.mask.mean(axis=(0, 2, 3)) if grid.mask.size else np.zeros(grid.shape[1])
    return {
        "shape": list(grid.shape),
        "channels": list(grid.channels),
        "start": grid.times[0].isoformat() if t else None,
        "end": grid.times[-1].isoformat() if t else None,
        "bin_minutes": step,
        "days": t * step / MINUTES_PER_DAY if step else None,
        "observed_share": float(grid.mask.mean()) if grid.mask.size else 0.0,
        "observed_share_per_channel": {ch: float(s) for ch, s in zip(grid.channels, per_channel, strict=True)},
        "cells_ever_observed": int(grid.mask.any(axis=(0, 1)).sum()),
        "timezone": grid.timezone,
        "holiday_bins": int(grid.holiday.sum()),
    }
