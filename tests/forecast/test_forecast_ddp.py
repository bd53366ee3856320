"""Data-parallel training: the per-rank sample shards, and a 2-process gloo run under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from traffic.forecast.distributed import DistContext, shard
from traffic.grid.writers import save_array

from .synth import synthetic_grid

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (2, 4), (1, 2)])
def test_shards_are_equal_sized_and_cover_the_order(n, world):
    order = np.random.default_rng(0).permutation(np.arange(100, 100 + n))
    parts = [shard(order, DistContext(rank=r, world=world)) for r in range(world)]
    assert len({len(p) for p in parts}) == 1  # every rank takes the same number of steps
    assert len(parts[0]) == -(-n // world)
    assert set(np.concatenate(parts)) == set(order)
    for r, part in enumerate(parts):  # rank r takes every world-th sample from r on, wrapping round to pad
        np.testing.assert_array_equal(part, order[(np.arange(len(part)) * world + r) % n])


def test_shard_is_the_identity_outside_a_distributed_run():
    order = np.arange(5)
    assert shard(order, DistContext()) is order


@pytest.mark.slow
def test_torchrun_two_gloo_processes_train_the_same_weights(tmp_path):
    grid = synthetic_grid(days=8, freq="1h", shape=(5, 6))
    npz = tmp_path / "grid.npz"
    save_array(grid, npz)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "traffic.forecast.distributed",
        "--npz",
        str(npz),
        "--context-steps",
        "6",
        "--horizon-steps",
        "3",
        "--holdout-days",
        "1",
        "--train-days",
        "5",
        "--budget-s",
        "60",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    ]
    for kv in ("max_steps=8", "batch_size=8", "eval_every_steps=4", "max_val_samples=16", "cpu_threads=1"):
        cmd += ["--set", kv]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["steps"] == 8 and r["stopped_reason"] == "max_steps" for r in ranks)
    assert ranks[0]["state_sha256"] == ranks[1]["state_sha256"]  # DDP kept the replicas identical
    assert ranks[0]["best_val_loss"] == ranks[1]["best_val_loss"]  # the all-reduced validation loss
    # the weights moved from their init: the validation loss of the state that ships (the last one,
    # fit_on_validation) differs from the step-0 loss
    assert ranks[0]["best_val_loss"] != ranks[0]["initial_val_loss"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and "model" in metrics["metrics"]
    assert np.isfinite(metrics["metrics"]["model"]["rmse"]).all()
    state = torch.load(out / "model.pt", weights_only=True)
    assert "encoder.0.conv.weight" in state  # the plain module's names, not DDP's "module." prefix
    ck = torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)  # written by rank 0
    assert ck["step"] == 8 and ck["fingerprint"]["world_size"] == 2
