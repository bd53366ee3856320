"""The evaluation report of a gridded array: train the forecaster, score it and every baseline on one holdout.

:func:`evaluate_array` is what ``traffic grid evaluate`` runs on any
:class:`~traffic.grid.tensor.GridTensor` (read by :func:`traffic.grid.arrays.load_array`): it
reads no city file, no lake and no MLflow, trains with
:func:`traffic.forecast.train.train_forecaster` and returns a JSON-able report;
:func:`comparison_by_group` is the report's ablation/GBM comparison per horizon group. The
report's text tables are :func:`traffic.forecast.tables.format_report`; the trained module is
saved as a model folder (:mod:`traffic.forecast.model_folder`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from traffic.channels import model_channels
from traffic.forecast.metrics import group_table, relative_change, skill
from traffic.grid.arrays import check_even
from traffic.grid.tensor import GridTensor, describe
from traffic.timebins import bins_per_day, check_bin_seconds, days_to_bins


def _json_safe(obj: Any) -> Any:
    """Plain JSON types; NaN/inf floats become None."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def is_metric(key: str, value: Any) -> bool:
    """A per-horizon metric list of ``HorizonMetrics.as_dict()`` (not a count such as ``n`` or ``n_mape``)."""
    return isinstance(value, list) and key != "n" and not key.startswith("n_")


