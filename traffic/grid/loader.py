"""Raster partitions to a dense :class:`~traffic.grid.tensor.GridTensor`."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from traffic import intraday
from traffic.calendar import grid_holidays
from traffic.config import CityConfig
from traffic.grid.cells import grid_spec
from traffic.grid.tensor import GridTensor
from traffic.lake import Lake

#: The raster columns the loader reads.
RASTER_COLUMNS = ("bin_start", "cell_id", "channel", "value", "coverage")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _local_midnight_utc(date: str, tz: str) -> pd.Timestamp:
    """UTC instant of the first local moment of ``date`` (shifted forward if midnight does not exist)."""
    if not _DATE_RE.match(date):
        raise ValueError(f"date {date!r} must be a local calendar date 'YYYY-MM-DD'")
    day = pd.Timestamp(date)
    return day.tz_localize(tz, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC")


def time_axis(city: CityConfig, start: str, end: str) -> pd.DatetimeIndex:
    """UTC bin starts covering local dates ``start..end`` inclusive.

    From the bin containing local midnight of ``start`` (bins floored on the UTC epoch,
    as :func:`traffic.grid.rasterize.aggregate` does) to the last bin that starts before
    local midnight after ``end``, every ``city.bin_seconds``. A DST day has 23 or 25
    hours of bins.
    """
    if end < start:
        raise ValueError(f"end {end!r} is before start {start!r}")
    step = city.bin_seconds * 1_000_000
    t0 = _local_midnight_utc(start, city.timezone).as_unit("ns").value // 1000
    t1 = _local_midnight_utc((pd.Timestamp(end) + pd.Timedelta(days=1)).strftime("%Y-%m-%d"), city.timezone)
    t1 = t1.as_unit("ns").value // 1000
    first = (t0 // step) * step
    n = -(-(t1 - first) // step)  # bins starting before t1
    return pd.DatetimeIndex(pd.to_datetime(first + step * np.arange(n, dtype=np.int64), unit="us", utc=True))


def _read_raster(store: Lake, city: CityConfig, dates: list[str]) -> pa.Table:
    return store.read_dataset(
        "raster",
        columns=list(RASTER_COLUMNS),
        filter=ds.field("date").isin(dates),
        city=city.name,
    )


def load_tensor(
    city: CityConfig, start: str | None = None, end: str | None = None, *, lake: Lake | None = None
) -> GridTensor:
    """Load a city's raster partitions as a dense ``(T, C, H, W)`` tensor.

    Parameters
    ----------
    city : CityConfig
    start, end : str, optional
        Local calendar dates ``YYYY-MM-DD``, inclusive. Default: the first / last date
        with a raster partition.
    lake : Lake, optional
        The lake to read; default :meth:`traffic.lake.Lake.from_config`.

    Returns
    -------
    GridTensor
        ``values`` float32 (NaN where no data), ``mask`` bool, ``coverage`` int32;
        ``times`` every ``city.bin_seconds`` from the bin of local midnight of
        ``start`` to the last bin of ``end`` (see :func:`time_axis`), so missing
        bins, nights and whole days are present and masked, never zero;
        ``channels = city.channels`` (raster channels the config no longer lists are
        ignored); ``cell_ids`` ``(H, W)`` with row 0 at the southern edge.

    Raises
    ------
    FileNotFoundError
        No raster partition exists and ``start``/``end`` were not given.
    ValueError
        Bad dates, or a raster row has a cell id outside the city grid.
    """
    store = lake if lake is not None else Lake.from_config()
    dates = store.list_dates("raster", city=city.name)
    if start is None or end is None:
        if not dates:
            raise FileNotFoundError(
                f"no raster partitions under {store.partition('raster', city=city.name)}; "
                "run rasterize first or pass start and end"
            )
        start = start or dates[0]
        end = end or dates[-1]
    times = time_axis(city, start, end)
    spec = grid_spec(city)
    h, w = spec.shape
    channels = tuple(city.channels)
    t, c = len(times), len(channels)
    values = np.full((t, c, h, w), np.nan, dtype=np.float32)
    coverage = np.zeros((t, c, h, w), dtype=np.int32)
    mask = np.zeros((t, c, h, w), dtype=bool)

    table = _read_raster(store, city, [d for d in dates if start <= d <= end])
    if table.num_rows:
        step = city.bin_seconds * 1_000_000
        bins = table.column("bin_start").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        t_idx = (bins - times[0].as_unit("ns").value // 1000) // step
        channel = table.column("channel")
        if pa.types.is_dictionary(channel.type):
            channel = channel.cast(pa.string())
        c_idx = pc.index_in(channel, value_set=pa.array(channels, pa.string())).fill_null(-1).to_numpy()
        cell = table.column("cell_id").to_numpy().astype(np.int64)
        bad = (cell < 0) | (cell >= h * w)
        if bad.any():
            raise ValueError(
                f"raster of {city.name!r} has cell ids {np.unique(cell[bad])[:5].tolist()} outside the "
                f"{h}x{w} grid (0..{h * w - 1}); was the grid changed after rasterizing?"
            )
        val = table.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        cov = table.column("coverage").to_numpy(zero_copy_only=False).astype(np.int32)
        keep = (t_idx >= 0) & (t_idx < t) & (c_idx >= 0) & np.isfinite(val) & (cov > 0)
        r, col = np.divmod(cell[keep], w)
        index = (t_idx[keep], c_idx[keep], r, col)
        values[index] = val[keep]
        coverage[index] = cov[keep]
        mask[index] = True
    cell_ids = np.arange(h * w, dtype=np.int32).reshape(h, w)
    holidays = grid_holidays(city.calendar, times)  # its years and the next: forecasts run past the last bin
    return GridTensor(
        values=values,
        mask=mask,
        coverage=coverage,
        times=times,
        channels=channels,
        cell_ids=cell_ids,
        timezone=city.timezone,
        holidays=holidays,
    )


def newest_observed_bin(
    city: CityConfig, until: str | pd.Timestamp | None = None, *, max_days: int = 7, lake: Lake | None = None
) -> pd.Timestamp | None:
    """Start (UTC) of the newest time bin with an observation in the city's raster.

    Reads only the newest day partitions (newest first, stopping at the first that has an
    observed bin), and of them only the columns the loader masks on: a bin counts when one
    of its rows has a channel of ``city.channels``, a finite value and coverage > 0, as in
    :func:`load_tensor`.

    Parameters
    ----------
    city : CityConfig
    until : str or pandas.Timestamp, optional
        Only bins that had ended by then (``bin_start + bin <= until``) count: local
        ``YYYY-MM-DD HH:MM`` or ISO 8601 with an offset. Default: every bin.
    max_days : int
        Local dates looked at, newest first (a feed silent for longer has no newest bin).
    lake : Lake, optional
        The lake to read; default :meth:`traffic.lake.Lake.from_config`.

    Returns
    -------
    pandas.Timestamp or None
        tz-aware UTC bin start; None when none of those days has an observed bin.
    """
    cut = None if until is None else intraday.parse_until(until, city.timezone)
    store = lake if lake is not None else Lake.from_config()
    dates = store.list_dates("raster", city=city.name)
    if cut is not None:
        dates = [d for d in dates if intraday.local_midnight_utc(d, city.timezone) < cut]
    step = city.bin_seconds * 1_000_000
    channels = pa.array(tuple(city.channels), pa.string())
    for d in reversed(dates[-max_days:] if max_days > 0 else []):
        table = store.read_dataset("raster", columns=list(RASTER_COLUMNS), city=city.name, date=d)
        if table.num_rows == 0:
            continue
        channel = table.column("channel")
        if pa.types.is_dictionary(channel.type):
            channel = channel.cast(pa.string())
        val = table.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
        cov = table.column("coverage").to_numpy(zero_copy_only=False)
        bins = table.column("bin_start").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        ok = pc.is_in(channel, value_set=channels).to_numpy(zero_copy_only=False) & np.isfinite(val) & (cov > 0)
        if cut is not None:
            ok &= bins + step <= cut.value // 1000
        if ok.any():
            return pd.Timestamp(int(bins[ok].max()), unit="us", tz="UTC")
    return None
