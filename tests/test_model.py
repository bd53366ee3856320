"""The forecaster module: shapes, the untrained forecast, calendar decoding, linear attention, overfitting."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from traffic.forecast.baselines import time_positions
from traffic.forecast.features import build_inputs, calendar_features
from traffic.forecast.metrics import masked_mse
from traffic.grid.tensor import GridTensor
from traffic.model import Forecaster, ForecasterConfig, LinearAttention


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spinning when the machine is busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _grid(t: int, channels: tuple[str, ...], hw: tuple[int, int], seed: int = 0, freq: str = "1h") -> GridTensor:
    rng = np.random.default_rng(seed)
    c = len(channels)
    values = rng.normal(50, 10, size=(t, c, *hw)).astype(np.float32)
    mask = rng.random(values.shape) > 0.3
    times = pd.date_range("2024-03-04", periods=t, freq=freq, tz="UTC")
    return GridTensor(
        np.where(mask, values, np.nan), mask, mask.astype(np.int32), times, channels, np.zeros(hw, dtype=np.int32)
    )


def _model(channels, hw, horizon=3, context=4, bin_minutes=60, **kw) -> Forecaster:
    cfg = ForecasterConfig(
        channels=channels,
        grid_shape=hw,
        context_steps=context,
        horizon=horizon,
        bin_minutes=bin_minutes,
        profile_period=1440 // bin_minutes,
        embed_dim=4,
        hidden_dims=kw.pop("hidden_dims", (4,)),
        attn_heads=1,
        attn_head_dim=4,
        **kw,
    )
    torch.manual_seed(0)
    m = Forecaster(cfg)
    c = len(channels)
    m.set_statistics(np.full(c, 50.0), np.full(c, 10.0), np.full((cfg.profile_period, c, *hw), 50.0, dtype=np.float32))
    return m


@pytest.mark.parametrize(
    "hw,channels,horizon,box",
    [
        ((4, 4), ("loop.speed_kmh",), 1, None),
        ((3, 7), ("loop.speed_kmh", "loop.count", "cam.car"), 3, None),
        ((9, 2), ("cam.car", "cam.bike"), 2, (1, 5, 0, 2)),
        ((1, 1), ("loop.count",), 4, None),
    ],
)
def test_forward_shapes(hw, channels, horizon, box):
    g = _grid(20, channels, hw)
    m = _model(channels, hw, horizon=horizon, active_box=box)
    x = torch.from_numpy(build_inputs(g, np.array([5, 9, 19]), 4, horizon))
    assert x.shape == (3, 4, 2 * len(channels) + 7, *hw)
    y = m(x)
    assert y.shape == (3, horizon, len(channels), *hw)
    assert torch.isfinite(y).all()
    weights = m.modality_weights()
    feeds = list(dict.fromkeys(c.split(".")[0] for c in channels))
    assert list(weights) == [*feeds, "calendar", "prior"]
    assert all(0 < v < 1 for v in weights.values())


def test_rejects_input_of_another_grid():
    m = _model(("loop.speed_kmh",), (4, 5))
    g = _grid(10, ("loop.speed_kmh",), (5, 4))
    with pytest.raises(ValueError, match="does not fit the model"):
        m(torch.from_numpy(build_inputs(g, np.array([5]), 4, 3)))


def test_config_validates_names_and_box():
    with pytest.raises(ValueError, match="<feed>.<channel>"):
        ForecasterConfig(channels=("speed",))
    with pytest.raises(ValueError, match="active_box"):
        ForecasterConfig(grid_shape=(4, 4), active_box=(0, 5, 0, 4))
    with pytest.raises(ValueError, match="profile_period"):
        ForecasterConfig(bin_minutes=15, profile_period=24)


@pytest.mark.parametrize("box", [None, (1, 3, 1, 4)])
def test_untrained_model_is_damped_anomaly_persistence(box):
    """The base path: forecast = prior + share * (last observation - prior at its bin); the untrained
    network adds only a small correction (its output layers start small, not zero)."""
    hw = (4, 5)
    m = _model(("loop.speed_kmh",), hw, horizon=2, context=3, active_box=box)
    profile = np.arange(24, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, *hw), dtype=np.float32)
    m.set_statistics(np.array([10.0]), np.array([2.0]), profile)
    m.set_base(np.array([[[1.0, 0.0, 0.5, 0.0, 0.0, 0.0]], [[1.0, 0.0, 0.25, 0.0, 0.0, 0.0]]]))
    times = pd.date_range("2024-03-04 05:00", periods=3, freq="1h", tz="UTC")  # hours 5, 6, 7
    vals = np.full((3, 1, *hw), np.nan, dtype=np.float32)
    mask = np.zeros(vals.shape, dtype=bool)
    vals[1, 0, 2, 3], mask[1, 0, 2, 3] = 16.0, True  # anomaly +10 at hour 6 in cell (2, 3)
    g = GridTensor(vals, mask, mask.astype(np.int32), times, ("loop.speed_kmh",), np.zeros(hw, dtype=np.int32))
    x = torch.from_numpy(build_inputs(g, np.array([2]), 3, 2))
    with torch.no_grad():
        y = m.set_paths("base")(x)[0, :, 0].numpy()  # (2, H, W)
        full = m.set_paths("full")(x)[0, :, 0].numpy()
    expected = np.stack([np.full(hw, 8.0), np.full(hw, 9.0)])  # prior of hours 8 and 9
    expected[0, 2, 3] += 0.5 * 10
    expected[1, 2, 3] += 0.25 * 10
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    assert 0 < np.abs(full - expected).max() < 1.0  # a small correction: std 2 x a head started at 1e-2
    if box is not None:  # outside the active box the forecast is the base alone
        outside = np.ones(hw, dtype=bool)
        outside[box[0] : box[1], box[2] : box[3]] = False
        np.testing.assert_allclose(full[:, outside], expected[:, outside], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("freq", ["5min", "15min", "1h"])
def test_bin_of_week_decodes_calendar_features(freq):
    minutes = int(pd.Timedelta(freq).total_seconds() // 60)
    times = pd.date_range("2024-03-02 22:00", periods=3 * 7 * 1440 // minutes, freq=freq, tz="UTC")
    cfg = ForecasterConfig(bin_minutes=minutes, profile_period=7 * 1440 // minutes)
    m = Forecaster(cfg)
    cal = torch.from_numpy(calendar_features(times))
    got = m.bin_of_week(cal).numpy()
    np.testing.assert_array_equal(got, time_positions(times, minutes, cfg.profile_period))
    np.testing.assert_allclose(m.calendar_at(torch.from_numpy(got)).numpy(), cal[:, :5].numpy(), atol=1e-5)


def test_linear_base_features():
    """prior, level-scaled prior, last anomaly, mean anomaly, last value and a constant, in normalised units."""
    hw = (1, 2)
    m = _model(("loop.speed_kmh",), hw, horizon=1, context=3).set_paths("base")
    m.set_statistics(np.array([0.0]), np.array([1.0]), np.full((24, 1, *hw), 10.0, dtype=np.float32))
    times = pd.date_range("2024-03-04", periods=3, freq="1h", tz="UTC")
    vals = np.array([[12.0, np.nan], [np.nan, np.nan], [16.0, np.nan]], dtype=np.float32)[:, None, None, :]
    mask = np.isfinite(vals)
    g = GridTensor(vals, mask, mask.astype(np.int32), times, ("loop.speed_kmh",), np.zeros(hw, dtype=np.int32))
    x = torch.from_numpy(build_inputs(g, np.array([2]), 3, 1))
    for coef, expected in [
        ([1, 0, 0, 0, 0, 0], [10, 10]),  # the prior
        ([0, 1, 0, 0, 0, 0], [4, 0]),  # level (12 + 16) / (10 + 10) - 1 = 0.4 times the prior; none in cell 1
        ([1, 0, 1, 0, 0, 0], [16, 10]),  # + last anomaly (+6); nothing observed in cell 1
        ([1, 0, 0, 1, 0, 0], [14, 10]),  # + mean anomaly (2 + 6) / 2
        ([0, 0, 0, 0, 1, 0], [16, 0]),  # the last value (0 when none)
        ([0, 0, 0, 0, 0, 3], [3, 3]),  # a constant
    ]:
        m.set_base(np.array(coef, dtype=np.float32).reshape(1, 1, 6))
        with torch.no_grad():
            np.testing.assert_allclose(m(x)[0, 0, 0, 0].numpy(), expected, atol=1e-5)


def test_module_prior_matches_baseline_positions():
    """The module looks up the same profile bins as the seasonal baseline (time-of-day here)."""
    hw = (2, 3)
    m = _model(("loop.speed_kmh",), hw, horizon=3, context=4, bin_minutes=15)
    profile = np.arange(96, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, *hw), dtype=np.float32)
    m.set_statistics(np.array([0.0]), np.array([1.0]), profile)
    g = _grid(200, ("loop.speed_kmh",), hw, freq="15min")
    t_end = np.array([3, 95, 150])
    prior = m.prior_for(torch.from_numpy(build_inputs(g, t_end, 4, 3)))[:, :, 0, 0, 0].numpy()
    bins = t_end[:, None] + np.arange(-3, 4)[None, :]
    np.testing.assert_array_equal(prior, time_positions(g.times, 15, 96)[bins % len(g.times)])


class _MaxNumel(TorchDispatchMode):
    """Records the largest tensor produced by any operator."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_attention_memory_is_linear_in_cells():
    """On a 64x64 grid no tensor comes near (HW x HW) = 16.8M elements, in the block or the whole model."""
    hw = (64, 64)
    n = hw[0] * hw[1]
    attn = LinearAttention(dim=8, heads=2, head_dim=8)
    with _MaxNumel() as rec, torch.no_grad():
        attn(torch.randn(1, 8, *hw))
    assert rec.max_numel <= 3 * 2 * 8 * n  # the q/k/v projection, linear in cells
    m = _model(("loop.speed_kmh",), hw, horizon=2, context=3)
    g = _grid(6, ("loop.speed_kmh",), hw)
    x = torch.from_numpy(build_inputs(g, np.array([4]), 3, 2))
    with _MaxNumel() as rec, torch.no_grad():
        y = m(x)
    assert y.shape == (1, 2, 1, *hw)
    # the largest tensor is a per-cell feature stack (a few dozen channels x cells): linear, far from n * n
    assert rec.max_numel <= 64 * n  # linear in cells: one n x n tensor would be 4096 * n here


