"""Masked metrics (evaluation, original units) and the masked training loss (normalised units).

Missing target values never count: a cell/bin/channel that was not observed contributes
neither error nor weight. Arrays are laid out ``(N, H_out, C, H, W)`` and metrics are
reported per horizon (axis 1), pooled over samples, channels and cells.
"""

from __future__ import annotations

import numpy as np
import torch

from traffic.forecast.result import HorizonMetrics


class MetricAccumulator:
    """Streaming masked MAE/RMSE per horizon, for holdouts scored batch by batch.

    Parameters
    ----------
    horizon : int
        Number of forecast horizons ``H_out``.
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon
        self.abs_sum = np.zeros(horizon, dtype=np.float64)
        self.sq_sum = np.zeros(horizon, dtype=np.float64)
        self.n = np.zeros(horizon, dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
        """Add a batch ``(B, H_out, C, H, W)``; ``target`` may hold NaN where ``mask`` is False."""
        if not (pred.shape == target.shape == mask.shape):
            raise ValueError(f"pred {pred.shape}, target {target.shape} and mask {mask.shape} must have the same shape")
        if pred.ndim != 5 or pred.shape[1] != self.horizon:
            raise ValueError(f"expected (N, {self.horizon}, C, H, W) arrays, got {pred.shape}")
        m = mask.astype(bool)
        err = np.where(m, pred.astype(np.float64) - np.where(m, target, 0.0), 0.0)
        if not np.isfinite(err).all():
            bad = int((~np.isfinite(err)).sum())
            raise ValueError(f"{bad} predictions at observed targets are NaN or infinite")
        axes = (0, 2, 3, 4)
        self.abs_sum += np.abs(err).sum(axis=axes)
        self.sq_sum += (err**2).sum(axis=axes)
        self.n += m.sum(axis=axes)

    def result(self) -> HorizonMetrics:
        """Metrics so far; a horizon without any observed target gets NaN."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = np.where(self.n > 0, self.abs_sum / self.n, np.nan)
            rmse = np.where(self.n > 0, np.sqrt(self.sq_sum / self.n), np.nan)
        return HorizonMetrics(mae=[float(v) for v in mae], rmse=[float(v) for v in rmse], n=[int(v) for v in self.n])


def masked_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> HorizonMetrics:
    """Masked MAE and RMSE per horizon.

    Parameters
    ----------
    pred, target : np.ndarray
        ``(N, H_out, C, H, W)`` in original units; ``target`` may be NaN where ``mask`` is False.
    mask : np.ndarray
        ``(N, H_out, C, H, W)`` bool, True where the target was observed.

    Returns
    -------
    HorizonMetrics
        ``mae``, ``rmse`` and ``n`` (observed targets) per horizon; NaN for a horizon with ``n == 0``.

    Raises
    ------
    ValueError
        On mismatched shapes or a non-finite prediction at an observed target.
    """
    acc = MetricAccumulator(np.shape(pred)[1] if np.ndim(pred) == 5 else -1)
    acc.update(np.asarray(pred), np.asarray(target), np.asarray(mask))
    return acc.result()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over observed targets only (the training loss, normalised units).

    Values under ``mask == False`` (NaN included) change neither the loss nor its gradient.
    Returns 0 (with a graph) when nothing is observed.
    """
    m = mask.to(dtype=torch.bool)
    diff = torch.where(m, pred - torch.where(m, target, torch.zeros_like(target)), torch.zeros_like(pred))
    n = m.sum().clamp_min(1).to(pred.dtype)
    return (diff.float() ** 2).sum() / n.float()
