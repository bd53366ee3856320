"""The data lake: partition paths and atomic, re-runnable writes.

Layout under :func:`traffic.config.lake_uri` (hive-style keys)::

    registry/city=<c>/feed=<f>/registry.parquet            sources, WGS84, + version digest
    observations/city=<c>/feed=<f>/date=<YYYY-MM-DD>/part.parquet   accepted rows, UTC
    quarantine/city=<c>/feed=<f>/date=<YYYY-MM-DD>/part.parquet     rejected rows + reason
    quality/city=<c>/feed=<f>/date=<YYYY-MM-DD>/report.json         counts per partition
    grid/city=<c>/cells.parquet                            GeoParquet of grid cells
    assignment/city=<c>/feed=<f>/version=<digest>/part.parquet   source -> cell weights
    raster/city=<c>/date=<YYYY-MM-DD>/part.parquet         (bin, cell, channel) aggregates

``date`` is the city's *local* calendar date (so a DST day holds 23 or 25 hours);
timestamps inside files are UTC.

Every write replaces a whole partition through the project's one atomic writer
(:func:`traffic.tempfiles.atomic_write`): the data goes to a temporary name in the same
folder, then is renamed over the target, so a reader sees the old or the new
partition and never half of one, and re-running a task for the same partition gives
the same result. A temporary name (``.<target>.<host>-<pid>.<random>.tmp``) says which
process writes it, so a later run removes the ones whose process is gone
(:func:`traffic.tempfiles.sweep_folder`) without touching a live writer's. On an object store
(``s3://`` ...) a partition is one object uploaded in one call, which the store publishes
whole or not at all: no temporary objects, nothing left by a killed writer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from traffic.config import lake_uri
from traffic.tempfiles import atomic_write, sweep_folder

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def lake_root() -> UPath:
    """The lake root as a :class:`upath.UPath` (local path or object-store URI)."""
    return UPath(lake_uri())


def partition(dataset: str, **keys: Any) -> UPath:
    """Folder of one partition, e.g. ``partition("observations", city="berlin", feed="telraam", date="2024-10-01")``."""
    p = lake_root() / dataset
    for k, v in keys.items():
        p = p / f"{k}={v}"
    return p


def write_table(table: pa.Table, target: UPath, *, metadata: dict[str, str] | None = None) -> UPath:
    """Write ``table`` to ``target`` atomically (temp file + rename), replacing what was there.

    Parameters
    ----------
    table : pyarrow.Table
    target : UPath
        File path of the Parquet file.
    metadata : dict, optional
        Extra key/value pairs stored in the Parquet schema metadata.
    """
    if metadata:
        md = dict(table.schema.metadata or {})
        md.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(md)
    atomic_write(target, lambda fh: pq.write_table(table, fh, compression="zstd"))
    return target


def write_json(obj: Any, target: UPath) -> UPath:
    """Write ``obj`` as pretty JSON atomically."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    atomic_write(target, lambda fh: fh.write(data))
    return target


def read_json(target: UPath) -> Any:
    with target.open("rb") as fh:
        return json.loads(fh.read())


def write_partition(
    table: pa.Table,
    dataset: str,
    *,
    filename: str = "part.parquet",
    metadata: dict[str, str] | None = None,
    **keys: Any,
) -> UPath:
    """Replace one partition of ``dataset`` with ``table`` (one file per partition)."""
    folder = partition(dataset, **keys)
    target = folder / filename
    sweep_folder(folder)
    write_table(table, target, metadata=metadata)
    # a partition is exactly one file: drop leftovers from older layouts
    for other in folder.iterdir():
        if other.name != filename and not other.name.startswith("."):
            other.unlink()
    return target


def read_partition(dataset: str, *, filename: str = "part.parquet", **keys: Any) -> pa.Table:
    """Read one partition written by :func:`write_partition`."""
    target = partition(dataset, **keys) / filename
    if not target.exists():
        raise FileNotFoundError(f"partition {target} does not exist")
    with target.open("rb") as fh:
        return pq.read_table(fh)


def list_dates(dataset: str, **keys: Any) -> list[str]:
    """Sorted ``date=YYYY-MM-DD`` values under a dataset's partition prefix.

    Special partitions such as ``date=undated`` (quarantined rows without a timestamp)
    are not dates and are left out.
    """
    folder = partition(dataset, **keys)
    if not folder.exists():
        return []
    values = (p.name.split("=", 1)[1] for p in folder.iterdir() if p.name.startswith("date="))
    return sorted(v for v in values if _ISO_DATE.match(v))
