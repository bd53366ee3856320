"""Live skill in MLflow: the catalog, the serving run's ``live.*`` metrics and ``traffic skill`` agree to the last digit."""

from __future__ import annotations

import datetime as dt

from mlflow import MlflowClient

from tests.verify import verify_cases as vc
from traffic import pipeline
from traffic.cli import main
from traffic.publish import connect_catalog
from traffic.verify import alerts

DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")


def _printed_groups(text: str) -> dict[str, list[str]]:
    """``traffic skill``'s horizon-group lines: ``{group: [its columns]}``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("per horizon group"))
    head = lines[start + 1].split()
    return {ln.split()[0]: dict(zip(head, ln.split(), strict=True)) for ln in lines[start + 2 :]}


def test_catalog_mlflow_and_traffic_skill_agree_and_the_backtest_promise_is_checked(tiny_mlflow, capsys):
    c, res, run_id = tiny_mlflow
    client = MlflowClient(tracking_uri=res.registry.tracking_uri)
    # what the nightly's backtest promised for the candidate that serves (gbm), per horizon group
    client.log_metric(run_id, "backtest.gbm.rmse.h01", 0.1)
    client.log_metric(run_id, "backtest.gbm.rmse.h01.hi", 0.2)
    client.log_metric(run_id, "backtest.gbm.rmse.h02-03", 1.5)
    client.log_metric(run_id, "backtest.gbm.rmse.h02-03.hi", 100.0)
    for d, off in zip(DAYS, (0.0, 0.5, 1.25), strict=True):
        vc.write_raster(c, res, d, day_offset=off)
    spec = '{"candidate": "gbm", "fitted": "on the window"}'
    vc.publish_day_ahead(c, res, DAYS[0], mlflow_run_id=run_id, bias=1.0, window_days=1, model_spec=spec)
    vc.publish_day_ahead(c, res, DAYS[1], mlflow_run_id=run_id, bias=-0.7, window_days=2, model_spec=spec)

    out = pipeline.verify(c, res=res)
    assert sorted(out["verified"]) == ["tiny_20240301T230000Z", "tiny_20240302T230000Z"]
    assert out["live"][run_id]["status"] == "logged"
    logged = client.get_run(run_id).data.metrics
    live = {k: v for k, v in logged.items() if k.startswith("live.")}
    assert live["live.days"] == 2.0

    con = connect_catalog(res.warehouse.path)
    try:
        catalog = con.execute(
            "SELECT horizon_group, rmse, mae, coverage, skill, days FROM skill_groups('tiny', $a, $b, $r) "
            "WHERE channel = 'all' ORDER BY first_horizon",
            {"a": dt.date(2024, 3, 2), "b": dt.date(2024, 3, 3), "r": run_id},
        ).fetchall()
        by_horizon = con.execute(
            "SELECT horizon_group, rmse, mae, coverage, skill FROM skill_by_horizon WHERE channel = 'all' "
            "ORDER BY first_horizon"
        ).fetchall()
        spec_kept = con.execute("SELECT DISTINCT model_spec FROM forecast_skill").fetchall()
    finally:
        con.close()
    assert spec_kept == [(spec,)]
    assert [r[:5] for r in catalog] == by_horizon  # the whole window is served by this run
    assert main(["skill", "tiny", "--days", "2"]) == 0
    printed = _printed_groups(capsys.readouterr().out)
    assert [r[0] for r in catalog] == ["h01", "h02-03", "h04-06", "h07-12", "h13-24"] == list(printed)
    for group, rmse, mae, coverage, skill, days in catalog:
        assert days == 2
        # same number in the catalog, in MLflow and on screen: to the last digit
        assert live[f"live.rmse.{group}"] == rmse and live[f"live.mae.{group}"] == mae
        assert live[f"live.coverage.{group}"] == coverage and live[f"live.skill_vs_seasonal.{group}"] == skill
        assert printed[group]["rmse"] == f"{rmse:.4f}" and float(printed[group]["rmse"]) == rmse
        assert printed[group]["skill"] == f"{skill:.4f}" and printed[group]["coverage"] == f"{coverage:.4f}"
        assert printed[group]["model_kind"] == "gbm"

    # the promise: h01's live RMSE is above the 95th percentile of the backtest's daily RMSE; h02-03's is not
    lines = alerts("tiny", res=res)
    assert lines == out["alerts"]
    promise = [ln for ln in lines if "backtest" in ln]
    assert promise == [
        f"city tiny channel all horizon h01: live RMSE {catalog[0][1]:.4f} over 2 day(s) 2024-03-02..2024-03-03 of "
        f"gbm (MLflow run {run_id}) is worse than its backtest promised: pooled 0.1000, 95th percentile of its "
        "daily RMSE 0.2000"
    ]

    # verifying again logs nothing twice
    again = pipeline.verify(c, DAYS[1], DAYS[2], res=res)
    assert again["unchanged"] and again["live"][run_id]["status"] == "unchanged"
    assert len(client.get_metric_history(run_id, "live.rmse.h01")) == 1
