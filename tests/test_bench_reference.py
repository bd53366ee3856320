"""The naive reference ConvLSTM of the speed benchmark and the benchmark's helpers (tiny sizes, nothing timed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench import bench_model_speed as bms
from bench.reference_convlstm import NaiveConvLSTMCell, NaiveEncoderForecaster


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spinning when the machine is busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomised_cell(in_dim: int, hid: int, hw: tuple[int, int], seed: int = 0) -> NaiveConvLSTMCell:
    torch.manual_seed(seed)
    cell = NaiveConvLSTMCell(in_dim, hid, hw)
    with torch.no_grad():
        for p in (cell.w_ci, cell.w_cf, cell.w_co):
            p.normal_()  # the peepholes start at zero: make them count
    return cell


@pytest.mark.parametrize("in_dim,hid,hw", [(3, 2, (4, 5)), (1, 4, (3, 3)), (5, 3, (1, 6))])
def test_naive_cell_equals_the_fused_convlstm(in_dim, hid, hw):
    """8 separate convolutions = one convolution over [x, h] with the stacked weights (Shi et al. eq. 3)."""
    cell = _randomised_cell(in_dim, hid, hw)
    x = torch.randn(2, in_dim, *hw)
    h, c = torch.randn(2, hid, *hw), torch.randn(2, hid, *hw)
    weight = torch.cat(
        [torch.cat([getattr(cell, f"w_x{g}").weight, getattr(cell, f"w_h{g}").weight], dim=1) for g in "ifco"], dim=0
    )  # (4 hid, in + hid, k, k)
    bias = torch.cat([getattr(cell, f"w_x{g}").bias for g in "ifco"])  # (4 hid,)
    with torch.no_grad():
        i, f, g, o = F.conv2d(torch.cat([x, h], dim=1), weight, bias, padding=1).chunk(4, dim=1)
        i = torch.sigmoid(i + cell.w_ci * c)
        f = torch.sigmoid(f + cell.w_cf * c)
        c_new = f * c + i * torch.tanh(g)
        h_new = torch.sigmoid(o + cell.w_co * c_new) * torch.tanh(c_new)
        got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_c, c_new)
    torch.testing.assert_close(got_h, h_new)


def test_peepholes_are_per_cell():
    """Changing the peephole weights of one grid cell changes that cell's new state only."""
    cell = _randomised_cell(2, 3, (4, 5))
    x, h, c = torch.randn(1, 2, 4, 5), torch.randn(1, 3, 4, 5), torch.randn(1, 3, 4, 5)
    with torch.no_grad():
        h0, c0 = cell(x, (h, c))
        cell.w_cf[:, 2, 3] += 1.0
        h1, c1 = cell(x, (h, c))
    changed = ((h1 - h0).abs().sum(dim=(0, 1)) > 0) | ((c1 - c0).abs().sum(dim=(0, 1)) > 0)  # (H, W)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[2, 3] = True
    assert torch.equal(changed, expected)


def test_forget_bias_and_zero_state():
    cell = NaiveConvLSTMCell(2, 3, (2, 2), forget_bias=1.5)
    assert torch.all(cell.w_xf.bias == 1.5) and torch.all(cell.w_xi.bias != 1.5)
    h, c = cell.init_state(torch.ones(4, 2, 2, 2))
    assert h.shape == c.shape == (4, 3, 2, 2) and not h.any() and not c.any()
    assert h.data_ptr() != c.data_ptr()


@pytest.mark.parametrize("feed", [True, False])
def test_encoder_forecaster_shapes_and_every_weight_learns(feed):
    """Output (B, horizon, C, H, W); every convolution, peephole and the head get a gradient."""
    torch.manual_seed(0)
    m = NaiveEncoderForecaster(
        in_dim=5, out_dim=2, grid_shape=(3, 4), hidden_dims=(3, 4), horizon=3, feed_prediction=feed
    )
    x = torch.randn(2, 4, 5, 3, 4)
    y = m(x)
    assert y.shape == (2, 3, 2, 3, 4)
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        if not feed and name.startswith("forecaster.0.w_x") and name.endswith("weight"):
            assert not p.grad.any(), name  # zero input: its weights cannot learn
        else:
            assert p.grad.abs().sum() > 0, name


