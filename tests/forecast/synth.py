"""Small synthetic GridTensors for the forecaster tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from traffic.grid.tensor import GridTensor


def synthetic_grid(
    *,
    days: int = 6,
    freq: str = "1h",
    shape: tuple[int, int] = (5, 6),
    channels: tuple[str, ...] = ("loop.speed_kmh", "cam.car"),
    observed_share: float = 0.4,
    missing: float = 0.1,
    seed: int = 0,
    start: str = "2024-03-04",  # a Monday
) -> GridTensor:
    """A daily cycle per cell and channel plus an AR(1) anomaly; some cells never observed, some bins missing."""
    rng = np.random.default_rng(seed)
    times = pd.date_range(start, periods=int(days * pd.Timedelta("1D") / pd.Timedelta(freq)), freq=freq, tz="UTC")
    t, c = len(times), len(channels)
    h, w = shape
    hour = (times.hour + times.minute / 60).to_numpy()
    level = rng.uniform(20, 80, size=(1, c, h, w))
    amp = rng.uniform(5, 20, size=(1, c, h, w))
    cycle = np.sin(2 * np.pi * (hour - 8) / 24)[:, None, None, None]
    anomaly = np.zeros((t, c, h, w))
    noise = rng.normal(0, 3, size=(t, c, h, w))
    for i in range(1, t):  # AR(1), a loop over bins (not observations) in a test helper
        anomaly[i] = 0.9 * anomaly[i - 1] + noise[i]
    values = (level + amp * cycle + anomaly).astype(np.float32)
    cells = rng.random((1, 1, h, w)) < observed_share
    cells[..., 0, 0] = True
    mask = np.broadcast_to(cells, values.shape) & (rng.random(values.shape) > missing)
    return GridTensor(
        np.where(mask, values, np.nan).astype(np.float32),
        mask.copy(),
        mask.astype(np.int32),
        times,
        channels,
        np.arange(h * w, dtype=np.int32).reshape(h, w),
    )
