"""Training of the forecaster on a :class:`~traffic.grid.tensor.GridTensor`: one run, start to end.

:func:`train_forecaster` wires the parts, each in its own module:

1. the time split (:mod:`traffic.forecast.split`): training, validation and holdout samples;
2. statistics fitted on the training window only: channel mean/std, the seasonal profile
   (:mod:`traffic.forecast.baselines`), and the linear base by least squares
   (:mod:`traffic.linear_base`);
3. batches gathered on the training device (:mod:`traffic.forecast.batching`);
4. the per-cell head pre-fitted on its skip features (hidden state 0): the ``base_head`` state;
5. the optimisation loop (:mod:`traffic.forecast.loop`): a step budget, AdamW without decay on
   biases and gates, warm-up + cosine schedule, validation, early stopping, checkpoints;
6. holdout scoring (:mod:`traffic.forecast.inference`) of the full model, its ablations (the
   linear base alone, base + head) and every baseline on the same samples, with the masked
   metrics of :mod:`traffic.forecast.metrics`, and the 80 % intervals
   (:mod:`traffic.forecast.intervals`).

* **Seeds.** ``seed`` seeds Python's, numpy's and torch's generators and draws the sample
  order. With a step budget (``max_steps``: the city's ``[forecast] train_steps``) two CPU runs
  with the same seed and thread count give bit-identical weights and metrics; the wall-clock
  ``budget_s`` is only a safety net, recorded when it fires.
* **NaN/inf guard.** A non-finite loss, gradient norm, validation loss, parameter, base
  coefficient or holdout forecast raises :class:`TrainingDiverged` before anything is returned
  or checkpointed, so nothing downstream (the registry) ever sees a diverged model.
* **Checkpoint and resume** (``checkpoint_dir``, ``resume``; :mod:`traffic.forecast.checkpoint`):
  ``resume=True`` continues from the checkpoint and reaches the same weights as an
  uninterrupted run (bit-identical on CPU).
* **Data-parallel** when launched with ``torchrun`` (``WORLD_SIZE > 1``): see
  :mod:`traffic.forecast.distributed`.
* **CUDA**: inputs gathered on the device, bf16 autocast, channels_last convolution weights,
  no host sync per step; ``compile = true`` wraps the training forward in ``torch.compile``.
  The CPU path is plain eager float32.
* **Warm start** (``warm_start``): parameters of another model (another city's champion) with
  the same name and shape are copied before training; the statistics buffers are always fitted
  on this grid. ``extra["warm_start"]`` lists what was copied and skipped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
import time
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from traffic.config import PROJECT_ROOT, default_backtest_folds
from traffic.forecast import distributed as ddp
from traffic.forecast.backtest import CANDIDATES, Backtest, DailyErrors, day_index, fold_plan
from traffic.forecast.baselines import (
    BASELINES,
    evaluate_baselines,
    time_positions,
    window_profile,
)
from traffic.forecast.batching import Batcher, masked_channel_stats
from traffic.forecast.checkpoint import checkpoint_path, load_checkpoint, restore_rng_states, transfer_parameters
from traffic.forecast.combination import (
    COMBINATIONS,
    MEMBERS,
    HoldoutPredictions,
    RecordingErrors,
    combine,
    nightly_origins,
)
from traffic.forecast.fallback import fit_baseline
from traffic.forecast.features import build_inputs, target_index
from traffic.forecast.horizons import anomaly_autocorrelation, signal_horizons
from traffic.forecast.inference import evaluate_module, predict
from traffic.forecast.intervals import cell_scale, fit_intervals
from traffic.forecast.loop import (
    Loop,
    LoopState,
    check_finite_module,
    lr_factor,
    param_groups,
    pretrain_head,
    val_loss,
)
from traffic.forecast.result import Holdout, HorizonMetrics, TrainingDiverged, TrainResult
from traffic.forecast.split import Split, active_box, make_split, spread
from traffic.forecast.threads import cpu_threads
from traffic.grid.tensor import GridTensor
from traffic.linear_base import fit_base
from traffic.model import Forecaster, ForecasterConfig
from traffic.timebins import bin_minutes, bins_per_day

__all__ = ["MODEL_SPEC", "TrainingDiverged", "load_model_spec", "train_forecaster"]

MODEL_SPEC = PROJECT_ROOT / "models" / "convlstm_attention.toml"

#: Model fields that come from the data, not from the spec or overrides.
DATA_FIELDS = (
    "channels",
    "grid_shape",
    "context_steps",
    "horizon",
    "bin_minutes",
    "profile_period",
    "utc_offset_minutes",
    "network_steps",  # the signal horizons of the training window (set after training: Forecaster.keep_head)
)

log = logging.getLogger(__name__)


def load_model_spec(path: str | Path = MODEL_SPEC) -> dict[str, dict[str, Any]]:
    """Read the model spec TOML: ``{"model": {...}, "training": {...}}`` default hyper-parameters."""
    with Path(path).open("rb") as fh:
        spec = tomllib.load(fh)
    for section in ("model", "training"):
        if section not in spec:
            raise ValueError(f"{path}: missing section [{section}]")
    return spec


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


def holdout_digest(grid: GridTensor, holdout_days: float) -> str:
    """The digest :func:`train_forecaster` gives the holdout of ``grid`` (``TrainResult.holdout.digest``), without training.

    The holdout is the last ``holdout_days`` of ``grid`` (:func:`traffic.forecast.split.holdout_start`).
    """
    from traffic.forecast.split import holdout_start

    return _holdout_digest(grid, holdout_start(grid, holdout_days), grid.shape[0])


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
    conf = cfg.to_dict()
    cells = conf.pop("head_cells")  # one index per observed cell: its count is the parameter
    conf["n_head_cells"] = len(cells) if cells is not None else None
    for k, v in {**conf, **train_kw, **extra}.items():
        out[k] = ",".join(str(x) for x in v) if isinstance(v, list | tuple) else ("none" if v is None else v)
    return out


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
    max_steps: int | None = None,
    backtest_folds: int | None = None,
    epochs: float | None = None,
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
        Wall-clock safety net of the training loop (the baselines and the holdout scoring come on
        top); ``stopped_reason = "wall_clock_cap"`` when it fires before ``max_steps``.
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
    max_steps : int, optional
        Optimiser steps: the budget that decides the model (the city's ``[forecast] train_steps``).
        Default: the training key ``max_steps`` (0 = no cap: epochs, early stopping and the wall clock).
    epochs : float, optional
        The budget sized by the data (the city's ``[forecast] train_epochs``): ``ceil(epochs x
        training origins / batch_size)`` steps, at most ``max_steps`` (the cap). Default: the
        training key ``epochs`` (0 = ``max_steps`` alone). The resolved budget is
        ``params["budget_steps"]``, the samples it draws ``params["budget_samples"]``.
    backtest_folds : int, optional
        Folds of the holdout's target days for the backtest (:mod:`traffic.forecast.backtest`);
        default :func:`traffic.config.default_backtest_folds` of ``holdout_days``.

    Returns
    -------
    TrainResult
        With ``metrics`` keys ``"model"`` and one per baseline. When data-parallel, ranks other
        than 0 return the same trained module and learning curve with empty ``metrics`` (the
        holdout is scored on rank 0 only); ``extra["rank"]`` / ``extra["world_size"]`` say which.

    Raises
    ------
    TrainingDiverged
        If the loss, gradients, validation loss, parameters, the linear base or holdout forecasts
        become NaN/inf; raised before anything is returned or checkpointed.
    ValueError
        On an unusable split, an unknown override, ``resume`` without ``checkpoint_dir``, or a
        checkpoint from another configuration.
    """
    t_start = time.perf_counter()
    spec = load_model_spec()
    model_kw, tr = _split_overrides(spec, model_overrides)
    if max_steps is not None:
        if max_steps < 0:
            raise ValueError(f"max_steps = {max_steps} must be >= 0 (0 = no step cap)")
        tr["max_steps"] = int(max_steps)
    if epochs is not None:
        if not (math.isfinite(epochs) and epochs >= 0):
            raise ValueError(f"epochs = {epochs} must be a finite number >= 0 (0 = the step budget alone)")
        tr["epochs"] = float(epochs)
    if checkpoint_dir is None and str(tr.get("checkpoint_dir") or ""):
        checkpoint_dir = Path(str(tr["checkpoint_dir"])).expanduser()
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir (argument or training key) to resume from")
    dist, dev = ddp.setup(_resolve_device(device))
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(cpu_threads(int(tr["cpu_threads"]), threads))
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
            backtest_folds=backtest_folds,
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
RESUME_MAY_CHANGE = frozenset(
    {"max_steps", "max_epochs", "patience", "checkpoint_dir", "cpu_threads", "compile", "wall_clock_factor"}
)


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


