"""Hotspot query speed on a store of 90 days of published runs, and the cost of one publish.

Run from the project root::

    python bench/bench_hotspots.py                 # 90 days x 2 runs, writes bench/RESULTS.md
    python bench/bench_hotspots.py --days 10 --no-write   # a quick look

The store is built through the real publish path (:func:`traffic.publish.publish_forecast`,
each publish rebuilding and swapping the catalog) in a temporary ``TRAFFIC_HOME``: city
``los_angeles`` (its timezone from ``cities/los_angeles.toml``), the LA grid shape (24 x 37 =
888 cells) with ``--cells-with-data`` of them observed (speed channel ``metr.speed_kmh``),
``--runs-per-day`` runs a day (issued at local midnight and noon), 96 horizons of 15 minutes
(24 h, so consecutive runs overlap), speeds from a morning/evening rush-hour profile with
noise, 80 % bounds. Then the CLI's function :func:`traffic.publish.find_hotspots` (open the
catalog read-only, pick the newest run covering the time, query that run's files, close) is
timed at random covered local times, 3-hour windows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import load_average, machine, replace_block, today  # noqa: E402

H, W = 24, 37
H_OUT = 96
BIN = "15min"


def make_run(rng: np.random.Generator, issued: pd.Timestamp, observed: np.ndarray, free_flow: np.ndarray) -> dict:
    tt = pd.date_range(issued, periods=H_OUT, freq=BIN)
    hours = np.asarray(tt.tz_convert("America/Los_Angeles").hour + tt.tz_convert("America/Los_Angeles").minute / 60)
    rush = np.exp(-(((hours - 8) / 1.2) ** 2)) + 0.8 * np.exp(-(((hours - 17.5) / 1.5) ** 2))  # (H_OUT,)
    depth = rng.uniform(0.2, 0.9, (H, W))  # how hard each cell jams at rush hour
    speed = free_flow[None] * (1 - rush[:, None, None] * depth[None]) + rng.normal(0, 3, (H_OUT, H, W))
    fc = np.clip(speed, 1, None)[:, None]  # (H_OUT, 1, H, W)
    ids = np.arange(H * W, dtype=np.int32).reshape(H, W)
    rows, cols = np.divmod(np.arange(H * W), W)
    lon, lat = -118.56 + 0.0108 * cols, 34.03 + 0.009 * rows
    cells = pd.DataFrame(
        {
            "cell_id": ids.ravel(),
            "row": rows,
            "col": cols,
            "centroid_lon": lon,
            "centroid_lat": lat,
            "polygon_wkt": [f"POINT ({x:.5f} {y:.5f})" for x, y in zip(lon, lat, strict=True)],
        }
    )
    return {
        "city": "los_angeles",
        "run": {"model_name": "traffic-los_angeles", "model_version": "7", "issued_at": issued},
        "forecast": fc,
        "target_times": tt,
        "channels": ["metr.speed_kmh"],
        "cells": cells,
        "cell_ids": ids,
        "has_data": observed[None],
        "reference": np.where(observed, free_flow, np.nan)[None],
        "lower": fc * 0.85,
        "upper": fc * 1.1,
        "coverage": np.where(observed, rng.uniform(0.6, 1.0, (H, W)), 0.0)[None],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--runs-per-day", type=int, default=2)
    ap.add_argument("--cells-with-data", type=int, default=180)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch bench/RESULTS.md")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_hotspots_"))
    os.environ["TRAFFIC_HOME"] = str(work)
    os.environ.pop("TRAFFIC_DUCKDB", None)
    from traffic.publish import find_hotspots, publish_forecast

    rng = np.random.default_rng(args.seed)
    observed = np.zeros(H * W, bool)
    observed[rng.choice(H * W, args.cells_with_data, replace=False)] = True
    observed = observed.reshape(H, W)
    free_flow = rng.uniform(60, 110, (H, W))
    first = pd.Timestamp("2012-01-01", tz="America/Los_Angeles")
    step = pd.Timedelta(hours=24 // args.runs_per_day)
    issued = [(first + i * step).tz_convert("UTC") for i in range(args.days * args.runs_per_day)]

    t0 = time.perf_counter()
    pubs = []
    for ts in issued:
        pubs.append(publish_forecast(None, **make_run(rng, ts, observed, free_flow)))
    build_s = time.perf_counter() - t0
    # one more publish onto the full store (a re-publish of the newest run)
    last = publish_forecast(None, **make_run(rng, issued[-1], observed, free_flow))
    rows_per_run = pubs[0]["n_rows"]

    # random covered local times, as an analyst types them (naive = local wall clock)
    # random covered local day times (06:00-20:00, when an analyst asks), as typed: naive = local wall clock
    days = rng.integers(0, args.days, args.queries)
    minutes = rng.integers(6 * 60, 20 * 60, args.queries)
    ats = [
        (first + pd.Timedelta(days=int(d), minutes=int(m))).strftime("%Y-%m-%d %H:%M")
        for d, m in zip(days, minutes, strict=True)
    ]
    from traffic.publish import connect_catalog

    find_hotspots(None, "los_angeles", hours=3, at=ats[0])  # warm the OS file cache once
    times_ms, cells = [], []
    for at in ats:  # as `traffic hotspots` does it: open the catalog, ask, close
        t = time.perf_counter()
        res = find_hotspots(None, "los_angeles", hours=3, at=at)
        times_ms.append((time.perf_counter() - t) * 1e3)
        cells.append(len(res.rows))
    session_ms = []
    con = connect_catalog(None)
    for at in ats:  # in one open session (a notebook, a service)
        t = time.perf_counter()
        find_hotspots(None, "los_angeles", hours=3, at=at, con=con)
        session_ms.append((time.perf_counter() - t) * 1e3)
    con.close()
    open_ms = []
    for _ in range(50):
        t = time.perf_counter()
        connect_catalog(None).close()
        open_ms.append((time.perf_counter() - t) * 1e3)
    med = statistics.median(times_ms)
    p95 = float(np.percentile(times_ms, 95))
    store_mb = sum(f.stat().st_size for f in (work / "published").rglob("*") if f.is_file()) / 1e6
    import duckdb

    body = f"""## Hotspots: query speed on 90 days of published runs, and one publish

