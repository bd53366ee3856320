"""The canonical landing format: what any city delivers (CSV or Parquet).

Three tables, all with snake_case columns. Any column marked nullable may be absent or
empty; ``source_id`` is always a string.

registry
    ``source_id`` (str, unique), geometry either as ``lon``/``lat`` columns (WGS84
    degrees, a point) or as a ``geometry`` column (WKB/WKT/GeoJSON in WGS84: points or
    (multi)lines; GeoJSON/GeoParquet files carry it natively), plus any optional
    attributes (kept as strings).

sensor observations (loop detectors)
    ``source_id``, ``timestamp``, ``interval_s`` (int seconds the row covers),
    ``count`` (vehicles in the interval), ``speed_kmh``, ``occupancy`` (0..1).

camera observations
    ``source_id``, ``timestamp``, ``interval_s``, ``car``, ``heavy``, ``bike``,
    ``pedestrian`` (counts in the interval), ``uptime`` (0..1, share of the interval
    the camera counted), ``speed_kmh`` (optional, e.g. v85).

Timestamps mark the *start* of the interval. A timestamp with a UTC offset is exact.
A naive timestamp is read in the city's IANA timezone with this rule:

* DST ambiguous local time (the repeated hour in autumn): the first occurrence is the
  summer-time (DST) instant, the second is the winter-time instant. Rows are matched
  to occurrences in file order per source; a source with only one row for that hour
  gets the DST instant.
* DST missing local time (the skipped hour in spring): the row is quarantined with
  reason ``nonexistent_local_time`` (a counter cannot start counting in an hour that
  did not exist on the wall clock).

After normalisation every timestamp is ``timestamp[us, tz=UTC]``.
"""

from __future__ import annotations

import pyarrow as pa

TS_TYPE = pa.timestamp("us", tz="UTC")

#: Columns of normalised (post-adapter, post-validation) observations, per feed kind.
OBSERVATION_SCHEMAS: dict[str, pa.Schema] = {
    "sensor": pa.schema(
        [
            ("source_id", pa.string()),
            ("timestamp", TS_TYPE),
            ("interval_s", pa.int32()),
            ("count", pa.float64()),
            ("speed_kmh", pa.float64()),
            ("occupancy", pa.float64()),
        ]
    ),
    "camera": pa.schema(
        [
            ("source_id", pa.string()),
            ("timestamp", TS_TYPE),
            ("interval_s", pa.int32()),
            ("car", pa.float64()),
            ("heavy", pa.float64()),
            ("bike", pa.float64()),
            ("pedestrian", pa.float64()),
            ("uptime", pa.float64()),
            ("speed_kmh", pa.float64()),
        ]
    ),
}

#: Normalised registry: one row per source; geometry as WKB in WGS84.
REGISTRY_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("geometry", pa.binary()),  # WKB, EPSG:4326
        ("attributes", pa.string()),  # JSON object of optional attributes
    ]
)

#: Quarantine rows keep the offending row as delivered (JSON of the delivered fields) and why it was rejected.
QUARANTINE_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("source_id", pa.string()),
        ("timestamp", TS_TYPE),
        ("row", pa.string()),
    ]
)
