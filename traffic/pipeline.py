"""Pipeline stages: the small, importable units that Airflow tasks and the CLI call.

Each stage takes a city name and partition keys (dates, run ids, paths), does its work
through the library, writes its outputs keyed by partition, and returns a small JSON-able
dict (paths, ids, counts) — never a frame. Every stage is safe to re-run.

Dates are the city's local calendar dates (``YYYY-MM-DD``), as in the lake's ``date=``
partitions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import subprocess
import time
from typing import Any

import pandas as pd
from upath import UPath

from traffic.config import PROJECT_ROOT, CityConfig, duckdb_path, home, load_city, mlflow_uri
from traffic.lake import list_dates, partition, read_json, write_json


class QualityError(RuntimeError):
    """The data for a nightly run is stale or fails the quality gate."""


class NoChampion(RuntimeError):
    """The city has no champion model yet: there is nothing approved to forecast with."""


def _city(city: str | CityConfig) -> CityConfig:
    return city if isinstance(city, CityConfig) else load_city(city)


def _days(start: str, end: str) -> list[str]:
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if d1 < d0:
        raise ValueError(f"end date {end} is before start date {start}")
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def source_dates(city: str | CityConfig) -> tuple[str, str]:
    """First and last local date any raw feed of the city holds."""
    from traffic.ingest import available_dates

    c = _city(city)
    dates = sorted({d for f in c.feeds for d in available_dates(c, f)})
    if not dates:
        raise QualityError(f"city {c.name}: no raw data in any feed ({[f.observations for f in c.feeds]})")
    return dates[0], dates[-1]


def promotion_gate_baselines() -> tuple[str, ...]:
    """Baselines a challenger must beat to be promoted: ``[promotion] gate_baselines`` of the model spec."""
    from traffic.forecast.baselines import BASELINES
    from traffic.forecast.train import load_model_spec

    gates = tuple(load_model_spec().get("promotion", {}).get("gate_baselines", BASELINES))
    bad = sorted(set(gates) - set(BASELINES)) or ([] if gates else ["(empty)"])
    if bad:
        raise ValueError(f"models/convlstm_attention.toml [promotion] gate_baselines {bad} not in {BASELINES}")
    return gates


def training_window(city: str | CityConfig, as_of: str) -> dict[str, str]:
    """Local-date window a nightly run for ``as_of`` trains and evaluates on.

    The window ends with ``as_of`` and spans ``train_days + holdout_days`` days.
    """
    c = _city(city)
    days = c.forecast.train_days + c.forecast.holdout_days
    end = dt.date.fromisoformat(as_of)
    start = end - dt.timedelta(days=days - 1)
    return {"start": start.isoformat(), "end": end.isoformat(), "as_of": as_of}


# --------------------------------------------------------------------------- ingest


def ingest(city: str | CityConfig, start: str, end: str, *, progress: bool = False) -> dict[str, Any]:
    """Ingest every feed of ``city`` for local dates ``start..end`` (registry first)."""
    from traffic.ingest import ingest_range, ingest_registry

    c = _city(city)
    out: dict[str, Any] = {"city": c.name, "start": start, "end": end, "feeds": {}}
    for feed in c.feeds:
        reg = ingest_registry(c, feed)
        reports = ingest_range(c, feed, start, end, progress=progress)
        out["feeds"][feed.name] = {
            "registry_version": reg["version"],
            "n_sources": reg["n_sources"],
            "partitions": len(reports),
            "rows_read": sum(r["rows_read"] for r in reports),
            "rows_accepted": sum(r["rows_accepted"] for r in reports),
            "rows_quarantined": sum(r["rows_quarantined"] for r in reports),
        }
    return out


def rasterize(city: str | CityConfig, start: str, end: str, *, progress: bool = False) -> dict[str, Any]:
    """Write the city grid (once) and rasterize ``start..end`` onto it."""
    from traffic.grid import rasterize_range, write_grid

    c = _city(city)
    write_grid(c)
    reports = rasterize_range(c, start, end, progress=progress)
    return {
        "city": c.name,
        "start": start,
        "end": end,
        "partitions": len(reports),
        "rows": sum(r["rows"] for r in reports),
    }


# --------------------------------------------------------------------------- nightly


def check_quality(
    city: str | CityConfig, as_of: str, *, max_quarantine_share: float = 0.5, min_days_with_data: float = 0.8
) -> dict[str, Any]:
    """Freshness and quality gate for the nightly run of ``as_of``.

    Fails (``QualityError``) when the window's raster or quality partitions are missing,
    when the newest day is not ``as_of`` (stale data), when fewer than
    ``min_days_with_data`` of the window's days have accepted rows, or when a day
    quarantined more than ``max_quarantine_share`` of its rows.
    """
    c = _city(city)
    win = training_window(c, as_of)
    days = _days(win["start"], win["end"])
    problems: list[str] = []
    summary: dict[str, Any] = {"city": c.name, **win, "feeds": {}}
    raster = set(list_dates("raster", city=c.name))
    missing_raster = [d for d in days if d not in raster]
    if missing_raster:
        problems.append(f"raster partitions missing for {len(missing_raster)} day(s): {missing_raster[:5]}...")
    for feed in c.feeds:
        have = set(list_dates("quality", city=c.name, feed=feed.name))
        if as_of not in have:
            problems.append(
                f"feed {feed.name}: no quality report for {as_of} (stale data; newest {max(have) if have else None})"
            )
        read = acc = quar = 0
        with_data = 0
        bad_days = []
        for d in days:
            if d not in have:
                continue
            r = read_json(partition("quality", city=c.name, feed=feed.name, date=d) / "report.json")
            read += r["rows_read"]
            acc += r["rows_accepted"]
            quar += r["rows_quarantined"]
            with_data += r["rows_accepted"] > 0
            if r["rows_read"] and r["rows_quarantined"] / r["rows_read"] > max_quarantine_share:
                bad_days.append(d)
        if with_data < min_days_with_data * len(days):
            problems.append(f"feed {feed.name}: only {with_data}/{len(days)} days have accepted rows")
        if bad_days:
            problems.append(f"feed {feed.name}: quarantine share > {max_quarantine_share:.0%} on {bad_days[:5]}")
        summary["feeds"][feed.name] = {
            "rows_read": read,
            "rows_accepted": acc,
            "rows_quarantined": quar,
            "days_with_data": with_data,
        }
    if problems:
        raise QualityError(f"city {c.name} as_of {as_of}: " + "; ".join(problems))
    return summary


def _load_window(c: CityConfig, as_of: str):
    from traffic.grid import load_tensor

    win = training_window(c, as_of)
    return win, load_tensor(c, win["start"], win["end"])


def code_version() -> str | None:
    """Git commit of the project, when it runs from a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train(
    city: str | CityConfig, as_of: str, *, progress: bool = False, budget_s: float | None = None
) -> dict[str, Any]:
    """Train a challenger on the window of ``as_of``, log and register it in MLflow."""
    import mlflow

    from traffic.forecast.train import train_forecaster
    from traffic.registry import log_training

    c = _city(city)
    win, grid = _load_window(c, as_of)
    fc = c.forecast
    if budget_s is None:
        budget_s = float(os.environ.get("TRAFFIC_TRAIN_BUDGET_S", fc.train_budget_s))
    result = train_forecaster(
        grid,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        train_days=fc.train_days,
        budget_s=budget_s,
        progress=progress,
    )
    logged = log_training(c, result, data_window=win, code_version=code_version())
    worker = os.environ.get("TRAFFIC_WORKER_NAME", socket.gethostname())
    mlflow.MlflowClient(tracking_uri=mlflow_uri()).set_tag(logged["run_id"], "worker", worker)
    best_name, best = result.best_baseline()
    gates = promotion_gate_baselines()
    gate_name = min((k for k in result.baselines if k in gates), key=lambda k: result.baselines[k].rmse_mean)
    return {
        "city": c.name,
        "as_of": as_of,
        **logged,
        "rmse_mean": result.metrics["model"].rmse_mean,
        "mape_mean": result.metrics["model"].mape_mean,
        "best_baseline": best_name,
        "best_baseline_rmse_mean": best.rmse_mean,
        "gate_baseline": gate_name,
        "gate_baseline_rmse_mean": result.baselines[gate_name].rmse_mean,
        "train_seconds": result.train_seconds,
        "device": result.device,
        "worker": worker,
        "stopped_reason": result.stopped_reason,
        "holdout_digest": result.holdout.digest,
    }


