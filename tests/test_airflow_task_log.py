"""The stages' ``logging`` records reach the Airflow task log (a real ``dag.test()`` in a child process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.airflow_helpers import migrated_env

DAG_TEST = """
import json, os
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
dr = bag.dags["ingest_los_angeles"].test(run_conf={"start": "2012-03-01", "end": "2012-03-01"})
print(json.dumps({"state": str(dr.state)}))
"""


@pytest.mark.slow
def test_stage_records_are_in_the_airflow_task_log(traffic_home):
    env = migrated_env()  # the project-local Airflow of traffic.airflow_runner (`make nightly`)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DAG_TEST)], env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert '"state": "success"' in proc.stdout, out[-6000:]
    assert "ingest los_angeles: done in" in out and "feed metr: 1 day(s) (0 already in the lake), read" in out, out[
        -6000:
    ]
    assert "rasterize los_angeles: done in" in out and "1 day(s) 2012-03-01..2012-03-01" in out, out[-6000:]
