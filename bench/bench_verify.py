"""Verification speed: ``traffic skill`` over 90 days of verified runs, and the verify stage for one day of a real city.

Run from the project root::

    python bench/bench_verify.py                  # both parts, writes bench/RESULTS.md
    python bench/bench_verify.py --days 10 --no-write --cities los_angeles   # a quick look

Part 1 (``traffic skill``): in a temporary ``TRAFFIC_HOME``, ``--days`` days of day-ahead runs of
``los_angeles`` (the LA grid shape, 24 x 37 = 888 cells, ``--cells-with-data`` observed, 96 horizons
of 15 min, one speed channel) are scored by :func:`traffic.verify.scores.score_run` against synthetic
observations and stored through the real write path (:func:`traffic.publish.duckdb_publish.write_skill_version`,
one catalog rebuild), as ``bench_hotspots.py`` builds its runs. Then what ``traffic skill los_angeles
--days N`` does after start-up is timed (open the catalog read-only, :func:`traffic.verify.stage.skill_window`,
format the text, close), and the whole command in-process (``traffic.cli.main``, city file included).

Part 2 (verify one day): for each real city, its shipped data are ingested and rasterized
(:func:`traffic.pipeline.ingest` / ``rasterize``) into another temporary home; one day-ahead run
for the day before the newest is published (the seasonal average of its window, 80 % bounds), and
:func:`traffic.pipeline.verify` is timed once cold, then again on the next day's re-ingest
(``start = end = newest``: the same rows, nothing written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import load_average, machine, replace_block, today  # noqa: E402

H, W, H_OUT, BIN_S = 24, 37, 96, 900


def build_skill_store(days: int, cells_with_data: int, seed: int) -> float:
    """Write ``days`` verified day-ahead runs of los_angeles to the store; returns the seconds it took."""
    from traffic.publish.duckdb_publish import rebuild_catalog, write_skill_version
    from traffic.verify.scores import REFERENCE_KIND, score_run

    rng = np.random.default_rng(seed)
    observed = np.zeros(H * W, bool)
    observed[rng.choice(H * W, cells_with_data, replace=False)] = True
    observed = observed.reshape(H, W)
    free_flow = rng.uniform(60, 110, (H, W))
    t0 = time.perf_counter()
    first = dt.date(2012, 1, 1)
    for k in range(days):
        day = first + dt.timedelta(days=k)
        issued = pd.Timestamp(day.isoformat()).tz_localize("America/Los_Angeles").tz_convert("UTC")
        hours = (np.arange(H_OUT) * BIN_S / 3600.0)[:, None, None]
        rush = np.exp(-(((hours - 8) / 1.2) ** 2))
        truth = free_flow[None] * (1 - 0.5 * rush) + rng.normal(0, 4, (H_OUT, H, W))
        pred = np.where(observed[None], truth + rng.normal(0, 6, truth.shape), np.nan)[:, None]
        obs = truth[:, None]
        mask = (observed[None] & (rng.random(truth.shape) > 0.1))[:, None]
        ref = free_flow[None, None] * (1 - 0.4 * rush[:, None])
        ref = np.broadcast_to(ref, pred.shape)
        s = score_run(
            pred,
            obs,
            mask,
            ref,
            free_flow[None],
            ["metr.speed_kmh"],
            np.arange(H * W).reshape(H, W),
            BIN_S,
            lower=pred - 8,
            upper=pred + 8,
        )
        run_id = f"los_angeles_{issued:%Y%m%dT%H%M%SZ}"
        g = s.groups.assign(
            run_id=run_id,
            city="los_angeles",
            issued_at=issued,
            target_date=day,
            kind="nightly",
            model_kind="gbm",
            model_version="baseline-gbm",
            mlflow_run_id="bench",
            model_spec=None,
            reference_kind=REFERENCE_KIND,
            grid_digest="bench",
        )
        c = s.cells.assign(run_id=run_id, city="los_angeles")
        write_skill_version(
            None,
            city="los_angeles",
            run_id=run_id,
            tables={
                "forecast_skill": pa.Table.from_pandas(g, preserve_index=False),
                "cell_skill": pa.Table.from_pandas(c, preserve_index=False),
            },
        )
    rebuild_catalog(None)
    return time.perf_counter() - t0


def time_skill(days: int, queries: int) -> dict[str, float]:
    import io
    from contextlib import redirect_stdout

    from traffic.cli import format_skill, main
    from traffic.resources import Resources
    from traffic.verify.stage import skill_window

    res = Resources.from_config()
    fn_ms, cli_ms = [], []
    skill_window("los_angeles", res=res, days=days)  # warm the OS file cache once
    for _ in range(queries):
        t = time.perf_counter()
        win = skill_window("los_angeles", res=res, days=days)
        text = format_skill("los_angeles", days, win, "all")
        fn_ms.append((time.perf_counter() - t) * 1e3)
    assert len(win["days"]) == days and text
    for _ in range(max(queries // 5, 10)):
        t = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            assert main(["skill", "los_angeles", "--days", str(days)]) == 0
        cli_ms.append((time.perf_counter() - t) * 1e3)
    return {
        "fn_median": statistics.median(fn_ms),
        "fn_p95": float(np.percentile(fn_ms, 95)),
        "cli_median": statistics.median(cli_ms),
        "cli_p95": float(np.percentile(cli_ms, 95)),
    }


def verify_one_day(city: str) -> dict[str, object]:
    """Ingest + rasterize the shipped data of ``city``, publish the run for the day before the newest, verify it."""
    from traffic import pipeline
    from traffic.config import load_city
    from traffic.grid import load_tensor, read_grid
    from traffic.publish import publish_forecast, reference_stats
    from traffic.resources import Resources
    from traffic.verify.scores import seasonal_reference

    c = load_city(city)
    res = Resources.from_config()
    first, last = pipeline.source_dates(c)
    t = time.perf_counter()
    pipeline.ingest(c, first, last, res=res)
    pipeline.rasterize(c, first, last, res=res)
    prep_s = time.perf_counter() - t
    as_of = (dt.date.fromisoformat(last) - dt.timedelta(days=1)).isoformat()
    win = pipeline.training_window(c, as_of)
    grid = load_tensor(c, max(win["start"], first), as_of, lake=res.lake)
    origin = pipeline.forecast_origin(c, as_of)
    h_out = c.forecast.horizon_steps
    fc = seasonal_reference(grid, h_out)
    cells = read_grid(c, lake=res.lake)
    cent = cells.geometry.centroid.to_crs(4326)
    frame = pd.DataFrame(
        {
            "cell_id": cells["cell_id"].to_numpy(),
            "row": cells["row"].to_numpy(),
            "col": cells["col"].to_numpy(),
            "centroid_lon": cent.x.to_numpy(),
            "centroid_lat": cent.y.to_numpy(),
            "polygon_wkt": cells.geometry.to_crs(4326).to_wkt().to_numpy(),
        }
    )
    observed = grid.mask.any(axis=0)
    publish_forecast(
        res.warehouse.path,
        city=c.name,
        run={
            "model_name": f"traffic-{c.name}",
            "model_version": "baseline-seasonal_average",
            "model_kind": "seasonal_average",
            "issued_at": origin,
            "data_start": grid.times[0],
            "data_end": grid.times[-1],
            "timezone": c.timezone,
        },
        forecast=fc,
        target_times=pd.date_range(origin, periods=h_out, freq=pd.Timedelta(seconds=c.bin_seconds)),
        channels=list(grid.channels),
        cells=frame,
        cell_ids=grid.cell_ids,
        has_data=observed,
        reference=reference_stats(grid.values, grid.mask, list(grid.channels)),
        lower=fc * 0.85,
        upper=fc * 1.15,
    )
    t = time.perf_counter()
    cold = pipeline.verify(c, res=res)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    again = pipeline.verify(c, last, last, res=res)
    again_s = time.perf_counter() - t
    assert cold["verified"] and again["unchanged"], (cold, again)
    return {
        "city": city,
        "day": last,
        "prep_s": prep_s,
        "cold_s": cold_s,
        "again_s": again_s,
        "stages": cold["timings_s"],
        "window_days": len(pd.unique(grid.times.tz_convert(c.timezone).date)),
        "cells": int(observed.any(axis=0).sum()),
        "channels": len(grid.channels),
        "h_out": h_out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--cells-with-data", type=int, default=180)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cities", nargs="*", default=["los_angeles", "berlin"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch bench/RESULTS.md")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_verify_"))
    os.environ["TRAFFIC_HOME"] = str(work / "skill")
    os.environ.pop("TRAFFIC_DUCKDB", None)
    build_s = build_skill_store(args.days, args.cells_with_data, args.seed)
    sk = time_skill(args.days, args.queries)
    one = []
    for city in args.cities:
        os.environ["TRAFFIC_HOME"] = str(work / city)
        one.append(verify_one_day(city))
    import duckdb

    rows = "\n".join(
        f"| {o['city']} | {o['day']} | {o['window_days']} d x {o['channels']} ch, {o['cells']} cells with data, "
        f"{o['h_out']} horizons | **{o['cold_s']:.2f} s** | {o['again_s']:.2f} s | "
        + ", ".join(f"{k} {v}" for k, v in o["stages"].items() if k != "total")
        + f" | {o['prep_s']:.1f} s |"
        for o in one
    )
    body = f"""## Verification: `traffic skill` over {args.days} days, and verify for one day of a city

