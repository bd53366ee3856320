"""Time the main job (``make nightly``) for both cities, per stage, on this machine.

Runs the whole nightly pipeline through Airflow in a fresh ``TRAFFIC_HOME`` (a temporary
folder unless given), then reads each task's duration from Airflow's metadata DB and
writes the table into ``bench/RESULTS.md`` between the ``pipeline`` markers.

    python bench/bench_pipeline.py [--home DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", help="TRAFFIC_HOME to use (default: a fresh temporary folder)")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="traffic-bench-"))
    os.environ["TRAFFIC_HOME"] = str(home)
    sys.path.insert(0, str(ROOT))
    import json

    from traffic import pipeline
    from traffic.airflow_runner import _airflow, airflow_env, run_nightly

    t0 = time.perf_counter()
    summary = run_nightly()
    total = time.perf_counter() - t0
    # one intraday refresh per city, after the nightly (a morning of the newest day: a partial day
    # is ingested, so this runs in the bench's own TRAFFIC_HOME, never in the project's var/)
    refresh_s = {}
    for city in summary["cities"]:
        until = f"{pipeline.source_dates(city)[1]} 08:00"
        t = time.perf_counter()
        _airflow(["dags", "test", f"refresh_{city}", "-c", json.dumps({"until": until})], airflow_env())
        refresh_s[city] = (until, round(time.perf_counter() - t, 1))
    con = sqlite3.connect(home / "airflow" / "airflow.db")
    rows = con.execute(
        "SELECT dag_id, task_id, (julianday(end_date) - julianday(start_date)) * 86400.0 "
        "FROM task_instance ORDER BY dag_id, start_date"
    ).fetchall()
    con.close()
    lines = [
        "## Main job (`make nightly`): both cities through Airflow",
        "",
        f"Machine: {machine()}. Date: {dt.date.today()}. Command: `python bench/bench_pipeline.py`.",
        f"Total wall time of the main job (Airflow DB migrate + 4 `airflow dags test` runs): **{total:.0f} s** "
        "(target <= 600 s). Then one `refresh_<city>` run per city (target: refresh <= 15 s per city).",
        "",
        "| dag | task | seconds |",
        "|---|---|---:|",
    ]
    lines += [f"| {d} | {t} | {s:.1f} |" for d, t, s in rows if s is not None]
    lines += ["", "Per `airflow dags test` call (includes Airflow's own start-up and parsing):", ""]
    lines += ["| city | ingest dag | nightly dag |", "|---|---:|---:|"]
    for city, info in summary["cities"].items():
        lines.append(f"| {city} | {info['timings_s']['ingest_dag']} | {info['timings_s']['nightly_dag']} |")
    lines.append(f"\nAirflow prepare (db migrate + pool): {summary['timings_s']['airflow_prepare']} s")
    lines += ["", "Intraday refresh (`airflow dags test refresh_<city>`, after the nightly):", ""]
    lines += ["| city | until (local) | refresh task s | whole dags test call s |", "|---|---|---:|---:|"]
    for city, (until, secs) in refresh_s.items():
        task = [s for d, t, s in rows if d == f"refresh_{city}" and t == "refresh" and s is not None]
        lines.append(f"| {city} | {until} | {task[-1] if task else float('nan'):.1f} | {secs} |")
    replace_block("pipeline", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
