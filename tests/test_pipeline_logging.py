"""Every stage logs through ``logging`` (counts, timings, decisions); the nightly takes the newest queued as_of."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.ingest.helpers import canonical_city
from traffic import pipeline
from traffic.grid import IncompleteIngestError
from traffic.resources import Resources


def _event(**extra):
    return SimpleNamespace(extra=extra)


def test_the_newest_queued_as_of_wins():
    queued = [_event(as_of="2024-06-02", start="2024-06-02"), _event(as_of="2024-06-04"), _event(as_of="2024-06-03")]
    assert pipeline.as_of_from_events(queued) == ("2024-06-04", None)


def test_a_newer_partial_day_does_not_hide_a_complete_one_and_alone_skips():
    queued = [_event(as_of="2024-06-03"), _event(as_of="2024-06-04", until="2024-06-04 10:00")]
    assert pipeline.as_of_from_events(queued) == ("2024-06-03", None)
    as_of, skip = pipeline.as_of_from_events([_event(as_of="2024-06-04", until="2024-06-04 10:00")])
    assert as_of is None and "partial day" in skip and "2024-06-04 10:00" in skip
    assert pipeline.as_of_from_events([_event(), SimpleNamespace(extra=None)]) == (None, None)


def test_a_backfill_day_with_later_runs_queued_is_skipped_and_the_last_day_trains():
    backfill = [_event(as_of="2024-06-02", later_runs=2), _event(as_of="2024-06-03", later_runs=1)]
    as_of, skip = pipeline.as_of_from_events(backfill)
    assert as_of is None and "2024-06-03" in skip and "1 later ingest run(s)" in skip and "trains once" in skip
    # the last day (nothing later queued) trains, on the newest day among those queued
    assert pipeline.as_of_from_events([*backfill, _event(as_of="2024-06-04", later_runs=0)]) == ("2024-06-04", None)
    assert pipeline.as_of_from_events([_event(as_of="2024-06-05", later_runs=3), _event(as_of="2024-06-04")]) == (
        "2024-06-05",
        None,
    )


RESOLVE_AS_OF = """
import datetime as dt, json, os
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.api.datamodels._generated import AssetEventDagRunReference, AssetReferenceAssetEventDagRun
from airflow.sdk.execution_time.context import set_current_context

bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
task = bag.dags["nightly_los_angeles"].get_task("resolve_as_of")
asset = AssetReferenceAssetEventDagRun(name="raster_los_angeles", uri="traffic://raster/los_angeles", extra={})

def event(**extra):
    return AssetEventDagRunReference(
        asset=asset, extra=extra, source_task_id="rasterize", source_dag_id="ingest_los_angeles",
        source_run_id="r", source_map_index=-1, source_aliases=[], timestamp=dt.datetime.now(dt.timezone.utc),
    )

cases = {
    "queued": [event(as_of="2012-03-05"), event(as_of="2012-03-07"), event(as_of="2012-03-06")],
    "partial_only": [event(as_of="2012-03-08", until="2012-03-08 08:00")],
}
out = {}
for name, events in cases.items():
    with set_current_context({"params": {"as_of": None}, "triggering_asset_events": {"raster_los_angeles": events}}):
        try:
            out[name] = task.python_callable()
        except Exception as exc:
            out[name] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_the_nightly_dag_takes_the_newest_queued_as_of(tmp_path):
    """The real ``resolve_as_of`` task of the parsed DAG, with Airflow's own asset-event records."""
    from tests.airflow_helpers import run_python
    from traffic.airflow_runner import airflow_env

    env = airflow_env({**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}, res=Resources.under(tmp_path))
    out = run_python(RESOLVE_AS_OF, env)
    assert out["queued"] == "2012-03-07"  # not the first (oldest) event
    assert out["partial_only"].startswith("AirflowSkipException") and "partial day" in out["partial_only"]


@pytest.fixture
def town(tmp_path):
    times = pd.date_range("2024-06-01 00:00", "2024-06-02 23:45", freq="15min")
    obs = pd.DataFrame(
        {
            "source_id": ["a"] * len(times) + ["b"] * len(times),
            "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%S") for t in times] * 2,
            "interval_s": 900,
            "speed_kmh": 40.0,
        }
    )
    registry = pd.DataFrame({"source_id": ["a", "b"], "lon": [13.40, 13.41], "lat": [52.50, 52.51]})
    return canonical_city(tmp_path / "raw", obs, registry)


def _messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_ingest_and_rasterize_log_counts_timings_and_failures(town, caplog):
    with caplog.at_level(logging.INFO, logger="traffic"):
        pipeline.ingest(town, "2024-06-01", "2024-06-02")
        pipeline.rasterize(town, "2024-06-01", "2024-06-02")
    msgs = _messages(caplog, "traffic.pipeline")
    assert any(m.startswith("ingest tinytown: start") for m in msgs)
    done = next(m for m in msgs if m.startswith("ingest tinytown: done in"))
    assert "feed f: 2 day(s) (0 already in the lake), read 384, accepted 384, quarantined 0, 2 sources" in done
    assert any(m.startswith("rasterize tinytown: done in") and "2 day(s) 2024-06-01..2024-06-02" in m for m in msgs)
    assert any("ingested whole in every feed" in m for m in _messages(caplog, "traffic.grid.rasterize"))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="traffic"), pytest.raises(IncompleteIngestError):
        pipeline.rasterize(town, "2024-06-01", "2024-06-03")
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "traffic.pipeline"]
    assert len(failed) == 1 and "rasterize tinytown: failed after" in failed[0].getMessage()
    assert "IncompleteIngestError" in failed[0].getMessage()
