"""Which baselines gate promotion: the model spec's [promotion] section."""

from __future__ import annotations

import pytest

from traffic import pipeline
from traffic.forecast import train
from traffic.forecast.baselines import BASELINES


def test_shipped_gate_is_every_baseline_gbm_included():
    gates = pipeline.promotion_gate_baselines()
    assert gates == ("persistence", "seasonal_average", "ridge", "gbm")
    assert set(gates) == set(BASELINES)  # a model that does not beat gradient boosting is never champion


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"gate_baselines": ["ridge", "gbm"]}, ("ridge", "gbm")),
        (None, BASELINES),  # no [promotion] section: every baseline gates
    ],
)
def test_gate_follows_the_spec(monkeypatch, section, expected):
    spec = {"model": {}, "training": {}} | ({"promotion": section} if section is not None else {})
    monkeypatch.setattr(train, "load_model_spec", lambda: spec)
    assert pipeline.promotion_gate_baselines() == tuple(expected)


@pytest.mark.parametrize("gates", [["ridge", "prophet"], []])
def test_unknown_or_empty_gate_is_an_error(monkeypatch, gates):
    monkeypatch.setattr(
        train, "load_model_spec", lambda: {"model": {}, "training": {}, "promotion": {"gate_baselines": gates}}
    )
    with pytest.raises(ValueError, match="gate_baselines"):
        pipeline.promotion_gate_baselines()
