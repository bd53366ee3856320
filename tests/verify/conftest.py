"""Fixtures of the verification tests: the tiny city under the test's own TRAFFIC_HOME, and a ready MLflow store."""

from __future__ import annotations

import shutil

import pytest

from tests.verify import verify_cases as vc
from traffic.resources import Resources


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """An MLflow SQLite store with its tables created once (creating them takes seconds); tests copy it."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_template")
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def tiny(tmp_path, traffic_home, monkeypatch):
    """``(city, res)``: the tiny city (``verify_days = 2``) and Resources of the test's TRAFFIC_HOME."""
    c = vc.write_city(tmp_path / "cities", monkeypatch)
    return c, Resources.under(traffic_home)


@pytest.fixture
def tiny_mlflow(tiny, mlflow_template):
    """``(city, res, run_id)``: the tiny city with a real MLflow run (experiment ``traffic-tiny``) that serves it."""
    from mlflow import MlflowClient

    c, res = tiny
    shutil.copy(mlflow_template, res.home / "mlflow.db")
    client = MlflowClient(tracking_uri=res.registry.tracking_uri)
    exp = client.create_experiment("traffic-tiny", artifact_location=res.registry.artifact_root)
    run = client.create_run(exp, run_name="tiny-nightly")
    client.set_terminated(run.info.run_id)
    return c, res, run.info.run_id