def test_forecaster_reads_its_previous_prediction():
    """feed_prediction: the first forecast step reads the last observed values; with zeros it does not."""
    torch.manual_seed(0)
    fed = NaiveEncoderForecaster(4, 2, (3, 3), (3,), horizon=2, feed_prediction=True)
    zero = NaiveEncoderForecaster(4, 2, (3, 3), (3,), horizon=2, feed_prediction=False)
    zero.load_state_dict(fed.state_dict())
    x = torch.randn(1, 3, 4, 3, 3)
    x_last_zero = x.clone()
    x_last_zero[:, -1, :2] = 0.0
    with torch.no_grad():
        # with the last values zeroed, feeding them back equals feeding zeros
        torch.testing.assert_close(fed(x_last_zero)[:, 0], zero(x_last_zero)[:, 0])
        assert not torch.allclose(fed(x)[:, 0], zero(x)[:, 0])


def test_reference_rejects_more_outputs_than_inputs():
    with pytest.raises(ValueError, match="out_dim 5 > in_dim 4"):
        NaiveEncoderForecaster(4, 5, (2, 2))


# ------------------------------------------------------------------------------- bench helpers
TINY = replace(bms.QUICK, grid=6, batch=3)


def test_make_batch_layouts():
    b = bms.make_batch(TINY)
    c, n = TINY.channels, TINY.grid
    assert b.x.shape == b.x_ref.shape == (3, TINY.context, 2 * c + 7, n, n)
    assert b.y.shape == b.y_n.shape == b.mask.shape == (3, TINY.horizon, c, n, n)
    obs = b.x[:, :, c : 2 * c] > 0.5
    torch.testing.assert_close(b.x_ref[:, :, :c][obs], (b.x[:, :, :c][obs] - bms.MEAN) / bms.STD)
    assert not b.x_ref[:, :, :c][~obs].any()
    torch.testing.assert_close(b.x_ref[:, :, c:], b.x[:, :, c:])  # masks and calendar untouched
    torch.testing.assert_close(b.y_n[b.mask], (b.y[b.mask] - bms.MEAN) / bms.STD)
    assert 0.5 < b.mask.float().mean() < 0.9


@pytest.mark.parametrize("name", list(bms.VARIANTS))
def test_every_variant_trains_on_the_bench_batch(name):
    """The timed step is a real training step: the loss on the fixed batch falls."""
    b = bms.make_batch(TINY)
    model = bms.build_model(name, TINY)
    loss = bms.loss_closure(name, model, b)
    with torch.no_grad():
        before = float(loss())
    step = bms.train_step(model, loss)
    for _ in range(15):
        step()
    with torch.no_grad():
        after = float(loss())
    assert np.isfinite(after) and after < before
    out = bms.infer_step(bms.forward_closure(name, model, b))()
    assert np.isfinite(out)


def test_forward_flops_count_the_convolutions():
    """Reference forward FLOPs: 8 convolutions per cell step, 2 FLOPs per multiply-add, plus the 1x1 head."""
    size = replace(bms.QUICK, grid=4, hidden=(3,), context=2, horizon=2, batch=1)
    m = bms.build_model("reference", size)
    f, c, hid, cells = 2 * size.channels + 7, size.channels, 3, 16
    enc = 2 * cells * 9 * hid * (4 * f + 4 * hid)  # per encoder step: 4 gates x (x conv + h conv)
    dec = 2 * cells * 9 * hid * (4 * c + 4 * hid)
    head = 2 * cells * hid * c
    expected = size.context * enc + size.horizon * (dec + head)
    assert bms.forward_gflops_per_sample("reference", m, size) * 1e9 == pytest.approx(expected)


def _m(wall: float, cpu: float = 0.0, load: float = 0.0) -> bms.Measurement:
    return bms.Measurement(wall, cpu, load)


