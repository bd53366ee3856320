"""The optimisation loop of the forecaster: head pre-fit, schedule, steps, validation, checkpoints.

* **Budget.** A step count (``max_steps``: the city's ``[forecast] train_steps``) decides what
  ships: two runs with the same data, seed and thread count give the same weights. The
  wall clock is only a safety net, sized from the run itself: ``guard_factor`` times the run
  expected from its measured step (and validation) time, never less than ``budget_s``
  (:meth:`Loop.guard_s`; fixed once ``GUARD_PROBE_STEPS`` steps and a validation are measured).
  A loaded machine that makes every step slower does not cut the run; a hang or a machine
  several times slower than at the start does, and the run says so
  (``stopped = "wall_clock_cap"``, the guard and the expected run in the state). Without a
  step budget (``max_steps = 0``) ``budget_s`` alone stops the run.
* **Optimiser.** AdamW; weight decay only on convolution/linear weights, never on biases,
  normalisation weights, modality gates, peepholes or the horizon embedding. The learning rate
  warms up linearly over ``warmup_fraction`` of the steps, then follows a cosine down to
  ``min_lr_ratio`` of its peak at the last step.
* **Validation** every ``eval_every_steps``: the state with the best validation loss is kept
  (the step-0 state, base + pre-fitted head, included), early stopping after ``patience``
  validations without improvement.
* **No host syncs per step.** The loss is summed on the device and its finiteness and the
  gradient norms are checked when the loop validates (every ``eval_every_steps``), before any
  checkpoint is written: a diverged state never reaches a checkpoint or the registry
  (:class:`~traffic.forecast.result.TrainingDiverged`).
* **Checkpoints** after every validation and when the loop stops: weights, optimiser and
  schedule, position in the epoch's sample order, generator states, best state, curve.
* **Progress** (rank 0): a line on the logger ``traffic.forecast.loop`` (INFO) every
  ``log_every`` steps (default: at every validation) and at least every ``log_every_s`` seconds:
  step k/K, the mean training loss since the last validation, the last validation loss, elapsed
  time and ETA (:class:`Progress`). In an Airflow task it is part of the task log, and
  ``traffic nightly`` shows it in the terminal; ``progress=True`` adds a tqdm bar. Reporting
  reads numbers only: it draws no random numbers and changes no computation.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from traffic.forecast import distributed as ddp
from traffic.forecast.batching import Batcher
from traffic.forecast.checkpoint import rng_states, save_checkpoint
from traffic.forecast.inference import autocast
from traffic.forecast.metrics import horizon_weighted_mse, weighted_masked_mse
from traffic.forecast.result import TrainingDiverged
from traffic.model import Forecaster, HeadInputs, Terms

log = logging.getLogger(__name__)

#: Parameter names (last part) that never get weight decay, besides every 1-D parameter (biases, norms).
NO_DECAY = ("gate_logits", "peephole", "horizon_embed")


#: Parameters of the pre-fitted head (the rest, its entry of the hidden state included, is the network).
HEAD_PARAMS = ("head.", "head_sample_in.", "head_step_in.", "head_time_in.")


def param_groups(
    module: torch.nn.Module, weight_decay: float, lr: float | None = None, network_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: decay on weights of rank >= 2, none on biases, norms, gates, peepholes, embeddings.

    With ``lr`` and ``network_lr`` the network (embeddings, encoder, attention, decoder and the head's
    entry of the hidden state, ``head_hidden_in``) learns at ``network_lr`` and the pre-fitted head
    (:data:`HEAD_PARAMS`) at ``lr``: the head is already fitted, the network starts from its
    initialisation and must travel further than the head's fine-tuning in the same steps.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or name.rsplit(".", 1)[-1] in NO_DECAY)
        network = network_lr is not None and not name.startswith(HEAD_PARAMS)
        groups.setdefault((decays, network), []).append(p)
    out = []
    for (decays, network), params in sorted(groups.items()):
        g: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if lr is not None:
            g["lr"] = network_lr if network else lr
        out.append(g)
    return out


def lr_factor(step: int, total: int, warmup_fraction: float, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based) of ``total``."""
    warm = max(1, int(round(warmup_fraction * total)))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_finite_module(module: torch.nn.Module, where: str) -> None:
    for name, p in module.named_parameters():
        if not torch.isfinite(p).all():
            raise TrainingDiverged(f"parameter {name} is NaN/inf {where}")


