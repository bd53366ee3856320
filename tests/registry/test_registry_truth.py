"""What a run and its card say about the model: ablation, champion, steps, inputs, example, decision."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from traffic.config import mlflow_uri
from traffic.forecast.horizons import group_tag, horizon_groups
from traffic.registry import (
    CHAMPION,
    champion,
    decide_promotion,
    log_training,
    promote,
    render_model_card,
    run_metrics,
)
from traffic.registry.card import DECISION_END, DECISION_PENDING, DECISION_START
from traffic.registry.mlflow_registry import INPUT_EXAMPLE_FILE

pytestmark = pytest.mark.usefixtures("mlflow_db")

WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri(), registry_uri=mlflow_uri())


def _card(run_id: str) -> str:
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_card.md", tracking_uri=mlflow_uri())
    return Path(path).read_text(encoding="utf-8")


def test_ablation_champion_and_steps_are_logged_under_the_model_names(berlin, make_module, make_result, scorer):
    result = make_result(make_module(0.1), gbm_error=0.05)
    champ = make_result(make_module(0.2)).metrics["model"]
    info = log_training(
        berlin, result, data_window=WINDOW, code_version="x", champion_metrics=champ, champion_version="4"
    )
    run = _client().get_run(info["run_id"])
    latest = run.data.metrics  # MLflow's latest_metrics: what a self-check reads from the champion's run
    for key, want in (
        ("ablation.base.rmse_mean", result.ablation["base"].rmse_mean),
        ("ablation.base_head.rmse_mean", result.ablation["base_head"].rmse_mean),
        ("ablation.base.mae_mean", result.ablation["base"].mae_mean),
        ("ablation.base_head.mae_mean", result.ablation["base_head"].mae_mean),
        ("model.rmse_mean", result.metrics["model"].rmse_mean),
        ("gbm.rmse_mean", result.metrics["gbm"].rmse_mean),
        ("champion.rmse_mean", champ.rmse_mean),
        ("train.steps", 50),
        ("train.best_step", 30),
    ):
        assert latest[key] == pytest.approx(want), key
    # the base alone is worse than base + head, which is worse than the full model (the fixture's construction)
    assert latest["ablation.base.rmse_mean"] > latest["ablation.base_head.rmse_mean"] > latest["model.rmse_mean"]

    # per horizon group: exactly the names of model.*, with the ablation prefix, and the same group means
    groups = horizon_groups(berlin.bin_seconds, len(result.metrics["model"].rmse))
    model_keys = {k[len("model.") :] for k in latest if k.startswith("model.") and k.count(".") == 2}
    assert {f"rmse.{group_tag(g.label)}" for g in groups} <= model_keys
    for name in ("base", "base_head"):
        hm = result.ablation[name]
        keys = {
            k[len(f"ablation.{name}.") :] for k in latest if k.startswith(f"ablation.{name}.") and k.count(".") == 3
        }
        assert keys == model_keys - {k for k in model_keys if k.startswith("coverage.")}  # no intervals for ablation
        for g in groups:
            for metric in ("rmse", "mae"):
                want = float(np.mean(np.asarray(getattr(hm, metric))[g.steps]))
                assert latest[f"ablation.{name}.{metric}.{group_tag(g.label)}"] == pytest.approx(want)
        again = run_metrics(info["run_id"], f"ablation.{name}")  # per horizon, step = horizon
        assert again.rmse == pytest.approx(hm.rmse) and again.n == hm.n
    assert run_metrics(info["run_id"], "champion").rmse == pytest.approx(champ.rmse)
    assert run.data.tags["champion.version"] == "4"
    assert run.data.tags["train.wall_clock_cap"] == "no"
    assert run.data.params["forecast.train_steps"] == str(berlin.forecast.train_steps)


def test_learning_curve_is_logged_at_optimiser_steps(berlin, make_module, make_result):
    result = make_result(make_module(0.1))
    info = log_training(berlin, result, data_window=WINDOW, code_version="x")
    client = _client()
    for key in ("train_loss", "val_loss", "epoch"):
        hist = sorted(client.get_metric_history(info["run_id"], f"curve.{key}"), key=lambda m: m.step)
        rows = [r for r in result.learning_curve if np.isfinite(float(r[key]))]
        assert [m.step for m in hist] == [r["step"] for r in rows]  # the optimiser step, not int(epoch)
        assert [m.value for m in hist] == pytest.approx([float(r[key]) for r in rows])
    assert len({m.step for m in client.get_metric_history(info["run_id"], "curve.train_loss")}) == 5


def test_run_inputs_list_the_lake_partitions_with_digests(berlin, make_module, make_result, tmp_path):
    files = []
    for i, d in enumerate(("2024-12-05", "2024-12-06", "2024-12-07")):
        f = tmp_path / f"date={d}" / "part.parquet"
        f.parent.mkdir()
        f.write_bytes(bytes([i]) * (1000 + i))
        files.append((d, f, hashlib.sha256(f.read_bytes()).hexdigest()))
    inputs = [
        {"path": f.as_uri(), "name": f"raster/berlin/date={d}", "sha256": sha, "date": d, "context": ctx}
        for (d, f, sha), ctx in zip(files, ("training", "training", "holdout"), strict=True)
    ]
    odd = {"path": "memory://lake/raster/date=2024-12-04/part.parquet", "name": "raster/berlin/date=2024-12-04"}
    odd["sha256"] = "0" * 64  # a lake scheme MLflow has no dataset source for: named on the run, not dropped silently
    info = log_training(
        berlin, make_result(make_module(0.1)), data_window=WINDOW, code_version="x", inputs=[odd, *inputs]
    )
    assert json.loads(_client().get_run(info["run_id"]).data.tags["inputs.unresolved"]) == [odd["path"]]
    got = _client().get_run(info["run_id"]).inputs.dataset_inputs
    by_name = {di.dataset.name: di for di in got}
    assert sorted(by_name) == [e["name"] for e in inputs]
    for e in inputs:
        di = by_name[e["name"]]
        assert di.dataset.digest == e["sha256"][:32]
        assert e["path"] in di.dataset.source
        tags = {t.key: t.value for t in di.tags}
        assert tags["sha256"] == e["sha256"] and tags["date"] == e["date"]
        assert tags["mlflow.data.context"] == e["context"]
    with pytest.raises(ValueError, match="lacks \\['sha256'\\]"):
        log_training(
            berlin,
            make_result(make_module(0.1)),
            data_window=WINDOW,
            code_version="x",
            inputs=[{"path": "file:///x", "name": "raster/berlin/date=2024-12-01"}],
        )


def test_the_logged_model_carries_one_small_example(
    berlin, make_module, make_result, holdout_data, monkeypatch, tmp_path
):
    result = make_result(make_module(0.1))
    info = log_training(berlin, result, data_window=WINDOW, code_version="x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri())  # models:/ URIs resolve through the registry
    local = Path(mlflow.artifacts.download_artifacts(info["model_uri"], dst_path=str(tmp_path)))
    names = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    # no JSON copies of the tensor (tens of MB for a city grid): one float16 sample instead
    assert not {"input_example.json", "serving_input_example.json"} & names
    with np.load(local / "extra_files" / INPUT_EXAMPLE_FILE) as z:
        x = z["x"]
    assert x.dtype == np.float16 and x.shape == result.input_example.shape
    np.testing.assert_allclose(x.astype(np.float32), result.input_example, rtol=1e-3, atol=1e-2)
    # the exported program keeps one sample (its batch of two is a view of it), not two copies
    with zipfile.ZipFile(local / "data" / "model.pt2") as zf:
        sample = [i for i in zf.infolist() if "sample_inputs" in i.filename]
    assert sample and sum(i.file_size for i in sample) < 1.5 * result.input_example.nbytes
    # ... and its batch dimension stays dynamic
    loaded = mlflow.pytorch.load_model(str(local))
    import torch

    xs = torch.from_numpy(holdout_data[0][:3])
    with torch.no_grad():
        np.testing.assert_allclose(loaded(xs).numpy(), result.module(xs).numpy(), rtol=1e-5, atol=1e-4)


def test_card_shows_ablation_champion_steps_and_warm_start(berlin, make_module, make_result):
    result = make_result(make_module(0.1), gbm_error=0.05)
    result.extra |= {"wall_clock_cap": True, "warm_start": {"copied": ["enc.w", "enc.b"], "skipped": ["head.w"]}}
    champ = make_result(make_module(0.2)).metrics["model"]
    card = render_model_card(
        berlin,
        result,
        WINDOW,
        champion_metrics=champ,
        champion_version=3,
        code_version="x",
        gate_baselines=["persistence", "seasonal_average", "gbm"],
        train_steps=600,
    )
    assert "$" not in card
    assert f"current champion v3 on the same holdout {champ.rmse_mean:.4f}" in card
    assert "no current champion scored" not in card
    assert "- Optimiser steps: 50 of a budget of 600" in card and "- Best step (the weights registered): 30" in card
    assert "- Wall-clock safety net fired: yes" in card
    assert "- Warm start: 2 parameter tensors copied (`enc.w`, `enc.b`); 1 skipped" in card and "`head.w`" in card
    assert "(`persistence`, `seasonal_average`, `gbm`)" in card
    assert f"{DECISION_START}\n{DECISION_PENDING}\n{DECISION_END}" in card
    # a budget sized by the data ([forecast] train_epochs) says so, with the cap
    result.params |= {"epochs": 10.0, "budget_steps": 2100, "training_origins": 3352}
    card = render_model_card(berlin, result, WINDOW, code_version="x", train_steps=2500)
    assert (
        "- Optimiser steps: 50 of a budget of 2,100: `[forecast] train_epochs` = 10 passes over 3,352 training "
        "origins, at most `train_steps` = 2,500" in card
    )

    # the ablation table: one row per horizon group and the mean; base, base + head, full, gbm
    after = card.split("## What each part of the network adds (ablation)", 1)[1].split("\nRMSE:\n", 1)[1]
    text = after.strip().splitlines()
    lines = text[: next((i for i, ln in enumerate(text) if not ln.startswith("|")), len(text))]  # the RMSE table
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "hours ahead",
        "base (linear)",
        "base + head",
        "full model",
        "gbm",
        "full vs base + head",
        "full vs gbm",
    ]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    groups = horizon_groups(berlin.bin_seconds, len(result.metrics["model"].rmse))
    assert [r[0] for r in body] == [g.label for g in groups] + ["all (mean)"]
    mean = body[-1]
    base, head, full, gbm = (
        result.ablation["base"],
        result.ablation["base_head"],
        result.metrics["model"],
        result.metrics["gbm"],
    )
    assert [float(v) for v in mean[1:5]] == pytest.approx(
        [base.rmse_mean, head.rmse_mean, full.rmse_mean, gbm.rmse_mean], abs=5e-5
    )
    assert mean[5] == f"{100 * (full.rmse_mean - head.rmse_mean) / head.rmse_mean:+.2f}%"
    assert mean[6] == f"{100 * (full.rmse_mean - gbm.rmse_mean) / gbm.rmse_mean:+.2f}%"
    for g, row in zip(groups, body, strict=False):
        assert float(row[1]) == pytest.approx(float(np.mean(np.asarray(base.rmse)[g.steps])), abs=5e-5)

    # without an ablation or a champion, the card says so instead of inventing numbers
    result.ablation = {}
    card = render_model_card(berlin, result, WINDOW, code_version="x")
    assert "Not recorded for this run" in card
    assert "no current champion: this version is compared with the baselines only" in card


def test_promote_writes_the_decision_into_the_card_and_a_rerun_writes_the_same(berlin, make_module, make_result):
    first = make_result(make_module(0.1))
    info1 = log_training(berlin, first, data_window=WINDOW, code_version="x")
    assert f"{DECISION_START}\n{DECISION_PENDING}\n{DECISION_END}" in _card(info1["run_id"])
    d1 = decide_promotion(first.metrics["model"], None, dict(first.baselines))
    promote(berlin, info1["version"], d1)
    card = _card(info1["run_id"])
    assert DECISION_PENDING not in card and card.count(DECISION_START) == 1
    block = card.split(DECISION_START, 1)[1].split(DECISION_END, 1)[0]
    assert "**Promoted**: version 1 is `champion`." in block and d1.reason in block
    assert "Champion after the decision: version 1." in block
    for name, hm in first.baselines.items():
        assert f"| {name} | {hm.rmse_mean:.4f} |" in block
    promote(berlin, info1["version"], d1)  # re-run: the same card
    assert _card(info1["run_id"]) == card

    # a worse challenger: its card says not promoted, the champion before and after
    worse = make_result(make_module(0.3))
    info2 = log_training(berlin, worse, data_window=WINDOW, code_version="x")
    champ_metrics = first.metrics["model"]
    d2 = decide_promotion(worse.metrics["model"], champ_metrics, dict(worse.baselines))
    assert not d2.promote
    promote(berlin, info2["version"], d2)
    block = _card(info2["run_id"]).split(DECISION_START, 1)[1].split(DECISION_END, 1)[0]
    assert "**Not promoted**." in block and f"mean RMSE {champ_metrics.rmse_mean:.4f}" in block
    assert "Champion after the decision: version 1." in block
    assert champion(berlin)["version"] == "1" and _client().get_registered_model("traffic-berlin").aliases[CHAMPION]
