"""Masked metrics and the masked training loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from traffic.forecast.metrics import MetricAccumulator, masked_metrics, masked_mse


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


def test_values_under_the_mask_never_count():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(4, 3, 2, 5, 6))
    target = rng.normal(size=pred.shape)
    mask = rng.random(pred.shape) > 0.5
    a = masked_metrics(pred, target, mask)
    target2 = np.where(mask, target, np.nan)
    pred2 = np.where(mask, pred, 1e6)
    b = masked_metrics(pred2, target2, mask)
    assert a.as_dict() == b.as_dict()


def test_horizon_without_observation_is_nan_and_accumulator_matches():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(6, 2, 1, 3, 3))
    target = rng.normal(size=pred.shape)
    mask = rng.random(pred.shape) > 0.3
    mask[:, 1] = False
    whole = masked_metrics(pred, target, mask)
    assert whole.n[1] == 0 and math.isnan(whole.rmse[1]) and math.isnan(whole.mae[1])
    acc = MetricAccumulator(2)
    for s in range(0, 6, 4):
        acc.update(pred[s : s + 4], target[s : s + 4], mask[s : s + 4])
    parts = acc.result()
    assert parts.n == whole.n
    assert parts.rmse[0] == pytest.approx(whole.rmse[0])
    assert parts.mae[0] == pytest.approx(whole.mae[0])


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
