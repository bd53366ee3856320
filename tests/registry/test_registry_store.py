"""registry=: every registry function works on the store it is given, whatever the environment names."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

from traffic.registry import (
    CHALLENGER,
    champion,
    decide_promotion,
    load_module,
    log_training,
    logged_metrics,
    promote,
    run_data,
    run_metrics,
)
from traffic.registry.health import recover_unfinished

DATA_WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


@dataclass(frozen=True)
class Store:
    """What ``traffic.resources.Registry`` carries (a structural :class:`traffic.registry.RegistryStore`)."""

    tracking_uri: str
    artifact_root: str
    username: str | None = None
    password: str | None = None
    token: str | None = None


@pytest.fixture
def store(tmp_path, _migrated_mlflow_db):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    shutil.copyfile(_migrated_mlflow_db, folder / "mlflow.db")
    return Store(f"sqlite:///{folder / 'mlflow.db'}", (folder / "mlartifacts").as_uri(), username="u", password="p")


def test_a_given_store_is_used_and_the_configured_one_is_left_alone(
    berlin, make_module, make_result, mlflow_db, store, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    result = make_result(make_module(0.1))
    info = log_training(berlin, result, data_window=DATA_WINDOW, code_version="x", registry=store)
    assert champion(berlin, CHALLENGER) is None  # nothing in the configured (TRAFFIC_HOME) registry
    newest = champion(berlin, CHALLENGER, registry=store)
    assert newest is not None and newest["version"] == info["version"] == "1"
    decision = decide_promotion(result.metrics["model"], None, result.best_baseline())
    assert promote(berlin, info["version"], decision, registry=store)["champion"] == "1"
    assert run_metrics(info["run_id"], registry=store).rmse == result.metrics["model"].rmse
    assert run_data(info["run_id"], registry=store)["tags"]["code_version"] == "x"
    assert logged_metrics(berlin, registry=store) is not None and logged_metrics(berlin) is None
    assert load_module(berlin, registry=store) is not None
    assert recover_unfinished(berlin, registry=store)["failed_runs"] == []
    artifacts = store.artifact_root.removeprefix("file://")
    assert any(os.scandir(artifacts))  # the run's artifacts went under the store's root
    # the credentials were set for the calls only
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ
