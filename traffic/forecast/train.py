"""Training and evaluation of the forecaster on a :class:`~traffic.grid.tensor.GridTensor`.

Time split (all in bins of the grid, a sample = the context ending at bin ``t_end`` and
the ``horizon`` bins after it; a sample counts only if one of its targets is observed):

* holdout: samples whose targets all lie in the last ``holdout_days`` of the grid;
* training window: the ``train_days`` before the holdout. Its last ``val_fraction`` (15 %)
  holds the validation samples (early stopping), the rest the training samples; a sample
  never straddles two parts. Contexts may reach back before the window.

Statistics of the module (channel mean/std, seasonal profile) are fitted on the training
window only. During training the seasonal prior of an observed bin inside the window is
taken leave-one-out, so that no target (nor context value) ever sees its own value through
the prior; the holdout uses the module's own prior, fitted on the whole window.

The model and the baselines (``traffic.forecast.baselines.BASELINES``) are scored on the same
holdout samples with the same masked metrics. Batches are built lazily from sample indices (nothing is pre-materialised).
The training loop:

* **Seeds.** ``seed`` seeds Python's, numpy's and torch's generators and draws the sample
  order. With a step cap (training key ``max_steps``) instead of the wall-clock budget, two
  CPU runs with the same seed and thread count give bit-identical weights; with a budget the
  number of steps depends on the machine's speed.
* **Stopping.** Early stopping on the validation loss (``patience`` validations without
  improvement), ``max_epochs``, ``max_steps`` and the wall-clock ``budget_s``; the best
  validation state is returned. Gradients are clipped (``grad_clip``).
* **NaN/inf guard.** A non-finite loss, gradient norm, validation loss, parameter, base
  coefficient or holdout forecast raises :class:`TrainingDiverged` before anything is returned
  or checkpointed, so nothing downstream (the registry) ever sees a diverged model.
* **Checkpoint and resume** (``checkpoint_dir``, ``resume``; :mod:`traffic.forecast.checkpoint`).
  After every validation and when the loop stops, ``checkpoint.pt`` is replaced atomically:
  weights, optimizer, position in the epoch's sample order, generator states, best state,
  best validation loss and the learning curve. ``resume=True`` continues from it and reaches
  the same weights as an uninterrupted run (bit-identical on CPU).
* **Data-parallel** when launched with ``torchrun`` (``WORLD_SIZE > 1``): see
  :mod:`traffic.forecast.distributed`.
* **CUDA**: bf16 autocast and channels_last convolution weights; ``compile = true`` wraps
  the training forward in ``torch.compile``. The CPU path is plain eager float32.
* **Warm start** (``warm_start``): parameters of another model (another city's champion) with
  the same name and shape are copied before training; the statistics buffers are always fitted
  on this grid. ``extra["warm_start"]`` lists what was copied and skipped.
* **Progress bar** (tqdm) with ``progress=True``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from traffic.config import PROJECT_ROOT
from traffic.errors import TrainingDiverged
from traffic.forecast import distributed as ddp
from traffic.forecast.baselines import (
    SeasonalProfile,
    evaluate_baselines,
    fit_seasonal_profile,
    seasonal_period,
    time_positions,
)
from traffic.forecast.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    transfer_parameters,
)
from traffic.forecast.features import MINUTES_PER_DAY, bin_minutes, build_inputs, target_index
from traffic.forecast.intervals import CoverageAccumulator, IntervalModel, cell_scale, fit_intervals
from traffic.forecast.metrics import MetricAccumulator
from traffic.forecast.result import Holdout, HorizonMetrics, TrainResult
from traffic.grid.tensor import GridTensor
from traffic.model import N_BASE, Forecaster, ForecasterConfig, Terms

MODEL_SPEC = PROJECT_ROOT / "models" / "convlstm_attention.toml"

#: Model fields that come from the data, not from the spec or overrides.
DATA_FIELDS = ("channels", "grid_shape", "context_steps", "horizon", "bin_minutes", "profile_period")


def load_model_spec(path: str | Path = MODEL_SPEC) -> dict[str, dict[str, Any]]:
    """Read the model spec TOML: ``{"model": {...}, "training": {...}}`` default hyper-parameters."""
    with Path(path).open("rb") as fh:
        spec = tomllib.load(fh)
    for section in ("model", "training"):
        if section not in spec:
            raise ValueError(f"{path}: missing section [{section}]")
    return spec


@dataclass(frozen=True)
class Split:
    """Time split of a grid into training, validation and holdout samples.

    A sample is identified by ``t_end``, the index of its last context bin; its targets
    are bins ``t_end + 1 .. t_end + horizon``. Every sample has at least one observed target.

    Attributes
    ----------
    bins_per_day : int
    fit_start, fit_end : int
        Training window ``[fit_start, fit_end)``: the target bins of training and validation
        samples; ``fit_end`` is the first holdout bin.
    val_start : int
        First target bin of the validation samples (the last ``val_fraction`` of the window).
    train, val, holdout : np.ndarray
        ``t_end`` of the samples, ascending.
    """

    bins_per_day: int
    fit_start: int
    fit_end: int
    val_start: int
    train: np.ndarray
    val: np.ndarray
    holdout: np.ndarray


def _observed_windows(grid: GridTensor, horizon: int) -> np.ndarray:
    """``ok[t]``: True if any target of a sample ending at bin ``t`` is observed (False past the end)."""
    n_t = grid.mask.shape[0]
    any_obs = np.asarray(grid.mask.reshape(n_t, -1).any(axis=1), dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(any_obs)])
    t = np.arange(n_t)
    ok = (csum[np.minimum(t + horizon + 1, n_t)] - csum[np.minimum(t + 1, n_t)]) > 0
    return ok & (t + horizon < n_t)


def make_split(
    grid: GridTensor,
    *,
    context_steps: int,
    horizon_steps: int,
    holdout_days: float,
    train_days: float,
    val_fraction: float = 0.15,
) -> Split:
    """Split ``grid`` by time: holdout = last ``holdout_days`` of target bins, training window before it.

    Raises
    ------
    ValueError
        When a window is empty, naming the sizes that were asked for.
    """
    n_t = grid.shape[0]
    bpd = MINUTES_PER_DAY // bin_minutes(grid.times)
    fit_end = n_t - int(round(holdout_days * bpd))
    fit_start = max(0, fit_end - int(round(train_days * bpd)))
    if fit_end <= 0 or fit_end >= n_t:
        raise ValueError(
            f"holdout_days={holdout_days} ({n_t - fit_end} bins) must leave bins on both sides of {n_t} bins"
        )
    # the validation window holds at least one and a half horizons, so that a day-ahead
    # horizon still has validation samples (their targets never reach into the holdout)
    val_start = fit_end - max(1, int(round(val_fraction * (fit_end - fit_start))), horizon_steps + horizon_steps // 2)
    ok = _observed_windows(grid, horizon_steps)
    t = np.arange(n_t)
    valid = ok & (t - context_steps + 1 >= 0)
    train = np.flatnonzero(valid & (t + 1 >= fit_start) & (t + horizon_steps < val_start))
    val = np.flatnonzero(valid & (t + 1 >= val_start) & (t + horizon_steps < fit_end))
    holdout = np.flatnonzero(valid & (t + 1 >= fit_end))
    for name, arr in (("training", train), ("validation", val), ("holdout", holdout)):
        if len(arr) == 0:
            raise ValueError(
                f"no {name} samples: grid of {n_t} bins ({bpd}/day) from {grid.times[0]} to {grid.times[-1]}, "
                f"holdout_days={holdout_days}, train_days={train_days}, context_steps={context_steps}, "
                f"horizon_steps={horizon_steps} (a sample needs its context inside the grid and an observed target)"
            )
    return Split(bpd, fit_start, fit_end, val_start, train, val, holdout)


def holdout_indices(grid: GridTensor, *, context_steps: int, horizon_steps: int, holdout_days: float) -> np.ndarray:
    """``t_end`` of the holdout samples: every target in the last ``holdout_days``, at least one observed."""
    n_t = grid.shape[0]
    bpd = MINUTES_PER_DAY // bin_minutes(grid.times)
    fit_end = n_t - int(round(holdout_days * bpd))
    if fit_end <= 0 or fit_end >= n_t:
        raise ValueError(
            f"holdout_days={holdout_days} ({n_t - fit_end} bins) must leave bins on both sides of {n_t} bins"
        )
    ok = _observed_windows(grid, horizon_steps)
    t = np.arange(n_t)
    return np.flatnonzero(ok & (t - context_steps + 1 >= 0) & (t + 1 >= fit_end))


def active_box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """Smallest ``(row0, row1, col0, col1)`` box holding every observed cell of ``mask`` ``(T, C, H, W)``, plus ``margin``."""
    seen = np.asarray(mask.any(axis=(0, 1)))  # (H, W)
    if not seen.any():
        return None
    rows, cols = np.flatnonzero(seen.any(axis=1)), np.flatnonzero(seen.any(axis=0))
    h, w = seen.shape
    return (
        max(0, int(rows[0]) - margin),
        min(h, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(w, int(cols[-1]) + 1 + margin),
    )


def _spread(t_end: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` samples evenly spread over ``t_end`` (all of them if fewer)."""
    if len(t_end) <= k:
        return t_end
    return t_end[np.unique(np.linspace(0, len(t_end) - 1, k).round().astype(int))]


