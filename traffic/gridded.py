"""Forecasting any gridded array: ``(T, C, H, W)`` values with a mask, from ``.npz`` or Parquet.

The path for data that is not a configured city, such as public benchmarks (TaxiBJ, BikeNYC:
in/out flows on 32x32 or 16x8 grids in 30- or 60-minute bins). It reads no city file, no lake
and no MLflow:

* :func:`load_array` reads a file into a :class:`~traffic.grid.tensor.GridTensor`, checking it;
* :func:`evaluate_array` trains the forecaster on it
  (:func:`traffic.forecast.train.train_forecaster`) and scores the model and every baseline on
  the same holdout with the same masked metrics, returning a JSON-able report;
* :func:`format_report` renders the report as per-horizon tables;
* :func:`save_array`, :func:`save_model`, :func:`load_model` write and read back arrays and
  trained modules.

``traffic grid evaluate`` / ``traffic grid info`` are the command line of the same.

File formats
------------
``.npz`` (``numpy.savez``; pickled objects are refused). Keys:

==============  ===============================================================================
``values``      ``(T, C, H, W)`` numbers, NaN = missing (``data`` or ``X`` are accepted instead)
``mask``        optional ``(T, C, H, W)`` bool or 0/1, True = observed; default: the finite values
``times``       optional ``(T,)`` bin starts: int64 ns since the epoch, datetime64 or ISO strings;
                without it ``start`` + ``bin_minutes`` build the time axis
``channels``    optional ``(C,)`` names; default ``c0, c1, ...``
``coverage``    optional ``(T, C, H, W)`` int >= 0, observations behind each value; default ``mask``
``cell_ids``    optional ``(H, W)`` int ids; default ``0 .. H*W-1`` row-major
``timezone``    optional 0-d string, the zone holiday dates are read in (default ``UTC``)
``holidays``    optional ``(N,)`` local dates ``YYYY-MM-DD`` that are public holidays
==============  ===============================================================================

Parquet: a long table, one row per value; rows that are absent are missing values. Columns:

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
:func:`save_array`) records them.

Times without a zone are taken as they are and labelled UTC (the calendar features are read in
UTC): give local wall-clock times to let the model see local daily cycles, and leave
``timezone`` at UTC so that holidays match those labels. Channel names are ``<feed>.<name>``
for the model's modality fusion; a name without a feed gets the feed ``grid``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from traffic.forecast.features import MINUTES_PER_DAY
from traffic.grid.tensor import GridTensor

#: Feed given to channel names without one (the model groups channels by ``<feed>.``).
DEFAULT_FEED = "grid"
#: Keys of the ``.npz`` format; the first three are alternative names of the values.
NPZ_VALUE_KEYS = ("values", "data", "X")
NPZ_KEYS = (*NPZ_VALUE_KEYS, "mask", "times", "channels", "coverage", "cell_ids", "timezone", "holidays")
#: Columns of the Parquet format.
PARQUET_COLUMNS = ("time", "t", "channel", "c", "row", "col", "value", "mask", "observed", "coverage")
#: Schema metadata key :func:`save_array` writes into Parquet files.
PARQUET_META_KEY = b"traffic.gridded"
SUFFIXES = {".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}

_NS_PER_MINUTE = 60 * 10**9


# ------------------------------------------------------------------------------------ names, times
def model_channels(names: Sequence[str], source: str = "channels") -> tuple[str, ...]:
    """Channel names as the model needs them: ``<feed>.<name>``, a bare name gets feed :data:`DEFAULT_FEED`.

    Raises
    ------
    ValueError
        On an empty or repeated name, or a feed the model reserves for its own modalities.
    """
    from traffic.model import EXTRA_MODALITIES

    out = []
    for name in names:
        name = str(name).strip()
        if not name or name.startswith(".") or name.endswith("."):
            raise ValueError(f"{source}: channel name {name!r} must be '<name>' or '<feed>.<name>', both non-empty")
        out.append(name if "." in name else f"{DEFAULT_FEED}.{name}")
    reserved = sorted({n.split(".", 1)[0] for n in out} & set(EXTRA_MODALITIES))
    if reserved:
        raise ValueError(f"{source}: feed names {reserved} are reserved for the model's {list(EXTRA_MODALITIES)}")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"{source}: channel names {dup} repeat; each channel needs its own name")
    return tuple(out)


def _ns(times: pd.DatetimeIndex) -> np.ndarray:
    """Bin starts as int64 ns since the epoch, whatever the index's unit."""
    return pd.DatetimeIndex(times).as_unit("ns").asi8