def pretrain_head(
    module: Forecaster,
    batcher: Batcher,
    t_end: np.ndarray,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    weights: torch.Tensor,
    max_rows: int = 400_000,
) -> float | None:
    """Fit the per-cell head on its skip features alone (hidden state 0) before the network trains.

    The head's skip path sees each cell's own context and target-bin features (what a
    pointwise model such as the gradient-boosting baseline sees). Fitting that part first on
    observed targets of ``t_end``'s samples (at most ``max_rows`` rows, drawn with the seed)
    costs a few small matrix products per row, far less than a step through the recurrent
    stack, so the network starts from a good pointwise forecast (the ``base_head`` ablation)
    and its steps go to what only it can learn (neighbours, attention, memory). The learning
    rate decays with a cosine over ``steps``. Returns the last batch loss (normalised MSE), or
    None when there is nothing to fit.
    """
    cfg = module.config
    if not module.has_head_mlp or steps <= 0 or len(t_end) == 0:
        return None
    r0, r1, c0, c1 = cfg.active_box or (0, cfg.grid_shape[0], 0, cfg.grid_shape[1])
    c = cfg.n_channels
    idx = module.head_index
    gen = torch.Generator().manual_seed(seed)
    chunk = 32
    # the share of observed rows kept, so that about max_rows remain
    n_obs = 0
    for s in range(0, len(t_end), chunk):
        _, m = batcher.targets(t_end[s : s + chunk])
        n_obs += int(m[..., r0:r1, c0:c1].flatten(-2).index_select(-1, idx).any(dim=2).sum())
    keep_p = min(1.0, max_rows / max(n_obs, 1))
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("sample", "step", "time", "base", "anom", "y", "m", "w")}
    with torch.no_grad():
        for s in range(0, len(t_end), chunk):
            x, prior, y, m = batcher(t_end[s : s + chunk])
            t = module.terms(x, prior)
            base = module.base_forecast(t)[..., r0:r1, c0:c1]  # (B, H_out, C, h, w)
            crop = Terms(*(v[..., r0:r1, c0:c1] for v in t))
            inp = module.head_inputs(crop, base, module.target_calendar(x[:, :, 2 * c :, 0, 0].float()))

            def cells(z: torch.Tensor) -> torch.Tensor:  # (B, H_out, C, h, w) -> (B, H_out, N, C)
                return z.flatten(-2).index_select(-1, idx).transpose(2, 3)

            mm = cells(m[..., r0:r1, c0:c1])  # (B, H_out, N, C)
            keep = mm.any(dim=-1)  # (B, H_out, N) rows with an observed target
            keep &= torch.rand(keep.shape, generator=gen).to(keep.device) < keep_p
            b_i, j_i, n_i = keep.nonzero(as_tuple=True)
            rows["sample"].append(inp.sample[b_i, 0, n_i])  # (R, S1)
            rows["step"].append(inp.step[b_i, j_i, n_i])  # (R, 3C)
            rows["time"].append(inp.time[b_i, j_i, 0])  # (R, S3)
            rows["base"].append(cells(base)[b_i, j_i, n_i])  # (R, C)
            anom = crop.base_features[:, None, :, 0].expand(-1, base.shape[1], -1, -1, -1)  # (B, H_out, C, h, w)
            rows["anom"].append(cells(anom)[b_i, j_i, n_i])
            rows["y"].append(cells(module.normalise(y[..., r0:r1, c0:c1]))[b_i, j_i, n_i])
            rows["m"].append(mm[b_i, j_i, n_i])
            rows["w"].append(weights.to(mm.device)[j_i][:, None])  # (R, 1) the horizon's weight
    data = {k: torch.cat(v) for k, v in rows.items()}
    n = len(data["y"])
    if n == 0:
        return None
    assert module.head_hidden_in is not None and module.head_sample_in is not None
    params = [
        p
        for mod in (module.head_hidden_in, module.head_sample_in, module.head_step_in, module.head_time_in, module.head)
        if mod is not None
        for p in mod.parameters()
    ]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, steps, 0.05, 0.05))
    loss = torch.zeros(())
    for _ in range(steps):
        r = torch.randint(0, n, (min(batch_size, n),), generator=gen).to(data["y"].device)
        out = module.head_out(None, HeadInputs(data["sample"][r], data["step"][r], data["time"][r]))  # (R, 2C)
        pred = data["base"][r] + out[:, c:] * data["anom"][r] + out[:, :c]  # (R, C) normalised
        loss = weighted_masked_mse(pred, data["y"][r], data["m"][r], data["w"][r])  # rows' horizon weights
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"head pre-training loss is {loss.item()}")
    check_finite_module(module, "after the head pre-fit")
    return float(loss.detach())


