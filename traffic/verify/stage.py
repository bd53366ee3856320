"""The verify stage: score every published run whose target bins have landed, store it, tell MLflow, say what is wrong.

:func:`verify_city` is what :func:`traffic.pipeline.verify` runs (after rasterize in the ingest DAG,
``traffic verify``, ``make nightly``'s replay):

1. **Which runs.** The city's runs in the warehouse store (:func:`~traffic.verify.store.published_runs`)
   that were never verified, plus, with ``start``/``end``, every run whose target days fall in
   ``start .. end`` (verified again: late data). A run is *due* when the raster holds a complete
   (not partial) partition for every local date its target bins fall on; otherwise it waits and
   the log says which dates it waits for (not an error).
2. **Same grid.** A due run's grid (its ``cells.parquet``) must be the city's grid now
   (:func:`~traffic.verify.store.cells_digest`); otherwise :class:`~traffic.errors.GridMismatchError`
   names the run and both digests: its figures would compare other cells.
3. **Scores.** The raster of the runs' input windows and targets is read once
   (:func:`traffic.grid.load_tensor`); per run, the seasonal reference is fitted on the run's own
   input window (data up to its origin) and the run is scored
   (:func:`traffic.verify.scores.score_run`).
4. **Store.** Per run, one skill version folder (written whole or not at all; identical rows write
   nothing), then the catalog is rebuilt once (``forecast_skill``, ``cell_skill``, ``skill_daily``,
   ``skill_by_horizon``). A killed verify leaves complete versions (listed by the next rebuild)
   or hidden temporary folders (never listed); running it again completes.
5. **MLflow.** For every MLflow run that served verified day-ahead forecasts in the city's last
   ``verify_days`` days: ``live.rmse.<group>``, ``live.mae.<group>``, ``live.coverage.<group>``,
   ``live.skill_vs_seasonal.<group>`` (all channels pooled) and ``live.days``, read from the catalog's
   ``skill_groups`` (the figures ``traffic skill`` prints).
6. **Alerts** (:func:`alerts`): logged as WARNINGs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from traffic.config import CityConfig
from traffic.errors import GridMismatchError
from traffic.forecast.backtest import CANDIDATES as BACKTEST_CANDIDATES
from traffic.resources import Resources
from traffic.verify.scores import FIGURES, REFERENCE_KIND, SUMS, score_run, seasonal_reference
from traffic.verify.store import (
    PublishedRun,
    cells_digest,
    published_runs,
    read_run_arrays,
    run_cells,
    verified_runs,
)

_log = logging.getLogger(__name__)

#: Kinds of run whose target is the next local day (the ones skill_daily and live.* pool).
DAY_AHEAD_KINDS = ("nightly", "replay")
#: Candidates whose backtest promise (``backtest.<candidate>.rmse.<group>.hi``) a run is held to: every
#: candidate of the backtest (traffic.forecast.backtest.CANDIDATES).
CANDIDATES = BACKTEST_CANDIDATES
#: Longest span (days) of raster read at once when many runs are verified.
_MAX_SPAN_EXTRA_DAYS = 31


def city_grid_digest(c: CityConfig) -> str:
    """Digest of the grid the city file describes now, over the cells as a publish writes them."""
    from traffic.grid.cells import cells_from_spec, grid_spec

    grid = cells_from_spec(grid_spec(c))
    cent = grid.geometry.centroid.to_crs(4326)
    return cells_digest(
        pd.DataFrame(
            {
                "cell_id": grid["cell_id"].to_numpy(),
                "row": grid["row"].to_numpy(),
                "col": grid["col"].to_numpy(),
                "centroid_lon": cent.x.to_numpy(),
                "centroid_lat": cent.y.to_numpy(),
            }
        )
    )


def _local_date(ts: Any, tz: str) -> str:
    return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d")


def _complete_dates(c: CityConfig, res: Resources, dates: set[str]) -> set[str]:
    """Which of ``dates`` have a complete (not partial) raster partition."""
    from traffic.intraday import parquet_until

    have = set(res.lake.list_dates("raster", city=c.name)) & dates
    return {d for d in have if not parquet_until(res.lake.partition("raster", city=c.name, date=d) / "part.parquet")}


def _select(runs: Sequence[PublishedRun], verified: set[str], start: str | None, end: str | None) -> list[PublishedRun]:
    ranged = start is not None or end is not None
    lo, hi = start or "0000-00-00", end or "9999-99-99"
    out = []
    for r in runs:
        if r.run_id not in verified or (ranged and any(lo <= d <= hi for d in r.target_dates)):
            out.append(r)
    return out


def _chunks(runs: list[PublishedRun], tz: str, window_days: int) -> list[list[PublishedRun]]:
    """Runs grouped so that one raster read covers each group's windows and targets (span bounded)."""
    out: list[list[PublishedRun]] = []
    limit = dt.timedelta(days=window_days + _MAX_SPAN_EXTRA_DAYS)
    for r in runs:
        first = dt.date.fromisoformat(_local_date(r.row["data_start"] or r.row["issued_at"], tz))
        if out:
            g0 = dt.date.fromisoformat(_local_date(out[-1][0].row["data_start"] or out[-1][0].row["issued_at"], tz))
            if dt.date.fromisoformat(r.target_dates[-1]) - min(g0, first) <= limit:
                out[-1].append(r)
                continue
        out.append([r])
    return out


