"""Adapters: raw delivered files -> landing frames in the canonical landing format.

An adapter only *reshapes* a delivery (renames, melts, unit conversion); it never drops,
fills or repairs rows. Values are judged later by :mod:`traffic.ingest.validate`, and
timestamps are still as delivered (naive local wall-clock time, or with a UTC offset).

Landing observation frame (one row per delivered observation, file order kept)
    ``source_id`` (pandas ``string``, NA allowed), ``timestamp`` (datetime64 naive local,
    datetime64 with tz, or text parsed later), ``interval_s`` (float64, NaN allowed) and
    the measurement columns of the feed kind (float64, NaN allowed), in the column order
    of :data:`traffic.landing.contract.OBSERVATION_SCHEMAS`.

Landing registry frame (one row per delivered source)
    ``source_id`` (``string``), ``geometry`` (object array of shapely geometries in WGS84,
    ``None`` where missing or unparseable), ``unparsed`` (bool: a geometry was delivered
    but could not be parsed) and ``attributes`` (JSON object text).

Adapters (``FeedConfig.adapter``)
    ``telraam``   Telraam hourly parquet (``date_local`` naive local) + segment GeoJSON.
    ``metr_la``   METR-LA wide CSV (header = sensor ids, no timestamp column, mph) +
                  ``graph_sensor_locations.csv``.
    ``melbourne_pedestrian``
                  City of Melbourne pedestrian counts (Parquet ``ts_local`` naive local,
                  ``sensor_id``, ``count`` with -1 = missing) + ``sensors.csv`` points.
    ``canonical`` the canonical landing format of :mod:`traffic.landing.contract`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely

from traffic.config import FeedConfig
from traffic.landing.contract import OBSERVATION_SCHEMAS
from traffic.landing.readers import (
    CSV_SUFFIXES,
    DELIMITER_NAMES,
    DRIFT_SHARE,
    PARQUET_SUFFIXES,
    CsvText,
    IngestError,
    file_format,
    numeric_column,
    parse_numbers,
    read_csv,
    read_csv_text,
    read_parquet,
    require_columns,
    resolve_files,
)

MPH_TO_KMH = 1.609344

#: Measurement columns (everything that is not id, time or interval), per feed kind.
MEASUREMENTS: dict[str, tuple[str, ...]] = {
    kind: tuple(n for n in schema.names if n not in ("source_id", "timestamp", "interval_s"))
    for kind, schema in OBSERVATION_SCHEMAS.items()
}

#: Fewest cars a Telraam camera must have counted in an hour (``car_total * uptime``) for the hour's
#: ``v85`` to be a speed: the 85th percentile of a handful of cars is the fastest one of them.
TELRAAM_MIN_SPEED_CARS = 10.0

#: Feed options (``[feeds.options]``) each adapter understands, with what they mean
#: (for config validation and the README). ``registry_max_rejected_share`` applies to every adapter.
ADAPTER_OPTIONS: dict[str, dict[str, str]] = {
    "telraam": {
        "interval_s": "seconds one row covers (default 3600)",
        "counts_extrapolated": "the *_total counts are extrapolated to the full hour (default true)",
        "min_speed_cars": f"fewest cars counted in an hour for its v85 to be a speed (default {TELRAAM_MIN_SPEED_CARS:g})",
        "registry_max_rejected_share": "share of rejected sources (0..1) above which ingest fails (default 0.5)",
    },
    "metr_la": {
        "start_local": "local wall-clock time of the first line (required)",
        "interval_s": "seconds between lines (required)",
        "end_local": "local time the file ends (exclusive) when it does not cover whole days",
        "csv_delimiter": "field delimiter of the observation CSV (default ',')",
        "registry_csv_delimiter": "field delimiter of the registry CSV (default ',')",
        "registry_crs": "CRS of the registry's longitude/latitude columns when not WGS84, e.g. 'EPSG:2229'",
        "registry_max_rejected_share": "share of rejected sources (0..1) above which ingest fails (default 0.5)",
    },
    "melbourne_pedestrian": {
        "interval_s": "seconds one row covers (default 3600)",
        "registry_csv_delimiter": "field delimiter of the sensors CSV (default ',')",
        "registry_max_rejected_share": "share of rejected sources (0..1) above which ingest fails (default 0.5)",
    },
    "canonical": {
        "interval_s": "seconds every row covers, when the files have no interval_s column",
        "csv_delimiter": "field delimiter of the observation CSVs (default ',')",
        "registry_csv_delimiter": "field delimiter of a CSV registry (default ',')",
        "registry_crs": "CRS of a CSV registry (or a vector file without one) when not WGS84, e.g. 'EPSG:25833'",
        "registry_max_rejected_share": "share of rejected sources (0..1) above which ingest fails (default 0.5)",
    },
}

#: Telraam parquet column -> landing column.
TELRAAM_COLUMNS = {
    "segment_id": "source_id",
    "date_local": "timestamp",
    "car_total": "car",
    "heavy_total": "heavy",
    "bike_total": "bike",
    "ped_total": "pedestrian",
    "uptime": "uptime",
    "v85": "speed_kmh",
}

#: Melbourne pedestrian parquet columns, and the count the source writes for "not counted".
MELBOURNE_COLUMNS = ("ts_local", "sensor_id", "count")
MELBOURNE_MISSING_COUNT = -1.0

#: Registry attributes kept from a Telraam segment feature (output key -> dotted property path).
TELRAAM_ATTRIBUTES = {
    "name": "osm.name",
    "highway": "osm.highway",
    "lanes": "osm.lanes",
    "maxspeed": "osm.maxspeed",
    "oneway": "osm.oneway",
    "osmid": "osm.osmid",
    "length_m": "osm.length",
    "suburb": "osm.address.suburb",
    "borough": "osm.address.borough",
}


# --------------------------------------------------------------------------------------
# small pure helpers


def source_ids(values: pd.Series) -> pd.Series:
    """Source ids as pandas ``string``: integers without ``.0``, blanks as NA."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    out = values.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def _repeat_ids(ids: pd.Series, positions: np.ndarray) -> pd.Series:
    """``ids[positions]`` as a pandas ``string`` Series, gathered in Arrow (no Python strings)."""
    import pyarrow as pa

    taken = pa.array(ids.array).cast(pa.large_string()).take(pa.array(positions))
    return pd.Series(pd.arrays.ArrowStringArray(taken), dtype="string")


