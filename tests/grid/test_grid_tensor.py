"""GridTensor: its npz round trip (traffic.grid.writers / traffic.grid.arrays) and the holiday calendar it carries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traffic.grid.arrays import load_array
from traffic.grid.tensor import GridTensor
from traffic.grid.writers import save_array


@pytest.mark.parametrize("unit", ["us", "ns", "s"])
def test_npz_round_trip_keeps_times_mask_and_holidays(tmp_path, unit):
    times = pd.date_range("2024-12-24 20:00", periods=6, freq="1h", tz="UTC").as_unit(unit)
    values = np.arange(6 * 2 * 2 * 3, dtype=np.float32).reshape(6, 2, 2, 3)
    mask = values % 5 != 0
    g = GridTensor(
        np.where(mask, values, np.nan), mask, mask.astype(np.int32), times, ("f.a", "f.b"),
        np.arange(6, dtype=np.int32).reshape(2, 3), timezone="Europe/Berlin", holidays=("2024-12-25",),
    )  # fmt: skip
    save_array(g, tmp_path / "g.npz")
    back = load_array(tmp_path / "g.npz")
    assert back.times.equals(times.as_unit("ns"))
    np.testing.assert_array_equal(back.mask, mask)
    np.testing.assert_array_equal(np.where(back.mask, back.values, 0), np.where(mask, values, 0))
    assert back.channels == ("f.a", "f.b") and back.timezone == "Europe/Berlin"
    np.testing.assert_array_equal(back.holiday, [0, 0, 0, 1, 1, 1])  # from 23:00 UTC = midnight in Berlin
    assert back.slice_time(3, 5).holidays == ("2024-12-25",)