def _tables(
    run: PublishedRun, city: str, digest: str, groups: pd.DataFrame, cells: pd.DataFrame
) -> dict[str, pa.Table]:
    """The layout rows (``forecast_skill``, ``cell_skill``) of one run's scores."""
    row = run.row
    g = groups.copy()
    meta = {
        "run_id": run.run_id,
        "city": city,
        "issued_at": pd.Timestamp(row["issued_at"]).tz_convert("UTC"),
        "target_date": dt.date.fromisoformat(run.target_date),
        "kind": str(row["kind"]),
        "model_kind": str(row["model_kind"]),
        "model_version": str(row["model_version"]),
        "mlflow_run_id": row.get("mlflow_run_id"),
        "model_spec": row.get("model_spec"),
        "reference_kind": REFERENCE_KIND,
        "grid_digest": digest,
    }
    for k, v in meta.items():
        g[k] = [v] * len(g)
    c = cells.copy()
    c["run_id"] = run.run_id
    c["city"] = city
    return {
        "forecast_skill": pa.Table.from_pandas(g, preserve_index=False),
        "cell_skill": pa.Table.from_pandas(c, preserve_index=False),
    }


def _score(run: PublishedRun, grid: Any, bin_seconds: int, digest: str, city: str) -> dict[str, pa.Table]:
    """Score one due run on the raster ``grid`` (a GridTensor covering its window and targets)."""
    step = pd.Timedelta(seconds=bin_seconds)
    t0 = grid.times[0]

    def index(ts: Any) -> int:
        off = pd.Timestamp(ts).tz_convert("UTC") - t0
        if off % step != pd.Timedelta(0):
            raise GridMismatchError(
                f"run {run.run_id}: time {ts} is not on the city's {bin_seconds} s bins; the run was published on other bins"
            )
        return int(off // step)

    cells = run_cells(run)
    arrays = read_run_arrays(run, cells)
    h_out = arrays.pred.shape[0]
    i0 = index(run.row["target_start"])
    obs = grid.slice_time(i0, i0 + h_out)
    if len(obs.times) != h_out:
        raise ValueError(f"run {run.run_id}: the raster read has {len(obs.times)} of its {h_out} target bins")
    start = run.row["data_start"] if run.row["data_start"] is not None else grid.times[0]
    end = run.row["data_end"] if run.row["data_end"] is not None else run.row["issued_at"] - step
    window = grid.slice_time(max(index(start), 0), index(end) + 1)
    channels = list(grid.channels)
    if arrays.channels != channels:  # the run's channel order, mapped onto the raster's
        pos = [channels.index(ch) for ch in arrays.channels]
        obs_v, obs_m = obs.values[:, pos], obs.mask[:, pos]
        ref = seasonal_reference(window, h_out)[:, pos]
    else:
        obs_v, obs_m = obs.values, obs.mask
        ref = seasonal_reference(window, h_out)
    scores = score_run(
        arrays.pred,
        obs_v,
        obs_m,
        ref,
        arrays.reference,
        arrays.channels,
        arrays.cell_ids,
        bin_seconds,
        lower=arrays.lower,
        upper=arrays.upper,
    )
    return _tables(run, city, digest, scores.groups, scores.cells)


def _check_grid(run: PublishedRun, c: CityConfig, digest: str) -> None:
    published = cells_digest(run_cells(run))
    if published != digest:
        raise GridMismatchError(
            f"run {run.run_id} was published on grid {published} but city {c.name} ({c.source}) now describes "
            f"grid {digest}: its cells are not the raster's, so it cannot be verified (verify it with the "
            "city file it was published with, or leave it unverified)",
            file=c.source,
            value=run.run_id,
        )
    if int(run.row["bin_seconds"]) != c.bin_seconds:
        raise GridMismatchError(
            f"run {run.run_id} has {run.row['bin_seconds']} s bins but city {c.name} ({c.source}) now has "
            f"{c.bin_seconds} s bins (time_bin = {c.time_bin!r}): it cannot be verified on this raster",
            file=c.source,
            value=run.run_id,
        )
    unknown = sorted(set(run.row["channels"]) - set(c.channels))
    if unknown:
        raise GridMismatchError(
            f"run {run.run_id} forecast channels {unknown} that city {c.name} ({c.source}) no longer has: "
            f"{list(c.channels)}",
            file=c.source,
            value=run.run_id,
        )


def verify_city(c: CityConfig, res: Resources, start: str | None = None, end: str | None = None) -> dict[str, Any]:
    """Verify a city's published runs (module docstring); the body of :func:`traffic.pipeline.verify`.

    Returns
    -------
    dict
        ``city``, ``verified`` (run ids scored and written now), ``unchanged`` (scored again, same
        rows), ``waiting`` (``[{"run_id", "target_dates", "missing"}]``), ``live`` (per MLflow run:
        what was logged), ``alerts`` (lines), ``timings_s``.
    """
    from traffic.grid import load_tensor
    from traffic.publish.duckdb_publish import rebuild_catalog, write_skill_version

    t0 = time.perf_counter()
    db = res.warehouse.path
    runs = published_runs(db, c.name)
    chosen = _select(runs, set(verified_runs(db, c.name)), start, end)
    needed = {d for r in chosen for d in r.target_dates}
    landed = _complete_dates(c, res, needed)
    due, waiting = [], []
    for r in chosen:
        missing = [d for d in r.target_dates if d not in landed]
        if missing:
            waiting.append({"run_id": r.run_id, "target_dates": r.target_dates, "missing": missing})
            _log.info(
                "verify %s: run %s waits: no complete raster yet for target date(s) %s (it is verified once they land)",
                c.name,
                r.run_id,
                missing,
            )
        else:
            due.append(r)
    timings: dict[str, float] = {"select": round(time.perf_counter() - t0, 3)}
    verified: list[str] = []
    unchanged: list[str] = []
    if due:
        t = time.perf_counter()
        digest = city_grid_digest(c)
        for r in due:
            _check_grid(r, c, digest)
        timings["grid_check"] = round(time.perf_counter() - t, 3)
        t_read = t_score = t_write = 0.0
        for group in _chunks(due, c.timezone, c.forecast.window_days):
            t = time.perf_counter()
            first = min(_local_date(r.row["data_start"] or r.row["issued_at"], c.timezone) for r in group)
            last = max(r.target_dates[-1] for r in group)
            grid = load_tensor(c, first, last, lake=res.lake)
            t_read += time.perf_counter() - t
            for r in group:
                t = time.perf_counter()
                tables = _score(r, grid, c.bin_seconds, digest, c.name)
                t_score += time.perf_counter() - t
                t = time.perf_counter()
                out = write_skill_version(db, city=c.name, run_id=r.run_id, tables=tables)
                t_write += time.perf_counter() - t
                (unchanged if out["unchanged"] else verified).append(r.run_id)
        timings.update(read_raster=round(t_read, 3), score=round(t_score, 3), write=round(t_write, 3))
    t = time.perf_counter()
    if due or verified_runs(db, c.name):
        rebuild_catalog(db)  # also lists what a killed verify had written whole
    timings["catalog"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    live = log_live(c, res)
    timings["mlflow"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    lines = alerts(c, res=res)
    for line in lines:
        _log.warning("%s", line)
    timings["alerts"] = round(time.perf_counter() - t, 3)
    timings["total"] = round(time.perf_counter() - t0, 3)
    if not due and waiting:
        _log.info("verify %s: nothing to verify yet: %d run(s) wait for their target days", c.name, len(waiting))
    return {
        "city": c.name,
        "start": start,
        "end": end,
        "verified": verified,
        "unchanged": unchanged,
        "waiting": waiting,
        "live": live,
        "alerts": lines,
        "timings_s": timings,
    }


# --------------------------------------------------------------------------- catalog reads


def _catalog(res: Resources) -> Any:
    from traffic.publish.duckdb_publish import connect_catalog

    return connect_catalog(res.warehouse.path)


def _rows(con: Any, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from traffic.publish.sql import statement

    cur = con.execute(statement(name, "skill.sql"), params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def skill_window(
    city: str,
    *,
    res: Resources,
    days: int,
    last_day: dt.date | None = None,
    channel: str = "all",
    served_by: str | None = None,
) -> dict[str, Any]:
    """What ``traffic skill`` prints: the day-ahead skill of the last ``days`` verified days.

    Parameters
    ----------
    city : str
    res : Resources
    days : int
        Days of the window (>= 1), ending at ``last_day``.
    last_day : datetime.date, optional
        Default: the newest verified target day of the city (of ``served_by``'s runs when given).
    channel : str
        ``'all'`` (every channel pooled) or one channel.
    served_by : str, optional
        Only the runs served by this MLflow run (the ``live.*`` metrics' window).

    Returns
    -------
    dict
        ``first_day``, ``last_day`` (None: nothing verified), ``days`` (rows of the catalog's
        ``skill_days``: one per target day) and ``groups`` (rows of ``skill_groups``: one per
        horizon group over the window), figures as the catalog rounds them.
    """
    con = _catalog(res)
    try:
        if last_day is None:
            (last_day,) = con.execute(_statement("newest_day"), {"city": city, "served_by": served_by}).fetchone() or (
                None,
            )
        if last_day is None:
            return {"first_day": None, "last_day": None, "days": [], "groups": []}
        first_day = last_day - dt.timedelta(days=int(days) - 1)
        p = {"city": city, "first_day": first_day, "last_day": last_day, "channel": channel}
        day_rows = _rows(con, "days", p)
        groups = _rows(con, "groups", {**p, "served_by": served_by})
    finally:
        con.close()
    return {"first_day": first_day, "last_day": last_day, "days": day_rows, "groups": groups}


def _statement(name: str) -> str:
    from traffic.publish.sql import statement

    return statement(name, "skill.sql")


def live_metrics(groups: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The ``live.*`` metrics of a window's pooled horizon-group rows (channel ``'all'``)."""
    out: dict[str, float] = {}
    days = 0
    for g in groups:
        if g["channel"] != "all":
            continue
        tag = g["horizon_group"]
        for key, col in (("rmse", "rmse"), ("mae", "mae"), ("coverage", "coverage"), ("skill_vs_seasonal", "skill")):
            if g[col] is not None and math.isfinite(float(g[col])):
                out[f"live.{key}.{tag}"] = float(g[col])
        days = max(days, int(g["days"]))
    if out:
        out["live.days"] = float(days)
    return out


def log_live(c: CityConfig, res: Resources) -> dict[str, Any]:
    """Log ``live.*`` on every MLflow run that served verified day-ahead runs in the city's last ``verify_days``."""
    from traffic.registry import log_live_metrics

    try:
        con = _catalog(res)
    except FileNotFoundError:
        return {}
    try:
        (newest,) = con.execute(_statement("newest_day"), {"city": c.name, "served_by": None}).fetchone() or (None,)
        if newest is None:
            return {}
        first = newest - dt.timedelta(days=c.forecast.verify_days - 1)
        serving = _rows(con, "serving_runs", {"city": c.name, "first_day": first, "last_day": newest})
    finally:
        con.close()
    out: dict[str, Any] = {}
    for s in serving:
        win = skill_window(c.name, res=res, days=c.forecast.verify_days, served_by=s["mlflow_run_id"])
        metrics = live_metrics(win["groups"])
        if not metrics:
            continue
        step = int(win["last_day"].strftime("%Y%m%d"))
        status = log_live_metrics(s["mlflow_run_id"], metrics, step=step, registry=res.registry)
        if status == "no such run":
            _log.warning(
                "verify %s: MLflow run %s (what served %s) is not in %s: live metrics not logged",
                c.name,
                s["mlflow_run_id"],
                s["model_kind"],
                res.registry.tracking_uri,
            )
        out[s["mlflow_run_id"]] = {
            "status": status,
            "first_day": str(win["first_day"]),
            "last_day": str(win["last_day"]),
            "metrics": metrics,
        }
    return out


# --------------------------------------------------------------------------- alerts


def _candidate(model_kind: str, model_spec: str | None) -> str:
    """The backtest candidate that served: ``model_spec["candidate"]``, else what ``model_kind`` names."""
    if model_spec:
        try:
            spec = json.loads(model_spec)
        except (TypeError, ValueError):
            spec = None
        if isinstance(spec, dict) and spec.get("candidate"):
            return str(spec["candidate"])
    return model_kind


def _feed_silence(c: CityConfig, res: Resources, first: dt.date, last: dt.date) -> list[str]:
    """Lines for every feed day in ``first .. last`` without accepted rows (after the feed's first report)."""
    lines = []
    for feed in c.feeds:
        have = res.lake.list_dates("quality", city=c.name, feed=feed.name)
        if not have:
            continue
        lo = max(first, dt.date.fromisoformat(have[0]))
        hi = min(last, dt.date.fromisoformat(have[-1]))
        silent = []
        day = lo
        while day <= hi:
            d = day.isoformat()
            if d not in have:
                silent.append((d, "no quality report"))
            else:
                r = res.lake.read_json(
                    res.lake.partition("quality", city=c.name, feed=feed.name, date=d) / "report.json"
                )
                if not r.get("rows_accepted"):
                    silent.append((d, f"{r.get('rows_read', 0)} rows read, 0 accepted"))
            day += dt.timedelta(days=1)
        for d, why in silent:
            chans = [f"{feed.name}.{ch}" for ch in feed.channels]
            lines.append(
                f"city {c.name} feed {feed.name} (channels {chans}): no rows on {d} ({why}): the feed stopped delivering"
            )
    return lines


def alerts(c: CityConfig, *, res: Resources, as_of: str | None = None) -> list[str]:
    """Stale or broken, said out loud: what is wrong with the city's live forecasts over its last ``verify_days``.

    Three kinds of line, each naming the city, the channel and the horizon group with the figures:

    * the live RMSE of a channel and horizon group, pooled over the window's verified day-ahead
      runs, is worse than the seasonal reference's (skill < 0);
    * the live RMSE of a horizon group (all channels pooled, as backtests score) of what an MLflow run
      served is above the 95th percentile of that candidate's daily backtest RMSE
      (``backtest.<candidate>.rmse.<group>.hi`` on that run); where the run has no such metric the
      comparison is skipped (debug log);
    * a feed has a day without accepted rows.

    Parameters
    ----------
    c : CityConfig
    res : Resources
    as_of : str, optional
        Last local date of the window; default the newest raster date of the city.

    Returns
    -------
    list of str
        One line per finding (empty: nothing to say).
    """
    from traffic.registry import run_data

    window = c.forecast.verify_days
    if as_of is None:
        dates = res.lake.list_dates("raster", city=c.name)
        if not dates:
            return []
        as_of = dates[-1]
    last = dt.date.fromisoformat(as_of)
    first = last - dt.timedelta(days=window - 1)
    lines: list[str] = []
    try:
        con = _catalog(res)
    except FileNotFoundError:
        con = None
    if con is not None:
        try:
            p = {"city": c.name, "first_day": first, "last_day": last}
            groups = _rows(con, "groups", {**p, "served_by": None, "channel": None})
            serving = _rows(con, "serving_runs", p)
            per_run = {
                s["mlflow_run_id"]: _rows(con, "groups", {**p, "served_by": s["mlflow_run_id"], "channel": "all"})
                for s in serving
            }
        finally:
            con.close()
        for g in groups:
            if g["channel"] == "all" or g["skill"] is None or g["skill"] >= 0:
                continue
            lines.append(
                f"city {c.name} channel {g['channel']} horizon {g['horizon_group']}: live RMSE {g['rmse']:.4f} over "
                f"{g['days']} day(s) {g['first_day']}..{g['last_day']} ({g['model_kind']}) is worse than the seasonal "
                f"reference's {g['ref_rmse']:.4f} (skill {g['skill']:+.4f})"
            )
        for s in serving:
            run_id = s["mlflow_run_id"]
            cand = _candidate(s["model_kind"], s["model_spec"])
            try:
                promised = run_data(run_id, registry=res.registry)["metrics"]
            except Exception as exc:  # a run missing from the store: nothing to compare with
                _log.debug("verify %s: no MLflow run %s (%s): backtest comparison skipped", c.name, run_id, exc)
                continue
            for g in per_run[run_id]:
                key = f"backtest.{cand}.rmse.{g['horizon_group']}"
                hi = promised.get(f"{key}.hi")
                if hi is None or g["rmse"] is None:
                    _log.debug(
                        "verify %s: run %s has no %s.hi: the backtest comparison of %s is skipped",
                        c.name,
                        run_id,
                        key,
                        g["horizon_group"],
                    )
                    continue
                if g["rmse"] > hi:
                    lines.append(
                        f"city {c.name} channel all horizon {g['horizon_group']}: live RMSE {g['rmse']:.4f} over "
                        f"{g['days']} day(s) {g['first_day']}..{g['last_day']} of {cand} (MLflow run {run_id}) is "
                        f"worse than its backtest promised: pooled {promised.get(key, float('nan')):.4f}, 95th "
                        f"percentile of its daily RMSE {hi:.4f}"
                    )
    lines += _feed_silence(c, res, first, last)
    return lines


__all__ = [
    "DAY_AHEAD_KINDS",
    "FIGURES",
    "SUMS",
    "alerts",
    "city_grid_digest",
    "live_metrics",
    "log_live",
    "skill_window",
    "verify_city",
]
