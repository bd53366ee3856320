"""Storage of the verification: published runs read from the warehouse store, skill written next to them.

Reads use the store listing (:func:`traffic.publish.duckdb_publish.list_runs`, the source of truth of
what was published, whole runs only) and the run's own files: ``run.parquet`` (what served, when,
its window), ``forecasts.parquet`` (the published values and bounds), ``cell_channels.parquet``
(the congestion reference the run used) and ``cells.parquet`` (the grid it was published on).
Writes go through :func:`traffic.publish.duckdb_publish.write_skill_version` (per-run version
folders, renamed into place) and one :func:`~traffic.publish.duckdb_publish.rebuild_catalog`.
Catalog reads (:func:`skill_days`, :func:`skill_groups`) open the catalog read-only and use the
catalog's own table macros (``sql/views.sql``), so that every reader pools and rounds alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traffic.publish.duckdb_publish import RUN_FILES, list_runs, list_skill

#: Decimals of the centroids a grid digest is taken over (about 1 m).
DIGEST_DECIMALS = 5


@dataclass(frozen=True)
class PublishedRun:
    """One published run as the store holds it.

    Attributes
    ----------
    run_id : str
    folder : Path
        Its newest complete version folder.
    row : dict
        Its ``run.parquet`` row (``issued_at``, ``data_start``, ``data_end``, ``target_start``,
        ``target_end``, ``bin_seconds``, ``horizon_steps``, ``channels``, ``kind``, ``model_kind``,
        ``model_version``, ``mlflow_run_id``, ``timezone``, ``model_spec`` (None before 003), ...).
    """

    run_id: str
    folder: Path
    row: dict[str, Any]

    @property
    def target_dates(self) -> list[str]:
        """Local dates (the run's timezone) its target bins fall on."""
        start = pd.Timestamp(self.row["target_start"]).tz_convert(self.row["timezone"])
        last = pd.Timestamp(self.row["target_end"]).tz_convert(self.row["timezone"]) - pd.Timedelta(
            seconds=int(self.row["bin_seconds"])
        )
        return [d.strftime("%Y-%m-%d") for d in pd.date_range(start.normalize(), last.normalize(), freq="D")]

    @property
    def target_date(self) -> str:
        """Local date of the first target bin (``forecast_skill.target_date``)."""
        return self.target_dates[0]


def published_runs(db_path: str | Path, city: str) -> list[PublishedRun]:
    """Every run of ``city`` in the store (newest version of each), oldest issued first."""
    runs = []
    for run_id, folder in list_runs(db_path).items():
        if folder.parent.parent.name != f"city={city}":
            continue
        table = pq.read_table(folder / RUN_FILES["forecast_runs"])
        row = table.to_pylist()[0]
        row.setdefault("model_spec", None)  # a run published before migration 004
        runs.append(PublishedRun(run_id, folder, row))
    return sorted(runs, key=lambda r: (pd.Timestamp(r.row["issued_at"]), r.run_id))


def verified_runs(db_path: str | Path, city: str) -> dict[str, Path]:
    """``{run_id: skill version folder}`` of the city's runs verified so far (the store listing)."""
    return list_skill(db_path, city)


def cells_digest(cells: pd.DataFrame) -> str:
    """Digest of a grid as published: cell ids, rows, columns and WGS84 centroids (rounded to ~1 m).

    Parameters
    ----------
    cells : pandas.DataFrame
        ``cell_id, row, col, centroid_lon, centroid_lat``, one row per cell.

    Returns
    -------
    str
        16 hex digits; equal digests mean the same cells at the same places.
    """
    df = cells.sort_values("cell_id")
    payload = json.dumps(
        [
            df["cell_id"].astype(np.int64).tolist(),
            df["row"].astype(np.int64).tolist(),
            df["col"].astype(np.int64).tolist(),
            np.round(df["centroid_lon"].to_numpy(np.float64), DIGEST_DECIMALS).tolist(),
            np.round(df["centroid_lat"].to_numpy(np.float64), DIGEST_DECIMALS).tolist(),
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_cells(run: PublishedRun) -> pd.DataFrame:
    """The grid a run was published on (its ``cells.parquet``)."""
    cols = ["cell_id", "row", "col", "centroid_lon", "centroid_lat"]
    return pq.read_table(run.folder / RUN_FILES["cells"], columns=cols).to_pandas()


@dataclass(frozen=True)
class RunArrays:
    """A published run as arrays on its grid.

    Attributes
    ----------
    pred, lower, upper : np.ndarray
        ``(H_out, C, H, W)`` float64, NaN where the run published no value (bounds: None without any).
    reference : np.ndarray
        ``(C, H, W)`` the run's congestion reference (NaN where none).
    channels : list of str
    cell_ids : np.ndarray
        ``(H, W)`` cell id at each grid position.
    """

    pred: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    reference: np.ndarray
    channels: list[str]
    cell_ids: np.ndarray


def read_run_arrays(run: PublishedRun, cells: pd.DataFrame) -> RunArrays:
    """The run's published values, bounds and congestion reference as ``(H_out, C, H, W)`` arrays.

    Parameters
    ----------
    run : PublishedRun
    cells : pandas.DataFrame
        The run's grid (:func:`run_cells`): where each cell id sits.
    """
    h = int(cells["row"].max()) + 1
    w = int(cells["col"].max()) + 1
    cell_ids = np.full((h, w), -1, dtype=np.int64)
    cell_ids[cells["row"].to_numpy(), cells["col"].to_numpy()] = cells["cell_id"].to_numpy()
    lookup = pd.Series(np.arange(len(cells)), index=cells["cell_id"].to_numpy())
    rows_of, cols_of = cells["row"].to_numpy(), cells["col"].to_numpy()
    channels = [str(c) for c in run.row["channels"]]
    ch_index = {c: i for i, c in enumerate(channels)}
    h_out = int(run.row["horizon_steps"])
    shape = (h_out, len(channels), h, w)

    def positions(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        at = lookup.loc[table.column("cell_id").to_numpy()].to_numpy()
        ch = np.array([ch_index[c] for c in table.column("channel").to_pylist()], dtype=np.int64)
        return ch, rows_of[at], cols_of[at]

    fc = pq.read_table(
        run.folder / RUN_FILES["forecasts"], columns=["cell_id", "horizon", "channel", "value", "lower", "upper"]
    )
    pred = np.full(shape, np.nan)
    lower = np.full(shape, np.nan)
    upper = np.full(shape, np.nan)
    if fc.num_rows:
        ch, r, c = positions(fc)
        hz = fc.column("horizon").to_numpy().astype(np.int64) - 1
        for name, arr in (("value", pred), ("lower", lower), ("upper", upper)):
            arr[hz, ch, r, c] = fc.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    has_bounds = fc.num_rows > 0 and fc.column("lower").null_count < fc.num_rows
    cc = pq.read_table(run.folder / RUN_FILES["cell_channels"], columns=["cell_id", "channel", "reference"])
    reference = np.full(shape[1:], np.nan)
    if cc.num_rows:
        ch, r, c = positions(cc)
        reference[ch, r, c] = cc.column("reference").to_numpy(zero_copy_only=False).astype(np.float64)
    return RunArrays(
        pred=pred,
        lower=lower if has_bounds else None,
        upper=upper if has_bounds else None,
        reference=reference,
        channels=channels,
        cell_ids=cell_ids,
    )
