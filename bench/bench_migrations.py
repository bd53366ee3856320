"""What the numbered layout migrations cost a publish: before (sql/schema.sql) and after, interleaved in one run.

Every publish applies the layout twice (its private staging database and the new catalog) and
builds the catalog's runs table from every ``run.parquet`` of the store. Timed, alternating
old and new in the same loop so that both see the same machine load:

* layout on a fresh in-memory DuckDB: the old ``sql/schema.sql`` text (as of commit 822e9f0,
  ``tests/publish/schema_before_migrations.sql``) vs :func:`traffic.publish.migrations.migrate`;
* the catalog's runs table over N run files: the old source vs the source the catalog uses now
  (the same ``read_parquet`` of one schema while every file has the newest layout), and the
  by-name read it falls back to when runs from before a migration are in the store.

Usage: ``python bench/bench_migrations.py [--runs 180] [--repeats 40] [--no-write]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import load_average, machine, replace_block, today  # noqa: E402

from traffic.config import PROJECT_ROOT  # noqa: E402
from traffic.publish import duckdb_publish as dp
from traffic.publish.migrations import migrate
from traffic.publish.sql import statement

OLD_SCHEMA = (PROJECT_ROOT / "tests" / "publish" / "schema_before_migrations.sql").read_text()
OLD_SOURCE = statement("source_files")


def _store(n_runs: int) -> tuple[Path, list[Path]]:
    """A store of ``n_runs`` small published runs; their run.parquet files."""
    sys.path.insert(0, str(PROJECT_ROOT / "tests" / "publish"))
    import pandas as pd
    from publish_cases import make_case

    work = Path(tempfile.mkdtemp(prefix="bench_migrations_"))
    db = work / "forecasts.duckdb"
    t0 = pd.Timestamp("2024-01-01T06:00:00Z")
    for i in range(n_runs):
        case = make_case(issued_at=(t0 + pd.Timedelta(hours=12 * i)).isoformat(), seed=i)
        dp.publish_forecast(db, **case.kwargs(), grace_s=0)
    files = sorted(dp.store_dir(db).glob("runs/city=*/run_id=*/v-*/run.parquet"))
    return db, files


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=180)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch bench/RESULTS.md")
    args = ap.parse_args()

    def old_layout() -> None:
        con = duckdb.connect(":memory:")
        con.execute(OLD_SCHEMA)
        con.close()

    def new_layout() -> None:
        con = duckdb.connect(":memory:")
        migrate(con)
        con.close()

    _, files = _store(args.runs)
    listed = ", ".join("'" + str(f) + "'" for f in files)
    sources = {
        "old runs table": OLD_SOURCE.replace("{files}", listed),
        "new runs table": dp._source("forecast_runs", files),
        "by-name runs table": dp._source("forecast_runs", files, by_name=True),
    }
    con = duckdb.connect(":memory:")
    migrate(con)

    def runs_table(key: str) -> None:
        con.execute(f"CREATE OR REPLACE TABLE r AS SELECT * FROM {sources[key]}")

    timings: dict[str, list[float]] = {"old layout": [], "new layout": [], **{k: [] for k in sources}}
    for fn in (old_layout, new_layout):  # warm-up
        fn()
    for _ in range(args.repeats):
        timings["old layout"].append(_time(old_layout))
        timings["new layout"].append(_time(new_layout))
        for key in sources:
            timings[key].append(_time(lambda key=key: runs_table(key)))
    med = {k: 1000 * statistics.median(v) for k, v in timings.items()}
    lines = [
        "## Layout migrations: what they cost a publish (old schema file vs migrations, interleaved)",
        "",
        f"- Machine: {machine()}; load average {load_average()} at the end of the run (the machine is shared)",
        f"- Date: {today()}; duckdb {duckdb.__version__}",
        f"- Command: `python bench/bench_migrations.py --runs {args.runs} --repeats {args.repeats}`; "
        "old and new alternate in one loop, medians",
        "",
        "| measure | old | new |",
        "|---|---:|---:|",
        f"| layout on a fresh in-memory DuckDB (twice per publish) | {med['old layout']:.1f} ms | "
        f"{med['new layout']:.1f} ms |",
        f"| catalog runs table over {len(files)} run files of one layout | {med['old runs table']:.1f} ms | "
        f"{med['new runs table']:.1f} ms |",
        f"| ... read by name (the fallback while runs from before a migration are in the store) | n/a | "
        f"{med['by-name runs table']:.1f} ms |",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        replace_block("migrations", text)


if __name__ == "__main__":
    main()
