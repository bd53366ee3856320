"""Publish forecasts as per-run Parquet files behind an atomically swapped DuckDB catalog.

Readers never block a publish and never see half a run (design: ``docs/publishing.md``):

* A publish writes one **run version folder** in the store (:func:`store_dir`, next to the
  catalog: ``<home>/published/``)::

      runs/city=<city>/run_id=<run_id>/v-<published_at>-<random>/
          run.parquet  forecasts.parquet  cells.parquet  cell_channels.parquet

  first under a hidden temporary name, then renamed into place (one ``rename`` of a folder:
  the version exists whole or not at all). The rows were first inserted into the empty
  ``layout.*`` tables (built by the numbered migrations of ``sql/migrations``,
  :mod:`traffic.publish.migrations`) in a private in-memory DuckDB, so the layout's
  NOT NULL / CHECK / PRIMARY KEY constraints hold for every file.
* Then, under an exclusive ``fcntl`` lock on ``<store>/.catalog.lock``, the **catalog** is
  rebuilt from the store's listing (the source of truth: a run published by another process
  meanwhile is included), into a new DuckDB file next to the catalog, which is closed and
  ``os.replace``\\ d onto :func:`traffic.config.duckdb_path`. A session opened on the old
  catalog keeps reading the old file (and the run files it lists, which are kept for a grace
  period); a new session opens the new one. Nobody ever opens the catalog path read-write.

The catalog holds the ``forecast_runs`` table and the views ``forecasts``,
``latest_forecast``, ``cells``, ``run_cells``, ``cell_channels``, ``hotspots``
(``sql/views.sql``) over absolute paths of the files.

Publishing rules
----------------
* **Idempotent per run.** ``run_id`` is derived from ``city`` and ``issued_at`` only
  (:func:`run_id_for`); publishing the same city/issued_at again adds a newer version of the
  run, and the catalog lists only the newest version of every run.
* **Rows only with data.** A (cell, channel) gets forecast rows only where the caller says
  the model had data for it (``has_data``) *and* it has a finite congestion reference; every
  published row with a value has a congestion index and level. Every grid cell is kept in
  ``cells``/``run_cells`` with ``has_data`` and ``coverage``; per channel in ``cell_channels``.
* **Crash-safe.** A killed publish leaves at most a hidden temporary folder or catalog file,
  which no catalog lists and which later publishes remove (temporary run folders after the
  grace period, temporary catalogs at once, under the lock).

All SQL lives in ``sql/``; values are bound parameters. The only text put into SQL is an
identifier from :data:`ALLOWED_RELATIONS` or :data:`LAYOUT_TABLES` (:func:`check_identifier`)
and, in the catalog's view bodies (which cannot take parameters), the store's own file paths,
quoted by :func:`_sql_string`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traffic.channels import value_range
from traffic.config import duckdb_path
from traffic.errors import HotspotError, PublishError
from traffic.publish.congestion import (
    LEVEL_EDGES,
    LEVELS,
    NO_LEVEL,
    VOLUME_LEVEL_EDGES,
    VOLUME_LEVELS,
    congestion,
    is_speed_channel,
    volume,
)
from traffic.publish.migrations import migrate
from traffic.publish.reader import MEMORY_LIMIT, open_catalog
from traffic.publish.sql import check_identifier, sql_text, statement
from traffic.tempfiles import atomic_path, fsync

TABLES = ("forecast_runs",)
VIEWS = ("forecasts", "latest_forecast", "cells", "run_cells", "cell_channels", "hotspots")
#: Relations whose names may appear in SQL text; anything else is refused.
ALLOWED_RELATIONS = TABLES + VIEWS
#: Empty tables of schema ``layout`` (``sql/migrations``) = the layout of each per-run file.
LAYOUT_TABLES = ("forecast_runs", "forecasts", "cells", "cell_channels")
#: File of each layout table inside a run version folder.
RUN_FILES = {
    "forecast_runs": "run.parquet",
    "forecasts": "forecasts.parquet",
    "cells": "cells.parquet",
    "cell_channels": "cell_channels.parquet",
}
CELL_COLUMNS = ("cell_id", "row", "col", "centroid_lon", "centroid_lat", "polygon_wkt")
RUN_REQUIRED = ("model_name", "model_version", "issued_at")
RUN_OPTIONAL = (
    "mlflow_run_id",
    "data_start",
    "data_end",
    "horizon_steps",
    "bin_seconds",
    "model_kind",
    "kind",
    "interval_level",
    "interval_method",
    "timezone",
    "code_version",
)
RUN_KINDS = ("nightly", "refresh")
#: Default ``interval_level`` of a run that has bounds.
DEFAULT_INTERVAL_LEVEL = 0.8
#: Superseded run versions and abandoned temporary folders are deleted after this long (s).
DEFAULT_GRACE_S = 24 * 3600.0
#: Rows per Parquet row group of a run's forecasts file (sorted by target_time).
FORECAST_ROW_GROUP = 2048
#: Largest ``hours`` / ``limit`` a hotspot query accepts.
MAX_HOURS = 24 * 31
MAX_LIMIT = 100_000
_CITY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_VERSION_RE = re.compile(r"^v-(\d{8}T\d{12}Z)-[0-9a-f]{8}$")
_LOCK_WAIT_S = 0.05


log = logging.getLogger(__name__)


def _sql_string(path: Path) -> str:
    """A store path as a SQL string literal (only paths this module listed itself get here)."""
    text = str(path)
    if any(ord(ch) < 32 for ch in text):
        raise PublishError(f"store path {text!r} contains control characters")
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------- paths


def _db(db_path: str | Path | None) -> Path:
    return Path(db_path if db_path is not None else duckdb_path()).absolute()


def store_dir(db_path: str | Path | None = None) -> Path:
    """Folder of the per-run Parquet files behind a catalog: ``<catalog folder>/published``.

    With the defaults that is ``<TRAFFIC_HOME>/published`` next to ``<TRAFFIC_HOME>/forecasts.duckdb``.
    """
    return _db(db_path).parent / "published"


def _run_dir(store: Path, city: str, run_id: str) -> Path:
    return store / "runs" / f"city={city}" / f"run_id={run_id}"


def _versions(run_dir: Path) -> list[Path]:
    """Complete versions of one run, oldest first (hidden temporary folders are not versions)."""
    if not run_dir.is_dir():
        return []
    return sorted((p for p in run_dir.iterdir() if _VERSION_RE.match(p.name) and p.is_dir()), key=lambda p: p.name)


def _version_time(version: Path) -> pd.Timestamp:
    m = _VERSION_RE.match(version.name)
    if m is None:
        raise ValueError(f"{version} is not a run version folder")
    return pd.Timestamp(pd.to_datetime(m.group(1), format="%Y%m%dT%H%M%S%fZ", utc=True))


def list_runs(db_path: str | Path | None = None) -> dict[str, Path]:
    """Newest complete version folder of every run in the store, by run id (the store listing).

    Parameters
    ----------
    db_path : str or Path, optional
        Catalog file; its store is :func:`store_dir`.

    Returns
    -------
    dict
        ``{run_id: version folder}``, sorted by city then run id.
    """
    root = store_dir(db_path) / "runs"
    out: dict[str, Path] = {}
    if not root.is_dir():
        return out
    for city_dir in sorted(root.glob("city=*")):
        for run_dir in sorted(city_dir.glob("run_id=*")):
            versions = [v for v in _versions(run_dir) if all((v / f).is_file() for f in RUN_FILES.values())]
            if versions:
                out[run_dir.name.split("=", 1)[1]] = versions[-1]
    return out


# --------------------------------------------------------------------------- connections


def connect_catalog(
    db_path: str | Path | None = None, *, memory_limit: str = MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """Open the catalog read-only and confined (UTC session). It never blocks, and is never blocked by, a publish.

    The open is retried when a publish swapped the file during it, and the session can read
    only the store's run files (:func:`traffic.publish.reader.open_catalog`).

    Parameters
    ----------
    db_path : str or Path, optional
        Catalog file; default :func:`traffic.config.duckdb_path`.
    memory_limit : str
        DuckDB ``memory_limit`` of the session.

    Returns
    -------
    duckdb.DuckDBPyConnection
        The caller closes it. It sees the runs of the catalog it opened until closed.

    Raises
    ------
    FileNotFoundError
        When there is no catalog yet.
    """
    path = _db(db_path)
    return open_catalog(path, store_dir(path), memory_limit=memory_limit)


@contextmanager
def _reader(db_path: str | Path | None) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect_catalog(db_path)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def _catalog_lock(store: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive ``fcntl`` lock serialising catalog rebuilds of one store (released on exit or death)."""
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store / ".catalog.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another publish held {store / '.catalog.lock'} for more than {timeout_s} s"
                    ) from None
                time.sleep(_LOCK_WAIT_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _source(table: str, files: Sequence[Path], *, by_name: bool = False) -> str:
    """SQL source of a layout table's files: ``read_parquet`` of one schema, or ``by_name`` (runs and forecasts)."""
    if not files:
        return statement("source_empty").replace("{layout}", check_identifier(table, LAYOUT_TABLES).strip('"'))
    if by_name:  # files of older layouts among them: a column added since reads as NULL
        layout = check_identifier(table, ("forecast_runs", "forecasts")).strip('"')
        return (
            statement("source_by_name")
            .replace("{layout}", layout)
            .replace("{files}", ", ".join(_sql_string(f) for f in files))
        )
    return statement("source_files").replace("{files}", ", ".join(_sql_string(f) for f in files))


def _build_catalog(target: Path, versions: Mapping[str, Path]) -> None:
    """Write a complete catalog for ``versions`` (``{run_id: version folder}``) to ``target``."""
    con = duckdb.connect(str(target))
    try:
        con.execute("SET TimeZone = 'UTC'")
        migrate(con, db=str(target))
        run_files = [v / RUN_FILES["forecast_runs"] for v in versions.values()]
        # the runs table first: it says which run is the newest of each city
        views = sql_text("views.sql")
        runs_ddl, rest = re.split(r"^-- @views:.*$", views, maxsplit=1, flags=re.MULTILINE)
        try:
            con.execute(runs_ddl.replace("{runs}", _source("forecast_runs", run_files)))
        except (duckdb.InvalidInputException, duckdb.BinderException):
            # run files of a layout before a migration added a column: read them by name (slower, so not always)
            con.execute(runs_ddl.replace("{runs}", _source("forecast_runs", run_files, by_name=True)))
        latest = {r[0] for r in con.execute(statement("latest_run_ids")).fetchall()}
        latest_dirs = [v for r, v in versions.items() if r in latest]

        def view_sql(by_name: bool) -> str:
            sources = {
                "{forecasts}": _source(
                    "forecasts", [v / RUN_FILES["forecasts"] for v in versions.values()], by_name=by_name
                ),
                "{latest_forecasts}": _source(
                    "forecasts", [v / RUN_FILES["forecasts"] for v in latest_dirs], by_name=by_name
                ),
                "{run_cells}": _source("cells", [v / RUN_FILES["cells"] for v in versions.values()]),
                "{cells}": _source("cells", [v / RUN_FILES["cells"] for v in latest_dirs]),
                "{cell_channels}": _source(
                    "cell_channels", [v / RUN_FILES["cell_channels"] for v in versions.values()]
                ),
            }
            text = rest
            for key, src in sources.items():
                text = text.replace(key, src)
            return text

        try:
            con.execute(view_sql(by_name=False))
        except (duckdb.InvalidInputException, duckdb.BinderException):
            # forecast files of a layout before a migration added a column: read them by name
            con.execute(view_sql(by_name=True))
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _collect_garbage(store: Path, catalog: Path, grace_s: float) -> list[Path]:
    """Delete what no catalog can need any more (caller holds the catalog lock).

    * temporary catalogs of this catalog name (only the lock holder writes one);
    * run versions superseded more than ``grace_s`` ago (a session opened on an older catalog
      may still read them until then);
    * hidden temporary run folders older than ``grace_s`` (a publish killed while writing).
    """
    removed: list[Path] = []
    for tmp in catalog.parent.glob(f".{catalog.name}.*.tmp*"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    now = pd.Timestamp.now(tz="UTC")
    root = store / "runs"
    if not root.is_dir():
        return removed
    for run_dir in root.glob("city=*/run_id=*"):
        versions = _versions(run_dir)
        for old, newer in zip(versions, versions[1:], strict=False):
            if (now - _version_time(newer)).total_seconds() > grace_s:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old)
        for tmp in run_dir.glob(".tmp-*"):
            if time.time() - tmp.stat().st_mtime > grace_s:
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
    return removed


def rebuild_catalog(
    db_path: str | Path | None = None, *, lock_timeout_s: float = 60.0, grace_s: float = DEFAULT_GRACE_S
) -> dict[str, Any]:
    """Rebuild the catalog from the store listing and swap it into place atomically.

    Parameters
    ----------
    db_path : str or Path, optional
        Catalog file; default :func:`traffic.config.duckdb_path`. Its store is :func:`store_dir`.
    lock_timeout_s : float
        How long to wait for another process's rebuild of the same store.
    grace_s : float
        Superseded run versions are deleted this long after they were superseded.

    Returns
    -------
    dict
        ``db_path``, ``runs`` (number of runs listed), ``removed`` (paths garbage-collected),
        ``seconds``.
    """
    t0 = time.perf_counter()
    path = _db(db_path)
    store = store_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _catalog_lock(store, lock_timeout_s):
        removed = _collect_garbage(store, path, grace_s)
        versions = list_runs(path)
        with atomic_path(path, durable=True) as tmp:
            try:
                _build_catalog(tmp, versions)
            finally:
                Path(f"{tmp}.wal").unlink(missing_ok=True)
            # a WAL left by a writer of the old (single-file) design must not be replayed into the new file
            Path(f"{path}.wal").unlink(missing_ok=True)
    return {
        "db_path": str(path),
        "runs": len(versions),
        "removed": [str(p) for p in removed],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def init_db(db_path: str | Path | None = None, *, lock_timeout_s: float = 60.0) -> Path:
    """Create (or rebuild) the catalog from whatever the store holds; safe to call any number of times.

    Parameters
    ----------
    db_path : str or Path, optional
        Catalog file; default :func:`traffic.config.duckdb_path`.
    lock_timeout_s : float
        How long to wait for another process's rebuild.

    Returns
    -------
    Path
        The catalog file.
    """
    return Path(rebuild_catalog(db_path, lock_timeout_s=lock_timeout_s)["db_path"])


# --------------------------------------------------------------------------- validation


def _utc(value: Any, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"{what} = {value!r} is not a timestamp") from exc
    if ts is pd.NaT:
        raise PublishError(f"{what} is NaT")
    if ts.tzinfo is None:
        raise PublishError(f"{what} = {value!r} is naive; give a timezone-aware (UTC) timestamp")
    return ts.tz_convert("UTC")


def run_id_for(city: str, issued_at: Any) -> str:
    """Deterministic run id of a city's forecast issued at ``issued_at``.

    ``run_id_for("berlin", "2024-12-01T06:00Z") == "berlin_20241201T060000Z"``: the same
    city and instant always give the same id, whatever the timezone it is written in.
    """
    if not isinstance(city, str) or not _CITY_RE.match(city):
        raise PublishError(f"city {city!r} must match {_CITY_RE.pattern}")
    ts = _utc(issued_at, "issued_at")
    return f"{city}_{ts:%Y%m%dT%H%M%SZ}"


def _target_times(target_times: Any, h_out: int) -> pd.DatetimeIndex:
    try:
        tt = pd.DatetimeIndex(target_times)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"target_times {target_times!r} are not timestamps") from exc
    if tt.tz is None:
        raise PublishError("target_times are naive; give timezone-aware (UTC) times")
    tt = tt.tz_convert("UTC").as_unit("us")  # asi8 in microseconds from here on
    if len(tt) != h_out:
        raise PublishError(f"target_times has {len(tt)} entries but the forecast has {h_out} horizons")
    if tt.hasnans or (len(tt) > 1 and not (np.diff(tt.asi8) > 0).all()):
        raise PublishError(f"target_times must be strictly increasing without NaT: {list(tt)}")
    return tt


def city_timezone(city: str) -> str:
    """IANA timezone of a configured city (``cities/<city>.toml``); UTC, with a warning, otherwise.

    Parameters
    ----------
    city : str

    Returns
    -------
    str
        E.g. ``"Europe/Berlin"``.
    """
    from traffic.config import load_city

    try:
        return load_city(city).timezone
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        log.warning("city %r has no readable city file (%s); local times are shown in UTC", city, exc)
        return "UTC"


def _run_row(city: str, run: Mapping[str, Any], tt: pd.DatetimeIndex, has_bounds: bool) -> dict[str, Any]:
    missing = [k for k in RUN_REQUIRED if run.get(k) is None]
    unknown = sorted(set(run) - set(RUN_REQUIRED) - set(RUN_OPTIONAL))
    if missing or unknown:
        raise PublishError(
            f"run dict: missing {missing}, unknown {unknown}; required {list(RUN_REQUIRED)}, optional {list(RUN_OPTIONAL)}"
        )
    issued_at = _utc(run["issued_at"], "run['issued_at']")
    run_id = run_id_for(city, issued_at)
    if tt[0] < issued_at:
        raise PublishError(f"first target time {tt[0]} is before issued_at {issued_at}: a forecast targets its future")
    h_out = len(tt)
    if run.get("horizon_steps") is not None and int(run["horizon_steps"]) != h_out:
        raise PublishError(f"run['horizon_steps'] = {run['horizon_steps']} but the forecast has {h_out} horizons")
    steps = np.unique(np.diff(tt.asi8)) // 1_000_000
    if len(steps) > 1:
        raise PublishError(f"target_times are not evenly spaced: steps {steps.tolist()} s")
    bin_seconds = run.get("bin_seconds")
    if bin_seconds is None:
        if not len(steps):
            raise PublishError("a single-horizon forecast needs run['bin_seconds']")
        bin_seconds = int(steps[0])
    elif len(steps) and int(bin_seconds) != int(steps[0]):
        raise PublishError(f"run['bin_seconds'] = {bin_seconds} but target_times are {int(steps[0])} s apart")
    data = {k: (_utc(run[k], f"run[{k!r}]") if run.get(k) is not None else None) for k in ("data_start", "data_end")}
    if data["data_start"] is not None and data["data_end"] is not None and data["data_start"] > data["data_end"]:
        raise PublishError(f"run data_start {data['data_start']} is after data_end {data['data_end']}")
    model_kind = str(run.get("model_kind") or "model")
    if not _KIND_RE.match(model_kind):
        raise PublishError(
            f"run['model_kind'] = {model_kind!r}: 'model' or a baseline name matching {_KIND_RE.pattern}"
        )
    kind = str(run.get("kind") or "nightly")
    if kind not in RUN_KINDS:
        raise PublishError(f"run['kind'] = {kind!r}; allowed: {list(RUN_KINDS)}")
    level = run.get("interval_level")
    method = run.get("interval_method")
    if has_bounds:
        level = DEFAULT_INTERVAL_LEVEL if level is None else level
        if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < float(level) < 1:
            raise PublishError(f"run['interval_level'] = {level!r}; allowed: a number in (0, 1), e.g. 0.8")
        level = float(level)
        method = "unspecified" if method is None else str(method)
    else:
        level, method = None, None  # no bounds: no interval to describe
    tz = str(run.get("timezone") or city_timezone(city))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PublishError(f"run['timezone'] = {tz!r} is not an IANA zone (e.g. 'Europe/Berlin')") from exc
    bin_us = int(bin_seconds) * 1_000_000
    return {
        "run_id": run_id,
        "city": city,
        "model_name": str(run["model_name"]),
        "model_version": str(run["model_version"]),
        "model_kind": model_kind,
        "kind": kind,
        "mlflow_run_id": None if run.get("mlflow_run_id") is None else str(run["mlflow_run_id"]),
        "issued_at": issued_at.to_pydatetime(),
        "data_start": None if data["data_start"] is None else data["data_start"].to_pydatetime(),
        "data_end": None if data["data_end"] is None else data["data_end"].to_pydatetime(),
        "horizon_steps": h_out,
        "bin_seconds": int(bin_seconds),
        "target_start": tt[0].to_pydatetime(),
        "target_end": pd.Timestamp(int(tt.asi8[-1]) + bin_us, unit="us", tz="UTC").to_pydatetime(),
        "timezone": tz,
        "interval_level": level,
        "interval_method": method,
        "code_version": None if run.get("code_version") is None else str(run["code_version"]),
    }


def cells_table(city: str, cells: pd.DataFrame) -> pa.Table:
    """Validate a grid-cells frame and convert it to columns of the ``cells`` layout.

    Parameters
    ----------
    city : str
    cells : pandas.DataFrame
        Columns ``cell_id, row, col, centroid_lon, centroid_lat, polygon_wkt`` (extra
        columns are ignored); one row per cell, WGS84.

    Returns
    -------
    pyarrow.Table
        ``city, cell_id, row, col, centroid_lon, centroid_lat, polygon_wkt``.
    """
    if not isinstance(city, str) or not _CITY_RE.match(city):
        raise PublishError(f"city {city!r} must match {_CITY_RE.pattern}")
    missing = [c for c in CELL_COLUMNS if c not in cells.columns]
    if missing:
        raise PublishError(f"cells frame lacks columns {missing}; required: {list(CELL_COLUMNS)}")
    nulls = [c for c in CELL_COLUMNS if cells[c].isna().any()]
    if nulls:
        raise PublishError(f"cells frame has nulls in {nulls}")
    dup = cells["cell_id"][cells["cell_id"].duplicated()]
    if len(dup):
        raise PublishError(f"cells frame repeats cell_id {dup.head(5).tolist()}")
    lon, lat = cells["centroid_lon"].to_numpy(float), cells["centroid_lat"].to_numpy(float)
    if not ((np.abs(lon) <= 180).all() and (np.abs(lat) <= 90).all()):
        raise PublishError("cells centroid_lon/centroid_lat are not WGS84 degrees")
    n = len(cells)
    return pa.table(
        {
            "city": pa.array([city] * n, pa.string()),
            "cell_id": pa.array(cells["cell_id"].to_numpy(np.int64), pa.int32()),
            "row": pa.array(cells["row"].to_numpy(np.int64), pa.int32()),
            "col": pa.array(cells["col"].to_numpy(np.int64), pa.int32()),
            "centroid_lon": pa.array(lon, pa.float64()),
            "centroid_lat": pa.array(lat, pa.float64()),
            "polygon_wkt": pa.array(cells["polygon_wkt"].astype(str).tolist(), pa.string()),
        }
    )


def _check_grid(cells: pa.Table, cell_ids: np.ndarray) -> None:
    ids = cells.column("cell_id").to_numpy()
    unknown = np.setdiff1d(cell_ids.ravel(), ids)
    if len(unknown):
        raise PublishError(f"cell_ids {unknown[:5].tolist()} (of {len(unknown)}) are not in the cells frame")
    if len(np.unique(cell_ids)) != cell_ids.size:
        raise PublishError("cell_ids (H, W) repeats a cell id")
    h, w = cell_ids.shape
    rows, cols = cells.column("row").to_numpy(), cells.column("col").to_numpy()
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    wrong = inside & (cell_ids[np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)] != ids)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise PublishError(
            f"cells frame puts cell_id {ids[i]} at row {rows[i]}, col {cols[i]} but cell_ids has "
            f"{cell_ids[rows[i], cols[i]]} there ({int(wrong.sum())} cells disagree)"
        )


