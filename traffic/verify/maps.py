"""Error maps of a verified run: where the published forecast missed, cell by cell, once the day happened.

One PNG per channel: each grid cell coloured by the RMSE verification measured there over the run's
horizons (:mod:`traffic.verify`, table ``cell_skill``), cells never scored in grey, with the cell's
skill against the seasonal reference in the title's summary. ``traffic export CITY --format png
--errors`` writes them (:func:`write_error_maps`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from traffic.errors import TrafficError

__all__ = ["ErrorMapError", "write_error_maps"]


class ErrorMapError(TrafficError):
    """No verified run to draw (unknown city, unknown or unverified run, unknown channel): exit 2."""


def _read(db_path: Any, city: str, run_id: str | None) -> tuple[dict[str, Any], Any]:
    import pandas as pd

    from traffic.publish.duckdb_publish import connect_catalog
    from traffic.publish.sql import statements

    sql = statements("skill_maps.sql")
    try:
        con = connect_catalog(db_path)
    except FileNotFoundError as exc:
        raise ErrorMapError(f"city {city!r} has no verified run to draw: {exc}") from None
    try:
        runs = con.execute(sql["verified_runs"], {"city": city}).df()
        if runs.empty:
            raise ErrorMapError(
                f"city {city!r} has no verified run to draw; verification scores a run once its day has landed "
                f"(traffic verify {city})"
            )
        if run_id is not None and run_id not in set(runs["run_id"]):
            raise ErrorMapError(
                f"run {run_id!r} of {city!r} is not verified; verified runs: {', '.join(runs['run_id'][:5])}"
                + (" ..." if len(runs) > 5 else "")
            )
        run = runs.iloc[0] if run_id is None else runs[runs["run_id"] == run_id].iloc[0]
        cells = con.execute(sql["cell_errors"], {"run_id": str(run["run_id"])}).df()
    finally:
        con.close()
    return {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in run.items()}, cells


def write_error_maps(
    city: str,
    *,
    run_id: str | None = None,
    out: str | Path | None = None,
    channel: str | None = None,
    db_path: str | Path | None = None,
) -> list[Path]:
    """Draw the error map of a verified run, one PNG per channel.

    Parameters
    ----------
    city : str
    run_id : str, optional
        A verified run (default: the city's newest verified run).
    out : str or Path, optional
        Folder of the PNGs (default :func:`traffic.publish.export.default_out_dir`).
    channel : str, optional
        Only this channel.
    db_path : str or Path, optional
        The catalog (default: the configured one).

    Returns
    -------
    list of Path
        ``<run_id>_errors_<channel>.png`` files, written atomically.

    Raises
    ------
    ErrorMapError
        No verified run, an unknown run or channel (one line naming what exists).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import shapely

    from traffic.publish.export import _safe, default_out_dir
    from traffic.tempfiles import atomic_path

    run, cells = _read(db_path, city, run_id)
    scored = cells.dropna(subset=["channel"])
    channels = sorted(scored["channel"].unique())
    if channel is not None:
        if channel not in channels:
            raise ErrorMapError(f"run {run['run_id']!r} has no verified channel {channel!r}; channels: {channels}")
        channels = [channel]
    grid = cells.drop_duplicates("cell_id")
    polys = shapely.from_wkt(grid["polygon_wkt"].to_numpy())
    folder = Path(out) if out is not None else default_out_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ch in channels:
        part = scored[scored["channel"] == ch].set_index("cell_id")
        rmse = grid["cell_id"].map(part["rmse"]).to_numpy(dtype=float)
        fig, ax = plt.subplots(figsize=(9, 6))
        finite = rmse[np.isfinite(rmse)]
        top = float(np.quantile(finite, 0.95)) if len(finite) else 1.0
        cmap = plt.get_cmap("magma_r")
        for poly, v in zip(polys, rmse, strict=True):
            x, y = poly.exterior.xy
            color = "#dddddd" if not math.isfinite(v) else cmap(min(v / top, 1.0) if top > 0 else 0.0)
            ax.fill(x, y, color=color, linewidth=0.2, edgecolor="#ffffff")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top))
        fig.colorbar(sm, ax=ax, shrink=0.7, label=f"RMSE of the published forecast ({ch})")
        ax.tick_params(labelsize=7)
        n = int(part["n"].sum())
        ax.set_title(
            f"{city}: errors of run {run['run_id']} ({run['model_kind']}, issued {str(run['issued_at'])[:16]})\n"
            f"{ch}: {len(part)} cells scored, {n} values; grey = not scored",
            fontsize=9,
        )
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect("equal")
        target = folder / f"{run['run_id']}_errors_{_safe(ch)}.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        written.append(target)
    return written
