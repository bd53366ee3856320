"""Every deployable variant of a trained network can serve: logged with its own weights and interval model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.forecast.synth import synthetic_grid
from traffic.forecast.inference import predict
from traffic.forecast.train import train_forecaster
from traffic.registry import load_intervals, load_serving_module, log_training
from traffic.registry.mlflow_registry import RegistryError

pytestmark = pytest.mark.usefixtures("mlflow_db")

FAST = {"max_epochs": 3, "batch_size": 8, "eval_every_steps": 4, "max_val_samples": 16, "cpu_threads": 1}


@pytest.fixture(scope="module")
def trained():
    grid = synthetic_grid(days=8, freq="1h", shape=(5, 6))
    result = train_forecaster(
        grid,
        context_steps=6,
        horizon_steps=3,
        holdout_days=2,
        train_days=5,
        budget_s=120,
        max_steps=6,
        backtest_folds=2,
        model_overrides=FAST,
    )
    return grid, result


def test_each_variant_is_logged_and_loads_back_as_it_was_scored(berlin, trained):
    grid, result = trained
    bt = result.backtest
    assert [f.days for f in bt.folds] == [(bt.days[0],), (bt.days[1],)] and set(bt.errors) >= {
        "model",
        "base",
        "base_head",
    }
    # the backtest's pooled errors are the holdout metrics of each variant, to the last digit
    assert bt.rmse_mean("model") == pytest.approx(result.metrics["model"].rmse_mean, rel=1e-12)
    assert bt.rmse_mean("base_head") == pytest.approx(result.ablation["base_head"].rmse_mean, rel=1e-12)
    assert bt.rmse_mean("gbm") == pytest.approx(result.metrics["gbm"].rmse_mean, rel=1e-12)
    assert result.metrics["gbm"].coverage and result.ablation["base"].coverage  # every kind has its interval check
    logged = log_training(
        berlin, result, data_window={"start": "2024-03-04", "end": "2024-03-11", "as_of": "2024-03-11"}
    )
    t_end = np.arange(20, 30)
    ablated = result.module.__class__(result.module.config)
    ablated.load_state_dict(result.variant_states["base_head"])
    expected = {
        "model": predict(result.module.set_paths("full"), grid, t_end, 6, 3),
        "base_head": predict(ablated.set_paths("base_head"), grid, t_end, 6, 3),
        "base": predict(ablated.set_paths("base"), grid, t_end, 6, 3),
    }
    for variant, want in expected.items():
        module = load_serving_module(logged["run_id"], logged["model_uri"], variant=variant)
        assert module.paths == {"model": "full"}.get(variant, variant)
        with torch.no_grad():
            got = predict(module, grid, t_end, 6, 3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        iv = load_intervals(logged["run_id"], variant=variant)
        assert iv is not None and iv.to_bytes() == result.variant_intervals[variant].to_bytes()
    assert not np.allclose(expected["base"], expected["model"])  # the variants are not the same forecaster
    with pytest.raises(RegistryError, match="unknown variant 'combo'"):
        load_serving_module(logged["run_id"], logged["model_uri"], variant="combo")
