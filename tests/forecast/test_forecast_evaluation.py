"""traffic.forecast.evaluation, .tables and .model_folder: the evaluation report of any gridded array."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.grid.arrays_data import TINY, flows
from traffic.forecast.baselines import BASELINES
from traffic.forecast.evaluation import evaluate_array
from traffic.forecast.inference import evaluate_module
from traffic.forecast.model_folder import load_model
from traffic.forecast.tables import format_report
from traffic.grid.tensor import GridTensor, describe


# ------------------------------------------------------------------------------------ evaluation
@pytest.fixture(scope="module")
def grid() -> GridTensor:
    v = flows(t=192)  # 4 days of 30-minute bins, 2 channels, 8x8
    m = np.isfinite(v)
    times = pd.date_range("2015-03-02", periods=len(v), freq="30min", tz="UTC")
    return GridTensor(v, m, m.astype(np.int32), times, ("inflow", "outflow"), np.arange(64).reshape(8, 8))


@pytest.fixture(scope="module")
def report(grid, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("model")
    return evaluate_array(
        grid,
        context_steps=4,
        horizon_steps=3,
        holdout_days=1,
        budget_s=60,
        seed=0,
        model_overrides=TINY,
        save_model_dir=out,
    )


@pytest.mark.slow
def test_evaluate_reports_every_model_on_the_same_holdout(report, grid):
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # strict JSON
    assert report["data"]["shape"] == [192, 2, 8, 8] and report["data"]["channels"] == ["grid.inflow", "grid.outflow"]
    assert report["horizon_minutes"] == [30, 60, 90]
    metrics = report["metrics"]
    assert set(metrics) == {"model", *BASELINES}
    for name, m in metrics.items():
        assert len(m["rmse"]) == len(m["mae"]) == 3, name
        assert all(np.isfinite(m["rmse"])) and all(np.isfinite(m["mae"])), name
        assert m["n"] == metrics["model"]["n"], name  # same holdout targets for everyone
    # a holdout of 1 day = 48 bins: samples whose three targets all lie in it
    assert report["split"]["holdout_samples"] == 48 - 3 + 1
    assert metrics["model"]["n"][0] == int(grid.mask[-48:].sum()) - int(grid.mask[-2:].sum())
    best = report["best_baseline"]
    assert best == min((k for k in metrics if k != "model"), key=lambda k: metrics[k]["rmse_mean"])
    skill = report["skill_pct"]["rmse"]["mean"]
    assert skill == pytest.approx(100 * (1 - metrics["model"]["rmse_mean"] / metrics[best]["rmse_mean"]))
    assert report["training"]["steps"] == TINY["max_steps"] and report["training"]["device"] == "cpu"
    assert "grid" in report["modality_weights"] and all(0 < w < 1 for w in report["modality_weights"].values())
    text = format_report(report)
    assert "RMSE per horizon" in text and "MAE per horizon" in text and f"best baseline (mean RMSE): {best}" in text
    # the ablation and the GBM comparison per group of hours ahead (30-min bins, 3 steps: "1 h", "2–3 h")
    comp = report["comparison"]
    assert {"full", "gbm"} <= set(comp["columns"]) and [g["label"] for g in comp["groups"]] == ["1 h", "2–3 h", "all"]
    assert comp["groups"][-1]["rmse"]["model"] == pytest.approx(metrics["model"]["rmse_mean"])
    assert comp["groups"][-1]["rmse"]["gbm"] == pytest.approx(metrics["gbm"]["rmse_mean"])
    assert set(report["ablation"]) <= {"base", "base_head"}
    assert "RMSE per group of hours ahead: the network with parts switched off" in text
    # the combination a nightly run would publish, on the backtest, with its weights
    comb = report["combination"]
    assert {"combination", "combination_without_network", "model", "gbm"} <= set(comb["backtest"])
    assert set(comb["weights"]) == {"combination", "combination_without_network"}
    w = np.asarray(comb["weights"]["combination"]["weights"])
    assert w.shape == (2, 2, 2, 7) and (w >= 0).all()  # (group, channel, regime, member)
    assert "weights of combination" in text and "combination vs combination_without_network" in text


@pytest.mark.slow
def test_saved_model_scores_the_same_when_loaded_back(report, grid):
    module = load_model(report["saved_model"])
    named = GridTensor(
        grid.values, grid.mask, grid.coverage, grid.times, ("grid.inflow", "grid.outflow"), grid.cell_ids
    )
    again = evaluate_module(module, named, holdout_days=1)
    np.testing.assert_allclose(again.rmse, report["metrics"]["model"]["rmse"], rtol=1e-5)
    assert again.n == report["metrics"]["model"]["n"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"holdout_days": 1, "holdout_fraction": 0.2}, "exactly one of holdout_days and holdout_fraction"),
        ({}, "exactly one of holdout_days and holdout_fraction"),
        ({"holdout_fraction": 1.5}, r"holdout_fraction=1.5 must lie in \(0, 1\)"),
        ({"holdout_days": 5}, r"holdout of 5 days = 240 bins must .* grid of 192 bins"),
        ({"holdout_days": 1, "context_steps": 0}, "context_steps=0 must be a whole number >= 1"),
    ],
)
def test_evaluate_rejects_bad_setups_early(grid, kwargs, match):
    kw = {"context_steps": 4, "horizon_steps": 3, "budget_s": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_array(grid, **kw)


def test_evaluate_rejects_uneven_times(grid):
    times = grid.times.delete(5).append(pd.DatetimeIndex([grid.times[-1] + pd.Timedelta("1h")]))
    uneven = GridTensor(grid.values, grid.mask, grid.coverage, times, grid.channels, grid.cell_ids)
    with pytest.raises(ValueError, match=r"grid times: times are not evenly spaced: bin 5"):
        evaluate_array(uneven, context_steps=4, horizon_steps=3, holdout_days=1, budget_s=1)


def test_describe(grid):
    d = describe(grid)
    assert d["shape"] == [192, 2, 8, 8] and d["bin_minutes"] == 30 and d["days"] == 4
    assert d["observed_share"] == pytest.approx(grid.mask.mean())


def test_ablation_and_gbm_comparison_per_horizon_group():
    """What ``traffic grid evaluate`` prints besides the per-horizon tables, from the metrics of a result."""
    from traffic.forecast.evaluation import comparison_by_group
    from traffic.forecast.result import Holdout, HorizonMetrics, TrainResult
    from traffic.forecast.tables import comparison_lines

    def hm(*rmse: float) -> HorizonMetrics:
        return HorizonMetrics(mae=[0.5 * v for v in rmse], rmse=list(rmse), n=[10] * len(rmse))

    res = TrainResult(
        module=None,
        metrics={"model": hm(1.0, 2.0, 3.0), "gbm": hm(1.0, 2.5, 2.5), "persistence": hm(5.0, 5.0, 5.0)},
        holdout=Holdout("a", "b", 1, "d"),
        learning_curve=[],
        params={},
        input_example=np.zeros((1, 1, 1, 1, 1), np.float32),
        example_forecast=np.zeros((3, 1, 1, 1)),
        example_target=np.zeros((3, 1, 1, 1)),
        example_mask=np.zeros((3, 1, 1, 1), bool),
        channels=("grid.x",),
        train_window=("a", "b"),
        train_seconds=1.0,
        device="cpu",
        stopped_reason="max_steps",
        ablation={"base": hm(2.0, 4.0, 6.0), "base_head": hm(1.0, 2.0, 4.0)},
    )
    comp = comparison_by_group(res, 1800)  # 30-min bins: step 1-2 = "1 h", step 3 = "2–3 h"
    assert comp["columns"] == ["base", "base+head", "full", "gbm"]
    one, two, mean = comp["groups"]
    assert (one["label"], one["steps"], two["label"], two["steps"]) == ("1 h", [1, 2], "2–3 h", [3, 3])
    assert one["rmse"] == {"base": 3.0, "base_head": 1.5, "model": 1.5, "gbm": 1.75}
    assert two["mae"] == {"base": 3.0, "base_head": 2.0, "model": 1.5, "gbm": 1.25}
    assert two["full_vs_base_head_pct"]["rmse"] == pytest.approx(-25.0)  # 3 vs 4
    assert two["full_vs_gbm_pct"]["rmse"] == pytest.approx(20.0)  # 3 vs 2.5: GBM wins the later hours
    assert mean["rmse"]["model"] == pytest.approx(2.0) and mean["full_vs_gbm_pct"]["rmse"] == pytest.approx(0.0)
    assert mean["full_vs_base_head_pct"]["rmse"] == pytest.approx(100 * (2.0 - 7 / 3) / (7 / 3))
    lines = comparison_lines(comp, 10)
    assert "full vs base+head" in lines[2] and "full vs gbm" in lines[2]
    assert lines[5].split()[:2] == ["all", "1-3"] and lines[5].split()[-4:] == ["-14.3", "%", "+0.0", "%"]

    res.ablation = {}  # a result without the ablation: the comparison is the model against GBM
    assert comparison_by_group(res, 1800)["columns"] == ["full", "gbm"]


def test_the_model_folder_is_the_registrys_eager_copy_and_reads_back(tmp_path, caplog):
    import torch

    from traffic.forecast.model_folder import MODEL_FINGERPRINT, fingerprint, save_model
    from traffic.model import Forecaster, ForecasterConfig
    from traffic.registry.mlflow_registry import EAGER_FINGERPRINT, eager_fingerprint

    torch.manual_seed(0)
    module = Forecaster(ForecasterConfig(grid_shape=(3, 4))).eval()
    save_model(module, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "fingerprint.json", "model.pt"]
    # the same files the registry keeps as a run's eager copy (it loads them with load_model)
    assert MODEL_FINGERPRINT == EAGER_FINGERPRINT and fingerprint() == eager_fingerprint()
    assert json.loads((tmp_path / "m" / MODEL_FINGERPRINT).read_text()) == fingerprint()
    back = load_model(tmp_path / "m")
    for (k, a), (k2, b) in zip(module.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    (tmp_path / "m" / MODEL_FINGERPRINT).write_text(json.dumps({"model_py_sha256": "0", "torch": "0"}))
    with caplog.at_level("WARNING", logger="traffic.forecast.model_folder"):
        load_model(tmp_path / "m")
    assert "saved under other model code" in caplog.text