def _check_bounds(
    forecast: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if (lower is None) != (upper is None):
        raise PublishError("give both lower and upper, or neither")
    if lower is None or upper is None:
        return None, None
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    for name, arr in (("lower", lo), ("upper", hi)):
        if arr.shape != forecast.shape:
            raise PublishError(f"{name} has shape {arr.shape}; it must be the forecast's {forecast.shape}")
    valued = np.isfinite(forecast)
    for name, arr in (("lower", lo), ("upper", hi)):
        bad = valued & ~np.isfinite(arr)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PublishError(
                f"{name} is NaN/inf at {int(bad.sum())} (horizon, channel, row, col) positions with a forecast "
                f"value, first {at}; a bound may be missing only where the value is"
            )
    crossed = valued & (lo > hi)
    if crossed.any():
        at = tuple(int(i) for i in np.argwhere(crossed)[0])
        raise PublishError(
            f"lower > upper at {int(crossed.sum())} positions, first {at}: {lo[at]} > {hi[at]}; need lower <= upper"
        )
    outside = valued & ((forecast < lo) | (forecast > hi))
    if outside.any():
        at = tuple(int(i) for i in np.argwhere(outside)[0])
        raise PublishError(
            f"value outside its interval at {int(outside.sum())} (horizon, channel, row, col) positions, first {at}: "
            f"{forecast[at]} not in [{lo[at]}, {hi[at]}]; need lower <= value <= upper "
            "(traffic.forecast.plausible.plausible_forecast)"
        )
    return np.where(valued, lo, np.nan), np.where(valued, hi, np.nan)


def _check_ranges(forecast: np.ndarray, channels: Sequence[str]) -> None:
    """Refuse values no channel can take (:func:`traffic.channels.value_range`): a negative count, a speed above the limit."""
    for k, name in enumerate(channels):
        low, high = value_range(name)
        v = forecast[:, k]
        bad = np.isfinite(v) & ((v < low) | (v > high))
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PublishError(
                f"channel {name}: {int(bad.sum())} forecast values outside [{low:g}, {high:g}], first {v[at]} at "
                f"(horizon, row, col) {at}; clip with traffic.forecast.plausible.plausible_forecast"
            )


def forecast_table(
    run_id: str,
    city: str,
    forecast: np.ndarray,
    target_times: pd.DatetimeIndex,
    channels: Sequence[str],
    cell_ids: np.ndarray,
    has_data: np.ndarray,
    reference: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> pa.Table:
    """Rows of ``forecasts`` for one run, built with array operations (no per-row loop).

    Only positions with data are kept: ``has_data`` (``(C, H, W)`` or ``(H_out, C, H, W)``)
    and a finite ``reference``. Row order is horizon, channel, grid row, grid column.

    Parameters
    ----------
    run_id, city : str
    forecast : np.ndarray
        ``(H_out, C, H, W)`` in original units.
    target_times : pandas.DatetimeIndex
        ``H_out`` UTC bin starts.
    channels : sequence of str
    cell_ids : np.ndarray
        ``(H, W)``.
    has_data : np.ndarray
        ``(C, H, W)`` or ``(H_out, C, H, W)`` bool.
    reference : np.ndarray
        ``(C, H, W)``.
    lower, upper : np.ndarray, optional
        ``(H_out, C, H, W)`` interval bounds (NaN where the value is NaN); None: NULL bounds.

    Returns
    -------
    pyarrow.Table
        Columns of ``layout.forecasts``.
    """
    h_out, c, h, w = forecast.shape
    index, level = congestion(forecast, reference, channels)
    vol_index, vol_level = volume(forecast, reference, channels)
    keep = np.broadcast_to(has_data & np.isfinite(reference), forecast.shape).ravel()
    pos = np.flatnonzero(keep)
    n = len(pos)
    hz, ch, rr, cc = np.unravel_index(pos, forecast.shape)
    names = np.array((*LEVELS, None), dtype=object)  # code -1 -> None
    vol_names = np.array((*VOLUME_LEVELS, None), dtype=object)
    none = pa.nulls(n, pa.float64())

    def col(a: np.ndarray | None) -> pa.Array:
        return none if a is None else pa.array(a.ravel()[pos], pa.float64(), from_pandas=True)

    return pa.table(
        {
            "run_id": pa.array([run_id], pa.string()).take(np.zeros(n, np.int64)),
            "city": pa.array([city], pa.string()).take(np.zeros(n, np.int64)),
            "cell_id": pa.array(cell_ids[rr, cc].astype(np.int32)),
            "target_time": pa.array(target_times.as_unit("us").asi8[hz], pa.timestamp("us", tz="UTC")),
            "horizon": pa.array((hz + 1).astype(np.int16)),
            "channel": pa.array(list(channels), pa.string()).take(ch),
            "value": col(forecast.astype(np.float64)),
            "lower": col(lower),
            "upper": col(upper),
            "congestion_index": col(index),
            "congestion_level": pa.array(names[np.where(keep, level.ravel(), NO_LEVEL)[pos]], pa.string()),
            "volume_index": col(vol_index),
            "volume_level": pa.array(vol_names[np.where(keep, vol_level.ravel(), NO_LEVEL)[pos]], pa.string()),
            "has_data": pa.array(np.ones(n, bool)),
        }
    )


def _coverage_arrays(
    has_data: np.ndarray, reference: np.ndarray, coverage: Any, cell_coverage: Any, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per (C, H, W) has_data, per-channel coverage and per-cell coverage (validated)."""
    data = (has_data if has_data.ndim == 3 else has_data.any(axis=0)) & np.isfinite(reference)
    cov = None
    if coverage is not None:
        cov = np.asarray(coverage, dtype=np.float64)
        if cov.shape != shape:
            raise PublishError(f"coverage has shape {cov.shape}; the forecast needs (C, H, W) = {shape}")
        bad = np.isfinite(cov) & ((cov < 0) | (cov > 1))
        if bad.any():
            raise PublishError(
                f"coverage must be a share in [0, 1]; {int(bad.sum())} values outside, e.g. {cov[bad][0]}"
            )
    cell_cov = None
    if cell_coverage is not None:
        cell_cov = np.asarray(cell_coverage, dtype=np.float64)
        if cell_cov.shape != shape[1:]:
            raise PublishError(f"cell_coverage has shape {cell_cov.shape}; the forecast needs (H, W) = {shape[1:]}")
        if (np.isfinite(cell_cov) & ((cell_cov < 0) | (cell_cov > 1))).any():
            raise PublishError("cell_coverage must be a share in [0, 1]")
    elif cov is not None:
        with np.errstate(invalid="ignore"):
            cell_cov = np.where(
                np.isfinite(cov).any(axis=0), np.nanmax(np.where(np.isfinite(cov), cov, -1), axis=0), np.nan
            )
    return data, cov, cell_cov


def _cell_tables(
    run_id: str,
    cells: pa.Table,
    channels: Sequence[str],
    cell_ids: np.ndarray,
    data: np.ndarray,
    cov: np.ndarray | None,
    cell_cov: np.ndarray | None,
    reference: np.ndarray,
) -> tuple[pa.Table, pa.Table]:
    """``layout.cells`` (every cell of ``cells``) and ``layout.cell_channels`` rows of one run."""
    h, w = cell_ids.shape
    n = cells.num_rows
    ids = cells.column("cell_id").to_numpy()
    order = np.argsort(cell_ids.ravel())
    sorted_ids = cell_ids.ravel()[order]
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(sorted_ids.size - 1, 0))
    on_grid = sorted_ids[pos] == ids  # a cell of the frame outside the forecast grid: no data
    flat = np.where(on_grid, order[pos], 0)
    per_cell = data.reshape(len(channels), h * w)[:, flat] & on_grid  # (C, n)
    cell_cov_v = np.full(n, np.nan) if cell_cov is None else np.where(on_grid, cell_cov.ravel()[flat], np.nan)
    run_ids = pa.array([run_id], pa.string())
    cells_out = cells.append_column("run_id", run_ids.take(np.zeros(n, np.int64)))
    cells_out = cells_out.append_column("has_data", pa.array(per_cell.any(axis=0)))
    cells_out = cells_out.append_column("coverage", pa.array(cell_cov_v, pa.float64(), from_pandas=True))
    cells_out = cells_out.append_column("n_channels_with_data", pa.array(per_cell.sum(axis=0).astype(np.int16)))
    c = len(channels)
    city = cells.column("city")[0].as_py() if n else ""
    cov_v = np.full((c, n), np.nan) if cov is None else np.where(on_grid, cov.reshape(c, h * w)[:, flat], np.nan)
    ref_v = np.where(on_grid, reference.reshape(c, h * w)[:, flat], np.nan)
    chans = pa.table(
        {
            "run_id": run_ids.take(np.zeros(c * n, np.int64)),
            "city": pa.array([city], pa.string()).take(np.zeros(c * n, np.int64)),
            "cell_id": pa.array(np.tile(ids.astype(np.int32), c)),
            "channel": pa.array(list(channels), pa.string()).take(np.repeat(np.arange(c), n)),
            "has_data": pa.array(per_cell.ravel()),
            "coverage": pa.array(cov_v.ravel(), pa.float64(), from_pandas=True),
            "reference": pa.array(ref_v.ravel(), pa.float64(), from_pandas=True),
        }
    )
    return cells_out, chans


# --------------------------------------------------------------------------- writes


def _staged(tables: Mapping[str, pa.Table]) -> dict[str, pa.Table]:
    """Insert the rows into the ``layout`` tables of a private in-memory DuckDB (constraints
    enforced) and read them back in the schema's exact types, without the hive keys."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        migrate(con)
        out = {}
        for name, table in tables.items():
            ident = check_identifier(name, LAYOUT_TABLES)
            con.register("staged", table)
            con.execute(statement("stage_rows").replace("{layout}", ident))
            con.unregister("staged")
            out[name] = con.sql(statement("staged_rows").replace("{layout}", ident)).to_arrow_table()
        return out
    finally:
        con.close()


def _write_version(run_dir: Path, version: str, tables: Mapping[str, pa.Table]) -> Path:
    """Write a run version folder under a hidden name, then rename it into place (atomic)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".tmp-{version}"
    final = run_dir / version
    tmp.mkdir()
    try:
        for name, table in tables.items():
            target = tmp / RUN_FILES[name]
            if name == "forecasts":  # time-ordered, small row groups: a time window reads few of them
                order = [("target_time", "ascending"), ("channel", "ascending"), ("cell_id", "ascending")]
                table = table.sort_by(order)
            pq.write_table(table, target, compression="zstd", row_group_size=FORECAST_ROW_GROUP)
            fsync(target)
        os.rename(tmp, final)  # the version appears whole or not at all
        fsync(run_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def publish_forecast(
    db_path: str | Path | None,
    *,
    city: str,
    run: Mapping[str, Any],
    forecast: np.ndarray,
    target_times: Any,
    channels: Sequence[str],
    cells: pd.DataFrame,
    cell_ids: np.ndarray,
    has_data: np.ndarray,
    reference: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
    cell_coverage: np.ndarray | None = None,
    lock_timeout_s: float = 60.0,
    grace_s: float = DEFAULT_GRACE_S,
) -> dict[str, Any]:
    """Publish one forecast run of a city, replacing a previous publish of the same run.

    Parameters
    ----------
    db_path : str or Path or None
        Catalog file; None = :func:`traffic.config.duckdb_path`. The run files go to
        :func:`store_dir` of it.
    city : str
        City name.
    run : dict
        ``model_name``, ``model_version``, ``issued_at`` (tz-aware) required. Optional:
        ``mlflow_run_id``, ``data_start``, ``data_end``; ``horizon_steps``, ``bin_seconds``
        (default to what ``target_times`` say and must agree with them); ``model_kind``
        (default ``'model'``; a baseline name such as ``'gbm'`` when a baseline's forecast is
        published); ``kind`` (``'nightly'``, default, or ``'refresh'``); ``interval_level``
        (default 0.8 when bounds are given) and ``interval_method`` (default
        ``'unspecified'`` when bounds are given; both NULL without bounds); ``timezone``
        (default the city file's, else UTC).
    forecast : np.ndarray
        ``(H_out, C, H, W)`` forecast in original units.
    target_times : sequence of timestamps
        ``H_out`` tz-aware bin starts, evenly spaced, none before ``issued_at``.
    channels : sequence of str
        ``C`` channel names.
    cells : pandas.DataFrame
        Grid cells ``cell_id, row, col, centroid_lon, centroid_lat, polygon_wkt`` (WGS84);
        every one is published in ``cells`` with its coverage.
    cell_ids : np.ndarray
        ``(H, W)`` cell id of every grid position (``GridTensor.cell_ids``).
    has_data : np.ndarray
        ``(C, H, W)`` bool: the model had data for the cell and channel; or ``(H_out, C, H, W)``
        when that depends on the target bin. Rows are published only where it is True and the
        reference is finite.
    reference : np.ndarray
        ``(C, H, W)`` from :func:`traffic.publish.congestion.reference_stats`.
    lower, upper : np.ndarray, optional
        ``(H_out, C, H, W)`` bounds of the ``interval_level`` interval, same units as the
        forecast, finite wherever the forecast is, ``lower <= upper``. None: NULL bounds.
    coverage : np.ndarray, optional
        ``(C, H, W)`` share of the input window's bins in which the cell observed the channel.
    cell_coverage : np.ndarray, optional
        ``(H, W)`` share of the bins in which the cell observed any channel; default the
        largest per-channel ``coverage``.
    lock_timeout_s : float
        How long to wait for another process's catalog rebuild.
    grace_s : float
        Superseded run versions older than this are deleted (see :func:`rebuild_catalog`).

    Returns
    -------
    dict
        ``run_id``, ``city``, ``db_path``, ``version``, ``replaced`` (an earlier version of the
        run existed), ``n_rows``, ``n_rows_with_level`` (a congestion or a volume level),
        ``n_heavy`` (rows at congestion level heavy or worse), ``n_cells``, ``n_cells_with_data``, ``seconds``, ``catalog_seconds``.

    Raises
    ------
    PublishError
        When inputs disagree (shapes, times, cells, bounds); raised before anything is written.
    duckdb.ConstraintException
        When a row breaks a constraint of the layout (``sql/migrations``); nothing is written.
    """
    t0 = time.perf_counter()
    forecast = np.asarray(forecast, dtype=np.float64)
    if forecast.ndim != 4:
        raise PublishError(f"forecast must be (H_out, C, H, W), got shape {forecast.shape}")
    h_out, c, h, w = forecast.shape
    channels = [str(x) for x in channels]
    if len(channels) != c or len(set(channels)) != c:
        raise PublishError(f"forecast has {c} channels; channel names must be {c} unique names, got {channels}")
    cell_ids = np.asarray(cell_ids)
    has_data = np.asarray(has_data)
    reference = np.asarray(reference, dtype=np.float64)
    for name, arr, shapes in (
        ("cell_ids", cell_ids, [(h, w)]),
        ("has_data", has_data, [(c, h, w), (h_out, c, h, w)]),
        ("reference", reference, [(c, h, w)]),
    ):
        if arr.shape not in shapes:
            need = " or ".join(map(str, shapes))
            raise PublishError(f"{name} has shape {arr.shape}; forecast {forecast.shape} needs {need}")
    if has_data.dtype != bool:
        raise PublishError(f"has_data must be bool, got {has_data.dtype}")
    if not np.issubdtype(cell_ids.dtype, np.integer):
        raise PublishError(f"cell_ids must be integers, got {cell_ids.dtype}")
    _check_ranges(forecast, channels)
    lo, hi = _check_bounds(forecast, lower, upper)
    tt = _target_times(target_times, h_out)
    run_row = _run_row(city, run, tt, has_bounds=lo is not None)
    run_id = run_row["run_id"]
    cells_tb = cells_table(city, cells)
    _check_grid(cells_tb, cell_ids)
    data, cov, cell_cov = _coverage_arrays(has_data, reference, coverage, cell_coverage, (c, h, w))
    rows = forecast_table(run_id, city, forecast, tt, channels, cell_ids, has_data, reference, lo, hi)
    cells_out, chans = _cell_tables(run_id, cells_tb, channels, cell_ids, data, cov, cell_cov, reference)
    published_at = pd.Timestamp.now(tz="UTC")
    version = f"v-{published_at:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
    run_row.update(
        channels=channels,
        n_rows=rows.num_rows,
        n_cells=cells_out.num_rows,
        n_cells_with_data=int(np.count_nonzero(cells_out.column("has_data").to_numpy(zero_copy_only=False))),
        published_at=published_at.to_pydatetime(),
        version=version,
    )
    runs_tb = pa.Table.from_pylist([run_row])
    staged = _staged({"forecast_runs": runs_tb, "forecasts": rows, "cells": cells_out, "cell_channels": chans})

    path = _db(db_path)
    store = store_dir(path)
    run_dir = _run_dir(store, city, run_id)
    replaced = bool(_versions(run_dir))
    _write_version(run_dir, version, staged)
    t1 = time.perf_counter()
    rebuild_catalog(path, lock_timeout_s=lock_timeout_s, grace_s=grace_s)
    levels = rows.column("congestion_level").to_numpy(zero_copy_only=False)
    return {
        "run_id": run_id,
        "city": city,
        "db_path": str(path),
        "version": version,
        "replaced": replaced,
        "n_rows": rows.num_rows,
        "n_rows_with_level": int(
            np.count_nonzero(
                rows.column("congestion_level").is_valid().to_numpy(zero_copy_only=False)
                | rows.column("volume_level").is_valid().to_numpy(zero_copy_only=False)
            )
        ),
        "n_heavy": int(np.isin(levels, ("heavy", "severe")).sum()),
        "n_cells": cells_out.num_rows,
        "n_cells_with_data": run_row["n_cells_with_data"],
        "seconds": round(time.perf_counter() - t0, 3),
        "catalog_seconds": round(time.perf_counter() - t1, 3),
    }


# --------------------------------------------------------------------------- reads


#: What a hotspot query ranks: ``congestion`` (speed channels, the default) or ``volume`` (a volume
#: channel asked for by name): its index and level columns, the smallest index of each level (the
#: ``min_level``), the default ``min_level`` and the lowest of its two worst levels (``heavy_slots``).
MEASURES: dict[str, dict[str, Any]] = {
    "congestion": {
        "columns": ("congestion_index", "congestion_level"),
        "min_index": dict(zip(LEVELS, (0.0, *LEVEL_EDGES), strict=True)),
        "default_level": "moderate",
        "heavy_level": "heavy",
    },
    "volume": {
        "columns": ("volume_index", "volume_level"),
        "min_index": dict(zip(VOLUME_LEVELS, (0.0, *VOLUME_LEVEL_EDGES), strict=True)),
        "default_level": "busy",
        "heavy_level": "busy",
    },
}


def measure_of(channel: str | None) -> str:
    """What a hotspot query for ``channel`` ranks: ``volume`` for a volume channel, else ``congestion`` (speeds)."""
    return "volume" if channel is not None and not is_speed_channel(channel) else "congestion"


@dataclass(frozen=True)
class Hotspots:
    """Answer of :func:`find_hotspots`: the run and window used, and one row per cell.

    Attributes
    ----------
    run : dict
        ``run_id, model_name, model_version, model_kind, kind, issued_at, published_at,
        target_start, target_end, bin_seconds, timezone, channels, interval_level``.
    start, end : pandas.Timestamp
        The window ``[start, end)`` (UTC), ``end`` cut at the run's last target bin.
    timezone : str
        The city's zone (from the run) for local times.
    rows : pandas.DataFrame
        ``city, run_id, cell_id, row, col, centroid_lon, centroid_lat, target_time, horizon,
        channel, value, lower, upper, congestion_index, congestion_level, slots, heavy_slots``
        (``volume_index, volume_level`` in place of the congestion pair when ``measure`` is
        ``volume``): each cell's worst (time, channel) in the window, worst cells first.
    measure : str
        What was ranked: ``congestion`` (speed channels) or ``volume`` (:data:`MEASURES`).
    """

    run: dict[str, Any]
    start: pd.Timestamp
    end: pd.Timestamp
    timezone: str
    rows: pd.DataFrame
    measure: str = "congestion"


def _parse_at(at: Any, tz: str) -> pd.Timestamp:
    """A time as a UTC instant: naive = local wall-clock time of ``tz``."""
    try:
        ts = pd.Timestamp(at)
    except (TypeError, ValueError) as exc:
        raise HotspotError(
            f"--at {at!r} is not a time; give local wall-clock time like '2012-03-08 07:00' or ISO with offset"
        ) from exc
    if ts is pd.NaT:
        raise HotspotError(f"--at {at!r} is not a time")
    if ts.tzinfo is None:
        try:
            ts = ts.tz_localize(tz, ambiguous="raise", nonexistent="raise")
        except (ValueError, TypeError) as exc:  # pytz-style errors derive from ValueError
            raise HotspotError(
                f"--at {at!r} does not exist or is ambiguous in {tz} (a DST change); give an offset, e.g. '{ts.isoformat()}-07:00'"
            ) from exc
    return ts.tz_convert("UTC")


def _local(ts: Any, tz: str) -> str:
    return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d %H:%M %Z")


def _check_hours(hours: Any) -> float:
    try:
        value = float(hours)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(hours, bool) or not np.isfinite(value) or not 0 < value <= MAX_HOURS:
        raise HotspotError(f"hours must be a number with 0 < hours <= {MAX_HOURS}, got {hours!r}")
    return value


def _check_limit(limit: Any) -> int:
    ok = isinstance(limit, int | np.integer) and not isinstance(limit, bool)
    if isinstance(limit, str) and re.fullmatch(r"\s*\d+\s*", limit):
        limit, ok = int(limit), True
    if not ok or not 1 <= int(limit) <= MAX_LIMIT:
        raise HotspotError(f"limit must be a whole number with 1 <= limit <= {MAX_LIMIT}, got {limit!r}")
    return int(limit)


def find_hotspots(
    db_path: str | Path | None,
    city: str,
    hours: Any = 3,
    limit: Any = 20,
    *,
    at: Any = None,
    channel: str | None = None,
    min_level: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Hotspots:
    """Where will it jam in the next ``hours``? From the newest run that covers ``at``.

    A run covers ``at`` when ``target_start <= at < target_end`` (its first target bin start
    to its last target bin's end). Read-only: never blocks or waits for a publish.
    Statements: ``sql/hotspots.sql``.

    Congestion is ranked by default: the congestion index of the speed channels (a volume row
    has none). A volume channel asked for by ``channel`` is ranked by its volume index and
    levels instead (``quiet`` .. ``peak``; ``measure`` of the answer says which).

    Parameters
    ----------
    db_path : str or Path or None
        Catalog file; None = :func:`traffic.config.duckdb_path`.
    city : str
        A city with published runs.
    hours : float
        Window length, ``0 < hours <= MAX_HOURS``.
    limit : int
        Most cells returned, ``1 <= limit <= MAX_LIMIT``.
    at : timestamp or str, optional
        Window start; naive = local wall-clock time of the city (``"2012-03-08 07:00"``),
        else any offset. Default: now if a run covers it, else the newest run's first target.
    channel : str, optional
        Only this channel (one of the run's channels).
    min_level : str, optional
        Lowest level listed. Congestion: ``'moderate'`` (default), ``'heavy'``, ``'severe'`` or
        ``'free'``; a volume channel: ``'busy'`` (default), ``'peak'``, ``'normal'`` or ``'quiet'``.
    con : duckdb.DuckDBPyConnection, optional
        An open session from :func:`connect_catalog` to ask in (it sees the catalog it
        opened); default: open the catalog at ``db_path`` read-only for this call only.

    Returns
    -------
    Hotspots
        The run, the window and one row per cell at ``min_level`` or worse (its worst moment).

    Raises
    ------
    HotspotError
        Bad ``hours``/``limit``/``channel``/``min_level``/``at``, a city without runs, or an
        ``at`` no run covers; the message says what is allowed.
    FileNotFoundError
        When there is no catalog.
    """
    if not isinstance(city, str) or not _CITY_RE.match(city):
        raise HotspotError(f"city {city!r} must be a city name matching {_CITY_RE.pattern}")
    hours = _check_hours(hours)
    limit = _check_limit(limit)
    allowed = MEASURES[measure_of(channel)]["min_index"]
    if min_level is not None and min_level not in allowed:
        what = f"channel {channel}" if channel is not None else "congestion (speed channels)"
        raise HotspotError(f"min_level {min_level!r} for {what}; allowed: {list(allowed)}")
    if con is None:
        with _reader(db_path) as own:
            return _find_hotspots(own, city, hours, limit, at, channel, min_level)
    return _find_hotspots(con, city, hours, limit, at, channel, min_level)


def _city_info(con: duckdb.DuckDBPyConnection, city: str) -> tuple[str, pd.Timestamp]:
    """The zone of the city's newest run and the default window start; raises for a city without runs."""
    n_runs, tz, default_at = con.execute(statement("city_info", "hotspots.sql"), {"city": city}).fetchall()[0]
    if not n_runs:
        cities = [r[0] for r in con.execute(statement("cities_with_runs")).fetchall()]
        raise HotspotError(f"city {city!r} has no published run; cities with runs: {cities}")
    return tz, pd.Timestamp(default_at).tz_convert("UTC")


def _find_hotspots(
    con: duckdb.DuckDBPyConnection,
    city: str,
    hours: float,
    limit: int,
    at: Any,
    channel: str | None,
    min_level: str | None,
) -> Hotspots:
    measure = MEASURES[measure_of(channel)]
    index_col, level_col = measure["columns"]
    aware = at is not None and _is_time(at) and pd.Timestamp(at).tzinfo is not None
    if aware:  # the city's zone is not needed to read the time
        at_utc = _parse_at(at, "UTC")
    else:
        tz, default_at = _city_info(con, city)
        at_utc = default_at if at is None else _parse_at(at, tz)
    cur = con.execute(statement("pick_run", "hotspots.sql"), {"city": city, "at": at_utc.to_pydatetime()})
    names = [d[0] for d in cur.description]
    found = cur.fetchall()
    if not found:
        tz = _city_info(con, city)[0]  # raises for a city without runs
        spans = con.execute(statement("covered", "hotspots.sql"), {"city": city}).fetchall()
        shown = ", ".join(f"{_local(s, tz)} .. {_local(e, tz)}" for s, e in spans[:5])
        more = f" (+{len(spans) - 5} more)" if len(spans) > 5 else ""
        raise HotspotError(
            f"--at {_local(at_utc, tz)} is outside every {city} run; runs cover [start, end): {shown}{more}"
        )
    run = dict(zip(names, found[0], strict=True))
    if channel is not None and channel not in run["channels"]:
        raise HotspotError(f"unknown channel {channel!r} for {city}; allowed: {list(run['channels'])}")
    folder = Path(run.pop("folder"))
    start = at_utc
    end = min(start + pd.Timedelta(hours=hours), pd.Timestamp(run["target_end"]).tz_convert("UTC"))
    cur = con.execute(
        statement("hotspots", "hotspots.sql").replace("{index}", index_col).replace("{level}", level_col),
        {
            "forecasts": str(folder / RUN_FILES["forecasts"]),
            "cells": str(folder / RUN_FILES["cells"]),
            "start": start.to_pydatetime(),
            "end": end.to_pydatetime(),
            "bin_seconds": int(run["bin_seconds"]),
            "channel": channel,
            "min_index": measure["min_index"][min_level or measure["default_level"]],
            "heavy_index": measure["min_index"][measure["heavy_level"]],
            "limit": limit,
        },
    )
    # a few rows: building the frame from tuples is cheaper than a pandas result conversion
    rows = pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
    for col in ("centroid_lon", "centroid_lat", "value", "lower", "upper", index_col):
        if rows[col].dtype != np.float64:  # all-NULL bounds (or no rows) come back as objects
            rows[col] = rows[col].astype(np.float64)
    rows["target_time"] = pd.to_datetime(rows["target_time"], utc=True)
    return Hotspots(run=run, start=start, end=end, timezone=run["timezone"], rows=rows, measure=measure_of(channel))


def _is_time(at: Any) -> bool:
    try:
        return pd.Timestamp(at) is not pd.NaT
    except (TypeError, ValueError):
        return False


def hotspots(
    db_path: str | Path | None,
    city: str,
    hours: Any = 3,
    limit: Any = 20,
    *,
    at: Any = None,
    channel: str | None = None,
    min_level: str | None = None,
) -> pd.DataFrame:
    """The rows of :func:`find_hotspots` (same parameters): one row per cell, worst first.

    Returns
    -------
    pandas.DataFrame
        See :attr:`Hotspots.rows`.
    """
    return find_hotspots(db_path, city, hours, limit, at=at, channel=channel, min_level=min_level).rows


def latest_runs(db_path: str | Path | None = None) -> pd.DataFrame:
    """Newest run of every city (``forecast_runs`` rows with ``is_latest``), read-only.

    Returns
    -------
    pandas.DataFrame
        One row per city, ``n_rows`` the run's forecast row count.
    """
    with _reader(db_path) as con:
        return con.execute(statement("latest_runs")).df()


def read_relation(db_path: str | Path | None, name: str, *, city: str | None = None) -> pd.DataFrame:
    """All rows of an allow-listed table or view, optionally of one city (read-only).

    Parameters
    ----------
    db_path : str or Path or None
        Catalog file.
    name : str
        One of :data:`ALLOWED_RELATIONS`.
    city : str, optional
        Only this city's rows.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`ALLOWED_RELATIONS`.
    """
    query = statement("read_relation").replace("{relation}", check_identifier(name, ALLOWED_RELATIONS))
    with _reader(db_path) as con:
        return con.execute(query, {"city": city}).df()