def head_cells(mask: np.ndarray, box: tuple[int, int, int, int] | None) -> tuple[int, ...] | None:
    """Flat indices (row-major inside ``box``) of the cells observed anywhere in ``mask`` ``(T, C, H, W)``."""
    if box is None:
        return None
    r0, r1, c0, c1 = box
    seen = np.asarray(mask.any(axis=(0, 1)))[r0:r1, c0:c1]  # (h, w)
    return tuple(int(i) for i in np.flatnonzero(seen)) or None


def _anomaly_autocorrelation(win: GridTensor, profile: Any, bm: int, horizon: int) -> np.ndarray:
    """Autocorrelation of the training window's seasonal anomaly at lags ``1 .. horizon`` (observed series only)."""
    seen = win.mask.any(axis=0).reshape(-1)  # (C*H*W,)
    pos = time_positions(win.times, bm, profile.period, win.holiday, profile.offset_minutes)
    n_t = win.shape[0]
    prior = profile.profile.reshape(profile.period, -1)[:, seen][pos]  # (T, series)
    values = win.values.reshape(n_t, -1)[:, seen]
    mask = win.mask.reshape(n_t, -1)[:, seen]
    return anomaly_autocorrelation(values - prior, mask, horizon)


def _state_on_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


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
    backtest_folds: int | None = None,
):
    """The body of :func:`train_forecaster` (arguments resolved)."""
    dist = dist or ddp.DistContext()
    _seed_everything(seed)
    rng = np.random.default_rng(seed)
    _check_finite_observations(grid)

    # 1. split and the statistics of the training window
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
    profile = window_profile(grid, split.fit_start, split.fit_end, int(tr["min_weeks_for_weekly_profile"]))
    period, offset = profile.period, profile.offset_minutes
    mean, std = masked_channel_stats(win.values, win.mask)

    seen_mask = grid.mask[max(0, split.fit_start - context_steps) : split.fit_end]
    box = active_box(seen_mask, int(tr["box_margin"]))
    cfg = ForecasterConfig(
        active_box=box,
        head_cells=head_cells(seen_mask, box),
        channels=grid.channels,
        grid_shape=grid.shape[2:],
        context_steps=context_steps,
        horizon=horizon_steps,
        bin_minutes=bm,
        profile_period=period,
        utc_offset_minutes=offset,
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
    batcher = Batcher(
        grid,
        context_steps,
        horizon_steps,
        profile,
        time_positions(grid.times, bm, period, grid.holiday, offset),
        split.fit_start,
        split.fit_end,
        dev,
    )
    bs, eval_bs = int(tr["batch_size"]), int(tr["eval_batch_size"])
    lr, net_lr = float(tr["lr"]), float(tr["network_lr"]) or None
    opt = torch.optim.AdamW(param_groups(module, float(tr["weight_decay"]), lr, net_lr), lr=lr)
    # fit_on_validation: the network also learns from the validation days (the ones nearest the
    # holdout, which the baselines fit on too); the step budget then decides alone and the last
    # state ships (the validation loss is still reported, in-sample)
    on_val = bool(tr["fit_on_validation"])
    loop_t = np.concatenate([split.train, split.val]) if on_val else split.train
    steps_per_epoch = math.ceil(math.ceil(len(loop_t) / dist.world) / bs)  # per rank
    max_steps = int(tr["max_steps"])  # 0 = no cap
    if float(tr["epochs"]) > 0:  # the budget sized by the data: passes over the training origins, capped by max_steps
        by_data = math.ceil(float(tr["epochs"]) * steps_per_epoch)
        max_steps = min(max_steps, by_data) if max_steps else by_data
    schedule_steps = int(tr["schedule_steps"]) or max_steps or int(tr["max_epochs"]) * steps_per_epoch
    warmup, min_ratio = float(tr["warmup_fraction"]), float(tr["min_lr_ratio"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, schedule_steps, warmup, min_ratio))

    # 2. the linear base by least squares; 3. the head pre-fitted on its skip features
    t_prefit = time.perf_counter()
    val_t_end = spread(split.val, int(tr["max_val_samples"]))
    fit_t_end = spread(split.train, int(tr["max_base_fit_samples"]))
    base_name, base_scores, horizon_w = fit_base(
        module, batcher, fit_t_end, val_t_end, eval_bs, weighting=bool(tr["horizon_weighting"])
    )
    horizon_w = horizon_w.to(dev)
    # the network's job: the first forecast steps, where the seasonal anomaly of the training window is
    # still correlated with the last one (recent data carry signal); further out the base + head and the
    # baselines forecast, and the combination weighs them (traffic.forecast.combination)
    autocorr = _anomaly_autocorrelation(win, profile, bm, horizon_steps)
    threshold = float(tr["signal_threshold"])
    net_steps = signal_horizons(autocorr, threshold, horizon_steps) if threshold > 0 else horizon_steps
    net_w = horizon_w * (torch.arange(horizon_steps, device=dev) < net_steps).to(horizon_w.dtype)
    fingerprint = _fingerprint(cfg, tr, seed, split, dist.world)
    ck = _resume_from(ckpt, fingerprint) if resume and ckpt is not None else None
    head_loss = None
    if ck is None:
        module.eval()
        base_val = val_loss(module.set_paths("base"), batcher, val_t_end, eval_bs, dist, horizon_w)
        # the head's pre-fit: on the training days, judged on the validation days (kept only if it helps
        # there), or, with head_fit_on_validation, on both and kept (its step count is the budget)
        head_on_val = bool(tr["head_fit_on_validation"])
        head_t = loop_t if head_on_val else split.train
        before = copy.deepcopy(module.state_dict())
        head_loss = pretrain_head(
            module,
            batcher,
            spread(head_t, int(tr["head_pretrain_samples"])),
            int(tr["head_pretrain_steps"]),
            float(tr["head_pretrain_lr"]),
            int(tr["head_pretrain_batch"]),
            seed,
            horizon_w,
        )
        head_val = val_loss(module.set_paths("base_head"), batcher, val_t_end, eval_bs, dist, horizon_w)
        if head_loss is not None and not head_on_val and not head_val < base_val:  # no help on validation
            module.load_state_dict(before)  # back to the untrained head: base + head is the base
            head_val, head_loss = base_val, None
        module.set_paths("full")
        t_val = time.perf_counter()
        full_val = val_loss(module, batcher, val_t_end, eval_bs, dist, net_w)  # step 0: = base + head (zero entry)
        eval_s = time.perf_counter() - t_val
        state = LoopState(
            best_state=copy.deepcopy(module.state_dict()),
            best_val=full_val,
            curve=[
                {
                    "epoch": 0.0,
                    "step": 0,
                    "train_loss": float("nan"),
                    "val_loss": full_val,
                    "lr": float(sched.get_last_lr()[0]),
                    "elapsed_s": 0.0,
                }
            ],
            eval_s=eval_s,
        )
        head_state = _state_on_cpu(module)  # the base + head ablation: the head as pre-fitted
        ablation_val = {"base": base_val, "base_head": head_val}
        log.info(
            "base fitted and head pre-fitted in %.1f s: validation loss base %.4f, base + head %.4f; the network "
            "trains on the first %d of %d forecast steps",
            time.perf_counter() - t_prefit,
            base_val,
            head_val,
            net_steps,
            horizon_steps,
        )
    else:
        module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        restore_rng_states(rng, ck["rng"])
        state = LoopState(
            best_state=ck["best_state"],
            best_val=float(ck["best_val"]),
            curve=list(ck["curve"]),
            step=int(ck["step"]),
            best_step=int(ck["best_step"]),
            epoch=int(ck["epoch"]),
            offset=int(ck["offset"]),
            perm=ck["perm"].numpy() if ck["perm"] is not None else None,
            bad_evals=int(ck["bad_evals"]),
            run_loss=float(ck["run_loss"]),
            run_n=int(ck["run_n"]),
            eval_s=float(ck["eval_s"]),
            step_s=float(ck["step_s"]),
            elapsed_s=float(ck["elapsed_s"]),
        )
        head_state = ck["head_state"]
        ablation_val = dict(ck["ablation_val"])
    resumed_from = state.step if ck is not None else None
    del ck

    # 4. the loop; the training forward: DDP around the module when data-parallel, torch.compile on request
    fwd: Any = ddp.wrap(module, dist, dev)
    if bool(tr["compile"]):
        fwd = torch.compile(fwd)
    loop = Loop(
        module=module,
        fwd=fwd,
        opt=opt,
        sched=sched,
        batcher=batcher,
        train_t=loop_t,
        val_t=val_t_end,
        select_best=not on_val,
        horizon_w=net_w,
        batch_size=bs,
        eval_batch_size=eval_bs,
        eval_every=max(1, min(steps_per_epoch, int(tr["eval_every_steps"]))),
        patience=int(tr["patience"]),
        max_epochs=int(tr["max_epochs"]),
        max_steps=max_steps,
        schedule_steps=schedule_steps,
        budget_s=budget_s,
        grad_clip=float(tr["grad_clip"]),
        rng=rng,
        dist=dist,
        ckpt=ckpt,
        fingerprint=fingerprint,
        progress=progress,
        extra_state={"head_state": head_state, "ablation_val": ablation_val},
        train_horizons=int(tr["train_horizons"]) if cfg.decoder == "parallel" else 0,
        parallel=cfg.decoder == "parallel",
        guard_factor=float(tr["wall_clock_factor"]),
    )
    state = loop.run(state)
    train_seconds = state.elapsed_s

    module.load_state_dict(state.best_state)
    module.eval()
    check_finite_module(module, "after training")
    # the network serves the bins it was trained on; beyond them the head as pre-fitted (its frozen
    # copy), so the full model there is base + head exactly instead of a head the training moved
    module.keep_head(net_steps, head_state)
    head_state = {**_state_on_cpu(module), **head_state}  # the ablation's state: the kept copy is the same head

    # 5. the backtest: the model, its ablations and the baselines on every holdout fold, per target day
    metrics: dict[str, HorizonMetrics] = {}
    ablation: dict[str, HorizonMetrics] = {}
    intervals = None
    variant_intervals: dict[str, Any] = {}
    backtest = None
    combinations: list[Any] = []
    recorded = None
    t_backtest = time.perf_counter()
    if dist.is_main:  # data-parallel: the holdout is scored once, on rank 0
        day_of_bin, days = day_index(grid, split.fit_end)
        folds = backtest_folds if backtest_folds else default_backtest_folds(holdout_days)
        # every member's holdout forecasts are kept (observed targets only) for the combination
        recorded = HoldoutPredictions(day_of_bin, grid.mask, nightly_origins(grid.times, grid.timezone))
        backtest = Backtest(
            days=days,
            folds=fold_plan(days, min(folds, len(days)), grid.holidays),
            bin_seconds=bm * 60,
            errors={
                name: (
                    RecordingErrors(day_of_bin, len(days), horizon_steps, recorded, name)
                    if name in MEMBERS
                    else DailyErrors(day_of_bin, len(days), horizon_steps)
                )
                for name in CANDIDATES
                if name not in COMBINATIONS
            },
            channels=tuple(grid.channels),
        )
        log.info(
            "backtest: %d origins of %d day(s) in %d fold(s), every candidate",
            len(split.holdout),
            len(days),
            len(backtest.folds),
        )
        t_part = time.perf_counter()
        ablated = copy.deepcopy(module)
        ablated.load_state_dict(head_state)
        # 80 % intervals from the residuals of training and validation samples (never the holdout):
        # the validation days alone can be too few to hold every kind of day (traffic.forecast.intervals);
        # one interval model per deployable network variant (the full model, base + head, the base)
        n_cal = 4 * int(tr["max_val_samples"])
        val_ho = np.concatenate([spread(split.train, n_cal), spread(split.val, n_cal)])
        scale = cell_scale(win.values, win.mask)  # (C, H, W) the bounds' per-cell scale
        for variant, net in (("model", module), ("base_head", ablated), ("base", ablated)):
            if net is ablated:
                ablated.set_paths(variant)  # the head as pre-fitted, hidden state 0; or the linear base alone
            variant_intervals[variant] = fit_intervals(
                (
                    (predict(net, grid, te, context_steps, horizon_steps), grid.values[ti], grid.mask[ti])
                    for te in np.array_split(val_ho, max(1, math.ceil(len(val_ho) / eval_bs)))
                    for ti in (target_index(te, horizon_steps),)
                ),
                scale,
            )
        intervals = variant_intervals["model"]
        log.info("backtest: interval models of 3 network variants in %.1f s", time.perf_counter() - t_part)
        t_part = time.perf_counter()
        metrics["model"] = evaluate_module(
            module,
            grid,
            holdout_days=holdout_days,
            batch_size=eval_bs,
            intervals=intervals,
            daily=backtest.errors["model"],
        )
        for variant in ("base_head", "base"):
            ablation[variant] = evaluate_module(
                ablated.set_paths(variant),
                grid,
                holdout_days=holdout_days,
                batch_size=eval_bs,
                intervals=variant_intervals[variant],
                daily=backtest.errors[variant],
            )
        del ablated
        log.info("backtest: network variants scored in %.1f s", time.perf_counter() - t_part)
        t_part = time.perf_counter()
        # each baseline fitted as it serves (the stop-gap, a combination's member): the same split of the
        # same window, so a later stage of this process (the forecast, a replay) reuses the fit
        fitted = {
            name: fit_baseline(
                grid,
                name,
                context_steps=context_steps,
                horizon_steps=horizon_steps,
                holdout_days=holdout_days,
                train_days=train_days,
                val_fraction=float(tr["val_fraction"]),
                ridge_lags=int(tr["ridge_lags"]),
                seed=seed,
            )
            for name in BASELINES
        }
        for name, fb in fitted.items():
            if fb.fit_window != (split.fit_start, split.fit_end):
                raise RuntimeError(
                    f"baseline {name} was fitted on bins {fb.fit_window}, the run's split is "
                    f"{(split.fit_start, split.fit_end)}"
                )
        metrics.update(
            evaluate_baselines(
                grid,
                fitted,
                holdout_t_end=split.holdout,
                horizon=horizon_steps,
                batch_size=eval_bs,
                daily=backtest.errors,
            )
        )
        del fitted
        log.info("backtest: baselines fitted and scored in %.1f s", time.perf_counter() - t_part)
        t_part = time.perf_counter()
        # the per-horizon combinations, cross-fitted over the folds (traffic.forecast.combination)
        combinations = combine(recorded, backtest)
        log.info("backtest: combinations fitted and scored in %.1f s", time.perf_counter() - t_part)
    backtest_seconds = time.perf_counter() - t_backtest  # intervals + every candidate on every fold
    module.to("cpu")
    if dev.type == "cuda":
        module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

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
            "profile_kind": {7: "time_of_week", 2: "day_type"}.get(period // bins_per_day(bm), "time_of_day"),
            "world_size": dist.world,
            "warm_start_copied": len(warm["copied"]) if warm is not None else None,
            "network_steps": net_steps,
            "budget_steps": max_steps,
            "budget_samples": max_steps * bs * dist.world,
            "training_origins": len(loop_t),
        },
    )
    return TrainResult(
        module=module,
        metrics=metrics,
        holdout=holdout,
        learning_curve=state.curve,
        params=params,
        input_example=ex_x.astype(np.float32),
        example_forecast=ex_pred.astype(np.float32),
        example_target=np.where(grid.mask[tidx], grid.values[tidx], np.nan).astype(np.float32),
        example_mask=grid.mask[tidx].copy(),
        channels=tuple(grid.channels),
        train_window=(grid.times[first_bin].isoformat(), grid.times[last_bin].isoformat()),
        train_seconds=train_seconds,
        device=str(dev),
        stopped_reason=state.stopped,
        intervals=intervals,
        ablation=ablation,
        backtest=backtest,
        variant_intervals=variant_intervals,
        variant_states={"base_head": head_state},
        combinations=combinations,
        holdout_predictions=recorded,
        extra={
            "modality_weights": module.modality_weights(),
            "base": base_name,
            "base_val_rmse": base_scores,
            "head_pretrain_loss": head_loss,
            "ablation_val_loss": ablation_val,
            "n_train_samples": len(split.train),
            "n_val_samples": len(split.val),
            "best_val_loss": state.best_val,
            "steps": state.step,
            "best_step": state.best_step,
            "max_steps": max_steps,
            "wall_clock_cap": state.stopped == "wall_clock_cap",
            "wall_clock_guard_s": state.guard_s,  # the safety net this run had (loop.Loop.guard_s)
            "expected_train_s": state.expected_s,  # the run expected from its measured steps
            "resumed_from_step": resumed_from,
            "checkpoint": str(ckpt) if ckpt is not None else None,
            "warm_start": warm,
            "rank": dist.rank,
            "world_size": dist.world,
            "cpu_threads": torch.get_num_threads() if dev.type == "cpu" else None,
            "backtest_seconds": backtest_seconds,
            "network_steps": net_steps,
            "anomaly_autocorrelation": [round(float(v), 4) for v in autocorr[: min(len(autocorr), 96)]],
            "total_seconds": time.perf_counter() - t_start,
        },
    )
