"""The resource layer: built once from the config at the edge, then the stages read only what they are given."""

from __future__ import annotations

import shutil
import socket

import pytest

from traffic import pipeline
from traffic.errors import ConfigError, QualityError
from traffic.lake import Lake
from traffic.resources import Registry, Resources, Warehouse


def test_from_config_reads_the_environment_once(traffic_home, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAFFIC_LAKE", "s3://bucket/lake")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    monkeypatch.setenv("TRAFFIC_DUCKDB", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("TRAFFIC_WORKER_NAME", "worker-gpu")
    monkeypatch.setenv("TRAFFIC_TRAIN_BUDGET_S", "30")
    res = Resources.from_config()
    assert res.lake == Lake("s3://bucket/lake")
    assert res.registry.tracking_uri == "http://mlflow:5000"
    assert (res.registry.username, res.registry.password) == ("ana", "secret")
    assert "secret" not in repr(res)  # credentials never reach a log line
    assert res.warehouse == Warehouse(tmp_path / "w.duckdb")
    assert res.home == traffic_home.resolve()
    assert (res.worker, res.train_steps, res.train_budget_s) == ("worker-gpu", 20, 30.0)  # conftest: 20 steps
    # built once: a later change of the environment does not move it
    monkeypatch.setenv("TRAFFIC_LAKE", str(tmp_path / "elsewhere"))
    assert res.lake == Lake("s3://bucket/lake")


def test_defaults_under_home_match_the_config_layout(traffic_home, monkeypatch):
    monkeypatch.delenv("TRAFFIC_WORKER_NAME", raising=False)
    monkeypatch.delenv("TRAFFIC_TRAIN_STEPS", raising=False)
    from_env, under = Resources.from_config(), Resources.under(traffic_home)
    assert from_env == under
    assert under.registry == Registry(
        tracking_uri=f"sqlite:///{traffic_home.resolve() / 'mlflow.db'}",
        artifact_root=(traffic_home.resolve() / "mlartifacts").as_uri(),
    )
    assert under.worker == socket.gethostname() and under.train_steps is None


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [("TRAFFIC_TRAIN_STEPS", "many", "a whole number >= 0"), ("TRAFFIC_TRAIN_BUDGET_S", "-5", "seconds > 0")],
)
def test_a_bad_override_names_the_variable_and_what_is_allowed(monkeypatch, name, value, allowed):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}={value!r} is not {allowed}") as err:
        Resources.from_config()
    assert (err.value.key, err.value.value, err.value.allowed) == (name, value, allowed)


def test_stages_read_the_lake_they_are_given(traffic_home, tmp_path, los_angeles):
    """check_quality and lake_inputs read ``res.lake`` only: the configured lake can be gone."""
    pipeline.ingest(los_angeles, "2012-03-01", "2012-03-07")
    pipeline.rasterize(los_angeles, "2012-03-01", "2012-03-07")
    other = tmp_path / "other-home"
    shutil.copytree(traffic_home / "lake", other / "lake")
    shutil.rmtree(traffic_home / "lake")
    res = Resources.under(other)

    quality = pipeline.check_quality(los_angeles, "2012-03-07", res=res)
    assert quality["feeds"]["metr"]["days_with_data"] == 7
    inputs = pipeline.lake_inputs(los_angeles, pipeline.training_window(los_angeles, "2012-03-07"), res=res)
    assert [i["date"] for i in inputs] == [f"2012-03-0{d}" for d in range(1, 8)]
    assert all(i["path"].startswith((other / "lake").resolve().as_uri()) for i in inputs)
    with pytest.raises(QualityError, match="raster partitions missing"):
        pipeline.check_quality(los_angeles, "2012-03-07")  # the configured lake: nothing there now


def test_an_airflow_child_gets_the_stores_of_the_resources_it_is_given(tmp_path, monkeypatch):
    from traffic.airflow_runner import airflow_env

    monkeypatch.setenv("TRAFFIC_DUCKDB", str(tmp_path / "not-this.duckdb"))
    res = Resources.under(tmp_path / "child")
    env = airflow_env(res=res)
    assert env["TRAFFIC_HOME"] == str(res.home) and env["TRAFFIC_LAKE"] == str(res.lake.root)
    assert env["TRAFFIC_DUCKDB"] == str(res.warehouse.path)  # the given resources win over the parent's variables
    assert env["MLFLOW_TRACKING_URI"] == res.registry.tracking_uri
    assert env["AIRFLOW_HOME"] == str(res.home / "airflow")
    # the child builds the same resources from that environment
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TRAFFIC_WORKER_NAME", raising=False)
    monkeypatch.delenv("TRAFFIC_TRAIN_STEPS", raising=False)
    assert Resources.from_config() == res


def test_ingest_and_rasterize_write_only_the_lake_they_are_given(traffic_home, tmp_path, los_angeles):
    """The ingest and grid functions get ``lake=res.lake``: nothing reaches the configured lake."""
    res = Resources.under(tmp_path / "other-home")
    ingested = pipeline.ingest(los_angeles, "2012-03-01", "2012-03-03", res=res)
    rasterized = pipeline.rasterize(los_angeles, "2012-03-01", "2012-03-03", res=res)
    assert ingested["feeds"]["metr"]["rows_accepted"] > 0 and rasterized["partitions"] == 3
    assert list(traffic_home.rglob("*")) == []  # the configured TRAFFIC_HOME stays empty
    root = tmp_path / "other-home" / "lake"
    written = {p.relative_to(root).parts[0] for p in root.rglob("*.parquet")}
    assert written == {"registry", "observations", "quarantine", "grid", "assignment", "raster"}
    assert res.lake.list_dates("raster", city=los_angeles.name) == ["2012-03-01", "2012-03-02", "2012-03-03"]
    win, grid = pipeline._load_window(los_angeles, "2012-03-03", res=res)  # reads the given lake too
    assert grid.mask.any() and str(grid.times[-1].tz_convert(los_angeles.timezone).date()) == win["end"]
