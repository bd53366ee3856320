"""A city's first nights on real data (LA): nothing passes the gate, the best baseline is published, labelled.

The nightly stages run in-process (``pipeline.train`` / ``evaluate_and_promote`` / ``forecast`` /
``publish`` / ``refresh``) on the shipped METR-LA week. The network is trained for one optimiser
step (``pipeline.train(..., steps=1)``, no head pre-fit in the model spec the test reads), so that the first night's
outcome does not depend on how good training gets: a one-step network does not beat gradient
boosting on LA (the premise is asserted). The second night's spec gates on persistence alone, but
the serving baseline is the incumbent: two days cannot show a significant improvement over it, so it
keeps serving (the backtest rule, docs/backtests.md).
"""

from __future__ import annotations

import copy
import hashlib
import json

import duckdb
import numpy as np
import pytest
from mlflow import MlflowClient

from traffic import lake, pipeline
from traffic.config import duckdb_path, load_city, mlflow_uri
from traffic.forecast import train
from traffic.forecast.fallback import fit_baseline
from traffic.forecast.features import target_index
from traffic.forecast.metrics import MetricAccumulator
from traffic.forecast.split import make_split
from traffic.grid.arrays import read_forecast
from traffic.registry import run_metrics

AS_OF = "2012-03-07"


def _spec(monkeypatch, **promotion):
    spec = copy.deepcopy(train.load_model_spec())
    spec["training"] |= {"head_pretrain_steps": 0}
    spec["promotion"] |= promotion
    monkeypatch.setattr(train, "load_model_spec", lambda *a, **k: spec)
    return spec