def evaluate_and_promote(city: str | CityConfig, as_of: str, trained: dict[str, Any]) -> dict[str, Any]:
    """Score the current champion on the challenger's holdout and apply the promotion rule."""
    from traffic.forecast.train import evaluate_module
    from traffic.registry import champion, decide_promotion, load_version_module, promote, run_metrics

    c = _city(city)
    win, grid = _load_window(c, as_of)
    fc = c.forecast
    challenger = run_metrics(trained["run_id"], "model")
    best_name = trained.get("gate_baseline", trained["best_baseline"])  # the best of the gating baselines
    best = run_metrics(trained["run_id"], best_name)
    current = champion(c)
    champ_metrics = None
    if current is not None and str(current["version"]) != str(trained["version"]):
        module = load_version_module(current["model_uri"])
        champ_metrics = evaluate_module(
            module, grid, context_steps=fc.context_steps, horizon_steps=fc.horizon_steps, holdout_days=fc.holdout_days
        )
    decision = decide_promotion(challenger, champ_metrics, (best_name, best))
    strongest = trained["best_baseline"]
    if strongest != best_name:  # reported with the decision, not a gate (models/convlstm_attention.toml)
        ref = run_metrics(trained["run_id"], strongest).rmse_mean
        pct = 100.0 * (challenger.rmse_mean - ref) / ref
        decision = dataclasses.replace(
            decision,
            reason=f"{decision.reason}; strongest baseline {strongest!r} {ref:.4f} ({pct:+.2f}%), reported, not a gate",
        )
    promoted = promote(c, trained["version"], decision)
    return {
        "city": c.name,
        "version": trained["version"],
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_before": current["version"] if current else None,
        "champion_rmse_mean": champ_metrics.rmse_mean if champ_metrics else None,
        **{k: v for k, v in promoted.items() if k not in ("city", "version")},
    }


