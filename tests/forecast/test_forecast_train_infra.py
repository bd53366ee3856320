"""Training-loop infrastructure: step cap and seeds, checkpoint/resume, the NaN guard on data, warm start."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from traffic.forecast.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    transfer_parameters,
)
from traffic.forecast.features import build_inputs
from traffic.forecast.split import make_split
from traffic.forecast.train import TrainingDiverged, load_model_spec, train_forecaster
from traffic.grid.tensor import GridTensor
from traffic.model import Forecaster, ForecasterConfig

from .synth import synthetic_grid

# 5 days of hourly bins, batch 8: 12 steps per epoch; validation every 4 steps
FAST = {
    "max_epochs": 3,
    "batch_size": 8,
    "eval_every_steps": 4,
    "max_val_samples": 16,
    "cpu_threads": 1,
    "patience": 100,
}
SPLIT = dict(context_steps=6, horizon_steps=3, holdout_days=1, train_days=5, budget_s=120)


@pytest.fixture(scope="module")
def grid() -> GridTensor:
    return synthetic_grid(days=8, freq="1h", shape=(5, 6))


def _train(grid: GridTensor, **kw):
    over = {**FAST, **kw.pop("overrides", {})}
    return train_forecaster(grid, **SPLIT, model_overrides=over, **kw)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ seeds, step cap


@pytest.mark.slow
def test_step_cap_and_seed_give_bit_identical_weights(grid):
    a = _train(grid, seed=3, overrides={"max_steps": 7})
    b = _train(grid, seed=3, overrides={"max_steps": 7})
    c = _train(grid, seed=4, overrides={"max_steps": 7})
    assert a.stopped_reason == b.stopped_reason == "max_steps"
    assert a.extra["steps"] == b.extra["steps"] == 7
    _assert_same_state(a.module.state_dict(), b.module.state_dict())  # parameters and buffers
    assert not _same_state(a.module.state_dict(), c.module.state_dict())
    # the same metrics, model and ablations: a step budget makes the run reproducible
    assert a.metrics["model"].rmse == b.metrics["model"].rmse
    assert {k: v.rmse for k, v in a.ablation.items()} == {k: v.rmse for k, v in b.ablation.items()}
    assert [r["val_loss"] for r in a.learning_curve] == [r["val_loss"] for r in b.learning_curve]


def test_step_budget_wins_over_a_loose_wall_clock_and_the_cap_is_recorded(grid):
    """``max_steps`` decides; the wall clock only stops a run that would overrun it, and says so."""
    r = train_forecaster(grid, **{**SPLIT, "budget_s": 600}, max_steps=5, model_overrides=FAST)
    assert r.stopped_reason == "max_steps" and r.extra["steps"] == 5 and not r.extra["wall_clock_cap"]
    with pytest.raises(ValueError, match="max_steps"):
        train_forecaster(grid, **SPLIT, max_steps=-1, model_overrides=FAST)


def test_the_wall_clock_guard_is_sized_from_the_measured_steps(grid):
    """A configured budget far below the run's time does not cut a step-budgeted run: the guard is a
    multiple of the run expected from its measured steps; a run that overruns that multiple is stopped
    and says so, with the guard and the expected run."""
    long = {**FAST, "max_epochs": 1000}
    whole = train_forecaster(grid, **{**SPLIT, "budget_s": 1e-3}, max_steps=24, model_overrides=long)
    assert whole.stopped_reason == "max_steps" and whole.extra["steps"] == 24 and not whole.extra["wall_clock_cap"]
    expected, guard = whole.extra["expected_train_s"], whole.extra["wall_clock_guard_s"]
    assert 0 < expected and guard == pytest.approx(3.0 * expected)  # the spec's wall_clock_factor; the floor is 1 ms
    # a guard below the expected run (a machine this much slower than its first steps) stops it, recorded
    capped = train_forecaster(
        grid, **{**SPLIT, "budget_s": 1e-3}, max_steps=200, model_overrides={**long, "wall_clock_factor": 0.2}
    )
    assert capped.stopped_reason == "wall_clock_cap" and capped.extra["wall_clock_cap"]
    assert 5 < capped.extra["steps"] < 200
    assert capped.extra["wall_clock_guard_s"] == pytest.approx(0.2 * capped.extra["expected_train_s"])
    # without a step budget the configured budget alone stops the run
    free = train_forecaster(grid, **{**SPLIT, "budget_s": 0.5}, max_steps=0, model_overrides=long)
    assert free.stopped_reason == "wall_clock_cap" and free.extra["wall_clock_guard_s"] == 0.5
    with pytest.raises(ValueError, match="max_steps"):
        train_forecaster(grid, **SPLIT, max_steps=-1, model_overrides=FAST)


def test_a_budget_sized_by_the_data_is_epochs_of_origins_capped_by_the_step_budget(grid):
    """``epochs`` sizes the step budget by the training origins (the city's ``train_epochs``), ``max_steps``
    caps it (the city's ``train_steps``); the resolved budget is on the run."""
    long = {**FAST, "max_epochs": 1000}
    r = train_forecaster(grid, **SPLIT, max_steps=100, epochs=1.5, model_overrides=long)
    origins, bs = r.params["training_origins"], FAST["batch_size"]
    assert origins > 0 and r.params["epochs"] == 1.5
    assert r.params["budget_steps"] == math.ceil(1.5 * math.ceil(origins / bs)) == r.extra["steps"] < 100
    assert r.stopped_reason == "max_steps" and r.params["budget_samples"] == r.params["budget_steps"] * bs
    capped = train_forecaster(grid, **SPLIT, max_steps=5, epochs=1.5, model_overrides=long)
    assert capped.params["budget_steps"] == capped.extra["steps"] == 5
    alone = train_forecaster(grid, **SPLIT, max_steps=0, epochs=0.5, model_overrides=long)  # no cap: epochs decide
    assert alone.extra["steps"] == math.ceil(0.5 * math.ceil(origins / bs))
    with pytest.raises(ValueError, match="epochs"):
        train_forecaster(grid, **SPLIT, max_steps=5, epochs=-1.0, model_overrides=FAST)


# --------------------------------------------------------------------------- checkpoint / resume


def test_checkpoint_round_trip_is_weights_only_and_restores_generators(tmp_path):
    gen = np.random.default_rng(5)
    gen.random(3)
    states = rng_states(gen)
    path = save_checkpoint(tmp_path / "ck" / "c.pt", {"rng": states, "x": torch.arange(3), "curve": [{"a": 1.0}]})
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # the temporary file is gone
    raw = torch.load(path, weights_only=True)  # nothing but tensors and primitive containers
    assert raw["curve"] == [{"a": 1.0}]
    want_np, want_torch = gen.random(4), torch.rand(4)
    np.random.seed(0)
    other = np.random.default_rng(99)
    restore_rng_states(other, load_checkpoint(path)["rng"])
    np.testing.assert_array_equal(other.random(4), want_np)
    assert torch.equal(torch.rand(4), want_torch)


def test_load_checkpoint_refuses_another_format(tmp_path):
    torch.save({"format": 999}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="format 999"):
        load_checkpoint(tmp_path / "c.pt")


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [6, 12])  # mid-epoch between validations; an epoch boundary on a validation
def test_resume_after_a_crash_reaches_the_uninterrupted_weights(grid, tmp_path, crash_at):
    """N steps straight == ``crash_at`` steps, stop, resume to N: bit-identical on CPU.

    Exact equality holds because the checkpoint restores everything the remaining steps
    read (weights, AdamW moments and step counts, the epoch's sample order and the position in
    it, the generators) and the CPU kernels are deterministic at a fixed thread count.
    """
    n = 16  # crosses the epoch boundary at step 12
    sched = {"schedule_steps": n}  # the learning-rate schedule of the N-step run, crashed or not
    straight = _train(grid, seed=1, checkpoint_dir=tmp_path / "a", overrides={"max_steps": n, **sched})
    crashed = _train(grid, seed=1, checkpoint_dir=tmp_path / "b", overrides={"max_steps": crash_at, **sched})
    assert crashed.extra["steps"] == crash_at and crashed.stopped_reason == "max_steps"
    resumed = _train(grid, seed=1, checkpoint_dir=tmp_path / "b", resume=True, overrides={"max_steps": n, **sched})
    assert resumed.extra["resumed_from_step"] == crash_at and resumed.extra["steps"] == n
    _assert_same_state(straight.module.state_dict(), resumed.module.state_dict())  # the best state
    ca, cb = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME), load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert ca["step"] == cb["step"] == n
    _assert_same_state(ca["model"], cb["model"])  # the last state
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        _assert_same_state(sa, sb)
    assert [c["val_loss"] for c in straight.learning_curve] == [c["val_loss"] for c in resumed.learning_curve]
    assert [c["step"] for c in resumed.learning_curve] == [0, 4, 8, 12, 16]
    assert not _same_state(ca["model"], crashed.module.state_dict())  # the resumed steps did change the weights


