"""The linear base of the forecaster (:class:`traffic.model.Forecaster`'s ``base_coef``), fitted by least squares.

``base_j = sum_k coef[j, c, k] * feature_k`` over :data:`traffic.model.BASE_FEATURES`, per
horizon ``j`` and channel ``c``. Every candidate of :data:`BASE_CANDIDATES` (which features are
free, which fixed) is fitted on the training samples' normal equations, the best candidate
per horizon is chosen on the validation samples and refitted on both. The network learns what
the base leaves, jointly with its per-cell head.
"""

from __future__ import annotations

import numpy as np
import torch

from traffic.forecast.batching import Batcher
from traffic.forecast.result import TrainingDiverged
from traffic.model import N_BASE, Forecaster

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
def base_moments(
    module: Forecaster, batcher: Batcher, t_end: np.ndarray, batch_size: int
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
        x, prior, y, m = batcher(t_end[s : s + batch_size])
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


def solve_base(g: torch.Tensor, r: torch.Tensor, spec: tuple[float | None, ...], default: torch.Tensor, ridge: float):
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


def base_sse(g, r, yy, coef) -> torch.Tensor:
    """Sum of squared errors ``(H_out, C)`` (normalised units) of a linear base, from its normal-equation moments."""
    return (yy - 2 * (coef * r).sum(-1) + torch.einsum("jck,jckl,jcl->jc", coef, g, coef)).clamp_min(0)


def base_rmse_per_horizon(g, r, yy, n, coef, std: torch.Tensor) -> torch.Tensor:
    """RMSE per horizon ``(H_out,)`` (original units, pooled over channels) of a linear base."""
    sse_raw = (base_sse(g, r, yy, coef) * std.double() ** 2).sum(dim=1)
    return torch.sqrt(sse_raw / n.sum(dim=1).clamp_min(1))


def fit_base(
    module: Forecaster,
    batcher: Batcher,
    train_t: np.ndarray,
    val_t: np.ndarray,
    batch_size: int,
    weighting: bool = False,
) -> tuple[str, dict[str, float], torch.Tensor]:
    """Fit every :data:`BASE_CANDIDATES` on the training samples, pick the best on validation, refit on both.

    Returns the chosen candidates (per horizon, as ``"name x count,..."``), the validation RMSE
    of every candidate and the horizon weights of the training loss (``1 / RMSE_j`` of the
    chosen base, mean 1; all 1 without ``weighting``).
    """
    tr = base_moments(module, batcher, train_t, batch_size)
    va = base_moments(module, batcher, val_t, batch_size)
    default = module.base_coef.detach().cpu()
    std = module.std.detach().cpu()
    per_h = {
        name: base_rmse_per_horizon(*va, solve_base(tr[0], tr[1], spec, default, ridge=1.0), std)
        for name, spec in BASE_CANDIDATES.items()
    }  # name -> (H_out,) validation RMSE
    scores = {name: float(v.mean()) for name, v in per_h.items()}
    names = list(per_h)
    choice = torch.stack([per_h[k] for k in names]).argmin(dim=0)  # (H_out,) the best candidate per horizon
    g, r = tr[0] + va[0], tr[1] + va[1]
    fits = {k: solve_base(g, r, BASE_CANDIDATES[k], default, ridge=1.0) for k in names}
    coef = torch.stack([fits[names[int(i)]][j] for j, i in enumerate(choice)])  # (H_out, C, N)
    chosen = [names[int(i)] for i in choice]
    best = ",".join(f"{k}x{chosen.count(k)}" for k in dict.fromkeys(chosen))  # e.g. "linear x1, damped x11"
    if not torch.isfinite(coef).all():
        raise TrainingDiverged(f"the least-squares base {best!r} has NaN/inf coefficients")
    module.set_base(coef.float())
    yy, n = tr[2] + va[2], tr[3] + va[3]
    mse = base_sse(g, r, yy, coef).sum(dim=1) / n.sum(dim=1).clamp_min(1)  # (H_out,) normalised units
    weights = 1.0 / mse.clamp_min(1e-6).sqrt() if weighting else torch.ones_like(mse)
    weights = torch.where(n.sum(dim=1) > 0, weights / weights[n.sum(dim=1) > 0].mean(), 0.0)
    return best, scores, weights.float()