def test_attention_mixes_distant_cells():
    """A change in one corner reaches the opposite corner in one block (a 3x3 conv could not)."""
    torch.manual_seed(0)
    attn = LinearAttention(dim=4, heads=1, head_dim=4)
    torch.nn.init.normal_(attn.proj.weight)
    x = torch.randn(1, 4, 10, 10)
    x2 = x.clone()
    x2[0, :, 0, 0] += 5.0
    with torch.no_grad():
        diff = (attn(x2) - attn(x))[0, :, 9, 9].abs().sum()
    assert diff > 1e-4


def test_tiny_batch_overfit():
    """Two samples: the masked loss falls to a small fraction of its start."""
    channels = ("loop.speed_kmh", "cam.car")
    hw = (5, 6)
    g = _grid(30, channels, hw, seed=1)
    m = _model(channels, hw, horizon=2, context=4, hidden_dims=(8,))
    t_end = np.array([10, 20])
    x = torch.from_numpy(build_inputs(g, t_end, 4, 2))
    tidx = t_end[:, None] + np.arange(1, 3)[None, :]
    y = torch.from_numpy(np.nan_to_num(g.values[tidx]))
    mask = torch.from_numpy(g.mask[tidx])
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    losses = []
    for _ in range(300):
        loss = masked_mse(m.normalise(m(x)), m.normalise(y), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert math.isfinite(losses[-1])
    assert losses[-1] < 0.1 * losses[0]


def test_module_round_trips_through_torch_save():
    """The registry stores the whole module: statistics and config come back with it."""
    channels = ("loop.speed_kmh",)
    m = _model(channels, (3, 4), active_box=(0, 2, 1, 4))
    m.set_base(np.random.default_rng(0).normal(size=(3, 1, 6)))
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    x = torch.from_numpy(build_inputs(_grid(10, channels, (3, 4)), np.array([6]), 4, 3))
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
    assert m2.config == m.config


def test_holiday_reads_sundays_prior():
    """With a weekly profile, context and target bins on a holiday take Sunday's profile at the same hour."""
    hw = (1, 1)
    cfg = ForecasterConfig(grid_shape=hw, context_steps=3, horizon=2, bin_minutes=60, profile_period=168)
    m = Forecaster(cfg)
    m.set_statistics(np.array([0.0]), np.array([1.0]), np.arange(168, dtype=np.float32).reshape(168, 1, 1, 1))
    times = pd.date_range("2024-12-24 21:00", periods=6, freq="1h", tz="UTC")  # Tuesday 21:00 .. Wednesday 02:00
    vals = np.ones((6, 1, *hw), dtype=np.float32)
    mask = np.ones(vals.shape, dtype=bool)
    g = GridTensor(
        vals, mask, mask.astype(np.int32), times, ("loop.speed_kmh",), np.zeros(hw, np.int32),
        timezone="UTC", holidays=("2024-12-25",),
    )  # fmt: skip
    prior = m.prior_for(torch.from_numpy(build_inputs(g, np.array([3]), 3, 2)))[0, :, 0, 0, 0].numpy()
    # context 22:00, 23:00 (Tuesday = day 1), 00:00 Wednesday (holiday); targets 01:00, 02:00 (holiday)
    np.testing.assert_array_equal(prior, [24 + 22, 24 + 23, 6 * 24 + 0, 6 * 24 + 1, 6 * 24 + 2])
    np.testing.assert_array_equal(prior, time_positions(g.times, 60, 168, g.holiday)[1:6])


@pytest.mark.parametrize(
    "variant",
    [
        {"cell": "convgru"},
        {"decoder": "autoregressive"},
        {"peephole": True},
        {"attention": False},
        {"cell": "convgru", "decoder": "autoregressive", "hidden_dims": (4, 4)},
        {"patch": 2},  # 5 x 6 grid: packed to 3 x 3 positions with zero padding
        {"patch": 3, "decoder": "autoregressive"},
        {"decoder": "direct"},
        {"decoder": "parallel", "patch": 2},
        {"decoder": "parallel", "head_hidden": 0},
        {},
    ],
)
def test_variants_share_the_interface(variant):
    """Every variant: same shapes, the base path equals the plain model's, and every parameter of every
    path (embeddings, encoder, attention, decoder, head) gets gradient: the head's entry of the hidden
    state on the very first step, every path behind it (zero-initialised entry) from the second."""
    hw, channels = (5, 6), ("loop.speed_kmh", "cam.car")
    g = _grid(20, channels, hw)
    x = torch.from_numpy(build_inputs(g, np.array([5, 19]), 4, 3))
    plain = _model(channels, hw, horizon=3)
    m = _model(channels, hw, horizon=3, **variant)
    with torch.no_grad():
        y = m(x)
        assert y.shape == (2, 3, 2, *hw)
        base = m.set_paths("base")(x)
        np.testing.assert_allclose(base.numpy(), plain.set_paths("base")(x).numpy(), rtol=1e-5, atol=1e-4)
        m.set_paths("full")
    assert (m.attention is None) == (variant.get("attention") is False)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for step in (0, 1):
        opt.zero_grad()
        loss = masked_mse(m.normalise(m(x)), m.normalise(torch.zeros_like(y)), torch.ones_like(y, dtype=torch.bool))
        loss.backward()
        no_grad = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        if step == 0 and m.head_hidden_in is not None:  # only the zero entry stops gradient at step 0
            assert m.head_hidden_in.weight.grad.abs().sum() > 0
            assert no_grad and all(not n.startswith("head") for n in no_grad), no_grad
        opt.step()
    assert no_grad == [], f"parameters without gradient at step 1: {no_grad}"


@pytest.mark.parametrize("variant", [{}, {"decoder": "parallel"}, {"cell": "convgru"}])
def test_step_zero_of_the_full_model_is_base_plus_head_exactly(variant):
    """The recurrent path enters through zero weights: before training the full model forecasts what base + head does."""
    hw, channels = (5, 6), ("loop.speed_kmh", "cam.car")
    g = _grid(20, channels, hw)
    x = torch.from_numpy(build_inputs(g, np.array([5, 19]), 4, 3))
    m = _model(channels, hw, horizon=3, **variant)
    with torch.no_grad():
        for p in m.parameters():  # the head as if pre-fitted: any weights, not the init's
            p.add_(0.05 * torch.randn_like(p))
        m.head_hidden_in.weight.zero_()
        full = m.set_paths("full")(x)
        head = m.set_paths("base_head")(x)
    np.testing.assert_array_equal(full.numpy(), head.numpy())
    fresh = _model(channels, hw, horizon=3, **variant)
    assert fresh.head_hidden_in is not None and not fresh.head_hidden_in.weight.any()


@pytest.mark.parametrize("variant", [{}, {"decoder": "direct"}, {"head_hidden": 0}])
def test_beyond_the_network_steps_the_full_model_is_base_plus_the_prefitted_head(variant, tmp_path):
    """keep_head: the first bins come from the trained network, every later bin from the head as pre-fitted
    (a frozen copy): the full model there equals the base + head ablation exactly, through a subset of
    horizons, a save and load, and torch.export (what the registry serves)."""
    from traffic.forecast.model_folder import load_model, save_model

    hw, channels = (5, 6), ("loop.speed_kmh", "cam.car")
    g = _grid(30, channels, hw, seed=3)
    x = torch.from_numpy(build_inputs(g, np.array([10, 20]), 4, 5))
    m = _model(channels, hw, horizon=5, **variant)
    with torch.no_grad():
        for p in m.parameters():  # the head as pre-fitted: any weights
            p.add_(0.05 * torch.randn_like(p))
        prefit = {k: v.clone() for k, v in m.state_dict().items()}
        ablation = m.set_paths("base_head")(x)
        for p in m.parameters():  # training then moves every weight, the head's too
            p.add_(0.05 * torch.randn_like(p))
        trained = m.set_paths("full")(x)
        m.keep_head(2, prefit)
        kept = m(x)
    assert m.config.network_steps == 2 and m.kept_bins
    np.testing.assert_array_equal(kept[:, :2].numpy(), trained[:, :2].numpy())
    np.testing.assert_allclose(kept[:, 2:].numpy(), ablation[:, 2:].numpy(), rtol=1e-6, atol=1e-5)
    assert not np.allclose(trained[:, 2:].numpy(), ablation[:, 2:].numpy(), atol=1e-3)  # the drift it removes
    assert not any(n.startswith("kept_") for n, _ in m.named_parameters())  # never trained
    if variant.get("decoder") != "direct":  # a subset of target bins, each from the part that serves it
        hz = torch.tensor([1, 2, 4])
        with torch.no_grad():
            np.testing.assert_allclose(m(x, horizons=hz).numpy(), kept[:, hz].numpy(), rtol=1e-5, atol=1e-5)
    back = load_model(save_model(m, tmp_path / "saved"))
    assert back.config.network_steps == 2
    with torch.no_grad():
        np.testing.assert_array_equal(back(x).numpy(), kept.numpy())
    program = torch.export.export(m, (x,)).module()
    with torch.no_grad():
        np.testing.assert_allclose(program(x).numpy(), kept.numpy(), rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="missing"):
        _model(channels, hw, horizon=5, **variant).keep_head(2, {})
    with pytest.raises(ValueError, match="network_steps"):
        ForecasterConfig(horizon=3, network_steps=4)


def test_variant_config_is_validated():
    with pytest.raises(ValueError, match="cell"):
        ForecasterConfig(cell="transformer")
    with pytest.raises(ValueError, match="decoder"):
        ForecasterConfig(decoder="beam")
    with pytest.raises(ValueError, match="peepholes"):
        Forecaster(ForecasterConfig(cell="convgru", peephole=True))


@pytest.mark.parametrize("paths", ["full", "base_head", "base"])
def test_a_subset_of_horizons_is_the_same_forecast(paths):
    """Training draws target bins per step: the forecast of a subset equals those rows of the whole."""
    hw, channels = (5, 6), ("loop.speed_kmh", "cam.car")
    g = _grid(30, channels, hw, seed=2)
    m = _model(channels, hw, horizon=5, head_cells=(0, 3, 7, 11, 29)).set_paths(paths)
    x = torch.from_numpy(build_inputs(g, np.array([10, 20]), 4, 5))
    hz = torch.tensor([0, 2, 4])
    with torch.no_grad():
        np.testing.assert_allclose(m(x, horizons=hz).numpy(), m(x)[:, hz].numpy(), rtol=1e-5, atol=1e-5)


def test_the_head_runs_on_its_cells_only():
    """Off the head cells (never observed in training) the forecast is the linear base."""
    hw, channels = (5, 6), ("loop.speed_kmh",)
    g = _grid(30, channels, hw, seed=3)
    cells = (1, 8, 20)
    m = _model(channels, hw, horizon=2, head_cells=cells)
    x = torch.from_numpy(build_inputs(g, np.array([12]), 4, 2))
    with torch.no_grad():
        full, base = m(x)[0, :, 0].numpy(), m.set_paths("base")(x)[0, :, 0].numpy()  # (H_out, H, W)
    on = np.zeros(hw, dtype=bool).ravel()
    on[list(cells)] = True
    on = on.reshape(hw)
    np.testing.assert_allclose(full[:, ~on], base[:, ~on], rtol=1e-6, atol=1e-6)
    assert np.abs(full[:, on] - base[:, on]).min() > 0
    with pytest.raises(ValueError, match="head_cells"):
        ForecasterConfig(grid_shape=(2, 2), head_cells=(0, 4))


def test_a_day_ahead_forecast_of_berlins_new_year_reads_sundays_profile_in_every_target_bin():
    """Berlin's nightly run for 2025-01-01 (a public holiday of the shipped city's calendar): 12 bins of
    context, 24 targets. Every target bin, the morning ones too (further ahead than the context reaches),
    takes Sunday's profile at its hour: the positions of the seasonal baselines (``time_positions``)."""
    from traffic.calendar import grid_holidays
    from traffic.config import load_city

    berlin = load_city("berlin")
    hw = (1, 1)
    cfg = ForecasterConfig(
        grid_shape=hw, context_steps=12, horizon=24, bin_minutes=60, profile_period=168, utc_offset_minutes=60
    )
    m = Forecaster(cfg)
    m.set_statistics(np.array([0.0]), np.array([1.0]), np.arange(168, dtype=np.float32).reshape(168, 1, 1, 1))
    times = pd.date_range("2024-12-31 00:00", "2024-12-31 23:00", freq="1h", tz="Europe/Berlin").tz_convert("UTC")
    vals = np.ones((len(times), 1, *hw), dtype=np.float32)
    mask = np.ones(vals.shape, dtype=bool)
    g = GridTensor(
        vals, mask, mask.astype(np.int32), times, ("telraam.speed_kmh",), np.zeros(hw, np.int32),
        timezone=berlin.timezone, holidays=grid_holidays(berlin.calendar, times),
    )  # fmt: skip
    assert "2025-01-01" in g.holidays
    prior = m.prior_for(torch.from_numpy(build_inputs(g, np.array([len(times) - 1]), 12, 24)))[0, :, 0, 0, 0].numpy()
    targets = times[-1] + pd.to_timedelta(np.arange(1, 25), unit="h")
    np.testing.assert_array_equal(prior[12:], 6 * 24 + np.arange(24))  # Sunday 00:00 .. 23:00
    np.testing.assert_array_equal(prior[12:], time_positions(targets, 60, 168, g.holiday_at(targets), 60))
    np.testing.assert_array_equal(prior[:12], 24 + np.arange(12, 24))  # the context: Tuesday 12:00 .. 23:00


def test_the_spec_file_and_the_module_agree_on_every_default():
    """One set of defaults: models/convlstm_attention.toml's [model] is the dataclass's defaults, key by key."""
    import dataclasses

    from traffic.forecast.train import load_model_spec

    spec = load_model_spec()["model"]
    defaults = {f.name: f.default for f in dataclasses.fields(ForecasterConfig)}
    differ = {
        k: (v, defaults.get(k))
        for k, v in spec.items()
        if (tuple(v) if isinstance(v, list) else v) != defaults.get(k, object())
    }
    assert differ == {}, f"models/convlstm_attention.toml [model] and ForecasterConfig disagree: {differ}"
