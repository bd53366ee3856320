"""Data-parallel training (``torch.distributed``) for :func:`traffic.forecast.train.train_forecaster`.

Launch with ``torchrun``; every rank runs the same training on the same grid file::

    torchrun --standalone --nproc_per_node 2 -m traffic.forecast.distributed \\
        --npz grid.npz --context-steps 12 --horizon-steps 3 --holdout-days 1 --train-days 5 \\
        --budget-s 600 --out runs/ddp

``train_forecaster`` sees ``WORLD_SIZE > 1`` in the environment and then

* joins the process group (``gloo`` on CPU, ``nccl`` on CUDA, one GPU per ``LOCAL_RANK``),
  unless the caller already did;
* wraps the module in ``DistributedDataParallel`` (gradients averaged across ranks);
* draws every epoch's sample order from the shared seed (the same permutation on all ranks),
  pads it to a multiple of the world size by repeating its head (as ``DistributedSampler``
  does) and gives rank ``r`` the samples ``order[r::world]``: ``batch_size`` is per rank, a
  step sees ``world * batch_size`` samples;
* scores the validation samples sharded the same way and sums the squared errors and counts
  over ranks (``all_reduce``), so every rank sees the same validation loss and early stopping
  decides identically; the wall-clock budget and the NaN/inf guard are agreed by ``all_reduce``
  too (a rank never waits in a collective for a rank that stopped);
* only rank 0 shows progress, writes checkpoints, and scores the holdout and the baselines.
  The other ranks return a :class:`~traffic.forecast.result.TrainResult` with the same trained
  module and learning curve but empty ``metrics`` (``extra["rank"]`` tells them apart).

This module's CLI writes, under ``--out``: ``rank<r>.json`` from every rank (steps, stop
reason, sha256 of the final state dict) and, from rank 0, ``metrics.json`` (the holdout
metrics of the model and the baselines) and ``model.pt`` (the state dict).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this code initialised the process group (and tears it down)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset), as ``torchrun`` sets it."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment WORLD_SIZE={raw!r} is not an integer") from None


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when ``WORLD_SIZE > 1``; the device of this rank (``cuda:LOCAL_RANK`` on CUDA)."""
    if env_world_size() <= 1 and not dist.is_initialized():
        return DistContext(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), owns), device


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard(order: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's share ``padded[rank::world]`` of a sample order (padded by repeating its head)."""
    if not ctx.active or len(order) == 0:
        return order
    total = -(-len(order) // ctx.world) * ctx.world
    padded = np.resize(order, total)  # repeats from the start, like DistributedSampler
    return padded[ctx.rank :: ctx.world]


def any_rank(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank (a no-op when not distributed)."""
    if not ctx.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_ranks(ctx: DistContext, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks, in float64 (a no-op when not distributed)."""
    if not ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def wrap(module: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``module`` (the module itself when not distributed).

    Parameters and buffers are broadcast from rank 0 once, here; buffers (the fitted
    statistics) do not change while training, so they are not re-broadcast every step.
    ``static_graph`` tolerates parameters a model variant leaves unused.
    """
    if not ctx.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,  # synced once at construction (init_sync), not every forward
        static_graph=True,
    )


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over the names and bytes of ``module``'s state dict (equal digests = equal weights)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, lists, booleans), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    """CLI: train on a grid ``.npz`` (``traffic.grid.writers.save_array``) on every rank; see the module docstring."""
    from traffic.forecast.train import train_forecaster
    from traffic.grid.arrays import load_array

    ap = argparse.ArgumentParser(prog="python -m traffic.forecast.distributed", description=main.__doc__)
    ap.add_argument("--npz", required=True, help="grid file written by traffic.grid.writers.save_array")
    ap.add_argument("--context-steps", type=int, required=True)
    ap.add_argument("--horizon-steps", type=int, required=True)
    ap.add_argument("--holdout-days", type=float, required=True)
    ap.add_argument("--train-days", type=float, required=True)
    ap.add_argument("--budget-s", type=float, default=600.0, help="wall-clock cap of the training loop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", required=True, help="directory for rank<r>.json, metrics.json and model.pt")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [model] or [training] key of models/convlstm_attention.toml (repeatable)",
    )
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = _parse_value(value.strip())

    grid = load_array(args.npz)
    result = train_forecaster(
        grid,
        context_steps=args.context_steps,
        horizon_steps=args.horizon_steps,
        holdout_days=args.holdout_days,
        train_days=args.train_days,
        budget_s=args.budget_s,
        seed=args.seed,
        device=args.device,
        progress=False,
        model_overrides=overrides,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(result.extra.get("rank", 0))
    summary = {
        "rank": rank,
        "world_size": int(result.extra.get("world_size", 1)),
        "steps": int(result.extra["steps"]),
        "stopped_reason": result.stopped_reason,
        "best_val_loss": float(result.extra["best_val_loss"]),
        "initial_val_loss": float(result.learning_curve[0]["val_loss"]),
        "state_sha256": state_digest(result.module),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(summary, indent=2))
    if rank == 0:
        metrics = {
            "grid": args.npz,
            "shape": list(grid.shape),
            "holdout": {"start": result.holdout.start, "end": result.holdout.end, "digest": result.holdout.digest},
            "metrics": {k: m.as_dict() for k, m in result.metrics.items()},
            "learning_curve": result.learning_curve,
            **summary,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        torch.save(result.module.state_dict(), out / "model.pt")
        print(f"rank 0 of {summary['world_size']}: {summary['steps']} steps, wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
