"""The backtest rule on the real registry: what serves after a night, recorded so that forecasts can follow it."""

from __future__ import annotations

import numpy as np
import pytest

from traffic import pipeline
from traffic.config import mlflow_uri
from traffic.forecast.backtest import DailyErrors
from traffic.registry import champion, load_module, log_training, run_data, serving_record
from traffic.registry.card import fmt

pytestmark = pytest.mark.usefixtures("mlflow_db")

AS_OF = "2024-12-07"
WINDOW = {"start": "2024-10-20", "end": AS_OF, "as_of": AS_OF}
DAYS = 6


@pytest.fixture
def night(holdout_data, scorer):
    """``train`` + ``evaluate_and_promote`` for a result with a backtest: the champion is scored on its folds."""
    x, y, mask, _ = holdout_data

    def run(city, result):
        current = champion(city)
        champ = None
        if current is not None:
            import torch

            champ = scorer(load_module(city), x, y, mask)
            with torch.no_grad():
                fc = load_module(city)(torch.from_numpy(x)).numpy()
            daily = DailyErrors(np.arange(len(x)) % DAYS, DAYS, y.shape[1])
            daily.update(fc, y, mask, np.repeat(np.arange(len(x))[:, None], y.shape[1], axis=1))
            result.backtest.errors["champion"] = daily
        logged = log_training(
            city,
            result,
            data_window=WINDOW,
            code_version="x",
            champion_metrics=champ,
            champion_version=current["version"] if current else None,
            gate_baselines=pipeline.promotion_gate_baselines(),
        )
        return logged, pipeline.evaluate_and_promote(city, AS_OF, logged)

    return run


def test_a_significantly_better_network_serves_then_no_significant_difference_keeps_it(
    berlin, make_module, make_result, night
):
    first = make_result(make_module(0.02), gbm_error=0.08, ridge_error=0.25, backtest_days=DAYS)
    logged, out = night(berlin, first)
    metrics = run_data(logged["run_id"])["metrics"]
    assert metrics["backtest.folds"] == DAYS // 2 and metrics["backtest.model.vs_gbm.hi"] < 0
    assert out["promoted"] is True and out["serving"] == {"kind": "model", "version": "1", "variant": "model"}
    assert out["reason"].startswith("promoted: backtest over 3 folds (6 target days): best candidate 'model'")
    assert pipeline.serving(berlin)["variant"] == "model"
    assert serving_record(berlin) == {"kind": "model", "variant": "model", "version": "1"}
    # the run is named after the night it ran for
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri())
    assert client.get_run(logged["run_id"]).info.run_name == f"berlin-{AS_OF}"

    # a version a hair worse than the champion: the champion keeps serving, and says why
    logged2, out2 = night(berlin, make_result(make_module(0.021), gbm_error=0.08, ridge_error=0.25, backtest_days=DAYS))
    assert out2["promoted"] is False and out2["serving"]["version"] == "1"
    assert (
        out2["reason"].startswith("kept 'champion'")
        and "backtest.champion.rmse_mean" in run_data(logged2["run_id"])["metrics"]
    )
    assert champion(berlin)["version"] == "1"


def test_a_baseline_that_beats_the_champion_significantly_serves_instead(berlin, make_module, make_result, night):
    night(berlin, make_result(make_module(0.05), gbm_error=0.08, ridge_error=0.25, backtest_days=DAYS))
    assert champion(berlin)["version"] == "1"
    # GBM now forecasts the truth itself: it replaces the model version, labelled as a baseline
    logged, out = night(berlin, make_result(make_module(0.05), gbm_error=0.0, ridge_error=0.25, backtest_days=DAYS))
    assert out["serving"] == {"kind": "baseline", "baseline": "gbm"} and out["reason"].startswith("switched")
    assert champion(berlin) is None
    serving = pipeline.serving(berlin)
    assert serving["kind"] == "baseline" and serving["baseline"] == "gbm" and serving["run_id"] == logged["run_id"]
    assert serving["rmse_mean"] == pytest.approx(run_data(logged["run_id"])["metrics"]["backtest.gbm.rmse_mean"])


def test_the_card_shows_the_backtest_with_the_logged_digits(berlin, make_module, make_result, night):
    import mlflow

    logged, _ = night(berlin, make_result(make_module(0.02), gbm_error=0.08, ridge_error=0.25, backtest_days=DAYS))
    m = run_data(logged["run_id"])["metrics"]
    mlflow.set_tracking_uri(mlflow_uri())
    card = mlflow.artifacts.load_text(f"runs:/{logged['run_id']}/model_card.md")
    assert "## Backtest: what the decision rests on" in card
    section = card[card.index("## Backtest") : card.index("Per channel")]
    per_channel = card[card.index("Per channel") : card.index("## Promotion rule")]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    for name in ("model", "base", "base_head", "gbm", "ridge", "persistence", "seasonal_average"):
        row = rows[name]
        assert f"| {fmt(m[f'backtest.{name}.rmse_mean'])} |" in row
        assert f"| {fmt(m[f'backtest.{name}.fold1.rmse_mean'])} |" in row
        if name != "gbm":
            assert f"{100 * m[f'backtest.{name}.vs_gbm.mean']:+.2f} %" in row
    # every channel against the same baselines, with the logged digits
    ch = berlin.channels[0]
    assert f"| model | {fmt(m[f'backtest.model.channel.{ch}.rmse_mean'])} |" in per_channel


def test_a_run_cut_by_the_wall_clock_says_so_in_its_decision(berlin, make_module, make_result, night):
    """Stopped by the safety net short of its step budget: whatever the rule decides, the decision says so."""
    result = make_result(make_module(0.02), gbm_error=0.08, ridge_error=0.25, backtest_days=DAYS)
    result.stopped_reason = "wall_clock_cap"
    result.extra |= {
        "wall_clock_cap": True,
        "steps": 63,
        "max_steps": 600,
        "wall_clock_guard_s": 900.0,
        "expected_train_s": 300.0,
    }
    logged, out = night(berlin, result)
    assert out["promoted"] is True
    assert out["reason"].endswith(
        "; NOTE: the network was stopped by the wall-clock safety net after 63 of the 600 steps asked (its "
        "wall-clock guard of 900 s was 3.0 times the 300 s its first steps promised): this decision is on a "
        "smaller training budget than asked"
    )
    assert run_data(logged["run_id"])["tags"]["promotion.decision"] == out["reason"]
    # a run that did its steps says nothing of the kind
    _, out2 = night(berlin, make_result(make_module(0.021), gbm_error=0.08, ridge_error=0.25, backtest_days=DAYS))
    assert "safety net" not in out2["reason"]
