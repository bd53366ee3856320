"""The promotion rule: a worse model never becomes champion."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from traffic.forecast.result import HorizonMetrics
from traffic.registry.promotion import Decision, decide_promotion, pct_change


def hm(*rmse: float) -> HorizonMetrics:
    return HorizonMetrics(mae=[0.8 * v for v in rmse], rmse=list(rmse), n=[100] * len(rmse))


@pytest.mark.parametrize(
    ("challenger", "champion", "baseline", "expected"),
    [
        pytest.param(hm(1.0, 2.0, 3.0), None, hm(2.0, 3.0, 4.0), True, id="no-champion-beats-baseline"),
        pytest.param(hm(1.0, 2.0, 3.0), hm(1.5, 2.5, 3.0), hm(2.0, 3.0, 4.0), True, id="beats-both"),
        pytest.param(hm(3.0, 3.0, 3.0), None, hm(2.0, 3.0, 3.5), False, id="worse-than-baseline"),
        pytest.param(
            hm(3.0, 3.0, 3.0),
            hm(9.0, 9.0, 9.0),
            hm(2.0, 3.0, 3.5),
            False,
            id="worse-than-baseline-better-than-champion",
        ),
        pytest.param(hm(1.0, 2.0, 3.0), hm(1.0, 1.5, 3.0), hm(2.0, 3.0, 4.0), False, id="worse-than-champion"),
        pytest.param(hm(1.0, 2.0, 3.0), None, hm(3.0, 2.0, 1.0), False, id="tie-with-baseline"),
        pytest.param(hm(1.0, 2.0, 3.0), hm(2.0, 2.0, 2.0), hm(5.0, 5.0, 5.0), False, id="tie-with-champion"),
        pytest.param(hm(0.3 * (1 - 1e-12), 1.0), hm(0.3, 1.0), hm(5.0, 5.0), False, id="tie-within-float-noise"),
        # better on average but not on every horizon: the rule is the mean over horizons
        pytest.param(hm(0.5, 3.5), hm(2.0, 2.5), hm(5.0, 5.0), True, id="mean-decides"),
        pytest.param(hm(math.nan, 1.0), None, hm(5.0, 5.0), False, id="nan-challenger"),
        pytest.param(hm(1.0, 1.0), None, hm(math.nan, 5.0), False, id="nan-baseline"),
        pytest.param(hm(1.0, 1.0), hm(math.nan, 1.0), hm(5.0, 5.0), True, id="nan-champion-is-beaten"),
    ],
)
def test_decide_promotion(challenger, champion, baseline, expected):
    d = decide_promotion(challenger, champion, ("persistence", baseline))
    assert isinstance(d, Decision)
    assert d.promote is expected
    assert d.reason.startswith("promoted" if expected else "not promoted")
    # the reason states the numbers it was decided on
    if math.isfinite(challenger.rmse_mean):
        assert f"{challenger.rmse_mean:.4f}" in d.reason
    assert "persistence" in d.reason
    if champion is not None and math.isfinite(champion.rmse_mean) and "beats best baseline" in d.reason:
        assert f"{champion.rmse_mean:.4f}" in d.reason
    assert d.champion_rmse == (None if champion is None else pytest.approx(champion.rmse_mean, nan_ok=True))
    assert d.baseline == "persistence"


def test_a_promoted_challenger_is_better_than_everything_it_was_compared_with():
    """Property over many random metric triples: promote implies strictly lower mean RMSE."""
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(500):
        c, ch, b = (hm(*rng.choice([1.0, 2.0, 3.0], size=3)) for _ in range(3))
        champ = ch if rng.random() < 0.7 else None
        d = decide_promotion(c, champ, ("ridge", b))
        expected = c.rmse_mean < b.rmse_mean and (champ is None or c.rmse_mean < champ.rmse_mean)
        assert d.promote is expected, d.reason


def test_metrics_of_different_horizon_counts_are_not_comparable():
    with pytest.raises(ValueError, match="same"):
        decide_promotion(hm(1.0, 2.0), hm(1.0, 2.0, 3.0), ("persistence", hm(2.0, 2.0)))
    with pytest.raises(ValueError, match="baseline 'persistence'"):
        decide_promotion(hm(1.0, 2.0), None, ("persistence", hm(2.0)))


GATES = {
    "persistence": hm(4.0, 4.0),
    "seasonal_average": hm(3.0, 3.0),
    "ridge": hm(2.5, 2.5),
    "gbm": hm(2.0, 2.0),
}


def test_gbm_gates_a_challenger_that_beats_every_other_baseline():
    challenger = hm(2.2, 2.2)  # beats persistence, seasonal average and ridge, not gbm
    d = decide_promotion(challenger, None, GATES)
    assert not d.promote
    assert d.baseline == "gbm" and d.baseline_rmse == pytest.approx(2.0)
    assert d.reason.startswith("not promoted: challenger mean RMSE 2.2000 does not beat best baseline 'gbm' 2.0000")
    # every gate is named with its number and the challenger's change against it
    for name, m in GATES.items():
        assert f"{m.rmse_mean:.4f}" in d.reason and name in d.reason
    assert dict(d.gates) == {k: v.rmse_mean for k, v in GATES.items()}
    assert "not a gate" not in d.reason

    # without gbm among the gates, the same challenger passes: gbm is what stopped it
    assert decide_promotion(challenger, None, {k: v for k, v in GATES.items() if k != "gbm"}).promote


def test_a_challenger_that_beats_every_baseline_and_the_champion_is_promoted():
    d = decide_promotion(hm(1.5, 1.5), hm(1.8, 1.8), GATES)
    assert d.promote and d.baseline == "gbm"
    assert "beats best baseline 'gbm' 2.0000 (-25.00%)" in d.reason and "champion 1.8000" in d.reason
    assert not decide_promotion(hm(1.9, 1.9), hm(1.8, 1.8), GATES).promote  # beats gbm, not the champion


def test_an_unscored_gate_blocks_promotion():
    nan_gbm = {**GATES, "gbm": hm(math.nan, math.nan)}
    d = decide_promotion(hm(0.1, 0.1), None, nan_gbm)
    assert not d.promote and d.baseline == "gbm" and "not finite, cannot compare" in d.reason
    with pytest.raises(ValueError, match="at least one gating baseline"):
        decide_promotion(hm(1.0), None, {})


def test_the_rule_and_the_card_import_neither_mlflow_nor_torch():
    code = (
        "import sys, traffic.registry.promotion, traffic.registry.card, traffic.registry.names; "
        "print(sorted(m for m in ('mlflow', 'torch', 'traffic.registry.mlflow_registry') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("a", "b", "text"),
    [(0.875, 1.0, "-12.50%"), (1.5, 1.0, "+50.00%"), (1.0, 0.0, "n/a"), (1.0, math.nan, "n/a"), (1.0, 1.0, "+0.00%")],
)
def test_pct_change_is_signed_relative_to_the_reference(a, b, text):
    assert pct_change(a, b) == text


# ------------------------------------------------------------------ the backtest rule (decide_serving)

from traffic.forecast.backtest import Comparison  # noqa: E402
from traffic.registry.promotion import decide_serving  # noqa: E402

BT_GATES = ("persistence", "seasonal_average", "ridge", "gbm")


def _cmps(scores: dict[str, float], sure: set[tuple[str, str]]) -> dict[tuple[str, str], Comparison]:
    """Comparisons of every pair: the relative difference of the scores, significant only for the pairs in ``sure``."""
    out = {}
    for a, sa in scores.items():
        for b, sb in scores.items():
            if a != b:
                d = sa / sb - 1
                half = abs(d) / 2 if (a, b) in sure else abs(d) + 0.05
                out[(a, b)] = Comparison(d, d - half, d + half, 7)
    return out


SCORES = {
    "model": 10.0,
    "base": 10.4,
    "base_head": 9.8,
    "persistence": 14.0,
    "seasonal_average": 11.0,
    "ridge": 10.9,
    "gbm": 10.2,
}


def test_the_best_network_variant_serves_when_it_beats_every_gate_significantly():
    sure = {("base_head", g) for g in BT_GATES}
    d = decide_serving(SCORES, _cmps(SCORES, sure), gates=BT_GATES, incumbent=None, folds_text="backtest over 4 folds")
    assert (d.serves, d.kind, d.promote, d.best) == ("base_head", "model", True, "base_head")
    assert d.reason.startswith("promoted: backtest over 4 folds: best candidate 'base_head' mean RMSE 9.8000")
    assert "gbm -3.92 %" in d.reason and "(significant)" in d.reason


def test_no_significant_difference_to_gbm_on_a_first_night_serves_the_best_gate():
    sure = {("base_head", g) for g in BT_GATES if g != "gbm"}
    d = decide_serving(SCORES, _cmps(SCORES, sure), gates=BT_GATES, incumbent=None)
    assert (d.serves, d.kind, d.promote) == ("gbm", "baseline", False)
    assert "not significantly better than gbm" in d.reason and "stop-gap" in d.reason


def test_the_champion_keeps_serving_without_a_significant_improvement_over_it():
    scores = {**SCORES, "champion": 9.9}
    sure = {("base_head", g) for g in BT_GATES}
    d = decide_serving(scores, _cmps(scores, sure), gates=BT_GATES, incumbent="champion")
    assert (d.serves, d.kind, d.promote) == ("champion", "model", False)
    assert d.reason.startswith("kept 'champion'") and "no significant difference keeps what serves" in d.reason
    # significantly better than the champion too: the new version's variant takes over
    d2 = decide_serving(scores, _cmps(scores, sure | {("base_head", "champion")}), gates=BT_GATES, incumbent="champion")
    assert (d2.serves, d2.promote) == ("base_head", True)


def test_a_baseline_can_take_over_from_a_champion_and_a_network_from_a_baseline():
    scores = {**SCORES, "gbm": 9.0, "champion": 10.5}
    d = decide_serving(scores, _cmps(scores, {("gbm", "champion")}), gates=BT_GATES, incumbent="champion")
    assert (d.serves, d.kind, d.promote) == ("gbm", "baseline", False) and d.reason.startswith("switched")
    # the serving baseline is itself a candidate: it stays while nothing beats it significantly
    d2 = decide_serving(SCORES, _cmps(SCORES, set()), gates=BT_GATES, incumbent="gbm")
    assert (d2.serves, d2.kind) == ("gbm", "baseline") and d2.reason.startswith("kept 'gbm'")
    sure = {("base_head", g) for g in BT_GATES}
    d3 = decide_serving(SCORES, _cmps(SCORES, sure), gates=BT_GATES, incumbent="gbm")
    assert (d3.serves, d3.promote) == ("base_head", True)


def test_an_incumbent_that_was_not_scored_is_not_comparable():
    sure = {("base_head", g) for g in BT_GATES}
    d = decide_serving(SCORES, _cmps(SCORES, sure), gates=BT_GATES, incumbent="champion")
    assert d.serves == "base_head" and "not comparable" in d.reason
    with pytest.raises(ValueError, match="no candidate has a finite backtest score"):
        decide_serving({"model": math.nan}, {}, gates=BT_GATES, incumbent=None)


def test_the_best_that_is_significantly_better_serves_when_the_best_by_score_is_not():
    """The lowest score spans zero against GBM; the next one beats every gate significantly: it serves."""
    from traffic.forecast.backtest import Comparison
    from traffic.registry.promotion import decide_serving

    scores = {"base": 222.6, "model": 224.1, "gbm": 230.4, "seasonal_average": 245.8}
    sig, wide = Comparison(-0.025, -0.041, -0.008, 28), Comparison(-0.022, -0.046, 0.003, 28)
    comparisons = {
        ("base", "gbm"): wide,
        ("base", "seasonal_average"): Comparison(-0.09, -0.12, -0.06, 28),
        ("model", "gbm"): sig,
        ("model", "seasonal_average"): Comparison(-0.08, -0.11, -0.05, 28),
    }
    d = decide_serving(scores, comparisons, gates=("gbm", "seasonal_average"), incumbent=None)
    assert d.best == "base" and d.serves == "model" and d.promote
    assert "the next best 'model'" in d.reason and "gbm -2.50 % [-4.1, -0.8] (significant)" in d.reason
    # the incumbent ranked above every runner-up keeps serving
    d = decide_serving(
        {**scores, "champion": 223.0},
        {**comparisons, ("base", "champion"): wide, ("model", "champion"): sig},
        gates=("gbm", "seasonal_average"),
        incumbent="champion",
    )
    assert d.serves == "champion" and not d.promote
