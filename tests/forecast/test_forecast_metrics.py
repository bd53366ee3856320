"""Masked metrics and the masked training loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from traffic.forecast.metrics import (
    MAPE_MIN_TARGET,
    MetricAccumulator,
    group_table,
    masked_metrics,
    masked_mse,
    relative_change,
    skill,
)
from traffic.forecast.result import HorizonMetrics


def test_masked_metrics_known_answer():
    # 1 sample, 2 horizons, 1 channel, 1x3 cells
    pred = np.array([[[[[1.0, 2.0, 3.0]]], [[[0.0, 0.0, 0.0]]]]])
    target = np.array([[[[[2.0, np.nan, 6.0]]], [[[4.0, 100.0, np.nan]]]]])
    mask = np.array([[[[[True, False, True]]], [[[True, False, False]]]]])
    m = masked_metrics(pred, target, mask)
    assert m.n == [2, 1]
    assert m.mae == pytest.approx([(1 + 3) / 2, 4.0])
    assert m.rmse == pytest.approx([math.sqrt((1 + 9) / 2), 4.0])
    assert m.rmse_mean == pytest.approx((math.sqrt(5) + 4) / 2)


@pytest.mark.parametrize(
    ("mape_min", "expected_n", "expected_mape"),
    [
        # targets 0 | 5 | 10 | 40 | -20 (observed), 1000 (not observed); predictions 3 | 6 | 12 | 30 | -25 | 0
        (10.0, 3, 100 * (2 / 10 + 10 / 40 + 5 / 20) / 3),  # the default rule: |y| >= 10
        (5.0, 4, 100 * (1 / 5 + 2 / 10 + 10 / 40 + 5 / 20) / 4),
        (50.0, 0, math.nan),  # nothing passes: NaN, counted 0
    ],
)
def test_mape_zero_denominator_rule(mape_min, expected_n, expected_mape):
    pred = np.array([3.0, 6.0, 12.0, 30.0, -25.0, 0.0]).reshape(1, 1, 1, 1, 6)
    target = np.array([0.0, 5.0, 10.0, 40.0, -20.0, 1000.0]).reshape(pred.shape)
    mask = np.array([True, True, True, True, True, False]).reshape(pred.shape)
    m = masked_metrics(pred, target, mask, mape_min=mape_min)
    assert m.n == [5] and m.n_mape == [expected_n]
    assert m.mape == [pytest.approx(expected_mape, nan_ok=True)]
    assert m.mae == pytest.approx([(3 + 1 + 2 + 10 + 5) / 5])  # MAE counts the zero target


def test_mape_default_threshold_is_the_documented_one():
    assert MAPE_MIN_TARGET == 10.0
    pred = np.full((1, 2, 1, 1, 2), 12.0)
    target = np.array([9.99, 10.0, 10.0, 0.0]).reshape(pred.shape)
    m = masked_metrics(pred, target, np.ones(pred.shape, bool))
    assert m.n_mape == [1, 1] and m.mape == pytest.approx([20.0, 20.0])
    assert m.mape_mean == pytest.approx(20.0)


def test_mape_min_must_be_positive():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="mape_min"):
            MetricAccumulator(2, mape_min=bad)


def test_horizon_metrics_without_mape_still_construct():
    hm = HorizonMetrics(mae=[1.0, 2.0], rmse=[2.0, 3.0], n=[5, 5])
    assert hm.mape == [] and hm.n_mape == [] and math.isnan(hm.mape_mean)
    assert hm.rmse_mean == 2.5 and hm.mae_mean == 1.5
    d = hm.as_dict()
    assert set(d) == {"mae", "rmse", "mape", "n", "n_mape", "coverage", "mae_mean", "rmse_mean", "mape_mean"}


def test_values_under_the_mask_never_count():
    rng = np.random.default_rng(0)
    pred = rng.normal(20, 10, size=(4, 3, 2, 5, 6))
    target = rng.normal(20, 10, size=pred.shape)  # some below the MAPE threshold, some above
    mask = rng.random(pred.shape) > 0.5
    a = masked_metrics(pred, target, mask)
    assert all(0 < k < n for k, n in zip(a.n_mape, a.n, strict=True))
    target2 = np.where(mask, target, np.nan)
    pred2 = np.where(mask, pred, 1e6)
    b = masked_metrics(pred2, target2, mask)
    assert a.as_dict() == b.as_dict()


def test_horizon_without_observation_is_nan_and_accumulator_matches():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(6, 2, 1, 3, 3))
    target = rng.normal(0, 20, size=pred.shape)
    mask = rng.random(pred.shape) > 0.3
    mask[:, 1] = False
    whole = masked_metrics(pred, target, mask)
    assert whole.n[1] == 0 and math.isnan(whole.rmse[1]) and math.isnan(whole.mae[1])
    assert whole.n_mape[1] == 0 and math.isnan(whole.mape[1]) and whole.n_mape[0] > 0
    acc = MetricAccumulator(2)
    for s in range(0, 6, 4):
        acc.update(pred[s : s + 4], target[s : s + 4], mask[s : s + 4])
    parts = acc.result()
    assert parts.n == whole.n
    assert parts.rmse[0] == pytest.approx(whole.rmse[0])
    assert parts.mae[0] == pytest.approx(whole.mae[0])
    assert parts.n_mape == whole.n_mape and parts.mape[0] == pytest.approx(whole.mape[0])


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        masked_metrics(np.zeros((1, 2, 1, 2, 2)), np.zeros((1, 2, 1, 2, 3)), np.ones((1, 2, 1, 2, 2), bool))
    pred = np.zeros((1, 1, 1, 1, 2))
    pred[..., 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        masked_metrics(pred, np.zeros_like(pred), np.ones(pred.shape, bool))


def test_masked_mse_ignores_masked_values_and_their_gradients():
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 2, 4, 4, requires_grad=True)
    target = torch.randn(2, 3, 2, 4, 4)
    mask = torch.rand(2, 3, 2, 4, 4) > 0.5
    loss = masked_mse(pred, target, mask)
    loss.backward()
    grad = pred.grad.clone()
    expected = ((pred.detach() - target)[mask] ** 2).mean()
    torch.testing.assert_close(loss.detach(), expected)
    assert (grad[~mask] == 0).all()

    target2 = torch.where(mask, target, torch.full_like(target, float("nan")))
    pred2 = pred.detach().clone()
    pred2[~mask] = 1e4
    pred2.requires_grad_(True)
    loss2 = masked_mse(pred2, target2, mask)
    loss2.backward()
    torch.testing.assert_close(loss2.detach(), loss.detach())
    torch.testing.assert_close(pred2.grad, grad)


def test_masked_mse_of_nothing_observed_is_zero():
    pred = torch.randn(1, 1, 1, 2, 2, requires_grad=True)
    loss = masked_mse(pred, torch.full_like(pred, float("nan")), torch.zeros(1, 1, 1, 2, 2, dtype=torch.bool))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


# ------------------------------------------------------------------------- skill and metric tables
def test_skill_and_relative_change_are_one_rule():
    assert skill(9.0, 10.0) == pytest.approx(0.1) and relative_change(9.0, 10.0) == pytest.approx(-0.1)
    assert relative_change(2.5, 2.5) == 0.0 and str(100 * relative_change(2.5, 2.5)) == "0.0"  # never -0.0
    per_h = skill([1.0, 2.0, 3.0], [2.0, 0.0, np.nan])
    assert per_h[0] == pytest.approx(0.5) and np.isnan(per_h[1:]).all()  # no reference, no skill
    assert np.isnan(skill(float("inf"), 1.0)) and isinstance(skill(1.0, 2.0), float)


def test_group_table_means_per_group_of_hours_and_the_promotion_mean_last():
    model = HorizonMetrics(mae=[1.0, 2.0, 3.0], rmse=[1.0, 2.0, 4.0], n=[10, 20, 30], mape=[5.0, np.nan, 7.0])
    model.n_mape = [1, 0, 3]
    old = HorizonMetrics(mae=[2.0, 2.0], rmse=[2.0, 2.0], n=[10, 20])  # recorded with fewer horizons
    rows = group_table({"model": model, "old": old}, "rmse", 1800)  # 30-min bins: "1 h" = steps 1-2
    assert [(r.label, r.steps, r.n) for r in rows] == [("1 h", (1, 2), 30), ("2–3 h", (3, 3), 30), ("all", (1, 3), 60)]
    assert rows[0].values == {"model": 1.5, "old": 2.0}
    assert rows[1].values["model"] == 4.0 and np.isnan(rows[1].values["old"])
    assert rows[2].values["model"] == pytest.approx(7 / 3) and rows[2].values["old"] == 2.0  # rmse_mean
    mape = group_table({"model": model}, "mape", 1800)
    assert mape[0].values["model"] == 5.0 and mape[0].n == 1  # NaN horizons left out; n_mape counts
    with pytest.raises(ValueError, match=r"metric 'r2' is not allowed; allowed: \['mae', 'rmse', 'mape'\]"):
        group_table({"model": model}, "r2", 1800)
