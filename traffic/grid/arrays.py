"""Gridded array files (``.npz`` and Parquet): their formats, the readers and the validators.

``(T, C, H, W)`` values with a mask from any source: public benchmarks (TaxiBJ, BikeNYC: in/out
flows on 32x32 or 16x8 grids in 30- or 60-minute bins), a city's grid, a forecast. This module
reads and checks; :mod:`traffic.grid.writers` writes the same formats.

* :func:`load_array` reads a file into a :class:`~traffic.grid.tensor.GridTensor`, checking
  everything the forecaster needs (``traffic grid info`` / ``traffic grid evaluate``);
* :func:`read_npz` is the one reader of the ``.npz`` layout, for grids and forecasts alike;
  :func:`read_forecast` reads the forecast file of ``traffic.pipeline.forecast`` with it.

Errors name the file, the key or column, the bad value and what is allowed.

The ``.npz`` layout
-------------------
One layout for every ``.npz`` the project writes (``numpy.savez``; pickled objects are refused):

==============  ===============================================================================
``values``      ``(T, C, H, W)`` numbers, NaN = missing (``data`` or ``X`` are accepted instead
                in files from elsewhere); a forecast's predictions
``times``       ``(T,)`` bin starts (a forecast: target bin starts), UTC. Written as int64 ns
                since the epoch; datetime64 and ISO strings are read too. A file without times
                is refused unless the caller gives ``start`` and ``bin_minutes`` (nothing is
                invented)
``mask``        optional ``(T, C, H, W)`` bool or 0/1, True = observed (a forecast: the cell
                observed the channel in the window); default: the finite values
``channels``    optional ``(C,)`` names; default ``c0, c1, ...``
``coverage``    optional ``(T, C, H, W)`` int >= 0, observations behind each value; default ``mask``
``cell_ids``    optional ``(H, W)`` int ids; default ``0 .. H*W-1`` row-major
``timezone``    optional 0-d string, the zone holiday dates are read in (default ``UTC``)
``holidays``    optional ``(N,)`` local dates ``YYYY-MM-DD`` that are public holidays
==============  ===============================================================================

Any other key is refused, except the extra arrays a reader names (``extra=``): a forecast file
(:data:`FORECAST_EXTRAS`) adds ``lower``/``upper`` (interval bounds, like ``values``),
``reference`` (``(C, H, W)`` congestion reference), ``window_coverage`` (``(C, H, W)`` share of
the window's bins observed) and ``cell_coverage`` (``(H, W)``).

Parquet
-------
A long table, one row per value; rows that are absent are missing values. Columns:

==================  ===========================================================================
``time`` or ``t``   bin start (timestamp, or ISO string) or int bin index >= 0 (needs ``start``
                    and ``bin_minutes``)
``channel`` or      channel name (string) or int channel index >= 0
``c``
``row``, ``col``    int >= 0, cell of the grid (row 0 is the first row of the array)
``value``           number; null/NaN = missing
``mask`` or         optional bool, True = observed (a row with False is missing whatever its value)
``observed``
``coverage``        optional int >= 0
==================  ===========================================================================

Each (time, channel, row, col) appears at most once. ``T, H, W`` are the largest index plus one
and the time axis runs from the first to the last time at the bin length (given, or the
greatest common step of the times), unless the file's schema metadata (written by
:func:`traffic.grid.writers.save_array`) records them.

Times without a zone are taken as they are and labelled UTC (the calendar features are read in
UTC): give local wall-clock times to let the model see local daily cycles, and leave
``timezone`` at UTC so that holidays match those labels. Channel names are ``<feed>.<name>``
for the model's modality fusion (:func:`traffic.channels.model_channels`); a name without a feed gets
the feed ``grid``. The bin-length rule is :mod:`traffic.timebins`, holiday specs :mod:`traffic.calendar`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from traffic.calendar import grid_holidays, holiday_calendar
from traffic.channels import model_channels
from traffic.grid.tensor import GridTensor
from traffic.timebins import check_bin_seconds

#: Keys of the ``.npz`` layout; the first three are alternative names of the values.
NPZ_VALUE_KEYS = ("values", "data", "X")
NPZ_KEYS = (*NPZ_VALUE_KEYS, "mask", "times", "channels", "coverage", "cell_ids", "timezone", "holidays")
#: Extra arrays of a forecast file (``traffic.pipeline.forecast``) beside the layout's keys, with their shapes.
FORECAST_EXTRAS = {
    "lower": "TCHW",
    "upper": "TCHW",
    "reference": "CHW",
    "window_coverage": "CHW",
    "cell_coverage": "HW",
}
#: Keys every forecast file has.
FORECAST_REQUIRED = ("values", "times", "mask", "channels", "cell_ids", "reference")
#: Keys of forecast files written before the one layout, and their names in it (:func:`read_forecast`).
LEGACY_FORECAST_KEYS = {
    "forecast": "values",
    "target_times": "times",
    "has_data": "mask",
    "coverage": "window_coverage",
}
#: Columns of the Parquet format.
PARQUET_COLUMNS = ("time", "t", "channel", "c", "row", "col", "value", "mask", "observed", "coverage")
#: Schema metadata key :func:`traffic.grid.writers.save_array` writes into Parquet files (named after the
#: module that first wrote it; kept so that files written since read back).
PARQUET_META_KEY = b"traffic.gridded"
SUFFIXES = {".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}

_NS_PER_MINUTE = 60 * 10**9


# ------------------------------------------------------------------------------------ names, times
def utc_ns(times: Any) -> np.ndarray:
    """Instants as int64 ns since the epoch, UTC, whatever the index's unit (naive times are labelled UTC)."""
    idx = pd.DatetimeIndex(times)
    return (idx.tz_localize("UTC") if idx.tz is None else idx).as_unit("ns").asi8


