"""Faults of a whole delivery that row rules cannot see: loud, file-level errors, before anything is written.

A row rule (:mod:`traffic.ingest.validate`) quarantines one bad row and keeps the rest. Some
deliveries are wrong *in bulk* while every row looks fine, or while every row is quarantined
for the same reason; ingesting them would exit 0 with an empty raster or an empty day. These
checks make such a delivery an :class:`~traffic.errors.IngestError` naming the file, the column
or key, what was found and a hint (the swap, the unit, the bin). They are general rules, not
cases:

* :func:`check_sources_in_box`: the sources of a registry, or of the rows of a feed day, all lie
  outside the city's ``bbox`` (nothing would be rasterized). The hint says which transformation
  would put them inside: longitude and latitude swapped, a sign flipped, or the city's ``bbox``
  written lat/lon.
* :func:`check_quarantine_share`: more than :data:`MAX_QUARANTINED_SHARE` (feed option
  ``max_quarantined_share``) of a feed day's rows are quarantined (at least
  :data:`MIN_ROWS_FOR_SHARE` rows read). The message names the dominating reason, its column, example
  values as delivered and a hint (a share delivered in percent, a delimiter, the ids...).
* :func:`check_bins`: the rows' ``interval_s`` does not divide the city's ``time_bin``, so bins
  would hold parts of rows: gappy (45 min over hourly rows) or lumped (2 min over 5-minute rows).

The grid size limit (:data:`traffic.config.MAX_GRID_CELLS`) is checked when the city file is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

from traffic.errors import IngestError

#: A feed day with a larger share of quarantined rows is refused (feed option ``max_quarantined_share``).
MAX_QUARANTINED_SHARE = 0.5
#: Days with fewer rows read are not judged by their quarantined share.
MIN_ROWS_FOR_SHARE = 10

#: The delivered column each reason code is about (for the message and the example values).
REASON_COLUMN = {
    "wrong_field_count": None,
    "missing_timestamp": "timestamp",
    "nonexistent_local_time": "timestamp",
    "future_timestamp": "timestamp",
    "unknown_source": "source_id",
    "unparseable_value": None,
    "bad_interval": "interval_s",
    "marked_missing": None,
    "all_values_null": None,
    "negative_count": None,
    "implausible_count": None,
    "speed_out_of_range": "speed_kmh",
    "occupancy_out_of_range": "occupancy",
    "uptime_out_of_range": "uptime",
    "zero_uptime": "uptime",
    "duplicate": None,
    "conflicting_duplicate": None,
}
#: What most likely went wrong when one reason claims most of a day.
REASON_HINT = {
    "wrong_field_count": "the lines have another number of fields than the header: check the delimiter and quoting",
    "missing_timestamp": "the timestamps are not ISO 8601 (YYYY-MM-DDTHH:MM[:SS][offset])",
    "nonexistent_local_time": "the times fall in the skipped spring-forward hour: deliver UTC offsets",
    "future_timestamp": "the rows start after the file was delivered: check the time zone, the date order "
    "(day and month swapped?) or the file's modification time",
    "unknown_source": "the source ids are not those of the registry: check the id column and the registry file",
    "unparseable_value": "the values are not numbers: check the decimal separator (1,5 vs 1.5) and the delimiter",
    "bad_interval": "interval_s must be whole seconds 1 .. 86400 (minutes or milliseconds delivered?)",
    "marked_missing": "the measurements are marked missing: the detectors delivered nothing",
    "all_values_null": "the measurement columns are empty: check the column names",
    "negative_count": "counts are negative: check the column and its sign",
    "implausible_count": "counts are far above what a source can count in an interval: check the unit "
    "(per day instead of per interval?) and interval_s, or raise [plausibility] max_per_hour",
    "speed_out_of_range": "speeds are <= 0 or above the plausible maximum: check the unit (m/s, mph x 100?) "
    "or raise [plausibility] max_speed_kmh",
    "occupancy_out_of_range": "occupancy must be a share 0 .. 1",
    "uptime_out_of_range": "uptime must be a share 0 .. 1",
    "zero_uptime": "the cameras did not count (uptime 0)",
    "duplicate": "the rows repeat: is the same day delivered twice (two files of one day in the landing folder)?",
    "conflicting_duplicate": "the same source and time have several values: is a day delivered twice with "
    "other values, or do two sources share an id?",
}


def max_quarantined_share(options: dict[str, Any]) -> float:
    """The feed's ``max_quarantined_share`` option (common to every adapter), default :data:`MAX_QUARANTINED_SHARE`."""
    return float(options.get("max_quarantined_share", MAX_QUARANTINED_SHARE))