@torch.no_grad()
def val_loss(
    module: Forecaster,
    batcher: Batcher,
    t_end: np.ndarray,
    batch_size: int,
    dist: ddp.DistContext | None = None,
    weights: torch.Tensor | None = None,
) -> float:
    """Masked MSE (normalised units, horizons weighted by ``weights``) over the validation samples ``t_end``.

    Summed on the device, one host sync at the end. Data-parallel: each rank scores
    ``t_end[rank::world]`` and the sums are added over ranks, so every rank returns the same loss.
    """
    dist = dist or ddp.DistContext()
    dev = batcher.device
    if dist.active:
        t_end = t_end[dist.rank :: dist.world]
    sq = torch.zeros((), dtype=torch.float64, device=dev)
    n = torch.zeros((), dtype=torch.float64, device=dev)
    for s in range(0, len(t_end), batch_size):
        x, prior, y, m = batcher(t_end[s : s + batch_size])
        with autocast(dev):
            pred = module(x, prior)
        w = torch.ones(m.shape[1], device=dev) if weights is None else weights.to(dev)
        k = (w.view(1, -1, 1, 1, 1) * m).sum().double()
        sq += horizon_weighted_mse(module.normalise(pred.float()), module.normalise(y), m, w).double() * k
        n += k
    total, n_all = ddp.sum_ranks(dist, [float(sq), float(n)], dev)
    loss = total / max(n_all, 1.0)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"validation loss is {loss}")
    return loss


@dataclass
class LoopState:
    """Where the loop is: everything a checkpoint holds besides the weights and the optimiser."""

    best_state: dict[str, torch.Tensor]
    best_val: float
    curve: list[dict[str, float]]
    step: int = 0
    best_step: int = 0
    epoch: int = 0
    offset: int = 0
    perm: np.ndarray | None = None  # the current epoch's sample order (the same on every rank)
    bad_evals: int = 0
    run_loss: float = 0.0
    run_n: int = 0
    eval_s: float = 0.0
    step_s: float = 0.0
    elapsed_s: float = 0.0  # loop time of the run before this invocation (resume)
    stopped: str = "max_epochs"
    guard_s: float = math.inf  # the wall-clock safety net of this invocation (Loop.guard_s)
    expected_s: float = math.nan  # the invocation's run as expected from its measured steps


#: Steps (after the first, which warms up) measured before the wall-clock guard is fixed.
GUARD_PROBE_STEPS = 5

#: Most seconds between two progress lines of a training loop (:class:`Progress`).
PROGRESS_EVERY_S = 30.0