- Machine: {machine()}; load average {load_average()} at the end of the run (the machine is shared)
- Date: {today()}; duckdb {duckdb.__version__}, pandas {pd.__version__}
- Command: `python bench/bench_hotspots.py{"" if args.days == 90 else f" --days {args.days}"}`
- Store: `los_angeles`, {args.days} days x {args.runs_per_day} runs = {len(issued)} runs, LA grid {H} x {W} = {H * W} cells
  ({args.cells_with_data} with data), 1 speed channel, {H_OUT} horizons of 15 min, 80 % bounds: {rows_per_run:,} forecast rows
  per run, {rows_per_run * len(issued):,} in all, {store_mb:.1f} MB of Parquet; built through `publish_forecast` in {build_s:.1f} s
- Timed: `traffic.publish.find_hotspots(None, "los_angeles", hours=3, at=<random covered local time 06:00-20:00>)`, the function behind
  `traffic hotspots` (opens the catalog read-only, picks the newest run covering the time, reads that run's files, closes),
  {args.queries} queries after one warm-up

| measure | result |
|---|---|
| hotspot query incl. opening + closing the catalog (what `traffic hotspots` does), median | **{med:.1f} ms** (target <= 50 ms) |
| ... p95 | {p95:.1f} ms |
| ... min / max | {min(times_ms):.1f} / {max(times_ms):.1f} ms |
| of which opening + closing a read-only DuckDB connection alone, median | {statistics.median(open_ms):.1f} ms |
| hotspot query in an open session (`con=`), median / p95 | {statistics.median(session_ms):.1f} / {float(np.percentile(session_ms, 95)):.1f} ms |
| cells listed per query (moderate or worse, limit 20), median | {statistics.median(cells):.0f} |
| one publish onto the full store ({len(issued)} runs), total | {last["seconds"]:.2f} s |
| ... of which the catalog rebuild + swap | {last["catalog_seconds"]:.2f} s |
| first publish (empty store), total | {pubs[0]["seconds"]:.2f} s |
"""
    print(body)
    if not args.no_write:
        replace_block("hotspots", body)


if __name__ == "__main__":
    main()