def _timestamp(value: Any, what: str) -> pd.Timestamp:
    """One instant as a UTC timestamp (a naive one is labelled UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} {value!r} is not a time (use ISO 8601, e.g. 2015-01-01T00:00Z)") from exc
    if ts is pd.NaT:
        raise ValueError(f"{what} is missing (NaT)")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def regular_times(start: Any, bin_minutes: int, n: int) -> pd.DatetimeIndex:
    """``n`` bin starts from ``start`` (UTC; a naive time is labelled UTC) every ``bin_minutes``."""
    check_bin_seconds(60 * int(bin_minutes), "bin_minutes")
    times = pd.date_range(_timestamp(start, "start"), periods=n, freq=pd.Timedelta(minutes=int(bin_minutes)))
    return times.as_unit("ns")


def _parse_times(raw: Any, n_t: int, start: Any, source: str) -> pd.DatetimeIndex:
    """The ``(n_t,)`` times of a file (int64 ns, datetime64 or ISO strings) as UTC, checked to increase."""
    raw = np.asarray(raw)
    if raw.shape != (n_t,):
        raise ValueError(f"{source}: times has shape {raw.shape}, expected ({n_t},): one per time bin of values")
    try:
        if raw.dtype.kind in "iu":
            times = pd.to_datetime(raw.astype(np.int64), unit="ns", utc=True)
        elif raw.dtype.kind in "US":
            times = pd.to_datetime(raw.astype(str), utc=True, format="ISO8601")
        elif raw.dtype.kind == "M":
            times = pd.to_datetime(raw, utc=True)
        else:
            raise TypeError(raw.dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{source}: times of dtype {raw.dtype} cannot be read ({exc}); allowed: int64 ns since the epoch, "
            "datetime64 or ISO 8601 strings"
        ) from exc
    times = pd.DatetimeIndex(times).as_unit("ns")
    if times.hasnans:
        raise ValueError(f"{source}: times has a missing value at bin {int(np.flatnonzero(times.isna())[0])}")
    if start is not None and n_t and times[0] != _timestamp(start, "start"):
        raise ValueError(f"{source}: start={start} disagrees with the file's first time {times[0].isoformat()}")
    steps = np.diff(utc_ns(times))
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise ValueError(
            f"{source}: times must increase: bin {i} ({times[i].isoformat()}) does not come after bin {i - 1} "
            f"({times[i - 1].isoformat()})"
        )
    return times


def _bin_length(times: pd.DatetimeIndex, bin_minutes: int | None, source: str) -> int:
    """The bin length of ``times`` in minutes: ``bin_minutes`` if given, else their smallest step (checked)."""
    if len(times) < 2:
        raise ValueError(f"{source}: need at least 2 time bins to know the bin length, got {len(times)}")
    step = int(np.diff(utc_ns(times)).min()) if bin_minutes is None else int(bin_minutes) * _NS_PER_MINUTE
    return check_bin_seconds(step / 1e9, source)


def _fill_gaps(
    times: pd.DatetimeIndex, bin_minutes: int, arrays: Sequence[np.ndarray], fills: Sequence[Any], source: str
) -> tuple[pd.DatetimeIndex, list[np.ndarray]]:
    """Put ``arrays`` (time first) on the regular axis from ``times[0]``, ``fills`` in the missing bins."""
    step = bin_minutes * _NS_PER_MINUTE
    off = utc_ns(times) - utc_ns(times)[0]
    bad = np.flatnonzero(off % step)
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{source}: time {times[i].isoformat()} (bin {i}) is not on the {bin_minutes}-minute grid from "
            f"{times[0].isoformat()}"
        )
    idx = off // step
    n = int(idx[-1]) + 1
    out = []
    for a, fill in zip(arrays, fills, strict=True):
        full = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
        full[idx] = a
        out.append(full)
    return regular_times(times[0], bin_minutes, n), out


def check_even(times: pd.DatetimeIndex, bin_minutes: int, source: str) -> None:
    """Refuse ``times`` that are not ``bin_minutes`` apart everywhere, naming the first gap and ``--fill-gaps``."""
    steps = np.diff(utc_ns(times))
    bad = np.flatnonzero(steps != bin_minutes * _NS_PER_MINUTE)
    if len(bad):
        i = int(bad[0]) + 1
        raise ValueError(
            f"{source}: times are not evenly spaced: bin {i} ({times[i].isoformat()}) comes "
            f"{steps[i - 1] / _NS_PER_MINUTE:g} min after bin {i - 1}, the bin length is {bin_minutes} min; "
            "pass fill_gaps=True (CLI: --fill-gaps) to insert the missing bins as unobserved"
        )


def _finish(
    source: str,
    values: np.ndarray,
    mask: np.ndarray | None,
    coverage: np.ndarray | None,
    times: pd.DatetimeIndex,
    bin_minutes: int,
    names: Sequence[str],
    cell_ids: np.ndarray | None,
    *,
    fill_gaps: bool,
    timezone: str | None,
    holidays: str | Iterable[str] | None,
) -> GridTensor:
    """Check the pieces of a dense array and assemble the tensor (NaN outside the mask)."""
    t, c, h, w = values.shape
    if mask is None:
        mask = np.isfinite(values)
    bad = mask & ~np.isfinite(values)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"{source}: {int(bad.sum())} values are NaN/inf where the mask says observed, first at (t, c, row, col) "
            f"= {i}; an observed value must be finite"
        )
    if coverage is None:
        coverage = mask.astype(np.int32)
    if cell_ids is None:
        cell_ids = np.arange(h * w, dtype=np.int32).reshape(h, w)
    if len(names) != c:
        raise ValueError(f"{source}: {len(names)} channel names {list(names)} for {c} channels")
    if fill_gaps:
        times, (values, mask, coverage) = _fill_gaps(
            times, bin_minutes, [values, mask, coverage], [np.nan, False, 0], source
        )
    else:
        check_even(times, bin_minutes, source)
    tz = timezone or "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{source}: timezone {tz!r} is not an IANA zone (e.g. UTC, Asia/Shanghai)") from exc
    return GridTensor(
        np.where(mask, values, np.nan).astype(np.float32),
        mask,
        coverage.astype(np.int32),
        pd.DatetimeIndex(times),
        model_channels(names, f"{source}: channels"),
        cell_ids.astype(np.int32),
        timezone=tz,
        holidays=grid_holidays(holiday_calendar(holidays), times),
    )


# ---------------------------------------------------------------------------------------- loading
def load_array(
    path: str | Path,
    *,
    bin_minutes: int | None = None,
    start: Any = None,
    channels: Sequence[str] | None = None,
    fill_gaps: bool = False,
    timezone: str | None = None,
    holidays: str | Iterable[str] | None = None,
) -> GridTensor:
    """Read a gridded array from ``.npz`` or Parquet (formats in the module docstring).

    Parameters
    ----------
    path : str or Path
        ``*.npz``, ``*.parquet`` or ``*.pq``.
    bin_minutes : int, optional
        Bin length; needed when the file has no times (npz without ``times``, Parquet with ``t``).
        With times it must agree with them (Parquet: times off its grid are an error).
    start : str or timestamp, optional
        First bin start; needed when the file has no times, else checked against them. A naive
        time is labelled UTC.
    channels : sequence of str, optional
        Channel names, in channel order (overrides the file's). For Parquet with a ``channel``
        column: the order of the channels; names absent from the table are all-missing channels.
    fill_gaps : bool
        Insert missing time bins of an npz ``times`` axis as unobserved bins (else uneven times
        are an error). Parquet always does this: its absent rows are missing values.
    timezone : str, optional
        Zone in which holiday dates are read (default: the file's, else UTC).
    holidays : str or iterable of str, optional
        A country code (``"US"``, ``"CN"``, ``"US-NY"``) or ISO dates; default: the file's.

    Returns
    -------
    GridTensor
        ``values`` float32 with NaN where ``mask`` is False; channel names ``<feed>.<name>``.

    Raises
    ------
    ValueError
        On anything the forecaster cannot use, naming the file, the key or column, the bad value
        and what is allowed.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; allowed: {sorted(SUFFIXES)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    reader = _load_npz if kind == "npz" else _load_parquet
    return reader(
        path,
        bin_minutes=bin_minutes,
        start=start,
        channels=channels,
        fill_gaps=fill_gaps,
        timezone=timezone,
        holidays=holidays,
    )


@dataclass
class NpzArrays:
    """The arrays of one ``.npz`` file in the project's layout, checked (module docstring).

    Attributes
    ----------
    source : str
        The file, for messages.
    values : np.ndarray
        ``(T, C, H, W)`` float32 as stored (not yet NaN outside ``mask``).
    times : pd.DatetimeIndex
        ``T`` UTC instants, increasing (ns).
    mask, coverage : np.ndarray or None
        ``(T, C, H, W)`` bool / int32 when the file has them.
    channels : tuple of str or None
        ``C`` names as stored.
    cell_ids : np.ndarray or None
        ``(H, W)`` ints.
    timezone : str or None
    holidays : tuple of str or None
    extra : dict of str to np.ndarray
        The extra arrays the reader allowed (e.g. :data:`FORECAST_EXTRAS`), checked.
    bin_minutes : int or None
        Set when the times were built from the caller's ``start`` and ``bin_minutes``.
    """

    source: str
    values: np.ndarray
    times: pd.DatetimeIndex
    mask: np.ndarray | None = None
    coverage: np.ndarray | None = None
    channels: tuple[str, ...] | None = None
    cell_ids: np.ndarray | None = None
    timezone: str | None = None
    holidays: tuple[str, ...] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    bin_minutes: int | None = None


def _npz_arrays(file: Any, source: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (an open binary file, or a local or fsspec path), without pickle."""
    if not hasattr(file, "read"):
        from upath import UPath

        with UPath(file).open("rb") as fh:
            return _npz_arrays(fh, source)
    try:
        with np.load(file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:  # object arrays need pickle
        raise ValueError(f"{source}: cannot read without pickle ({exc}); save plain numeric/string arrays") from exc


def read_npz(
    file: Any,
    *,
    start: Any = None,
    bin_minutes: int | None = None,
    extra: dict[str, str] | None = None,
    source: str | None = None,
) -> NpzArrays:
    """Read and check an ``.npz`` file of the project's layout (module docstring): the one ``.npz`` reader.

    Parameters
    ----------
    file : str, Path, UPath or binary file
        Local or fsspec path (a lake file), or an open binary file.
    start, bin_minutes : optional
        Build the time axis of a file without ``times`` (both needed; nothing is invented), or,
        ``start`` only, check the file's first time.
    extra : dict of str to str, optional
        Extra keys allowed beside the layout's, each with its shape: ``"TCHW"`` (as ``values``),
        ``"CHW"`` or ``"HW"`` (e.g. :data:`FORECAST_EXTRAS`); numbers or bool.
    source : str, optional
        Name of the file in messages (default ``str(file)``).

    Returns
    -------
    NpzArrays

    Raises
    ------
    ValueError
        On an unknown key, a missing one (``values``; ``times`` unless ``start`` and
        ``bin_minutes`` are given), a bad shape or dtype, or times that do not increase: the
        message names the file, the key, the value and what is allowed.
    """
    src = source or str(getattr(file, "name", file))
    return _check_npz(_npz_arrays(file, src), src, start=start, bin_minutes=bin_minutes, extra=extra or {})


def _check_npz(
    z: dict[str, np.ndarray], src: str, *, start: Any, bin_minutes: int | None, extra: dict[str, str]
) -> NpzArrays:
    """Check the arrays of a file against the layout (plus ``extra``); see :func:`read_npz`."""
    keys = set(z)
    allowed = [*NPZ_KEYS, *extra]
    unknown = sorted(keys - set(allowed))
    if unknown:
        raise ValueError(f"{src}: unknown keys {unknown}; allowed: {allowed}")
    vkeys = [k for k in NPZ_VALUE_KEYS if k in keys]
    if len(vkeys) != 1:
        raise ValueError(
            f"{src}: needs exactly one of the keys {list(NPZ_VALUE_KEYS)} for the (T, C, H, W) values, found "
            f"{vkeys or 'none'}"
        )
    values = z[vkeys[0]]
    if values.ndim != 4:
        hint = " (one channel: add an axis, values[:, None])" if values.ndim == 3 else ""
        raise ValueError(f"{src}: {vkeys[0]} has shape {values.shape}; expected 4 axes (T, C, H, W){hint}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{src}: {vkeys[0]} has dtype {values.dtype}; allowed: numbers (int, float, bool)")
    values = values.astype(np.float32)
    t, c, h, w = values.shape
    mask = None
    if "mask" in keys:
        m = z["mask"]
        if m.shape != values.shape:
            raise ValueError(f"{src}: mask has shape {m.shape}, values {values.shape}; they must match")
        if m.dtype.kind not in "biu" or (m.dtype.kind != "b" and not np.isin(m, (0, 1)).all()):
            raise ValueError(f"{src}: mask of dtype {m.dtype} must be bool or 0/1")
        mask = m.astype(bool)
    coverage = None
    if "coverage" in keys:
        cov = z["coverage"]
        if cov.shape != values.shape or cov.dtype.kind not in "iu" or (cov < 0).any():
            raise ValueError(
                f"{src}: coverage (shape {cov.shape}, dtype {cov.dtype}) must be int >= 0 of shape {values.shape}"
            )
        coverage = cov.astype(np.int32)
    cell_ids = None
    if "cell_ids" in keys:
        cell_ids = z["cell_ids"]
        if cell_ids.shape != (h, w) or cell_ids.dtype.kind not in "iu":
            raise ValueError(f"{src}: cell_ids (shape {cell_ids.shape}, dtype {cell_ids.dtype}) must be int ({h}, {w})")
    names = None
    if "channels" in keys:
        if z["channels"].shape != (c,):
            raise ValueError(f"{src}: channels has shape {z['channels'].shape}, expected ({c},)")
        names = tuple(str(x) for x in z["channels"])
    shapes = {"TCHW": (t, c, h, w), "CHW": (c, h, w), "HW": (h, w)}
    extras = {}
    for key in sorted(keys & set(extra)):
        a, want = z[key], shapes[extra[key]]
        if a.shape != want or a.dtype.kind not in "biuf":
            raise ValueError(
                f"{src}: {key} (shape {a.shape}, dtype {a.dtype}) must be numbers of shape {want} "
                f"({', '.join(extra[key])})"
            )
        extras[key] = a
    built = None
    if "times" in keys:
        times = _parse_times(z["times"], t, start, src)
    else:
        missing = [n for n, v in (("start", start), ("bin_minutes", bin_minutes)) if v is None]
        if missing:
            raise ValueError(
                f"{src} has no times: pass {' and '.join(missing)} (CLI: "
                f"{', '.join('--' + m.replace('_', '-') for m in missing)}) to build the time axis"
            )
        assert bin_minutes is not None
        times, built = regular_times(start, bin_minutes, t), int(bin_minutes)
    return NpzArrays(
        source=src,
        values=values,
        times=times,
        mask=mask,
        coverage=coverage,
        channels=names,
        cell_ids=cell_ids,
        timezone=str(z["timezone"]) if "timezone" in keys else None,
        holidays=tuple(str(d) for d in z["holidays"]) if "holidays" in keys else None,
        extra=extras,
        bin_minutes=built,
    )


def read_forecast(path: Any) -> NpzArrays:
    """Read a forecast file of ``traffic.pipeline.forecast`` (:func:`read_npz` with :data:`FORECAST_EXTRAS`).

    ``values`` are the predictions ``(H_out, C, H, W)``, ``times`` the target bin starts,
    ``mask`` where the cell observed the channel in the window, ``extra`` holds
    ``reference`` and, when the run had them, ``lower``/``upper``, ``window_coverage`` and
    ``cell_coverage``. Files written before the one layout (keys ``forecast``,
    ``target_times`` in int64 µs, ``has_data``, ``coverage``: :data:`LEGACY_FORECAST_KEYS`)
    are read under their new names, so that older runs can still be published.

    Parameters
    ----------
    path : str, Path or UPath
        Local or fsspec path (opened with ``.open("rb")``).

    Returns
    -------
    NpzArrays
    """
    src = str(path)
    z = _npz_arrays(path, src)
    if "forecast" in z and "values" not in z:  # an older forecast file
        z = {LEGACY_FORECAST_KEYS.get(k, k): v for k, v in z.items()}
        if "times" in z and z["times"].dtype.kind in "iu":
            z["times"] = z["times"].astype(np.int64) * 1000  # µs -> ns
        if "mask" in z and z["mask"].ndim == 3:
            z["mask"] = np.broadcast_to(z["mask"], z["values"].shape)
    missing = [k for k in FORECAST_REQUIRED if k not in z]
    if missing:
        raise ValueError(
            f"{src}: a forecast file needs the keys {list(FORECAST_REQUIRED)}; missing {missing} "
            "(traffic.pipeline.forecast writes them)"
        )
    return _check_npz(z, src, start=None, bin_minutes=None, extra=FORECAST_EXTRAS)


def _load_npz(path: Path, *, bin_minutes, start, channels, fill_gaps, timezone, holidays) -> GridTensor:
    a = read_npz(path, start=start, bin_minutes=bin_minutes)
    bm = a.bin_minutes if a.bin_minutes is not None else _bin_length(a.times, bin_minutes, a.source)
    c = a.values.shape[1]
    names = list(channels) if channels is not None else list(a.channels or [f"c{i}" for i in range(c)])
    return _finish(
        a.source,
        a.values,
        a.mask,
        a.coverage,
        a.times,
        bm,
        names,
        a.cell_ids,
        fill_gaps=fill_gaps,
        timezone=timezone or a.timezone,
        holidays=holidays if holidays is not None else (list(a.holidays) if a.holidays is not None else None),
    )


def _first(flags: np.ndarray) -> int:
    return int(np.flatnonzero(flags)[0])


def _parquet_column(tbl, name: str, src: str, allowed: str, check: Callable[[Any], bool], nullable: bool = False):
    """Column ``name`` of ``tbl`` as a pyarrow array, its type checked (and no nulls unless ``nullable``)."""
    import pyarrow.compute as pc

    col = tbl.column(name)
    if not check(col.type):
        raise ValueError(f"{src}: column {name!r} has type {col.type}; allowed: {allowed}")
    if col.null_count and not nullable:
        row = _first(pc.is_null(col).to_numpy(zero_copy_only=False))
        raise ValueError(f"{src}: column {name!r} is null at row {row}; it needs a value in every row")
    return col


def _int_column(tbl, name: str, src: str, limit: int | None = None) -> np.ndarray:
    import pyarrow.types as pat

    a = _parquet_column(tbl, name, src, "integer", pat.is_integer).to_numpy().astype(np.int64)
    bad = (a < 0) | (a >= limit if limit is not None else False)
    if bad.any():
        i = _first(bad)
        rng = f"0 .. {limit - 1}" if limit is not None else ">= 0"
        raise ValueError(f"{src}: column {name!r} is {int(a[i])} at row {i}; allowed: {rng}")
    return a


def _load_parquet(path: Path, *, bin_minutes, start, channels, fill_gaps, timezone, holidays) -> GridTensor:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import pyarrow.types as pat

    src = str(path)
    tbl = pq.read_table(path)
    raw_meta = (tbl.schema.metadata or {}).get(PARQUET_META_KEY)
    meta: dict[str, Any] = json.loads(raw_meta) if raw_meta else {}
    cols = tbl.column_names
    unknown = [c for c in cols if c not in PARQUET_COLUMNS]
    if unknown:
        raise ValueError(f"{src}: unknown columns {unknown}; allowed: {list(PARQUET_COLUMNS)}")
    for group in (("time", "t"), ("channel", "c"), ("row",), ("col",), ("value",)):
        have = [g for g in group if g in cols]
        if len(have) != 1:
            what = " or ".join(repr(g) for g in group)
            raise ValueError(f"{src}: needs {'exactly one of ' if len(group) > 1 else ''}column {what}; has {cols}")
    if "mask" in cols and "observed" in cols:
        raise ValueError(f"{src}: give one of the columns 'mask' and 'observed', not both")
    shape = meta.get("shape")
    n = tbl.num_rows
    if n == 0:
        raise ValueError(f"{src}: the table has no rows")

    # time
    bm: Any = bin_minutes if bin_minutes is not None else meta.get("bin_minutes")
    t0_arg = start if start is not None else meta.get("start")
    if "t" in cols:
        ti = _int_column(tbl, "t", src)
        missing = [k for k, v in (("start", t0_arg), ("bin_minutes", bm)) if v is None]
        if missing:
            raise ValueError(
                f"{src}: column 't' holds bin indices: pass {' and '.join(missing)} (CLI: "
                f"{', '.join('--' + m.replace('_', '-') for m in missing)}) to build the time axis"
            )
        t0 = _timestamp(t0_arg, "start").value
        bm = check_bin_seconds(60 * int(bm), "bin_minutes")
    else:
        col = _parquet_column(
            tbl, "time", src, "timestamp or ISO 8601 string", lambda ty: pat.is_timestamp(ty) or pat.is_string(ty)
        )
        if pat.is_string(col.type):
            s = pd.Series(col.to_numpy(zero_copy_only=False))
            parsed = pd.to_datetime(s, utc=True, format="ISO8601", errors="coerce")
            if parsed.isna().any():
                i = _first(parsed.isna().to_numpy())
                raise ValueError(f"{src}: column 'time' is {s.iloc[i]!r} at row {i}; allowed: ISO 8601 times")
            tv = parsed.to_numpy().astype("datetime64[ns]").astype(np.int64)
        else:
            tv = col.cast(pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).to_numpy()
        uniq = np.unique(tv)
        t0 = _timestamp(t0_arg, "start").value if t0_arg is not None else int(uniq[0])
        if bm is None:
            if len(uniq) < 2:
                raise ValueError(f"{src}: one distinct time only: pass bin_minutes (CLI: --bin-minutes)")
            bm = int(np.gcd.reduce(np.diff(uniq)))
            bm = check_bin_seconds(bm / 1e9, src)
        else:
            bm = check_bin_seconds(60 * int(bm), "bin_minutes")
        off = tv - t0
        step = bm * _NS_PER_MINUTE
        bad = (off < 0) | (off % step != 0)
        if bad.any():
            i = _first(bad)
            raise ValueError(
                f"{src}: column 'time' is {pd.Timestamp(tv[i], tz='UTC').isoformat()} at row {i}; allowed: "
                f"{bm}-minute bins from {pd.Timestamp(t0, tz='UTC').isoformat()}"
            )
        ti = off // step
    n_t = int(ti.max()) + 1 if n else 0
    if shape is not None:
        if int(shape[0]) < n_t:
            raise ValueError(f"{src}: metadata says {shape[0]} time bins, the rows reach bin {n_t - 1}")
        n_t = int(shape[0])

    # channel
    meta_names = meta.get("channels")
    if "c" in cols:
        n_c = len(channels) if channels is not None else len(meta_names) if meta_names else None
        ci = _int_column(tbl, "c", src, n_c)
        if n_c is None:
            n_c = int(ci.max()) + 1 if n else 0
        names = list(channels) if channels is not None else list(meta_names or [f"c{i}" for i in range(n_c)])
    else:
        col = _parquet_column(
            tbl,
            "channel",
            src,
            "string",
            lambda ty: pat.is_string(ty) or (pat.is_dictionary(ty) and pat.is_string(ty.value_type)),
        )
        col = col.cast(pa.string())
        present = [str(x) for x in pc.unique(col).to_pylist()]
        names = list(channels) if channels is not None else list(meta_names or sorted(present))
        extra = sorted(set(present) - set(names))
        if extra:
            raise ValueError(f"{src}: column 'channel' has names {extra}; allowed (channels): {names}")
        ci = pc.index_in(col, value_set=pa.array(names, type=pa.string())).to_numpy().astype(np.int64)
        n_c = len(names)

    # cells
    h = int(shape[2]) if shape is not None else None
    w = int(shape[3]) if shape is not None else None
    ri = _int_column(tbl, "row", src, h)
    wi = _int_column(tbl, "col", src, w)
    h = h if h is not None else (int(ri.max()) + 1 if n else 0)
    w = w if w is not None else (int(wi.max()) + 1 if n else 0)

    # values, mask, coverage
    vcol = _parquet_column(
        tbl, "value", src, "number", lambda ty: pat.is_integer(ty) or pat.is_floating(ty), nullable=True
    )
    v = pc.fill_null(vcol.cast(pa.float64()), float("nan")) if vcol.null_count else vcol.cast(pa.float64())
    vals = v.to_numpy()
    mname = "mask" if "mask" in cols else "observed" if "observed" in cols else None
    if mname is not None:
        obs = _parquet_column(tbl, mname, src, "bool", pat.is_boolean).to_numpy(zero_copy_only=False).astype(bool)
        bad = obs & ~np.isfinite(vals)
    else:
        obs = np.isfinite(vals)
        bad = np.isinf(vals)
    if bad.any():
        i = _first(bad)
        raise ValueError(f"{src}: column 'value' is {vals[i]} at row {i} (observed); an observed value must be finite")
    cov = _int_column(tbl, "coverage", src) if "coverage" in cols else obs.astype(np.int64)

    if n_t * n_c * h * w == 0:
        raise ValueError(f"{src}: no values (shape {(n_t, n_c, h, w)})")
    flat = ((ti * n_c + ci) * h + ri) * w + wi
    counts = np.bincount(flat, minlength=n_t * n_c * h * w)  # O(rows + cells), no sort
    if counts.max() > 1:
        rows = np.flatnonzero(counts[flat] > 1)  # rows of repeated keys, in file order
        r0, r = (int(x) for x in rows[flat[rows] == flat[rows[0]]][:2])
        when = pd.Timestamp(t0 + int(ti[r]) * bm * _NS_PER_MINUTE, tz="UTC").isoformat()
        raise ValueError(
            f"{src}: duplicate (time, channel, row, col) = ({when}, {names[int(ci[r])]}, {int(ri[r])}, {int(wi[r])}) "
            f"at rows {r0} and {r}; each may appear once"
        )
    del counts
    values = np.full(n_t * n_c * h * w, np.nan, dtype=np.float32)
    mask = np.zeros(n_t * n_c * h * w, dtype=bool)
    coverage = np.zeros(n_t * n_c * h * w, dtype=np.int32)
    values[flat[obs]] = vals[obs]
    mask[flat[obs]] = True
    coverage[flat[obs]] = cov[obs]
    shp = (n_t, n_c, h, w)
    times = regular_times(pd.Timestamp(t0, tz="UTC"), bm, n_t)
    cell_ids = np.asarray(meta["cell_ids"], dtype=np.int32) if meta.get("cell_ids") is not None else None
    if cell_ids is not None and cell_ids.shape != (h, w):
        raise ValueError(f"{src}: metadata cell_ids {cell_ids.shape} do not match the grid ({h}, {w})")
    return _finish(
        src,
        values.reshape(shp),
        mask.reshape(shp),
        coverage.reshape(shp),
        times,
        bm,
        names,
        cell_ids,
        fill_gaps=False,
        timezone=timezone or meta.get("timezone"),
        holidays=holidays if holidays is not None else (meta.get("holidays") or None),
    )
