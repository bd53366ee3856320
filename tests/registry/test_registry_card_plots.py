"""Model card rendering and the figures logged with every run."""

from __future__ import annotations

import re
import subprocess

import matplotlib.image
import numpy as np
import pytest

from traffic.config import PROJECT_ROOT
from traffic.registry import plots, render_model_card, resolve_code_version

WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


def _table_rows(card: str, title: str) -> list[list[str]]:
    block = card.split(f"{title}:\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


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
    for metric in ("rmse", "mae"):
        header, _, *body = _table_rows(card, metric.upper())
        assert header[3:] == list(columns)
        assert len(body) == berlin.forecast.horizon_steps + 1  # one row per horizon + mean
        for h, row in enumerate(body):
            cells = [float(c.strip("*")) for c in row[3:]]
            expected = [
                getattr(m, metric)[h] if h < len(body) - 1 else getattr(m, f"{metric}_mean") for m in columns.values()
            ]
            assert cells == pytest.approx(expected, abs=5e-5)
            bold = [float(c.strip("*")) for c in row[3:] if c.startswith("**")]
            assert bold == pytest.approx([min(cells)], abs=5e-5)
        assert [int(r[2].replace(",", "")) for r in body[:-1]] == result.metrics["model"].n
    assert ("current champion on the same holdout" in card) is with_champion


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


def test_code_version_from_env_or_git(monkeypatch):
    monkeypatch.setenv("TRAFFIC_CODE_VERSION", "v1.2.3")
    assert resolve_code_version() == "v1.2.3"
    monkeypatch.delenv("TRAFFIC_CODE_VERSION")
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert resolve_code_version() == "unknown"
        return
    assert re.fullmatch(rf"{head}(-dirty)?", resolve_code_version())


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
    assert ax.get_xlabel() == ("epoch" if len(rows) < 2 else "step")
    n_points = sum(len(line.get_xdata()) for line in ax.get_lines())
    expected = sum(np.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_loss") if r.get(k) is not None)
    assert n_points == expected
