"""The intraday refresh end to end through Airflow's ``dag.test()`` on real data (LA).

As in ``tests/test_e2e_airflow.py``, Airflow runs in a child process against a migrated
SQLite metadata DB under the test's TRAFFIC_HOME and the DagRun state is asserted. The
champion is built cheaply: a real training run on a few-second budget, promoted with the
registry's own ``promote`` (whether it beats the baselines is the nightly test's concern).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.airflow_helpers import migrated_env, run_python
from traffic import lake, pipeline
from traffic.config import duckdb_path, load_city

DAG_TEST = """
import datetime as dt, json, os
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["refresh_los_angeles"]
dr = dag.test(logical_date=dt.datetime.fromisoformat(os.environ["LOGICAL_DATE"]), run_conf={"until": os.environ["UNTIL"]})
from sqlalchemy import select
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
with create_session() as session:
    tis = session.scalars(select(TaskInstance).where(TaskInstance.run_id == dr.run_id)).all()
    tasks = {ti.task_id: str(ti.state) for ti in tis}
print(json.dumps({"state": str(dr.state), "tasks": tasks}))
"""


def refresh_through_airflow(env: dict[str, str], until: str, logical_date: str) -> dict:
    return run_python(DAG_TEST, {**env, "UNTIL": until, "LOGICAL_DATE": logical_date}, timeout=600)


@pytest.mark.slow
def test_refresh_los_angeles_through_airflow(traffic_home, monkeypatch):
    la = load_city("los_angeles")
    env = migrated_env()

    # the champion's window: the shipped week, ingested and rasterized in full
    pipeline.ingest(la, "2012-03-01", "2012-03-07")
    pipeline.rasterize(la, "2012-03-01", "2012-03-07")

    # no champion yet: the refresh task is skipped, the run does not fail
    first = refresh_through_airflow(env, "2012-03-07 06:00", "2012-03-07T14:05:00+00:00")
    assert first["state"] == "success", first
    assert first["tasks"] == {
        "resolve_window": "success",
        "ingest": "success",
        "rasterize": "success",
        "refresh": "skipped",
    }, first

    from traffic.registry import Decision, champion, promote

    trained = pipeline.train(la, "2012-03-07", budget_s=3)
    promote(la, trained["version"], Decision(promote=True, reason="test fixture: a champion for the refresh DAG"))
    assert champion(la)["version"] == str(trained["version"])

    second = refresh_through_airflow(env, "2012-03-07 08:10", "2012-03-07T16:10:00+00:00")
    assert second["state"] == "success", second
    assert set(second["tasks"].values()) == {"success"}, second

    # the partial day in the lake: rows before 08:10 PST (16:10 UTC), the bins ended by then
    report = lake.read_json(lake.partition("quality", city=la.name, feed="metr", date="2012-03-07") / "report.json")
    assert report["partial"] is True and report["until"] == "2012-03-07T16:10:00+00:00"
    assert report["last_timestamp"] == "2012-03-07T16:05:00+00:00"  # METR-LA rows every 5 min

    # the refresh run: issued at the end of the newest complete bin (08:00 PST), targets from there
    con = duckdb.connect(str(duckdb_path()), read_only=True)
    try:
        runs = con.execute("SELECT run_id, model_version, issued_at FROM forecast_runs ORDER BY issued_at").fetchall()
        assert [r[0] for r in runs] == ["los_angeles_20120307T160000Z"]
        assert str(runs[0][1]) == str(trained["version"])
        first_target, n_h = con.execute(
            "SELECT min(target_time), count(DISTINCT horizon) FROM forecasts WHERE run_id = ?",
            [runs[0][0]],
        ).fetchone()
    finally:
        con.close()
    assert pd.Timestamp(first_target).tz_convert("UTC") == pd.Timestamp("2012-03-07T16:00Z")
    assert n_h == la.forecast.horizon_steps

    # the refresh served the champion from its eager copy, which forecasts what the exported program does
    from traffic.forecast.inference import forecast_after
    from traffic.grid import load_tensor
    from traffic.model import Forecaster
    from traffic.registry import load_serving_module, load_version_module

    champ = champion(la)
    fast = load_serving_module(champ["run_id"], champ["model_uri"])
    assert isinstance(fast, Forecaster)
    grid = load_tensor(la, "2012-03-06", "2012-03-07")
    n_ctx = la.forecast.context_steps
    exported = forecast_after(load_version_module(champ["model_uri"]), grid, -1, context_steps=n_ctx)
    np.testing.assert_allclose(forecast_after(fast, grid, -1, context_steps=n_ctx), exported, rtol=1e-4, atol=1e-3)

    # under other model code the state dict may no longer be that model: the exported program is served
    from traffic.registry import mlflow_registry

    monkeypatch.setattr(mlflow_registry, "eager_fingerprint", lambda: {"model_py_sha256": "changed", "torch": "x"})
    served = load_serving_module(champ["run_id"], champ["model_uri"])
    assert not isinstance(served, Forecaster)
    np.testing.assert_allclose(forecast_after(served, grid, -1, context_steps=n_ctx), exported, rtol=1e-6, atol=1e-6)
