"""The time split of a grid into training, validation and holdout samples, and the active box.

A sample is the context ending at bin ``t_end`` and the ``horizon`` bins after it; a sample
counts only if one of its targets is observed:

* holdout: samples whose targets all lie in the last ``holdout_days`` of the grid;
* training window: the ``train_days`` before the holdout. Its last ``val_fraction`` (at least
  one and a half horizons) holds the validation samples, the rest the training samples; a
  sample never straddles two parts. Contexts may reach back before the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traffic.grid.tensor import GridTensor
from traffic.timebins import bin_minutes, bins_per_day, days_to_bins


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


def holdout_start(grid: GridTensor, holdout_days: float) -> int:
    """First bin of the holdout, the last ``holdout_days`` of ``grid`` (rounded to whole bins).

    Raises
    ------
    ValueError
        If the holdout would leave no bins before it, or hold none.
    """
    n_t = grid.shape[0]
    fit_end = n_t - days_to_bins(holdout_days, bin_minutes(grid.times))
    if fit_end <= 0 or fit_end >= n_t:
        raise ValueError(
            f"holdout_days={holdout_days} ({n_t - fit_end} bins) must leave bins on both sides of {n_t} bins"
        )
    return fit_end


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
    bm = bin_minutes(grid.times)
    bpd = bins_per_day(bm)
    fit_end = holdout_start(grid, holdout_days)
    fit_start = max(0, fit_end - days_to_bins(train_days, bm))
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
    fit_end = holdout_start(grid, holdout_days)
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


def spread(t_end: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` samples evenly spread over ``t_end`` (all of them if fewer)."""
    if len(t_end) <= k:
        return t_end
    return t_end[np.unique(np.linspace(0, len(t_end) - 1, k).round().astype(int))]