def _timestamp_column(values: pd.Series, *, file: str, column: str) -> pd.Series:
    """Keep datetimes and text as delivered; anything else is schema drift."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        return values.astype("string")
    raise IngestError(
        f"{file}: column `{column}` has wrong dtype {values.dtype}; expected a timestamp "
        "(datetime, or ISO 8601 text, naive local or with a UTC offset)",
        file=file,
        column=column,
    )


def _empty_landing(kind: str) -> pd.DataFrame:
    cols: dict[str, pd.Series] = {
        "source_id": pd.Series([], dtype="string"),
        "timestamp": pd.Series([], dtype="datetime64[us]"),
        "interval_s": pd.Series([], dtype="float64"),
    }
    cols.update({m: pd.Series([], dtype="float64") for m in MEASUREMENTS[kind]})
    return pd.DataFrame(cols)


def _attributes_json(frame: pd.DataFrame) -> np.ndarray:
    """One JSON object per row (vectorised through ``DataFrame.to_json``)."""
    if frame.shape[1] == 0:
        return np.full(len(frame), "{}", dtype=object)
    if len(frame) == 0:
        return np.array([], dtype=object)
    text = frame.reset_index(drop=True).to_json(
        orient="records", lines=True, date_format="iso", default_handler=str, force_ascii=False
    )
    return np.array(text.rstrip("\n").split("\n"), dtype=object)


def _option(feed: FeedConfig, key: str, file: str) -> object:
    if key not in feed.options:
        raise IngestError(
            f"{file}: feed {feed.name!r} (adapter {feed.adapter!r}) needs option `{key}` in [feeds.options]; "
            f"got options {sorted(feed.options)}",
            file=file,
            column=key,
        )
    return feed.options[key]


# --------------------------------------------------------------------------------------
# deliveries: the landing frame plus what a quarantine row needs


@dataclass
class Delivery:
    """What an adapter read: the landing frame, per-row faults and the delivered values.

    Attributes
    ----------
    frame : pandas.DataFrame
        The landing frame (columns of ``OBSERVATION_SCHEMAS[kind]``, file order) plus
        ``fault`` (``string``: ``wrong_field_count`` or ``unparseable_value`` where the
        adapter could not read a row, NA elsewhere), ``marked`` (int16: cells of the row
        that held a missing marker such as ``N/A``) and ``delivered_at``
        (``datetime64[us, UTC]``: modification time of the row's file, NaT if unknown).
    records : callable
        ``records(rows)`` -> JSON object text per landing row position: the delivered
        fields under their delivered names, as delivered (CSV text, Parquet values;
        ``inf`` as the text ``"inf"``), plus ``_line`` (1-based line in a CSV file).
    files : tuple of str
        The delivered files, in the order they were read (name order: delivery order).
    file_of_row : numpy.ndarray or None
        int64 per row of ``frame``: the index in ``files`` of the file it came from (None when
        there are no files, e.g. an empty delivery).
    """

    frame: pd.DataFrame
    records: Callable[[np.ndarray], list[str]]
    files: tuple[str, ...] = ()
    file_of_row: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Delivery:
        """The delivery of ``rows`` only (positions in :attr:`frame`), in that order; ``records`` follows."""
        rows = np.asarray(rows, dtype=np.int64)
        parent = self.records

        def records(sub: np.ndarray) -> list[str]:
            return parent(rows[np.asarray(sub, dtype=np.int64)])

        frame = self.frame.iloc[rows].reset_index(drop=True)
        return Delivery(frame, records, self.files, None if self.file_of_row is None else self.file_of_row[rows])


def _fault_codes(garbage: np.ndarray) -> np.ndarray:
    """object array: ``unparseable_value`` where ``garbage``, None elsewhere (same shape)."""
    out = np.full(garbage.shape, None, dtype=object)
    out[garbage] = "unparseable_value"
    return out


def _no_records(rows: np.ndarray) -> list[str]:
    return ["{}" for _ in range(len(rows))]


def _delivery(
    frame: pd.DataFrame,
    fault: np.ndarray,
    marked: np.ndarray,
    delivered_at: pd.Timestamp | None,
    records: Callable[[np.ndarray], list[str]] | None,
) -> Delivery:
    frame = frame.reset_index(drop=True)
    frame["fault"] = pd.array(list(fault), dtype="string") if len(fault) else pd.array([], dtype="string")
    frame["marked"] = np.asarray(marked, dtype=np.int16)
    at = np.datetime64("NaT", "us") if delivered_at is None else np.datetime64(delivered_at.tz_convert(None), "us")
    frame["delivered_at"] = pd.Series(
        np.full(len(frame), at, dtype="datetime64[us]"), index=frame.index
    ).dt.tz_localize("UTC")
    return Delivery(frame, records or _no_records)


def _combine(parts: list[Delivery], paths: list[str]) -> Delivery:
    """One delivery of the parts read from ``paths`` (one part per file, in name order)."""
    sizes = [len(p.frame) for p in parts]
    file_of_row = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    if len(parts) == 1:
        return Delivery(parts[0].frame, parts[0].records, tuple(paths), file_of_row)
    offsets = np.cumsum([0, *sizes])
    frame = pd.concat([p.frame for p in parts], ignore_index=True)

    def records(rows: np.ndarray) -> list[str]:
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(offsets, rows, side="right") - 1
        out = np.empty(len(rows), dtype=object)
        for k in np.unique(which):
            sel = which == k
            out[sel] = parts[k].records(rows[sel] - offsets[k])
        return out.tolist()

    return Delivery(frame, records, tuple(paths), file_of_row)


def _delivered_at(path: Any) -> pd.Timestamp | None:
    """Modification time of a delivered file (the delivery time of its rows), None if unknown."""
    try:
        mtime = path.stat().st_mtime
    except (OSError, AttributeError, NotImplementedError, ValueError):
        return None
    if mtime is None:
        return None
    return pd.Timestamp(float(mtime), unit="s", tz="UTC").floor("us")


def _json_value(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, float | np.floating):
        f = float(v)
        if np.isnan(f):
            return None
        if np.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, str | int | bool):
        return v
    return str(v)


def _frame_records(raw: pd.DataFrame) -> Callable[[np.ndarray], list[str]]:
    """Delivered records of a typed (Parquet) frame: every column, values as delivered."""
    names = [str(c) for c in raw.columns]

    def records(rows: np.ndarray) -> list[str]:
        sub = raw.iloc[np.asarray(rows, dtype=np.int64)]
        cols = [sub[c].to_numpy(dtype=object) for c in raw.columns]
        return [
            json.dumps({n: _json_value(c[i]) for n, c in zip(names, cols, strict=True)}, ensure_ascii=False)
            for i in range(len(sub))
        ]

    return records


def _csv_records(text: CsvText, cells: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    """Delivered records of a CSV: the fields as text under the header names (all fields of a bad line)."""
    bad = text.bad_lines()

    def records(rows: np.ndarray) -> list[str]:
        out = []
        for i in np.asarray(rows, dtype=np.int64).tolist():
            rec: dict[str, Any] = {"_line": int(text.lines[i])}
            if bad[i]:
                rec["_fields"] = text.rows[i]
            else:
                rec.update(zip(text.header, cells[i].tolist(), strict=True))
            out.append(json.dumps(rec, ensure_ascii=False))
        return out

    return records


def _delimiter(feed: FeedConfig, key: str = "csv_delimiter") -> str:
    """Field delimiter of the feed's observation CSVs (``csv_delimiter``) or registry CSV (``registry_csv_delimiter``)."""
    value = str(feed.options.get(key, ","))
    if value not in DELIMITER_NAMES:
        raise IngestError(
            f"feed {feed.name!r}: option `{key}` = {value!r}; expected one of {list(DELIMITER_NAMES)}",
            column=key,
            value=value,
            allowed=str(list(DELIMITER_NAMES)),
        )
    return value


# --------------------------------------------------------------------------------------
# telraam


def telraam_observations(feed: FeedConfig) -> Delivery:
    """Telraam hourly parquet -> camera landing frame.

    ``source_id`` = ``str(segment_id)``, ``timestamp`` = ``date_local`` (naive
    Europe/Berlin wall-clock time, including both copies of the repeated DST hour),
    ``interval_s`` = 3600 (or option ``interval_s``), ``uptime`` as delivered,
    ``speed_kmh`` = ``v85`` (km/h, the 85th-percentile car speed of the hour) where the camera
    counted at least ``min_speed_cars`` cars in the hour (option, default
    :data:`TELRAAM_MIN_SPEED_CARS`), else null: a v85 of fewer cars is not a speed. A file
    without a ``v85`` column delivers no speeds; it is an error only when the feed's
    ``channels`` ask for ``speed_kmh``. Night hours Telraam did not count are absent and stay absent.

    Counts: Telraam's ``*_total`` columns are already extrapolated to the full hour (on
    the shipped data a segment's totals do not fall with its uptime). The landing
    contract wants the vehicles counted *while the camera was up*, so the adapter emits
    ``*_total * uptime``; rasterization divides by uptime again, which gives back the
    full-hour volume instead of correcting it twice. Set feed option
    ``counts_extrapolated = false`` for a Telraam export with raw counts. A row with
    uptime 0 would turn its totals into zeros: validation quarantines it
    (``zero_uptime``) with the totals as delivered.

    Raises
    ------
    IngestError
        A file is unreadable or lacks one of :data:`TELRAAM_COLUMNS`, or a column is
        mostly not numbers.
    """
    parts = []
    paths: list[str] = []
    wants_speed = "speed_kmh" in feed.channels
    min_cars = float(feed.options.get("min_speed_cars", TELRAAM_MIN_SPEED_CARS))
    for path in resolve_files(feed.path("observations"), PARQUET_SUFFIXES):
        file = str(path)
        raw = read_parquet(path, columns=list(TELRAAM_COLUMNS), optional=() if wants_speed else ("v85",))
        if "v85" not in raw.columns:  # volumes only: the feed does not ask for speeds
            raw["v85"] = np.full(len(raw), np.nan)
        out: dict[str, object] = {
            "source_id": source_ids(raw["segment_id"]),
            "timestamp": _timestamp_column(raw["date_local"], file=file, column="date_local"),
            "interval_s": np.full(len(raw), float(feed.options.get("interval_s", 3600))),
        }
        garbage = np.zeros(len(raw), dtype=bool)
        marked = np.zeros(len(raw), dtype=np.int16)
        for src, dst in TELRAAM_COLUMNS.items():
            if dst not in out:
                parsed = parse_numbers(raw[src], file=file, column=src)
                out[dst] = parsed.values
                garbage |= parsed.garbage
                marked += parsed.marker
        if feed.options.get("counts_extrapolated", True):
            up = np.asarray(out["uptime"], dtype=float)
            for dst in ("car", "heavy", "bike", "pedestrian"):
                out[dst] = np.asarray(out[dst], dtype=float) * up
        cars = np.asarray(out["car"], dtype=float)
        with np.errstate(invalid="ignore"):  # a null car count leaves no speed either
            out["speed_kmh"] = np.where(cars >= min_cars, np.asarray(out["speed_kmh"], dtype=float), np.nan)
        frame = pd.DataFrame(out)[list(OBSERVATION_SCHEMAS["camera"].names)]
        fault = _fault_codes(garbage)
        parts.append(_delivery(frame, fault, marked, _delivered_at(path), _frame_records(raw)))
        paths.append(file)
    return _combine(parts, paths)


def telraam_registry(feed: FeedConfig) -> pd.DataFrame:
    """Telraam segment GeoJSON -> landing registry frame.

    Geometry is the segment (Multi)LineString in WGS84 (reprojected from the CRS a legacy
    GeoJSON ``crs`` member names, when the file has one); attributes keep OSM name,
    highway class, lanes, speed limit, one-way flag, OSM id, length and district.

    Raises
    ------
    IngestError
        The file is not a GeoJSON FeatureCollection or features lack ``segment_id``.
    """
    path = resolve_files(feed.path("registry"), (".geojson", ".json"))[0]
    file = str(path)
    try:
        with path.open("rb") as fh:
            doc = json.load(fh)
        features = doc["features"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IngestError(f"cannot read {file} as a GeoJSON FeatureCollection: {exc!r}", file=file) from exc
    props = pd.json_normalize([f.get("properties") or {} for f in features])
    require_columns(props, ["segment_id"], f"{file} (feature properties)")
    geom_text = [json.dumps(f["geometry"]) if f.get("geometry") else None for f in features]
    geometry, unparsed = _parse_geometry(pd.Series(geom_text, dtype=object))
    crs = _geojson_crs(doc, file)
    if crs is not None and not crs.equals("EPSG:4326") and not crs.equals("OGC:CRS84"):
        geometry = _declared_crs_geometry(feed, geometry, file, crs)  # the member names the coordinates' CRS
    attrs = pd.DataFrame({k: props[v] if v in props.columns else None for k, v in TELRAAM_ATTRIBUTES.items()})
    return pd.DataFrame(
        {
            "source_id": source_ids(props["segment_id"]),
            "geometry": geometry,
            "unparsed": unparsed,
            "attributes": _attributes_json(attrs),
        }
    )


# --------------------------------------------------------------------------------------
# metr_la


def metr_la_observations(feed: FeedConfig) -> Delivery:
    """METR-LA wide CSV -> sensor landing frame.

    The header row holds the sensor ids; each following line is one interval. Line ``i``
    starts at ``start_local + i * interval_s`` on the local wall clock (options
    ``start_local`` and ``interval_s``), exactly like the publisher's own regular index;
    the timezone rule of the contract then turns it into UTC. Speeds are mph and become
    ``speed_kmh``; ``count`` and ``occupancy`` are null. Blank cells stay NaN and zero
    speeds stay zero: validation quarantines them (``all_values_null``,
    ``speed_out_of_range``). A cell that is not a number is quarantined on its own
    (``unparseable_value``), a missing marker such as ``N/A`` too (``marked_missing``),
    and every cell of a line with the wrong number of fields (``wrong_field_count``).

    The file has no timestamps, so its line count must fit: whole local days of
    ``86400 / interval_s`` lines from ``start_local``, or exactly up to option
    ``end_local`` (exclusive) when it is set. When it does not fit and exactly the
    surplus of lines repeat the line before them (a delivery that doubled lines), each
    repeat keeps the time of the line it repeats, so its values are quarantined as
    ``duplicate`` and no later reading shifts. Otherwise the file is refused.

    Raises
    ------
    IngestError
        Missing options, unreadable/truncated file, wrong delimiter, a column that is
        mostly not numbers, or a line count that does not fit.
    """
    files = resolve_files(feed.path("observations"), CSV_SUFFIXES)
    if len(files) > 1:  # rows without timestamps: a second file cannot say when its rows are
        shown = [f.name for f in files[:5]] + (["..."] if len(files) > 5 else [])
        raise IngestError(
            f"{feed.path('observations')}: feed {feed.name!r} (adapter 'metr_la') reads one file, found "
            f"{len(files)}: {shown}; its rows have no timestamps (they start at option `start_local`), so a "
            "second file cannot say when its rows are: deliver the whole span as one file (extend `end_local`), "
            "or deliver new days with timestamps (adapter 'canonical', docs/landing.md)",
            file=feed.path("observations"),
            value=str(len(files)),
            allowed="one .csv file",
        )
    path = files[0]
    file = str(path)
    raw_start = str(_option(feed, "start_local", file))
    start = _local_time_option(feed, "start_local", raw_start, file)
    raw_interval = str(_option(feed, "interval_s", file))
    try:
        interval = int(raw_interval)
    except ValueError:
        interval = 0
    if interval <= 0:
        raise IngestError(
            f"{file}: feed {feed.name!r} option `interval_s` = {raw_interval!r}; expected a positive integer of seconds",
            file=file,
            column="interval_s",
            value=raw_interval,
            allowed="a positive integer of seconds",
        )
    text = read_csv_text(path, delimiter=_delimiter(feed))
    ids = np.array(text.header, dtype=object)
    if len(ids) == 0 or all(not str(i).strip() for i in ids):
        raise IngestError(f"{file}: empty header; expected a header row of sensor ids", file=file)
    cells = text.matrix()
    n_rows, n_cols = cells.shape
    bad_line = text.bad_lines()
    speeds = np.full((n_rows, n_cols), np.nan)
    garbage = np.zeros((n_rows, n_cols), dtype=bool)
    marker = np.zeros((n_rows, n_cols), dtype=bool)
    good = cells[~bad_line]
    parsed = parse_numbers(pd.Series(good.ravel(), dtype="string"), file=file, column="", drift=False)
    shape = good.shape
    speeds[~bad_line] = parsed.values.reshape(shape)
    garbage[~bad_line] = parsed.garbage.reshape(shape)
    marker[~bad_line] = parsed.marker.reshape(shape)
    filled = (good != "").sum(axis=0) - marker[~bad_line].sum(axis=0)
    for j in np.flatnonzero(garbage.sum(axis=0) > DRIFT_SHARE * filled):  # a column of text: schema drift
        parse_numbers(pd.Series(good[:, j], dtype="string"), file=file, column=str(ids[j]), expected="speeds in mph")
    step = _line_steps(feed, text, cells, bad_line, start, interval)
    times = start + pd.to_timedelta(step * interval, unit="s")
    fault = _fault_codes(garbage)
    fault[bad_line] = "wrong_field_count"
    frame = pd.DataFrame(
        {
            "source_id": _repeat_ids(source_ids(pd.Series(ids, dtype="string")), np.tile(np.arange(n_cols), n_rows)),
            "timestamp": pd.Series(times.as_unit("us").repeat(n_cols)),
            "interval_s": np.full(n_rows * n_cols, float(interval)),
            "count": np.nan,
            "speed_kmh": speeds.ravel() * MPH_TO_KMH,
            "occupancy": np.nan,
        }
    )[list(OBSERVATION_SCHEMAS["sensor"].names)]
    lines = text.lines

    def records(rows: np.ndarray) -> list[str]:
        out = []
        for r in np.asarray(rows, dtype=np.int64).tolist():
            i, j = divmod(r, n_cols)
            rec: dict[str, object] = {
                "_line": int(lines[i]),
                str(ids[j]): cells[i, j] if j < text.n_fields[i] else None,
            }
            if bad_line[i]:
                rec["_fields"] = int(text.n_fields[i])
            out.append(json.dumps(rec, ensure_ascii=False))
        return out

    return _combine(
        [_delivery(frame, fault.ravel(), marker.ravel().astype(np.int16), _delivered_at(path), records)], [file]
    )


def _local_time_option(feed: FeedConfig, key: str, raw: str, file: str) -> pd.Timestamp:
    try:
        value = pd.Timestamp(raw)
    except ValueError as exc:
        raise IngestError(
            f"{file}: feed {feed.name!r} option `{key}` = {raw!r}; expected an ISO 8601 local time",
            file=file,
            column=key,
            value=raw,
            allowed="ISO 8601 local time, e.g. 2012-03-01T00:00:00",
        ) from exc
    if value.tzinfo is not None:
        raise IngestError(
            f"{file}: feed {feed.name!r} option `{key}` = {raw!r} has a UTC offset; expected a local wall-clock time",
            file=file,
            column=key,
            value=raw,
            allowed="ISO 8601 local time without offset",
        )
    return value


def _line_steps(
    feed: FeedConfig, text: CsvText, cells: np.ndarray, bad_line: np.ndarray, start: pd.Timestamp, interval: int
) -> np.ndarray:
    """Interval index of every line of a timestamp-less file (see :func:`metr_la_observations`)."""
    n = len(cells)
    if "end_local" in feed.options:
        end = _local_time_option(feed, "end_local", str(feed.options["end_local"]), text.file)
        span = (end - start).total_seconds()
        if span <= 0 or span % interval:
            raise IngestError(
                f"{text.file}: feed {feed.name!r} option `end_local` = {feed.options['end_local']!r} is not a whole "
                f"number of intervals ({interval} s) after start_local {start.isoformat()}",
                file=text.file,
                column="end_local",
                value=str(feed.options["end_local"]),
                allowed=f"start_local + k * {interval} s, k >= 1",
            )
        expected = int(span // interval)
        surplus = n - expected
        rule = f"{expected} lines from start_local {start.isoformat()} to end_local {end.isoformat()}"
        found = f"{n} lines, {surplus:+d}"
    elif 86400 % interval == 0:
        per_day = 86400 // interval
        surplus = n % per_day
        rule = f"whole days of {per_day} lines ({interval} s each) from start_local {start.isoformat()}"
        found = f"{n // per_day} days and {surplus} lines"
    else:
        return np.arange(n, dtype=np.int64)
    if surplus == 0:
        return np.arange(n, dtype=np.int64)
    repeat = np.zeros(n, dtype=bool)
    if n > 1:
        same = (cells[1:] == cells[:-1]).all(axis=1) & ~bad_line[1:] & ~bad_line[:-1]
        informative = (cells[1:] != "").any(axis=1)
        repeat[1:] = same & informative
    n_repeat = int(repeat.sum())
    if surplus > 0 and n_repeat == surplus:
        return np.cumsum(~repeat) - 1
    shown = text.lines[repeat][:5].tolist()
    raise IngestError(
        f"{text.file}: {n} data lines do not fit {rule} ({found}), "
        f"and {n_repeat} lines repeat the line before them{f' (lines {shown})' if shown else ''}. "
        "Without timestamps every later reading would shift; deliver the whole file again, or set `end_local` "
        "in the feed's [feeds.options] if it covers a shorter span",
        file=text.file,
        value=str(n),
        allowed=rule,
    )


def metr_la_registry(feed: FeedConfig) -> pd.DataFrame:
    """``graph_sensor_locations.csv`` (``index,sensor_id,latitude,longitude``) -> registry frame of points.

    Coordinates are WGS84 degrees unless the feed declares option ``registry_crs`` (e.g.
    ``"EPSG:2229"``): then ``longitude``/``latitude`` hold x/y in that CRS and are
    reprojected.
    """
    return _csv_point_registry(feed, "sensor_id", "longitude", "latitude")


def _csv_point_registry(feed: FeedConfig, id_column: str, lon_column: str, lat_column: str) -> pd.DataFrame:
    """A registry CSV of points (one row per sensor) -> landing registry frame; other columns -> attributes.

    A blank coordinate leaves the source without geometry (rejected by ingest as
    ``missing_geometry``); a coordinate that is not a number refuses the file.
    """
    path = resolve_files(feed.path("registry"), CSV_SUFFIXES)[0]
    file = str(path)
    raw = _registry_csv(feed, path, {id_column: "string"})
    require_columns(raw, [id_column, lat_column, lon_column], file)
    lon = numeric_column(raw[lon_column], file=file, column=lon_column, expected="WGS84 longitude in degrees")
    lat = numeric_column(raw[lat_column], file=file, column=lat_column, expected="WGS84 latitude in degrees")
    lon, lat = _declared_crs_points(feed, lon, lat, file)
    rest = raw.drop(columns=[id_column, lat_column, lon_column])
    return pd.DataFrame(
        {
            "source_id": source_ids(raw[id_column]),
            "geometry": _points(lon, lat),
            "unparsed": np.zeros(len(raw), dtype=bool),
            "attributes": _attributes_json(rest),
        }
    )


# --------------------------------------------------------------------------------------
# melbourne_pedestrian


def melbourne_pedestrian_observations(feed: FeedConfig) -> Delivery:
    """City of Melbourne hourly pedestrian counts (Parquet) -> camera landing frame.

    ``source_id`` = ``str(sensor_id)``, ``timestamp`` = ``ts_local`` as delivered (naive
    Australia/Melbourne wall-clock time; the contract's DST rule turns it into UTC at
    validation), ``interval_s`` = 3600 (or option ``interval_s``), ``pedestrian`` = ``count``.

    The delivery is a regular 24 rows per local day and sensor, whatever the wall clock did:

    * the repeated April hour (02:00 twice) is delivered once per sensor: by the contract that
      one row is the summer-time (DST) instant, and the standard-time hour after it is absent;
    * the skipped October hour (02:00 that never existed) is delivered, with 0 for every
      sensor: validation quarantines it as ``nonexistent_local_time``, never a zero count.

    The source writes -1 for an hour it did not count: that is a missing marker (null count,
    ``marked``: quarantined as ``marked_missing``), as is a null (``all_values_null``); never
    a zero. The counters count the whole hour, so ``uptime`` is 1 where a count was delivered
    (rasterize's uptime correction leaves it unchanged) and null where none was; ``car``,
    ``heavy``, ``bike`` and ``speed_kmh`` are null.

    Raises
    ------
    IngestError
        A file is unreadable or lacks one of :data:`MELBOURNE_COLUMNS`, or ``count`` is
        mostly not numbers.
    """
    parts = []
    paths: list[str] = []
    names = list(OBSERVATION_SCHEMAS["camera"].names)
    for path in resolve_files(feed.path("observations"), PARQUET_SUFFIXES):
        file = str(path)
        paths.append(file)
        raw = read_parquet(path, columns=list(MELBOURNE_COLUMNS))
        parsed = parse_numbers(raw["count"], file=file, column="count", expected="pedestrians counted in the hour")
        counts = parsed.values.copy()
        not_counted = counts == MELBOURNE_MISSING_COUNT
        counts[not_counted] = np.nan
        frame = pd.DataFrame({n: np.full(len(raw), np.nan) for n in names})
        frame["source_id"] = source_ids(raw["sensor_id"])
        frame["timestamp"] = _timestamp_column(raw["ts_local"], file=file, column="ts_local")
        frame["interval_s"] = float(feed.options.get("interval_s", 3600))
        frame["pedestrian"] = counts
        frame["uptime"] = np.where(np.isnan(counts), np.nan, 1.0)
        marked = (parsed.marker | not_counted).astype(np.int16)
        parts.append(
            _delivery(frame[names], _fault_codes(parsed.garbage), marked, _delivered_at(path), _frame_records(raw))
        )
    return _combine(parts, paths)


def melbourne_pedestrian_registry(feed: FeedConfig) -> pd.DataFrame:
    """``sensors.csv`` (``sensor_id, installed, lat, lon, name``, WGS84) -> registry frame of points.

    ``installed`` and ``name`` are kept as attributes. A sensor without a location (blank
    ``lat`` or ``lon``) has no geometry: ingest rejects it (``missing_geometry``, in
    ``rejected.parquet``) and quarantines its counts as ``unknown_source``; a coordinate that
    is not a number refuses the file (an :class:`IngestError` naming file, column and value).
    """
    return _csv_point_registry(feed, "sensor_id", "lon", "lat")


# --------------------------------------------------------------------------------------
# canonical


def canonical_observations(feed: FeedConfig) -> Delivery:
    """Canonical landing observations (CSV or Parquet; a file, a folder or a glob).

    Required: ``source_id``, ``timestamp``, and ``interval_s`` unless the feed has an
    ``interval_s`` option. Missing measurement columns (all nullable) become NaN; extra
    columns are ignored (but kept in the quarantine's delivered row). A cell that is
    not a number makes its row ``unparseable_value``; a CSV line with the wrong number
    of fields is ``wrong_field_count``.

    Raises
    ------
    IngestError
        Unreadable/truncated file, wrong delimiter, missing required column, or a
        measurement column that is mostly not numbers.
    """
    kind = feed.kind
    measurements = MEASUREMENTS[kind]
    expected = list(OBSERVATION_SCHEMAS[kind].names)
    parts = []
    paths: list[str] = []
    for path in resolve_files(feed.path("observations"), CSV_SUFFIXES + PARQUET_SUFFIXES):
        file = str(path)
        bad_line: np.ndarray
        if file_format(path) == "csv":
            text = read_csv_text(path, delimiter=_delimiter(feed))
            cells = text.matrix()
            raw = pd.DataFrame({name: pd.Series(cells[:, j], dtype="string") for j, name in enumerate(text.header)})
            bad_line = text.bad_lines()
            records = _csv_records(text, cells)
        else:
            raw = read_parquet(path)
            bad_line = np.zeros(len(raw), dtype=bool)
            records = _frame_records(raw)
        required = ["source_id", "timestamp"] + ([] if "interval_s" in feed.options else ["interval_s"])
        require_columns(raw, required, file, expected=expected)
        out: dict[str, object] = {
            "source_id": source_ids(raw["source_id"]),
            "timestamp": _timestamp_column(raw["timestamp"], file=file, column="timestamp"),
        }
        garbage = np.zeros(len(raw), dtype=bool)
        marked = np.zeros(len(raw), dtype=np.int16)
        if "interval_s" in raw.columns:
            parsed = parse_numbers(raw["interval_s"], file=file, column="interval_s", expected="seconds (int)")
            out["interval_s"] = parsed.values
            garbage |= parsed.garbage
        else:
            out["interval_s"] = np.full(len(raw), float(feed.options["interval_s"]))
        for m in measurements:
            if m in raw.columns:
                parsed = parse_numbers(raw[m], file=file, column=m)
                out[m] = parsed.values
                garbage |= parsed.garbage
                marked += parsed.marker
            else:
                out[m] = np.full(len(raw), np.nan)
        fault = _fault_codes(garbage)
        fault[bad_line] = "wrong_field_count"
        frame = pd.DataFrame(out)
        if not pd.api.types.is_datetime64_any_dtype(frame["timestamp"].dtype):
            frame["timestamp"] = frame["timestamp"].astype("string")
        parts.append(_delivery(frame[expected], fault, marked, _delivered_at(path), records))
        paths.append(file)
    delivery = _combine(parts, paths)
    if len(parts) > 1 and not pd.api.types.is_datetime64_any_dtype(delivery.frame["timestamp"].dtype):
        delivery.frame["timestamp"] = delivery.frame["timestamp"].astype("string")
    return delivery


def canonical_registry(feed: FeedConfig) -> pd.DataFrame:
    """Canonical registry: CSV with ``lon``/``lat`` or ``geometry`` (WKT/WKB/GeoJSON), GeoJSON or GeoParquet.

    Every column other than ``source_id`` and the geometry is kept in ``attributes``.
    GeoJSON/GeoParquet in another CRS are reprojected to WGS84. A CSV (or a vector file
    without a CRS) is WGS84 unless the feed declares option ``registry_crs`` (any CRS
    pyproj knows, e.g. ``"EPSG:25833"``): then ``lon``/``lat`` (x/y) or ``geometry`` are
    in that CRS and are reprojected.

    Raises
    ------
    IngestError
        Unreadable file, no ``source_id`` column, or no geometry columns.
    """
    frames = []
    for path in resolve_files(feed.path("registry"), CSV_SUFFIXES + PARQUET_SUFFIXES + (".geojson", ".json", ".gpkg")):
        frames.append(_canonical_registry_file(feed, path))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _canonical_registry_file(feed: FeedConfig, path) -> pd.DataFrame:
    import geopandas as gpd

    file = str(path)
    name = file.lower()
    raw: pd.DataFrame
    if name.endswith((".geojson", ".json", ".gpkg")):
        try:
            raw = gpd.read_file(file if path.protocol in ("", "file", "local") else path.open("rb"))
        except Exception as exc:
            raise IngestError(f"cannot read {file} as a vector file: {exc}", file=file) from exc
    elif name.endswith(PARQUET_SUFFIXES):
        try:
            with path.open("rb") as fh:
                raw = gpd.read_parquet(fh)
        except (ValueError, KeyError):  # plain parquet without geo metadata
            raw = read_parquet(path)
        except Exception as exc:
            raise IngestError(f"cannot read {file} as Parquet: {exc}", file=file) from exc
    else:
        raw = _registry_csv(feed, path, {"source_id": "string", "geometry": "string"})
    expected = ["source_id", "lon", "lat"]
    require_columns(raw, ["source_id"], file, expected=expected)
    if isinstance(raw, gpd.GeoDataFrame) and raw.geometry.name in raw.columns:
        gcol = raw.geometry.name
        gs = raw.geometry
        if gs.crs is None and "registry_crs" in feed.options:
            gs = gs.set_crs(_registry_crs(feed, file))
        if gs.crs is not None and not gs.crs.equals("EPSG:4326"):
            gs = gs.to_crs(4326)
        geometry = np.array(gs.array, dtype=object)
        geometry[pd.isna(geometry)] = None
        unparsed = np.zeros(len(raw), dtype=bool)
        drop = ["source_id", gcol]
    elif "lon" in raw.columns and "lat" in raw.columns:
        lon = numeric_column(raw["lon"], file=file, column="lon", expected="WGS84 longitude in degrees")
        lat = numeric_column(raw["lat"], file=file, column="lat", expected="WGS84 latitude in degrees")
        lon, lat = _declared_crs_points(feed, lon, lat, file)
        geometry, unparsed = _points(lon, lat), np.zeros(len(raw), dtype=bool)
        drop = ["source_id", "lon", "lat"]
    elif "geometry" in raw.columns:
        geometry, unparsed = _parse_geometry(raw["geometry"])
        if "registry_crs" in feed.options:
            geometry = _declared_crs_geometry(feed, geometry, file)
        drop = ["source_id", "geometry"]
    else:
        raise IngestError(
            f"{file}: missing column `lon`/`lat` or `geometry`; expected `lon` and `lat` (WGS84 degrees) "
            f"or `geometry` (WKT/WKB/GeoJSON); found {[str(c) for c in raw.columns]}",
            file=file,
            column="geometry",
        )
    rest = pd.DataFrame(raw.drop(columns=drop))
    return pd.DataFrame(
        {
            "source_id": source_ids(raw["source_id"]),
            "geometry": geometry,
            "unparsed": unparsed,
            "attributes": _attributes_json(rest),
        }
    )


def _registry_csv(feed: FeedConfig, path: Any, dtype: dict[str, str]) -> pd.DataFrame:
    """A registry CSV through pandas, after the delimiter/truncation checks of :func:`read_csv_text`."""
    delimiter = _delimiter(feed, "registry_csv_delimiter")
    read_csv_text(path, delimiter=delimiter, option="registry_csv_delimiter")
    return read_csv(path, dtype=dtype, sep=delimiter, encoding="utf-8-sig")


def _registry_crs(feed: FeedConfig, file: str) -> Any:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    value = feed.options["registry_crs"]
    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise IngestError(
            f"{file}: feed {feed.name!r} option `registry_crs` = {value!r} is not a CRS pyproj knows; "
            "expected e.g. 'EPSG:25833' or 'EPSG:4326'",
            file=file,
            column="registry_crs",
            value=str(value),
            allowed="an EPSG code or CRS string pyproj knows",
        ) from exc


def _declared_crs_points(feed: FeedConfig, x: np.ndarray, y: np.ndarray, file: str) -> tuple[np.ndarray, np.ndarray]:
    """x/y in the feed's declared ``registry_crs`` -> WGS84 lon/lat (unchanged without the option)."""
    if "registry_crs" not in feed.options:
        return x, y
    from pyproj import Transformer

    tr = Transformer.from_crs(_registry_crs(feed, file), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def _geojson_crs(doc: Any, file: str) -> Any:
    """The CRS a GeoJSON document's legacy ``crs`` member names (pyproj), or None without one.

    RFC 7946 GeoJSON is WGS84 lon/lat and has no ``crs`` member; older files (GeoJSON 2008, GDAL
    exports) name their CRS in it, and their coordinates are in that CRS.

    Raises
    ------
    IngestError
        A ``crs`` member pyproj cannot read.
    """
    member = doc.get("crs") if isinstance(doc, dict) else None
    if not member:
        return None
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    name = (member.get("properties") or {}).get("name") if isinstance(member, dict) else None
    try:
        return CRS.from_user_input(name)
    except (CRSError, TypeError) as exc:
        raise IngestError(
            f"{file}: the GeoJSON `crs` member {json.dumps(member)[:200]} names no CRS pyproj knows; expected "
            "e.g. {'type': 'name', 'properties': {'name': 'urn:ogc:def:crs:EPSG::25833'}}, or no member "
            "(RFC 7946: WGS84 lon/lat)",
            file=file,
            column="crs",
            value=str(member)[:200],
            allowed="a named CRS pyproj knows, or no `crs` member",
        ) from exc


def _declared_crs_geometry(feed: FeedConfig, geometry: np.ndarray, file: str, crs: Any = None) -> np.ndarray:
    """Geometries in ``crs`` (default: the feed's ``registry_crs``) -> WGS84 lon/lat."""
    from pyproj import Transformer

    tr = Transformer.from_crs(crs if crs is not None else _registry_crs(feed, file), "EPSG:4326", always_xy=True)
    out = geometry.copy()
    ok = ~pd.isna(out)
    if ok.any():
        out[ok] = shapely.transform(
            out[ok].astype(object), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
        )
    return out


def _points(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    ok = np.isfinite(lon) & np.isfinite(lat)
    out = np.full(len(lon), None, dtype=object)
    out[ok] = shapely.points(lon[ok], lat[ok])
    return out


def _parse_geometry(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse WKB bytes, GeoJSON text or WKT text (vectorised); returns geometries and an unparsed mask."""
    obj = values.to_numpy(dtype=object)
    present = ~pd.isna(obj)
    out = np.full(len(obj), None, dtype=object)
    is_bytes = present & np.array([isinstance(v, bytes | bytearray | memoryview) for v in obj], dtype=bool)
    if is_bytes.any():
        out[is_bytes] = shapely.from_wkb(obj[is_bytes], on_invalid="ignore")
    text = present & ~is_bytes
    if text.any():
        s = pd.Series(obj[text], dtype="string").str.strip()
        is_json = s.str.startswith("{").to_numpy(dtype=bool)
        idx = np.flatnonzero(text)
        if is_json.any():
            out[idx[is_json]] = shapely.from_geojson(s[is_json].to_numpy(dtype=object), on_invalid="ignore")
        if (~is_json).any():
            out[idx[~is_json]] = shapely.from_wkt(s[~is_json].to_numpy(dtype=object), on_invalid="ignore")
    out[pd.isna(out)] = None
    return out, present & pd.isna(out).astype(bool)


# --------------------------------------------------------------------------------------
# dispatch

OBSERVATION_ADAPTERS: dict[str, Callable[[FeedConfig], Delivery]] = {
    "telraam": telraam_observations,
    "metr_la": metr_la_observations,
    "melbourne_pedestrian": melbourne_pedestrian_observations,
    "canonical": canonical_observations,
}
REGISTRY_ADAPTERS: dict[str, Callable[[FeedConfig], pd.DataFrame]] = {
    "telraam": telraam_registry,
    "metr_la": metr_la_registry,
    "melbourne_pedestrian": melbourne_pedestrian_registry,
    "canonical": canonical_registry,
}


def _adapter(table: dict[str, Callable[[FeedConfig], Any]], feed: FeedConfig) -> Callable[[FeedConfig], Any]:
    if feed.adapter not in table:
        raise IngestError(f"feed {feed.name!r}: unknown adapter {feed.adapter!r}; known adapters: {sorted(table)}")
    return table[feed.adapter]


def read_delivery(feed: FeedConfig) -> Delivery:
    """Read a feed's raw observation files: landing frame, row faults and the delivered values.

    Parameters
    ----------
    feed : FeedConfig
        Dispatches on ``feed.adapter``; files from ``feed.path("observations")``.

    Returns
    -------
    Delivery

    Raises
    ------
    IngestError
        File-level fault: unreadable, truncated, wrong delimiter or schema drift (message
        names file, column and what was expected). Nothing has been written.
    """
    delivery = _adapter(OBSERVATION_ADAPTERS, feed)(feed)
    names = list(OBSERVATION_SCHEMAS[feed.kind].names)
    if list(delivery.frame.columns[: len(names)]) != names:
        raise IngestError(
            f"feed {feed.name!r}: adapter {feed.adapter!r} delivers {list(delivery.frame.columns)}, "
            f"which does not match kind {feed.kind!r} ({names})"
        )
    if len(delivery.frame) == 0:
        return _delivery(_empty_landing(feed.kind), np.array([], dtype=object), np.zeros(0, np.int16), None, None)
    return delivery


def read_observations(feed: FeedConfig) -> pd.DataFrame:
    """Read a feed's raw observation files into a landing frame (see module docstring).

    Parameters
    ----------
    feed : FeedConfig
        Dispatches on ``feed.adapter``; files from ``feed.path("observations")``.

    Returns
    -------
    pandas.DataFrame
        Columns of ``OBSERVATION_SCHEMAS[feed.kind]``; timestamps not yet normalised
        (:func:`read_delivery` also gives the row faults and delivered values).

    Raises
    ------
    IngestError
        Unreadable file or schema drift (message names file, column and what was expected).
    """
    frame = read_delivery(feed).frame
    return frame[list(OBSERVATION_SCHEMAS[feed.kind].names)]


def read_feed_registry(feed: FeedConfig) -> pd.DataFrame:
    """Read a feed's raw registry file into a landing registry frame (see module docstring).

    Parameters
    ----------
    feed : FeedConfig
        Dispatches on ``feed.adapter``; file from ``feed.path("registry")``.

    Returns
    -------
    pandas.DataFrame
        ``source_id``, ``geometry`` (shapely or None, WGS84), ``unparsed``, ``attributes``.

    Raises
    ------
    IngestError
        Unreadable file or missing id/geometry columns.
    """
    return _adapter(REGISTRY_ADAPTERS, feed)(feed)