def _percent_hint(values: Sequence[Any]) -> str | None:
    nums = np.array([v for v in (_num(x) for x in values) if v is not None and np.isfinite(v)], dtype=float)
    if len(nums) and np.median(nums) > 1.5 and nums.max() <= 100.5:
        return f"it looks delivered in percent (e.g. {nums[0]:g}): deliver a share 0 .. 1"
    return None


def _num(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _examples(records: Sequence[str], column: str | None, n: int = 3) -> list[Any]:
    """Example delivered values of ``column`` (or whole rows) from quarantine records (JSON text)."""
    out: list[Any] = []
    for text in records:
        try:
            row = json.loads(text)
        except (TypeError, ValueError):
            continue
        if column is None:
            out.append({k: v for k, v in row.items() if not k.startswith("_")})
        else:
            # delivered names differ per adapter (uptime_quality, speed_car_v85 ...): match by substring
            hits = [v for k, v in row.items() if k == column or column.split("_")[0] in k.lower()]
            if hits:
                out.append(hits[0])
            else:  # a wide file (a column per source): the delivered cells of the row
                out.append({k: v for k, v in list(row.items())[:3] if not k.startswith("_")})
        if len(out) >= n:
            break
    return out


def check_quarantine_share(
    file: str,
    day: str,
    reasons: Sequence[str | None],
    records: Sequence[str],
    *,
    max_share: float = MAX_QUARANTINED_SHARE,
    key: str = "max_quarantined_share",
) -> None:
    """Refuse a feed day whose rows are mostly quarantined.

    Parameters
    ----------
    file : str
        The feed's observations (named in the message).
    day : str
        The local date.
    reasons : sequence of str or None
        Reason code of each row read for the day (None: accepted).
    records : sequence of str
        Quarantine records (delivered rows as JSON) of some rows of the dominating reason,
        for the example values.
    max_share : float
        Largest share of quarantined rows that passes.
    key : str
        The feed option that sets ``max_share``.

    Raises
    ------
    IngestError
        Naming the file, the day, the counts, the dominating reason, its column, example
        values and a hint.
    """
    n = len(reasons)
    bad = [r for r in reasons if r is not None]
    if n < MIN_ROWS_FOR_SHARE or len(bad) <= max_share * n:
        return
    codes, counts = np.unique(np.array(bad, dtype=object), return_counts=True)
    top = str(codes[np.argmax(counts)])
    column = REASON_COLUMN.get(top)
    examples = _examples(records, column)
    hint = (column in ("uptime", "occupancy") and _percent_hint(examples)) or REASON_HINT.get(top, "")
    by = ", ".join(f"{c}: {k}" for c, k in sorted(zip(codes, counts, strict=True), key=lambda t: -t[1]))
    raise IngestError(
        f"{file}: {day}: {len(bad)} of {n} rows quarantined ({len(bad) / n:.0%}, more than the allowed "
        f"{max_share:.0%} of feed option `{key}`), most as {top!r} ({by})"
        + (f" in column `{column}`" if column else "")
        + (f", e.g. {examples}" if examples else "")
        + (f"; {hint}" if hint else ""),
        file=file,
        column=column,
        value=top,
        allowed=f"at most {max_share:.0%} of a day's rows quarantined",
    )


def check_bins(file: str, interval_s: np.ndarray, bin_seconds: int, time_bin: str, city_file: str) -> None:
    """Refuse rows whose interval does not divide the city's time bin (each bin must hold whole rows).

    Parameters
    ----------
    file : str
        The feed's observations (named in the message).
    interval_s : numpy.ndarray
        ``interval_s`` of the accepted rows.
    bin_seconds : int
        The city's bin in seconds.
    time_bin : str
        The city's ``time_bin`` as written.
    city_file : str
        The city file (named in the hint).

    Raises
    ------
    IngestError
        Naming the file, column ``interval_s``, the intervals that do not fit, key ``time_bin`` and
        the bins that would fit.
    """
    values = np.unique(np.asarray(interval_s, dtype=np.int64))
    bad = [int(v) for v in values if v <= 0 or bin_seconds % int(v) != 0]
    if not bad:
        return
    n_bad = int(np.isin(np.asarray(interval_s, dtype=np.int64), bad).sum())
    what = "lumps parts of rows into" if bad[0] > bin_seconds else "leaves gaps in"
    raise IngestError(
        f"{file}: column `interval_s` = {bad} s ({n_bad} rows) does not divide the city's time_bin = "
        f"{time_bin!r} ({bin_seconds} s): a bin must hold whole rows, else rasterizing {what} the bins; "
        f"set time_bin in {city_file} to a multiple of {max(bad)} s, or deliver rows whose interval divides "
        f"{bin_seconds} s",
        file=file,
        column="interval_s",
        value=bad,
        allowed=f"an interval that divides time_bin = {bin_seconds} s",
    )


def _inside(points: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    lon, lat = points[:, 0], points[:, 1]
    return (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])


def outside_hint(points: np.ndarray, bbox: Sequence[float], city_file: str, crs_source: str | None = None) -> str:
    """Which transformation puts most ``points`` (lon, lat) into ``bbox``: the likely fault, in words.

    ``crs_source`` names where the CRS the points were reprojected from came from (a declared
    ``registry_crs``, the file's own CRS): when no simple transformation explains the points, it
    is named as the likely fault.
    """
    if not len(points):
        return ""
    tries = [
        (
            "longitude and latitude look swapped: swap the two columns (or the x/y of the geometries); or, "
            f"if it is the city's bbox that is written lat/lon, write {city_file} bbox = "
            f"{[bbox[1], bbox[0], bbox[3], bbox[2]]} ([lon_min, lat_min, lon_max, lat_max])",
            points[:, ::-1],
        ),
        ("the longitudes look sign-flipped (east/west): check the sign of lon", points * [-1, 1]),
        ("the latitudes look sign-flipped (north/south): check the sign of lat", points * [1, -1]),
        ("both signs look flipped: check the sign of lon and lat", points * [-1, -1]),
    ]
    for text, moved in tries:
        if _inside(moved, bbox).mean() > 0.5:
            return text
    latlon = [bbox[1], bbox[0], bbox[3], bbox[2]]
    if _inside(points, latlon).mean() > 0.5:
        return (
            f"the city's bbox looks written lat/lon: write {city_file} bbox = "
            f"[lon_min, lat_min, lon_max, lat_max] = {[bbox[1], bbox[0], bbox[3], bbox[2]]}"
        )
    lon, lat = np.median(points, axis=0)
    if crs_source is not None:
        return (
            f"the sources lie around lon={lon:.4f}, lat={lat:.4f} once reprojected from {crs_source}: check that "
            "it is the CRS the coordinates are delivered in"
        )
    return f"the sources lie around lon={lon:.4f}, lat={lat:.4f}; check the registry's coordinates and its CRS"


def representative_points(geometries: np.ndarray) -> np.ndarray:
    """``(n, 2)`` lon/lat of a point on each geometry (NaN for a missing one)."""
    pts = shapely.point_on_surface(geometries)
    return np.column_stack([shapely.get_x(pts), shapely.get_y(pts)]).astype(float)


def check_sources_in_box(
    file: str,
    geometries: np.ndarray,
    bbox: Sequence[float],
    city_file: str,
    *,
    what: str = "every source of the registry",
    crs_source: str | None = None,
) -> None:
    """Refuse sources that all lie outside the city's bbox (nothing of them would be rasterized).

    Parameters
    ----------
    file : str
        The registry (or observations) file named in the message.
    geometries : numpy.ndarray
        Shapely geometries (WGS84) of the sources in question.
    bbox : sequence of float
        The city's ``[lon_min, lat_min, lon_max, lat_max]``.
    city_file : str
        The city file.
    what : str
        What the sources are, for the message.
    crs_source : str, optional
        Where the CRS the sources were reprojected from came from (named in the hint).

    Raises
    ------
    IngestError
        Naming the file, the column ``geometry`` (lon/lat), the city's bbox and a hint.
    """
    geoms = np.asarray(geometries, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms)] if len(geoms) else geoms
    if not len(geoms):
        return
    box = shapely.box(*bbox)
    if shapely.intersects(geoms, box).any():
        return
    points = representative_points(geoms)
    points = points[np.isfinite(points).all(axis=1)]
    hint = outside_hint(points, bbox, city_file, crs_source)
    raise IngestError(
        f"{file}: {what} ({len(geoms)}) lies outside the city's bbox = {list(bbox)} ({city_file}), "
        f"so nothing would be rasterized" + (f"; {hint}" if hint else ""),
        file=file,
        column="geometry",
        value=f"{len(geoms)} sources outside",
        allowed=f"sources inside bbox {list(bbox)}",
    )
