"""Model card rendering and the figures logged with every run."""

from __future__ import annotations

import dataclasses
import math
import re

import matplotlib.image
import numpy as np
import pytest

from traffic.forecast.horizons import horizon_groups
from traffic.forecast.result import MAPE_MIN_TARGET, HorizonMetrics
from traffic.registry import plots
from traffic.registry.card import render_model_card

WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


def _table_rows(card: str, title: str) -> list[list[str]]:
    """Cells of the first Markdown table after the paragraph that starts with ``title``."""
    after = card.split(f"\n{title}", 1)[1]
    lines = after[after.index("\n|") + 1 :].splitlines()
    table = lines[: next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table]


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def _num(cell: str) -> float:
    cell = cell.strip("*")
    return math.nan if cell == "n/a" else float(cell)


@pytest.mark.parametrize("with_champion", [False, True])
def test_model_card_tables_match_the_metrics(berlin, make_module, make_result, with_champion):
    result = make_result(make_module(0.1))
    champ = make_result(make_module(0.3)).metrics["model"] if with_champion else None
    card = render_model_card(berlin, result, WINDOW, champion_metrics=champ, code_version="deadbeef", version=7)

    assert "$" not in card  # every placeholder filled
    assert "`traffic-berlin` version 7" in card and "`deadbeef`" in card
    assert result.holdout.digest in card
    assert f"{result.holdout.start} to {result.holdout.end}" in card
    assert all(f"- {k}: {v}" in card for k, v in WINDOW.items())
    assert "Stopped because: early_stopping" in card and "Device: cpu" in card
    assert f"{result.train_seconds:.1f} s" in card

    columns = {"model": result.metrics["model"], **result.baselines}
    if champ is not None:
        columns["current champion"] = champ
    model = result.metrics["model"]
    assert 0 < sum(model.n_mape) < sum(model.n)  # the MAPE rule leaves some observed targets out
    for metric in ("rmse", "mae", "mape"):
        header, _, *body = _table_rows(card, f"{metric.upper()}:" if metric != "mape" else "MAPE (percent)")
        assert header[3:] == list(columns)
        assert header[2] == ("counted values" if metric == "mape" else "observed values")
        groups = horizon_groups(berlin.bin_seconds, len(model.rmse))
        assert [r[0] for r in body] == [g.label for g in groups] + ["all (mean)"]  # one row per group + mean
        for i, row in enumerate(body):
            cells = [_num(c) for c in row[3:]]
            expected = [
                float(np.mean(getattr(m, metric)[groups[i].steps])) if i < len(groups) else getattr(m, f"{metric}_mean")
                for m in columns.values()
            ]
            assert cells == pytest.approx(expected, abs=5e-5)
            bold = [_num(c) for c in row[3:] if c.startswith("**")]
            assert bold == pytest.approx([min(cells)], abs=5e-5)
        counts = model.n_mape if metric == "mape" else model.n
        assert [int(r[2].replace(",", "")) for r in body[:-1]] == [sum(counts[g.steps]) for g in groups]
    assert ("current champion on the same holdout" in card) is with_champion
    assert f"|value| >= {MAPE_MIN_TARGET:g}" in card
    assert f"Mean MAPE of the model: {model.mape_mean:.4f} %" in card


def test_model_card_shows_fusion_weights_variant_and_maps(berlin, make_module, make_result):
    result = make_result(make_module(0.1))
    card = render_model_card(berlin, result, WINDOW, code_version="x")
    header, rule, *body = _table_rows(card, "How much of each input modality")
    assert header == ["modality", "gate"]
    assert {r[0]: float(r[1]) for r in body} == pytest.approx(result.extra["modality_weights"])
    assert "Model variant: cell `convgru`, decoder `direct`, attention `True`." in card
    images = re.findall(r"!\[[^]]*\]\((plots/[^)]+)\)", card)
    assert images == [f"plots/forecast_vs_actual_{c}.png" for c in berlin.channels] + ["plots/error_map.png"]

    bare = dataclasses.replace(result, params={"hidden": 8}, extra={})
    card = render_model_card(berlin, bare, WINDOW, code_version="x")
    assert "Model variant: (not recorded)." in card and "(not recorded for this model)" in card


def test_model_card_accepts_metrics_recorded_without_mape(berlin, make_module, make_result):
    """Champions logged before MAPE existed come back without it: their column reads n/a."""
    result = make_result(make_module(0.1))
    old = result.metrics["model"]
    champ = HorizonMetrics(mae=old.mae, rmse=old.rmse, n=old.n)
    card = render_model_card(berlin, result, WINDOW, champion_metrics=champ, code_version="x")
    _, _, *body = _table_rows(card, "MAPE (percent)")
    assert all(row[-1] == "n/a" for row in body)
    groups = horizon_groups(berlin.bin_seconds, len(old.rmse))
    want = [float(np.mean(np.asarray(old.mape)[g.steps])) for g in groups]
    assert [_num(row[3]) for row in body[:-1]] == pytest.approx(want, abs=5e-5)