def _clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    whole = int(round(max(0.0, seconds)))
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclass
class Progress:
    """Progress lines of a training loop on the logger ``traffic.forecast.loop`` (INFO).

    A line is due every ``every_steps`` steps and whenever ``every_s`` seconds have passed since
    the last one: ``<label> step k/K (p %): train loss x, val loss y, elapsed m:ss, ETA m:ss``.
    The ETA is the remaining steps at the mean time per step of this invocation (validations
    included). Nothing here touches the model, the data or a generator.

    Parameters
    ----------
    label : str
        What trains (``train``), the first word of each line.
    total : int
        Steps planned (the step budget, else epochs x steps per epoch); 0 = unknown.
    every_steps : int
        A line every this many steps (0 = by time only).
    first_step : int
        The step this invocation starts at (a resumed run's).
    every_s : float
        Most seconds between two lines.
    """

    label: str
    total: int
    every_steps: int
    first_step: int = 0
    every_s: float = PROGRESS_EVERY_S
    t0: float = field(default_factory=time.perf_counter)
    last_t: float = field(default_factory=time.perf_counter)

    def due(self, step: int, now: float | None = None) -> bool:
        """Whether a line is due after step ``step``."""
        now = time.perf_counter() if now is None else now
        return (self.every_steps > 0 and step % self.every_steps == 0) or now - self.last_t >= self.every_s

    def line(self, step: int, train_loss: float | None, val_loss: float | None, now: float | None = None) -> str:
        """The progress line after step ``step`` (``None`` losses are shown as ``-``)."""
        now = time.perf_counter() if now is None else now
        elapsed, done = now - self.t0, step - self.first_step
        if self.total:
            where = f"step {step}/{self.total} ({100 * step / self.total:.0f} %)"
            eta = _clock(elapsed / done * max(0, self.total - step)) if done > 0 else "?"
        else:
            where, eta = f"step {step}", "?"

        def num(v: float | None) -> str:
            return "-" if v is None or not math.isfinite(v) else f"{v:.4f}"

        return (
            f"{self.label} {where}: train loss {num(train_loss)}, val loss {num(val_loss)}, "
            f"elapsed {_clock(elapsed)}, ETA {eta}"
        )

    def report(self, step: int, train_loss: float | None, val_loss: float | None) -> None:
        """Log the line after step ``step`` and restart the clock of ``every_s``."""
        now = time.perf_counter()
        log.info("%s", self.line(step, train_loss, val_loss, now))
        self.last_t = now


