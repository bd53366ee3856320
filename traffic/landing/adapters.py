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
    ``canonical`` the canonical landing format of :mod:`traffic.landing.contract`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import shapely

from traffic.config import FeedConfig
from traffic.landing.contract import OBSERVATION_SCHEMAS
from traffic.landing.readers import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    IngestError,
    file_format,
    numeric_column,
    read_csv,
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
# telraam


def telraam_observations(feed: FeedConfig) -> pd.DataFrame:
    """Telraam hourly parquet -> camera landing frame.

    ``source_id`` = ``str(segment_id)``, ``timestamp`` = ``date_local`` (naive
    Europe/Berlin wall-clock time, including both copies of the repeated DST hour),
    ``interval_s`` = 3600 (or option ``interval_s``), ``uptime`` as delivered,
    ``speed_kmh`` = ``v85``. Night hours Telraam did not count are absent and stay absent.

    Counts: Telraam's ``*_total`` columns are already extrapolated to the full hour (on
    the shipped data a segment's totals do not fall with its uptime). The landing
    contract wants the vehicles counted *while the camera was up*, so the adapter emits
    ``*_total * uptime``; rasterization divides by uptime again, which gives back the
    full-hour volume instead of correcting it twice. Set feed option
    ``counts_extrapolated = false`` for a Telraam export with raw counts.

    Raises
    ------
    IngestError
        A file is unreadable or lacks one of :data:`TELRAAM_COLUMNS`.
    """
    parts = []
    for path in resolve_files(feed.path("observations"), PARQUET_SUFFIXES):
        file = str(path)
        raw = read_parquet(path, columns=list(TELRAAM_COLUMNS))
        out = {
            "source_id": source_ids(raw["segment_id"]),
            "timestamp": _timestamp_column(raw["date_local"], file=file, column="date_local"),
            "interval_s": np.full(len(raw), float(feed.options.get("interval_s", 3600))),
        }
        for src, dst in TELRAAM_COLUMNS.items():
            if dst not in out:
                out[dst] = numeric_column(raw[src], file=file, column=src)
        if feed.options.get("counts_extrapolated", True):
            up = np.asarray(out["uptime"], dtype=float)
            for dst in ("car", "heavy", "bike", "pedestrian"):
                out[dst] = np.asarray(out[dst], dtype=float) * up
        parts.append(pd.DataFrame(out))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame[list(OBSERVATION_SCHEMAS["camera"].names)]


