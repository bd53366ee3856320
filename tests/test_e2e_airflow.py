"""The nightly pipeline end to end through Airflow's ``dag.test()`` on real data (LA).

Airflow runs in a child process (it reads its configuration at import) against a
migrated SQLite metadata DB under the test's TRAFFIC_HOME. The DagRun state is asserted:
``dag.test()`` returns a failed DagRun instead of raising.
"""

from __future__ import annotations

import json

import duckdb
import mlflow
import pytest

from tests.airflow_helpers import migrated_env, run_python
from traffic.config import duckdb_path, mlflow_uri
from traffic.forecast.baselines import BASELINES

DAG_TEST = """
import datetime as dt, json, os
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
states = {}
ingest = bag.dags["ingest_los_angeles"]
dr = ingest.test(logical_date=dt.datetime(2012, 3, 8, 9, tzinfo=dt.timezone.utc),
                 run_conf={"start": "2012-03-01", "end": "2012-03-07"})
states["ingest"] = str(dr.state)
if states["ingest"] == "success":
    nightly = bag.dags["nightly_los_angeles"]
    dr = nightly.test(logical_date=dt.datetime(2012, 3, 8, 10, tzinfo=dt.timezone.utc), run_conf={"as_of": "2012-03-07"})
    states["nightly"] = str(dr.state)
    from sqlalchemy import select
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == "nightly_los_angeles")).all()
        states["tasks"] = {ti.task_id: str(ti.state) for ti in tis}
print(json.dumps(states))
"""


@pytest.mark.slow
def test_nightly_los_angeles_through_airflow(traffic_home):
    env = migrated_env()
    states = run_python(DAG_TEST, env, timeout=900)
    assert states["ingest"] == "success", states
    assert states["nightly"] == "success", states
    assert set(states["tasks"].values()) == {"success"}, states["tasks"]

    # the decision on version 1: champion if it beat every gating baseline (GBM included), else the
    # best gating baseline serves, labelled as such (the city's first night: nothing passed yet)
    mlflow.set_tracking_uri(mlflow_uri())
    client = mlflow.MlflowClient()
    v1 = client.get_model_version("traffic-los_angeles", "1")
    decision = v1.tags["promotion_decision"]
    if v1.tags["promoted"] == "true":
        champ = client.get_model_version_by_alias("traffic-los_angeles", "champion")
        assert str(champ.version) == "1"
        expected = [("los_angeles", "1", "model")]
    else:
        # what serves is recorded on the registered model (the backtest rule's decision)
        record = json.loads(client.get_registered_model("traffic-los_angeles").tags["serving"])
        assert record["kind"] == "baseline" and record["baseline"] in BASELINES, decision
        assert decision.startswith(("switched: backtest over 2 folds", "not promoted: backtest over 2 folds")), decision
        expected = [("los_angeles", f"baseline-{record['baseline']}", record["baseline"])]

    # the day-ahead forecast in DuckDB: every 15-min bin of 2012-03-08 (local), only cells with data
    con = duckdb.connect(str(duckdb_path()), read_only=True)
    try:
        runs = con.execute("SELECT city, model_version, model_kind, issued_at FROM forecast_runs").fetchall()
        assert [(r[0], str(r[1]), r[2]) for r in runs] == expected
        n_h, min_t, max_t, n_rows, n_level, n_bounds = con.execute(
            "SELECT count(DISTINCT horizon), min(target_time), max(target_time), count(*), count(congestion_level), "
            "count(lower) FILTER (WHERE lower <= value AND value <= upper) "
            "FROM latest_forecast WHERE city = 'los_angeles'"
        ).fetchone()
        assert n_h == 96
        assert str(min_t).startswith("2012-03-08 08:00")  # local midnight after 2012-03-07 = 08:00 UTC
        assert str(max_t).startswith("2012-03-09 07:45")  # ... to the last bin of the local day
        assert n_level == n_rows == n_bounds  # every published row has data, a level and its interval
        n_cells = con.execute(
            "SELECT count(DISTINCT cell_id) FROM latest_forecast WHERE city = 'los_angeles'"
        ).fetchone()[0]
        assert 50 < n_cells <= 207
    finally:
        con.close()