def forecast(city: str | CityConfig, as_of: str) -> dict[str, Any]:
    """Forecast the bins after ``as_of`` with the champion; write them to ``forecasts/``.

    Returns the path of the forecast ``.npz`` and the champion that made it.
    """
    import numpy as np

    from traffic.forecast.train import forecast as run_forecast
    from traffic.publish import reference_stats
    from traffic.registry import champion, load_version_module

    c = _city(city)
    win, grid = _load_window(c, as_of)
    current = champion(c)
    if current is None:
        raise NoChampion(f"city {c.name}: no champion in the registry yet; nothing approved to forecast with")
    module = load_version_module(current["model_uri"])
    t_last = len(grid.times) - 1
    pred = run_forecast(module, grid, t_last, context_steps=c.forecast.context_steps)  # (H_out, C, H, W)
    h_out = pred.shape[0]
    issued_at = grid.times[-1] + pd.Timedelta(seconds=c.bin_seconds)  # end of the last observed bin
    targets = pd.date_range(issued_at, periods=h_out, freq=pd.Timedelta(seconds=c.bin_seconds))
    # has_data: the cell observed this channel at the same local time of day during the window
    tod = _local_time_of_day(grid.times, c) // c.bin_seconds  # (T,)
    has_data = np.zeros(pred.shape, dtype=bool)  # (H_out, C, H, W)
    for i, k in enumerate(_local_time_of_day(targets, c) // c.bin_seconds):
        has_data[i] = grid.mask[tod == k].any(axis=0)
    ref = reference_stats(grid.values, grid.mask, list(grid.channels))
    out = partition("forecasts", city=c.name, issued_at=issued_at.strftime("%Y%m%dT%H%M%SZ")) / "forecast.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / ".forecast.npz.tmp"
    with tmp.open("wb") as fh:
        np.savez_compressed(
            fh,
            forecast=pred.astype(np.float32),
            target_times=targets.as_unit("us").asi8,
            has_data=has_data,
            reference=ref.astype(np.float32),
            cell_ids=grid.cell_ids,
            channels=np.array(grid.channels),
        )
    tmp.rename(out)
    meta = {
        "city": c.name,
        "as_of": as_of,
        "issued_at": issued_at.isoformat(),
        "model_name": current["model_name"] if "model_name" in current else f"traffic-{c.name}",
        "model_version": str(current["version"]),
        "mlflow_run_id": current["run_id"],
        "data_start": grid.times[0].isoformat(),
        "data_end": grid.times[-1].isoformat(),
        "horizon_steps": h_out,
        "bin_seconds": c.bin_seconds,
        "path": str(out),
    }
    write_json(meta, out.parent / "meta.json")
    return meta


def _local_time_of_day(times, c: CityConfig):
    """Seconds since local midnight in the city's timezone, for UTC ``times``."""
    local = pd.DatetimeIndex(times).tz_convert(c.timezone)
    return (local.hour * 3600 + local.minute * 60 + local.second).to_numpy()


#: Optional keys of a forecast's meta.json that describe the run (absent in older files).
_PUBLISH_META_OPTIONAL = ("model_kind", "kind", "interval_level", "interval_method")


def publish(city: str | CityConfig, forecast_meta: dict[str, Any]) -> dict[str, Any]:
    """Publish a forecast written by :func:`forecast` to the analysts' store (atomic per run).

    Reads the forecast ``.npz`` named by ``forecast_meta["path"]``: ``forecast``, ``target_times``
    (int64 µs UTC), ``has_data``, ``reference``, ``cell_ids``, ``channels`` and, when present,
    ``lower``/``upper`` (interval bounds; NULL bounds without them) and ``coverage`` (per
    channel share of observed window bins); an optional ``cell_coverage`` (H, W) is used too.
    ``forecast_meta`` may carry ``model_kind``, ``kind``, ``interval_level``, ``interval_method``.
    """
    import numpy as np

    from traffic.grid import read_grid
    from traffic.publish import publish_forecast

    c = _city(city)
    with UPath(forecast_meta["path"]).open("rb") as fh:
        z = dict(np.load(fh, allow_pickle=False))
    grid = read_grid(c)
    cent = grid.geometry.centroid.to_crs(4326)
    cells = pd.DataFrame(
        {
            "cell_id": grid["cell_id"].to_numpy(),
            "row": grid["row"].to_numpy(),
            "col": grid["col"].to_numpy(),
            "centroid_lon": cent.x.to_numpy(),
            "centroid_lat": cent.y.to_numpy(),
            "polygon_wkt": grid.geometry.to_crs(4326).to_wkt().to_numpy(),
        }
    )
    db = duckdb_path()
    keys = ("issued_at", "model_name", "model_version", "mlflow_run_id", "data_start", "data_end")
    run = {k: forecast_meta[k] for k in (*keys, "horizon_steps", "bin_seconds")}
    run.update({k: forecast_meta[k] for k in _PUBLISH_META_OPTIONAL if forecast_meta.get(k) is not None})
    run["timezone"] = c.timezone
    has_bounds = "lower" in z and "upper" in z
    res = publish_forecast(
        db,
        city=c.name,
        run=run,
        forecast=z["forecast"],
        target_times=pd.to_datetime(z["target_times"].astype("datetime64[us]"), utc=True),
        channels=[str(x) for x in z["channels"]],
        cells=cells,
        cell_ids=z["cell_ids"],
        has_data=z["has_data"].astype(bool),
        reference=z["reference"],
        lower=z["lower"] if has_bounds else None,
        upper=z["upper"] if has_bounds else None,
        coverage=z.get("coverage"),
        cell_coverage=z.get("cell_coverage"),
    )
    return {"city": c.name, "db": str(db), **res}


# --------------------------------------------------------------------------- whole run


def run_city(city: str, *, as_of: str | None = None, progress: bool = False) -> dict[str, Any]:
    """All stages for one city in-process (what the two DAGs do, without Airflow)."""
    c = _city(city)
    first, last = source_dates(c)
    as_of = as_of or last
    timings: dict[str, float] = {}
    out: dict[str, Any] = {"city": c.name, "as_of": as_of}

    def stage(name, fn, *a, **kw):
        t0 = time.perf_counter()
        r = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t0, 2)
        out[name] = r
        return r

    stage("ingest", ingest, c, first, last, progress=progress)
    stage("rasterize", rasterize, c, first, last, progress=progress)
    stage("check_quality", check_quality, c, as_of)
    trained = stage("train", train, c, as_of, progress=progress)
    stage("promote", evaluate_and_promote, c, as_of, trained)
    meta = stage("forecast", forecast, c, as_of)
    stage("publish", publish, c, meta)
    out["timings_s"] = timings
    write_json(out, UPath(home() / "runs" / f"{c.name}_{as_of}.json"))
    return out
