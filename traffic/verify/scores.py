"""How good was a published forecast: its errors against what was observed (pure numpy/pandas).

A published run is scored where it published a value **and** the target was observed (the raster's
mask): every figure of one row counts the same targets. Per run x channel x horizon group and per
run x channel x cell:

``n``
    targets scored (published value and observation);
``mae``, ``rmse``, ``bias``
    mean of ``|f - y|``, root of the mean of ``(f - y)^2``, mean of ``f - y`` (positive = the
    forecast was too high), in the channel's unit;
``coverage``
    share of the targets with 80 % bounds (``lower <= y <= upper``) that fell inside them (NULL for a
    run without bounds);
``level_hit_rate``
    share of the targets where forecast and observation both have a level whose levels are equal:
    the level a publish gives a value with the run's own reference (congestion level of a speed,
    :func:`traffic.publish.congestion.congestion`; volume level of a count,
    :func:`~traffic.publish.congestion.volume`);
``ref_mae``, ``ref_rmse``, ``ref_bias``
    the same errors of the **seasonal reference**: the project's seasonal-average baseline
    (:func:`traffic.forecast.baselines.window_profile` / ``seasonal_forecast``) fitted on the
    run's own input window (``data_start .. data_end``: data up to the run's origin only) and
    issued from the same origin;
``skill``
    ``1 - rmse / ref_rmse`` (:func:`traffic.forecast.metrics.skill`; > 0: better than the seasonal
    reference).

Every row also carries the sums these come from (``sum_sq_err``, ``n_covered``, ...), so that figures
over several channels, runs or days are pooled exactly (the catalog's ``skill_daily`` and
``skill_by_horizon``: the root of the summed squared errors over the summed count, not a mean of
RMSEs). Horizon groups are those of the model card and the maps
(:func:`traffic.forecast.horizons.horizon_groups`, named by :func:`~traffic.forecast.horizons.group_tag`:
``h01``, ``h02-03``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from traffic.forecast.horizons import group_tag, horizon_groups
from traffic.forecast.metrics import skill
from traffic.grid.tensor import GridTensor
from traffic.publish.congestion import congestion, volume

#: Sums of one scored set of targets, in the order of the layout tables (``sql/migrations/005_skill.sql``).
SUMS = (
    "n",
    "sum_abs_err",
    "sum_sq_err",
    "sum_err",
    "n_interval",
    "n_covered",
    "n_level",
    "n_level_hit",
    "ref_sum_abs_err",
    "ref_sum_sq_err",
    "ref_sum_err",
)
#: Figures derived from :data:`SUMS` by :func:`figures`.
FIGURES = ("mae", "rmse", "bias", "coverage", "level_hit_rate", "ref_mae", "ref_rmse", "ref_bias", "skill")
_COUNTS = ("n", "n_interval", "n_covered", "n_level", "n_level_hit")
#: What the reference forecast is (``forecast_skill.reference_kind``).
REFERENCE_KIND = "seasonal_average"


@dataclass(frozen=True)
class RunScores:
    """Scores of one run: per channel x horizon group, and per channel x cell.

    Attributes
    ----------
    groups : pandas.DataFrame
        ``channel, horizon_group, first_horizon, last_horizon`` then :data:`SUMS` and :data:`FIGURES`;
        one row per channel with published values and per group, in channel then group order.
    cells : pandas.DataFrame
        ``channel, cell_id`` then :data:`SUMS` and :data:`FIGURES` over all horizons; one row per
        (channel, cell) with published values.
    """

    groups: pd.DataFrame
    cells: pd.DataFrame


def seasonal_reference(window: GridTensor, horizon_steps: int) -> np.ndarray:
    """The seasonal-average forecast issued after the last bin of ``window``, fitted on ``window`` only.

    Parameters
    ----------
    window : GridTensor
        The run's input window: its bins are the data the run had (``data_start .. data_end``).
    horizon_steps : int
        Bins forecast after the window's last bin.

    Returns
    -------
    np.ndarray
        ``(horizon_steps, C, H, W)`` float64: the profile of :func:`traffic.forecast.baselines.window_profile`
        (weekly with two weeks of window, else per day type; holidays read Sunday's) at the target bins.
    """
    from traffic.forecast.baselines import seasonal_forecast, window_profile
    from traffic.timebins import bin_minutes

    n = len(window.times)
    prof = window_profile(window, 0, n)
    pred = seasonal_forecast(prof, window, bin_minutes(window.times), np.array([n - 1]), int(horizon_steps))
    return pred[0].astype(np.float64)


def _levels(values: np.ndarray, ref: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """The level a publish gives ``values``: congestion level for speeds, volume level for volumes (-1: none)."""
    _, speed = congestion(values, ref, list(channels))
    _, vol = volume(values, ref, list(channels))
    return np.where(speed >= 0, speed, vol)


def _contributions(
    pred: np.ndarray,
    lower: np.ndarray | None,
    upper: np.ndarray | None,
    obs: np.ndarray,
    obs_mask: np.ndarray,
    ref_pred: np.ndarray,
    reference: np.ndarray,
    channels: Sequence[str],
) -> dict[str, np.ndarray]:
    """Per target ``(H_out, C, H, W)``: its share of every sum of :data:`SUMS` (0 where not scored)."""
    pred = np.asarray(pred, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    ref_pred = np.asarray(ref_pred, dtype=np.float64)
    shape = pred.shape
    for name, arr in (("obs", obs), ("obs_mask", obs_mask), ("ref_pred", ref_pred)):
        if np.shape(arr) != shape:
            raise ValueError(f"{name} has shape {np.shape(arr)}; the forecast's is {shape}")
    scored = np.isfinite(pred) & np.asarray(obs_mask, dtype=bool) & np.isfinite(obs)
    bad_ref = scored & ~np.isfinite(ref_pred)
    if bad_ref.any():
        raise ValueError(f"the reference forecast is NaN/inf at {int(bad_ref.sum())} scored targets")
    y = np.where(scored, obs, 0.0)
    err = np.where(scored, pred - y, 0.0)
    ref_err = np.where(scored, ref_pred - y, 0.0)
    out = {
        "n": scored.astype(np.int64),
        "sum_abs_err": np.abs(err),
        "sum_sq_err": err**2,
        "sum_err": err,
        "ref_sum_abs_err": np.abs(ref_err),
        "ref_sum_sq_err": ref_err**2,
        "ref_sum_err": ref_err,
    }
    if lower is not None and upper is not None:
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        has = scored & np.isfinite(lo) & np.isfinite(hi)
        out["n_interval"] = has.astype(np.int64)
        with np.errstate(invalid="ignore"):
            out["n_covered"] = (has & (lo <= y) & (y <= hi)).astype(np.int64)
    else:
        out["n_interval"] = out["n_covered"] = np.zeros(shape, np.int64)
    ref = np.asarray(reference, dtype=np.float64)
    lv_f = _levels(np.where(scored, pred, np.nan), ref, channels)
    lv_o = _levels(np.where(scored, y, np.nan), ref, channels)
    both = scored & (lv_f >= 0) & (lv_o >= 0)
    out["n_level"] = both.astype(np.int64)
    out["n_level_hit"] = (both & (lv_f == lv_o)).astype(np.int64)
    return out


def figures(sums: pd.DataFrame) -> pd.DataFrame:
    """:data:`FIGURES` from the :data:`SUMS` columns of ``sums`` (a copy with them added; NaN where undefined).

    ``coverage`` is NaN without targets with bounds, ``level_hit_rate`` without targets with levels,
    every error without targets, ``skill`` where the reference's RMSE is 0.
    """
    out = sums.copy()
    n = out["n"].to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):

        def per(col: str, count: np.ndarray) -> np.ndarray:
            return np.where(count > 0, out[col].to_numpy(np.float64) / np.where(count > 0, count, 1.0), np.nan)

        out["mae"] = per("sum_abs_err", n)
        out["rmse"] = np.sqrt(per("sum_sq_err", n))
        out["bias"] = per("sum_err", n)
        out["coverage"] = per("n_covered", out["n_interval"].to_numpy(np.float64))
        out["level_hit_rate"] = per("n_level_hit", out["n_level"].to_numpy(np.float64))
        out["ref_mae"] = per("ref_sum_abs_err", n)
        out["ref_rmse"] = np.sqrt(per("ref_sum_sq_err", n))
        out["ref_bias"] = per("ref_sum_err", n)
    out["skill"] = np.asarray(skill(out["rmse"].to_numpy(), out["ref_rmse"].to_numpy()), dtype=np.float64)
    return out


def score_run(
    pred: np.ndarray,
    obs: np.ndarray,
    obs_mask: np.ndarray,
    ref_pred: np.ndarray,
    reference: np.ndarray,
    channels: Sequence[str],
    cell_ids: np.ndarray,
    bin_seconds: int,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> RunScores:
    """Score one published run against the observations of its target bins.

    Parameters
    ----------
    pred : np.ndarray
        ``(H_out, C, H, W)`` published values, NaN where the run published none.
    obs, obs_mask : np.ndarray
        ``(H_out, C, H, W)`` observations of the target bins and where they exist.
    ref_pred : np.ndarray
        ``(H_out, C, H, W)`` the reference forecast (:func:`seasonal_reference`), finite where scored.
    reference : np.ndarray
        ``(C, H, W)`` the run's congestion reference (``cell_channels.reference``).
    channels : sequence of str
        ``C`` channel names.
    cell_ids : np.ndarray
        ``(H, W)`` cell id of each grid position.
    bin_seconds : int
        Length of a bin (horizon groups are hours ahead).
    lower, upper : np.ndarray, optional
        ``(H_out, C, H, W)`` 80 % bounds (NaN where none); None: the run has none.

    Returns
    -------
    RunScores
    """
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 4 or len(channels) != pred.shape[1] or np.shape(cell_ids) != pred.shape[2:]:
        raise ValueError(
            f"forecast {pred.shape} must be (H_out, C, H, W) with C = {len(channels)} channels and (H, W) = cell_ids {np.shape(cell_ids)}"
        )
    h_out, c = pred.shape[:2]
    parts = _contributions(pred, lower, upper, obs, obs_mask, ref_pred, reference, channels)
    published = np.isfinite(pred)  # (H_out, C, H, W)
    groups = horizon_groups(int(bin_seconds), h_out)
    rows = []
    for ci, ch in enumerate(channels):
        if not published[:, ci].any():
            continue
        for g in groups:
            row: dict[str, object] = {
                "channel": ch,
                "horizon_group": group_tag(g.label),
                "first_horizon": g.steps.start + 1,
                "last_horizon": g.steps.stop,
            }
            for k in SUMS:
                row[k] = parts[k][g.steps, ci].sum()
            rows.append(row)
    group_cols = ["channel", "horizon_group", "first_horizon", "last_horizon", *SUMS]
    group_frame = pd.DataFrame(rows, columns=group_cols)
    # per (channel, cell) over all horizons, where the run published values
    any_pub = published.any(axis=0)  # (C, H, W)
    ch_idx, r_idx, c_idx = np.nonzero(any_pub)
    cells = pd.DataFrame(
        {
            "channel": pd.Series(np.asarray(list(channels), dtype=object)[ch_idx], dtype=object),
            "cell_id": np.asarray(cell_ids)[r_idx, c_idx].astype(np.int64),
            **{k: parts[k].sum(axis=0)[ch_idx, r_idx, c_idx] for k in SUMS},
        }
    )
    for frame in (group_frame, cells):
        for k in SUMS:
            frame[k] = frame[k].astype(np.int64 if k in _COUNTS else np.float64)
    return RunScores(groups=figures(group_frame), cells=figures(cells))
