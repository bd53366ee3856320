"""Training: splits, the leave-one-out prior, the result contract, determinism, the divergence guard."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from traffic.forecast.baselines import fit_seasonal_profile, seasonal_period, time_positions
from traffic.forecast.batching import Batcher
from traffic.forecast.features import build_inputs
from traffic.forecast.inference import evaluate_module, forecast_after
from traffic.forecast.result import TrainResult
from traffic.forecast.split import holdout_indices, holdout_start, make_split
from traffic.forecast.train import TrainingDiverged, train_forecaster
from traffic.grid.tensor import GridTensor

from .synth import synthetic_grid

# A 5-day synthetic window is too small to pre-fit the head on the validation days as well (it
# overfits them and loses to ridge on the holdout): these tests judge it on validation instead.
FAST = {
    "max_epochs": 1,
    "batch_size": 8,
    "eval_every_steps": 5,
    "max_val_samples": 16,
    "cpu_threads": 1,
    "head_fit_on_validation": False,
}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFIC_HOME", str(tmp_path))


@pytest.fixture(scope="module")
def grid() -> GridTensor:
    return synthetic_grid(days=8, freq="1h", shape=(5, 6))


@pytest.fixture(scope="module")
def result(grid) -> TrainResult:
    return train_forecaster(
        grid, context_steps=6, horizon_steps=3, holdout_days=1, train_days=5, budget_s=30, model_overrides=FAST
    )


def test_split_is_ordered_and_disjoint(grid):
    s = make_split(grid, context_steps=6, horizon_steps=3, holdout_days=1, train_days=5)
    n_t = grid.shape[0]
    assert s.fit_end == n_t - 24 and s.fit_start == s.fit_end - 5 * 24
    assert s.train.max() + 3 < s.val_start <= s.val.min() + 1
    assert s.val.max() + 3 < s.fit_end <= s.holdout.min() + 1
    assert s.train.min() + 1 >= s.fit_start and s.train.min() - 5 >= 0
    assert s.holdout.max() + 3 == n_t - 1
    np.testing.assert_array_equal(s.holdout, holdout_indices(grid, context_steps=6, horizon_steps=3, holdout_days=1))
    for t_end in (s.train, s.val, s.holdout):  # every sample has an observed target
        assert grid.mask[t_end[:, None] + np.arange(1, 4)[None, :]].any(axis=(1, 2, 3, 4)).all()


def test_holdout_start_is_the_last_days_in_whole_bins(grid):
    n_t = grid.shape[0]
    assert (
        holdout_start(grid, 1)
        == n_t - 24
        == make_split(grid, context_steps=6, horizon_steps=3, holdout_days=1, train_days=5).fit_end
    )
    assert holdout_start(grid, 0.5 + 0.4 / 24) == n_t - 12  # rounded to the nearest bin
    for days in (0, n_t / 24):
        with pytest.raises(ValueError, match=f"holdout_days={days} .* must leave bins on both sides of {n_t} bins"):
            holdout_start(grid, days)


def test_samples_without_observed_target_are_dropped(grid):
    g = dataclasses.replace(grid, mask=grid.mask.copy())
    g.mask[-10:] = False
    ho = holdout_indices(g, context_steps=6, horizon_steps=3, holdout_days=1)
    assert ho.max() == g.shape[0] - 10 - 2  # last sample keeps one observed target bin


def test_split_errors_name_the_window(grid):
    with pytest.raises(ValueError, match="no training samples"):
        make_split(grid, context_steps=6, horizon_steps=3, holdout_days=1, train_days=0.01)
    with pytest.raises(ValueError, match="holdout_days"):
        make_split(grid, context_steps=6, horizon_steps=3, holdout_days=30, train_days=5)


def test_leave_one_out_prior_never_sees_its_own_value(grid):
    s = make_split(grid, context_steps=6, horizon_steps=3, holdout_days=1, train_days=5)
    win = grid.slice_time(s.fit_start, s.fit_end)
    prof = fit_seasonal_profile(win.values, win.mask, win.times, 60, seasonal_period(len(win.times), 60))
    b = Batcher(grid, 6, 3, prof, time_positions(grid.times, 60, prof.period), s.fit_start, s.fit_end, "cpu")
    t_end = s.train[20:22]
    prior = b.loo_prior(t_end).numpy()  # (B, 9, C, H, W)
    # the batch's inputs are exactly what serving builds (features.build_inputs)
    np.testing.assert_array_equal(b.inputs(t_end).numpy(), build_inputs(grid, t_end, 6, 3))
    bins = t_end[:, None] + np.arange(-5, 4)[None, :]
    t = int(bins[0, -1])  # a target bin inside the window
    c, r, q = 0, 0, 0  # cell (0, 0) is always observed where the mask says so
    assert grid.mask[t, c, r, q]
    pos = time_positions(grid.times, 60, prof.period)[t]
    others = [
        i for i in range(s.fit_start, s.fit_end) if i != t and time_positions(grid.times, 60, prof.period)[i] == pos
    ]
    obs = [grid.values[i, c, r, q] for i in others if grid.mask[i, c, r, q]]
    assert prior[0, -1, c, r, q] == pytest.approx(np.mean(obs), rel=1e-5)
    assert prior[0, -1, c, r, q] != pytest.approx(prof.profile[pos, c, r, q], rel=1e-6)


def test_result_contract(result, grid):
    r = result
    assert set(r.metrics) == {"model", "persistence", "seasonal_average", "ridge", "gbm"}
    n = r.metrics["model"].n
    assert len(n) == 3 and all(k > 0 for k in n)
    assert all(m.n == n for m in r.metrics.values())
    assert all(np.isfinite(m.rmse_mean) for m in r.metrics.values())
    assert r.holdout.n_samples == len(holdout_indices(grid, context_steps=6, horizon_steps=3, holdout_days=1))
    assert len(r.holdout.digest) == 64 and r.holdout.start < r.holdout.end
    assert r.input_example.shape == (1, 6, 2 * 2 + 7, 5, 6) and r.input_example.dtype == np.float32
    assert r.example_forecast.shape == r.example_target.shape == r.example_mask.shape == (3, 2, 5, 6)
    assert np.isnan(r.example_target[~r.example_mask]).all()
    assert r.channels == grid.channels
    assert r.stopped_reason in ("wall_clock_cap", "early_stopping", "max_epochs")
    assert r.learning_curve[0]["step"] == 0 and set(r.learning_curve[-1]) == {
        "epoch",
        "step",
        "train_loss",
        "val_loss",
        "lr",
        "elapsed_s",
    }
    assert r.device == "cpu" and not r.module.training
    assert next(r.module.parameters()).device.type == "cpu"
    assert all(isinstance(v, int | float | str | bool) for v in r.params.values())
    assert set(r.extra["modality_weights"]) == {"loop", "cam", "calendar", "prior"}
    assert r.train_window[0] < r.train_window[1] <= r.holdout.start


def test_evaluate_module_and_forecast_agree_with_training(result, grid):
    again = evaluate_module(result.module, grid, holdout_days=1)
    assert again.n == result.metrics["model"].n
    np.testing.assert_allclose(again.rmse, result.metrics["model"].rmse, rtol=1e-5)
    f = forecast_after(result.module, grid, -1)
    assert f.shape == (3, 2, 5, 6) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="issued_index"):
        forecast_after(result.module, grid, 2)
    with pytest.raises(ValueError, match="horizon_steps"):
        evaluate_module(result.module, grid, holdout_days=1, horizon_steps=5)


def test_the_model_beats_the_baselines_on_a_learnable_grid(result):
    """A daily cycle plus a persistent anomaly: prior + anomaly persistence wins at every horizon."""
    best = min(m.rmse_mean for k, m in result.metrics.items() if k != "model")
    assert result.metrics["model"].rmse_mean < best


def test_digest_follows_the_holdout_data(result, grid):
    r2 = evaluate_module(result.module, grid, holdout_days=1)  # same data, same digest inputs
    assert r2.n == result.metrics["model"].n
    from traffic.forecast.train import _holdout_digest

    s = make_split(grid, context_steps=6, horizon_steps=3, holdout_days=1, train_days=5)
    assert _holdout_digest(grid, s.fit_end, grid.shape[0]) == result.holdout.digest
    changed = dataclasses.replace(grid, values=grid.values.copy())
    i = np.argwhere(grid.mask[s.fit_end :])[0]
    changed.values[s.fit_end + i[0], i[1], i[2], i[3]] += 1.0
    assert _holdout_digest(changed, s.fit_end, grid.shape[0]) != result.holdout.digest


def test_same_seed_same_run(grid):
    kw = dict(context_steps=6, horizon_steps=3, holdout_days=1, train_days=5, budget_s=60, model_overrides=FAST)
    a = train_forecaster(grid, seed=3, **kw)
    b = train_forecaster(grid, seed=3, **kw)
    assert a.stopped_reason == b.stopped_reason == "max_epochs"
    assert [c["val_loss"] for c in a.learning_curve] == [c["val_loss"] for c in b.learning_curve]
    assert a.metrics["model"].rmse == b.metrics["model"].rmse
    for pa, pb in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_nan_guard_raises_before_returning(grid):
    with pytest.raises(TrainingDiverged):
        train_forecaster(
            grid,
            context_steps=6,
            horizon_steps=3,
            holdout_days=1,
            train_days=5,
            budget_s=30,
            model_overrides={**FAST, "lr": 1e30, "grad_clip": 1e30},
        )


def test_unknown_override_is_rejected(grid):
    with pytest.raises(ValueError, match="unknown model override 'hidden'"):
        train_forecaster(
            grid,
            context_steps=6,
            horizon_steps=3,
            holdout_days=1,
            train_days=5,
            budget_s=1,
            model_overrides={"hidden": 3},
        )


def test_budget_stops_training(grid):
    r = train_forecaster(
        grid,
        context_steps=6,
        horizon_steps=3,
        holdout_days=1,
        train_days=5,
        budget_s=0.5,
        model_overrides={"max_epochs": 1000, "patience": 1000},
    )
    assert r.stopped_reason == "wall_clock_cap" and r.extra["wall_clock_cap"]
    assert r.train_seconds < 5.0


def test_exported_module_scores_and_forecasts_like_the_original(result, grid, tmp_path):
    """The registry logs ``torch.export`` graphs (pt2): no ``.config``, no ``.eval()``."""
    x = torch.from_numpy(np.concatenate([result.input_example] * 2))  # batch of 2 keeps B dynamic
    program = torch.export.export(result.module, (x,), dynamic_shapes=[{0: torch.export.Dim.AUTO}])
    torch.export.save(program, tmp_path / "m.pt2")
    graph = torch.export.load(tmp_path / "m.pt2").module()
    assert not hasattr(graph, "config")
    got = evaluate_module(graph, grid, holdout_days=1)
    assert got.n == result.metrics["model"].n
    np.testing.assert_allclose(got.rmse, result.metrics["model"].rmse, rtol=1e-5)
    np.testing.assert_allclose(
        forecast_after(graph, grid, -1), forecast_after(result.module, grid, -1), rtol=1e-5, atol=1e-4
    )
    with pytest.raises(ValueError, match="horizon_steps"):
        evaluate_module(graph, grid, holdout_days=1, horizon_steps=4)


def _asymmetric_grid(seed: int = 0) -> GridTensor:
    """Anomalies that persist when positive and vanish when negative: no linear base can fit both."""
    g = synthetic_grid(days=8, freq="1h", shape=(4, 5), channels=("loop.speed_kmh",), observed_share=0.9, seed=seed)
    rng = np.random.default_rng(seed)
    t = g.shape[0]
    a = np.zeros((t, 1, 4, 5))
    for i in range(1, t):  # a loop over bins in a test helper
        a[i] = np.where(a[i - 1] > 0, 0.95, 0.1) * a[i - 1] + rng.normal(0, 4, size=(1, 4, 5))
    hour = g.times.hour.to_numpy()[:, None, None, None]
    values = (50 + 10 * np.sin(2 * np.pi * hour / 24) + a).astype(np.float32)
    return dataclasses.replace(g, values=np.where(g.mask, values, np.nan).astype(np.float32))


@pytest.mark.slow
def test_head_pretraining_learns_what_the_linear_base_cannot():
    g = _asymmetric_grid()
    kw = dict(context_steps=6, horizon_steps=2, holdout_days=1, train_days=6, budget_s=120)
    over = {**FAST, "max_steps": 1}
    plain = train_forecaster(g, **kw, model_overrides={**over, "head_pretrain_steps": 0})
    fitted = train_forecaster(g, **kw, model_overrides={**over, "head_pretrain_steps": 300})
    assert plain.extra["head_pretrain_loss"] is None
    assert fitted.extra["head_pretrain_loss"] is not None  # kept: it lowered the validation loss
    assert fitted.metrics["model"].rmse_mean < 0.97 * plain.metrics["model"].rmse_mean
