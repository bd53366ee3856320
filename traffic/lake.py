"""The data lake resource: :class:`Lake` owns partition paths, atomic re-runnable writes and partition reads.

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


class Lake:
    """One data lake under ``root`` (a local folder or an fsspec URI such as ``s3://bucket/lake``).

    Built once (:meth:`from_config` reads :func:`traffic.config.lake_uri`) and passed to what
    reads or writes partitions, so compute code needs no environment look-ups.

    Parameters
    ----------
    root : str or UPath
        The lake root.
    """

    def __init__(self, root: str | UPath) -> None:
        self.root = UPath(root)

    @classmethod
    def from_config(cls) -> Lake:
        """The lake configured for this process (``TRAFFIC_LAKE`` or ``<home>/lake``)."""
        return cls(lake_uri())

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lake) and str(self.root) == str(other.root)

    def __hash__(self) -> int:
        return hash(str(self.root))

    def partition(self, dataset: str, **keys: Any) -> UPath:
        """Folder of one partition, e.g. ``partition("observations", city="berlin", feed="telraam", date="2024-10-01")``."""
        p = self.root / dataset
        for k, v in keys.items():
            p = p / f"{k}={v}"
        return p

    def write_partition(
        self,
        table: pa.Table,
        dataset: str,
        *,
        filename: str = "part.parquet",
        metadata: dict[str, str] | None = None,
        **keys: Any,
    ) -> UPath:
        """Replace one partition of ``dataset`` with ``table`` (one file per partition).

        Parameters
        ----------
        table : pyarrow.Table
        dataset : str
            Top folder of the dataset (``observations``, ``raster`` ...).
        filename : str
            The partition's one file.
        metadata : dict, optional
            Extra key/value pairs stored in the Parquet schema metadata.
        **keys
            Partition keys in folder order (``city=``, ``feed=``, ``date=`` ...).

        Returns
        -------
        UPath
            The file written.
        """
        folder = self.partition(dataset, **keys)
        target = folder / filename
        sweep_folder(folder)
        write_table(table, target, metadata=metadata)
        # a partition is exactly one file: drop leftovers from older layouts
        for other in folder.iterdir():
            if other.name != filename and not other.name.startswith("."):
                other.unlink()
        return target

    def read_partition(self, dataset: str, *, filename: str = "part.parquet", **keys: Any) -> pa.Table:
        """Read one partition written by :meth:`write_partition`.

        Raises
        ------
        FileNotFoundError
            The partition's file does not exist (the message names it).
        """
        target = self.partition(dataset, **keys) / filename
        if not target.exists():
            raise FileNotFoundError(f"partition {target} does not exist")
        with target.open("rb") as fh:
            return pq.read_table(fh)

    def list_dates(self, dataset: str, **keys: Any) -> list[str]:
        """Sorted ``date=YYYY-MM-DD`` values under a dataset's partition prefix.

        Special partitions such as ``date=undated`` (quarantined rows without a timestamp)
        are not dates and are left out.
        """
        folder = self.partition(dataset, **keys)
        if not folder.exists():
            return []
        values = (p.name.split("=", 1)[1] for p in folder.iterdir() if p.name.startswith("date="))
        return sorted(v for v in values if _ISO_DATE.match(v))

    def write_json(self, obj: Any, target: UPath) -> UPath:
        """Write ``obj`` as pretty JSON atomically to ``target`` (a path in this lake)."""
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        atomic_write(target, lambda fh: fh.write(data))
        return target

    def read_json(self, target: UPath) -> Any:
        """Read the JSON file ``target`` (a path in this lake)."""
        with target.open("rb") as fh:
            return json.loads(fh.read())


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


# Module-level delegates to the configured lake (built per call, so a changed TRAFFIC_LAKE is seen),
# until every caller is handed a Lake.


def lake_root() -> UPath:
    """The configured lake root as a :class:`upath.UPath` (local path or object-store URI)."""
    return Lake.from_config().root


def partition(dataset: str, **keys: Any) -> UPath:
    """:meth:`Lake.partition` of the configured lake."""
    return Lake.from_config().partition(dataset, **keys)


def write_partition(
    table: pa.Table,
    dataset: str,
    *,
    filename: str = "part.parquet",
    metadata: dict[str, str] | None = None,
    **keys: Any,
) -> UPath:
    """:meth:`Lake.write_partition` of the configured lake."""
    return Lake.from_config().write_partition(table, dataset, filename=filename, metadata=metadata, **keys)


def read_partition(dataset: str, *, filename: str = "part.parquet", **keys: Any) -> pa.Table:
    """:meth:`Lake.read_partition` of the configured lake."""
    return Lake.from_config().read_partition(dataset, filename=filename, **keys)


def list_dates(dataset: str, **keys: Any) -> list[str]:
    """:meth:`Lake.list_dates` of the configured lake."""
    return Lake.from_config().list_dates(dataset, **keys)


def write_json(obj: Any, target: UPath) -> UPath:
    """:meth:`Lake.write_json` of the configured lake."""
    return Lake.from_config().write_json(obj, target)


def read_json(target: UPath) -> Any:
    """:meth:`Lake.read_json` of the configured lake."""
    return Lake.from_config().read_json(target)
