"""Figures logged with every training run: learning curve, forecast-vs-actual maps and the error map.

Pure matplotlib (``Figure`` + Agg canvas, no ``pyplot`` state), so it is safe in
Airflow workers and threads. Maps follow :class:`traffic.grid.tensor.GridTensor`:
row 0 of a grid is its southern edge, so images are drawn with ``origin="lower"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Dots per inch of the saved PNGs (small files, quick to render).
DPI = 80
#: File name of the error map (:func:`save_error_map`).
ERROR_MAP = "error_map.png"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """File-name-safe form of a channel name (``telraam.car`` stays, ``a/b c`` -> ``a_b_c``)."""
    return _UNSAFE.sub("_", text).strip("_") or "channel"


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def learning_curve_figure(rows: Sequence[dict[str, float]], *, title: str = "learning curve") -> Figure:
    """Train and validation loss against the optimiser step.

    Parameters
    ----------
    rows : sequence of dict
        ``{"epoch", "step", "train_loss", "val_loss", "elapsed_s"}`` rows as in
        :attr:`traffic.forecast.result.TrainResult.learning_curve`; missing or
        non-finite losses are left out of the lines.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_axes((0.12, 0.14, 0.84, 0.76))
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("loss")
    # x: the optimiser step of each row (what MLflow logs the curve at); epochs only for rows without one
    x_key = "step" if all(r.get("step") is not None for r in rows) else "epoch"
    x = np.array([i if r.get(x_key) is None else r[x_key] for i, r in enumerate(rows)], dtype=np.float64)
    plotted = False
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        y = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=np.float64)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(x[ok], y[ok], style, markersize=3, label=key)
            plotted = True
    if plotted:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no losses recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimiser step" if x_key == "step" else x_key)
    return fig


def forecast_map_figure(
    forecast: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    *,
    channel: str,
    lead_labels: Sequence[str] | None = None,
) -> Figure:
    """Forecast, observed value and error maps of one channel, one row per horizon.

    Parameters
    ----------
    forecast, target : np.ndarray
        ``(H_out, H, W)`` values of one channel in original units.
    mask : np.ndarray
        ``(H_out, H, W)`` bool: True where the target was observed. Unobserved cells
        are blank in the "observed" and "error" columns.
    channel : str
        Channel name for the title.
    lead_labels : sequence of str, optional
        Row labels (e.g. ``"+1h"``); defaults to ``h+1``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    forecast = np.asarray(forecast, dtype=float)
    target = np.asarray(target, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if not (forecast.shape == target.shape == mask.shape) or forecast.ndim != 3:
        raise ValueError(
            f"channel {channel!r}: forecast {forecast.shape}, target {target.shape} and mask {mask.shape} "
            "must all be (H_out, H, W)"
        )
    n_h = forecast.shape[0]
    labels = list(lead_labels) if lead_labels is not None else [f"h+{h + 1}" for h in range(n_h)]
    observed = np.where(mask, target, np.nan)
    error = np.where(mask, forecast - target, np.nan)
    both = np.concatenate([forecast[np.isfinite(forecast)], observed[np.isfinite(observed)]])
    vmin, vmax = np.percentile(both, [1, 99]) if both.size else (0.0, 1.0)
    if not vmax > vmin:
        vmax = vmin + 1.0
    finite_err = np.abs(error[np.isfinite(error)])
    emax = float(np.percentile(finite_err, 99)) if finite_err.size else 1.0
    emax = emax if emax > 0 else 1.0

    # One axes per column, the horizons stacked top (h+1) to bottom with a blank row between:
    # a few artists instead of a grid of subplots keeps rendering well under a second.
    rows, cols = forecast.shape[1:]
    gap = np.full((1, cols), np.nan)

    def stack(a: np.ndarray) -> np.ndarray:
        parts: list[np.ndarray] = []
        for h in reversed(range(n_h)):  # origin="lower": the first horizon ends up on top
            parts += [a[h], gap]
        return np.concatenate(parts[:-1], axis=0)

    # unobserved cells (and the separators) in grey, distinct from a zero error
    seq, div = (matplotlib.colormaps[name].with_extremes(bad="0.85") for name in ("viridis", "RdBu_r"))
    panels = (
        (stack(forecast), "forecast", seq, vmin, vmax),
        (stack(observed), "observed (grey: not observed)", seq, vmin, vmax),
        (stack(error), "forecast - observed", div, -emax, emax),
    )
    img_h = n_h * rows + n_h - 1
    panel_w = 2.6
    panel_h = min(9.0, max(1.5, panel_w * img_h / max(cols, 1)))
    fig = Figure(figsize=(3 * panel_w + 1.4, panel_h + 1.3))
    fig.suptitle(f"{channel}: forecast vs observed (one holdout sample)", fontsize=10)
    left, bottom, width, height = 0.1, 0.2, (1 - 0.14) / 3, 1 - 0.2 - 0.12
    centers = [(n_h - 1 - h) * (rows + 1) + (rows - 1) / 2 for h in range(n_h)]
    images = []
    for j, (img, name, cmap, lo, hi) in enumerate(panels):
        ax = fig.add_axes((left + j * width, bottom, width * 0.94, height))
        images.append(
            ax.imshow(img, origin="lower", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="auto")
        )
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(centers if j == 0 else [])
        if j == 0:
            ax.set_yticklabels(labels[:n_h], fontsize=8)
    cax = fig.add_axes((left, 0.08, 2 * width * 0.94, 0.03))
    fig.colorbar(images[0], cax=cax, orientation="horizontal")
    eax = fig.add_axes((left + 2 * width, 0.08, width * 0.94, 0.03))
    fig.colorbar(images[2], cax=eax, orientation="horizontal")
    return fig


def forecast_map_name(channel: str) -> str:
    """File name of a channel's forecast-vs-actual map (:func:`save_forecast_maps`)."""
    return f"forecast_vs_actual_{safe_name(channel)}.png"