def test_error_map_is_the_mean_absolute_error_of_observed_cells(tmp_path):
    # 2 horizons, 1 channel, 1 x 3 cells: observed at both, at one, at no horizon
    forecast = np.array([[[[1.0, 5.0, 7.0]]], [[[3.0, 5.0, 7.0]]]])
    target = np.array([[[[2.0, 1.0, np.nan]]], [[[0.0, np.nan, np.nan]]]])
    mask = np.isfinite(target)
    got = plots.mean_abs_error_map(forecast, target, mask)
    np.testing.assert_allclose(got, [[[(1 + 3) / 2, 4.0, np.nan]]])
    target_junk = np.where(mask, target, 1e9)
    np.testing.assert_array_equal(plots.mean_abs_error_map(forecast, target_junk, mask), got)

    rng = np.random.default_rng(0)
    fc = rng.random((3, 2, 9, 13)) * 40
    path = plots.save_error_map(fc, fc + rng.normal(0, 3, fc.shape), rng.random(fc.shape) < 0.4, ("a", "b"), tmp_path)
    assert path == tmp_path / plots.ERROR_MAP
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.05
    with pytest.raises(ValueError, match=r"2 channels; got 1 names \['a'\]"):
        plots.save_error_map(fc, fc, fc > 0, ("a",), tmp_path)


def test_model_card_template_is_strict(berlin, make_module, make_result, tmp_path):
    result = make_result(make_module(0.1))
    template = tmp_path / "card.md"
    template.write_text("# $city\n$no_such_field\n")
    with pytest.raises(KeyError, match="no_such_field"):
        render_model_card(berlin, result, WINDOW, code_version="x", template=template)
    template.write_text("# $city ($best_baseline)\n")
    assert render_model_card(berlin, result, WINDOW, code_version="x", template=template) == (
        f"# berlin ({result.best_baseline()[0]})\n"
    )


def test_forecast_maps_one_png_per_channel(tmp_path):
    rng = np.random.default_rng(1)
    h_out, channels, rows, cols = 3, ("telraam.car", "loop/speed kmh"), 9, 13
    forecast = rng.random((h_out, len(channels), rows, cols)) * 40
    target = forecast + rng.normal(0, 3, forecast.shape)
    mask = rng.random(forecast.shape) < 0.4
    mask[:, 1] = False  # a channel never observed in this sample still gets its map
    paths = plots.save_forecast_maps(forecast, target, mask, channels, tmp_path, lead_labels=["+1h", "+2h", "+3h"])
    assert [p.name for p in paths] == ["forecast_vs_actual_telraam.car.png", "forecast_vs_actual_loop_speed_kmh.png"]
    for p in paths:
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.05  # not a blank canvas


def test_forecast_maps_reject_mismatched_shapes(tmp_path):
    a = np.zeros((3, 2, 4, 5))
    with pytest.raises(ValueError, match=r"shape \(3, 2, 4, 5\).*C = 1 channels \['only_one'\]"):
        plots.save_forecast_maps(a, a, a > 0, ("only_one",), tmp_path)
    with pytest.raises(ValueError, match="channel 'a'"):
        plots.save_forecast_maps(a, a[:, :, :3], a[:, :, :3] > 0, ("a", "b"), tmp_path)


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [{"epoch": 0, "step": 10, "train_loss": 2.0, "val_loss": float("nan"), "elapsed_s": 1.0}],
        [{"epoch": 0, "step": s, "train_loss": 1.0 / s, "val_loss": None, "elapsed_s": s} for s in (5, 10, 15)],
    ],
    ids=["empty", "nan-val", "several-rows-per-epoch"],
)
def test_learning_curve_png(tmp_path, rows):
    path = plots.save_learning_curve(rows, tmp_path / "lc.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plots.learning_curve_figure(rows)
    ax = fig.axes[0]
    # the x axis is the optimiser step (as the MLflow metric steps), never the epoch of rows that have a step
    assert ax.get_xlabel() == "optimiser step"
    xs = sorted(float(x) for line in ax.get_lines() for x in line.get_xdata())
    assert xs == sorted(float(r["step"]) for r in rows for k in ("train_loss", "val_loss") if _finite(r.get(k)))
    n_points = sum(len(line.get_xdata()) for line in ax.get_lines())
    expected = sum(np.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_loss") if r.get(k) is not None)
    assert n_points == expected
