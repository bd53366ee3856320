"""The data lake resource: :class:`Lake` owns partition paths, atomic re-runnable writes and partition reads.

Layout under :func:`traffic.config.lake_uri` (hive-style keys)::

    registry/city=<c>/feed=<f>/registry.parquet            GeoParquet of sources, WGS84, + version digest
    observations/city=<c>/feed=<f>/date=<YYYY-MM-DD>/part.parquet   accepted rows, UTC
    quarantine/city=<c>/feed=<f>/date=<YYYY-MM-DD>/part.parquet     rejected rows + reason
    quality/city=<c>/feed=<f>/date=<YYYY-MM-DD>/report.json         counts per partition
    grid/city=<c>/cells.parquet                            GeoParquet of grid cells
    assignment/city=<c>/feed=<f>/version=<digest>/part.parquet   source -> cell weights
    raster/city=<c>/date=<YYYY-MM-DD>/part.parquet         (bin, cell, channel) aggregates

GeoParquet files (the grid, the registries) are written and read by GeoPandas
(:func:`write_geoparquet`, :func:`read_geoparquet`). Reads of many partitions go through
:meth:`Lake.read_dataset` (:mod:`pyarrow.dataset`: hive keys, partition pruning and row-group
filters pushed down, column projection), not loops over dates.

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

import hashlib
import io
import json
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from upath import UPath

if TYPE_CHECKING:
    import geopandas as gpd

from traffic.config import lake_uri
from traffic.tempfiles import atomic_write, sweep_folder

_LOCAL_PROTOCOLS = ("", "file", "local")

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

    def partition_files(self, dataset: str, *, filename: str = "part.parquet", **keys: Any) -> list[UPath]:
        """The partition files named ``filename`` under a dataset's partition prefix, sorted by path.

        One recursive listing of the prefix; temporary and hidden files (``.``/``_`` names) are left out.
        A missing prefix has no files.
        """
        folder = self.partition(dataset, **keys)
        fs, base = folder.fs, folder.path.rstrip("/")
        fs.invalidate_cache(base)  # an object store's listing cache may predate the last write
        try:
            found = fs.find(base)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for path in sorted(found):
            rel = path[len(base) :].lstrip("/").split("/")
            if rel[-1] == filename and not any(part[:1] in "._" for part in rel):
                out.append(folder.joinpath(*rel))
        return out

    def read_dataset(
        self,
        dataset: str,
        *,
        columns: list[str] | None = None,
        filter: ds.Expression | None = None,
        schema: pa.Schema | None = None,
        filename: str = "part.parquet",
        **keys: Any,
    ) -> pa.Table:
        """Read the partitions of ``dataset`` under ``keys`` as one table (:mod:`pyarrow.dataset`).

        The partition keys below the prefix (e.g. ``date`` under ``city=``/``feed=``) are hive
        fields of type string: ``filter`` may use them, and the partitions it excludes are never
        opened (``ds.field("date") >= "2024-10-01"``); conditions on data columns are pushed down
        to the Parquet row groups. Rows come in path order (key values sorted as text, so dates
        in calendar order), each partition's rows in file order, as reading the files one by one.
        ``date=undated`` (quarantined rows without a timestamp) is a partition like any other:
        filter it out where only dates are wanted. Local folders are read with Arrow's own file
        system, others (``s3://`` ...) through the lake's fsspec file system.

        Parameters
        ----------
        dataset : str
            Top folder of the dataset (``observations``, ``quarantine``, ``raster`` ...).
        columns : list of str, optional
            Columns to read (data columns or partition keys). Default: all data columns and the
            partition keys below the prefix.
        filter : pyarrow.dataset.Expression, optional
            Rows (and partitions) to keep.
        schema : pyarrow.Schema, optional
            The schema to read the files as. Default: the schemas of all files, unified with
            permissive type promotion (as ``pyarrow.concat_tables(promote_options="permissive")``).
        filename : str
            The partition file name.
        **keys
            Partition keys of the prefix in folder order (``city=``, ``feed=`` ...).

        Returns
        -------
        pyarrow.Table
            No partition: an empty table of ``schema`` (or of ``columns``, typed null).

        Raises
        ------
        ValueError
            A column of ``columns`` is in none of the files (the message lists the ones there).
        """
        files = self.partition_files(dataset, filename=filename, **keys)
        if not files:
            if schema is not None:
                empty = schema.empty_table()
                return empty.select(columns) if columns is not None else empty
            return pa.table({c: pa.array([], pa.null()) for c in columns or []})
        folder = self.partition(dataset, **keys)
        base = folder.path.rstrip("/")
        rel_dirs = ["/".join(f.path[len(base) :].lstrip("/").split("/")[:-1]) for f in files]
        keys_below = [part.split("=", 1)[0] for part in rel_dirs[0].split("/") if part]
        parts_schema = pa.schema([(n, pa.string()) for n in keys_below])
        hive = ds.partitioning(parts_schema, flavor="hive")
        fs: pafs.FileSystem
        if folder.protocol in _LOCAL_PROTOCOLS:
            fs = pafs.LocalFileSystem()
        else:
            fs = pafs.PyFileSystem(pafs.FSSpecHandler(folder.fs))
        fmt = ds.ParquetFileFormat()
        fragments = [
            fmt.make_fragment(f.path, fs, partition_expression=hive.parse(d + "/"))  # a folder: ends with "/"
            for f, d in zip(files, rel_dirs, strict=True)
        ]
        if filter is not None:  # partitions the filter excludes are dropped before any of their files is opened
            probe_schema = schema if schema is not None else fragments[0].physical_schema
            probe = ds.FileSystemDataset(fragments, _with_fields(probe_schema, parts_schema), fmt, fs)
            fragments = list(probe.get_fragments(filter=filter))
            if not fragments:  # every partition filtered out: the columns of the first file
                schema = probe_schema
        if schema is None:
            schema = pa.unify_schemas([f.physical_schema for f in fragments], promote_options="permissive")
        data = ds.FileSystemDataset(fragments, _with_fields(schema, parts_schema), fmt, fs)
        if columns is not None:
            missing = [c for c in columns if c not in data.schema.names]
            if missing:
                raise ValueError(
                    f"{folder}: no column {missing} in the {dataset} partitions; they have {data.schema.names}"
                )
        return data.to_table(columns=columns, filter=filter)

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


def _with_fields(schema: pa.Schema, extra: pa.Schema) -> pa.Schema:
    """``schema`` followed by the fields of ``extra`` it lacks (the partition keys of a dataset)."""
    for field in extra:
        if field.name not in schema.names:
            schema = schema.append(field)
    return schema


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


def write_geoparquet(
    frame: gpd.GeoDataFrame,
    target: UPath,
    *,
    schema: pa.Schema | None = None,
    metadata: dict[str, str] | None = None,
) -> UPath:
    """Write a GeoDataFrame as GeoParquet atomically, with ``metadata`` in the file's schema metadata.

    GeoPandas writes the file (:meth:`geopandas.GeoDataFrame.to_parquet`: the WKB geometry
    column and the GeoParquet ``geo`` metadata: version, CRS, geometry types, bbox). Its writer
    takes no schema metadata, so its file is read back as an Arrow table and written with the
    lake's keys added by :func:`write_table` (the grid and the registries are small tables).

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        Written without its index.
    target : UPath
        File path of the GeoParquet file.
    schema : pyarrow.Schema, optional
        Arrow types of the columns, in this order (e.g. ``string`` where pandas gives
        ``large_string``); GeoPandas' schema and field metadata are kept.
    metadata : dict, optional
        Extra key/value pairs (e.g. the registry's ``version`` digest).
    """
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False, compression=None)
    table = pq.read_table(pa.BufferReader(buf.getvalue()))
    if schema is not None:
        fields = [f.with_metadata(table.schema.field(f.name).metadata) for f in schema]
        table = table.select(schema.names).cast(pa.schema(fields, metadata=table.schema.metadata))
    return write_table(table, target, metadata=metadata)


def read_geoparquet(target: UPath) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    """Read a GeoParquet file with GeoPandas, and its schema metadata.

    Returns
    -------
    frame : geopandas.GeoDataFrame
    metadata : dict
        The file's schema metadata as text (``geo``, ``pandas`` and what :func:`write_geoparquet` added),
        plus ``file_sha256``: the SHA-256 of the file's bytes.

    Raises
    ------
    FileNotFoundError
        ``target`` does not exist.
    ValueError
        ``target`` is not GeoParquet (no ``geo`` metadata); the message names it.
    """
    import geopandas as gpd

    with target.open("rb") as fh:
        raw = fh.read()
    md = {k.decode(): v.decode() for k, v in (pq.read_schema(pa.BufferReader(raw)).metadata or {}).items()}
    if "geo" not in md:
        raise ValueError(f"{target} is not GeoParquet: its schema metadata has no 'geo' key (keys: {sorted(md)})")
    md["file_sha256"] = hashlib.sha256(raw).hexdigest()
    return gpd.read_parquet(pa.BufferReader(raw)), md


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
