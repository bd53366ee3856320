"""DagBag import test: the generated DAGs parse, are light, and are wired as documented."""

from __future__ import annotations

import os

import pytest

from tests.airflow_helpers import run_python
from traffic.airflow_runner import airflow_env
from traffic.config import load_city
from traffic.resources import Resources

PARSE = """
import json, sys, time
t = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=__import__("os").environ["AIRFLOW__CORE__DAGS_FOLDER"])
out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "heavy": [m for m in ("torch", "geopandas", "mlflow", "duckdb", "sklearn") if m in sys.modules],
    "seconds": time.perf_counter() - t,
    "dags": {},
}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": type(dag.timetable).__name__ + " " + str(getattr(dag.timetable, "description", "")),
        "cron": str(getattr(dag.timetable, "expression", "")), "tz": str(getattr(dag.timetable, "timezone", "")),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "params": sorted(dag.params.keys()),
        "tasks": {
            t.task_id: {
                "queue": t.queue, "pool": t.pool, "retries": t.retries,
                "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                "downstream": sorted(t.downstream_task_ids),
                "outlets": [getattr(o, "uri", None) for o in t.outlets],
            }
            for t in dag.tasks
        },
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    home = tmp_path_factory.mktemp("dags")
    env = airflow_env({**os.environ, "AIRFLOW_HOME": str(home / "airflow")}, res=Resources.under(home))
    return run_python(PARSE, env)


def test_dagbag_imports_without_errors(parsed):
    assert parsed["errors"] == {}
    assert parsed["dag_ids"] == [
        "ingest_berlin",
        "ingest_los_angeles",
        "ingest_melbourne",
        "nightly_berlin",
        "nightly_los_angeles",
        "nightly_melbourne",
        "refresh_berlin",
        "refresh_los_angeles",
        "refresh_melbourne",
    ]


def test_no_heavy_imports_at_parse_time(parsed):
    assert parsed["heavy"] == []


@pytest.mark.parametrize("city", ["berlin", "los_angeles"])
def test_nightly_wiring(parsed, city):
    dag = parsed["dags"][f"nightly_{city}"]
    tasks = dag["tasks"]
    assert tasks["train"]["queue"] == "gpu" and tasks["train"]["pool"] == "gpu"
    order = ["check_quality", "training_window", "train", "evaluate_and_promote", "forecast", "publish"]
    for a, b in zip(order, order[1:], strict=False):
        assert b in tasks[a]["downstream"], f"{a} -> {b}"
    for name, t in tasks.items():
        assert t["timeout"], f"{name} has no execution_timeout"
        if name not in ("resolve_as_of",):
            assert t["retries"] >= 1, f"{name} has no retries"
    # asset-triggered by the ingest DAG's raster asset
    ingest = parsed["dags"][f"ingest_{city}"]["tasks"]
    assert ingest["rasterize"]["outlets"] == [f"traffic://raster/{city}"]
    assert "raster" in dag["schedule"].lower() or "asset" in dag["schedule"].lower()


@pytest.mark.parametrize("city", ["berlin", "los_angeles"])
def test_ingest_verifies_after_rasterize(parsed, city):
    tasks = parsed["dags"][f"ingest_{city}"]["tasks"]
    assert set(tasks) == {"partition_range", "ingest", "rasterize", "verify"}
    assert "verify" in tasks["rasterize"]["downstream"] and "verify" in tasks["partition_range"]["downstream"]
    assert tasks["verify"]["retries"] >= 1 and tasks["verify"]["timeout"]
    assert tasks["verify"]["outlets"] == []  # only rasterize emits the raster asset


@pytest.mark.parametrize("city", ["berlin", "los_angeles"])
def test_refresh_wiring(parsed, city):
    dag = parsed["dags"][f"refresh_{city}"]
    tasks = dag["tasks"]
    assert set(tasks) == {"resolve_window", "ingest", "rasterize", "refresh"}
    order = ["resolve_window", "ingest", "rasterize", "refresh"]
    for a, b in zip(order, order[1:], strict=False):
        assert b in tasks[a]["downstream"], f"{a} -> {b}"
    assert "refresh" in tasks["resolve_window"]["downstream"]  # the window travels to every step
    assert dag["cron"] == "5 * * * *" and "Cron" in dag["schedule"]
    assert dag["tz"] == load_city(city).timezone  # hourly in the city's own clock
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["params"] == ["until"]
    assert parsed["dags"][f"ingest_{city}"]["params"] == [
        "end",
        "skip_ingest",
        "start",
        "until",
    ]  # partial days there too
    for name, t in tasks.items():
        assert t["timeout"] and t["timeout"] <= 600, f"{name}: execution_timeout {t['timeout']}"
        assert t["outlets"] == [], f"{name} must not emit the raster asset (it would trigger the nightly run)"
        if name != "resolve_window":
            assert t["retries"] >= 1, f"{name} has no retries"