def test_resume_refuses_a_checkpoint_of_another_run(grid, tmp_path):
    _train(grid, checkpoint_dir=tmp_path, overrides={"max_steps": 4})
    with pytest.raises(ValueError, match=r"training\.lr"):
        _train(grid, checkpoint_dir=tmp_path, resume=True, overrides={"max_steps": 8, "lr": 1e-2})


def test_resume_without_a_checkpoint_starts_afresh_and_needs_a_directory(grid, tmp_path):
    r = _train(grid, checkpoint_dir=tmp_path / "empty", resume=True, overrides={"max_steps": 4})
    assert r.extra["resumed_from_step"] is None and r.extra["steps"] == 4
    ck = torch.load(tmp_path / "empty" / CHECKPOINT_NAME, weights_only=True)
    assert ck["step"] == 4 and ck["best_val"] == r.extra["best_val_loss"] and len(ck["curve"]) == 2
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _train(grid, resume=True, overrides={"max_steps": 4})


# ------------------------------------------------------------------------------------ NaN guard


@pytest.mark.parametrize("bad", [np.inf, np.nan, -np.inf])
def test_non_finite_observation_aborts_training(grid, tmp_path, bad):
    g = dataclasses.replace(grid, values=grid.values.copy())
    s = make_split(g, context_steps=6, horizon_steps=3, holdout_days=1, train_days=5)
    t, c, r, q = np.argwhere(g.mask[s.fit_start + 24 : s.val_start])[0]  # an observed cell of the training window
    g.values[s.fit_start + 24 + t, c, r, q] = bad
    with pytest.raises(TrainingDiverged):
        _train(g, checkpoint_dir=tmp_path, overrides={"max_steps": 4})
    assert not (tmp_path / CHECKPOINT_NAME).exists()  # nothing written for a diverged run


