"""Rasterizing: a day's observations to grid cells, a columnar aggregation on integer keys.

No geometry is touched here. The caller passes each feed's source-to-cell assignment table
(:func:`traffic.grid.assign.assignments_for`, computed with GeoPandas once per registry
version); it is turned into a small weight matrix, the
observations' ``source_id`` strings are mapped to integer codes once (dictionary
encoding), timestamps to integer bin numbers, and everything else is ``np.bincount``
over ``bin * n_sources + source`` keys, in cache-sized blocks of rows, followed by a
``(bins x sources) -> (bins x cells)`` weighted sum over the few cells each source feeds.

Aggregation rule (per time bin, cell and channel)
-------------------------------------------------
* Bins: ``bin_start = floor(timestamp / bin_seconds) * bin_seconds`` on the UTC epoch
  (a row lands in the bin that contains its start time; for whole-hour UTC offsets this
  is the local clock's bin too). Rows are assumed to be no longer than a bin.
* NaN/null measurements never contribute (to value or coverage). Rows whose
  ``source_id`` is not in the assignment (unknown, rejected, outside the grid) or whose
  timestamp is null are dropped.
* Mean channels (``speed_kmh``, ``occupancy``): the weighted mean of every contributing
  observation of every source in the cell, the weight being the source's assignment
  weight for that cell: ``sum(w_s * x) / sum(w_s)`` over observations.
* Count channels (``count``, ``car``, ``heavy``, ``bike``, ``pedestrian``):

  1. cameras are uptime-corrected row by row: ``x / uptime`` when ``uptime > 0``
     (and ``>= min_uptime``); a row with ``uptime <= 0``, null or NaN does not
     contribute to count channels. Sensors (no uptime) use ``x`` as is;
  2. summed per source over the bin: ``S_s = sum of the source's rows in the bin``;
  3. weighted-averaged over the sources of the cell that have data in the bin:
     ``sum(w_s * S_s) / sum(w_s)``, i.e. the mean volume per reporting source, so a
     camera going offline drops out of the mean instead of looking like a traffic drop.

* ``coverage``: the number of source observations (rows) that contributed. A line
  source split over several cells counts in each of them.

Partial days (``until``, :mod:`traffic.intraday`): a partition rasterizes only the rows
before its cut and only the bins that had *ended* by then (``bin_start + bin <= until``):
a bin still filling would read as a drop in traffic for count channels. The cut is the
earliest of the ``until`` given by the caller and the ``until`` in the metadata of each
feed's observation partition (what ingest kept), and is written to the raster
partition's metadata (key ``until``, ISO UTC), so the freshness gate sees a partial raster.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from traffic import intraday
from traffic.channels import COUNT_CHANNELS, FEED_KINDS, MEAN_CHANNELS
from traffic.config import CityConfig
from traffic.lake import Lake
from traffic.landing.contract import TS_TYPE

RASTER_SCHEMA = pa.schema(
    [
        ("bin_start", TS_TYPE),
        ("cell_id", pa.int32()),
        ("channel", pa.string()),
        ("value", pa.float64()),
        ("coverage", pa.int32()),
    ]
)

#: Rows handled per block: keeps the working arrays in the CPU cache.
_BLOCK_ROWS = 1 << 18
#: Most (bin, source) slots held densely per statistic; longer time spans are cut into windows.
_DENSE_KEY_LIMIT = 1 << 23
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_log = logging.getLogger(__name__)
_UNIT_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _as_table(obs: pa.Table | pd.DataFrame, columns: list[str]) -> pa.Table:
    if isinstance(obs, pd.DataFrame):
        have = [str(c) for c in obs.columns]
    elif isinstance(obs, pa.Table):
        have = obs.column_names
    else:
        raise TypeError(f"obs must be a pyarrow.Table or pandas.DataFrame, got {type(obs).__name__}")
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"observations lack columns {missing}; they have {have}")
    if isinstance(obs, pd.DataFrame):
        return pa.Table.from_pandas(obs[columns], preserve_index=False)
    return obs.select(columns)


def _check_types(table: pa.Table, value_columns: list[str]) -> pa.Table:
    """Validate column types; cast numeric columns to float64 and drop rows without a timestamp."""
    ts = table.column("timestamp").type
    if not pa.types.is_timestamp(ts):
        raise ValueError(f"observation column 'timestamp' must be a timestamp, got {ts}")
    if ts.tz is None:
        raise ValueError("observation column 'timestamp' is naive; it must be tz-aware UTC (see OBSERVATION_SCHEMAS)")
    sid = table.column("source_id").type
    if pa.types.is_dictionary(sid):
        sid = sid.value_type
    if not (pa.types.is_string(sid) or pa.types.is_large_string(sid) or pa.types.is_integer(sid)):
        raise ValueError(f"observation column 'source_id' must be a string, got {sid}")
    for name in value_columns:
        typ = table.column(name).type
        if pa.types.is_null(typ):
            table = table.set_column(table.column_names.index(name), name, pa.nulls(table.num_rows, pa.float64()))
        elif not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_decimal(typ)):
            raise ValueError(f"observation column {name!r} must be numeric, got {typ}")
        elif typ != pa.float64():
            table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.float64()))
    if table.column("timestamp").null_count:
        table = table.filter(pc.is_valid(table.column("timestamp")))
    return table


def _encode_sources(table: pa.Table) -> tuple[pa.Table, pa.Array]:
    """Dictionary-encode ``source_id`` with one dictionary of distinct strings for all chunks.

    Parquet columns read with ``read_dictionary`` are already encoded (no string is
    hashed again); plain strings are hashed once here.
    """
    i = table.column_names.index("source_id")
    col = table.column(i)
    typ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not pa.types.is_string(typ):
        col = col.cast(pa.string())
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    table = table.set_column(i, "source_id", col).unify_dictionaries()
    col = table.column(i)
    dictionary = col.chunk(0).dictionary if col.num_chunks else pa.array([], pa.string())
    if len(pc.unique(dictionary)) != len(dictionary):  # legal in Arrow, rare: re-encode
        col = col.cast(pa.string()).dictionary_encode()
        table = table.set_column(i, "source_id", col).unify_dictionaries()
        dictionary = table.column(i).chunk(0).dictionary
    return table, dictionary


def _blocks(table: pa.Table, size: list[int]):
    """Zero-copy row slices of ``table`` of ``size[0]`` rows at most (the caller may grow it)."""
    if table.num_rows and table.column(0).num_chunks > max(1, table.num_rows // (1 << 16)):
        table = table.combine_chunks()  # many tiny chunks: one copy beats per-chunk overhead
    for batch in table.to_batches():
        start = 0
        while start < batch.num_rows:
            block = batch.slice(start, size[0])
            start += block.num_rows
            yield block


def _counts_of(cache: dict[str, np.ndarray], keys: dict[str, np.ndarray], g: str, span: int) -> np.ndarray:
    """Rows per slot of a block for the key set ``g``, computed once per block."""
    if g not in cache:
        cache[g] = np.bincount(keys[g], minlength=span)
    return cache[g]


def _accumulate(
    table: pa.Table,
    width: int,
    channels: list[str],
    uptime_channels: set[str],
    per_bin: int,
    min_uptime: float,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Per (bin, dictionary entry) sums and row counts of every channel: the one pass over the rows.

    ``width`` is the dictionary length + 1; the last slot (``width - 1``) collects null
    ids and every row that must not count (NaN value, no uptime). Returns the absolute
    bin numbers and, per channel, ``(n_bins, width)`` sums and counts. Channels whose
    contributing rows are the same (no NaN of their own) share one counts array object.
    """
    trash = width - 1
    names = table.column_names
    ts_i, sid_i = names.index("timestamp"), names.index("source_id")
    ch_i = [names.index(c) for c in channels]
    up_i = names.index("uptime") if uptime_channels else None

    lo, hi = (v.as_py() for v in pc.min_max(table.column(ts_i).cast(pa.int64())).values())
    b_lo, b_hi = lo // per_bin, hi // per_bin
    bin_values = np.arange(b_lo, b_hi + 1, dtype=np.int64)
    n_keys = len(bin_values) * width

    sums = [np.zeros(n_keys, dtype=np.float64) for _ in channels]
    # counts shared by the channels whose rows all count ("all") or all rows with uptime ("u");
    # a channel gets its own copy from its first block with a NaN on
    group = ["u" if ch in uptime_channels else "all" for ch in channels]
    shared = {g: np.zeros(n_keys, dtype=np.int64) for g in set(group)}
    own: list[np.ndarray | None] = [None] * len(channels)
    size = [_BLOCK_ROWS]
    buf = np.empty(0, dtype=np.int64)
    for block in _blocks(table, size):
        m = block.num_rows
        if len(buf) < m:
            buf = np.empty(m, dtype=np.int64)
        key = buf[:m]
        ts = block.column(ts_i)
        t_min, t_max = (v.value for v in pc.min_max(ts).values())
        first, last = t_min // per_bin, t_max // per_bin
        # bin relative to the block's first bin: (t - first * per_bin) // per_bin
        np.subtract(ts.to_numpy().view(np.int64), first * per_bin, out=key)
        key //= per_bin
        first -= b_lo
        last -= b_lo
        span = (last - first + 1) * width
        if span > 4 * m and size[0] < table.num_rows:
            size[0] = min(table.num_rows, max(size[0], span))  # scattered times: bigger blocks
        # key = (bin - first) * width + dictionary index: a slot in this block's window
        key *= width
        sid = block.column(sid_i)
        idx = sid.indices.fill_null(trash) if sid.null_count else sid.indices
        key += idx.to_numpy(zero_copy_only=False)
        window = slice(first * width, first * width + span)

        keys = {"all": key}
        inv_u = None
        if up_i is not None:
            u = block.column(up_i).to_numpy(zero_copy_only=False)
            with np.errstate(invalid="ignore", divide="ignore"):
                ok_u = u > 0 if min_uptime <= 0 else (u > 0) & (u >= min_uptime)
                inv_u = 1.0 / u
            keys["u"] = key if ok_u.all() else np.where(ok_u, key, trash)
        block_counts: dict[str, np.ndarray] = {}
        for ci, (ch, col) in enumerate(zip(channels, ch_i, strict=True)):
            x = block.column(col).to_numpy(zero_copy_only=False)
            y = x * inv_u if ch in uptime_channels else x
            g = group[ci]
            part = np.bincount(keys[g], weights=y, minlength=span)
            # optimistic: if no source slot came out NaN/inf, every row of the group counted
            mine = own[ci]
            if np.isfinite(part.reshape(-1, width)[:, :trash]).all():
                if mine is not None:
                    mine[window] += _counts_of(block_counts, keys, g, span)
            else:  # NaN (or inf) measurements: send those rows to the trash slot and redo
                k = np.where(np.isfinite(x), keys[g], trash)
                part = np.bincount(k, weights=y, minlength=span)
                if mine is None:
                    mine = own[ci] = shared[g].copy()  # the rows so far all counted
                mine[window] += np.bincount(k, minlength=span)
            sums[ci][window] += part
        for g in set(group):
            if any(own[ci] is None and group[ci] == g for ci in range(len(channels))):
                shared[g][window] += _counts_of(block_counts, keys, g, span)
    shape = (len(bin_values), width)
    shared = {g: a.reshape(shape) for g, a in shared.items()}
    counts = [shared[group[ci]] if (o := own[ci]) is None else o.reshape(shape) for ci in range(len(channels))]
    sums = [s.reshape(shape) for s in sums]
    for s in sums:
        s[:, trash] = 0.0  # rows sent to the trash slot may carry NaN/inf
    return bin_values, sums, counts