def mean_abs_error_map(forecast: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean ``|forecast - target|`` over the horizons a cell was observed at, NaN where it never was.

    Parameters
    ----------
    forecast, target : np.ndarray
        ``(H_out, C, H, W)`` one holdout sample in original units (``target`` may be NaN where
        ``mask`` is False).
    mask : np.ndarray
        ``(H_out, C, H, W)`` bool, True where observed.

    Returns
    -------
    np.ndarray
        ``(C, H, W)`` float64.
    """
    forecast, target, mask = np.asarray(forecast, float), np.asarray(target, float), np.asarray(mask, bool)
    if not (forecast.shape == target.shape == mask.shape) or forecast.ndim != 4:
        raise ValueError(
            f"forecast {forecast.shape}, target {target.shape} and mask {mask.shape} must all be (H_out, C, H, W)"
        )
    err = np.where(mask, np.abs(forecast - np.where(mask, target, 0.0)), 0.0)
    n = mask.sum(axis=0)  # (C, H, W) horizons observed per cell
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, err.sum(axis=0) / np.maximum(n, 1), np.nan)


def error_map_figure(
    forecast: np.ndarray, target: np.ndarray, mask: np.ndarray, channels: Sequence[str], *, title: str = ""
) -> Figure:
    """One panel per channel: the mean absolute error per cell of one holdout sample.

    Each cell shows :func:`mean_abs_error_map` (mean over the horizons at which the cell was
    observed, original units, each channel on its own colour scale); cells never observed in
    the sample are blank (light grey), so a blank cell is "not scored", never "no error".

    Parameters
    ----------
    forecast, target : np.ndarray
        ``(H_out, C, H, W)``.
    mask : np.ndarray
        ``(H_out, C, H, W)`` bool.
    channels : sequence of str
        ``C`` channel names.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    mae = mean_abs_error_map(forecast, target, mask)
    if mae.shape[0] != len(channels):
        raise ValueError(f"forecast has {mae.shape[0]} channels; got {len(channels)} names {list(channels)}")
    n_c, rows, cols = mae.shape
    panel_w = 3.0
    panel_h = min(6.0, max(1.5, panel_w * rows / max(cols, 1)))
    fig = Figure(figsize=(panel_w * n_c + 0.6, panel_h + 1.4))
    n_h = np.shape(forecast)[0]
    fig.suptitle(title or f"|forecast - observed|, mean over the {n_h} horizons (one holdout sample)", fontsize=10)
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="0.85")
    width = (1 - 0.04) / n_c
    for c, name in enumerate(channels):
        ax = fig.add_axes((0.02 + c * width, 0.2, width * 0.92, 0.64))
        finite = mae[c][np.isfinite(mae[c])]
        hi = float(np.percentile(finite, 99)) if finite.size else 1.0
        im = ax.imshow(mae[c], origin="lower", cmap=cmap, vmin=0.0, vmax=hi if hi > 0 else 1.0, interpolation="nearest")
        mean = f"{finite.mean():.3g}" if finite.size else "n/a"
        ax.set_title(f"{name}\n{finite.size} cells scored, mean {mean}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        cax = fig.add_axes((0.02 + c * width, 0.1, width * 0.92, 0.03))
        fig.colorbar(im, cax=cax, orientation="horizontal")
    return fig


def save_error_map(
    forecast: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    channels: Sequence[str],
    folder: str | Path,
    *,
    title: str = "",
) -> Path:
    """Render :func:`error_map_figure` to ``<folder>/`` :data:`ERROR_MAP`."""
    return _save(error_map_figure(forecast, target, mask, channels, title=title), Path(folder) / ERROR_MAP)


def save_learning_curve(rows: Sequence[dict[str, float]], path: str | Path, *, title: str = "learning curve") -> Path:
    """Render :func:`learning_curve_figure` to a PNG at ``path``."""
    return _save(learning_curve_figure(rows, title=title), path)


def save_forecast_maps(
    forecast: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    channels: Sequence[str],
    folder: str | Path,
    *,
    lead_labels: Sequence[str] | None = None,
) -> list[Path]:
    """One forecast-vs-actual PNG per channel.

    Parameters
    ----------
    forecast, target : np.ndarray
        ``(H_out, C, H, W)`` one holdout sample in original units.
    mask : np.ndarray
        ``(H_out, C, H, W)`` bool, True where observed.
    channels : sequence of str
        ``C`` channel names; files are ``forecast_vs_actual_<channel>.png``.
    folder : path
    lead_labels : sequence of str, optional

    Returns
    -------
    list of Path
        The written files, in channel order.
    """
    forecast = np.asarray(forecast)
    if forecast.ndim != 4 or forecast.shape[1] != len(channels):
        raise ValueError(
            f"forecast has shape {forecast.shape}; expected (H_out, C, H, W) with C = {len(channels)} channels {list(channels)}"
        )
    folder = Path(folder)
    out = []
    for c, name in enumerate(channels):
        fig = forecast_map_figure(
            forecast[:, c], np.asarray(target)[:, c], np.asarray(mask)[:, c], channel=name, lead_labels=lead_labels
        )
        out.append(_save(fig, folder / forecast_map_name(name)))
    return out
