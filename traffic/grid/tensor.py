"""The dense grid tensor that the forecaster reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd

from traffic.calendar import holiday_flags


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

    def save_npz(self, path: str | BinaryIO) -> None:
        """Save as ``.npz`` (the gridded-array exchange format of the CLI) to a path or an open binary file."""
        np.savez_compressed(
            path,
            values=self.values,
            mask=self.mask,
            coverage=self.coverage,
            times=pd.DatetimeIndex(self.times).as_unit("ns").asi8,  # int64 ns UTC (pandas may hold us)
            channels=np.array(self.channels),
            cell_ids=self.cell_ids,
            timezone=np.array(self.timezone),
            holidays=np.array(self.holidays, dtype=str),
        )

    @classmethod
    def load_npz(cls, path: str) -> GridTensor:
        """Load a tensor saved by :meth:`save_npz`; ``mask``/``coverage``/``times`` may be absent."""
        z = np.load(path, allow_pickle=False)
        values = z["values"].astype(np.float32)
        mask = z["mask"].astype(bool) if "mask" in z else np.isfinite(values)
        coverage = z["coverage"].astype(np.int32) if "coverage" in z else mask.astype(np.int32)
        t, c, h, w = values.shape
        times = (
            pd.to_datetime(z["times"], utc=True)
            if "times" in z
            else pd.date_range("2000-01-01", periods=t, freq="h", tz="UTC")
        )
        channels = tuple(str(x) for x in z["channels"]) if "channels" in z else tuple(f"c{i}" for i in range(c))
        cell_ids = z["cell_ids"].astype(np.int32) if "cell_ids" in z else np.arange(h * w, dtype=np.int32).reshape(h, w)
        return cls(
            np.where(mask, values, np.nan).astype(np.float32),
            mask,
            coverage,
            pd.DatetimeIndex(times),
            channels,
            cell_ids,
            str(z["timezone"]) if "timezone" in z else "UTC",
            tuple(str(d) for d in z["holidays"]) if "holidays" in z else (),
        )
