"""8 reader processes query the catalog while 2 large runs are published: no failure, no half run."""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
from publish_cases import make_case

from traffic.publish import duckdb_publish as dp
from traffic.publish.congestion import congestion

N_READERS = 8
SHAPE = (20, 20)  # 400 cells x 2 channels x 96 horizons = 76,800 rows per run
H_OUT = 96

LATEST = "SELECT run_id, count(*) FROM latest_forecast GROUP BY run_id"
HOT = "SELECT run_id, count(*) FROM hotspots GROUP BY run_id"
RUNS = "SELECT run_id, n_rows FROM forecast_runs"


def _reader(db: str, hold: bool, expected: dict, stop, ready, out) -> None:
    """Query latest_forecast / hotspots / forecast_runs in a loop; report failures and half runs."""
    import duckdb

    stats = {"reads": 0, "failed": 0, "half": 0, "errors": [], "seen": set()}
    con = duckdb.connect(db, read_only=True) if hold else None
    signalled = False
    while not stop.is_set():
        c = con if hold else duckdb.connect(db, read_only=True)
        try:
            runs = dict(c.execute(RUNS).fetchall())
            for sql, which in ((LATEST, "latest"), (HOT, "hot")):
                for run_id, n in c.execute(sql).fetchall():
                    stats["seen"].add(run_id)
                    want = expected[which].get(run_id)
                    if n != want or (which == "latest" and runs.get(run_id) != n):
                        stats["half"] += 1
                        stats["errors"].append(f"{which} {run_id}: {n} rows, expected {want}")
            stats["reads"] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            stats["failed"] += 1
            stats["errors"].append(repr(exc))
        finally:
            if not hold:
                c.close()
        if not signalled:
            ready.put(1)
            signalled = True
    if con is not None:
        con.close()
    out.put({**stats, "hold": hold, "seen": sorted(stats["seen"])})


def _expected(case) -> tuple[int, int]:
    """Rows of a run, and rows at level moderate or worse (what hotspots shows of it)."""
    _, level = congestion(case.forecast, case.reference, case.channels)
    return case.forecast.size, int((level >= 1).sum())


@pytest.mark.slow
def test_eight_readers_during_two_publishes(db):
    cases = [
        make_case(issued_at=f"2024-12-0{d}T06:00:00Z", h_out=H_OUT, freq="15min", shape=SHAPE, seed=d)
        for d in (2, 3, 4)
    ]
    expected: dict[str, dict[str, int]] = {"latest": {}, "hot": {}}
    for case in cases:
        run_id = dp.run_id_for(case.city, case.run["issued_at"])
        expected["latest"][run_id], expected["hot"][run_id] = _expected(case)
    dp.publish_forecast(db, **cases[0].kwargs())

    ctx = mp.get_context("spawn")
    stop, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    readers = [
        ctx.Process(target=_reader, args=(str(db), i % 2 == 0, expected, stop, ready, out)) for i in range(N_READERS)
    ]
    for p in readers:
        p.start()
    try:
        for _ in readers:
            ready.get(timeout=120)  # every reader has read once before the publishes start
        results = []
        for case in cases[1:]:
            t0 = time.perf_counter()
            try:
                res = dp.publish_forecast(db, **case.kwargs(), lock_timeout_s=30)
                results.append(("ok", res["n_rows"], time.perf_counter() - t0))
            except Exception as exc:  # noqa: BLE001
                results.append(("failed", repr(exc), time.perf_counter() - t0))
            time.sleep(1.0)  # let the readers query the new catalog
    finally:
        stop.set()
        stats = [out.get(timeout=120) for _ in readers]
        for p in readers:
            p.join(timeout=60)
    assert [r[0] for r in results] == ["ok", "ok"], results
    assert [r[1] for r in results] == [expected["latest"][r] for r in sorted(expected["latest"])[1:]]
    assert sum(s["failed"] for s in stats) == 0, [e for s in stats for e in s["errors"]][:5]
    assert sum(s["half"] for s in stats) == 0, [e for s in stats for e in s["errors"]][:5]
    assert all(s["reads"] > 0 for s in stats)
    # sessions held open kept their catalog: only the first run; reconnecting readers saw the last one
    first, last = sorted(expected["latest"])[0], sorted(expected["latest"])[-1]
    assert all(s["seen"] == [first] for s in stats if s["hold"])
    assert all(last in s["seen"] for s in stats if not s["hold"])
    assert np.isfinite([r[2] for r in results]).all()
