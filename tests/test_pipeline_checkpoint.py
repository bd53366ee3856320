"""The nightly training checkpoints and resumes (``pipeline._train_resumable``) with the real trainer."""

from __future__ import annotations

import logging

import pytest

from tests.forecast.synth import synthetic_grid
from traffic import pipeline
from traffic.forecast.train import train_forecaster
from traffic.resources import Resources

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
def grid():
    return synthetic_grid(days=8, freq="1h", shape=(5, 6))


def _run(grid, **over):
    return lambda **kw: train_forecaster(grid, **SPLIT, model_overrides={**FAST, **over}, **kw)


def test_a_killed_nightly_training_resumes_and_a_foreign_checkpoint_is_dropped(grid, tmp_path, caplog):
    ckpt = tmp_path / "checkpoints" / "town" / "2024-01-08"
    first = pipeline._train_resumable(ckpt, _run(grid, max_steps=4))  # what a killed run left: its checkpoint
    assert first.extra["resumed_from_step"] is None and (ckpt / "checkpoint.pt").is_file()
    again = pipeline._train_resumable(ckpt, _run(grid, max_steps=8))
    assert again.extra["resumed_from_step"] == 4 and again.extra["steps"] == 8
    with caplog.at_level(logging.WARNING, logger="traffic.pipeline"):
        other = pipeline._train_resumable(ckpt, _run(grid, max_steps=4, lr=1e-2))  # other configuration
    assert other.extra["resumed_from_step"] is None and other.extra["steps"] == 4
    assert any("training afresh" in r.getMessage() for r in caplog.records)
    pipeline._drop_checkpoint(ckpt)
    assert not ckpt.exists()


def test_checkpoint_dir_is_per_city_and_as_of(los_angeles, traffic_home):
    assert (
        pipeline._checkpoint_dir(los_angeles, "2012-03-07", Resources.under(traffic_home))
        == traffic_home / "checkpoints" / "los_angeles" / "2012-03-07"
    )
