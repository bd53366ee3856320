"""Publish forecasts to the analysts' DuckDB file.

The DuckDB file (:func:`traffic.config.duckdb_path`) holds three tables and two views,
defined in ``sql/schema.sql`` and ``sql/views.sql``:

``forecast_runs``
    one row per (city, issued_at): model, MLflow run, input window.
``forecasts``
    one row per (run, cell, horizon, channel): value, congestion index and level.
``cells``
    the city grid: row/col, WGS84 centroid and outline (WKT).
``latest_forecast`` / ``hotspots`` (views)
    the newest run of each city; its cells at level ``heavy`` or worse.

Publishing rules
----------------
* **Idempotent per run.** ``run_id`` is derived from ``city`` and ``issued_at`` only
  (:func:`run_id_for`); publishing the same city/issued_at again replaces that run.
* **Atomic.** Cells upsert, delete of the old run and insert of the new one happen in one
  transaction; any error rolls everything back, so a reader sees the previous run or the
  new one, never half of one.
* **Cells without data are published, flagged** ``has_data = false``, with the model's
  value but no congestion index or level (a CHECK constraint enforces it), so they never
  appear in ``hotspots``; map clients can still draw them grey. A cell has data for a
  channel when the caller says so (``has_data``) *and* it has a reference (``reference``
  is finite), because the index cannot be computed without one.
* **One writer.** DuckDB lets one process hold a read-write connection, and read-only
  connections of other processes conflict with it. Every function here opens, works and
  closes; a lock held by another process is waited for up to ``lock_timeout_s``.

All SQL lives in ``sql/``; values are bound parameters, and the only identifiers ever put
into SQL text come from :data:`ALLOWED_RELATIONS` (:func:`check_identifier`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from traffic.config import PROJECT_ROOT, duckdb_path
from traffic.publish.congestion import LEVELS, NO_LEVEL, congestion

SQL_DIR = PROJECT_ROOT / "sql"
TABLES = ("forecast_runs", "forecasts", "cells")
VIEWS = ("latest_forecast", "hotspots")
#: Relations whose names may appear in SQL text; anything else is refused.
ALLOWED_RELATIONS = TABLES + VIEWS
CELL_COLUMNS = ("cell_id", "row", "col", "centroid_lon", "centroid_lat", "polygon_wkt")
RUN_REQUIRED = ("model_name", "model_version", "issued_at")
RUN_OPTIONAL = ("mlflow_run_id", "data_start", "data_end", "horizon_steps", "bin_seconds")
_CITY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_STATEMENT_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_LOCK_WAIT_S = 0.2


class PublishError(ValueError):
    """Inputs of a publish do not fit together; nothing was written."""


# --------------------------------------------------------------------------- SQL files


@cache
def sql_text(filename: str) -> str:
    """Text of ``sql/<filename>``."""
    path = SQL_DIR / filename
    if not path.is_file():
        known = sorted(p.name for p in SQL_DIR.glob("*.sql"))
        raise FileNotFoundError(f"no SQL file {path}; files: {known}")
    return path.read_text()


@cache
def statements(filename: str = "publish.sql") -> dict[str, str]:
    """Named statements of a SQL file (blocks introduced by ``-- name: <name>``)."""
    text = sql_text(filename)
    parts = _STATEMENT_RE.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def _stmt(name: str) -> str:
    named = statements()
    if name not in named:
        raise KeyError(f"sql/publish.sql has no statement {name!r}; statements: {sorted(named)}")
    return named[name]


def check_identifier(name: str, allowed: Sequence[str] = ALLOWED_RELATIONS) -> str:
    """Return ``name`` double-quoted if it is in the allow-list, else raise.

    Parameters
    ----------
    name : str
        A table or view name.
    allowed : sequence of str
        Names that may be used.

    Raises
    ------
    ValueError
        Naming the refused identifier and listing the allowed ones.
    """
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"identifier {name!r} is not allowed; allowed: {list(allowed)}")
    return '"' + name + '"'


# --------------------------------------------------------------------------- connections


def _db(db_path: str | Path | None) -> Path:
    return Path(db_path) if db_path is not None else duckdb_path()


@contextmanager
def _connect(db_path: Path, *, read_only: bool, lock_timeout_s: float):
    """Open a connection (UTC session), waiting while another process holds the lock."""
    if read_only and not db_path.exists():
        raise FileNotFoundError(f"no forecast database at {db_path}; run init_db() or publish_forecast() first")
    if not read_only:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_timeout_s
    while True:
        try:
            con = duckdb.connect(str(db_path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(_LOCK_WAIT_S)
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def _apply_ddl(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(sql_text("schema.sql"))
    con.execute(sql_text("views.sql"))


def init_db(db_path: str | Path | None = None, *, lock_timeout_s: float = 30.0) -> Path:
    """Create the tables and (re)create the views; safe to call any number of times.

    Parameters
    ----------
    db_path : str or Path, optional
        DuckDB file; default :func:`traffic.config.duckdb_path`.
    lock_timeout_s : float
        How long to wait for another process's lock.

    Returns
    -------
    Path
        The database file.
    """
    path = _db(db_path)
    with _connect(path, read_only=False, lock_timeout_s=lock_timeout_s) as con:
        _apply_ddl(con)
    return path


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
    if ts.microsecond or ts.nanosecond:
        raise PublishError(f"issued_at {ts} must be a whole second")
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


def _run_row(city: str, run: Mapping[str, Any], tt: pd.DatetimeIndex) -> dict[str, Any]:
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
    return {
        "run_id": run_id,
        "city": city,
        "model_name": str(run["model_name"]),
        "model_version": str(run["model_version"]),
        "mlflow_run_id": None if run.get("mlflow_run_id") is None else str(run["mlflow_run_id"]),
        "issued_at": issued_at.to_pydatetime(),
        "data_start": None if data["data_start"] is None else data["data_start"].to_pydatetime(),
        "data_end": None if data["data_end"] is None else data["data_end"].to_pydatetime(),
        "horizon_steps": h_out,
        "bin_seconds": int(bin_seconds),
    }


def cells_table(city: str, cells: pd.DataFrame) -> pa.Table:
    """Validate a grid-cells frame and convert it to the ``cells`` table layout.

    Parameters
    ----------
    city : str
    cells : pandas.DataFrame
        Columns ``cell_id, row, col, centroid_lon, centroid_lat, polygon_wkt`` (extra
        columns are ignored); one row per cell, WGS84.

    Returns
    -------
    pyarrow.Table
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


