"""Inference with a trained forecaster: forecasts and holdout scores.

Works on a :class:`~traffic.model.Forecaster` and on the exported graph the registry loads
back (its context length is read from the traced input shape). Holdout scoring runs on the
module's device (bf16 autocast on CUDA); only the forecasts come back to the host for the
masked metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from traffic.forecast.backtest import DailyErrors
from traffic.forecast.features import build_inputs, target_index
from traffic.forecast.intervals import CoverageAccumulator, IntervalModel
from traffic.forecast.metrics import MetricAccumulator
from traffic.forecast.result import HorizonMetrics, TrainingDiverged
from traffic.forecast.split import holdout_indices
from traffic.grid.tensor import GridTensor
from traffic.model import Forecaster


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def module_device(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _inference_mode(module: torch.nn.Module) -> None:
    """``eval()`` a :class:`Forecaster`; an exported graph (pt2, from the registry) is always in inference mode."""
    if isinstance(module, Forecaster):
        module.eval()


def _context_steps(module: torch.nn.Module, context_steps: int | None) -> int:
    """Context length: given, else the module's config, else the input shape an exported graph was traced with."""
    if context_steps is not None:
        return int(context_steps)
    cfg = getattr(module, "config", None)
    if cfg is not None:
        return int(cfg.context_steps)
    graph = getattr(module, "graph", None)
    for node in graph.nodes if graph is not None else ():
        val = node.meta.get("val") if node.op == "placeholder" else None
        if val is not None and getattr(val, "ndim", 0) == 5:
            return int(val.shape[1])  # (B, T_in, F, H, W)
    raise ValueError(f"cannot tell the context length of {type(module).__name__}: pass context_steps")


def _horizon(module: torch.nn.Module, grid: GridTensor, t_in: int, horizon_steps: int | None) -> int:
    """Bins predicted: the module's config, else one probe forecast; ``horizon_steps`` must agree."""
    cfg = getattr(module, "config", None)
    if cfg is not None:
        h_out = int(cfg.horizon)
    else:
        h_out = predict(module, grid, np.array([t_in - 1]), t_in, horizon_steps or 1).shape[1]
    if horizon_steps is not None and horizon_steps != h_out:
        raise ValueError(f"horizon_steps={horizon_steps} but the module predicts {h_out} bins")
    return h_out


@torch.no_grad()
def predict(module: torch.nn.Module, grid: GridTensor, t_end: np.ndarray, t_in: int, horizon: int) -> np.ndarray:
    dev = module_device(module)
    x = torch.from_numpy(build_inputs(grid, t_end, t_in, horizon)).to(dev)
    with autocast(dev):
        pred = module(x)
    pred = pred.float().cpu().numpy()
    if pred.ndim != 5 or pred.shape[0] != len(t_end) or pred.shape[2:] != grid.shape[1:]:
        raise ValueError(f"module output {pred.shape} is not (B, H_out, C, H, W) for the grid {grid.shape}")
    if not np.isfinite(pred).all():
        raise TrainingDiverged(f"the module forecast NaN/inf for samples ending at bins {t_end[:3].tolist()}...")
    return pred


def evaluate_module(
    module: torch.nn.Module,
    grid: GridTensor,
    *,
    holdout_days: float,
    context_steps: int | None = None,
    horizon_steps: int | None = None,
    batch_size: int = 32,
    intervals: IntervalModel | None = None,
    daily: DailyErrors | None = None,
) -> HorizonMetrics:
    """Score ``module`` on the holdout of ``grid`` (the same definition and metrics as training).

    Parameters
    ----------
    module : torch.nn.Module
        A :class:`~traffic.model.Forecaster` or the exported graph the registry loads back.
    grid : GridTensor
    holdout_days : float
    context_steps, horizon_steps : int, optional
        Default to the module's own; a ``horizon_steps`` the module does not predict is an error.
    batch_size : int
    intervals : IntervalModel, optional
        When given, ``coverage`` holds the share of observed holdout targets inside its bounds.
    daily : DailyErrors, optional
        Also adds every error to it, per target day (the backtest, :mod:`traffic.forecast.backtest`).

    Returns
    -------
    HorizonMetrics
    """
    _inference_mode(module)
    t_in = _context_steps(module, context_steps)
    h_out = _horizon(module, grid, t_in, horizon_steps)
    ho = holdout_indices(grid, context_steps=t_in, horizon_steps=h_out, holdout_days=holdout_days)
    if len(ho) == 0:
        raise ValueError(f"no holdout samples in grid {grid.shape} for holdout_days={holdout_days}")
    acc = MetricAccumulator(h_out)
    cov = CoverageAccumulator(h_out)
    for s in range(0, len(ho), batch_size):
        te = ho[s : s + batch_size]
        tidx = target_index(te, h_out)
        pred = predict(module, grid, te, t_in, h_out)
        acc.update(pred, grid.values[tidx], grid.mask[tidx])
        if daily is not None:
            daily.update(pred, grid.values[tidx], grid.mask[tidx], tidx)
        if intervals is not None:
            cov.update_model(intervals, pred, grid.values[tidx], grid.mask[tidx])
    out = acc.result()
    if intervals is not None:
        out.coverage = cov.result()
    return out


def forecast_after(
    module: torch.nn.Module, grid: GridTensor, issued_index: int, *, context_steps: int | None = None
) -> np.ndarray:
    """A module's forecast ``(H_out, C, H, W)`` in original units for the bins after bin ``issued_index`` of ``grid``.

    (The pipeline stage that serves, forecasts and stores a city's nightly run is
    :func:`traffic.pipeline.forecast`; a fitted baseline forecasts with
    :meth:`traffic.forecast.fallback.FittedBaseline.forecast`.)

    ``issued_index`` is the last bin of the context (negative counts from the end, -1 = last bin).
    ``module`` is a :class:`~traffic.model.Forecaster` or the exported graph the registry loads
    back (its context length is read from the traced input shape unless ``context_steps`` is given).
    """
    n_t = grid.shape[0]
    i = issued_index + n_t if issued_index < 0 else issued_index
    _inference_mode(module)
    t_in = _context_steps(module, context_steps)
    if not (t_in - 1 <= i < n_t):
        raise ValueError(f"issued_index {issued_index} needs {t_in - 1} <= index < {n_t} (grid of {n_t} bins)")
    return predict(module, grid, np.array([i]), t_in, 1)[0]
