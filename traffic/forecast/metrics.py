"""Masked metrics (evaluation, original units), the skill percentage, metric tables per horizon group, and the masked training loss.

Missing target values never count: a cell/bin/channel that was not observed contributes
neither error nor weight. Arrays are laid out ``(N, H_out, C, H, W)`` and metrics are
reported per horizon (axis 1), pooled over samples, channels and cells:

``mae``
    mean of ``|pred - y|`` over the observed targets;
``rmse``
    square root of the mean of ``(pred - y)^2`` over the observed targets;
``mape``
    ``100 * mean(|pred - y| / |y|)`` in percent, over the observed targets with
    ``|y| >= MAPE_MIN_TARGET`` only.

MAPE's zero-denominator rule
    A percentage error is undefined at ``y = 0`` and explodes near it: one vehicle too many
    at a cell that counted one is +100 %. Counts of 0 vehicles are common (about 29 % of the
    observed Berlin Telraam car counts, more at night and for bikes and pedestrians), so MAPE
    counts only observed targets with ``|y| >= MAPE_MIN_TARGET`` (10, in the channel's
    original unit: vehicles per bin, km/h), the convention of the crowd-flow literature
    (DMVST-Net, STDN: "we filter the samples with value less than 10"). ``n_mape`` reports how
    many targets passed the rule next to ``n`` (all observed targets): about half of Berlin's
    observed counts and all but a handful of the METR-LA speeds (7.6 to 110 km/h as shipped).
    A horizon where no target passes gets ``mape = NaN`` with ``n_mape = 0``. The threshold
    is a parameter (``mape_min``) for data in other units. MAE and RMSE count every observed
    target, zeros included.

Skill and relative change
    :func:`skill` is ``1 - score / reference`` (0.12 = the model's error is 12 % below the
    reference's); :func:`relative_change` is its opposite, ``score / reference - 1``
    (negative = lower error). Every skill percentage of the project (the evaluation report,
    the model card, the logged ``rmse_skill_vs_best_baseline``, the bench) is one of these two.

Metric tables
    :func:`group_table` is the one computation behind every table of metrics per horizon
    group (the ``traffic grid evaluate`` text tables, :mod:`traffic.forecast.tables`, and the
    model card's tables): per group of hours ahead, each column's mean over the group's
    horizons, and the mean over all horizons as the last row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from traffic.forecast.result import MAPE_MIN_TARGET, HorizonMetrics

if TYPE_CHECKING:  # the losses import torch when called: the metrics, skill and tables need numpy only
    import torch

__all__ = [
    "MAPE_MIN_TARGET",
    "GroupRow",
    "MetricAccumulator",
    "group_table",
    "horizon_weighted_mse",
    "masked_metrics",
    "masked_mse",
    "ObservedPoints",
    "observed_points",
    "relative_change",
    "skill",
    "weighted_masked_mse",
]


class ObservedPoints(NamedTuple):
    """The observed entries of a ``(B, H_out, C, H, W)`` batch: flat indices and each one's axes, ``(N,)`` each."""

    idx: np.ndarray
    sample: np.ndarray
    step: np.ndarray
    channel: np.ndarray
    cell: np.ndarray  # flat (row, col)


def observed_points(mask: np.ndarray) -> ObservedPoints:
    """The observed entries of a ``(B, H_out, C, H, W)`` mask, in the order of a boolean index.

    What the streaming scores read: a city grid is mostly cells without a sensor, so scoring the
    observed entries alone (a few per cent of the batch) instead of the dense batch saves most of
    the work and the memory churn of float64 temporaries.
    """
    m = np.asarray(mask, dtype=bool)
    _, h_out, n_c = m.shape[:3]
    n_cells = int(np.prod(m.shape[3:]))
    idx = np.flatnonzero(m)
    rest, cell = np.divmod(idx, n_cells)
    rest, channel = np.divmod(rest, n_c)
    sample, step = np.divmod(rest, h_out)
    return ObservedPoints(idx, sample, step, channel, cell)


