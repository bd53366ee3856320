"""Fast loops: `traffic nightly --skip-ingest` on what the lake holds, and the task lines shown in the terminal."""

from __future__ import annotations

import pytest

from tests.ingest.helpers import canonical_city
from traffic import cli, pipeline
from traffic.airflow_runner import airflow_env, run_plan, task_line
from traffic.errors import QualityError
from traffic.resources import Resources


def test_skip_ingest_reads_no_feed_and_refuses_an_empty_lake_in_one_line(tmp_path, monkeypatch):
    import pandas as pd

    points_registry = pd.DataFrame({"source_id": ["a", "b"], "lon": [13.40, 13.41], "lat": [52.50, 52.51]})
    obs = pd.DataFrame(
        [("a", "2024-06-01T10:00:00", 300, 50.0), ("b", "2024-06-02T10:00:00", 300, 44.0)],
        columns=["source_id", "timestamp", "interval_s", "speed_kmh"],
    )
    city = canonical_city(tmp_path / "raw", obs, points_registry)
    res = Resources.under(tmp_path / "home2")
    with pytest.raises(QualityError, match=r"holds no ingested day .* without --skip-ingest first"):
        pipeline.lake_dates(city, res=res)
    with pytest.raises(QualityError, match="holds no ingested day"):
        pipeline.ingest(city, "2024-06-01", "2024-06-02", skip_ingest=True, res=res)
    done = pipeline.ingest(city, "2024-06-01", "2024-06-02", res=res)
    assert done["feeds"]["f"]["days_unchanged"] == 0
    assert pipeline.lake_dates(city, res=res) == ("2024-06-01", "2024-06-02")
    with pytest.raises(QualityError, match=r"no ingested 2024-06-05 \(it holds 2024-06-01 \.\. 2024-06-02\)"):
        pipeline.lake_dates(city, as_of="2024-06-05", res=res)

    def unread(*a, **k):
        raise AssertionError("a feed was read")

    import traffic.ingest.run as ingest_run

    registry_reader = ingest_run.read_feed_registry
    monkeypatch.setattr("traffic.ingest.run.read_delivery", unread)
    monkeypatch.setattr("traffic.ingest.run.read_feed_registry", unread)
    skipped = pipeline.ingest(city, "2024-06-01", "2024-06-02", skip_ingest=True, res=res)
    assert skipped["skipped"] and skipped["feeds"]["f"]["partitions"] == 2
    assert skipped["feeds"]["f"]["rows_accepted"] == done["feeds"]["f"]["rows_accepted"] == 2
    monkeypatch.setattr("traffic.ingest.run.read_feed_registry", registry_reader)
    again = pipeline.ingest(city, "2024-06-01", "2024-06-02", res=res)  # the same bytes: only the registry is read
    assert again["feeds"]["f"]["days_unchanged"] == 2 and "skipped" not in again


def test_nightly_skip_ingest_on_an_empty_lake_is_one_line_before_airflow(capsys, monkeypatch):
    def no_airflow(*a, **k):
        raise AssertionError("Airflow was started")

    monkeypatch.setattr("traffic.airflow_runner.prepare", no_airflow)
    assert cli.main(["nightly", "los_angeles", "--skip-ingest"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("traffic nightly: city los_angeles: the lake ")
    assert "holds no ingested day" in err[0] and "without --skip-ingest" in err[0]


# lines of `airflow dags test` as Airflow 3 prints them (structlog console renderer)
AIRFLOW_OUTPUT = """\
2026-12-07T12:46:30.315387Z [info     ] [DAG TEST] starting task_id=ingest map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-12-07T12:46:30.373412Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2232
2026-12-07T12:46:30.427398Z [info     ] ingest los_angeles: start ('2012-03-01', '2012-03-01', until=None) [traffic.pipeline] loc=pipeline.py:71
2026-12-07T12:46:30.500000Z [info     ] los_angeles/metr: 1 day(s) already in the lake, 0 new [traffic.ingest.run] loc=run.py:700
2026-12-07T12:46:31.280301Z [info     ] ingest los_angeles: done in 0.9 s: feed metr: 1 day(s) [x] [traffic.pipeline] loc=pipeline.py:90
2026-12-07T12:47:01.000000Z [info     ] train step 40/120 (33 %): train loss 0.1234, val loss 0.2000, elapsed 0:30, ETA 1:00 [traffic.forecast.loop] loc=loop.py:306
2026-12-07T12:47:02.000000Z [warning  ] feed metr stopped [traffic.verify.stage] loc=stage.py:1
2026-12-07T12:47:03.000000Z [info     ] Pushing xcom                   [task] loc=task_runner.py:2280
"""


def test_the_terminal_shows_stage_lines_progress_and_warnings_once():
    shown = [s for line in AIRFLOW_OUTPUT.splitlines(keepends=True) if (s := task_line(line)) is not None]
    assert shown == [
        "12:46:30 ingest los_angeles: start ('2012-03-01', '2012-03-01', until=None)",
        "12:46:31 ingest los_angeles: done in 0.9 s: feed metr: 1 day(s) [x]",
        "12:47:01 train step 40/120 (33 %): train loss 0.1234, val loss 0.2000, elapsed 0:30, ETA 1:00",
        "12:47:02 WARNING feed metr stopped",
    ]


def test_a_plan_runs_its_steps_in_order_and_names_the_step_that_failed(tmp_path, monkeypatch):
    """One child runs the plan (traffic.airflow_batch): each step is started and done in order; the first that fails
    raises with its own output and stops the plan (the step after it never starts)."""
    monkeypatch.setenv("TRAFFIC_HOME", str(tmp_path))
    events: list[tuple[str, int]] = []
    steps = [{"airflow": ["version"]}, {"airflow": ["no-such-command"]}, {"airflow": ["version"]}]
    with pytest.raises(RuntimeError, match=r"`airflow no-such-command` failed \(exit 1\)") as err:
        run_plan(
            steps,
            airflow_env(),
            started=lambda i: events.append(("start", i)),
            done=lambda i, _s: events.append(("done", i)),
            line=lambda i, _t: None,
            note=lambda _t: None,
        )
    assert events == [("start", 0), ("done", 0), ("start", 1)]
    assert "no-such-command" in str(err.value).split("\n", 1)[1]  # the step's own output, not the plan's
