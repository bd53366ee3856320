"""8 reader processes query the catalog while runs are published: no failed read, no half run.

Readers open the catalog the project's way (:func:`traffic.publish.connect_catalog`, which retries
an open that spanned a swap); half of them hold one session open, half reconnect for every read.
After each publish the test waits until every reconnecting reader has seen the new run (a
condition, not a sleep), so it holds on a loaded machine too.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np
import pytest
from publish_cases import make_case

from traffic.publish import duckdb_publish as dp
from traffic.publish.congestion import congestion

N_READERS = 8
H_OUT = 96

LATEST = "SELECT run_id, count(*) FROM latest_forecast GROUP BY run_id"
HOT = "SELECT run_id, count(*) FROM hotspots GROUP BY run_id"
RUNS = "SELECT run_id, n_rows FROM forecast_runs"
#: Longest wait for the readers to see a publish (a bound, not a sleep: the wait ends when they have).
SEE_TIMEOUT_S = 120.0
#: Pause of a reader between two reads (analysts think between queries; it leaves the 2 CPUs to the publishes).
READ_PAUSE_S = 0.02


def _plain(db: str):
    """What a third-party tool that does not retry does (docs/publishing.md)."""
    import duckdb

    return duckdb.connect(db, read_only=True)


def _reader(db: str, hold: bool, expected: dict, order: list[str], newest, stop, ready, out, plain: bool) -> None:
    """Query latest_forecast / hotspots / forecast_runs in a loop; report failures and half runs.

    ``newest`` (a shared int) is the index in ``order`` of the newest run this reader has seen;
    ``plain`` opens with a bare ``duckdb.connect(read_only=True)`` instead of the project's reader.
    """
    from traffic.publish import connect_catalog

    if plain:
        connect_catalog = _plain  # noqa: F811 - the bench's comparison

    stats = {"reads": 0, "failed": 0, "half": 0, "errors": [], "seen": set()}
    con = connect_catalog(db) if hold else None
    signalled = False
    while not stop.is_set():
        try:
            c = con if hold else connect_catalog(db)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            stats["failed"] += 1
            stats["errors"].append(f"open: {exc!r}")
            continue
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
            seen = max(order.index(r) for r in runs)
            if seen > newest.value:
                newest.value = seen
        except Exception as exc:  # noqa: BLE001
            stats["failed"] += 1
            stats["errors"].append(repr(exc))
        finally:
            if not hold:
                c.close()
        if not signalled:
            ready.put(1)
            signalled = True
        stop.wait(READ_PAUSE_S)
    if con is not None:
        con.close()
    out.put({**stats, "hold": hold, "seen": sorted(stats["seen"])})


def _busy(stop, limit_s: float) -> None:
    """CPU load: a busy loop, bounded by ``limit_s`` whatever happens to the test."""
    end = time.monotonic() + limit_s
    x = 0
    while not stop.is_set() and time.monotonic() < end:
        for _ in range(10_000):
            x = (x * 31 + 7) % 1_000_003


def _expected(case) -> tuple[int, int]:
    """Rows of a run, and rows at level moderate or worse (what hotspots shows of it)."""
    _, level = congestion(case.forecast, case.reference, case.channels)
    return case.forecast.size, int((level >= 1).sum())


def readers_during_publishes(
    db, cases, *, busy: int = 0, busy_limit_s: float = 120.0, plain: bool = False
) -> tuple[list, list, list, dict]:
    """Publish ``cases[0]``, start the readers (and ``busy`` CPU hogs), publish the rest one by one.

    Returns the outcome of each publish, every reader's statistics, the run ids in publish order
    and the rows expected of each run.
    """
    expected: dict[str, dict[str, int]] = {"latest": {}, "hot": {}}
    order = []
    for case in cases:
        run_id = dp.run_id_for(case.city, case.run["issued_at"])
        expected["latest"][run_id], expected["hot"][run_id] = _expected(case)
        order.append(run_id)
    dp.publish_forecast(db, **cases[0].kwargs())

    ctx = mp.get_context("spawn")
    stop, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    newest = [ctx.Value("i", 0) for _ in range(N_READERS)]
    readers = [
        ctx.Process(target=_reader, args=(str(db), i % 2 == 0, expected, order, newest[i], stop, ready, out, plain))
        for i in range(N_READERS)
    ]
    hogs = [ctx.Process(target=_busy, args=(stop, busy_limit_s)) for _ in range(busy)]
    for p in readers + hogs:
        p.start()
    results = []
    try:
        for _ in readers:
            ready.get(timeout=SEE_TIMEOUT_S)  # every reader has read once before the publishes start
        for k, case in enumerate(cases[1:], start=1):
            t0 = time.perf_counter()
            try:
                res = dp.publish_forecast(db, **case.kwargs(), lock_timeout_s=30)
                results.append(("ok", res["n_rows"], time.perf_counter() - t0))
            except Exception as exc:  # noqa: BLE001
                results.append(("failed", repr(exc), time.perf_counter() - t0))
                continue
            # wait until every reconnecting reader has read the catalog with this run
            deadline = time.monotonic() + SEE_TIMEOUT_S
            while any(newest[i].value < k for i in range(N_READERS) if i % 2):
                assert time.monotonic() < deadline, f"a reader did not see run {k} within {SEE_TIMEOUT_S} s"
                time.sleep(0.01)
    finally:
        stop.set()
        stats = [out.get(timeout=SEE_TIMEOUT_S) for _ in readers]
        for p in readers + hogs:
            p.join(timeout=60)
    return results, stats, order, expected


def _check(results, stats, order, expected) -> None:
    assert [r[0] for r in results] == ["ok"] * (len(order) - 1), results
    assert [r[1] for r in results] == [expected["latest"][r] for r in order[1:]]
    assert sum(s["failed"] for s in stats) == 0, [e for s in stats for e in s["errors"]][:5]
    assert sum(s["half"] for s in stats) == 0, [e for s in stats for e in s["errors"]][:5]
    assert all(s["reads"] > 0 for s in stats)
    # sessions held open kept their catalog: only the first run; reconnecting readers saw the last one
    assert all(s["seen"] == [order[0]] for s in stats if s["hold"])
    assert all(order[-1] in s["seen"] for s in stats if not s["hold"])
    assert np.isfinite([r[2] for r in results]).all()


@pytest.mark.slow
def test_eight_readers_during_two_large_publishes(db):
    cases = [
        make_case(issued_at=f"2024-12-0{d}T06:00:00Z", h_out=H_OUT, freq="15min", shape=(20, 20), seed=d)
        for d in (2, 3, 4)
    ]  # 400 cells x 2 channels x 96 horizons = 76,800 rows per run
    _check(*readers_during_publishes(db, cases))


@pytest.mark.slow
def test_eight_readers_during_twenty_publishes_under_cpu_load(db):
    """8 readers x 20 publishes with 2 busy loops on the CPUs: 0 failed reads, 0 failed publishes."""
    cases = [
        make_case(issued_at=f"2024-12-{d:02d}T06:00:00Z", h_out=H_OUT, freq="15min", shape=(6, 6), seed=d)
        for d in range(1, 22)
    ]  # 36 cells x 2 channels x 96 horizons = 6,912 rows per run
    _check(*readers_during_publishes(db, cases, busy=2, busy_limit_s=60.0))