def _runs() -> list[tuple]:
    con = duckdb.connect(str(duckdb_path()), read_only=True)
    try:
        return con.execute(
            "SELECT r.kind, r.model_kind, r.model_version, r.mlflow_run_id, r.interval_level, "
            "count(*) AS n, count(f.lower) FILTER (WHERE f.lower <= f.value AND f.value <= f.upper) AS n_bounds "
            "FROM forecast_runs r JOIN forecasts f USING (run_id, city) GROUP BY ALL ORDER BY r.kind"  # nightly, then refresh
        ).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_first_night_publishes_the_best_baseline_then_a_passing_version_takes_over(traffic_home, monkeypatch):
    la = load_city("los_angeles")
    pipeline.ingest(la, "2012-03-01", AS_OF)
    pipeline.rasterize(la, "2012-03-01", AS_OF)

    # ---- night 1: every baseline gates (the shipped spec); a one-step network passes none of GBM
    spec = _spec(monkeypatch)
    assert tuple(spec["promotion"]["gate_baselines"]) == ("persistence", "seasonal_average", "ridge", "gbm")
    trained = pipeline.train(la, AS_OF, budget_s=60, steps=1)
    assert trained["steps"] == 1
    model = run_metrics(trained["run_id"], "model")
    gbm = run_metrics(trained["run_id"], "gbm")
    assert model.rmse_mean > gbm.rmse_mean, "premise: a one-step network does not beat GBM on LA"
    decided = pipeline.evaluate_and_promote(la, AS_OF, trained)
    best = min(decided["gate_baselines"], key=lambda g: run_metrics(trained["run_id"], g).rmse_mean)
    assert decided["promoted"] is False and decided["champion"] is None
    assert decided["serving"] == {"kind": "baseline", "baseline": best}
    # decided on the backtest: both of LA's daily folds, with the paired intervals the decision quotes
    assert decided["reason"].startswith(("switched: backtest over 2 folds", "not promoted: backtest over 2 folds"))
    assert repr(best) in decided["reason"]

    meta = pipeline.forecast(la, AS_OF)
    assert (meta["model_kind"], meta["model_version"], meta["mlflow_run_id"]) == (
        best,
        f"baseline-{best}",
        trained["run_id"],
    )
    assert meta["interval_level"] == 0.8
    z = read_forecast(pipeline.lake_file(meta["path"]))
    fc, lo, hi = z.values, z.extra["lower"], z.extra["upper"]
    assert fc.shape == (la.forecast.horizon_steps, 1, *fc.shape[2:]) and np.isfinite(fc).all()
    assert (lo <= fc).all() and (fc <= hi).all() and (hi > lo).mean() > 0.5
    pipeline.publish(la, meta)
    (run,) = _runs()
    assert run[:5] == ("nightly", best, f"baseline-{best}", trained["run_id"], 0.8)
    assert run[5] > 0 and run[6] == run[5]  # never nothing; every row inside its own bounds

    # the published baseline is the one that was scored: refitted the same way, it scores the same holdout
    _, grid = pipeline._load_window(la, AS_OF)
    fc_cfg = la.forecast
    tr = spec["training"]
    fitted = fit_baseline(
        grid,
        best,
        context_steps=fc_cfg.context_steps,
        horizon_steps=fc_cfg.horizon_steps,
        holdout_days=fc_cfg.holdout_days,
        train_days=fc_cfg.train_days,
        val_fraction=float(tr["val_fraction"]),
        ridge_lags=int(tr["ridge_lags"]),
    )
    holdout = make_split(
        grid,
        context_steps=fc_cfg.context_steps,
        horizon_steps=fc_cfg.horizon_steps,
        holdout_days=fc_cfg.holdout_days,
        train_days=fc_cfg.train_days,
        val_fraction=float(tr["val_fraction"]),
    ).holdout
    acc = MetricAccumulator(fc_cfg.horizon_steps)
    for s in range(0, len(holdout), 16):
        te = holdout[s : s + 16]
        ti = target_index(te, fc_cfg.horizon_steps)
        acc.update(fitted.predict(te, grid.mask[ti]), grid.values[ti], grid.mask[ti])
    assert acc.result().rmse == pytest.approx(run_metrics(trained["run_id"], best).rmse, rel=1e-4)

    # the run's inputs: every raster partition of the window with its digest
    inputs = MlflowClient(tracking_uri=mlflow_uri()).get_run(trained["run_id"]).inputs.dataset_inputs
    by_name = {di.dataset.name: di for di in inputs}
    window = pipeline.training_window(la, AS_OF)
    days = pipeline._days(window["start"], window["end"])
    assert sorted(by_name) == [f"raster/los_angeles/date={d}" for d in days]
    for d in days:
        f = lake.partition("raster", city=la.name, date=d) / "part.parquet"
        di = by_name[f"raster/los_angeles/date={d}"]
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        tags = {t.key: t.value for t in di.tags}
        assert di.dataset.digest == sha[:32] and tags["sha256"] == sha
        assert tags["mlflow.data.context"] == ("holdout" if d in days[-fc_cfg.holdout_days :] else "training")

    # the hourly refresh without a champion: the same fallback, from the newest bin
    out = pipeline.refresh(la, until=f"{AS_OF} 20:00")
    assert out["forecast"]["model_kind"] == best and out["forecast"]["kind"] == "refresh"
    assert [r[:3] for r in _runs()] == [("nightly", best, f"baseline-{best}"), ("refresh", best, f"baseline-{best}")]

    # ---- night 2: a version that does not beat the serving baseline significantly on two days leaves it serving
    _spec(monkeypatch, gate_baselines=["persistence"])
    again = pipeline.train(la, AS_OF, budget_s=60, steps=1)
    decided = pipeline.evaluate_and_promote(la, AS_OF, again)
    assert decided["promoted"] is False and decided["champion"] is None
    assert decided["serving"] == {"kind": "baseline", "baseline": best}
    assert decided["reason"].startswith(f"kept {best!r}") and "no significant difference" in decided["reason"]
    meta = pipeline.forecast(la, AS_OF)
    assert (meta["model_kind"], meta["model_version"]) == (best, f"baseline-{best}")
    assert meta["mlflow_run_id"] == again["run_id"]  # the night that (again) chose it
    spec_json = json.loads(meta["model_spec"])
    assert spec_json["kind"] == "baseline" and spec_json["candidate"] == best and spec_json["run_id"] == again["run_id"]
    # values that can be true in every kind published here (the fallback baseline nightly and its refresh):
    # every forecast went through traffic.forecast.plausible in the forecast stage
    pipeline.publish(la, meta)
    con = duckdb.connect(str(duckdb_path()), read_only=True)
    try:
        bad = con.execute(
            "SELECT count(*) FILTER (WHERE value < 0 OR value > 200 OR lower < 0 OR upper > 200), "
            "count(*) FILTER (WHERE value < lower OR value > upper), count(*) FROM forecasts"
        ).fetchone()
    finally:
        con.close()
    assert bad[:2] == (0, 0) and bad[2] > 0
