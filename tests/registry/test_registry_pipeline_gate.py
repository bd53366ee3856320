"""The nightly decision of ``traffic.pipeline`` on the real registry: GBM gates, and what serves without a champion."""

from __future__ import annotations

import pytest

from traffic import pipeline
from traffic.registry import CHALLENGER, champion, load_module, log_training

pytestmark = pytest.mark.usefixtures("mlflow_db")

WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}
AS_OF = "2024-12-07"


@pytest.fixture
def night(scorer, holdout_data):
    """What the nightly ``train`` + ``evaluate_and_promote`` do with a trained result.

    The current champion is scored on the result's holdout and logged with the run
    (``champion.*``, as ``pipeline.train`` does), the gates are recorded on the run, then
    ``pipeline.evaluate_and_promote`` decides.
    """
    x, y, mask, _ = holdout_data

    def run(city, result) -> tuple[dict, dict]:
        current = champion(city)
        champ = scorer(load_module(city), x, y, mask) if current is not None else None
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


def test_a_challenger_beating_all_but_gbm_is_not_promoted_and_gbm_serves(berlin, make_module, make_result, night):
    # the model (output scale 10 % off) beats persistence, the seasonal average and ridge, not GBM (5 % off)
    result = make_result(make_module(0.1), gbm_error=0.05, ridge_error=0.25)
    m, b = result.metrics, result.baselines
    assert m["model"].rmse_mean < min(v.rmse_mean for k, v in b.items() if k != "gbm")
    assert m["model"].rmse_mean > b["gbm"].rmse_mean
    logged, out = night(berlin, result)
    assert out["promoted"] is False and out["champion"] is None
    assert out["gate_baselines"] == ["persistence", "seasonal_average", "ridge", "gbm"]
    assert "does not beat best baseline 'gbm'" in out["reason"]
    assert (
        f"no version passes yet (no champion): publishing baseline 'gbm' (mean RMSE {b['gbm'].rmse_mean:.4f}"
        in (out["reason"])
    )
    assert out["serving"] == {"kind": "baseline", "baseline": "gbm"}
    assert "not a gate" not in out["reason"]
    # what serves now: the best gating baseline of the newest run, never the unpromoted model
    serving = pipeline.serving(berlin)
    assert serving["kind"] == "baseline" and serving["baseline"] == "gbm"
    assert serving["run_id"] == logged["run_id"] and serving["rmse_mean"] == pytest.approx(b["gbm"].rmse_mean)
    assert champion(berlin, CHALLENGER)["version"] == logged["version"]


def test_a_later_passing_version_takes_over_from_the_baseline(berlin, make_module, make_result, night):
    _, first = night(berlin, make_result(make_module(0.1), gbm_error=0.05, ridge_error=0.25))
    assert first["serving"]["kind"] == "baseline"
    # the next night's model beats GBM (2 % off vs 5 %): it becomes champion and serves
    better = make_result(make_module(0.02), gbm_error=0.05, ridge_error=0.25)
    logged, out = night(berlin, better)
    assert out["promoted"] is True and out["champion"] == logged["version"] == "2"
    assert out["reason"].startswith("promoted:") and "publishing baseline" not in out["reason"]
    assert out["serving"] == {"kind": "model", "version": "2"}
    serving = pipeline.serving(berlin)
    assert serving["kind"] == "model" and serving["version"] == "2"

    # a worse challenger later does not dislodge it; the champion keeps serving, no fallback
    worse = make_result(make_module(0.04), gbm_error=0.05, ridge_error=0.25)
    _, out3 = night(berlin, worse)
    assert (
        out3["promoted"] is False and out3["champion"] == "2" and out3["serving"] == {"kind": "model", "version": "2"}
    )
    assert "publishing baseline" not in out3["reason"]
    # decided on the champion's scores the run logged (same holdout), not on a re-scoring
    assert out3["champion_before"] == "2"
    assert out3["champion_rmse_mean"] == pytest.approx(better.metrics["model"].rmse_mean, rel=1e-5)
    assert f"champion {better.metrics['model'].rmse_mean:.4f} on the same holdout" in out3["reason"]


def test_nothing_registered_means_nothing_to_serve(berlin):
    with pytest.raises(pipeline.NoChampion, match="no trained version to take a baseline from"):
        pipeline.serving(berlin)


def test_a_gate_the_run_did_not_score_blocks_promotion(berlin, make_module, make_result, night):
    # a run without GBM scores (an older training code): it cannot be shown to beat GBM
    result = make_result(make_module(0.02), ridge_error=0.25)
    assert "gbm" not in result.metrics
    _, out = night(berlin, result)
    assert out["promoted"] is False and "gating baseline(s) ['gbm'] were not scored" in out["reason"]
    assert out["serving"]["kind"] == "baseline" and out["serving"]["baseline"] != "gbm"
