"""MLflow down: every stage that needs it fails first, in seconds, with one line naming the URI and the cause.

Real components: a closed local port (a dead server), a socket that accepts and never answers
(a hung one), the real ``traffic`` command in a subprocess. Nothing is ingested: a stage that
got past its check would fail on the empty lake with another error.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from tests.mlflow_servers import closed_port, hung_server
from traffic import pipeline
from traffic.config import PROJECT_ROOT
from traffic.errors import TrackingServerError
from traffic.resources import Registry, Resources

AS_OF = "2012-03-07"


def _res(tmp_path, uri: str) -> Resources:
    res = Resources.under(tmp_path / "home")
    return dataclasses.replace(res, registry=Registry(tracking_uri=uri, artifact_root=res.registry.artifact_root))


@pytest.fixture
def dead(tmp_path) -> tuple[str, Resources]:
    uri = f"http://127.0.0.1:{closed_port()}"
    return uri, _res(tmp_path, uri)


@pytest.mark.parametrize("stage", ["train", "forecast", "refresh"])
def test_every_serving_stage_fails_first_when_mlflow_is_down(stage, dead, los_angeles):
    uri, res = dead
    t0 = time.perf_counter()
    with pytest.raises(TrackingServerError) as err:
        if stage == "refresh":
            pipeline.refresh(los_angeles, until="2012-03-07 08:00", res=res)
        else:
            getattr(pipeline, stage)(los_angeles, AS_OF, res=res)
    assert time.perf_counter() - t0 < 3
    line = str(err.value)
    assert uri in line and "Connection refused" in line and "\n" not in line
    if stage != "train":
        assert f"{stage} los_angeles needs it" in line and "no forecast is stored yet" in line


def test_a_nightly_publish_checks_before_it_writes(dead, los_angeles):
    """The maps go to MLflow: the publish fails before it reads the forecast or touches the catalog."""
    uri, res = dead
    meta = {"path": "forecasts/city=los_angeles/issued_at=x/forecast.npz", "kind": "nightly", "mlflow_run_id": "r1"}
    with pytest.raises(TrackingServerError, match=r"publish los_angeles needs it: the run's maps .* run r1"):
        pipeline.publish(los_angeles, meta, res=res)
    assert not res.warehouse.path.exists()
    # a refresh logs no maps: it needs no server (it gets as far as the missing forecast file)
    with pytest.raises(FileNotFoundError):
        pipeline.publish(los_angeles, {**meta, "kind": "refresh"}, res=res)


def test_a_city_served_by_a_baseline_says_what_it_needs(dead, los_angeles):
    uri, res = dead
    folder = res.lake.partition("forecasts", city="los_angeles", issued_at="20120308T080000Z")
    meta = {"issued_at": "2012-03-08T08:00:00+00:00", "model_kind": "gbm", "model_name": "traffic-los_angeles"}
    res.lake.write_json({**meta, "model_version": "baseline-gbm", "mlflow_run_id": "abc123"}, folder / "meta.json")
    older = res.lake.partition("forecasts", city="los_angeles", issued_at="20120307T080000Z")
    res.lake.write_json({**meta, "model_kind": "model", "model_version": "1"}, older / "meta.json")
    assert pipeline.last_served(los_angeles, res=res)["model_kind"] == "gbm"  # the newest one
    with pytest.raises(TrackingServerError) as err:
        pipeline.forecast(los_angeles, AS_OF, res=res)
    line = str(err.value)
    assert "served by baseline 'gbm'" in line and "refitted from the lake" in line and "abc123" in line


def test_a_hung_server_fails_the_forecast_within_ten_seconds(tmp_path, los_angeles):
    with hung_server() as uri:
        t0 = time.perf_counter()
        with pytest.raises(TrackingServerError, match="timed out"):
            pipeline.forecast(los_angeles, AS_OF, res=_res(tmp_path, uri))
        assert time.perf_counter() - t0 <= 10


@pytest.mark.parametrize("cmd", [["forecast", "los_angeles", "--as-of", AS_OF], ["refresh", "los_angeles"]])
def test_the_command_prints_one_line_and_exits_1(cmd, tmp_path):
    env = {
        **os.environ,
        "TRAFFIC_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "traffic.cli", *cmd], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"traffic {cmd[0]}: MLflow tracking server http://127.0.0.1:")
    assert "unexpected" not in lines[0] and "Traceback" not in proc.stderr