def test_paired_ratios_and_spread():
    ref = [_m(3.0), _m(4.0), _m(6.0)]
    ours = [_m(2.0), _m(2.0), _m(2.0)]
    assert bms.paired_ratios(ref, ours) == [1.5, 2.0, 3.0]
    assert bms.spread([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert bms.fmt_spread([3.0, 1.0, 2.0], 1) == "2.0 [1.0-3.0]"
    with pytest.raises(ValueError):
        bms.paired_ratios(ref, ours[:2])


def test_interleaved_runs_steps_in_turn():
    calls: list[str] = []
    steps = {k: (lambda k=k: calls.append(k) or 0.0) for k in "abc"}
    out = bms.interleaved(steps, repeat=2, per_rep=2, warmup=1, log=lambda s: None)
    assert calls == list("abc") + list("aabbcc") * 2
    assert {k: len(v) for k, v in out.items()} == {"a": 2, "b": 2, "c": 2}


def _row(grid: int, step_s: float, mem: int, numel: int, batch: int = 1) -> dict:
    return {"grid": grid, "batch": batch, "step_s": step_s, "maxrss": mem, "max_numel": numel, "first_step_s": step_s}


def test_normalise_scaling_relative_to_the_smallest_grid():
    idle = 100
    rows = [_row(32, 1.0, idle + 1024, 10 * 1024), _row(64, 4.0, idle + 4096, 10 * 4096, batch=1)]
    rows.append(_row(128, 64.0, idle + 2 * 16384 * 2, 10 * 16384 * 2, batch=2))
    out = bms.normalise_scaling(rows, idle)
    assert [r["time_rel"] for r in out] == [1.0, 1.0, 2.0]
    assert [r["mem_rel"] for r in out] == [1.0, 1.0, 2.0]
    assert [r["numel_rel"] for r in out] == [1.0, 1.0, 1.0]
    assert bms.quadratic_problems(out) == []
    assert bms.linear_fit(out, "step_s")[2] > 0.1  # per sample 1, 4, 32 s over 1k, 4k, 16k cells: not a line
    line = [_row(g, 0.5 + 2e-3 * g * g, 0, 1) for g in (32, 64, 128)]
    slope, intercept, dev = bms.linear_fit(line, "step_s")
    assert slope == pytest.approx(2e-3) and intercept == pytest.approx(0.5) and dev < 1e-9
    quadratic = bms.normalise_scaling([_row(32, 1.0, 200, 1024 * 1024), _row(64, 4.0, 500, 4096 * 4096)], idle)
    problems = bms.quadratic_problems(quadratic)
    assert len(problems) == 2 and all(p.startswith("grid 64") for p in problems)


def test_scaling_worker_largest_tensor_is_linear_in_cells():
    """The recorded largest tensor of a real training step grows with cells, not cells squared."""
    size = replace(bms.QUICK, hidden=(4, 4))
    rows = [bms.scaling_worker(g, 1, size) for g in (16, 32)]
    for r in rows:
        assert r["step_s"] > 0 and r["maxrss"] >= r["rss_before_step"] > 0
    per_cell = [r["max_numel"] / r["grid"] ** 2 for r in rows]
    assert per_cell[1] == pytest.approx(per_cell[0], rel=0.01)
    # the widest per-cell tensor (the head's skip features: ~180 values per cell) stays far below HW x HW
    assert rows[1]["max_numel"] < (32 * 32) ** 2 // 4
    assert bms.scaling_worker(0, 1, size).keys() == {"grid", "maxrss"}


@pytest.mark.slow
def test_quick_run_prints_both_sections(capsys):
    bms.main(["--quick", "--no-write", "--threads", "1"])
    out = capsys.readouterr().out
    assert "| training speed ours (b) / reference (a) |" in out
    assert "| time attention (b) / plain (c) |" in out
    assert out.count("| 8 | 64 |") == 1 and out.count("| 16 | 256 |") == 1