def telraam_registry(feed: FeedConfig) -> pd.DataFrame:
    """Telraam segment GeoJSON -> landing registry frame.

    Geometry is the segment (Multi)LineString in WGS84; attributes keep OSM name,
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


def metr_la_observations(feed: FeedConfig) -> pd.DataFrame:
    """METR-LA wide CSV -> sensor landing frame.

    The header row holds the sensor ids; each following row is one interval. Row ``i``
    starts at ``start_local + i * interval_s`` on the local wall clock (options
    ``start_local`` and ``interval_s``), exactly like the publisher's own regular index;
    the timezone rule of the contract then turns it into UTC. Speeds are mph and become
    ``speed_kmh``; ``count`` and ``occupancy`` are null. Blank cells stay NaN and zero
    speeds stay zero: validation quarantines them (``all_values_null``,
    ``speed_out_of_range``).

    Raises
    ------
    IngestError
        Missing options, unreadable file or a non-numeric column.
    """
    path = resolve_files(feed.path("observations"), CSV_SUFFIXES)[0]
    file = str(path)
    raw_start = str(_option(feed, "start_local", file))
    try:
        start = pd.Timestamp(raw_start)
    except ValueError as exc:
        raise IngestError(
            f"{file}: feed {feed.name!r} option `start_local` = {raw_start!r}; expected an ISO 8601 local time",
            file=file,
            column="start_local",
        ) from exc
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
        )
    header = read_csv(path, nrows=1, header=None, dtype="string", keep_default_na=False)
    ids = header.iloc[0].to_numpy(dtype=object) if len(header) else np.array([], dtype=object)
    if len(ids) == 0:
        raise IngestError(f"{file}: empty file; expected a header row of sensor ids", file=file)
    body = read_csv(path, header=None, skiprows=1, names=range(len(ids)))
    if not all(pd.api.types.is_numeric_dtype(t) for t in body.dtypes):
        for j in range(len(ids)):  # finds and names the offending column (raises)
            numeric_column(body[j], file=file, column=str(ids[j]), expected="speeds in mph")
    speeds = body.to_numpy(dtype="float64", na_value=np.nan)
    n_rows, n_cols = speeds.shape
    times = start + pd.to_timedelta(np.arange(n_rows, dtype="int64") * interval, unit="s")
    frame = pd.DataFrame(
        {
            "source_id": _repeat_ids(source_ids(pd.Series(ids, dtype="string")), np.tile(np.arange(n_cols), n_rows)),
            "timestamp": pd.Series(times.as_unit("us").repeat(n_cols)),
            "interval_s": np.full(n_rows * n_cols, float(interval)),
            "count": np.nan,
            "speed_kmh": speeds.ravel() * MPH_TO_KMH,
            "occupancy": np.nan,
        }
    )
    return frame[list(OBSERVATION_SCHEMAS["sensor"].names)]


def metr_la_registry(feed: FeedConfig) -> pd.DataFrame:
    """``graph_sensor_locations.csv`` (``index,sensor_id,latitude,longitude``) -> registry frame of points."""
    path = resolve_files(feed.path("registry"), CSV_SUFFIXES)[0]
    file = str(path)
    raw = read_csv(path, dtype={"sensor_id": "string"})
    require_columns(raw, ["sensor_id", "latitude", "longitude"], file)
    lon = numeric_column(raw["longitude"], file=file, column="longitude", expected="WGS84 longitude in degrees")
    lat = numeric_column(raw["latitude"], file=file, column="latitude", expected="WGS84 latitude in degrees")
    rest = raw.drop(columns=["sensor_id", "latitude", "longitude"])
    return pd.DataFrame(
        {
            "source_id": source_ids(raw["sensor_id"]),
            "geometry": _points(lon, lat),
            "unparsed": np.zeros(len(raw), dtype=bool),
            "attributes": _attributes_json(rest),
        }
    )


# --------------------------------------------------------------------------------------
# canonical


def _read_any(path, **csv_kwargs) -> pd.DataFrame:
    if file_format(path) == "csv":
        return read_csv(path, **csv_kwargs)
    return read_parquet(path)


def canonical_observations(feed: FeedConfig) -> pd.DataFrame:
    """Canonical landing observations (CSV or Parquet; a file, a folder or a glob).

    Required: ``source_id``, ``timestamp``, and ``interval_s`` unless the feed has an
    ``interval_s`` option. Missing measurement columns (all nullable) become NaN; extra
    columns are ignored.

    Raises
    ------
    IngestError
        Unreadable file, missing required column, or a non-numeric measurement column.
    """
    kind = feed.kind
    measurements = MEASUREMENTS[kind]
    expected = list(OBSERVATION_SCHEMAS[kind].names)
    parts = []
    for path in resolve_files(feed.path("observations"), CSV_SUFFIXES + PARQUET_SUFFIXES):
        file = str(path)
        raw = _read_any(path, dtype={"source_id": "string", "timestamp": "string"})
        required = ["source_id", "timestamp"] + ([] if "interval_s" in feed.options else ["interval_s"])
        require_columns(raw, required, file, expected=expected)
        out: dict[str, object] = {
            "source_id": source_ids(raw["source_id"]),
            "timestamp": _timestamp_column(raw["timestamp"], file=file, column="timestamp"),
        }
        if "interval_s" in raw.columns:
            out["interval_s"] = numeric_column(
                raw["interval_s"], file=file, column="interval_s", expected="seconds (int)"
            )
        else:
            out["interval_s"] = np.full(len(raw), float(feed.options["interval_s"]))
        for m in measurements:
            out[m] = numeric_column(raw[m], file=file, column=m) if m in raw.columns else np.full(len(raw), np.nan)
        parts.append(pd.DataFrame(out))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    if len(parts) > 1 and not pd.api.types.is_datetime64_any_dtype(frame["timestamp"].dtype):
        frame["timestamp"] = frame["timestamp"].astype("string")
    return frame[expected]


def canonical_registry(feed: FeedConfig) -> pd.DataFrame:
    """Canonical registry: CSV with ``lon``/``lat`` or ``geometry`` (WKT/WKB/GeoJSON), GeoJSON or GeoParquet.

    Every column other than ``source_id`` and the geometry is kept in ``attributes``.
    GeoJSON/GeoParquet in another CRS are reprojected to WGS84.

    Raises
    ------
    IngestError
        Unreadable file, no ``source_id`` column, or no geometry columns.
    """
    frames = []
    for path in resolve_files(feed.path("registry"), CSV_SUFFIXES + PARQUET_SUFFIXES + (".geojson", ".json", ".gpkg")):
        frames.append(_canonical_registry_file(path))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _canonical_registry_file(path) -> pd.DataFrame:
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
        raw = read_csv(path, dtype={"source_id": "string", "geometry": "string"})
    expected = ["source_id", "lon", "lat"]
    require_columns(raw, ["source_id"], file, expected=expected)
    if isinstance(raw, gpd.GeoDataFrame) and raw.geometry.name in raw.columns:
        gcol = raw.geometry.name
        gs = raw.geometry
        if gs.crs is not None and not gs.crs.equals("EPSG:4326"):
            gs = gs.to_crs(4326)
        geometry = np.array(gs.array, dtype=object)
        geometry[pd.isna(geometry)] = None
        unparsed = np.zeros(len(raw), dtype=bool)
        drop = ["source_id", gcol]
    elif "lon" in raw.columns and "lat" in raw.columns:
        lon = numeric_column(raw["lon"], file=file, column="lon", expected="WGS84 longitude in degrees")
        lat = numeric_column(raw["lat"], file=file, column="lat", expected="WGS84 latitude in degrees")
        geometry, unparsed = _points(lon, lat), np.zeros(len(raw), dtype=bool)
        drop = ["source_id", "lon", "lat"]
    elif "geometry" in raw.columns:
        geometry, unparsed = _parse_geometry(raw["geometry"])
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

OBSERVATION_ADAPTERS: dict[str, Callable[[FeedConfig], pd.DataFrame]] = {
    "telraam": telraam_observations,
    "metr_la": metr_la_observations,
    "canonical": canonical_observations,
}
REGISTRY_ADAPTERS: dict[str, Callable[[FeedConfig], pd.DataFrame]] = {
    "telraam": telraam_registry,
    "metr_la": metr_la_registry,
    "canonical": canonical_registry,
}


def _adapter(
    table: dict[str, Callable[[FeedConfig], pd.DataFrame]], feed: FeedConfig
) -> Callable[[FeedConfig], pd.DataFrame]:
    if feed.adapter not in table:
        raise IngestError(f"feed {feed.name!r}: unknown adapter {feed.adapter!r}; known adapters: {sorted(table)}")
    return table[feed.adapter]


def read_observations(feed: FeedConfig) -> pd.DataFrame:
    """Read a feed's raw observation files into a landing frame (see module docstring).

    Parameters
    ----------
    feed : FeedConfig
        Dispatches on ``feed.adapter``; files from ``feed.path("observations")``.

    Returns
    -------
    pandas.DataFrame
        Columns of ``OBSERVATION_SCHEMAS[feed.kind]``; timestamps not yet normalised.

    Raises
    ------
    IngestError
        Unreadable file or schema drift (message names file, column and what was expected).
    """
    frame = _adapter(OBSERVATION_ADAPTERS, feed)(feed)
    if feed.adapter != "canonical" and list(frame.columns) != list(OBSERVATION_SCHEMAS[feed.kind].names):
        raise IngestError(
            f"feed {feed.name!r}: adapter {feed.adapter!r} delivers {list(frame.columns)}, "
            f"which does not match kind {feed.kind!r} ({list(OBSERVATION_SCHEMAS[feed.kind].names)})"
        )
    return frame if len(frame) else _empty_landing(feed.kind)


def read_registry(feed: FeedConfig) -> pd.DataFrame:
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
