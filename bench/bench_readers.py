"""Readers during publishes under CPU load: failed reads with the project's reader vs a bare connect.

Run from the project root::

    python bench/bench_readers.py                      # 8 readers x 20 publishes, 2 busy loops; writes bench/RESULTS.md
    python bench/bench_readers.py --publishes 5 --no-write

The scenario is the one of ``tests/publish/test_concurrent_readers.py`` (imported from there):
8 reader processes (half hold one session, half reconnect for every read) query
``latest_forecast``, ``hotspots`` and ``forecast_runs`` while ``--publishes`` runs are published
one by one, each publish rebuilding and swapping the catalog, with ``--busy`` busy-loop processes
on the CPUs; after each publish it waits until every reconnecting reader has read the new
catalog. It runs twice: the readers open with :func:`traffic.publish.connect_catalog` (retries an
open that spanned a swap), then with a bare ``duckdb.connect(path, read_only=True)``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "publish"))
from results import load_average, machine, replace_block, today  # noqa: E402


def run(publishes: int, busy: int, plain: bool) -> dict:
    from publish_cases import make_case
    from test_concurrent_readers import H_OUT, N_READERS, readers_during_publishes

    cases = [
        make_case(issued_at=f"2024-12-{d:02d}T06:00:00Z", h_out=H_OUT, freq="15min", shape=(6, 6), seed=d)
        for d in range(1, publishes + 2)
    ]
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        results, stats, order, _ = readers_during_publishes(
            Path(home) / "forecasts.duckdb", cases, busy=busy, busy_limit_s=600.0, plain=plain
        )
        wall = time.perf_counter() - t0
    errors = [e for s in stats for e in s["errors"]]
    return {
        "readers": N_READERS,
        "publishes": len(results),
        "publish_failed": sum(r[0] != "ok" for r in results),
        "reads": sum(s["reads"] for s in stats),
        "failed": sum(s["failed"] for s in stats),
        "half": sum(s["half"] for s in stats),
        "publish_s": sorted(r[2] for r in results if r[0] == "ok"),
        "wall_s": wall,
        "errors": sorted({e.split(":")[0][:80] for e in errors}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--publishes", type=int, default=20)
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes (CPU load)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update bench/RESULTS.md")
    args = ap.parse_args()
    rows = []
    for label, plain in (
        ("`traffic.publish.connect_catalog` (retries a swapped open)", False),
        ("bare `duckdb.connect(read_only=True)`", True),
    ):
        r = run(args.publishes, args.busy, plain)
        med = r["publish_s"][len(r["publish_s"]) // 2] if r["publish_s"] else float("nan")
        rows.append(
            f"| {label} | {r['readers']} x {r['publishes']} | {r['reads']:,} | **{r['failed']}** | {r['half']} | "
            f"{r['publish_failed']} | {med:.2f} s | {r['wall_s']:.0f} s | {'; '.join(r['errors']) or '-'} |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "## Readers during publishes under CPU load (swap-safe reader vs bare connect)",
            "",
            f"- Machine: {machine()}; load average {load_average()} at the end of the run (the machine is shared)",
            f"- Date: {today()}",
            f"- Command: `python bench/bench_readers.py --publishes {args.publishes} --busy {args.busy}`",
            "- Scenario (`tests/publish/test_concurrent_readers.py`): 8 reader processes (half hold a session, half"
            " reconnect per read) query `latest_forecast`, `hotspots`, `forecast_runs` while runs of 6,912 rows are"
            f" published one by one (each rebuilds and swaps the catalog), {args.busy} busy loops on the CPUs; after"
            " each publish it waits until every reconnecting reader has read the new catalog.",
            "- At random the race is rare (the issue saw 2 failures in 1,506 bare opens under load); the deterministic"
            " case, a swap right before DuckDB's third open, is `tests/publish/test_reader_swap.py`: a bare connect"
            " fails every time (`IO Error: No more data remaining in MetadataReader`), `connect_catalog` reopens.",
            "",
            "| reader opens with | readers x publishes | reads | failed reads | half runs seen | failed publishes"
            " | publish, median | wall | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        replace_block("readers", body)


if __name__ == "__main__":
    main()