def _timestamp(value: Any, what: str) -> pd.Timestamp:
    """One instant as a UTC timestamp (a naive one is labelled UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} {value!r} is not a time (use ISO 8601, e.g. 2015-01-01T00:00Z)") from exc
    if ts is pd.NaT:
        raise ValueError(f"{what} is missing (NaT)")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _check_bin(step_ns: int, source: str) -> int:
    """Bin length in whole minutes dividing a day, from a step in ns."""
    minutes = step_ns / _NS_PER_MINUTE
    if step_ns <= 0 or minutes != int(minutes) or MINUTES_PER_DAY % int(minutes):
        raise ValueError(
            f"{source}: bin length {step_ns / 1e9:g} s is not allowed: it must be a whole number of minutes "
            f"that divides a day (e.g. 5, 15, 30, 60, 120, 1440)"
        )
    return int(minutes)


def regular_times(start: Any, bin_minutes: int, n: int) -> pd.DatetimeIndex:
    """``n`` bin starts from ``start`` (UTC; a naive time is labelled UTC) every ``bin_minutes``."""
    _check_bin(int(bin_minutes) * _NS_PER_MINUTE, "bin_minutes")
    times = pd.date_range(_timestamp(start, "start"), periods=n, freq=pd.Timedelta(minutes=int(bin_minutes)))
    return times.as_unit("ns")


def _time_axis(
    raw: np.ndarray | None, n_t: int, start: Any, bin_minutes: int | None, source: str
) -> tuple[pd.DatetimeIndex, int]:
    """The file's times (checked against ``start``/``bin_minutes`` if given), else built from them."""
    if raw is None:
        missing = [n for n, v in (("start", start), ("bin_minutes", bin_minutes)) if v is None]
        if missing:
            raise ValueError(
                f"{source} has no times: pass {' and '.join(missing)} (CLI: "
                f"{', '.join('--' + m.replace('_', '-') for m in missing)}) to build the time axis"
            )
        assert bin_minutes is not None
        return regular_times(start, bin_minutes, n_t), int(bin_minutes)
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
    if n_t < 2:
        raise ValueError(f"{source}: need at least 2 time bins to know the bin length, got {n_t}")
    steps = np.diff(_ns(times))
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise ValueError(
            f"{source}: times must increase: bin {i} ({times[i].isoformat()}) does not come after bin {i - 1} "
            f"({times[i - 1].isoformat()})"
        )
    step = int(steps.min()) if bin_minutes is None else int(bin_minutes) * _NS_PER_MINUTE
    return times, _check_bin(step, source)


def _fill_gaps(
    times: pd.DatetimeIndex, bin_minutes: int, arrays: Sequence[np.ndarray], fills: Sequence[Any], source: str
) -> tuple[pd.DatetimeIndex, list[np.ndarray]]:
    """Put ``arrays`` (time first) on the regular axis from ``times[0]``, ``fills`` in the missing bins."""
    step = bin_minutes * _NS_PER_MINUTE
    off = _ns(times) - _ns(times)[0]
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


