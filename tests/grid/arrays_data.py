"""Gridded arrays for the tests of traffic.grid.arrays, traffic.forecast.evaluation and `traffic grid`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from traffic.grid.tensor import GridTensor

#: Few optimisation steps: the end-to-end checks test the plumbing, not accuracy.
TINY = {"max_steps": 3, "max_epochs": 1, "batch_size": 8, "eval_every_steps": 2, "max_val_samples": 8, "cpu_threads": 1}


def flows(t: int = 192, c: int = 2, h: int = 8, w: int = 8, *, missing: float = 0.1, seed: int = 0) -> np.ndarray:
    """In/out-flow-like counts ``(T, C, H, W)`` at 30-minute bins: a daily cycle per cell, NaN where missing."""
    rng = np.random.default_rng(seed)
    tod = np.sin(2 * np.pi * np.arange(t) / 48)[:, None, None, None]
    v = rng.uniform(10, 100, (1, c, h, w)) * (1.2 + tod) + rng.normal(0, 3, (t, c, h, w))
    v = np.maximum(v, 0).astype(np.float32)
    v[rng.random(v.shape) < missing] = np.nan
    return v


def make_grid(t: int = 192, c: int = 2, h: int = 8, w: int = 8) -> GridTensor:
    v = flows(t, c, h, w)
    v[:, :, -1, :] = np.nan  # an edge row and the last bin never observed: the shape must survive
    v[-1] = np.nan
    m = np.isfinite(v)
    times = pd.date_range("2015-03-02", periods=t, freq="30min", tz="UTC")
    cells = np.arange(100, 100 + h * w, dtype=np.int32).reshape(h, w)
    return GridTensor(v, m, m.astype(np.int32) * 2, times, tuple(f"bike.ch{i}" for i in range(c)), cells)


def long_table(**cols) -> pa.Table:
    return pa.table(cols)
