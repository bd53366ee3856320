"""Ingest entry points: raw files -> registry, observations, quarantine and quality partitions.

The work is: read (adapter) -> normalise timestamps to UTC and validate
(:mod:`traffic.ingest.validate`) -> split by the row's *local* calendar date -> write.
Everything up to the split is vectorised over the whole delivery; the split sorts once
and slices. Writes go through :mod:`traffic.lake`, one whole partition at a time.

Lake outputs (hive keys ``city=``, ``feed=``, ``date=`` = local date)::

    registry/.../registry.parquet     GeoParquet (GeoPandas), REGISTRY_SCHEMA, EPSG:4326, metadata ``version``
    registry/.../rejected.parquet     sources kept out (REJECTED_SCHEMA, with reason)
    observations/.../part.parquet     accepted rows, OBSERVATION_SCHEMAS[kind], sorted (source_id, timestamp)
    quarantine/.../part.parquet       QUARANTINE_SCHEMA (reason + the row as delivered, JSON)
    quality/.../report.json           counts per partition

Rows whose timestamp is missing or unparseable have no local date: they go to the
quarantine and quality partitions ``date=undated`` (written only when there are any).

A quarantine row keeps the delivered values *as delivered* (``row``: the delivered
fields under their delivered names, CSV cells as text, Parquet values as stored, ``inf``
as ``"inf"``, plus ``_line`` for a CSV), never the converted landing values (no km/h, no
counts x uptime). A file-level fault (unreadable, truncated, wrong delimiter, schema
drift, a line count that does not fit a timestamp-less feed) raises
:class:`~traffic.landing.readers.IngestError` before anything is written.

Temporary files that a killed run left in the feed's partitions are removed when the
next run starts (:func:`traffic.tempfiles.sweep_folder`).

**Only what is new.** Each day's report records two digests: ``source_digest``, of the delivered
bytes of the feed's observation files (:func:`source_digest`: every file's name and SHA-256, the
lake registry's version, the settings the checks read and the ingest code), and
``content_digest``, of what the day's partitions hold (:func:`content_digest`). When every day
asked for has partitions whose report has the current ``source_digest`` (a complete day), the
delivery is not even read: the stored reports are returned. Otherwise the delivery is read and
checked, and a day whose ``content_digest`` is unchanged is not written again (a new file in a
landing folder writes only its days; a re-delivered day with other bytes is rewritten whole,
atomically as always). Either way the log says ``N day(s) already in the lake, M new``, and each
returned report has ``unchanged``.

Partial days (``until``, see :mod:`traffic.intraday`): only rows with a timestamp before
``until`` are kept, as if the feed had delivered nothing later yet. A day that ``until``
ends early is *partial*: its report has ``until`` (ISO UTC; None for a complete day) and
``partial: true``, and its observation partition carries ``until`` in the Parquet metadata.
Re-ingesting the day with a later ``until`` (or none) replaces all three partitions. The
report of a partial day is written *before* its data and the report of a complete day
*after* it, so a run killed in between leaves a report that claims at most what the data
hold: the freshness gate can be left too cautious, never fooled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from traffic import intraday
from traffic.config import CityConfig, FeedConfig
from traffic.errors import UsageError
from traffic.grid.rasterize import feed_day_problem
from traffic.ingest.bulk import check_bins, check_quarantine_share, check_sources_in_box, max_quarantined_share
from traffic.ingest.validate import (
    REASONS,
    REGISTRY_REASONS,
    check_observations,
    check_registry,
    normalise_timestamps,
    timestamp_us,
)
from traffic.lake import Lake, write_geoparquet, write_table
from traffic.landing.adapters import read_delivery, read_feed_registry, read_observations
from traffic.landing.contract import OBSERVATION_SCHEMAS, QUARANTINE_SCHEMA, REGISTRY_SCHEMA, TS_TYPE
from traffic.landing.readers import IngestError
from traffic.tempfiles import sweep_folder

if TYPE_CHECKING:
    import geopandas as gpd

#: Sources kept out of the registry, and why.
REJECTED_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("reason", pa.string()),
        ("geometry_wkt", pa.string()),
        ("attributes", pa.string()),
    ]
)
#: ``date=`` key of quarantined rows that have no local date (missing/unparseable timestamp).
UNDATED = "undated"
REGISTRY_FILE = "registry.parquet"
REJECTED_FILE = "rejected.parquet"
#: Default of feed option ``registry_max_rejected_share``: a registry losing more than this fails ingest.
REGISTRY_MAX_REJECTED_SHARE = 0.5

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# registry


def registry_tables(frame: pd.DataFrame) -> tuple[pa.Table, pa.Table, str]:
    """Split a landing registry frame into kept and rejected tables and compute the version.

    Parameters
    ----------
    frame : pandas.DataFrame
        Landing registry frame (see :mod:`traffic.landing.adapters`).

    Returns
    -------
    registry : pyarrow.Table
        :data:`REGISTRY_SCHEMA`, sorted by ``source_id``, 2-D little-endian WKB.
    rejected : pyarrow.Table
        :data:`REJECTED_SCHEMA`, sorted by ``source_id`` then reason.
    version : str
        16 hex digits of a SHA-256 over the registry content.
    """
    reasons = check_registry(frame)
    ok = reasons.isna().to_numpy(dtype=bool)
    kept = frame.loc[ok].sort_values("source_id", kind="stable")
    geoms = kept["geometry"].to_numpy(dtype=object)
    wkb = (
        shapely.to_wkb(geoms, output_dimension=2, byte_order=1, include_srid=False)
        if len(geoms)
        else np.array([], dtype=object)
    )
    ids = kept["source_id"].to_numpy(dtype=object, na_value=None)
    attrs = kept["attributes"].to_numpy(dtype=object)
    registry = pa.table(
        [pa.array(ids, pa.string()), pa.array(list(wkb), pa.binary()), pa.array(attrs, pa.string())],
        schema=REGISTRY_SCHEMA,
    )
    digest = hashlib.sha256()
    digest.update(json.dumps([ids.tolist(), [w.hex() for w in wkb], attrs.tolist()]).encode())
    bad = (
        frame.loc[~ok]
        .assign(reason=reasons[~ok])
        .sort_values(["source_id", "reason"], kind="stable", na_position="first")
    )
    bad_geoms = bad["geometry"].to_numpy(dtype=object)
    wkt = shapely.to_wkt(bad_geoms) if len(bad) else np.array([], dtype=object)
    rejected = pa.table(
        [
            pa.array(bad["source_id"].to_numpy(dtype=object, na_value=None), pa.string()),
            pa.array(bad["reason"].to_numpy(dtype=object, na_value=None), pa.string()),
            pa.array(list(wkt), pa.string()),
            pa.array(bad["attributes"].to_numpy(dtype=object), pa.string()),
        ],
        schema=REJECTED_SCHEMA,
    )
    return registry, rejected, digest.hexdigest()[:16]


def registry_frame(registry: pa.Table) -> gpd.GeoDataFrame:
    """The kept sources of :func:`registry_tables` as a GeoDataFrame in EPSG:4326 (what the lake stores).

    Parameters
    ----------
    registry : pyarrow.Table
        :data:`REGISTRY_SCHEMA` rows (WKB geometry).

    Returns
    -------
    geopandas.GeoDataFrame
        ``source_id``, ``geometry``, ``attributes``, in that order.
    """
    import geopandas as gpd

    return gpd.GeoDataFrame(
        {
            "source_id": registry.column("source_id").to_numpy(zero_copy_only=False),
            "geometry": shapely.from_wkb(registry.column("geometry").to_numpy(zero_copy_only=False)),
            "attributes": registry.column("attributes").to_numpy(zero_copy_only=False),
        },
        geometry="geometry",
        crs="EPSG:4326",
    )


def ingest_registry(city: CityConfig, feed: FeedConfig, *, lake: Lake | None = None) -> dict[str, Any]:
    """Read a feed's registry, keep the valid sources and write them to the lake.

    Writes ``registry/city=/feed=/registry.parquet``: GeoParquet written by GeoPandas
    (:func:`traffic.lake.write_geoparquet`; columns of :data:`REGISTRY_SCHEMA`, WKB in
    EPSG:4326), the content digest under metadata key ``version``; and ``rejected.parquet``
    next to it (sources with a missing, empty, invalid, unsupported or out-of-range
    geometry, a missing id, or a repeated id). This is the one writer of the registry
    partition; :func:`ingest_range` calls it when the partition is absent.

    Parameters
    ----------
    city : CityConfig
    feed : FeedConfig
    lake : Lake, optional
        The lake to write; default :meth:`Lake.from_config`.

    Returns
    -------
    dict
        ``path``, ``version``, ``n_sources``, ``n_invalid``, ``rejected_path``,
        ``by_reason`` (rejections per reason).

    Raises
    ------
    IngestError
        The registry file is unreadable or lacks id/geometry columns, or it loses more
        than feed option ``registry_max_rejected_share`` (default
        :data:`REGISTRY_MAX_REJECTED_SHARE`) of its sources (:func:`check_registry_loss`);
        nothing is written then and the lake keeps the previous registry.
    """
    frame = read_feed_registry(feed)
    registry, rejected, version = registry_tables(frame)
    check_registry_loss(feed, registry, rejected)
    geoms = shapely.from_wkb(registry.column("geometry").to_numpy(zero_copy_only=False))
    check_sources_in_box(
        feed.path("registry"), geoms, city.bbox, city.source or city.name, crs_source=registry_crs_source(feed)
    )
    store = lake if lake is not None else Lake.from_config()
    folder = store.partition("registry", city=city.name, feed=feed.name)
    sweep_folder(folder)
    path = write_geoparquet(
        registry_frame(registry),
        folder / REGISTRY_FILE,
        schema=REGISTRY_SCHEMA,
        metadata={"version": version, "crs": "EPSG:4326", "adapter": feed.adapter},
    )
    rejected_path = write_table(rejected, folder / REJECTED_FILE, metadata={"registry_version": version})
    reasons = rejected.column("reason").to_pylist()
    return {
        "path": str(path),
        "version": version,
        "n_sources": registry.num_rows,
        "n_invalid": rejected.num_rows,
        "rejected_path": str(rejected_path),
        "by_reason": {r: reasons.count(r) for r in sorted(set(reasons))},
    }


def _max_rejected_share(feed: FeedConfig) -> float:
    raw = feed.options.get("registry_max_rejected_share", REGISTRY_MAX_REJECTED_SHARE)
    try:
        share = float(raw)
    except (TypeError, ValueError):
        share = -1.0
    if not 0 <= share <= 1:
        raise IngestError(
            f"feed {feed.name!r}: option `registry_max_rejected_share` = {raw!r}; expected a number from 0 to 1",
            file=feed.path("registry"),
            column="registry_max_rejected_share",
            value=str(raw),
            allowed="a number from 0 to 1",
        )
    return share


def registry_crs_source(feed: FeedConfig) -> str | None:
    """Where the CRS the registry was read in came from, in words; None when it was taken as WGS84 by default.

    ``"the feed's option `registry_crs` = 'EPSG:2229'"``, or ``"the CRS its file declares (EPSG:4326)"``
    for a GeoJSON ``crs`` member / GeoParquet or GeoPackage metadata (which wins over the option).
    Never raises: a file that cannot be inspected counts as declaring nothing.
    """
    try:
        from traffic.landing.readers import resolve_files

        for path in resolve_files(feed.path("registry"), (".geojson", ".json", ".gpkg", ".parquet", ".geoparquet")):
            name = str(path).lower()
            crs = None
            if name.endswith((".geojson", ".json")):  # RFC 7946: WGS84 unless a (legacy) `crs` member says otherwise
                import json

                with path.open("rb") as fh:
                    member = json.load(fh).get("crs")
                crs = (member or {}).get("properties", {}).get("name") if isinstance(member, dict) else None
            elif name.endswith(".gpkg") and path.protocol in ("", "file", "local"):
                import pyogrio

                crs = pyogrio.read_info(str(path)).get("crs")
            elif name.endswith((".parquet", ".geoparquet")):
                import json

                import pyarrow.parquet as pq

                with path.open("rb") as fh:
                    geo = (pq.read_schema(fh).metadata or {}).get(b"geo")
                if geo:
                    meta = json.loads(geo)
                    col = meta.get("columns", {}).get(meta.get("primary_column", "geometry"), {})
                    if col.get("crs"):
                        from pyproj import CRS

                        crs = CRS.from_user_input(col["crs"]).to_string()
            if crs:
                return f"the CRS its file declares ({crs}: a GeoJSON `crs` member or the file's geo metadata)"
    except Exception:  # a hint must never fail an ingest
        pass
    if "registry_crs" in feed.options:
        return f"the feed's option `registry_crs` = {feed.options['registry_crs']!r}"
    return None


def registry_hint(rejected: pa.Table, crs_source: str | None = None) -> str:
    """What most likely went wrong with a registry, from its rejected sources (empty if nothing specific).

    Parameters
    ----------
    rejected : pyarrow.Table
        :data:`REJECTED_SCHEMA` rows.
    crs_source : str, optional
        Where the CRS the coordinates were read in came from (:func:`registry_crs_source`); None
        when they were taken as WGS84. A declared CRS is never told to be declared: it is named
        as the likely fault.

    Returns
    -------
    str
    """
    reasons = rejected.column("reason").to_pylist()
    if not reasons:
        return ""
    top = max(set(reasons), key=reasons.count)
    if top == "out_of_bounds":
        wkt = [w for w, r in zip(rejected.column("geometry_wkt").to_pylist(), reasons, strict=True) if r == top and w]
        geoms = shapely.from_wkt(np.array(wkt, dtype=object), on_invalid="ignore")
        b = shapely.bounds(geoms)
        b = b[np.isfinite(b).all(axis=1)]
        if len(b):
            x, y = float(np.median(b[:, 0])), float(np.median(b[:, 1]))
            if abs(x) > 360 or abs(y) > 360:
                if crs_source is not None:
                    return (
                        f"coordinates look projected (e.g. x={x:.1f}, y={y:.1f}, metres rather than degrees) although "
                        f"the registry was read in {crs_source}: that CRS is not the one the coordinates are in; "
                        "correct it (in the file, or the option) to the CRS they were delivered in"
                    )
                return (
                    f"coordinates look projected (e.g. x={x:.1f}, y={y:.1f}, metres rather than degrees) and "
                    "nothing declares their CRS: deliver GeoParquet/GeoJSON whose CRS says so, or declare "
                    "`registry_crs` (e.g. 'EPSG:25833') in the feed's [feeds.options]"
                )
            if abs(x) <= 90 and abs(y) <= 180:
                return f"longitude and latitude look swapped (e.g. lon={x:.5f}, lat={y:.5f}): swap the two columns"
        if crs_source is not None:
            return (
                f"coordinates are outside WGS84 degrees (lon -180..180, lat -90..90) once read in {crs_source}: "
                "check that it is the CRS the coordinates are delivered in"
            )
        return "coordinates are outside WGS84 degrees (lon -180..180, lat -90..90)"
    if top == "missing_geometry":
        return "the geometry is empty for most sources: check the lon/lat (or geometry) columns are filled"
    if top in ("invalid_geometry", "empty_geometry"):
        return "most geometries cannot be parsed: deliver WKT, WKB or GeoJSON geometries in WGS84"
    if top == "unsupported_geometry_type":
        return "sources must be points or (multi)lines, not polygons"
    if top == "duplicate_source_id":
        return "most source ids repeat: check the id column is the detector/segment id"
    if top == "missing_source_id":
        return "the source_id column is empty for most sources"
    return ""


def check_registry_loss(feed: FeedConfig, registry: pa.Table, rejected: pa.Table) -> None:
    """Refuse a registry that loses more than the feed's allowed share of its sources.

    Parameters
    ----------
    feed : FeedConfig
        Option ``registry_max_rejected_share`` (default :data:`REGISTRY_MAX_REJECTED_SHARE`).
    registry, rejected : pyarrow.Table
        Kept and rejected sources (:func:`registry_tables`).

    Raises
    ------
    IngestError
        Names the registry file, the rejections per reason, examples and a hint.
    """
    total = registry.num_rows + rejected.num_rows
    share = _max_rejected_share(feed)
    if total == 0:
        raise IngestError(
            f"{feed.path('registry')}: the registry has no sources; expected at least one",
            file=feed.path("registry"),
        )
    if rejected.num_rows <= share * total:
        return
    reasons = rejected.column("reason").to_pylist()
    counts = {r: reasons.count(r) for r in REGISTRY_REASONS if r in reasons}
    ids = [i for i in rejected.column("source_id").to_pylist()[:3]]
    hint = registry_hint(rejected, registry_crs_source(feed))
    file = feed.path("registry")
    raise IngestError(
        f"{file}: registry rejects {rejected.num_rows} of {total} sources "
        f"({rejected.num_rows / total:.0%}, more than the allowed {share:.0%} of option "
        f"`registry_max_rejected_share`): {counts}, e.g. source ids {ids}" + (f"; {hint}" if hint else ""),
        file=file,
        column="geometry" if "out_of_bounds" in counts or "missing_geometry" in counts else None,
        value=str(counts),
        allowed=f"at most {share:.0%} of the sources rejected",
    )


def registry_sources(city: CityConfig, feed: FeedConfig, *, lake: Lake | None = None) -> tuple[np.ndarray, str]:
    """Source ids and version of the feed's lake registry (a read: it never writes).

    Parameters
    ----------
    city : CityConfig
    feed : FeedConfig
    lake : Lake, optional
        The lake to read; default :meth:`Lake.from_config`.

    Returns
    -------
    ids : numpy.ndarray
        ``source_id`` of every kept source.
    version : str
        The registry's ``version`` metadata.

    Raises
    ------
    FileNotFoundError
        The registry partition is missing; the message names it and the command that writes it.
    """
    target = (lake if lake is not None else Lake.from_config()).partition(
        "registry", city=city.name, feed=feed.name
    ) / REGISTRY_FILE
    if not target.exists():
        raise FileNotFoundError(
            f"registry partition {target} does not exist: the ingest stage writes it "
            f"(`traffic ingest {city.name}`, or traffic.ingest.ingest_registry(city, feed {feed.name!r}))"
        )
    with target.open("rb") as fh:
        pf = pq.ParquetFile(fh)
        version = (pf.schema_arrow.metadata or {}).get(b"version", b"").decode()
        ids = pf.read(columns=["source_id"]).column("source_id").to_numpy(zero_copy_only=False)
    return ids, version


# --------------------------------------------------------------------------------------
# observations: pure helpers


def _dates(start: str, end: str) -> list[str]:
    try:
        first, last = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError as exc:
        raise UsageError(f"dates must be YYYY-MM-DD; got start={start!r}, end={end!r}") from exc
    if first != first.normalize() or last != last.normalize() or first.tzinfo or last.tzinfo:
        raise UsageError(f"dates must be plain local calendar dates YYYY-MM-DD; got start={start!r}, end={end!r}")
    if last < first:
        raise UsageError(f"end {end!r} is before start {start!r}")
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(first, last, freq="D")]


def _observation_table(checked: pd.DataFrame, kind: str) -> pa.Table:
    """Every row of a checked frame in the normalised observation schema (invalid values included)."""
    schema = OBSERVATION_SCHEMAS[kind]
    cols = []
    for fld in schema:
        if fld.name == "source_id":
            cols.append(pa.array(checked["source_id"].array).cast(pa.string()))
        elif fld.name == "timestamp":
            cols.append(
                pa.array(
                    checked["timestamp"].dt.tz_localize(None).dt.as_unit("us").to_numpy(), TS_TYPE, from_pandas=True
                )
            )
        elif fld.name == "interval_s":
            v = checked["interval_s"].to_numpy(dtype="float64", na_value=np.nan)
            ok = np.isfinite(v) & (np.abs(v) < 2**31)
            cols.append(pa.array(np.where(ok, v, 0).astype(np.int32), pa.int32(), mask=~ok))
        else:
            v = checked[fld.name].to_numpy(dtype="float64", na_value=np.nan)
            cols.append(pa.array(v, pa.float64(), from_pandas=True))
    return pa.table(cols, schema=schema)


#: What the ingest's output depends on besides the delivery: its code (:func:`traffic.provenance.code_digest`).
INGEST_CODE = ("ingest", "landing", "intraday.py")


def source_digest(city: CityConfig, feed: FeedConfig, registry_version: str) -> str:
    """16 hex digits over the delivered bytes of a feed and what turns them into partitions.

    Every observation file behind ``feed.path("observations")`` (a file, a landing folder's files,
    a glob's matches: name and SHA-256 of its bytes, not its modification time), the lake
    registry's version, the city and feed settings the checks read, and the ingest code.
    """
    from traffic.landing.readers import resolve_files
    from traffic.provenance import code_digest

    digest = hashlib.sha256()
    for f in resolve_files(feed.path("observations"), ("",)):
        with f.open("rb") as fh:
            digest.update(f.name.encode() + b"\0" + hashlib.file_digest(fh, "sha256").digest())  # type: ignore[arg-type]
    settings = {
        "registry_version": registry_version,
        "timezone": city.timezone,
        "bin_seconds": city.bin_seconds,
        "bbox": list(city.bbox),
        "plausibility": [dict(city.plausibility.max_per_hour), city.plausibility.max_speed_kmh],
        "feed": [feed.adapter, feed.kind, dict(feed.options)],
        "code": code_digest(*INGEST_CODE),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def content_digest(accepted: pa.Table, quarantined: pa.Table, version: str, until: pd.Timestamp | None) -> str:
    """16 hex digits over what a day's partitions hold: the accepted and quarantined rows, registry, ``until``."""
    digest = hashlib.sha256(json.dumps([version, intraday.iso(until)]).encode())
    for table in (accepted, quarantined):
        digest.update(str(table.schema.remove_metadata()).encode())
        digest.update(pd.util.hash_pandas_object(table.to_pandas(), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def stored_reports(city: CityConfig, feed: FeedConfig, days: list[str], *, lake: Lake | None = None) -> list[dict]:
    """The quality reports the lake holds for ``days`` of a feed (days without one are left out), with their paths."""
    store = lake if lake is not None else Lake.from_config()
    keys = {"city": city.name, "feed": feed.name}
    out = []
    for day in days:
        report_path = store.partition("quality", **keys, date=day) / "report.json"
        if not report_path.exists():
            continue
        obs = store.partition("observations", **keys, date=day) / "part.parquet"
        qua = store.partition("quarantine", **keys, date=day) / "part.parquet"
        out.append(
            {
                **store.read_json(report_path),
                "observations_path": str(obs) if obs.exists() else None,
                "quarantine_path": str(qua) if qua.exists() else None,
                "report_path": str(report_path),
            }
        )
    return out


def _iso(us: int | None) -> str | None:
    return None if us is None else pd.Timestamp(us, unit="us", tz="UTC").isoformat()


def _report(
    city: CityConfig,
    feed: FeedConfig,
    date: str,
    accepted: pa.Table,
    quarantined: pa.Table,
    version: str,
    until: pd.Timestamp | None = None,
    marked: int = 0,
) -> dict[str, Any]:
    reasons = pd.Series(quarantined.column("reason").to_numpy(zero_copy_only=False), dtype="string").value_counts()
    ts = accepted.column("timestamp").cast(pa.int64()).to_numpy()
    report = {
        "city": city.name,
        "feed": feed.name,
        "adapter": feed.adapter,
        "date": date,
        "timezone": city.timezone,
        "rows_read": accepted.num_rows + quarantined.num_rows,
        "rows_accepted": accepted.num_rows,
        "rows_quarantined": quarantined.num_rows,
        "by_reason": {code: int(reasons.get(code, 0)) for code in REASONS},
        "values_marked_missing": int(marked),
        "n_sources": int(pc.count_distinct(accepted.column("source_id")).as_py()),
        "first_timestamp": _iso(int(ts.min())) if len(ts) else None,
        "last_timestamp": _iso(int(ts.max())) if len(ts) else None,
        "registry_version": version,
        "until": intraday.iso(until),
        "partial": until is not None,
    }
    return report


# --------------------------------------------------------------------------------------
# observations: entry points


def available_dates(city: CityConfig, feed: FeedConfig) -> list[str]:
    """Local calendar dates (``YYYY-MM-DD``) that have at least one row in the raw delivery.

    Parameters
    ----------
    city : CityConfig
        Supplies the timezone that turns offset timestamps into local dates.
    feed : FeedConfig

    Returns
    -------
    list of str
        Sorted; rows without a usable timestamp are ignored.
    """
    landing = read_observations(feed)
    times = normalise_timestamps(landing["source_id"], landing["timestamp"], city.timezone)
    days = np.unique(times["local"].dropna().to_numpy().astype("datetime64[D]"))
    return [str(d) for d in days]


def ingest_partition(city: CityConfig, feed: FeedConfig, date: str, *, lake: Lake | None = None) -> dict[str, Any]:
    """Ingest one local calendar date of a feed (see :func:`ingest_range`).

    Parameters
    ----------
    city : CityConfig
    feed : FeedConfig
    date : str
        Local date ``YYYY-MM-DD``.
    lake : Lake, optional
        The lake to write; default :meth:`Lake.from_config`.

    Returns
    -------
    dict
        The quality report plus ``observations_path``, ``quarantine_path``, ``report_path``.
    """
    return ingest_range(city, feed, date, date, lake=lake)[0]


def ingest_range(
    city: CityConfig,
    feed: FeedConfig,
    start: str,
    end: str,
    progress: bool = False,
    *,
    until: str | pd.Timestamp | None = None,
    lake: Lake | None = None,
) -> list[dict[str, Any]]:
    """Ingest every local date from ``start`` to ``end`` (both included), reading the raw files once.

    For each date it writes accepted rows to ``observations/`` (sorted by source_id,
    timestamp; UTC), rejected rows to ``quarantine/`` (reason + landing row JSON) and a
    ``quality/.../report.json``. A date without rows still gets empty partitions and a
    report. Re-running gives byte-identical files. Rows are checked against the feed's lake
    registry (:func:`registry_sources`); when that partition is absent it is ingested first
    (:func:`ingest_registry`).

    With ``until``, rows timestamped at or after it are left out (not delivered yet) and
    the day it ends early is written as a partial day (module docstring).

    Parameters
    ----------
    city : CityConfig
    feed : FeedConfig
    start, end : str
        Local dates ``YYYY-MM-DD``.
    progress : bool
        Show a tqdm progress bar over the dates.
    until : str or pandas.Timestamp, optional
        Keep only rows before this moment: local ``YYYY-MM-DD HH:MM`` or ISO 8601 with an
        offset (:func:`traffic.intraday.parse_until`). Default: every row.
    lake : Lake, optional
        The lake to read the registry from and write to; default :meth:`Lake.from_config`.

    Returns
    -------
    list of dict
        One report per date (in date order), each with the written paths, then the
        report of the ``date=undated`` partition when rows without a usable timestamp
        were quarantined (``date == UNDATED``): the reports together reconcile
        ``rows_read = rows_accepted + rows_quarantined``.

    Raises
    ------
    IngestError
        File-level fault (unreadable, truncated, wrong delimiter, schema drift, a line
        count that does not fit a timestamp-less feed) or a registry that loses too many
        sources; nothing is written for the delivery.
    ValueError
        Bad dates, a bad ``until``, or a date that begins at or after ``until``.
    """
    from tqdm.auto import tqdm

    days = _dates(start, end)
    cut = None if until is None else intraday.parse_until(until, city.timezone)
    day_until = [intraday.until_for_day(d, cut, city.timezone) for d in days]  # raises for days after the cut
    keys = {"city": city.name, "feed": feed.name}
    store = lake if lake is not None else Lake.from_config()
    for dataset in ("observations", "quarantine", "quality"):  # what a killed run left behind
        sweep_folder(store.partition(dataset, **keys), recursive=True)
    has_registry = (store.partition("registry", **keys) / REGISTRY_FILE).exists()
    if has_registry:
        known, version = registry_sources(city, feed, lake=store)
        source = source_digest(city, feed, version)
        held = {r["date"]: r for r in stored_reports(city, feed, [*days, UNDATED], lake=store)}
        if cut is None and all(
            d in held
            and held[d].get("source_digest") == source
            and not held[d]["partial"]
            and held[d]["observations_path"]
            and feed_day_problem(store, city, feed.name, d) is None  # its partitions are whole, as reported
            for d in days
        ):  # the same bytes made every day's partitions: nothing to read
            log.info("%s/%s: %d day(s) already in the lake, 0 new", city.name, feed.name, len(days))
            undated = [held[UNDATED]] if held.get(UNDATED, {}).get("source_digest") == source else []
            return [{**held[d], "unchanged": True} for d in days] + undated
    delivery = read_delivery(feed)  # file-level faults raise here, before anything is written
    local = normalise_timestamps(delivery.frame["source_id"], delivery.frame["timestamp"], city.timezone)["local"]
    local_ts = local.to_numpy().astype("datetime64[us]")
    nothing = [] if cut is not None else _check_delivered(city, feed, days, local_ts.astype("datetime64[D]"))
    delivery, superseded = _newest_delivery(feed, delivery, local_ts)
    if not has_registry:  # written only once the delivery is known to hold the days asked for
        ingest_registry(city, feed, lake=store)  # the ingest stage writes the registry it validates against
        known, version = registry_sources(city, feed, lake=store)
        source = source_digest(city, feed, version)
        held = {r["date"]: r for r in stored_reports(city, feed, [*days, UNDATED], lake=store)}
    landing = delivery.frame
    checked = check_observations(
        landing,
        tz=city.timezone,
        known_sources=known,
        future_slack_s=city.bin_seconds,
        max_per_hour=dict(city.plausibility.max_per_hour),
        max_speed_kmh=city.plausibility.max_speed_kmh,
    )
    n = len(checked)
    marked = np.where(pd.isna(checked["reason"].to_numpy(dtype=object, na_value=None)), landing["marked"], 0)

    reason = checked["reason"].to_numpy(dtype=object, na_value=None)
    rejected = pd.notna(reason)
    local_day = checked["local"].to_numpy().astype("datetime64[D]")
    rel = (local_day - np.datetime64(days[0], "D")).astype("int64")
    dated = ~np.isnat(local_day)
    in_range = dated & (rel >= 0) & (rel < len(days))
    undated = ~dated

    # one sort for every partition: (day, source_id, timestamp, file order)
    src_code = pd.factorize(checked["source_id"], sort=True, use_na_sentinel=True)[0]
    ts_int = timestamp_us(checked["timestamp"])
    if cut is not None:  # rows at or after the cut have not been delivered yet
        in_range &= ~dated | (ts_int < cut.value // 1000)
    rows = np.flatnonzero(in_range)
    order = rows[np.lexsort((rows, ts_int[rows], src_code[rows], rel[rows]))]
    bounds = np.searchsorted(rel[order], np.arange(len(days) + 1))

    _check_bulk(store, city, feed, days, checked, landing, delivery, order, bounds, rejected, keys)
    table = _observation_table(checked, feed.kind)
    q_rows = np.flatnonzero(rejected & (in_range | undated))
    q_pos = np.full(n, -1, dtype=np.int64)
    q_pos[q_rows] = np.arange(len(q_rows))
    q_table = pa.table(
        [
            pa.array(reason[q_rows], pa.string()),
            table.column("source_id").take(q_rows),
            table.column("timestamp").take(q_rows),
            pa.array(delivery.records(q_rows), pa.string()),
        ],
        schema=QUARANTINE_SCHEMA,
    )

    reports = []
    for i, day in enumerate(tqdm(days, desc=f"ingest {city.name}/{feed.name}", unit="day", disable=not progress)):
        part = order[bounds[i] : bounds[i + 1]]
        bad = rejected[part]
        accepted = table.take(part[~bad])
        quarantined = q_table.take(q_pos[part[bad]])
        reports.append(
            _write_day(
                store,
                city,
                feed,
                day,
                accepted,
                quarantined,
                version,
                keys,
                rows_read=len(part),
                until=day_until[i],
                marked=int(marked[part].sum()),
                source=source,
                held=held.get(day),
                nothing_delivered=day in nothing,
                superseded=superseded.get(day),
            )
        )
    fresh = sum(not r["unchanged"] for r in reports)
    log.info("%s/%s: %d day(s) already in the lake, %d new", city.name, feed.name, len(reports) - fresh, fresh)

    undated_rows = np.flatnonzero(undated)
    if len(undated_rows):
        order_u = undated_rows[np.lexsort((undated_rows, src_code[undated_rows]))]
        reports.append(
            _write_day(
                store,
                city,
                feed,
                UNDATED,
                table.slice(0, 0),
                q_table.take(q_pos[order_u]),
                version,
                keys,
                rows_read=len(order_u),
                source=source,
                held=held.get(UNDATED),
            )
        )
    else:
        for dataset in ("quarantine", "quality"):
            stale = store.partition(dataset, **keys, date=UNDATED)
            if stale.exists():
                for f in stale.iterdir():
                    f.unlink()
                if stale.exists():  # an object store has no folder once its objects are gone
                    stale.rmdir()
    return reports


def _check_bulk(
    store: Lake,
    city: CityConfig,
    feed: FeedConfig,
    days: list[str],
    checked: pd.DataFrame,
    landing: pd.DataFrame,
    delivery: Any,
    order: np.ndarray,
    bounds: np.ndarray,
    rejected: np.ndarray,
    keys: dict[str, str],
) -> None:
    """The faults of a delivery in bulk (:mod:`traffic.ingest.bulk`), per day; raises before anything is written."""
    obs_file = feed.path("observations")
    city_file = city.source or city.name
    kept = order[~rejected[order]]
    if "interval_s" in landing.columns and len(kept):
        interval = landing["interval_s"].to_numpy(dtype="float64", na_value=np.nan)[kept]
        check_bins(obs_file, interval[np.isfinite(interval)], city.bin_seconds, city.time_bin, city_file)
    reason = checked["reason"].to_numpy(dtype=object, na_value=None)
    share = max_quarantined_share(feed.options)
    ids, geoms = _registry_geometries(store, keys)
    where = pd.Index(ids)
    sources = checked["source_id"].to_numpy(dtype=object, na_value=None)
    for i, day in enumerate(days):
        part = order[bounds[i] : bounds[i + 1]]
        day_reasons = reason[part]
        bad = part[pd.notna(day_reasons)]
        if len(bad) > share * max(len(part), 1):
            codes, counts = np.unique(reason[bad].astype(str), return_counts=True)
            top = codes[np.argmax(counts)]
            sample = bad[reason[bad] == top][:3]
            check_quarantine_share(obs_file, day, list(day_reasons), delivery.records(sample), max_share=share)
        good = part[pd.isna(day_reasons)]
        if len(good):
            pos = where.get_indexer(pd.unique(sources[good]))
            check_sources_in_box(
                obs_file,
                geoms[pos[pos >= 0]],
                city.bbox,
                city_file,
                what=f"{day}: every source with accepted rows",
            )


def _check_delivered(city: CityConfig, feed: FeedConfig, days: list[str], local_day: np.ndarray) -> list[str]:
    """The days asked for that lie outside the dates the delivery holds; an error when that is all of them.

    A range wholly outside the delivered dates is refused (no silent empty partitions, nothing
    written). Days of a range partly outside are returned: they get empty partitions whose report
    says ``nothing_delivered`` (the nightly's freshness gate reads it, :func:`traffic.pipeline.check_quality`)
    and a WARNING naming them. A day inside the delivered span without rows (a camera off all day)
    is not "nothing delivered"; neither are the days of a delivery without any dated row (a
    header-only file): both get an empty partition and report, as docs/landing.md says.

    Parameters
    ----------
    local_day : numpy.ndarray
        ``datetime64[D]`` local date of every delivered row (NaT for rows without one).
    """
    delivered = local_day[~np.isnat(local_day)]
    if not len(delivered):
        return []
    first, last = str(delivered.min()), str(delivered.max())
    outside = [d for d in days if d < first or d > last]
    if not outside:
        return []
    shown = ", ".join(outside[:5]) + (f" (+{len(outside) - 5} more)" if len(outside) > 5 else "")
    asked = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    if len(outside) < len(days):
        log.warning(
            "%s/%s: nothing delivered for %s (asked %s; the delivery holds %s .. %s): written as empty days "
            "whose quality report says nothing_delivered",
            city.name,
            feed.name,
            shown,
            asked,
            first,
            last,
        )
        return outside
    raise IngestError(
        f"{feed.path('observations')}: feed {feed.name!r} of {city.name}: nothing delivered for {asked} (the dates "
        f"asked): the delivery holds local dates {first} .. {last}; ingest dates in that range, or add the new "
        "days' files to the feed's landing folder (docs/landing.md, 'Deliveries day after day')",
        file=feed.path("observations"),
        key="observations",
        value=asked,
        allowed=f"dates {first} .. {last}",
    )


def _newest_delivery(feed: FeedConfig, delivery: Any, local_ts: np.ndarray) -> tuple[Any, dict[str, dict[str, Any]]]:
    """A re-delivered day is the newest file's: the day's rows of an older file it re-delivers are dropped.

    Files are deliveries in name order. When a later file holds a row of the same source and local
    wall-clock time on the same local date as an earlier file, the later file re-delivers that day:
    *every* row of that day from the earlier file is left out (superseded), so a day is never half
    old and half new. Files that hold different rows of one day (hourly files, a day cut at UTC
    midnight) are complementary and all read.

    Returns
    -------
    delivery
        The delivery without the superseded rows (the same object when nothing is superseded).
    dict
        Per local date with superseded rows: ``{"rows": n, "files": [superseded file names],
        "by": [names of the files that deliver the day]}`` (the day's report ``superseded``).
    """
    files = delivery.files
    if delivery.file_of_row is None or len(files) < 2:
        return delivery, {}
    day = local_ts.astype("datetime64[D]")
    dated = np.flatnonzero(~np.isnat(local_ts))
    rows = pd.DataFrame(
        {
            "day": day[dated],
            "file": delivery.file_of_row[dated],
            "source": delivery.frame["source_id"].to_numpy(dtype=object, na_value=None)[dated],
            "local": local_ts[dated],
        }
    )
    newest = rows.groupby(["day", "source", "local"], dropna=True)["file"].transform("max")
    redone = rows.loc[newest.to_numpy() > rows["file"].to_numpy(), ["day", "file"]].drop_duplicates()
    if redone.empty:
        return delivery, {}
    old = pd.MultiIndex.from_frame(rows[["day", "file"]]).isin(pd.MultiIndex.from_frame(redone))
    drop = dated[old]
    out: dict[str, dict[str, Any]] = {}
    for d, group in rows[old].groupby("day"):
        date = str(np.datetime64(d, "D"))
        old_files = sorted(set(group["file"].tolist()))
        kept = sorted(set(rows.loc[(rows["day"] == d) & ~old, "file"].tolist()))
        out[date] = {
            "rows": len(group),
            "files": [files[i].rsplit("/", 1)[-1] for i in old_files],
            "by": [files[i].rsplit("/", 1)[-1] for i in kept],
        }
        log.warning(
            "%s: %s re-delivered by %s: its %d row(s) from %s replaced",
            feed.name,
            date,
            out[date]["by"],
            len(group),
            out[date]["files"],
        )
    keep = np.setdiff1d(np.arange(len(delivery.frame)), drop)
    return delivery.take(keep), out


def _registry_geometries(store: Lake, keys: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """``source_id`` and shapely geometry (WGS84) of every source of the feed's lake registry."""
    target = store.partition("registry", **keys) / REGISTRY_FILE
    with target.open("rb") as fh:
        t = pq.read_table(fh, columns=["source_id", "geometry"])
    ids = t.column("source_id").to_numpy(zero_copy_only=False)
    return ids, shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))


def _write_day(
    store: Lake,
    city: CityConfig,
    feed: FeedConfig,
    day: str,
    accepted: pa.Table,
    quarantined: pa.Table,
    version: str,
    keys: dict[str, str],
    *,
    rows_read: int,
    until: pd.Timestamp | None = None,
    marked: int = 0,
    source: str = "",
    held: dict[str, Any] | None = None,
    nothing_delivered: bool = False,
    superseded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one day's partitions and report; not the data when ``held`` (its stored report) has the same content."""
    report = _report(city, feed, day, accepted, quarantined, version, until, marked)
    report["nothing_delivered"] = nothing_delivered
    report["superseded"] = superseded
    if report["rows_read"] != rows_read or rows_read != report["rows_accepted"] + report["rows_quarantined"]:
        raise AssertionError(
            f"{city.name}/{feed.name} {day}: rows_read {rows_read} != accepted {report['rows_accepted']} "
            f"+ quarantined {report['rows_quarantined']}"
        )
    report["source_digest"] = source
    report["content_digest"] = content_digest(accepted, quarantined, version, until)
    report_path = store.partition("quality", **keys, date=day) / "report.json"
    if (
        held is not None
        and held.get("content_digest") == report["content_digest"]
        and held["quarantine_path"]
        and (day == UNDATED or (held["observations_path"] and feed_day_problem(store, city, feed.name, day) is None))
    ):  # the lake holds this day as it would be written: only the report learns the new source digest
        if held.get("source_digest") != source:
            store.write_json(report, report_path)
        return {**held, **report, "unchanged": True}
    meta = {"registry_version": version}
    if until is not None:
        meta[intraday.UNTIL_KEY] = intraday.iso(until) or ""
    if until is not None:  # partial: say so before the data change (see the module docstring)
        store.write_json(report, report_path)
    obs = store.write_partition(accepted, "observations", metadata=meta, **keys, date=day) if day != UNDATED else None
    qua = store.write_partition(quarantined, "quarantine", metadata=meta, **keys, date=day)
    rep = store.write_json(report, report_path)
    return {
        **report,
        "observations_path": str(obs) if obs else None,
        "quarantine_path": str(qua),
        "report_path": str(rep),
        "unchanged": False,
    }
