"""A copied TRAFFIC_HOME is self-contained: it trains into and reads from its own artifacts."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import torch

from traffic.registry import (
    CHALLENGER,
    champion,
    decide_promotion,
    load_serving_module,
    load_version_module,
    log_training,
    promote,
)

pytestmark = pytest.mark.usefixtures("mlflow_db")

DATA_WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


def _files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _stored_uris(db) -> list[str]:
    con = sqlite3.connect(db)
    try:
        rows = [r[0] for r in con.execute("SELECT artifact_location FROM experiments WHERE name LIKE 'traffic-%'")]
        rows += [r[0] for r in con.execute("SELECT artifact_uri FROM runs")]
        rows += [r[0] for r in con.execute("SELECT artifact_location FROM logged_models")]
        rows += [r[0] for r in con.execute("SELECT storage_location FROM model_versions")]
    finally:
        con.close()
    return [r for r in rows if r]


def test_a_copied_home_trains_into_and_loads_from_its_own_artifacts(
    berlin, make_module, make_result, holdout_data, traffic_home, tmp_path, monkeypatch
):
    first = make_result(make_module(0.1))
    info = log_training(berlin, first, data_window=DATA_WINDOW, code_version="a")
    promote(berlin, info["version"], decide_promotion(first.metrics["model"], None, first.best_baseline()))

    copy = tmp_path / "copied-home"
    shutil.copytree(traffic_home, copy)
    original_files = _files(traffic_home / "mlartifacts")
    monkeypatch.setenv("TRAFFIC_HOME", str(copy))

    # train into the copy: nothing of it lands in the original's mlartifacts
    second = make_result(make_module(0.05))
    info2 = log_training(berlin, second, data_window=DATA_WINDOW, code_version="b")
    assert _files(traffic_home / "mlartifacts") == original_files
    assert len(_files(copy / "mlartifacts")) > len(original_files)
    uris = _stored_uris(copy / "mlflow.db")
    assert uris and all(str(copy) in u and str(traffic_home) + "/" not in u for u in uris), uris

    # read from the copy with the original gone
    shutil.rmtree(traffic_home)
    champ = champion(berlin)
    assert champ is not None and champ["version"] == info["version"]
    x = torch.from_numpy(holdout_data[0][:2])
    with torch.no_grad():
        exported = load_version_module(champ["model_uri"])(x)
        served = load_serving_module(champ["run_id"], champ["model_uri"])(x)
    assert exported.shape == served.shape and exported.shape[0] == 2
    assert champion(berlin, CHALLENGER)["version"] == info2["version"]
    load_version_module(info2["model_uri"])