def _check_even(times: pd.DatetimeIndex, bin_minutes: int, source: str) -> None:
    steps = np.diff(_ns(times))
    bad = np.flatnonzero(steps != bin_minutes * _NS_PER_MINUTE)
    if len(bad):
        i = int(bad[0]) + 1
        raise ValueError(
            f"{source}: times are not evenly spaced: bin {i} ({times[i].isoformat()}) comes "
            f"{steps[i - 1] / _NS_PER_MINUTE:g} min after bin {i - 1}, the bin length is {bin_minutes} min; "
            "pass fill_gaps=True (CLI: --fill-gaps) to insert the missing bins as unobserved"
        )


def holiday_dates(spec: str | Iterable[str] | None, times: pd.DatetimeIndex) -> tuple[str, ...]:
    """Public-holiday dates for ``times``: ``spec`` is a country code (``"US"``, ``"US-NY"``), ISO dates, or None.

    A country code takes the ``holidays`` package's table (``traffic.calendar``) for the years
    of ``times`` and the next; dates may be an iterable or one comma-separated string.
    """
    if spec is None:
        return ()
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    dates, codes = [], []
    for s in items:
        try:
            dates.append(dt.date.fromisoformat(s).isoformat())
        except ValueError:
            codes.append(s)
    if codes:
        if len(codes) > 1 or dates:
            raise ValueError(
                f"holidays {spec!r}: give one country code ('US', 'US-NY') or ISO dates 'YYYY-MM-DD', not {codes}"
            )
        from traffic.calendar import HolidayCalendar

        country, _, subdiv = codes[0].partition("-")
        cal = HolidayCalendar(country=country.upper(), subdiv=subdiv.upper() or None)
        years = range(times[0].year, times[-1].year + 2) if len(times) else range(0)
        return tuple(sorted(d.isoformat() for d in cal.dates(years)))
    return tuple(sorted(set(dates)))


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
        _check_even(times, bin_minutes, source)
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
        holidays=holiday_dates(holidays, times),
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