def test_warm_start_from_a_diverged_model_aborts_before_any_checkpoint(grid, tmp_path):
    model_kw = load_model_spec()["model"]
    cfg = ForecasterConfig(channels=grid.channels, grid_shape=grid.shape[2:], horizon=3, profile_period=24, **model_kw)
    state = {k: torch.full_like(v, float("nan")) for k, v in Forecaster(cfg).named_parameters()}
    with pytest.raises(TrainingDiverged):
        _train(grid, checkpoint_dir=tmp_path, warm_start=state, overrides={"max_steps": 4})
    assert not (tmp_path / CHECKPOINT_NAME).exists()


# ----------------------------------------------------------------------------------- warm start


def _module(channels: tuple[str, ...], hidden: tuple[int, ...] = (8,), seed: int = 0) -> Forecaster:
    torch.manual_seed(seed)
    return Forecaster(ForecasterConfig(channels=channels, grid_shape=(4, 5), profile_period=24, hidden_dims=hidden))


def _exported(m: Forecaster) -> torch.nn.Module:
    cfg = m.config
    x = torch.zeros(2, cfg.context_steps, cfg.n_features, *cfg.grid_shape)
    return torch.export.export(m, (x,), dynamic_shapes=[{0: torch.export.Dim.AUTO}]).module()