def evaluate_array(
    grid: GridTensor,
    *,
    context_steps: int,
    horizon_steps: int,
    holdout_days: float | None = None,
    holdout_fraction: float | None = None,
    train_days: float | None = None,
    budget_s: float = 60.0,
    seed: int = 0,
    device: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    progress: bool = False,
    save_model_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the forecaster on ``grid`` and score it and every baseline on the same holdout.

    Parameters
    ----------
    grid : GridTensor
        Any ``(T, C, H, W)`` array with a mask, evenly spaced in time (bins dividing a day).
        Channel names without a ``<feed>.`` get :data:`traffic.channels.DEFAULT_FEED`.
    context_steps, horizon_steps : int
        Bins of context and bins predicted.
    holdout_days, holdout_fraction : float
        Exactly one: the holdout is the last ``holdout_days`` days, or the last
        ``holdout_fraction`` of the bins (rounded to whole bins).
    train_days : float, optional
        Training window before the holdout (its last 15 % is validation); default all of it.
    budget_s : float
        Wall-clock cap of the training loop (baselines and scoring come on top).
    seed : int
    device : str, optional
        ``"cpu"`` or ``"cuda"``; default CUDA when available.
    model_overrides : dict, optional
        Keys of ``[model]`` / ``[training]`` in ``models/convlstm_attention.toml``.
    progress : bool
        Show a progress bar.
    save_model_dir : str or Path, optional
        Write the trained module there (:func:`~traffic.forecast.model_folder.save_model`) with the report.

    Returns
    -------
    dict
        JSON-able (NaN as None): ``data`` (:func:`describe`), ``setup``, ``split`` (sample counts,
        windows, holdout digest), ``horizon_minutes``, ``metrics`` (per model/baseline the
        ``HorizonMetrics.as_dict()``: per-horizon lists and means, ``n`` observed targets per
        horizon), ``best_baseline``, ``skill_pct`` (100 * (1 - model / best baseline), mean and
        per horizon, per metric), ``training`` (seconds, device, steps, best step, stop reason,
        whether the wall-clock cap fired, samples/s, parameters), ``ablation``
        (``HorizonMetrics.as_dict()`` of the trained network with parts switched off: ``base``, the
        linear base alone; ``base_head``, base + per-cell head), ``comparison``
        (:func:`comparison_by_group`: base, base + head, full model and GBM per horizon group),
        ``modality_weights``, ``params``, ``learning_curve``, ``saved_model``.

    Raises
    ------
    ValueError
        On an unusable grid or split, naming what is wrong and what is allowed.
    """
    from traffic.forecast.train import train_forecaster

    n_t = grid.shape[0]
    if n_t < 2:
        raise ValueError(f"grid has {n_t} time bins; evaluation needs a time series")
    bm = check_bin_seconds((grid.times[1] - grid.times[0]).total_seconds(), "grid times")
    check_even(grid.times, bm, "grid times")  # with the --fill-gaps hint
    bpd = bins_per_day(bm)
    for name, v in (("context_steps", context_steps), ("horizon_steps", horizon_steps)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}={v} must be a whole number >= 1")
    if (holdout_days is None) == (holdout_fraction is None):
        raise ValueError("give exactly one of holdout_days and holdout_fraction")
    if holdout_fraction is not None:
        if not 0 < holdout_fraction < 1:
            raise ValueError(f"holdout_fraction={holdout_fraction} must lie in (0, 1)")
        holdout_days = max(1, int(round(holdout_fraction * n_t))) / bpd
    assert holdout_days is not None
    ho_bins = days_to_bins(holdout_days, bm)
    if not horizon_steps <= ho_bins < n_t:
        raise ValueError(
            f"holdout of {holdout_days:g} days = {ho_bins} bins must hold at least horizon_steps={horizon_steps} "
            f"bins and leave bins for training in a grid of {n_t} bins ({n_t / bpd:g} days)"
        )
    if train_days is None:
        train_days = (n_t - ho_bins) / bpd
    elif train_days <= 0:
        raise ValueError(f"train_days={train_days} must be > 0")
    if budget_s <= 0:
        raise ValueError(f"budget_s={budget_s} must be > 0")
    names = model_channels(grid.channels, "grid channels")
    if names != tuple(grid.channels):
        grid = dataclasses.replace(grid, channels=names)

    t0 = time.perf_counter()
    res = train_forecaster(
        grid,
        context_steps=int(context_steps),
        horizon_steps=int(horizon_steps),
        holdout_days=holdout_days,
        train_days=train_days,
        budget_s=budget_s,
        seed=seed,
        device=device,
        progress=progress,
        model_overrides=model_overrides,
    )
    total_s = time.perf_counter() - t0
    metrics = {name: m.as_dict() for name, m in res.metrics.items()}
    best_name, best = res.best_baseline()
    model = res.metrics["model"]
    skill_pct: dict[str, Any] = {}
    for key in metrics["model"]:
        mine, ref = metrics["model"][key], metrics[best_name][key]
        if not is_metric(key, mine) or not mine or len(ref) != len(mine):
            continue
        per_h = 100.0 * skill(mine, ref)
        mean = 100.0 * skill(float(np.nanmean(mine)), float(np.nanmean(ref)))
        skill_pct[key] = {"mean": float(mean), "per_horizon": [float(v) for v in per_h]}
    steps = int(res.extra.get("steps", 0))
    batch = int(res.params.get("batch_size", 0))
    report: dict[str, Any] = {
        "data": describe(grid),
        "setup": {
            "context_steps": int(context_steps),
            "horizon_steps": int(horizon_steps),
            "holdout_days": holdout_days,
            "train_days": train_days,
            "budget_s": budget_s,
            "seed": seed,
            "model_overrides": dict(model_overrides or {}),
        },
        "split": {
            "train_samples": res.extra.get("n_train_samples"),
            "val_samples": res.extra.get("n_val_samples"),
            "holdout_samples": res.holdout.n_samples,
            "train_window": list(res.train_window),
            "holdout_start": res.holdout.start,
            "holdout_end": res.holdout.end,
            "holdout_digest": res.holdout.digest,
        },
        "horizon_minutes": [bm * (j + 1) for j in range(int(horizon_steps))],
        "metrics": metrics,
        "best_baseline": best_name,
        "skill_pct": skill_pct,
        "beats_best_baseline": bool(model.rmse_mean < best.rmse_mean),
        "training": {
            "device": res.device,
            "train_seconds": res.train_seconds,
            "total_seconds": total_s,
            "steps": steps,
            "stopped_reason": res.stopped_reason,
            "train_samples_per_s": steps * batch / res.train_seconds if res.train_seconds > 0 else None,
            "n_parameters": res.params.get("n_parameters"),
            "best_val_loss": res.extra.get("best_val_loss"),
            "best_step": res.extra.get("best_step"),
            "wall_clock_cap": res.extra.get("wall_clock_cap"),
            "base": res.extra.get("base"),
        },
        "ablation": {name: m.as_dict() for name, m in res.ablation.items()},
        "comparison": comparison_by_group(res, bm * 60),
        "combination": combination_report(res),
        "modality_weights": res.extra.get("modality_weights", {}),
        "params": res.params,
        "learning_curve": res.learning_curve,
        "saved_model": None,
    }
    report = _json_safe(report)
    if save_model_dir is not None:
        from traffic.forecast.model_folder import save_model

        report["saved_model"] = str(save_model(res.module, save_model_dir, report))
    return report


def combination_report(res: Any) -> dict[str, Any]:
    """The per-horizon combination of a run (what a nightly run would publish), on the backtest.

    Returns
    -------
    dict
        ``{"backtest": {candidate: {"rmse_mean", "rmse": {group: v}}}, "vs": {"<a>_vs_<b>": {group:
        {"mean", "lo", "hi"}}}, "weights": {name: Combination.to_json()}}`` for the candidates of
        :data:`traffic.forecast.backtest.CANDIDATES` the backtest scored; empty without a backtest.
    """
    from traffic.forecast.backtest import CANDIDATES, GROUP_PAIRS, backtest_metrics

    bt = getattr(res, "backtest", None)
    if bt is None:
        return {}
    m = backtest_metrics(bt)
    tags = [tag for tag, _ in bt.groups()[:-1]]
    scored = [c for c in CANDIDATES if c in bt.errors]
    return {
        "folds": len(bt.folds),
        "days": len(bt.days),
        "backtest": {
            c: {"rmse_mean": m[f"backtest.{c}.rmse_mean"], "rmse": {t: m[f"backtest.{c}.rmse.{t}"] for t in tags}}
            for c in scored
        },
        "vs": {
            f"{a}_vs_{b}": {
                t: {k: m[f"backtest.{a}.vs_{b}.{t}.{k}"] for k in ("mean", "lo", "hi")}
                for t in tags
                if f"backtest.{a}.vs_{b}.{t}.mean" in m
            }
            for a, b in GROUP_PAIRS
            if a in bt.errors and b in bt.errors
        },
        "weights": {c.name: c.to_json() for c in getattr(res, "combinations", None) or []},
    }


#: Columns of :func:`comparison_by_group`, in order: ``(key, label)``; ``base``/``base_head`` are ``TrainResult.ablation``'s.
COMPARISON_COLUMNS = (("base", "base"), ("base_head", "base+head"), ("model", "full"), ("gbm", "gbm"))


def comparison_by_group(res: Any, bin_seconds: int) -> dict[str, Any]:
    """The ablation and the GBM comparison per horizon group: what ``traffic grid evaluate`` prints.

    Parameters
    ----------
    res : TrainResult
        With ``metrics["model"]``, ``metrics["gbm"]`` and ``ablation`` (``base``, ``base_head``)
        on the same holdout; a column the result lacks is left out.
    bin_seconds : int
        Length of one bin (groups are hours ahead, :func:`traffic.forecast.horizons.horizon_groups`).

    Returns
    -------
    dict
        ``{"columns": [labels], "keys": [keys], "groups": [{"label", "steps": [first, last]
        (1-based), "rmse": {key: v}, "mae": {key: v}, "full_vs_base_head_pct": {"rmse", "mae"},
        "full_vs_gbm_pct": {"rmse", "mae"}}, ...]}``; the last group, ``"all"``, holds the means
        over every horizon (the figure promotion compares). A group's value is the mean of its
        horizons' values; a percentage is the full model's change against that column
        (negative = the full model is better), None when it cannot be computed.
    """
    scored = {"model": res.metrics["model"], **dict(res.ablation)}
    if "gbm" in res.metrics:
        scored["gbm"] = res.metrics["gbm"]
    cols = {k: scored[k] for k, _ in COMPARISON_COLUMNS if k in scored}
    n_h = len(res.metrics["model"].rmse)
    tables = {m: group_table(cols, m, int(bin_seconds), n_h) for m in ("rmse", "mae")}

    def pct(a: float, b: float) -> float | None:
        v = 100.0 * relative_change(a, b)
        return v if math.isfinite(v) else None

    groups = []
    for rows in zip(tables["rmse"], tables["mae"], strict=True):
        values = {m: dict(r.values) for m, r in zip(("rmse", "mae"), rows, strict=True)}
        out: dict[str, Any] = {"label": rows[0].label, "steps": list(rows[0].steps), **values}
        for ref, key in (("base_head", "full_vs_base_head_pct"), ("gbm", "full_vs_gbm_pct")):
            if ref in cols:
                out[key] = {m: pct(values[m]["model"], values[m][ref]) for m in ("rmse", "mae")}
        groups.append(out)
    return {"columns": [label for k, label in COMPARISON_COLUMNS if k in cols], "keys": list(cols), "groups": groups}