def forecast_table(
    run_id: str,
    city: str,
    forecast: np.ndarray,
    target_times: pd.DatetimeIndex,
    channels: Sequence[str],
    cell_ids: np.ndarray,
    has_data: np.ndarray,
    reference: np.ndarray,
) -> pa.Table:
    """Rows of ``forecasts`` for one run, built with array operations (no per-row loop).

    Row order is horizon, channel, grid row, grid column. ``has_data`` (``(C, H, W)`` or
    ``(H_out, C, H, W)``) in the output is the input ``has_data`` and a finite
    ``reference``; rows without data keep the forecast value but get no congestion index
    or level.
    """
    h_out, c, h, w = forecast.shape
    index, level = congestion(forecast, reference, channels)
    data = np.broadcast_to(has_data & np.isfinite(reference), forecast.shape).ravel()
    index = np.where(data, index.ravel(), np.nan)
    level = np.where(data, level.ravel(), NO_LEVEL)
    names = np.array((*LEVELS, None), dtype=object)  # code -1 -> None
    per_step = c * h * w
    return pa.table(
        {
            "run_id": pa.array([run_id], pa.string()).take(np.zeros(h_out * per_step, np.int64)),
            "city": pa.array([city], pa.string()).take(np.zeros(h_out * per_step, np.int64)),
            "cell_id": pa.array(np.tile(cell_ids.ravel().astype(np.int32), h_out * c)),
            "target_time": pa.array(np.repeat(target_times.as_unit("us").asi8, per_step), pa.timestamp("us", tz="UTC")),
            "horizon": pa.array(np.repeat(np.arange(1, h_out + 1, dtype=np.int16), per_step)),
            "channel": pa.array(list(channels), pa.string()).take(np.tile(np.repeat(np.arange(c), h * w), h_out)),
            "value": pa.array(forecast.astype(np.float64).ravel(), pa.float64(), from_pandas=True),
            "congestion_index": pa.array(index, pa.float64(), from_pandas=True),
            "congestion_level": pa.array(names[level], pa.string()),
            "has_data": pa.array(data),
        }
    )


