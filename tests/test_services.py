"""The production topology on the machine's real services (no Docker engine here).

What ``docker-compose.yml`` sketches, run natively: Airflow metadata on PostgreSQL, the
CeleryExecutor with Redis as broker and PostgreSQL as result backend, an Airflow API
server, two Celery workers (``worker-cpu`` on queue ``default``, ``worker-gpu`` on queue
``gpu``) and the MLflow tracking/registry backend on PostgreSQL. The LA ingest and
nightly DAGs run through the executor (``airflow dags test --use-executor``); the test
asserts that the training task ran on the gpu-queue worker and that the registry rows
live in PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

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
    wait_http,
)

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(not services_up() and not os.environ.get("CI"), reason="PostgreSQL/Redis not running"),
]


@pytest.fixture
def databases():
    with pg_databases("airflow", "mlflow") as names:
        yield names


def test_celery_postgres_redis_topology(traffic_home, databases):
    import duckdb
    import mlflow
    import psycopg2

    port = free_port()
    redis_db = 1 + int(uuid.uuid4().int % 14)
    airflow_db = f"postgresql+psycopg2://{PG}/{databases['airflow']}"
    mlflow_db = f"postgresql+psycopg2://{PG}/{databases['mlflow']}"
    env = migrated_env(
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow_db,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{airflow_db}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__PORT=str(port),
        MLFLOW_TRACKING_URI=mlflow_db,
        TRAFFIC_TRAIN_BUDGET_S="20",
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    logs = traffic_home / "logs"
    logs.mkdir()
    procs = [start_api_server(env, port, logs, apps="execution,core")]
    worker = [airflow, "celery", "worker", "-c", "1", "--without-gossip", "--without-mingle", "-s"]
    procs.append(
        start_process(
            [*worker, "-q", "gpu", "-H", f"gpu-{port}@%h"],
            {**env, "TRAFFIC_WORKER_NAME": "worker-gpu"},
            logs / "gpu.log",
        )
    )
    procs.append(
        start_process(
            [*worker, "-q", "default", "-H", f"cpu-{port}@%h"],
            {**env, "TRAFFIC_WORKER_NAME": "worker-cpu"},
            logs / "cpu.log",
        )
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/version")
        for dag_id, conf in (
            ("ingest_los_angeles", {"start": "2012-03-01", "end": "2012-03-07"}),
            ("nightly_los_angeles", {"as_of": "2012-03-07"}),
        ):
            proc = subprocess.run(
                [airflow, "dags", "test", dag_id, "--use-executor", "-c", json.dumps(conf)],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert proc.returncode == 0, f"{dag_id} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    finally:
        stop_processes(procs)

    con = psycopg2.connect(f"postgresql://{PG}/{databases['airflow']}")
    with con.cursor() as cur:
        cur.execute("SELECT dag_id, state FROM dag_run ORDER BY dag_id")
        assert cur.fetchall() == [("ingest_los_angeles", "success"), ("nightly_los_angeles", "success")]
        cur.execute("SELECT queue, state FROM task_instance WHERE task_id = 'train'")
        assert cur.fetchall() == [("gpu", "success")]
    con.close()

    # the registry lives in PostgreSQL
    mlflow.set_tracking_uri(mlflow_db)
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='traffic-los_angeles'")
    assert len(versions) == 1
    assert client.get_run(versions[0].run_id).data.tags["worker"] == "worker-gpu"  # the gpu-queue worker trained
    assert versions[0].tags.get("promotion_decision")
    champion = versions[0].tags["promoted"] == "true"
    db = traffic_home / "forecasts.duckdb"
    if champion:
        c = duckdb.connect(str(db), read_only=True)
        assert c.execute("SELECT count(*) FROM forecast_runs WHERE city = 'los_angeles'").fetchone()[0] == 1
        c.close()
    else:  # no version passed the gate: the best baseline is published, labelled with its name
        c = duckdb.connect(str(db), read_only=True)
        rows = c.execute("SELECT model_kind, model_version FROM forecast_runs WHERE city = 'los_angeles'").fetchall()
        c.close()
        assert len(rows) == 1 and rows[0][0] in ("persistence", "seasonal_average", "ridge", "gbm"), rows
        assert rows[0][1] == f"baseline-{rows[0][0]}"
