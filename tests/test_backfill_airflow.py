"""``airflow backfill create`` over the LA ingest DAG under a real scheduler: every day ingested, one retrain.

The asset-triggered path runs as in production, not through ``dag.test()``: a DAG processor
parses ``dags/``, the scheduler (LocalExecutor) runs the backfill's ingest runs one after the
other, each rasterize task emits the ``traffic://raster/los_angeles`` event, the scheduler
creates the asset-triggered nightly runs, and the tasks talk to a real API server. Metadata
live in a throw-away PostgreSQL database.

Each backfill day's event carries ``later_runs`` (the ingest runs of later days still queued,
:func:`traffic.airflow_runner.later_runs`), so the nightly run skips every day but the last
(:func:`traffic.pipeline.as_of_from_events`): one training, on the backfill's last day.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import mlflow
import pytest

from tests.airflow_helpers import (
    PG,
    free_port,
    migrated_env,
    pg_databases,
    services_up,
    start_api_server,
    start_process,
    stop_processes,
)
from traffic import lake, pipeline
from traffic.airflow_runner import _airflow as run_airflow
from traffic.airflow_runner import airflow_exe, backfill_args
from traffic.config import duckdb_path, load_city, mlflow_uri

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(not services_up((5432,)) and not os.environ.get("CI"), reason="PostgreSQL not running"),
]

#: The local days the backfill ingests (its runs: 01:00 LA time on 03-06 .. 03-08, each ingesting the day before).
BACKFILLED_DAYS = ["2012-03-05", "2012-03-06", "2012-03-07"]


def _query(db: str, sql: str, *params) -> list[tuple]:
    import psycopg2

    con = psycopg2.connect(f"postgresql://{PG}/{db}")
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def _wait(what: str, check, timeout: float, logs: Path) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if check():
            return
        time.sleep(3)
    tails = {p.name: p.read_text()[-3000:] for p in logs.glob("*.log")}
    raise AssertionError(f"{what} not reached within {timeout} s; logs: {json.dumps(tails, indent=1)}")


@pytest.fixture
def airflow_db():
    with pg_databases("airflow") as names:
        yield names["airflow"]


def test_backfill_ingests_every_day_and_retrains_once(traffic_home, airflow_db):
    la = load_city("los_angeles")
    # the days before the backfill's range are in the lake already (the window is 03-01 .. 03-07)
    pipeline.ingest(la, "2012-03-01", "2012-03-04")
    pipeline.rasterize(la, "2012-03-01", "2012-03-04")

    port = free_port()
    env = migrated_env(
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg2://{PG}/{airflow_db}",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__CORE__PARALLELISM="2",
        # one parse: the scheduled run of today is switched off below and must stay off
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="3600",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="3600",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
    )
    airflow = airflow_exe()
    logs = traffic_home / "logs"
    logs.mkdir()
    procs = [
        start_api_server(env, port, logs),
        start_process([airflow, "dag-processor"], env, logs / "dag-processor.log"),
    ]
    try:
        dags = ("ingest_los_angeles", "nightly_los_angeles")
        _wait(
            "DAGs parsed",
            lambda: len(_query(airflow_db, "SELECT dag_id FROM dag WHERE dag_id IN %s", dags)) == 2,
            240,
            logs,
        )
        for dag_id in dags:
            run_airflow(["dags", "unpause", dag_id], env)
        # no scheduled run of today (an empty day) competes with the backfill
        _query(
            airflow_db, "UPDATE dag SET next_dagrun_create_after = NULL WHERE dag_id = 'ingest_los_angeles' RETURNING 1"
        )
        out = run_airflow(backfill_args("los_angeles", BACKFILLED_DAYS[0], BACKFILLED_DAYS[-1]), env)
        runs = _query(airflow_db, "SELECT run_id, run_type FROM dag_run WHERE dag_id = 'ingest_los_angeles'")
        assert len(runs) == 3 and {t for _, t in runs} == {"backfill"}, (runs, out)
        procs.append(start_process([airflow, "scheduler"], env, logs / "scheduler.log"))

        def settled() -> bool:
            ingest = _query(airflow_db, "SELECT state FROM dag_run WHERE dag_id = 'ingest_los_angeles'")
            nightly = _query(airflow_db, "SELECT state FROM dag_run WHERE dag_id = 'nightly_los_angeles'")
            trained = _query(
                airflow_db,
                "SELECT state FROM task_instance WHERE dag_id = 'nightly_los_angeles' AND task_id = 'publish' "
                "AND state IN ('success', 'failed', 'upstream_failed')",
            )
            done = {"success", "failed"}
            return (
                all(s in done for (s,) in ingest)
                and bool(nightly)
                and all(s in done for (s,) in nightly)
                and (bool(trained) or any(s == "failed" for (s,) in ingest + nightly))
            )

        _wait("backfill and nightly runs finished", settled, 1500, logs)
        time.sleep(10)  # no late nightly run appears
        ingest_runs = _query(
            airflow_db, "SELECT run_type, state FROM dag_run WHERE dag_id = 'ingest_los_angeles' ORDER BY logical_date"
        )
        nightly_runs = _query(
            airflow_db, "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = 'nightly_los_angeles'"
        )
        train = _query(
            airflow_db,
            "SELECT run_id, state FROM task_instance WHERE dag_id = 'nightly_los_angeles' AND task_id = 'train'",
        )
        resolved = _query(
            airflow_db,
            "SELECT run_id, state FROM task_instance WHERE dag_id = 'nightly_los_angeles' AND task_id = 'resolve_as_of'",
        )
    finally:
        stop_processes(procs)

    # every day of the range was ingested and rasterized by its own backfill run
    assert ingest_runs == [("backfill", "success")] * 3, ingest_runs
    have = set(lake.list_dates("raster", city="los_angeles"))
    assert set(BACKFILLED_DAYS) <= have
    assert all(
        set(BACKFILLED_DAYS) <= set(lake.list_dates("quality", city="los_angeles", feed=f.name)) for f in la.feeds
    )
    # the nightly runs were asset-triggered; all succeeded, and exactly one trained
    assert nightly_runs and {(t, s) for _, t, s in nightly_runs} == {("asset_triggered", "success")}, nightly_runs
    trained = [r for r, s in train if s == "success"]
    assert len(trained) == 1, train
    assert {s for r, s in train if r not in trained} <= {"skipped"}, train
    assert len(resolved) == len(nightly_runs)  # every other nightly run was skipped at resolve_as_of
    assert {s for r, s in resolved if r not in trained} <= {"skipped"}, resolved

    # one model version, trained on the backfill's last day, and its forecast published
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri())
    versions = client.search_model_versions("name='traffic-los_angeles'")
    assert len(versions) == 1
    con = duckdb.connect(str(duckdb_path()), read_only=True)
    try:
        issued = con.execute("SELECT issued_at FROM forecast_runs WHERE city = 'los_angeles'").fetchall()
    finally:
        con.close()
    assert len(issued) == 1 and str(issued[0][0]).startswith("2012-03-08 08:00"), issued  # as_of 2012-03-07
