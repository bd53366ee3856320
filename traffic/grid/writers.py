"""Writers of the gridded array files: :func:`write_npz` (the one ``.npz`` writer) and :func:`save_array` (npz or Parquet).

The formats, and their readers and checks, are :mod:`traffic.grid.arrays`; every write goes
through :func:`traffic.tempfiles.atomic_write` (local files and fsspec stores alike), so a
reader sees the old file or the whole new one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from traffic.grid.arrays import NPZ_KEYS, PARQUET_META_KEY, SUFFIXES, utc_ns
from traffic.grid.tensor import GridTensor
from traffic.tempfiles import atomic_write
from traffic.timebins import bin_minutes


def write_npz(
    path: Any,
    *,
    values: np.ndarray,
    times: Any,
    mask: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
    channels: Sequence[str] | None = None,
    cell_ids: np.ndarray | None = None,
    timezone: str | None = None,
    holidays: Sequence[str] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """Write an ``.npz`` file of the project's layout (:mod:`traffic.grid.arrays`), atomically.

    Parameters
    ----------
    path : str, Path or UPath
        Local or fsspec target.
    values : np.ndarray
        ``(T, C, H, W)`` numbers.
    times : sequence of timestamps
        ``T`` bin starts; stored as int64 ns UTC (naive = UTC).
    mask, coverage, channels, cell_ids, timezone, holidays : optional
        The layout's optional keys; left out of the file when None.
    extra : mapping of str to np.ndarray, optional
        Further arrays (a forecast's ``lower``, ``upper``, ``reference``, ...: the reader must
        allow them, :data:`traffic.grid.arrays.FORECAST_EXTRAS`); a name of the layout is refused.

    Returns
    -------
    UPath
        ``path``.

    Raises
    ------
    ValueError
        On values that are not 4-D, times of another length, or an extra named like a layout key.
    """
    values = np.asarray(values)
    stamps = utc_ns(times)
    if values.ndim != 4:
        raise ValueError(f"{path}: values has shape {values.shape}; expected 4 axes (T, C, H, W)")
    if len(stamps) != values.shape[0]:
        raise ValueError(f"{path}: {len(stamps)} times for {values.shape[0]} time bins of values")
    clash = sorted(set(extra or {}) & set(NPZ_KEYS))
    if clash:
        raise ValueError(f"{path}: extra arrays {clash} are named like keys of the layout {list(NPZ_KEYS)}")
    arrays: dict[str, np.ndarray] = {"values": values, "times": stamps}
    optional = {
        "mask": mask,
        "coverage": coverage,
        "channels": None if channels is None else np.array(list(channels), dtype=str),
        "cell_ids": cell_ids,
        "timezone": None if timezone is None else np.array(timezone),
        "holidays": None if holidays is None else np.array(list(holidays), dtype=str),
    }
    arrays |= {k: np.asarray(v) for k, v in optional.items() if v is not None}
    arrays |= {k: np.asarray(v) for k, v in (extra or {}).items()}

    def write(fh: IO[bytes]) -> None:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle in **kwds

    return atomic_write(path, write)


def save_array(grid: GridTensor, path: str | Path) -> Path:
    """Write ``grid`` as ``.npz`` (:func:`write_npz`) or Parquet (by suffix), atomically.

    :func:`traffic.grid.arrays.load_array` reads it back. Parquet holds one row per observed
    value plus schema metadata (shape, channels, start, bin length, holiday calendar, cell
    ids), so that unobserved edges of the grid survive the trip.

    Returns
    -------
    Path
    """
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; allowed: {sorted(SUFFIXES)}")
    if kind == "npz":
        write_npz(
            path,
            values=grid.values,
            times=grid.times,
            mask=grid.mask,
            coverage=grid.coverage,
            channels=grid.channels,
            cell_ids=grid.cell_ids,
            timezone=grid.timezone,
            holidays=grid.holidays,
        )
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    t, c, h, w = grid.shape
    ti, ci, ri, wi = np.nonzero(grid.mask)
    default_ids = np.array_equal(grid.cell_ids, np.arange(h * w).reshape(h, w))
    meta = {
        "shape": [t, c, h, w],
        "channels": list(grid.channels),
        "start": grid.times[0].isoformat() if t else None,
        "bin_minutes": bin_minutes(grid.times) if t > 1 else None,
        "timezone": grid.timezone,
        "holidays": list(grid.holidays),
        "cell_ids": None if default_ids else grid.cell_ids.tolist(),
    }
    table = pa.table(
        {
            "time": pa.array(utc_ns(grid.times)[ti], type=pa.timestamp("ns", tz="UTC")),
            "channel": pa.DictionaryArray.from_arrays(
                pa.array(ci.astype(np.int32)), pa.array(list(grid.channels), type=pa.string())
            ),
            "row": pa.array(ri.astype(np.int32)),
            "col": pa.array(wi.astype(np.int32)),
            "value": pa.array(grid.values[ti, ci, ri, wi].astype(np.float32)),
            "coverage": pa.array(grid.coverage[ti, ci, ri, wi].astype(np.int32)),
        }
    ).replace_schema_metadata({PARQUET_META_KEY: json.dumps(meta).encode()})
    atomic_write(path, lambda fh: pq.write_table(table, fh))
    return path