def _assignment_arrays(assignment: pd.DataFrame, dictionary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The cells fed by the sources (sorted) and the ``(len(dictionary) + 1, n_cells)``
    weight matrix of the observations' dictionary entries (zero rows: unknown source, trash)."""
    missing = [c for c in ("source_id", "cell_id", "weight") if c not in assignment.columns]
    if missing:
        raise ValueError(f"assignment lacks columns {missing}; it has {list(assignment.columns)}")
    src = assignment["source_id"].astype("str").to_numpy()
    cell = assignment["cell_id"].to_numpy().astype(np.int64)
    weight = assignment["weight"].to_numpy().astype(np.float64)
    ok = np.isfinite(weight) & (weight > 0)
    src, cell, weight = src[ok], cell[ok], weight[ok]
    ids, s_code = np.unique(src, return_inverse=True)
    cells, c_code = np.unique(cell, return_inverse=True)
    w_src = np.zeros((len(ids) + 1, len(cells)), dtype=np.float64)  # last row: not assigned
    np.add.at(w_src, (s_code, c_code), weight)
    pos = pc.index_in(dictionary, value_set=pa.array(ids, type=pa.string())).fill_null(len(ids)).to_numpy()
    return cells, w_src[np.append(pos, len(ids))]


def _aggregate_table(
    obs: pa.Table | pd.DataFrame,
    assignment: pd.DataFrame,
    channels: list[str],
    kind: str,
    bin_seconds: int,
    min_uptime: float = 0.0,
) -> pa.Table:
    """:func:`aggregate` returning an Arrow table with :data:`RASTER_SCHEMA`."""
    if kind not in FEED_KINDS:
        raise ValueError(f"kind {kind!r} not in {FEED_KINDS}")
    channels = list(channels)
    bad = [c for c in channels if c not in MEAN_CHANNELS + COUNT_CHANNELS]
    if bad or not channels:
        raise ValueError(f"channels {bad or channels} not aggregatable; allowed: {MEAN_CHANNELS + COUNT_CHANNELS}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels {channels} contain duplicates")
    if isinstance(bin_seconds, bool) or int(bin_seconds) != bin_seconds or bin_seconds <= 0:
        raise ValueError(f"bin_seconds must be a positive integer, got {bin_seconds!r}")
    bin_seconds = int(bin_seconds)
    uptime_channels = {c for c in channels if c in COUNT_CHANNELS} if kind == "camera" else set()
    value_columns = channels + (["uptime"] if uptime_channels else [])
    table = _check_types(_as_table(obs, ["source_id", "timestamp", *value_columns]), value_columns)
    if table.num_rows == 0:
        return RASTER_SCHEMA.empty_table()
    table, dictionary = _encode_sources(table)
    cells, w = _assignment_arrays(assignment, dictionary)
    if len(cells) == 0:
        return RASTER_SCHEMA.empty_table()
    per_bin = bin_seconds * _UNIT_PER_S[table.column("timestamp").type.unit]
    width = len(dictionary) + 1
    bins = table.column("timestamp").cast(pa.int64())
    lo, hi = (v.as_py() // per_bin for v in pc.min_max(bins).values())
    if (hi - lo + 1) * width <= _DENSE_KEY_LIMIT:
        return _aggregate_window(table, cells, w, width, channels, uptime_channels, per_bin, bin_seconds, min_uptime)
    # a long time span: cut it into windows of whole bins that each fit the dense arrays
    per_window = max(1, _DENSE_KEY_LIMIT // width)
    window = (bins.to_numpy() // per_bin - lo) // per_window
    order = np.argsort(window, kind="stable")
    table, window = table.take(pa.array(order)), window[order]
    starts = np.flatnonzero(np.r_[True, window[1:] != window[:-1], True])
    parts = [
        _aggregate_window(
            table.slice(a, b - a), cells, w, width, channels, uptime_channels, per_bin, bin_seconds, min_uptime
        )
        for a, b in zip(starts[:-1], starts[1:], strict=True)
    ]
    return pa.concat_tables(parts)


def _aggregate_window(
    table: pa.Table,
    cells: np.ndarray,
    w: np.ndarray,
    width: int,
    channels: list[str],
    uptime_channels: set[str],
    per_bin: int,
    bin_seconds: int,
    min_uptime: float,
) -> pa.Table:
    """Aggregate rows whose bins fit the dense ``(bins, width)`` arrays (see :func:`aggregate`)."""
    bin_values, sums, counts = _accumulate(table, width, channels, uptime_channels, per_bin, min_uptime)
    return _to_cells_table(bin_values, sums, counts, cells, w, channels, bin_seconds)


def _to_cells_table(
    bin_values: np.ndarray,
    sums: list[np.ndarray],
    counts: list[np.ndarray],
    cells: np.ndarray,
    w: np.ndarray,
    channels: list[str],
    bin_seconds: int,
) -> pa.Table:
    """(bins x sources) -> (bins x cells), the only place sources meet cells, then long rows.

    The weight matrix is sparse (a source feeds one or a few cells): gather the sources'
    columns, weight those of sources split over several cells, and sum them per cell.
    """
    e_idx, c_idx = np.nonzero(w)
    if len(e_idx) == 0:
        return RASTER_SCHEMA.empty_table()
    order = np.argsort(c_idx, kind="stable")
    e_idx, c_idx = e_idx[order], c_idx[order]
    weight = w[e_idx, c_idx]
    scaled = np.flatnonzero(weight != 1.0)  # entries of sources split over several cells
    scale = weight[scaled]
    starts = np.flatnonzero(np.r_[True, c_idx[1:] != c_idx[:-1]])
    one_each = len(starts) == len(e_idx)  # every cell fed by one source
    out_cells = cells[c_idx[starts]]

    def to_cells(stat: np.ndarray, weighted: bool = True) -> np.ndarray:
        """Per-cell sums of the sources' columns of ``stat`` ``(bins, width)``."""
        cols = stat.take(e_idx, axis=1)
        if weighted and len(scaled):
            cols = cols.astype(np.float64, copy=False)
            cols[:, scaled] *= scale
        return cols if one_each else np.add.reduceat(cols, starts, axis=1)

    covs, vals, cache = [], [], {}
    for ci, ch in enumerate(channels):
        n = counts[ci]
        is_count = ch in COUNT_CHANNELS
        if (id(n), is_count) not in cache:  # channels whose rows all counted alike share these
            cov = to_cells(n, weighted=False)
            # counts: mean over the sources reporting in the bin; means: over the observations
            if is_count:
                den = to_cells((n > 0).astype(np.float64))
            else:
                den = to_cells(n) if len(scaled) else cov
            cache[id(n), is_count] = (cov, den)
        cov, den = cache[id(n), is_count]
        covs.append(cov)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals.append(to_cells(sums[ci]) / den)
    shared = all(c is covs[0] for c in covs)
    return _raster_table(bin_values * (bin_seconds * 1_000_000), out_cells, channels, covs, vals, shared)


def _tiled_strings(values: list[str], times: int) -> pa.Array:
    """``values`` repeated ``times`` times as one Arrow string array, built from buffers."""
    enc = [v.encode() for v in values]
    period = sum(len(e) for e in enc)
    if period * times >= 2**31 - 1:
        return pa.array(values, type=pa.string()).take(pa.array(np.tile(np.arange(len(values)), times)))
    starts = np.cumsum([0] + [len(e) for e in enc[:-1]]).astype(np.int32)
    offsets = np.empty(times * len(values) + 1, dtype=np.int32)
    grid = offsets[:-1].reshape(times, len(values))
    grid[:] = (np.arange(times, dtype=np.int32) * period)[:, None]
    grid += starts
    offsets[-1] = period * times
    return pa.StringArray.from_buffers(times * len(values), pa.py_buffer(offsets), pa.py_buffer(b"".join(enc) * times))


def _repeat_each(x: np.ndarray, k: int) -> np.ndarray:
    """``np.repeat(x, k)`` by broadcasting (faster for small ``k``)."""
    out = np.empty((len(x), k), dtype=x.dtype)
    out[:] = x[:, None]
    return out.ravel()


def _raster_table(
    bin_us: np.ndarray,
    cells: np.ndarray,
    channels: list[str],
    covs: list[np.ndarray],
    vals: list[np.ndarray],
    shared: bool,
) -> pa.Table:
    """Long raster rows from per-channel ``(bins, cells)`` coverage and values, sorted by bin, cell, channel.

    ``shared``: every channel has the same coverage (their rows all counted alike).
    """
    n_ch = len(channels)
    if shared:
        present = covs[0]
    else:
        present = np.logical_or.reduce([c > 0 for c in covs])
    pair = np.flatnonzero(present)  # (bin, cell) pairs with data, sorted
    t_idx, c_idx = np.divmod(pair, len(cells))
    cov2 = np.empty((len(pair), n_ch), dtype=np.int32)
    val2 = np.empty((len(pair), n_ch), dtype=np.float64)
    for ci in range(n_ch):
        cov2[:, ci] = covs[ci].ravel().take(pair)
        val2[:, ci] = vals[ci].ravel().take(pair)
    cov, val = cov2.ravel(), val2.ravel()
    columns = {
        "bin_start": _repeat_each(bin_us[t_idx], n_ch),
        "cell_id": _repeat_each(cells[c_idx].astype(np.int32), n_ch),
        "channel": _tiled_strings(channels, len(pair)),
        "value": val,
        "coverage": cov,
    }
    if not cov.all():  # a channel without data where another has some
        keep = np.flatnonzero(cov)
        columns = {k: (v.take(pa.array(keep)) if isinstance(v, pa.Array) else v[keep]) for k, v in columns.items()}
    columns["bin_start"] = pa.array(columns["bin_start"]).view(TS_TYPE)
    return pa.table(columns, schema=RASTER_SCHEMA)


def aggregate(
    obs: pa.Table | pd.DataFrame,
    assignment: pd.DataFrame,
    channels: list[str],
    kind: str,
    bin_seconds: int,
    *,
    min_uptime: float = 0.0,
) -> pd.DataFrame:
    """Aggregate observations of one feed to ``(bin, cell, channel)`` values.

    See the module docstring for the rule: means for speeds/occupancy, uptime-corrected
    per-source sums averaged over sources for counts; NaN never contributes.

    Parameters
    ----------
    obs : pyarrow.Table or pandas.DataFrame
        ``source_id`` (str, plain or dictionary-encoded), ``timestamp`` (tz-aware,
        UTC), the ``channels`` columns and, for ``kind="camera"`` with count channels,
        ``uptime``. Row order does not matter (time-ordered rows are fastest).
    assignment : pandas.DataFrame
        ``source_id``, ``cell_id``, ``weight`` (see :func:`traffic.grid.assign.assign_sources`).
    channels : list of str
        Observation columns to aggregate; each in ``MEAN_CHANNELS`` or ``COUNT_CHANNELS``.
    kind : {"sensor", "camera"}
        Feed kind; cameras get the uptime correction on count channels.
    bin_seconds : int
        Time bin length in seconds (> 0).
    min_uptime : float, default 0.0
        Camera rows with ``uptime < min_uptime`` do not contribute to count channels
        (``uptime <= 0`` never does).

    Returns
    -------
    pandas.DataFrame
        ``bin_start`` (datetime64[us, UTC]), ``cell_id`` (int32), ``channel`` (str, the
        observation column name), ``value`` (float64), ``coverage`` (int32): one row per
        bin, cell and channel with at least one contributing observation, sorted by
        ``bin_start``, ``cell_id`` and the order of ``channels``.

    Raises
    ------
    ValueError
        Unknown ``kind`` or channel, missing or mistyped columns, naive timestamps,
        ``bin_seconds`` not a positive integer.
    """
    table = _aggregate_table(obs, assignment, channels, kind, bin_seconds, min_uptime=float(min_uptime))
    return table.to_pandas(split_blocks=True)


def _check_date(date: str) -> str:
    if not isinstance(date, str) or not _DATE_RE.match(date):
        raise ValueError(f"date {date!r} must be a local calendar date 'YYYY-MM-DD'")
    try:
        pd.Timestamp(date)
    except ValueError as exc:
        raise ValueError(f"date {date!r} is not a calendar date 'YYYY-MM-DD'") from exc
    return date


def _read_observations(path: Any, columns: list[str]) -> pa.Table:
    with path.open("rb") as fh:
        pf = pq.ParquetFile(fh)
        have = pf.schema_arrow.names
        missing = [c for c in columns if c not in have]
        if missing:
            raise ValueError(f"{path}: missing observation columns {missing}; it has {have}")
        # source_id stays dictionary-encoded, as stored: codes are looked up once per distinct id
        return pq.read_table(fh, columns=columns, read_dictionary=["source_id"])


class IncompleteIngestError(RuntimeError):
    """A day's observations are missing or were not written whole: rasterizing it would lose data."""


def _day_problems(lake: Lake, city: CityConfig, date: str) -> list[str]:
    """Why a local date of a city cannot be rasterized (empty when every feed's day is ingested whole).

    Ingest writes, per feed and date, the observations, the quarantine, then the quality report
    (``traffic.ingest.run``; a partial day's report first, then again last). A day is
    complete when both files exist and agree: the observations hold as many rows as the report
    accepted and the same ``until``. A day without rows is ingested as empty files and a report.
    """
    return [p for feed in city.feeds if (p := feed_day_problem(lake, city, feed.name, date))]


def feed_day_problem(lake: Lake, city: CityConfig, feed: str, date: str) -> str | None:
    """Why one feed's local date is not ingested whole (None when its observations and report agree).

    See :func:`_day_problems`; the incremental ingest (:mod:`traffic.ingest.run`) asks it too
    before it trusts a day's report.
    """
    obs = lake.partition("observations", city=city.name, feed=feed, date=date) / "part.parquet"
    report = lake.partition("quality", city=city.name, feed=feed, date=date) / "report.json"
    if not obs.exists():
        return f"feed {feed}: no observations partition {obs} (the day was not ingested)"
    if not report.exists():
        return f"feed {feed}: no quality report {report} (the ingest of the day did not finish)"
    try:
        rep = lake.read_json(report)
        with obs.open("rb") as fh:
            pf = pq.ParquetFile(fh)
            n_rows = pf.metadata.num_rows
            raw_until = (pf.schema_arrow.metadata or {}).get(intraday.UNTIL_KEY.encode(), b"").decode()
    except (OSError, ValueError) as exc:
        return f"feed {feed}: {obs} or {report} is unreadable ({type(exc).__name__}: {exc})"
    accepted = rep.get("rows_accepted")
    if accepted != n_rows:
        return f"feed {feed}: {obs} holds {n_rows} rows but {report} accepted {accepted} (the ingest of the day did not finish)"
    if (rep.get("until") or "") != raw_until and not (
        rep.get("until")
        and raw_until
        and intraday.parse_until(rep["until"], "UTC") == intraday.parse_until(raw_until, "UTC")
    ):
        return (
            f"feed {feed}: {obs} was ingested until {raw_until or '(complete day)'} but {report} says "
            f"{rep.get('until') or '(complete day)'} (the ingest of the day did not finish)"
        )
    return None


def check_ingested(city: CityConfig, dates: list[str], *, lake: Lake | None = None) -> None:
    """Refuse to rasterize dates whose observations are missing or incomplete in any feed.

    Parameters
    ----------
    city : CityConfig
    dates : list of str
        Local dates ``YYYY-MM-DD``.
    lake : Lake, optional
        The lake to read; default :meth:`Lake.from_config`.

    Raises
    ------
    IncompleteIngestError
        Naming the first dates, feeds and files, and the ingest command that completes them.
        Nothing has been written.
    """
    store = lake if lake is not None else Lake.from_config()
    bad = {d: p for d in dates if (p := _day_problems(store, city, d))}
    if not bad:
        if dates:
            _log.info("%s: %d day(s) %s..%s ingested whole in every feed", city.name, len(dates), dates[0], dates[-1])
        return
    days = sorted(bad)
    shown = "; ".join(f"{d}: {', '.join(bad[d])}" for d in days[:3])
    more = f" (and {len(days) - 3} more days)" if len(days) > 3 else ""
    raise IncompleteIngestError(
        f"city {city.name}: {len(days)} of {len(dates)} day(s) are not ingested whole, nothing rasterized: {shown}{more}; "
        f"ingest them first: traffic ingest {city.name} --start {days[0]} --end {days[-1]}"
    )


def rasterize_partition(
    city: CityConfig,
    date: str,
    assignments: Mapping[str, pd.DataFrame],
    *,
    until: str | pd.Timestamp | None = None,
    lake: Lake | None = None,
) -> dict[str, Any]:
    """Rasterize one local date of a city: every feed's observations onto the grid.

    Reads ``observations/city=<c>/feed=<f>/date=<date>/part.parquet`` of each feed,
    joins them to the feed's assignment table in ``assignments``,
    aggregates them with :func:`aggregate` (``min_uptime`` from the feed's ``options``,
    default 0) and replaces ``raster/city=<c>/date=<date>/part.parquet``. Channel names are
    ``<feed>.<channel>``. Every feed's day must be ingested whole (:func:`check_ingested`:
    observations and quality report present and in agreement), else nothing is written: a
    missing or half-written day never replaces a good raster. A day ingested without rows
    gets an empty raster partition, so re-running is idempotent and the loader masks that day.

    Parameters
    ----------
    city : CityConfig
    date : str
        Local calendar date ``YYYY-MM-DD``.
    assignments : mapping
        Feed name -> assignment table (``source_id``, ``cell_id``, ``weight``; the registry
        version in ``attrs["registry_version"]``), as :func:`traffic.grid.assign.assignments_for`
        gives; needed for every feed with observations on the date.
    until : str or pandas.Timestamp, optional
        Rasterize only the bins that ended by then (module docstring); local
        ``YYYY-MM-DD HH:MM`` or ISO 8601 with an offset. Default: the observations' own
        ``until`` (none for a complete day).
    lake : Lake, optional
        The lake to read observations from and write the raster to; default :meth:`Lake.from_config`.

    Returns
    -------
    dict
        ``date``, ``path`` (str), ``rows`` (raster rows), ``cells`` (distinct cells), ``bins``
        (distinct bins), ``observations`` (observation rows read), ``feeds``
        (feeds that had a partition) and ``until`` (ISO UTC cut of a partial day, else None).

    Raises
    ------
    IncompleteIngestError
        A feed's observations of the day are missing or incomplete (nothing written).
    ValueError
        Bad date, an observation file lacks a column (the message names the file), or a feed
        with observations has no table in ``assignments``.
    """
    cut = None if until is None else intraday.parse_until(until, city.timezone)
    store = lake if lake is not None else Lake.from_config()
    check_ingested(city, [_check_date(date)], lake=store)
    return _rasterize_partition(store, city, date, assignments, cut)


def _until_of(table: pa.Table, path: Any) -> pd.Timestamp | None:
    """The ``until`` an observation partition was ingested with (None: a complete day)."""
    raw = (table.schema.metadata or {}).get(intraday.UNTIL_KEY.encode())
    if not raw:
        return None
    try:
        return intraday.parse_until(raw.decode(), "UTC")
    except ValueError as exc:
        raise ValueError(f"{path}: metadata {intraday.UNTIL_KEY!r} {raw!r} is not ISO 8601 with an offset") from exc


def _rasterize_partition(
    lake: Lake, city: CityConfig, date: str, assignments: Mapping[str, pd.DataFrame], cut: pd.Timestamp | None = None
) -> dict[str, Any]:
    """:func:`rasterize_partition` after its checks."""
    parts: list[pa.Table] = []
    versions: dict[str, str] = {}
    n_obs = 0
    tables: dict[str, pa.Table] = {}
    for feed in city.feeds:
        path = lake.partition("observations", city=city.name, feed=feed.name, date=date) / "part.parquet"
        if not path.exists():
            continue
        needs_uptime = feed.kind == "camera" and any(c in COUNT_CHANNELS for c in feed.channels)
        tables[feed.name] = table = _read_observations(
            path, ["source_id", "timestamp", *feed.channels] + (["uptime"] if needs_uptime else [])
        )
        feed_cut = _until_of(table, path)
        if feed_cut is not None and (cut is None or feed_cut < cut):
            cut = feed_cut
    day_cut = intraday.until_for_day(date, cut, city.timezone) if cut is not None else None
    for feed in city.feeds:
        if feed.name not in tables:
            continue
        path = lake.partition("observations", city=city.name, feed=feed.name, date=date) / "part.parquet"
        table = tables[feed.name]
        if day_cut is not None:  # only the bins that had ended by the cut
            step_us = city.bin_seconds * 1_000_000
            last_bin_end = (day_cut.value // 1000) // step_us * step_us
            ts = table.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            table = table.filter(pc.less(ts, last_bin_end))
        n_obs += table.num_rows
        if table.num_rows == 0:  # a day ingested without rows (or none before the cut): nothing to aggregate
            continue
        if feed.name not in assignments:
            raise ValueError(
                f"{path}: no assignment table for feed {feed.name!r} (given: {sorted(assignments)}); "
                "pass traffic.grid.assign.assignments_for(city)"
            )
        assignment = assignments[feed.name]
        versions[feed.name] = str(assignment.attrs.get("registry_version", ""))
        min_uptime = float(feed.options.get("min_uptime", 0.0))
        try:
            agg = _aggregate_table(table, assignment, list(feed.channels), feed.kind, city.bin_seconds, min_uptime)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
        channel = pc.binary_join_element_wise(f"{feed.name}.", agg.column("channel"), "")
        parts.append(agg.set_column(agg.column_names.index("channel"), "channel", channel))
    raster = pa.concat_tables(parts) if parts else RASTER_SCHEMA.empty_table()
    if len(parts) > 1:  # stable: channels of a cell keep the feed and config order
        raster = raster.sort_by([("bin_start", "ascending"), ("cell_id", "ascending")])
    metadata = {"registry_versions": json.dumps(versions, sort_keys=True), "bin_seconds": str(city.bin_seconds)}
    if day_cut is not None:
        metadata[intraday.UNTIL_KEY] = intraday.iso(day_cut) or ""
    target = lake.write_partition(raster.cast(RASTER_SCHEMA), "raster", city=city.name, date=date, metadata=metadata)
    _log.debug(
        "rasterized %s %s: %d observations of feeds %s -> %d raster rows%s",
        city.name,
        date,
        n_obs,
        sorted(versions),
        raster.num_rows,
        f" (cut at {intraday.iso(day_cut)})" if day_cut is not None else "",
    )
    return {
        "date": date,
        "path": str(target),
        "rows": raster.num_rows,
        "cells": len(pc.unique(raster.column("cell_id"))),
        "bins": len(pc.unique(raster.column("bin_start"))),
        "observations": int(n_obs),
        "feeds": sorted(versions),
        "until": intraday.iso(day_cut),
    }


def rasterize_range(
    city: CityConfig,
    start: str,
    end: str,
    assignments: Mapping[str, pd.DataFrame],
    progress: bool = False,
    *,
    until: str | pd.Timestamp | None = None,
    lake: Lake | None = None,
) -> list[dict[str, Any]]:
    """Rasterize every local date from ``start`` to ``end`` inclusive (see :func:`rasterize_partition`).

    ``assignments`` are the feeds' assignment tables, as for :func:`rasterize_partition`.

    ``until`` cuts every date of the range (a date that begins at or after it is an error).
    Every date is checked first (:func:`check_ingested`): when one is missing or incomplete
    in any feed, nothing of the range is written. ``lake`` (default :meth:`Lake.from_config`)
    is read and written.

    Returns
    -------
    list of dict
        One :func:`rasterize_partition` result per date, in date order.
    """
    _check_date(start)
    _check_date(end)
    if end < start:
        raise ValueError(f"end {end!r} is before start {start!r}")
    dates = [d.strftime("%Y-%m-%d") for d in pd.date_range(start, end, freq="D")]
    cut = None if until is None else intraday.parse_until(until, city.timezone)
    if cut is not None:
        for d in (start, end):
            intraday.until_for_day(d, cut, city.timezone)  # a date after the cut: error before any write
    store = lake if lake is not None else Lake.from_config()
    check_ingested(city, dates, lake=store)
    if progress:
        from tqdm import tqdm

        dates = tqdm(dates, desc=f"rasterize {city.name}", unit="day")
    return [_rasterize_partition(store, city, d, assignments, cut) for d in dates]
