"""Log -> register -> promote round trips against a real MLflow (SQLite under a tmp TRAFFIC_HOME)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from traffic.config import home, mlflow_uri
from traffic.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    champion,
    decide_promotion,
    load_module,
    load_version_module,
    log_training,
    logged_metrics,
    promote,
    run_metrics,
)

pytestmark = pytest.mark.usefixtures("mlflow_db")

DATA_WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri(), registry_uri=mlflow_uri())


def _nightly(city, result, scorer, holdout):
    """What the pipeline does after training: log, score the champion on the same holdout, decide, promote."""
    x, y, mask, _ = holdout
    info = log_training(city, result, data_window=DATA_WINDOW, code_version="test-sha")
    champ = champion(city)
    champ_metrics = scorer(load_module(city), x, y, mask) if champ is not None else None
    decision = decide_promotion(result.metrics["model"], champ_metrics, result.best_baseline())
    outcome = promote(city, info["version"], decision)
    return info, decision, outcome


def test_log_register_promote_round_trip(berlin, make_module, make_result, scorer, holdout_data, traffic_home):
    x, y, mask, _ = holdout_data
    client = _client()
    assert champion(berlin) is None

    t0 = time.perf_counter()
    good, worse, better = (make_result(make_module(e)) for e in (0.1, 0.3, 0.02))
    # the construction the scenario relies on: all beat the baselines, and worse < good < better
    assert good.metrics["model"].rmse_mean < good.best_baseline()[1].rmse_mean
    assert worse.metrics["model"].rmse_mean < worse.best_baseline()[1].rmse_mean
    assert better.metrics["model"].rmse_mean < good.metrics["model"].rmse_mean < worse.metrics["model"].rmse_mean

    # 1. first good version: champion
    info1, d1, out1 = _nightly(berlin, good, scorer, holdout_data)
    assert info1["model_name"] == "traffic-berlin" and info1["version"] == "1"
    assert info1["model_uri"] == "models:/traffic-berlin/1"
    assert d1.promote and d1.champion_rmse is None
    assert (out1["champion"], out1["challenger"]) == ("1", "1")

    # the loaded champion reproduces the logged module, on the input example and on a larger batch
    loaded = load_module(berlin)
    with torch.no_grad():
        ex = torch.from_numpy(good.input_example)
        np.testing.assert_allclose(loaded(ex).numpy(), good.module(ex).numpy(), rtol=1e-5, atol=1e-5)
        batch = torch.from_numpy(x)
        np.testing.assert_allclose(loaded(batch).numpy(), good.module(batch).numpy(), rtol=1e-5, atol=1e-4)
    assert scorer(loaded, x, y, mask).rmse == pytest.approx(good.metrics["model"].rmse, rel=1e-5)

    # 2. a worse version stays challenger, the champion does not move
    info2, d2, out2 = _nightly(berlin, worse, scorer, holdout_data)
    assert info2["version"] == "2"
    assert not d2.promote
    assert d2.champion_rmse == pytest.approx(good.metrics["model"].rmse_mean, rel=1e-5)
    assert (out2["champion"], out2["challenger"]) == ("1", "2")
    assert champion(berlin)["version"] == "1"

    # 3. a better version becomes champion
    info3, d3, out3 = _nightly(berlin, better, scorer, holdout_data)
    assert d3.promote
    assert (out3["champion"], out3["challenger"]) == ("3", "3")
    elapsed = time.perf_counter() - t0
    print(f"\n3 x (log + register + score champion + promote): {elapsed:.2f} s")

    # the reason is written on every version
    for info, decision in ((info1, d1), (info2, d2), (info3, d3)):
        mv = client.get_model_version("traffic-berlin", info["version"])
        assert mv.description == decision.reason
        assert mv.tags["promotion_decision"] == decision.reason
        assert mv.tags["promoted"] == str(decision.promote).lower()
        assert mv.tags["holdout_digest"] == good.holdout.digest
    aliases = client.get_registered_model("traffic-berlin").aliases
    assert {k: str(v) for k, v in aliases.items()} == {CHAMPION: "3", CHALLENGER: "3"}

    champ = champion(berlin)
    assert champ["version"] == "3" and champ["run_id"] == info3["run_id"]
    assert champ["model_uri"] == "models:/traffic-berlin/3"
    with torch.no_grad():
        ex = torch.from_numpy(better.input_example)
        np.testing.assert_allclose(
            load_version_module(champ["model_uri"])(ex).numpy(), better.module(ex).numpy(), rtol=1e-5, atol=1e-5
        )
        # the challenger alias and version URIs load the versions they name
        v2 = load_version_module("models:/traffic-berlin/2")(ex).numpy()
        np.testing.assert_allclose(v2, worse.module(ex).numpy(), rtol=1e-5, atol=1e-5)
        assert not np.allclose(v2, better.module(ex).numpy())

    # the champion's logged metrics are reusable only on the holdout it was scored on
    again = logged_metrics(berlin, holdout_digest=better.holdout.digest)
    assert again.rmse == pytest.approx(better.metrics["model"].rmse)
    assert again.n == better.metrics["model"].n
    assert logged_metrics(berlin, holdout_digest="0" * 64) is None

    # everything lives under TRAFFIC_HOME, and MLflow's process state does not leak into our config
    assert Path(home()) == traffic_home
    assert (traffic_home / "mlflow.db").exists()
    assert any((traffic_home / "mlartifacts" / "traffic-berlin").rglob("model.pt2"))
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_run_contents(berlin, make_module, make_result, monkeypatch):
    result = make_result(make_module(0.1))
    info = log_training(berlin, result, data_window=DATA_WINDOW, code_version="abc123")
    client = _client()
    run = client.get_run(info["run_id"])
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "traffic-berlin"
    assert exp.artifact_location.startswith((home() / "mlartifacts").as_uri())
    assert run.info.status == "FINISHED"

    # params: hyper-parameters, city essentials, data window
    p = run.data.params
    assert p["hp.hidden"] == str(result.params["hidden"])
    assert p["city.name"] == "berlin" and p["city.time_bin"] == berlin.time_bin
    assert p["forecast.horizon_steps"] == str(berlin.forecast.horizon_steps)
    assert p["data.start"] == DATA_WINDOW["start"] and p["data.days"] == str(DATA_WINDOW["days"])

    # metrics per horizon for the model and every baseline, plus means
    for name, hm in result.metrics.items():
        for key in ("rmse", "mae", "n", "mape", "n_mape"):
            hist = sorted(client.get_metric_history(info["run_id"], f"{name}.{key}"), key=lambda m: m.step)
            assert [m.step for m in hist] == list(range(1, len(hm.rmse) + 1))
            assert [m.value for m in hist] == pytest.approx(getattr(hm, key))
        for key in ("rmse_mean", "mae_mean", "mape_mean"):
            assert run.data.metrics[f"{name}.{key}"] == pytest.approx(getattr(hm, key))
        again = run_metrics(info["run_id"], name)
        for key, value in hm.as_dict().items():
            assert getattr(again, key) == pytest.approx(value), key
    with pytest.raises(
        RegistryError,
        match=r"no metrics for 'ridge'; it has: \['ablation.base', 'ablation.base_head', 'model', 'persistence', "
        r"'seasonal_average'\]",
    ):
        run_metrics(info["run_id"], "ridge")
    curve = client.get_metric_history(info["run_id"], "curve.val_loss")
    assert len(curve) == sum(np.isfinite(r["val_loss"]) for r in result.learning_curve)

    # tags: holdout digest and window, code version
    t = run.data.tags
    assert t["holdout.digest"] == result.holdout.digest
    assert (t["holdout.start"], t["holdout.end"]) == (result.holdout.start, result.holdout.end)
    assert t["code_version"] == "abc123" and t["train.stopped_reason"] == "early_stopping"

    # artifacts: learning curve, one map per channel, the error map, the model card showing the maps
    local = Path(mlflow.artifacts.download_artifacts(run_id=info["run_id"], tracking_uri=mlflow_uri()))
    pngs = sorted(p.name for p in (local / "plots").glob("*.png"))
    assert pngs == sorted(
        ["learning_curve.png", "error_map.png"] + [f"forecast_vs_actual_{c}.png" for c in berlin.channels]
    )
    for png in (local / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (local / "model_card.md").read_text()
    assert f"`traffic-berlin` version {info['version']}" in card
    assert result.holdout.digest in card and "abc123" in card and "$" not in card
    shown = re.findall(r"!\[[^]]*\]\(([^)]+)\)", card)
    assert len(shown) == len(berlin.channels) + 1 and all((local / p).is_file() for p in shown)
    assert "MAPE (percent)" in card and "| modality | gate |" in card

    # the model carries a signature inferred from the input example and the module output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri())  # same store; get_model_info takes no URI
    model_info = mlflow.models.get_model_info(info["model_uri"])
    in_shape = model_info.signature.inputs.inputs[0].shape
    out_shape = model_info.signature.outputs.inputs[0].shape
    assert in_shape == (-1, *result.input_example.shape[1:])
    assert out_shape == (-1, *result.example_forecast.shape)
    aliases = client.get_registered_model("traffic-berlin").aliases
    assert {k: str(v) for k, v in aliases.items()} == {CHALLENGER: info["version"]}


def test_promote_refuses_a_decision_that_ignored_the_champion(berlin, make_module, make_result):
    first = make_result(make_module(0.1))
    info1 = log_training(berlin, first, data_window=DATA_WINDOW, code_version="x")
    promote(berlin, info1["version"], decide_promotion(first.metrics["model"], None, first.best_baseline()))

    worse = make_result(make_module(0.3))
    info2 = log_training(berlin, worse, data_window=DATA_WINDOW, code_version="x")
    blind = decide_promotion(worse.metrics["model"], None, worse.best_baseline())  # champion not scored
    assert blind.promote
    with pytest.raises(RegistryError, match="without comparing with champion version 1"):
        promote(berlin, info2["version"], blind)
    assert champion(berlin)["version"] == "1"


def test_missing_models_and_aliases(berlin):
    assert champion(berlin) is None
    assert logged_metrics(berlin) is None
    with pytest.raises(RegistryError, match="traffic-berlin has no version with alias 'champion'"):
        load_module(berlin)
    with pytest.raises(RegistryError, match="'challenger'"):
        load_module("berlin", alias=CHALLENGER)


def test_wrong_output_shape_is_refused_before_logging(berlin, make_module, make_result):
    result = make_result(make_module(0.1))
    result.channels = result.channels[:2]  # the module forecasts every channel of the city
    with pytest.raises(ValueError, match="expected .* channels"):
        log_training(berlin, result, data_window=DATA_WINDOW, code_version="x")
    exp = _client().get_experiment_by_name("traffic-berlin")
    assert exp is None or not _client().search_runs([exp.experiment_id])


class _Drifting(torch.nn.Module):
    """A module whose eager output changes on every call: its export cannot reproduce it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x) * float(self.calls)


def test_a_model_whose_export_differs_is_not_registered(berlin, make_module, make_result):
    result = make_result(make_module(0.1))
    result.module = _Drifting(result.module)
    with pytest.raises(RegistryError, match="does not reproduce"):
        log_training(berlin, result, data_window=DATA_WINDOW, code_version="x")
    assert champion(berlin, CHALLENGER) is None
    runs = _client().search_runs([_client().get_experiment_by_name("traffic-berlin").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