class MetricAccumulator:
    """Streaming masked MAE/RMSE/MAPE per horizon, for holdouts scored batch by batch.

    Parameters
    ----------
    horizon : int
        Number of forecast horizons ``H_out``.
    mape_min : float
        Observed targets with ``|y| < mape_min`` do not count in MAPE (module docstring).
    """

    def __init__(self, horizon: int, mape_min: float = MAPE_MIN_TARGET) -> None:
        if not (mape_min > 0 and np.isfinite(mape_min)):
            raise ValueError(
                f"mape_min must be a finite number > 0 (a zero denominator has no percentage), got {mape_min}"
            )
        self.horizon = horizon
        self.mape_min = float(mape_min)
        self.abs_sum = np.zeros(horizon, dtype=np.float64)
        self.sq_sum = np.zeros(horizon, dtype=np.float64)
        self.ape_sum = np.zeros(horizon, dtype=np.float64)
        self.n = np.zeros(horizon, dtype=np.int64)
        self.n_mape = np.zeros(horizon, dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
        """Add a batch ``(B, H_out, C, H, W)``; ``target`` may hold NaN where ``mask`` is False."""
        if not (pred.shape == target.shape == mask.shape):
            raise ValueError(f"pred {pred.shape}, target {target.shape} and mask {mask.shape} must have the same shape")
        if pred.ndim != 5 or pred.shape[1] != self.horizon:
            raise ValueError(f"expected (N, {self.horizon}, C, H, W) arrays, got {pred.shape}")
        # only the observed targets (a city grid is mostly empty cells): flat indices, their horizon
        pts = observed_points(mask)
        idx, h = pts.idx, pts.step
        y = np.asarray(target).reshape(-1)[idx].astype(np.float64)
        err = np.asarray(pred).reshape(-1)[idx].astype(np.float64) - y
        if not np.isfinite(err).all():
            bad = int((~np.isfinite(err)).sum())
            raise ValueError(f"{bad} predictions at observed targets are NaN or infinite")
        big = np.abs(y) >= self.mape_min  # the MAPE rule: |y| >= mape_min, never 0
        ape = np.where(big, np.abs(err) / np.where(big, np.abs(y), 1.0), 0.0)
        hz = self.horizon
        self.abs_sum += np.bincount(h, weights=np.abs(err), minlength=hz)
        self.sq_sum += np.bincount(h, weights=err**2, minlength=hz)
        self.ape_sum += np.bincount(h, weights=ape, minlength=hz)
        self.n += np.bincount(h, minlength=hz)
        self.n_mape += np.bincount(h[big], minlength=hz)

    def result(self) -> HorizonMetrics:
        """Metrics so far; a horizon without any observed target (MAPE: none passing its rule) gets NaN."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mae = np.where(self.n > 0, self.abs_sum / self.n, np.nan)
            rmse = np.where(self.n > 0, np.sqrt(self.sq_sum / self.n), np.nan)
            mape = np.where(self.n_mape > 0, 100.0 * self.ape_sum / self.n_mape, np.nan)
        return HorizonMetrics(
            mae=[float(v) for v in mae],
            rmse=[float(v) for v in rmse],
            n=[int(v) for v in self.n],
            mape=[float(v) for v in mape],
            n_mape=[int(v) for v in self.n_mape],
        )


def masked_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, *, mape_min: float = MAPE_MIN_TARGET
) -> HorizonMetrics:
    """Masked MAE, RMSE and MAPE per horizon.

    Parameters
    ----------
    pred, target : np.ndarray
        ``(N, H_out, C, H, W)`` in original units; ``target`` may be NaN where ``mask`` is False.
    mask : np.ndarray
        ``(N, H_out, C, H, W)`` bool, True where the target was observed.
    mape_min : float
        MAPE counts only observed targets with ``|target| >= mape_min`` (module docstring).

    Returns
    -------
    HorizonMetrics
        ``mae``, ``rmse`` and ``n`` (observed targets) per horizon, NaN for a horizon with
        ``n == 0``; ``mape`` (percent) and ``n_mape`` (targets passing the MAPE rule), NaN for
        a horizon with ``n_mape == 0``.

    Raises
    ------
    ValueError
        On mismatched shapes or a non-finite prediction at an observed target.
    """
    acc = MetricAccumulator(np.shape(pred)[1] if np.ndim(pred) == 5 else -1, mape_min=mape_min)
    acc.update(np.asarray(pred), np.asarray(target), np.asarray(mask))
    return acc.result()


def _ratio(score: Any, reference: Any) -> Any:
    """``score / reference``, NaN where ``reference`` is 0 or either value is not finite."""
    a = np.asarray(score, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, a / np.where(ok, b, 1.0), np.nan)


def _scalar(v: np.ndarray) -> Any:
    return float(v) if v.ndim == 0 else v


def skill(score: Any, reference: Any) -> Any:
    """Skill of ``score`` against ``reference`` (errors, lower is better): ``1 - score / reference``.

    Parameters
    ----------
    score, reference : float or array-like
        Errors of the same metric (e.g. mean RMSE of the model and of the best baseline);
        arrays broadcast (per horizon).

    Returns
    -------
    float or np.ndarray
        A fraction (multiply by 100 for percent; 0.1 = 10 % lower error than the reference);
        NaN where ``reference`` is 0 or either value is not finite. A float for scalar input.
    """
    return _scalar(1.0 - _ratio(score, reference))


def relative_change(score: Any, reference: Any) -> Any:
    """``score / reference - 1``: the change of an error against a reference, the opposite of :func:`skill`.

    Negative = ``score`` is lower (better); NaN where :func:`skill` is NaN.
    """
    return _scalar(_ratio(score, reference) - 1.0)


@dataclass(frozen=True)
class GroupRow:
    """One row of a :func:`group_table`: a group of hours ahead (or ``all``) and each column's value.

    Attributes
    ----------
    label : str
        ``"1 h"``, ``"2–3 h"``, ... (:func:`traffic.forecast.horizons.horizon_groups`) or ``"all"``.
    steps : tuple of int
        First and last horizon step of the row, 1-based, both included.
    values : dict of str to float
        Per column: the mean of its finite per-horizon values in the group (NaN when none); in
        the ``all`` row the column's ``<metric>_mean``, the figure promotion compares.
    n : int
        Scored targets of the first column in the row (``n``; ``n_mape`` for ``mape``).
    """

    label: str
    steps: tuple[int, int]
    values: dict[str, float]
    n: int


def group_table(
    columns: Mapping[str, HorizonMetrics], metric: str, bin_seconds: int, n_horizons: int | None = None
) -> list[GroupRow]:
    """A metric per group of hours ahead for several models scored on the same holdout.

    Parameters
    ----------
    columns : mapping of str to HorizonMetrics
        Column name to metrics, in column order; the first column's counts fill ``GroupRow.n``.
    metric : {"mae", "rmse", "mape"}
    bin_seconds : int
        Length of one bin (groups are hours ahead).
    n_horizons : int, optional
        Horizons of the table; default the first column's. A column with fewer values (a
        metric recorded before it existed) is NaN in the missing horizons.

    Returns
    -------
    list of GroupRow
        One row per horizon group, then the ``all`` row.

    Raises
    ------
    ValueError
        On an unknown ``metric`` or no columns.
    """
    from traffic.forecast.horizons import horizon_groups
    from traffic.forecast.result import METRICS

    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not allowed; allowed: {list(METRICS)}")
    if not columns:
        raise ValueError("group_table needs at least one column")
    first = next(iter(columns.values()))
    n_h = len(first.rmse) if n_horizons is None else int(n_horizons)

    def per_horizon(values: Sequence[float]) -> np.ndarray:
        v = np.full(n_h, np.nan)
        part = np.asarray(list(values)[:n_h], dtype=float)
        v[: len(part)] = part
        return v

    def group_mean(v: np.ndarray) -> float:
        finite = v[np.isfinite(v)]
        return float(finite.mean()) if finite.size else math.nan

    table = {k: per_horizon(getattr(m, metric)) for k, m in columns.items()}
    counts = per_horizon(first.n_mape if metric == "mape" else first.n)
    counts = np.where(np.isfinite(counts), counts, 0)
    rows = [
        GroupRow(
            g.label,
            (g.steps.start + 1, g.steps.stop),
            {k: group_mean(v[g.steps]) for k, v in table.items()},
            int(counts[g.steps].sum()),
        )
        for g in horizon_groups(int(bin_seconds), n_h)
    ]
    means = {k: float(getattr(m, f"{metric}_mean")) for k, m in columns.items()}
    rows.append(GroupRow("all", (1, n_h), means, int(counts.sum())))
    return rows


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over observed targets only (the training loss, normalised units).

    Values under ``mask == False`` (NaN included) change neither the loss nor its gradient.
    Returns 0 (with a graph) when nothing is observed.
    """
    import torch

    m = mask.to(dtype=torch.bool)
    diff = torch.where(m, pred - torch.where(m, target, torch.zeros_like(target)), torch.zeros_like(pred))
    n = m.sum().clamp_min(1).to(pred.dtype)
    return (diff.float() ** 2).sum() / n.float()


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
    import torch

    m = mask.to(dtype=torch.bool)
    w = w.expand_as(pred)
    diff = torch.where(m, pred - torch.where(m, target, torch.zeros_like(target)), torch.zeros_like(pred))
    den = torch.where(m, w, torch.zeros_like(w)).sum().clamp_min(1e-12)
    return (w * diff.float() ** 2).sum() / den