def _load_npz(path: Path, *, bin_minutes, start, channels, fill_gaps, timezone, holidays) -> GridTensor:
    src = str(path)
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays need pickle
        raise ValueError(f"{src}: cannot read without pickle ({exc}); save plain numeric/string arrays") from exc
    with z:
        keys = set(z.files)
        unknown = sorted(keys - set(NPZ_KEYS))
        if unknown:
            raise ValueError(f"{src}: unknown keys {unknown}; allowed: {list(NPZ_KEYS)}")
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
                raise ValueError(
                    f"{src}: cell_ids (shape {cell_ids.shape}, dtype {cell_ids.dtype}) must be int ({h}, {w})"
                )
        names = [str(x) for x in z["channels"]] if "channels" in keys else [f"c{i}" for i in range(c)]
        if "channels" in keys and z["channels"].shape != (c,):
            raise ValueError(f"{src}: channels has shape {z['channels'].shape}, expected ({c},)")
        times, bm = _time_axis(z["times"] if "times" in keys else None, t, start, bin_minutes, src)
        tz = timezone or (str(z["timezone"]) if "timezone" in keys else None)
        hol = holidays if holidays is not None else ([str(d) for d in z["holidays"]] if "holidays" in keys else None)
    if channels is not None:
        names = list(channels)
    return _finish(
        src, values, mask, coverage, times, bm, names, cell_ids, fill_gaps=fill_gaps, timezone=tz, holidays=hol
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
        bm = _check_bin(int(bm) * _NS_PER_MINUTE, "bin_minutes")
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
            bm = _check_bin(bm, src)
        else:
            bm = _check_bin(int(bm) * _NS_PER_MINUTE, "bin_minutes")
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


# ----------------------------------------------------------------------------------------- saving
def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a temporary path that then replaces ``path`` (:func:`traffic.tempfiles.atomic_path`)."""
    from traffic.tempfiles import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def save_array(grid: GridTensor, path: str | Path) -> Path:
    """Write ``grid`` as ``.npz`` or Parquet (by suffix), atomically; :func:`load_array` reads it back.

    Parquet holds one row per observed value plus schema metadata (shape, channels, start, bin
    length, holiday calendar, cell ids), so that unobserved edges of the grid survive the trip.

    Returns
    -------
    Path
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; allowed: {sorted(SUFFIXES)}")
    tz, hol = grid.timezone, list(grid.holidays)
    if kind == "npz":

        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                grid.save_npz(fh)

    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        def write(tmp: Path) -> None:
            t, c, h, w = grid.shape
            ti, ci, ri, wi = np.nonzero(grid.mask)
            default_ids = np.array_equal(grid.cell_ids, np.arange(h * w).reshape(h, w))
            meta = {
                "shape": [t, c, h, w],
                "channels": list(grid.channels),
                "start": grid.times[0].isoformat() if t else None,
                "bin_minutes": int(round((grid.times[1] - grid.times[0]).total_seconds() / 60)) if t > 1 else None,
                "timezone": tz,
                "holidays": hol,
                "cell_ids": None if default_ids else grid.cell_ids.tolist(),
            }
            table = pa.table(
                {
                    "time": pa.array(_ns(grid.times)[ti], type=pa.timestamp("ns", tz="UTC")),
                    "channel": pa.DictionaryArray.from_arrays(
                        pa.array(ci.astype(np.int32)), pa.array(list(grid.channels), type=pa.string())
                    ),
                    "row": pa.array(ri.astype(np.int32)),
                    "col": pa.array(wi.astype(np.int32)),
                    "value": pa.array(grid.values[ti, ci, ri, wi].astype(np.float32)),
                    "coverage": pa.array(grid.coverage[ti, ci, ri, wi].astype(np.int32)),
                }
            ).replace_schema_metadata({PARQUET_META_KEY: json.dumps(meta).encode()})
            pq.write_table(table, tmp)

    _atomic_write(path, write)
    return path


def describe(grid: GridTensor) -> dict[str, Any]:
    """Shape, channels, time span and observed share of ``grid`` (JSON-able)."""
    t = grid.shape[0]
    step = (grid.times[1] - grid.times[0]).total_seconds() / 60 if t > 1 else None
    step = int(step) if step is not None and step == int(step) else step
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


# ------------------------------------------------------------------------------------- evaluation
def _json_safe(obj: Any) -> Any:
    """Plain JSON types; NaN/inf floats become None."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def _is_metric(key: str, value: Any) -> bool:
    """A per-horizon metric list of ``HorizonMetrics.as_dict()`` (not a count such as ``n`` or ``n_mape``)."""
    return isinstance(value, list) and key != "n" and not key.startswith("n_")


def evaluate_array(
    grid: GridTensor,
    *,
    context_steps: int,
    horizon_steps: int,
    holdout_days: float | None = None,
    holdout_fraction: float | None = None,
    train_days: float | None = None,
    budget_s: float = 60.0,
    seed: int = 0,
    device: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    progress: bool = False,
    save_model_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the forecaster on ``grid`` and score it and every baseline on the same holdout.

    Parameters
    ----------
    grid : GridTensor
        Any ``(T, C, H, W)`` array with a mask, evenly spaced in time (bins dividing a day).
        Channel names without a ``<feed>.`` get :data:`DEFAULT_FEED`.
    context_steps, horizon_steps : int
        Bins of context and bins predicted.
    holdout_days, holdout_fraction : float
        Exactly one: the holdout is the last ``holdout_days`` days, or the last
        ``holdout_fraction`` of the bins (rounded to whole bins).
    train_days : float, optional
        Training window before the holdout (its last 15 % is validation); default all of it.
    budget_s : float
        Wall-clock cap of the training loop (baselines and scoring come on top).
    seed : int
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default CUDA when available.
    model_overrides : dict, optional
        Keys of ``[model]`` / ``[training]`` in ``models/convlstm_attention.toml``.
    progress : bool
        Show a progress bar.
    save_model_dir : str or Path, optional
        Write the trained module there (:func:`save_model`) with the report.

    Returns
    -------
    dict
        JSON-able (NaN as None): ``data`` (:func:`describe`), ``setup``, ``split`` (sample counts,
        windows, holdout digest), ``horizon_minutes``, ``metrics`` (per model/baseline the
        ``HorizonMetrics.as_dict()``: per-horizon lists and means, ``n`` observed targets per
        horizon), ``best_baseline``, ``skill_pct`` (100 * (1 - model / best baseline), mean and
        per horizon, per metric), ``training`` (seconds, device, steps, best step, stop reason,
        whether the wall-clock cap fired, samples/s, parameters), ``ablation``
        (``HorizonMetrics.as_dict()`` of the trained network with parts switched off: ``base``, the
        linear base alone; ``base_head``, base + per-cell head), ``comparison``
        (:func:`comparison_by_group`: base, base + head, full model and GBM per horizon group),
        ``modality_weights``, ``params``, ``learning_curve``, ``saved_model``.

    Raises
    ------
    ValueError
        On an unusable grid or split, naming what is wrong and what is allowed.
    """
    from traffic.forecast.train import train_forecaster

    n_t = grid.shape[0]
    if n_t < 2:
        raise ValueError(f"grid has {n_t} time bins; evaluation needs a time series")
    _check_bin(int(np.diff(_ns(grid.times[:2]))[0]), "grid times")
    _check_even(grid.times, int((grid.times[1] - grid.times[0]).total_seconds()) // 60, "grid times")
    bm = int((grid.times[1] - grid.times[0]).total_seconds()) // 60
    bpd = MINUTES_PER_DAY // bm
    for name, v in (("context_steps", context_steps), ("horizon_steps", horizon_steps)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}={v} must be a whole number >= 1")
    if (holdout_days is None) == (holdout_fraction is None):
        raise ValueError("give exactly one of holdout_days and holdout_fraction")
    if holdout_fraction is not None:
        if not 0 < holdout_fraction < 1:
            raise ValueError(f"holdout_fraction={holdout_fraction} must lie in (0, 1)")
        holdout_days = max(1, int(round(holdout_fraction * n_t))) / bpd
    assert holdout_days is not None
    ho_bins = int(round(holdout_days * bpd))
    if not horizon_steps <= ho_bins < n_t:
        raise ValueError(
            f"holdout of {holdout_days:g} days = {ho_bins} bins must hold at least horizon_steps={horizon_steps} "
            f"bins and leave bins for training in a grid of {n_t} bins ({n_t / bpd:g} days)"
        )
    if train_days is None:
        train_days = (n_t - ho_bins) / bpd
    elif train_days <= 0:
        raise ValueError(f"train_days={train_days} must be > 0")
    if budget_s <= 0:
        raise ValueError(f"budget_s={budget_s} must be > 0")
    names = model_channels(grid.channels, "grid channels")
    if names != tuple(grid.channels):
        grid = dataclasses.replace(grid, channels=names)

    t0 = time.perf_counter()
    res = train_forecaster(
        grid,
        context_steps=int(context_steps),
        horizon_steps=int(horizon_steps),
        holdout_days=holdout_days,
        train_days=train_days,
        budget_s=budget_s,
        seed=seed,
        device=device,
        progress=progress,
        model_overrides=model_overrides,
    )
    total_s = time.perf_counter() - t0
    metrics = {name: m.as_dict() for name, m in res.metrics.items()}
    best_name, best = res.best_baseline()
    model = res.metrics["model"]
    skill: dict[str, Any] = {}
    for key in metrics["model"]:
        mine, ref = metrics["model"][key], metrics[best_name][key]
        if not _is_metric(key, mine) or not mine or len(ref) != len(mine):
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            per_h = 100.0 * (1.0 - np.asarray(mine, dtype=float) / np.asarray(ref, dtype=float))
            mean = 100.0 * (1.0 - float(np.nanmean(mine)) / float(np.nanmean(ref)))
        skill[key] = {"mean": float(mean), "per_horizon": [float(v) for v in per_h]}
    steps = int(res.extra.get("steps", 0))
    batch = int(res.params.get("batch_size", 0))
    report: dict[str, Any] = {
        "data": describe(grid),
        "setup": {
            "context_steps": int(context_steps),
            "horizon_steps": int(horizon_steps),
            "holdout_days": holdout_days,
            "train_days": train_days,
            "budget_s": budget_s,
            "seed": seed,
            "model_overrides": dict(model_overrides or {}),
        },
        "split": {
            "train_samples": res.extra.get("n_train_samples"),
            "val_samples": res.extra.get("n_val_samples"),
            "holdout_samples": res.holdout.n_samples,
            "train_window": list(res.train_window),
            "holdout_start": res.holdout.start,
            "holdout_end": res.holdout.end,
            "holdout_digest": res.holdout.digest,
        },
        "horizon_minutes": [bm * (j + 1) for j in range(int(horizon_steps))],
        "metrics": metrics,
        "best_baseline": best_name,
        "skill_pct": skill,
        "beats_best_baseline": bool(model.rmse_mean < best.rmse_mean),
        "training": {
            "device": res.device,
            "train_seconds": res.train_seconds,
            "total_seconds": total_s,
            "steps": steps,
            "stopped_reason": res.stopped_reason,
            "train_samples_per_s": steps * batch / res.train_seconds if res.train_seconds > 0 else None,
            "n_parameters": res.params.get("n_parameters"),
            "best_val_loss": res.extra.get("best_val_loss"),
            "best_step": res.extra.get("best_step"),
            "wall_clock_cap": res.extra.get("wall_clock_cap"),
            "base": res.extra.get("base"),
        },
        "ablation": {name: m.as_dict() for name, m in res.ablation.items()},
        "comparison": comparison_by_group(res, bm * 60),
        "modality_weights": res.extra.get("modality_weights", {}),
        "params": res.params,
        "learning_curve": res.learning_curve,
        "saved_model": None,
    }
    report = _json_safe(report)
    if save_model_dir is not None:
        report["saved_model"] = str(save_model(res.module, save_model_dir, report))
    return report


#: Columns of :func:`comparison_by_group`, in order: ``(key, label)``; ``base``/``base_head`` are ``TrainResult.ablation``'s.
COMPARISON_COLUMNS = (("base", "base"), ("base_head", "base+head"), ("model", "full"), ("gbm", "gbm"))


def comparison_by_group(res: Any, bin_seconds: int) -> dict[str, Any]:
    """The ablation and the GBM comparison per horizon group: what ``traffic grid evaluate`` prints.

    Parameters
    ----------
    res : TrainResult
        With ``metrics["model"]``, ``metrics["gbm"]`` and ``ablation`` (``base``, ``base_head``)
        on the same holdout; a column the result lacks is left out.
    bin_seconds : int
        Length of one bin (groups are hours ahead, :func:`traffic.forecast.horizons.horizon_groups`).

    Returns
    -------
    dict
        ``{"columns": [labels], "keys": [keys], "groups": [{"label", "steps": [first, last]
        (1-based), "rmse": {key: v}, "mae": {key: v}, "full_vs_base_head_pct": {"rmse", "mae"},
        "full_vs_gbm_pct": {"rmse", "mae"}}, ...]}``; the last group, ``"all"``, holds the means
        over every horizon (the figure promotion compares). A group's value is the mean of its
        horizons' values; a percentage is the full model's change against that column
        (negative = the full model is better), None when it cannot be computed.
    """
    from traffic.forecast.horizons import horizon_groups

    scored = {"model": res.metrics["model"], **dict(res.ablation)}
    if "gbm" in res.metrics:
        scored["gbm"] = res.metrics["gbm"]
    cols = [(k, label) for k, label in COMPARISON_COLUMNS if k in scored]
    n_h = len(res.metrics["model"].rmse)

    def pct(a: float, b: float) -> float | None:
        return 100.0 * (a - b) / b if b and math.isfinite(a) and math.isfinite(b) else None

    def row(label: str, first: int, last: int, values: dict[str, dict[str, float]]) -> dict[str, Any]:
        out: dict[str, Any] = {"label": label, "steps": [first, last], **values}
        for ref, key in (("base_head", "full_vs_base_head_pct"), ("gbm", "full_vs_gbm_pct")):
            if ref in scored:
                out[key] = {m: pct(values[m]["model"], values[m][ref]) for m in ("rmse", "mae")}
        return out

    def group_mean(values: list[float], steps: slice) -> float:
        part = np.asarray(values, dtype=float)[steps]
        part = part[np.isfinite(part)]
        return float(part.mean()) if part.size else math.nan

    groups = []
    for g in horizon_groups(int(bin_seconds), n_h):
        values = {m: {k: group_mean(getattr(scored[k], m), g.steps) for k, _ in cols} for m in ("rmse", "mae")}
        groups.append(row(g.label, g.steps.start + 1, g.steps.stop, values))
    means = {m: {k: float(getattr(scored[k], f"{m}_mean")) for k, _ in cols} for m in ("rmse", "mae")}
    groups.append(row("all", 1, n_h, means))
    return {"columns": [label for _, label in cols], "keys": [k for k, _ in cols], "groups": groups}


# ------------------------------------------------------------------------------------ model files
MODEL_WEIGHTS = "model.pt"
MODEL_CONFIG = "config.json"
MODEL_REPORT = "report.json"


def save_model(module: Any, directory: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write a trained :class:`~traffic.model.Forecaster`: ``model.pt`` (state dict), ``config.json``, ``report.json``.

    Returns
    -------
    Path
        ``directory``.
    """
    import torch

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    _atomic_write(d / MODEL_WEIGHTS, lambda tmp: torch.save(state, tmp))
    cfg = json.dumps(module.config.to_dict(), indent=2)
    _atomic_write(d / MODEL_CONFIG, lambda tmp: tmp.write_text(cfg))
    if report is not None:
        text = json.dumps({**report, "saved_model": str(d)}, indent=2)
        _atomic_write(d / MODEL_REPORT, lambda tmp: tmp.write_text(text))
    return d


def load_model(directory: str | Path):
    """Read back a module written by :func:`save_model` (CPU, eval mode, ``torch.load(weights_only=True)``).

    Forecast with ``traffic.forecast.train.forecast(module, grid, -1)`` or score it with
    ``traffic.forecast.train.evaluate_module``.
    """
    import torch

    from traffic.model import Forecaster, ForecasterConfig

    d = Path(directory)
    for name in (MODEL_WEIGHTS, MODEL_CONFIG):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d / name}: missing; save_model writes {MODEL_WEIGHTS} and {MODEL_CONFIG}")
    cfg = json.loads((d / MODEL_CONFIG).read_text())
    allowed = {f.name for f in dataclasses.fields(ForecasterConfig)}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"{d / MODEL_CONFIG}: unknown config keys {unknown}; allowed: {sorted(allowed)}")
    module = Forecaster(ForecasterConfig(**cfg))
    module.load_state_dict(torch.load(d / MODEL_WEIGHTS, map_location="cpu", weights_only=True))
    return module.eval()


# ------------------------------------------------------------------------------------------ tables
def _fmt(v: Any, width: int) -> str:
    if v is None:
        return "-".rjust(width)
    if isinstance(v, float):
        return f"{v:{width}.{3 if abs(v) < 100 else 1}f}"
    return str(v).rjust(width)


def _pct_cell(v: float | None, width: int) -> str:
    return ("-" if v is None else f"{v:+.1f} %").rjust(width)


def _comparison_lines(comp: dict[str, Any], width: int) -> list[str]:
    """The ablation and GBM tables of :func:`format_report` (one per metric, rows = horizon groups)."""
    if not comp.get("groups"):
        return []
    keys, labels = comp["keys"], comp["columns"]
    lines: list[str] = []
    for metric in ("rmse", "mae"):
        lines += [
            "",
            f"{metric.upper()} per group of hours ahead: the network with parts switched off (base = linear base "
            "alone, base+head = no recurrent path), the full model and gradient boosting",
            f"{'hours':>8} {'steps':>7} "
            + " ".join(lab.rjust(width) for lab in labels)
            + f" {'full vs base+head':>18} {'full vs gbm':>12}",
        ]
        for g in comp["groups"]:
            steps = f"{g['steps'][0]}-{g['steps'][1]}"
            vs_head = (g.get("full_vs_base_head_pct") or {}).get(metric)
            vs_gbm = (g.get("full_vs_gbm_pct") or {}).get(metric)
            lines.append(
                f"{g['label']:>8} {steps:>7} "
                + " ".join(_fmt(g[metric].get(k), width) for k in keys)
                + f" {_pct_cell(vs_head, 18)} {_pct_cell(vs_gbm, 12)}"
            )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Per-horizon tables (one per metric: model and every baseline) and a summary, as text."""
    d, sp, tr = report["data"], report["split"], report["training"]
    metrics = report["metrics"]
    names = ["model", *[k for k in metrics if k != "model"]]
    width = max(10, *(len(n) for n in names))
    lines = [
        f"grid {'x'.join(str(v) for v in d['shape'])} (T, C, H, W), channels {', '.join(d['channels'])}, "
        f"{d['bin_minutes']:g}-min bins {d['start']} .. {d['end']}, observed {100 * d['observed_share']:.1f} %",
        f"samples: train {sp['train_samples']}, validation {sp['val_samples']}, holdout {sp['holdout_samples']} "
        f"(targets {sp['holdout_start']} .. {sp['holdout_end']})",
        f"training: {tr['steps']} steps in {tr['train_seconds']:.1f} s on {tr['device']} "
        f"(stopped: {tr['stopped_reason']}), total {tr['total_seconds']:.1f} s",
    ]
    n_h = len(report["horizon_minutes"])
    keys = [k for k, v in metrics["model"].items() if _is_metric(k, v) and len(v) == n_h]
    for key in keys:
        unit = "%" if key == "mape" else "original units"
        n_key = f"n_{key}" if len(metrics["model"].get(f"n_{key}") or ()) == n_h else "n"
        lines += ["", f"{key.upper()} per horizon (masked, {unit}; n = targets scored)"]
        lines.append(f"{'horizon':>8} {'min':>6} {'n':>9} " + " ".join(n.rjust(width) for n in names))
        for j, minutes in enumerate(report["horizon_minutes"]):
            row = [metrics[n][key][j] if len(metrics[n].get(key) or ()) == n_h else None for n in names]
            lines.append(
                f"{j + 1:>8} {minutes:>6} {metrics['model'][n_key][j]:>9} " + " ".join(_fmt(v, width) for v in row)
            )
        lines.append(
            f"{'mean':>8} {'':>6} {'':>9} " + " ".join(_fmt(metrics[n].get(f"{key}_mean"), width) for n in names)
        )
    lines += _comparison_lines(report.get("comparison") or {}, width)
    best = report["best_baseline"]
    skill = report["skill_pct"]
    lines += [
        "",
        f"best baseline (mean RMSE): {best}; model skill vs it: "
        + ", ".join(
            f"{k.upper()} {v['mean']:+.1f} %" if v["mean"] is not None else f"{k.upper()} -" for k, v in skill.items()
        ),
        "modality weights: " + ", ".join(f"{k} {v:.2f}" for k, v in report["modality_weights"].items()),
    ]
    if report.get("saved_model"):
        lines.append(f"model saved to {report['saved_model']}")
    return "\n".join(lines)