def _cpu_threads(setting: int, default: int) -> int:
    """Intra-op threads for CPU training: ``setting`` if > 0; 0 = auto.

    Auto keeps torch's default unless the 1-minute load average says the cores are already
    busy (other tasks, other cities): then one thread, because spinning OpenMP threads of
    small convolutions slow down several-fold on oversubscribed cores.
    """
    if setting > 0:
        return setting
    try:
        busy = os.getloadavg()[0] >= max(1, (os.cpu_count() or 1) - 0.5)
    except OSError:
        busy = False
    return 1 if busy else default


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _holdout_digest(grid: GridTensor, start: int, stop: int) -> str:
    """sha256 of the holdout target bins' values (0 where missing) and mask bytes."""
    m = grid.mask[start:stop]
    v = np.where(m, grid.values[start:stop], 0.0).astype("<f4")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(v).tobytes())
    h.update(np.ascontiguousarray(m, dtype=bool).tobytes())
    return h.hexdigest()


def _masked_channel_stats(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masked per-channel mean and std of ``(T, C, H, W)`` arrays (0 / 1 for a channel never observed)."""
    m = mask.astype(bool)
    n = m.sum(axis=(0, 2, 3)).astype(np.float64)
    v = np.where(m, values, 0.0).astype(np.float64)
    mean = v.sum(axis=(0, 2, 3)) / np.maximum(n, 1)
    var = (np.where(m, v - mean[None, :, None, None], 0.0) ** 2).sum(axis=(0, 2, 3)) / np.maximum(n, 1)
    std = np.sqrt(var)
    std = np.where((n > 1) & (std > 1e-6), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass
class _Batcher:
    """Builds training batches lazily from sample indices."""

    grid: GridTensor
    context_steps: int
    horizon: int
    profile: SeasonalProfile
    positions: np.ndarray  # (T,) bin of the profile period of every grid bin
    fit_start: int
    fit_end: int

    def __post_init__(self) -> None:
        self._sums32 = self.profile.sums.astype(np.float32)

    def loo_prior(self, t_end: np.ndarray) -> np.ndarray:
        """Leave-one-out seasonal prior ``(B, T_in + H_out, C, H, W)`` for the bins of samples ``t_end``."""
        idx = t_end[:, None] + np.arange(-self.context_steps + 1, self.horizon + 1)[None, :]  # (B, S)
        pos = self.positions[idx]
        prof = self.profile
        prior = prof.profile[pos]  # (B, S, C, H, W)
        own = self.grid.mask[idx] & ((idx >= self.fit_start) & (idx < self.fit_end))[:, :, None, None, None]
        if own.any():
            n = prof.counts[pos]
            v = np.where(own, self.grid.values[idx], np.float32(0.0))
            with np.errstate(invalid="ignore", divide="ignore"):
                loo = (self._sums32[pos] - v) / (n - 1).astype(np.float32)
            prior = np.where(own & (n > 1), loo, prior)
            prior = np.where(own & (n == 1), prof.cell_mean[None, None], prior)
        return prior.astype(np.float32)

    def __call__(self, t_end: np.ndarray, device: torch.device, loo: bool = True):
        """``x``, prior (leave-one-out, or None for the module's own), target (0 where missing) and mask."""
        x = build_inputs(self.grid, t_end, self.context_steps, self.horizon)
        tidx = target_index(t_end, self.horizon)
        y, m = self.grid.values[tidx], self.grid.mask[tidx]
        out = [torch.from_numpy(x), torch.from_numpy(self.loo_prior(t_end)) if loo else None]
        out += [torch.from_numpy(np.where(m, y, 0.0).astype(np.float32)), torch.from_numpy(m)]
        return [o.to(device, non_blocking=True) if o is not None else None for o in out]


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def _split_overrides(spec: dict[str, dict[str, Any]], overrides: dict[str, Any] | None):
    model_kw = dict(spec["model"])
    train_kw = dict(spec["training"])
    allowed_model = {f.name for f in fields(ForecasterConfig)} - set(DATA_FIELDS)
    for k, v in (overrides or {}).items():
        if k in allowed_model:
            model_kw[k] = v
        elif k in train_kw:
            train_kw[k] = v
        else:
            raise ValueError(
                f"unknown model override {k!r}; allowed: model {sorted(allowed_model)}, training {sorted(train_kw)}"
            )
    bad = set(model_kw) - allowed_model
    if bad:
        raise ValueError(f"{MODEL_SPEC}: unknown [model] keys {sorted(bad)}; allowed: {sorted(allowed_model)}")
    return model_kw, train_kw


def _flat_params(cfg: ForecasterConfig, train_kw: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in {**cfg.to_dict(), **train_kw, **extra}.items():
        out[k] = ",".join(str(x) for x in v) if isinstance(v, list | tuple) else ("none" if v is None else v)
    return out


def _check_finite_module(module: torch.nn.Module, where: str) -> None:
    for name, p in module.named_parameters():
        if not torch.isfinite(p).all():
            raise TrainingDiverged(f"parameter {name} is NaN/inf {where}")


#: Candidate linear bases: ``None`` = fitted, a number = fixed, per feature of ``traffic.model.BASE_FEATURES``.
BASE_CANDIDATES: dict[str, tuple[float | None, ...]] = {
    # the seasonal prior plus a fitted share of the last anomaly per horizon and channel
    "damped_anomaly": (1.0, 0.0, None, 0.0, 0.0, 0.0),
    # ... plus a fitted share of the context's multiplicative level
    "level_anomaly": (1.0, None, None, 0.0, 0.0, 0.0),
    # a free linear blend of prior, scaled prior, last anomaly, mean anomaly, last value and a constant
    "linear": (None, None, None, None, None, None),
}


@torch.no_grad()
def _base_moments(
    module: Forecaster, batcher: _Batcher, t_end: np.ndarray, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-equation moments of the linear base per horizon and channel over observed targets.

    Returns ``G`` ``(H_out, C, N, N)`` = sum X X^T, ``r`` ``(H_out, C, N)`` = sum X y,
    ``yy`` ``(H_out, C)`` = sum y^2 and ``n`` ``(H_out, C)``, in float64, normalised units.
    """
    cfg = module.config
    nb = N_BASE
    g = torch.zeros(cfg.horizon, cfg.n_channels, nb, nb, dtype=torch.float64)
    r = torch.zeros(cfg.horizon, cfg.n_channels, nb, dtype=torch.float64)
    yy = torch.zeros(cfg.horizon, cfg.n_channels, dtype=torch.float64)
    n = torch.zeros(cfg.horizon, cfg.n_channels, dtype=torch.float64)
    r0, r1, c0, c1 = cfg.active_box or (0, cfg.grid_shape[0], 0, cfg.grid_shape[1])  # observed targets lie inside
    for s in range(0, len(t_end), batch_size):
        x, prior, y, m = batcher(t_end[s : s + batch_size], device)
        t = module.terms(x, prior)
        t_in = x.shape[1]
        feats = t.base_features[..., r0:r1, c0:c1].double()  # (B, C, N - N_TARGET_BASE, h, w)
        for j in range(cfg.horizon):  # one horizon at a time: memory of one sample's inputs
            per_target = torch.stack([t.prior_n[:, t_in + j], t.prior_level[:, j]], dim=2)  # (B, C, 2, H, W)
            xx = torch.cat([per_target[..., r0:r1, c0:c1].double(), feats], dim=2)  # (B, C, N, h, w)
            mj = m[:, j, :, r0:r1, c0:c1]  # (B, C, h, w)
            yj = torch.where(mj, module.normalise(y[:, j], channel_dim=1)[..., r0:r1, c0:c1], 0.0).double()
            xm = xx * mj[:, :, None].double()  # (B, C, N, h, w), 0 at unobserved targets
            g[j] += torch.einsum("bckhw,bclhw->ckl", xm, xx).cpu()
            r[j] += torch.einsum("bckhw,bchw->ck", xm, yj).cpu()
            yy[j] += (yj**2).sum(dim=(0, 2, 3)).cpu()
            n[j] += mj.sum(dim=(0, 2, 3)).double().cpu()
    return g, r, yy, n


def _solve_base(g: torch.Tensor, r: torch.Tensor, spec: tuple[float | None, ...], default: torch.Tensor, ridge: float):
    """Least-squares coefficients ``(H_out, C, N)`` with the fixed entries of ``spec`` held."""
    coef = default.double().clone()
    free = [i for i, v in enumerate(spec) if v is None]
    fixed = [i for i, v in enumerate(spec) if v is not None]
    for i in fixed:
        coef[..., i] = float(spec[i])  # type: ignore[arg-type]
    for j in range(g.shape[0]):
        for c in range(g.shape[1]):  # tiny (N x N) solves, one per horizon and channel
            if g[j, c].trace() <= 0:
                continue
            gff = g[j, c][free][:, free] + ridge * torch.eye(len(free), dtype=torch.float64)
            rhs = r[j, c][free] - g[j, c][free][:, fixed] @ coef[j, c][fixed]
            coef[j, c, free] = torch.linalg.solve(gff, rhs)
    return coef


def _base_sse(g, r, yy, coef) -> torch.Tensor:
    """Sum of squared errors ``(H_out, C)`` (normalised units) of a linear base, from its normal-equation moments."""
    return (yy - 2 * (coef * r).sum(-1) + torch.einsum("jck,jckl,jcl->jc", coef, g, coef)).clamp_min(0)


def _base_rmse_per_horizon(g, r, yy, n, coef, std: torch.Tensor) -> torch.Tensor:
    """RMSE per horizon ``(H_out,)`` (original units, pooled over channels) of a linear base."""
    sse_raw = (_base_sse(g, r, yy, coef) * std.double() ** 2).sum(dim=1)
    return torch.sqrt(sse_raw / n.sum(dim=1).clamp_min(1))


def _fit_base(
    module: Forecaster,
    batcher: _Batcher,
    train_t: np.ndarray,
    val_t: np.ndarray,
    batch_size: int,
    device,
    weighting: bool = False,
):
    """Fit every :data:`BASE_CANDIDATES` on the training samples, pick the best on validation, refit on both.

    Returns the chosen name and the validation RMSE of every candidate.
    """
    tr = _base_moments(module, batcher, train_t, batch_size, device)
    va = _base_moments(module, batcher, val_t, batch_size, device)
    default = module.base_coef.detach().cpu()
    std = module.std.detach().cpu()
    per_h = {
        name: _base_rmse_per_horizon(*va, _solve_base(tr[0], tr[1], spec, default, ridge=1.0), std)
        for name, spec in BASE_CANDIDATES.items()
    }  # name -> (H_out,) validation RMSE
    scores = {name: float(v.mean()) for name, v in per_h.items()}
    names = list(per_h)
    choice = torch.stack([per_h[k] for k in names]).argmin(dim=0)  # (H_out,) the best candidate per horizon
    g, r = tr[0] + va[0], tr[1] + va[1]
    fits = {k: _solve_base(g, r, BASE_CANDIDATES[k], default, ridge=1.0) for k in names}
    coef = torch.stack([fits[names[int(i)]][j] for j, i in enumerate(choice)])  # (H_out, C, N)
    chosen = [names[int(i)] for i in choice]
    best = ",".join(f"{k}x{chosen.count(k)}" for k in dict.fromkeys(chosen))  # e.g. "linear x1, damped x11"
    if not torch.isfinite(coef).all():
        raise TrainingDiverged(f"the least-squares base {best!r} has NaN/inf coefficients")
    module.set_base(coef.float())
    yy, n = tr[2] + va[2], tr[3] + va[3]
    mse = _base_sse(g, r, yy, coef).sum(dim=1) / n.sum(dim=1).clamp_min(1)  # (H_out,) normalised units
    weights = 1.0 / mse.clamp_min(1e-6).sqrt() if weighting else torch.ones_like(mse)
    weights = torch.where(n.sum(dim=1) > 0, weights / weights[n.sum(dim=1) > 0].mean(), 0.0)
    return best, scores, weights.float()


def horizon_weighted_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor):
    """Masked MSE with each horizon's squared errors weighted by ``weights`` ``(H_out,)``.

    ``pred``/``target``/``mask`` are ``(B, H_out, ...)``. The metric the registry ranks by is
    the *mean over horizons of the RMSE*; its gradient weights horizon ``j``'s squared errors by
    ``1 / RMSE_j``. Training uses ``weights = 1 / RMSE_j`` of the linear base (normalised to mean
    1), so short horizons, whose errors are small, are not drowned by long ones.
    """
    return weighted_masked_mse(pred, target, mask, weights.to(pred.device).view(1, -1, *([1] * (pred.ndim - 2))))


def weighted_masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, w: torch.Tensor):
    """Masked MSE with per-element weights ``w`` (broadcast to ``pred``): sum w e^2 / sum w over observed."""
    m = mask.to(dtype=torch.bool)
    w = w.expand_as(pred)
    diff = torch.where(m, pred - torch.where(m, target, torch.zeros_like(target)), torch.zeros_like(pred))
    den = torch.where(m, w, torch.zeros_like(w)).sum().clamp_min(1e-12)
    return (w * diff.float() ** 2).sum() / den


def _pretrain_head(
    module: Forecaster,
    batcher: _Batcher,
    t_end: np.ndarray,
    steps: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    seed: int,
    weights: torch.Tensor,
) -> float | None:
    """Fit the per-cell head on its skip features alone (hidden state 0) before the network trains.

    The head's skip path sees each cell's own context and target-bin features (what a
    pointwise model such as the gradient-boosting baseline sees). Fitting that part first on
    every observed target of ``t_end``'s samples costs a few 1x1 convolutions per row, far less
    than a step through the recurrent stacks, so the network starts from a good pointwise
    forecast and its steps go to what only it can learn (neighbours, attention, memory).
    Returns the last batch loss (normalised MSE), or None when there is nothing to fit.
    """
    cfg = module.config
    if module.head_mlp is None or steps <= 0 or len(t_end) == 0:
        return None
    r0, r1, c0, c1 = cfg.active_box or (0, cfg.grid_shape[0], 0, cfg.grid_shape[1])
    c = cfg.n_channels
    rows: dict[str, list[torch.Tensor]] = {"skip": [], "base": [], "anom": [], "y": [], "m": [], "w": []}
    with torch.no_grad():
        for s in range(0, len(t_end), 32):
            x, prior, y, m = batcher(t_end[s : s + 32], device)
            t = module.terms(x, prior)
            base = module.base_forecast(t)[..., r0:r1, c0:c1]  # (B, H_out, C, h, w)
            crop = Terms(*(v[..., r0:r1, c0:c1] for v in t))
            skip = module.skip_features(crop, base, module.target_calendar(x[:, :, 2 * c :, 0, 0].float()))
            mm = m[..., r0:r1, c0:c1]  # (B, H_out, C, h, w)
            keep = mm.any(dim=2).flatten()  # (B * H_out * h * w,) rows with an observed target

            def rows_of(v: torch.Tensor, keep: torch.Tensor = keep) -> torch.Tensor:  # (B, H_out, K, h, w) -> (rows, K)
                return v.permute(0, 1, 3, 4, 2).reshape(-1, v.shape[2])[keep]

            anom = crop.base_features[:, None, :, 0].expand(-1, base.shape[1], -1, -1, -1)  # (B, H_out, C, h, w)
            rows["skip"].append(rows_of(skip))
            rows["base"].append(rows_of(base))
            rows["anom"].append(rows_of(anom))
            rows["y"].append(rows_of(module.normalise(y[..., r0:r1, c0:c1])))
            rows["m"].append(rows_of(mm))
            hw = weights.to(device).view(1, -1, 1, 1, 1).expand(mm.shape[0], -1, 1, *mm.shape[-2:])
            rows["w"].append(rows_of(hw))  # (rows, 1) the horizon's weight
    data = {k: torch.cat(v) for k, v in rows.items()}
    n = len(data["y"])
    if n == 0:
        return None
    params = [*module.head_mlp.parameters(), *module.head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    hid = cfg.hidden_dims[-1]
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen).to(device)
        skip = data["skip"][idx][:, :, None, None]  # (R, S, 1, 1)
        out = module.head_out(skip.new_zeros(len(idx), hid, 1, 1), skip)[:, :, 0, 0]  # (R, 2C)
        pred = data["base"][idx] + out[:, c:] * data["anom"][idx] + out[:, :c]  # (R, C) normalised
        loss = weighted_masked_mse(pred, data["y"][idx], data["m"][idx], data["w"][idx])  # rows' horizon weights
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"head pre-training loss is {loss.item()}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


@torch.no_grad()
def _val_loss(
    module: Forecaster,
    batcher: _Batcher,
    t_end: np.ndarray,
    batch_size: int,
    device: torch.device,
    dist: ddp.DistContext | None = None,
    weights: torch.Tensor | None = None,
) -> float:
    """Masked MSE (normalised units, horizons weighted by ``weights``) over the validation samples ``t_end``.

    Data-parallel: each rank scores ``t_end[rank::world]`` and the squared errors and counts
    are summed over ranks, so every rank returns the same loss.
    """
    dist = dist or ddp.DistContext()
    if dist.active:
        t_end = t_end[dist.rank :: dist.world]
    sq, n = 0.0, 0.0
    for s in range(0, len(t_end), batch_size):
        x, prior, y, m = batcher(t_end[s : s + batch_size], device)
        with _autocast(device):
            pred = module(x, prior)
        w = torch.ones(m.shape[1]) if weights is None else weights
        k = float((w.to(m.device).view(1, -1, 1, 1, 1) * m).sum())
        sq += float(horizon_weighted_mse(module.normalise(pred.float()), module.normalise(y), m, w)) * k
        n += k
    sq, n_all = ddp.sum_ranks(dist, [sq, float(n)], device)
    loss = sq / max(n_all, 1.0)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"validation loss is {loss}")
    return loss


def train_forecaster(
    grid: GridTensor,
    *,
    context_steps: int,
    horizon_steps: int,
    holdout_days: float,
    train_days: float,
    budget_s: float,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    model_overrides: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    warm_start: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train the forecaster on ``grid`` and score it and the baselines on the holdout.

    Parameters
    ----------
    grid : GridTensor
        The city's observations; its last ``holdout_days`` are the holdout.
    context_steps, horizon_steps : int
        Bins of context and bins predicted.
    holdout_days, train_days : float
        Holdout length and training-window length (days).
    budget_s : float
        Wall-clock cap of the training loop (the baselines and the holdout scoring come on top).
    seed : int
        Seeds Python's, numpy's and torch's generators (sample order, initial weights).
    device : str or torch.device, optional
        ``"cuda"`` (bf16 autocast, channels_last) when available, else ``"cpu"``. Under
        ``torchrun`` on CUDA each rank uses ``cuda:LOCAL_RANK``.
    progress : bool
        Show a tqdm progress bar (rank 0 only when data-parallel).
    model_overrides : dict, optional
        Overrides of the ``[model]`` or ``[training]`` keys of ``models/convlstm_attention.toml``.
    checkpoint_dir : str or Path, optional
        Write ``checkpoint.pt`` there after every validation and when the loop stops (atomic
        replace; rank 0 only). Defaults to the training key ``checkpoint_dir`` ("" = off).
    resume : bool
        Continue from ``checkpoint_dir``'s checkpoint when there is one (else start afresh). The
        checkpoint must come from the same configuration, seed and data split.
    warm_start : torch.nn.Module or dict, optional
        A model (or state dict) whose parameters with the same name and shape initialise this
        one (see :func:`traffic.forecast.checkpoint.transfer_parameters`); statistics buffers
        are never copied. ``extra["warm_start"]`` = ``{"copied": [...], "skipped": [...]}``.

    Returns
    -------
    TrainResult
        With ``metrics`` keys ``"model"`` and one per baseline. When data-parallel, ranks other
        than 0 return the same trained module and learning curve with empty ``metrics`` (the
        holdout is scored on rank 0 only); ``extra["rank"]`` / ``extra["world_size"]`` say which.

    Raises
    ------
    TrainingDiverged
        If the loss, gradients, validation loss, parameters or holdout forecasts become NaN/inf;
        raised before anything is returned or checkpointed.
    ValueError
        On an unusable split, an unknown override, ``resume`` without ``checkpoint_dir``, or a
        checkpoint from another configuration.
    """
    t_start = time.perf_counter()
    spec = load_model_spec()
    model_kw, tr = _split_overrides(spec, model_overrides)
    if checkpoint_dir is None and str(tr.get("checkpoint_dir") or ""):
        checkpoint_dir = Path(str(tr["checkpoint_dir"])).expanduser()
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir (argument or training key) to resume from")
    dist, dev = ddp.setup(_resolve_device(device))
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(_cpu_threads(int(tr["cpu_threads"]), threads))
    try:
        return _train(
            grid,
            context_steps,
            horizon_steps,
            holdout_days,
            train_days,
            budget_s,
            seed,
            dev,
            progress,
            model_kw,
            tr,
            t_start,
            dist=dist,
            ckpt=checkpoint_path(checkpoint_dir) if checkpoint_dir is not None else None,
            resume=resume,
            warm_start=warm_start,
        )
    finally:
        torch.set_num_threads(threads)
        ddp.teardown(dist)


def _check_finite_observations(grid: GridTensor) -> None:
    """Refuse NaN/inf at observed cells: they would turn the statistics, the loss and every forecast into NaN."""
    bad = grid.mask & ~np.isfinite(grid.values)
    if bad.any():
        t, c, r, q = (int(v) for v in np.argwhere(bad)[0])
        raise TrainingDiverged(
            f"grid has {int(bad.sum())} observed values that are NaN/inf, the first {grid.values[t, c, r, q]} at "
            f"bin {t} ({grid.times[t]}), channel {grid.channels[c]!r}, cell (row {r}, col {q}); "
            "observed values must be finite (mark missing ones False in the mask)"
        )


def _seed_everything(seed: int) -> None:
    """Seed Python's, numpy's (global) and torch's (every device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: Training keys that may change between a checkpoint and its resumption (the rest must match).
RESUME_MAY_CHANGE = frozenset({"max_steps", "max_epochs", "patience", "checkpoint_dir", "cpu_threads", "compile"})


def _fingerprint(cfg: ForecasterConfig, tr: dict[str, Any], seed: int, split: Split, world: int) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: model config, training keys, seed, split, world size."""
    keep = {k: v for k, v in tr.items() if k not in RESUME_MAY_CHANGE}
    raw = {
        "config": cfg.to_dict(),
        "training": keep,
        "seed": seed,
        "split": [split.fit_start, split.val_start, split.fit_end, len(split.train), len(split.val)],
        "world_size": world,
    }
    return json.loads(json.dumps(raw, default=str))  # tuples -> lists: comparable after a round trip


def _differences(ours: Any, theirs: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts differ (``prefix`` itself when they are not both dicts)."""
    if not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return [] if ours == theirs else [prefix or "<root>"]
    out: list[str] = []
    for k in sorted(set(ours) | set(theirs)):
        out += _differences(ours.get(k), theirs.get(k), f"{prefix}.{k}" if prefix else str(k))
    return out


def _resume_from(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None if there is none), refused when its fingerprint differs."""
    if not path.exists():
        return None
    ck = load_checkpoint(path)
    diff = _differences(fingerprint, ck.get("fingerprint", {}))
    if diff:
        raise ValueError(
            f"{path}: checkpoint of another run, cannot resume; differs in {diff} "
            f"(only {sorted(RESUME_MAY_CHANGE)} may change between a checkpoint and its resumption)"
        )
    return ck


def _train(
    grid,
    context_steps,
    horizon_steps,
    holdout_days,
    train_days,
    budget_s,
    seed,
    dev,
    progress,
    model_kw,
    tr,
    t_start,
    *,
    dist: ddp.DistContext | None = None,
    ckpt: Path | None = None,
    resume: bool = False,
    warm_start: torch.nn.Module | Mapping[str, torch.Tensor] | None = None,
):
    """The body of :func:`train_forecaster` (arguments resolved)."""
    dist = dist or ddp.DistContext()
    _seed_everything(seed)
    rng = np.random.default_rng(seed)
    _check_finite_observations(grid)

    split = make_split(
        grid,
        context_steps=context_steps,
        horizon_steps=horizon_steps,
        holdout_days=holdout_days,
        train_days=train_days,
        val_fraction=float(tr["val_fraction"]),
    )
    bm = bin_minutes(grid.times)
    win = grid.slice_time(split.fit_start, split.fit_end)
    period = seasonal_period(split.fit_end - split.fit_start, bm, int(tr["min_weeks_for_weekly_profile"]))
    profile = fit_seasonal_profile(win.values, win.mask, win.times, bm, period, win.holiday)
    mean, std = _masked_channel_stats(win.values, win.mask)

    cfg = ForecasterConfig(
        active_box=active_box(
            grid.mask[max(0, split.fit_start - context_steps) : split.fit_end], int(tr["box_margin"])
        ),
        channels=grid.channels,
        grid_shape=grid.shape[2:],
        context_steps=context_steps,
        horizon=horizon_steps,
        bin_minutes=bm,
        profile_period=period,
        **model_kw,
    )
    module = Forecaster(cfg)
    module.set_statistics(mean, std, profile.profile)
    # warm start: parameters only; the statistics buffers above belong to this grid
    warm = transfer_parameters(module, warm_start) if warm_start is not None else None
    # CUDA: NHWC convolution weights (tensor cores); the 5-D inputs are reshaped to (B*T, F, h, w)
    # maps inside the module, whose convolutions then follow the weights' layout
    module.to(dev)
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stubs lack it)
    batcher = _Batcher(
        grid,
        context_steps,
        horizon_steps,
        profile,
        time_positions(grid.times, bm, period, grid.holiday),
        split.fit_start,
        split.fit_end,
    )
    bs, eval_bs = int(tr["batch_size"]), int(tr["eval_batch_size"])
    opt = torch.optim.AdamW(module.parameters(), lr=float(tr["lr"]), weight_decay=float(tr["weight_decay"]))
    steps_per_epoch = math.ceil(math.ceil(len(split.train) / dist.world) / bs)  # per rank
    eval_every = max(1, min(steps_per_epoch, int(tr["eval_every_steps"])))
    patience = int(tr["patience"])
    max_epochs = int(tr["max_epochs"])
    max_steps = int(tr["max_steps"])  # 0 = no cap

    t_loop = time.perf_counter()
    val_t_end = _spread(split.val, int(tr["max_val_samples"]))
    base_name, base_scores, horizon_w = _fit_base(
        module,
        batcher,
        _spread(split.train, int(tr["max_base_fit_samples"])),
        val_t_end,
        eval_bs,
        dev,
        weighting=bool(tr["horizon_weighting"]),
    )
    fingerprint = _fingerprint(cfg, tr, seed, split, dist.world)
    ck = _resume_from(ckpt, fingerprint) if resume and ckpt is not None else None
    perm: np.ndarray | None = None  # the current epoch's sample order (the same on every rank)
    head_loss = None
    if ck is None:
        module.eval()
        base_val = _val_loss(module, batcher, val_t_end, eval_bs, dev, dist, horizon_w)  # the linear base alone
        before = copy.deepcopy(module.state_dict())
        head_loss = _pretrain_head(
            module,
            batcher,
            _spread(split.train, int(tr["max_base_fit_samples"])),
            int(tr["head_pretrain_steps"]),
            float(tr["lr"]),
            4096,
            dev,
            seed,
            horizon_w,
        )
        module.eval()
        t_val = time.perf_counter()
        best_val = _val_loss(module, batcher, val_t_end, eval_bs, dev, dist, horizon_w)
        if head_loss is not None and not best_val < base_val:  # the fitted head did not help on validation
            module.load_state_dict(before)
            best_val, head_loss = base_val, None
        eval_s = time.perf_counter() - t_val  # one validation pass (s)
        best_state = copy.deepcopy(module.state_dict())
        curve = [{"epoch": 0.0, "step": 0, "train_loss": float("nan"), "val_loss": best_val, "elapsed_s": 0.0}]
        step, bad_evals, run_loss, run_n, epoch, offset = 0, 0, 0.0, 0, 0, 0
        step_s = 0.0  # running estimate of one optimisation step (s)
        elapsed0 = 0.0  # loop time of the run before this invocation (resume)
    else:
        module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        restore_rng_states(rng, ck["rng"])
        best_state, best_val, bad_evals = ck["best_state"], float(ck["best_val"]), int(ck["bad_evals"])
        curve, run_loss, run_n = list(ck["curve"]), float(ck["run_loss"]), int(ck["run_n"])
        step, epoch, offset = int(ck["step"]), int(ck["epoch"]), int(ck["offset"])
        perm = ck["perm"].numpy() if ck["perm"] is not None else None
        eval_s, step_s, elapsed0 = float(ck["eval_s"]), float(ck["step_s"]), float(ck["elapsed_s"])
    resumed_from = step if ck is not None else None
    del ck

    # the training forward: DDP around the module when data-parallel, torch.compile on request
    fwd: Any = ddp.wrap(module, dist, dev)
    if bool(tr["compile"]):
        fwd = torch.compile(fwd)

    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs * steps_per_epoch, initial=step, desc=f"train {grid.shape}", unit="step")

    saved_at = -1  # step of the last checkpoint written

    def save_state() -> None:
        """Checkpoint the loop (rank 0); never a diverged state: the guard has run on the loss and gradients."""
        nonlocal saved_at
        if ckpt is None or not dist.is_main or saved_at == step:
            return
        _check_finite_module(module, f"at step {step}")
        save_checkpoint(
            ckpt,
            {
                "fingerprint": fingerprint,
                "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                "optimizer": opt.state_dict(),
                "step": step,
                "epoch": epoch,
                "offset": offset,
                "perm": torch.from_numpy(np.asarray(perm, dtype=np.int64)) if perm is not None else None,
                "rng": rng_states(rng),
                "best_state": {k: v.detach().cpu() for k, v in best_state.items()},
                "best_val": best_val,
                "bad_evals": bad_evals,
                "curve": curve,
                "run_loss": run_loss,
                "run_n": run_n,
                "eval_s": eval_s,
                "step_s": step_s,
                "elapsed_s": elapsed0 + time.perf_counter() - t_loop,
            },
        )
        saved_at = step

    stopped = "early_stopping" if bad_evals >= patience else "max_epochs"
    done = bad_evals >= patience  # a resumed run that had already stopped early
    while not done and epoch < max_epochs:
        if perm is None:  # a new epoch: the same permutation on every rank
            perm, offset = rng.permutation(split.train), 0
        order = ddp.shard(perm, dist)  # this rank's share
        module.train()
        while offset < len(order):
            if max_steps and step >= max_steps:
                stopped, done = "max_steps", True
                break
            elapsed = time.perf_counter() - t_loop
            late = elapsed + step_s + (eval_s if (step + 1) % eval_every == 0 else 0.0) > budget_s
            if ddp.any_rank(dist, late, dev):
                stopped, done = "budget", True
                break
            t0 = time.perf_counter()
            x, prior, y, m = batcher(order[offset : offset + bs], dev)
            with _autocast(dev):
                pred = fwd(x, prior)
            loss = horizon_weighted_mse(module.normalise(pred.float()), module.normalise(y), m, horizon_w)
            if ddp.any_rank(dist, not bool(torch.isfinite(loss)), dev):
                raise TrainingDiverged(f"training loss is {loss.item()} (or NaN/inf on another rank) at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP: gradients averaged over ranks here, so the guard below agrees on every rank
            gnorm = torch.nn.utils.clip_grad_norm_(module.parameters(), float(tr["grad_clip"]))
            if not torch.isfinite(gnorm):
                raise TrainingDiverged(f"gradient norm is {gnorm.item()} at step {step} (epoch {epoch})")
            opt.step()
            step += 1
            offset += bs
            run_loss += float(loss.detach())
            run_n += 1
            dt = time.perf_counter() - t0
            step_s = dt if step == 1 else 0.8 * step_s + 0.2 * dt
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0:
                t1 = time.perf_counter()
                module.eval()
                val = _val_loss(module, batcher, val_t_end, eval_bs, dev, dist, horizon_w)
                module.train()
                eval_s = time.perf_counter() - t1
                curve.append(
                    {
                        "epoch": step / steps_per_epoch,
                        "step": step,
                        "train_loss": run_loss / max(run_n, 1),
                        "val_loss": val,
                        "elapsed_s": elapsed0 + time.perf_counter() - t_loop,
                    }
                )
                run_loss, run_n = 0.0, 0
                if bar is not None:
                    bar.set_postfix(train=f"{curve[-1]['train_loss']:.4f}", val=f"{val:.4f}", best=f"{best_val:.4f}")
                if val < best_val:
                    best_val, bad_evals = val, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    bad_evals += 1
                    if bad_evals >= patience:
                        stopped, done = "early_stopping", True
                save_state()
                if done:
                    break
        if done:
            break
        epoch, perm = epoch + 1, None
    save_state()  # where the loop stopped (budget, max_steps, ...): a later run can go on from here
    if bar is not None:
        bar.close()
    train_seconds = time.perf_counter() - t_loop

    module.load_state_dict(best_state)
    module.eval()
    _check_finite_module(module, "after training")
    module.to("cpu")
    if dev.type == "cuda":
        module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

    metrics: dict[str, HorizonMetrics] = {}
    intervals = None
    if dist.is_main:  # data-parallel: the holdout is scored once, on rank 0
        # 80 % intervals from the residuals of training and validation samples (never the holdout):
        # the validation days alone can be too few to hold every kind of day (traffic.forecast.intervals)
        n_cal = 4 * int(tr["max_val_samples"])
        val_ho = np.concatenate([_spread(split.train, n_cal), _spread(split.val, n_cal)])
        intervals = fit_intervals(
            (
                (_predict(module, grid, te, context_steps, horizon_steps), grid.values[ti], grid.mask[ti])
                for te in np.array_split(val_ho, max(1, math.ceil(len(val_ho) / eval_bs)))
                for ti in (target_index(te, horizon_steps),)
            ),
            cell_scale(win.values, win.mask),
        )
        metrics["model"] = evaluate_module(
            module, grid, holdout_days=holdout_days, batch_size=eval_bs, intervals=intervals
        )
        metrics.update(
            evaluate_baselines(
                grid,
                fit_start=split.fit_start,
                fit_end=split.fit_end,
                train_t_end=np.concatenate([split.train, split.val]),
                holdout_t_end=split.holdout,
                context_steps=context_steps,
                horizon=horizon_steps,
                ridge_lags=int(tr["ridge_lags"]),
                seed=seed,
                batch_size=eval_bs,
            )
        )

    ho = split.holdout
    obs_per_bin = grid.mask.reshape(grid.shape[0], -1).sum(axis=1)
    n_obs = obs_per_bin[target_index(ho, horizon_steps)].sum(axis=1)
    ex = int(ho[int(np.argmax(n_obs))])
    ex_x = build_inputs(grid, np.array([ex]), context_steps, horizon_steps)
    with torch.no_grad():
        ex_pred = module(torch.from_numpy(ex_x))[0].numpy()
    tidx = target_index(np.array([ex]), horizon_steps)[0]
    holdout = Holdout(
        start=grid.times[ho[0] + 1].isoformat(),
        end=grid.times[ho[-1] + horizon_steps].isoformat(),
        n_samples=len(ho),
        digest=_holdout_digest(grid, split.fit_end, grid.shape[0]),
    )
    first_bin = int(split.train[0]) - context_steps + 1
    last_bin = int(split.val[-1]) + horizon_steps
    n_params = sum(p.numel() for p in module.parameters())
    params = _flat_params(
        cfg,
        tr,
        {
            "train_days": train_days,
            "holdout_days": holdout_days,
            "budget_s": budget_s,
            "seed": seed,
            "n_parameters": n_params,
            "base": base_name,
            "profile_kind": "time_of_week" if period * bm == 7 * MINUTES_PER_DAY else "time_of_day",
            "world_size": dist.world,
            "warm_start_copied": len(warm["copied"]) if warm is not None else None,
        },
    )
    return TrainResult(
        module=module,
        metrics=metrics,
        holdout=holdout,
        learning_curve=curve,
        params=params,
        input_example=ex_x.astype(np.float32),
        example_forecast=ex_pred.astype(np.float32),
        example_target=np.where(grid.mask[tidx], grid.values[tidx], np.nan).astype(np.float32),
        example_mask=grid.mask[tidx].copy(),
        channels=tuple(grid.channels),
        train_window=(grid.times[first_bin].isoformat(), grid.times[last_bin].isoformat()),
        train_seconds=train_seconds,
        device=str(dev),
        stopped_reason=stopped,
        intervals=intervals,
        extra={
            "modality_weights": module.modality_weights(),
            "base": base_name,
            "base_val_rmse": base_scores,
            "head_pretrain_loss": head_loss,
            "n_train_samples": len(split.train),
            "n_val_samples": len(split.val),
            "best_val_loss": best_val,
            "steps": step,
            "resumed_from_step": resumed_from,
            "checkpoint": str(ckpt) if ckpt is not None else None,
            "warm_start": warm,
            "rank": dist.rank,
            "world_size": dist.world,
            "cpu_threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "total_seconds": time.perf_counter() - t_start,
        },
    )


def _module_device(module: torch.nn.Module) -> torch.device:
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
        h_out = _predict(module, grid, np.array([t_in - 1]), t_in, horizon_steps or 1).shape[1]
    if horizon_steps is not None and horizon_steps != h_out:
        raise ValueError(f"horizon_steps={horizon_steps} but the module predicts {h_out} bins")
    return h_out


@torch.no_grad()
def _predict(module: torch.nn.Module, grid: GridTensor, t_end: np.ndarray, t_in: int, horizon: int) -> np.ndarray:
    dev = _module_device(module)
    x = torch.from_numpy(build_inputs(grid, t_end, t_in, horizon)).to(dev)
    with _autocast(dev):
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
        pred = _predict(module, grid, te, t_in, h_out)
        acc.update(pred, grid.values[tidx], grid.mask[tidx])
        if intervals is not None:
            cov.update(*intervals.bounds(pred), grid.values[tidx], grid.mask[tidx])
    out = acc.result()
    if intervals is not None:
        out.coverage = cov.result()
    return out


def forecast(
    module: torch.nn.Module, grid: GridTensor, issued_index: int, *, context_steps: int | None = None
) -> np.ndarray:
    """Forecast ``(H_out, C, H, W)`` in original units for the bins after bin ``issued_index`` of ``grid``.

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
    return _predict(module, grid, np.array([i]), t_in, 1)[0]