@dataclass
class Loop:
    """What the loop runs on; :meth:`run` advances a :class:`LoopState` until a budget stops it."""

    module: Forecaster
    fwd: Any  # the training forward: the module, DDP around it, or its torch.compile
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    batcher: Batcher
    train_t: np.ndarray
    val_t: np.ndarray
    horizon_w: torch.Tensor
    batch_size: int
    eval_batch_size: int
    eval_every: int
    patience: int
    max_epochs: int
    max_steps: int  # 0 = no cap
    schedule_steps: int  # the learning-rate schedule's length: its last step is always validated
    budget_s: float
    grad_clip: float
    rng: np.random.Generator
    dist: ddp.DistContext = field(default_factory=ddp.DistContext)
    ckpt: Path | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    extra_state: dict[str, Any] = field(default_factory=dict)  # saved with every checkpoint as is
    train_horizons: int = 0  # target bins drawn per step (parallel decoder); 0 = all
    # parallel decoder: the forecast steps the network is trained on (those of non-zero horizon_w: the
    # signal horizons, traffic.forecast.horizons.signal_horizons); the others are never computed
    parallel: bool = False
    select_best: bool = True  # keep the best validation state and stop early; False = the last state ships
    guard_factor: float = 3.0  # the wall-clock guard: this many times the expected run (budget_s its floor)
    label: str = "train"  # the first word of the progress lines
    log_every: int = 0  # a progress line every this many steps; 0 = at every validation (eval_every)
    log_every_s: float | None = None  # ... and at least this often (seconds); None = PROGRESS_EVERY_S

    def guard_s(self, st: LoopState, elapsed: float, steps_done: int, step_time: float, evals_done: int) -> float:
        """The wall-clock safety net for this invocation: ``max(budget_s, guard_factor * expected run)``.

        Parameters
        ----------
        st : LoopState
        elapsed : float
            Seconds since this invocation started.
        steps_done : int
            Steps timed in this invocation (the first, warm-up step excluded).
        step_time : float
            Their total seconds.
        evals_done : int
            Validations run in this invocation (``st.eval_s``: the last one's time).

        Returns
        -------
        float
            ``budget_s`` without a step budget; infinity before the first step; else the floor
            ``budget_s`` or ``guard_factor`` times the expected run (the time so far, the
            remaining steps at the measured step time and the remaining validations at the
            last one's time), whichever is longer. ``st.expected_s`` is set to the expected run.
        """
        if not self.max_steps:
            return self.budget_s
        if steps_done > 0:
            per_step = step_time / steps_done
        elif st.step_s > 0:  # only the warm-up step so far: its time (an over-estimate) until one is timed
            per_step = st.step_s
        else:  # nothing measured yet (the loop checks between steps: nothing to guard before the first)
            return math.inf
        left = max(0, self.max_steps - st.step)
        evals_left = self.max_steps // self.eval_every - st.step // self.eval_every + 1  # + the schedule's last
        expected = elapsed + left * per_step + evals_left * (st.eval_s if evals_done else 0.0)
        st.expected_s = expected
        return max(self.budget_s, self.guard_factor * expected)

    def _save(self, st: LoopState, t_loop: float, saved_at: list[int]) -> None:
        """Checkpoint the loop (rank 0); never a diverged state: the guard has run before."""
        if self.ckpt is None or not self.dist.is_main or saved_at[0] == st.step:
            return
        check_finite_module(self.module, f"at step {st.step}")
        save_checkpoint(
            self.ckpt,
            {
                "fingerprint": self.fingerprint,
                "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "step": st.step,
                "best_step": st.best_step,
                "epoch": st.epoch,
                "offset": st.offset,
                "perm": torch.from_numpy(np.asarray(st.perm, dtype=np.int64)) if st.perm is not None else None,
                "rng": rng_states(self.rng),
                "best_state": {k: v.detach().cpu() for k, v in st.best_state.items()},
                "best_val": st.best_val,
                "bad_evals": st.bad_evals,
                "curve": st.curve,
                "run_loss": st.run_loss,
                "run_n": st.run_n,
                "eval_s": st.eval_s,
                "step_s": st.step_s,
                "elapsed_s": st.elapsed_s + time.perf_counter() - t_loop,
                **self.extra_state,
            },
        )
        saved_at[0] = st.step

    def _validate(self, st: LoopState, t_loop: float, loss_sum: torch.Tensor, gnorm_max: torch.Tensor) -> bool:
        """Guard, score and keep the best state; True when early stopping says stop."""
        m, dev = self.module, self.batcher.device
        if ddp.any_rank(self.dist, not bool(torch.isfinite(loss_sum + gnorm_max)), dev):
            raise TrainingDiverged(
                f"training loss or gradient norm is NaN/inf (or on another rank) before step {st.step} "
                f"(epoch {st.epoch}): loss sum {float(loss_sum)}, largest gradient norm {float(gnorm_max)}"
            )
        t1 = time.perf_counter()
        m.eval()
        val = val_loss(m, self.batcher, self.val_t, self.eval_batch_size, self.dist, self.horizon_w)
        m.train()
        st.eval_s = time.perf_counter() - t1
        st.run_loss += float(loss_sum)
        st.curve.append(
            {
                "epoch": st.step / max(1, self._steps_per_epoch),
                "step": st.step,
                "train_loss": st.run_loss / max(st.run_n, 1),
                "val_loss": val,
                "lr": float(self.sched.get_last_lr()[0]),
                "elapsed_s": st.elapsed_s + time.perf_counter() - t_loop,
            }
        )
        st.run_loss, st.run_n = 0.0, 0
        if not self.select_best:  # the step budget decides: the newest state is the one that ships
            st.best_val, st.best_step = val, st.step
            st.best_state = copy.deepcopy(m.state_dict())
            return False
        if val < st.best_val:
            st.best_val, st.best_step, st.bad_evals = val, st.step, 0
            st.best_state = copy.deepcopy(m.state_dict())
            return False
        st.bad_evals += 1
        return st.bad_evals >= self.patience

    def _report(self, prog: Progress | None, st: LoopState, loss_sum: torch.Tensor | None) -> None:
        """A progress line when one is due; ``loss_sum`` None: the step was just validated (its curve point)."""
        if prog is None or not prog.due(st.step):
            return
        val = st.curve[-1]["val_loss"] if st.curve else None
        if loss_sum is None:
            train = st.curve[-1]["train_loss"] if st.curve else None
        else:  # a read of the running sum (a host sync every few seconds at most): nothing is computed anew
            train = (st.run_loss + float(loss_sum)) / st.run_n if st.run_n else None
        prog.report(st.step, train, val)

    @property
    def _steps_per_epoch(self) -> int:
        return math.ceil(math.ceil(len(self.train_t) / self.dist.world) / self.batch_size)

    def run(self, st: LoopState) -> LoopState:
        """Optimise from ``st`` until ``max_steps``, early stopping, ``max_epochs`` or the wall-clock cap."""
        m, dev, dist = self.module, self.batcher.device, self.dist
        # the target bins the network trains on (non-zero horizon weight): read once, not a host sync per step
        trained_bins = np.flatnonzero(self.horizon_w.detach().cpu().numpy() > 0)
        t_loop = time.perf_counter()
        saved_at = [-1]
        bar = None
        if self.progress and dist.is_main:
            from tqdm.auto import tqdm

            total = self.max_steps or self.max_epochs * self._steps_per_epoch
            bar = tqdm(total=total, initial=st.step, desc=self.label, unit="step")
        prog = None
        if dist.is_main:
            prog = Progress(
                self.label,
                self.max_steps or self.max_epochs * self._steps_per_epoch,
                self.log_every or self.eval_every,
                first_step=st.step,
                every_s=PROGRESS_EVERY_S if self.log_every_s is None else self.log_every_s,
            )
            log.info(
                "%s: %s at step %d (%d training samples, validation every %d steps)",
                self.label,
                f"{self.max_steps} steps" if self.max_steps else f"up to {self.max_epochs} epochs",
                st.step,
                len(self.train_t),
                self.eval_every,
            )
        loss_sum = torch.zeros((), device=dev)
        gnorm_max = torch.zeros((), device=dev)
        # the wall-clock guard: provisional until GUARD_PROBE_STEPS steps and a validation were timed
        timed, timed_s, evals_done, first_step = 0, 0.0, 0, st.step
        guard_fixed = not self.max_steps
        st.guard_s = self.budget_s
        done = st.bad_evals >= self.patience  # a resumed run that had already stopped early
        if done:
            st.stopped = "early_stopping"
        while not done and st.epoch < self.max_epochs:
            if st.perm is None:  # a new epoch: the same permutation on every rank
                st.perm, st.offset = self.rng.permutation(self.train_t), 0
            order = ddp.shard(st.perm, dist)  # this rank's share
            m.train()
            while st.offset < len(order):
                if self.max_steps and st.step >= self.max_steps:
                    st.stopped, done = "max_steps", True
                    break
                # the wall-clock safety net: every step alone, at validations only when data-parallel
                at_eval = st.step % self.eval_every == 0
                if not dist.active or at_eval:
                    elapsed = time.perf_counter() - t_loop
                    if not guard_fixed:
                        st.guard_s = self.guard_s(st, elapsed, timed, timed_s, evals_done)
                        guard_fixed = timed >= GUARD_PROBE_STEPS and (
                            evals_done > 0 or st.step // self.eval_every == self.max_steps // self.eval_every
                        )
                    late = elapsed + st.step_s + (st.eval_s if (st.step + 1) % self.eval_every == 0 else 0.0)
                    if ddp.any_rank(dist, late > st.guard_s, dev):
                        st.stopped, done = "wall_clock_cap", True
                        break
                t0 = time.perf_counter()
                x, prior, y, mask = self.batcher(order[st.offset : st.offset + self.batch_size])
                h_out, weights = y.shape[1], self.horizon_w
                active = trained_bins if self.parallel else np.arange(h_out)
                if self.parallel and 0 < self.train_horizons < len(active):
                    # a random subset of the trained target bins: unbiased, cheaper
                    hz = torch.from_numpy(np.sort(self.rng.choice(active, self.train_horizons, replace=False))).to(dev)
                elif self.parallel and len(active) < h_out:
                    hz = torch.from_numpy(active).to(dev)  # only the trained target bins are computed
                else:
                    hz = None
                if hz is not None:
                    y, mask, weights = y[:, hz], mask[:, hz], weights[hz]
                    with autocast(dev):
                        pred = self.fwd(x, prior, hz)
                else:
                    with autocast(dev):
                        pred = self.fwd(x, prior)
                loss = horizon_weighted_mse(m.normalise(pred.float()), m.normalise(y), mask, weights)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()  # DDP: gradients averaged over ranks here
                gnorm = torch.nn.utils.clip_grad_norm_(m.parameters(), self.grad_clip)
                self.opt.step()
                self.sched.step()
                loss_sum = loss_sum + loss.detach()
                gnorm_max = torch.maximum(gnorm_max, gnorm.detach())
                st.step += 1
                st.offset += self.batch_size
                st.run_n += 1
                dt = time.perf_counter() - t0
                st.step_s = dt if st.step == 1 else 0.8 * st.step_s + 0.2 * dt
                if st.step > first_step + 1:  # the invocation's first step warms up: not timed
                    timed, timed_s = timed + 1, timed_s + dt
                if bar is not None:
                    bar.update(1)
                if st.step % self.eval_every == 0:
                    stop = self._validate(st, t_loop, loss_sum, gnorm_max)
                    evals_done += 1
                    loss_sum, gnorm_max = torch.zeros((), device=dev), torch.zeros((), device=dev)
                    if bar is not None:
                        bar.set_postfix(val=f"{st.curve[-1]['val_loss']:.4f}", best=f"{st.best_val:.4f}")
                    if stop:
                        st.stopped, done = "early_stopping", True
                    self._save(st, t_loop, saved_at)
                    self._report(prog, st, None)
                    if done:
                        break
                else:
                    self._report(prog, st, loss_sum)
            if done:
                break
            st.epoch, st.perm = st.epoch + 1, None
        if st.run_n and self.schedule_steps and st.step >= self.schedule_steps:
            # the schedule's last step, between validations: guard and score it (the last state competes too)
            self._validate(st, t_loop, loss_sum, gnorm_max)
        elif st.run_n and ddp.any_rank(dist, not bool(torch.isfinite(loss_sum + gnorm_max)), dev):
            raise TrainingDiverged(f"training loss or gradient norm is NaN/inf before step {st.step}")
        if not self.select_best and st.best_step != st.step:  # the last state ships, validated or not
            check_finite_module(m, f"at step {st.step}")
            st.best_state, st.best_step = copy.deepcopy(m.state_dict()), st.step
        self._save(st, t_loop, saved_at)  # where the loop stopped: a later run can go on from here
        if bar is not None:
            bar.close()
        st.elapsed_s += time.perf_counter() - t_loop
        if prog is not None:
            log.info(
                "%s: stopped at step %d (%s) after %s; best val loss %.4f at step %d",
                self.label,
                st.step,
                st.stopped,
                _clock(time.perf_counter() - t_loop),
                st.best_val,
                st.best_step,
            )
        return st