@pytest.mark.parametrize("kind", ["module", "state_dict", "exported"])
def test_transfer_copies_matching_parameters_only(kind):
    src = _module(("loop.speed_kmh", "cam.car"), seed=1)
    src.mean.fill_(7.0)  # a statistic of the source's data
    dst = _module(("sensor.flow",), seed=2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    source = {"module": lambda: src, "state_dict": src.state_dict, "exported": lambda: _exported(src)}[kind]()
    rep = transfer_parameters(dst, source)
    names = [n for n, _ in dst.named_parameters()]
    assert rep["copied"] == [n for n in names if n in rep["copied"]]  # in the target's order
    assert sorted(rep["copied"] + rep["skipped"]) == sorted(names)
    assert "encoder.0.conv.weight" in rep["copied"] and "attention.qkv.weight" in rep["copied"]
    assert "fusion.embed.sensor.weight" in rep["skipped"]  # another feed
    src_state, dst_state = src.state_dict(), dst.state_dict()
    for n in rep["copied"]:
        assert torch.equal(dst_state[n], src_state[n]), n
    for n in rep["skipped"]:
        assert torch.equal(dst_state[n], before[n]), n
    for b in ("mean", "std", "profile", "base_coef"):  # buffers never move
        assert torch.equal(dst_state[b], before[b]), b


def test_transfer_moves_whole_layers_only():
    """Other hidden sizes: the recurrent core, attention and head stay; a bias never moves without its weight."""
    rep = transfer_parameters(_module(("a.x",), hidden=(8,)), _module(("a.x",), hidden=(4,)))
    assert not any(n.startswith(("encoder.", "forecaster.", "attention.")) for n in rep["copied"])
    assert "attention.qkv.bias" in rep["skipped"]  # the same shape, but its weight differs
    assert {"fusion.embed.a.weight", "fusion.embed.a.bias", "head_time_in.weight"} <= set(rep["copied"])


def test_transfer_rejects_other_sources():
    with pytest.raises(TypeError, match="warm_start"):
        transfer_parameters(_module(("a.x",)), [1, 2])  # type: ignore[arg-type]


def test_warm_start_in_training_copies_weights_and_refits_statistics(grid):
    """lr = 0 keeps every weight where initialisation left it: copied ones equal the source's."""
    other = synthetic_grid(days=8, freq="1h", shape=(5, 6), channels=("metr.speed_kmh",), seed=7)
    source = _train(other, overrides={"max_steps": 4}).module
    frozen = {"max_steps": 2, "lr": 0.0, "network_lr": 0.0, "weight_decay": 0.0, "head_pretrain_steps": 0}  # no pre-fit
    warm = _train(grid, warm_start=source, overrides=frozen)
    scratch = _train(grid, overrides=frozen)
    rep = warm.extra["warm_start"]
    assert scratch.extra["warm_start"] is None and warm.params["warm_start_copied"] == len(rep["copied"])
    assert "encoder.0.conv.weight" in rep["copied"] and "fusion.embed.loop.weight" in rep["skipped"]
    w, s, src = warm.module.state_dict(), scratch.module.state_dict(), source.state_dict()
    for n in rep["copied"]:
        assert torch.equal(w[n], src[n]), n
    for n in rep["skipped"]:
        assert torch.equal(w[n], s[n]), n
    for b in ("mean", "std", "profile", "base_coef"):  # fitted on this grid, as from scratch
        assert torch.equal(w[b], s[b]), b
    x = torch.from_numpy(build_inputs(grid, np.array([100]), 6, 3))
    assert torch.isfinite(warm.module(x)).all()


# ------------------------------------------------------------------------------ progress lines


def test_progress_lines_say_step_losses_and_eta_and_change_no_number(grid, caplog, monkeypatch):
    """A line at every validation and every ``PROGRESS_EVERY_S``; reporting every step trains the same weights."""
    from traffic.forecast import loop

    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", float("inf"))  # lines at validations only
    with caplog.at_level("INFO", logger="traffic.forecast.loop"):
        quiet = _train(grid, seed=3, overrides={"max_steps": 7})
    at_evals = [r.getMessage() for r in caplog.records if r.name == "traffic.forecast.loop"]
    assert any(m.startswith("train: 7 steps at step 0") for m in at_evals), at_evals
    assert any(m.startswith("train step 4/7 (57 %): train loss ") and ", ETA " in m for m in at_evals), at_evals
    assert any(m.startswith("train: stopped at step 7 (max_steps)") for m in at_evals), at_evals
    caplog.clear()
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)  # a line after every step: the running loss is read each time
    with caplog.at_level("INFO", logger="traffic.forecast.loop"):
        chatty = _train(grid, seed=3, overrides={"max_steps": 7})
    lines = [r.getMessage() for r in caplog.records if r.message.startswith("train step ")]
    assert [m.split(":")[0] for m in lines] == [f"train step {k}/7 ({100 * k / 7:.0f} %)" for k in range(1, 8)]
    val = [m.split("val loss ")[1].split(",")[0] for m in lines]
    assert val[0] == val[2] != val[3] == val[6]  # the step-0 validation, then the one of step 4
    _assert_same_state(quiet.module.state_dict(), chatty.module.state_dict())

    def curve(r):  # the losses and learning rates, bit for bit (NaN included); not the clock
        return [repr({k: v for k, v in p.items() if k != "elapsed_s"}) for p in r.learning_curve]

    assert curve(quiet) == curve(chatty)


def test_progress_line_format():
    from traffic.forecast.loop import Progress

    p = Progress("train", total=100, every_steps=10, first_step=20, t0=0.0, last_t=0.0)
    assert p.due(30, now=1.0) and not p.due(31, now=29.0) and p.due(31, now=30.5)
    assert p.line(40, 0.51234, None, now=60.0) == (
        "train step 40/100 (40 %): train loss 0.5123, val loss -, elapsed 1:00, ETA 3:00"
    )
    assert Progress("train", 0, 0).line(5, None, 0.25).startswith("train step 5: train loss -, val loss 0.2500")