# --------------------------------------------------------------------------- writes


def _upsert_cells(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_stmt("upsert_cells"))  # from the registered staged_cells


def _delete_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    con.execute(_stmt("delete_forecasts"), {"run_id": run_id})
    con.execute(_stmt("delete_run"), {"run_id": run_id})


def _insert_forecasts(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_stmt("insert_forecasts"))  # from the registered staged_forecasts


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection):
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def upsert_cells(db_path: str | Path | None, city: str, cells: pd.DataFrame, *, lock_timeout_s: float = 30.0) -> int:
    """Insert or replace a city's grid cells (one transaction).

    Parameters
    ----------
    db_path : str or Path or None
        DuckDB file; None = :func:`traffic.config.duckdb_path`.
    city : str
    cells : pandas.DataFrame
        ``cell_id, row, col, centroid_lon, centroid_lat, polygon_wkt`` (WGS84).

    Returns
    -------
    int
        Number of cells written.
    """
    table = cells_table(city, cells)
    with _connect(_db(db_path), read_only=False, lock_timeout_s=lock_timeout_s) as con:
        _apply_ddl(con)
        con.register("staged_cells", table)  # lives until the connection closes
        with _transaction(con):
            _upsert_cells(con)
    return table.num_rows


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
    lock_timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Publish one forecast run of a city, replacing a previous publish of the same run.

    Parameters
    ----------
    db_path : str or Path or None
        DuckDB file; None = :func:`traffic.config.duckdb_path`.
    city : str
        City name.
    run : dict
        ``model_name``, ``model_version``, ``issued_at`` (tz-aware) required;
        ``mlflow_run_id``, ``data_start``, ``data_end``, ``horizon_steps``, ``bin_seconds``
        optional (``horizon_steps``/``bin_seconds`` default to what ``target_times`` say,
        and must agree with them when given).
    forecast : np.ndarray
        ``(H_out, C, H, W)`` forecast in original units.
    target_times : sequence of timestamps
        ``H_out`` tz-aware bin starts, evenly spaced, none before ``issued_at``.
    channels : sequence of str
        ``C`` channel names.
    cells : pandas.DataFrame
        Grid cells (see :func:`upsert_cells`); upserted in the same transaction.
    cell_ids : np.ndarray
        ``(H, W)`` cell id of every grid position (``GridTensor.cell_ids``).
    has_data : np.ndarray
        ``(C, H, W)`` bool: the cell had observations of the channel; or ``(H_out, C, H, W)``
        when that depends on the target bin (e.g. observed at that time of day).
    reference : np.ndarray
        ``(C, H, W)`` from :func:`traffic.publish.congestion.reference_stats`.
    lock_timeout_s : float
        How long to wait for another process's lock on the file.

    Returns
    -------
    dict
        ``run_id``, ``city``, ``db_path``, ``replaced`` (the run existed before),
        ``n_rows``, ``n_rows_with_data``, ``n_heavy`` (rows at level heavy or worse),
        ``n_cells``, ``seconds``.

    Raises
    ------
    PublishError
        When inputs disagree (shapes, times, cells); raised before the database is opened.
    """
    t0 = time.perf_counter()
    forecast = np.asarray(forecast)
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
    tt = _target_times(target_times, h_out)
    run_row = _run_row(city, run, tt)
    cells_tb = cells_table(city, cells)
    _check_grid(cells_tb, cell_ids)
    rows = forecast_table(run_row["run_id"], city, forecast, tt, channels, cell_ids, has_data, reference)
    run_row["published_at"] = pd.Timestamp.now(tz="UTC").to_pydatetime()

    path = _db(db_path)
    with _connect(path, read_only=False, lock_timeout_s=lock_timeout_s) as con:
        _apply_ddl(con)
        # staged relations live until the connection closes; registered outside the
        # transaction so that nothing but the statements themselves can abort it
        con.register("staged_cells", cells_tb)
        con.register("staged_forecasts", rows)
        with _transaction(con):
            replaced = con.execute(_stmt("run_exists"), {"run_id": run_row["run_id"]}).fetchall()[0][0] > 0
            _upsert_cells(con)
            _delete_run(con, run_row["run_id"])
            con.execute(_stmt("insert_run"), run_row)
            _insert_forecasts(con)
            n = con.execute(_stmt("count_forecasts"), {"run_id": run_row["run_id"]}).fetchall()[0][0]
            if n != rows.num_rows:
                raise RuntimeError(f"run {run_row['run_id']}: wrote {n} forecast rows, expected {rows.num_rows}")
    levels = rows.column("congestion_level").to_numpy(zero_copy_only=False)
    return {
        "run_id": run_row["run_id"],
        "city": city,
        "db_path": str(path),
        "replaced": bool(replaced),
        "n_rows": rows.num_rows,
        "n_rows_with_data": int(np.count_nonzero(rows.column("has_data").to_numpy(zero_copy_only=False))),
        "n_heavy": int(np.isin(levels, ("heavy", "severe")).sum()),
        "n_cells": int(cell_ids.size),
        "seconds": round(time.perf_counter() - t0, 3),
    }


# --------------------------------------------------------------------------- reads


def hotspots(
    db_path: str | Path | None,
    city: str,
    hours: float = 3,
    limit: int = 20,
    *,
    now: Any = None,
    at: Any = None,
    lock_timeout_s: float = 30.0,
) -> pd.DataFrame:
    """Where will it jam in the next ``hours``? (``sql/hotspots.sql``, read-only connection).

    Parameters
    ----------
    db_path : str or Path or None
        DuckDB file; None = :func:`traffic.config.duckdb_path`.
    city : str
    hours : float
        Window length, > 0.
    limit : int
        Maximum number of cells, >= 1.
    now : timestamp, optional
        Window start (tz-aware); default the chosen run's ``issued_at``.
    at : timestamp, optional
        Use the newest run issued at or before ``at`` (tz-aware), e.g. one run of an
        intraday replay; default the newest run.

    Returns
    -------
    pandas.DataFrame
        One row per cell at level heavy or worse somewhere in ``[now, now + hours)``, its
        worst moment: ``city, run_id, issued_at, cell_id, row, col, centroid_lon,
        centroid_lat, target_time, horizon, channel, value, congestion_index,
        congestion_level, heavy_slots``; worst first. Empty if the city has no run.
    """
    if not isinstance(city, str) or not _CITY_RE.match(city):
        raise ValueError(f"city {city!r} must match {_CITY_RE.pattern}")
    if not (isinstance(hours, int | float) and np.isfinite(hours) and hours > 0):
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    params = {
        "city": city,
        "hours": float(hours),
        "limit": int(limit),
        "now": None if now is None else _utc(now, "now").to_pydatetime(),
        "at": None if at is None else _utc(at, "at").to_pydatetime(),
    }
    with _connect(_db(db_path), read_only=True, lock_timeout_s=lock_timeout_s) as con:
        return con.execute(sql_text("hotspots.sql"), params).df()


def latest_runs(db_path: str | Path | None = None, *, lock_timeout_s: float = 30.0) -> pd.DataFrame:
    """Newest run of every city with its row counts (read-only connection)."""
    with _connect(_db(db_path), read_only=True, lock_timeout_s=lock_timeout_s) as con:
        return con.execute(_stmt("latest_runs")).df()


def read_relation(
    db_path: str | Path | None, name: str, *, city: str | None = None, lock_timeout_s: float = 30.0
) -> pd.DataFrame:
    """All rows of an allow-listed table or view, optionally of one city (read-only).

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`ALLOWED_RELATIONS`.
    """
    query = _stmt("read_relation").replace("{relation}", check_identifier(name))
    with _connect(_db(db_path), read_only=True, lock_timeout_s=lock_timeout_s) as con:
        return con.execute(query, {"city": city}).df()
