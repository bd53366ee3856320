"""A fault a retry cannot fix fails the Airflow task at once, logged as one line (issue 9).

Airflow runs in a child process (``dag.test()``) against a migrated SQLite metadata DB under
the test's TRAFFIC_HOME, as in ``tests/test_e2e_airflow.py``. Two faults of the configuration
that only a task can see (the DAGs parse): a city file whose feed paths are written relative to
the project root (the rule before issue 9; they now resolve against the city file's folder),
and a run whose ``end`` is before its ``start``. The ingest task must fail on its first try
although it has ``retries = 2`` (before, it went up for retry and ``dag.test()`` waited out the
retry delays of 2 and 4 minutes). A third city file does not validate (an EPSG code pyproj does
not know): the other cities keep their DAGs (before, the whole DAG file failed to import) and
its stand-in ``ingest_<city>`` fails at once with the error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.airflow_helpers import migrated_env
from traffic.airflow_runner import FAULT_MARK, fault_in
from traffic.config import PROJECT_ROOT

DAG_TEST = """
import datetime as dt, json, os, pathlib, time
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
assert not bag.import_errors, bag.import_errors
from sqlalchemy import select
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
out = {}
out["dag_ids"] = sorted(bag.dag_ids)
for city, conf in (("la_paths", {"start": "2012-03-01", "end": "2012-03-01"}),
                   ("la_dates", {"start": "2012-03-02", "end": "2012-03-01"}),
                   ("la_epsg", {})):
    dag = bag.dags[f"ingest_{city}"]
    t = time.perf_counter()
    dr = dag.test(logical_date=dt.datetime(2012, 3, 2, 9, tzinfo=dt.timezone.utc), run_conf=conf)
    seconds = time.perf_counter() - t
    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.run_id == dr.run_id)).all()
        tasks = {ti.task_id: [str(ti.state), ti.try_number, ti.max_tries] for ti in tis}
    out[city] = {"state": str(dr.state), "tasks": tasks, "seconds": seconds}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_config_faults_fail_the_task_without_retries(tmp_path):
    cities = tmp_path / "cities"
    cities.mkdir()
    text = (PROJECT_ROOT / "cities" / "los_angeles.toml").read_text()
    city_file = cities / "la_paths.toml"  # feed paths relative to the project root: the rule before
    city_file.write_text(text.replace('name = "los_angeles"', 'name = "la_paths"').replace('"../data/', '"data/'))
    absolute = text.replace('name = "los_angeles"', 'name = "la_dates"').replace('"../data/', f'"{PROJECT_ROOT}/data/')
    (cities / "la_dates.toml").write_text(absolute)
    broken = absolute.replace('name = "la_dates"', 'name = "la_epsg"').replace("crs_epsg = 26945", "crs_epsg = 99999")
    (cities / "la_epsg.toml").write_text(broken)  # does not validate: a stand-in DAG, the others parse
    env = migrated_env(TRAFFIC_CITIES=str(cities))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DAG_TEST)], env=env, capture_output=True, text=True, timeout=240
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs.pop("dag_ids") == [
        "ingest_la_dates",
        "ingest_la_epsg",
        "ingest_la_paths",
        "nightly_la_dates",
        "nightly_la_paths",
        "refresh_la_dates",
        "refresh_la_paths",
    ]
    stand_in = runs.pop("la_epsg")
    assert stand_in["state"] == "failed" and stand_in["tasks"] == {"city_config": ["failed", 1, 2]}, stand_in
    for out in runs.values():
        assert out["state"] == "failed", out
        state, try_number, max_tries = out["tasks"]["ingest"]
        assert state == "failed" and try_number == 1 and max_tries == 2, out  # retries configured, none used
        assert out["tasks"]["rasterize"][0] == "upstream_failed", out
        assert out["seconds"] < 100, out  # no retry delay waited out
    assert time.perf_counter() - t < 200
    # the task log holds each fault as one line: the file, the key, the value, the rule and what to write
    faults = [ln.split(FAULT_MARK, 1)[1] for ln in output.splitlines() if FAULT_MARK in ln]
    assert len(faults) == 3 and not any("Traceback" in f for f in faults), output[-6000:]
    path_fault, range_fault, epsg_fault = faults
    assert path_fault.startswith("IngestError: cannot read ") and "file does not exist" in path_fault
    # a first ingest checks the delivery (the observations) before it writes the registry: that path is named first
    assert f"({city_file}: feed 'metr' observations = 'data/samples/la_metr/observations/';" in path_fault
    assert f"a relative path resolves against the city file's folder, {cities}" in path_fault
    assert "exists relative to the project root: write '" in path_fault
    assert range_fault.startswith("UsageError: end '2012-03-01' is before start '2012-03-02'")
    assert epsg_fault.startswith(f"ConfigError: {cities / 'la_epsg.toml'}: crs_epsg = 99999 is not an EPSG code")
    assert fault_in(output) == epsg_fault.split(" (not retried", 1)[0]


def test_fault_in_finds_the_last_fault_line():
    text = (
        "INFO starting\n"
        f"ERROR traffic.airflow_runner: {FAULT_MARK}ConfigError: a.toml: x = 1 must be >= 2 "
        "(not retried: a retry cannot fix it)\nINFO done\n"
    )
    assert fault_in(text) == "ConfigError: a.toml: x = 1 must be >= 2"
    assert fault_in("INFO nothing failed here\n") is None