- Machine: {machine()}; load average {load_average()} at the end of the run (the machine is shared)
- Date: {today()}; duckdb {duckdb.__version__}, pandas {pd.__version__}
- Command: `python bench/bench_verify.py{"" if args.days == 90 else f" --days {args.days}"}`
- `traffic skill`: {args.days} verified day-ahead runs of `los_angeles` (LA grid {H} x {W}, {args.cells_with_data} cells with
  data, 1 channel, {H_OUT} horizons of 15 min) written through `write_skill_version` + one catalog rebuild in {build_s:.1f} s;
  timed: what `traffic skill los_angeles --days {args.days}` does after start-up (open the catalog read-only,
  `skill_window`: the catalog's `skill_days` / `skill_groups` macros, format, close), {args.queries} times after one warm-up,
  and the whole command in-process (`traffic.cli.main`, the city file loaded and validated too)

| measure | result |
|---|---|
| `traffic skill` over {args.days} days (catalog open + queries + text), median | **{sk["fn_median"]:.1f} ms** (target <= 100 ms) |
| ... p95 | {sk["fn_p95"]:.1f} ms |
| the command in-process incl. loading the city file, median / p95 | {sk["cli_median"]:.1f} / {sk["cli_p95"]:.1f} ms |

Verify for one day after rasterize (`pipeline.verify`: the run for the day before the newest, a seasonal-average
forecast with 80 % bounds published through `publish_forecast`; raster of the shipped data; no MLflow run to log to):

| city | target day | run | verify, cold (target <= 5 s) | again, same day (nothing written) | stages of the cold verify (s) | ingest + rasterize of all shipped days |
|---|---|---|---:|---:|---|---:|
{rows}
"""
    print(body)
    if not args.no_write:
        replace_block("verify", body)


if __name__ == "__main__":
    main()
