"""What training hands to the registry and the publisher.

The training code (``traffic.forecast.train``) fills a :class:`TrainResult`; the MLflow
layer (``traffic.registry``) logs and registers it; the pipeline forecasts with the
``module`` it carries (or the champion loaded back from MLflow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from traffic.errors import TrainingDiverged  # noqa: F401  (defined with the other errors, re-exported)

#: Metric names, all masked (missing cells/bins never count) and in original units; ``mape`` in
#: percent over the targets that pass the zero-denominator rule of :mod:`traffic.forecast.metrics`.
METRICS = ("mae", "rmse", "mape")
#: Smallest ``|target|`` (original units) that counts in MAPE: the zero-denominator rule,
#: documented in :mod:`traffic.forecast.metrics`.
MAPE_MIN_TARGET = 10.0


def _mean(values: list[float]) -> float:
    """Unweighted mean over horizons; NaN for no horizons (or when any horizon is NaN)."""
    return float(np.mean(values)) if len(values) else float("nan")


@dataclass
class HorizonMetrics:
    """Masked metrics per forecast horizon (index 0 = one bin ahead).

    ``mape``/``n_mape`` default to empty lists so that metrics recorded before MAPE existed
    (or built by hand with ``mae``, ``rmse`` and ``n`` only) still construct; their
    :attr:`mape_mean` is then NaN.
    """

    mae: list[float]
    rmse: list[float]
    n: list[int]  # observed target values per horizon
    mape: list[float] = field(default_factory=list)  # percent; NaN for a horizon with n_mape == 0
    n_mape: list[int] = field(default_factory=list)  # observed targets that passed the MAPE rule
    coverage: list[float] = field(default_factory=list)  # share of targets inside the 80 % interval (model only)

    @property
    def mae_mean(self) -> float:
        return _mean(self.mae)

    @property
    def rmse_mean(self) -> float:
        return _mean(self.rmse)

    @property
    def mape_mean(self) -> float:
        return _mean(self.mape)

    @property
    def coverage_mean(self) -> float:
        """Interval coverage pooled over horizons (weighted by ``n``); NaN without intervals."""
        if not self.coverage:
            return float("nan")
        w = np.asarray(self.n, dtype=np.float64)
        return float(np.nansum(np.asarray(self.coverage) * w) / max(w.sum(), 1.0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "mae": self.mae,
            "rmse": self.rmse,
            "mape": self.mape,
            "n": self.n,
            "n_mape": self.n_mape,
            "coverage": self.coverage,
            "mae_mean": self.mae_mean,
            "rmse_mean": self.rmse_mean,
            "mape_mean": self.mape_mean,
        }


@dataclass
class Holdout:
    """The evaluation window every model and baseline is scored on."""

    start: str  # ISO UTC time of the first target bin
    end: str  # ISO UTC time of the last target bin
    n_samples: int
    digest: str  # sha256 of the holdout values+mask bytes: same digest = same data


@dataclass
class TrainResult:
    """Everything a training run produced.

    Attributes
    ----------
    module : torch.nn.Module
        The trained forecaster, on CPU, in eval mode. ``module(x)`` takes one float32
        tensor ``(B, T_in, F, H, W)`` built by ``traffic.forecast.features.build_inputs``
        and returns ``(B, H_out, C, H, W)`` in original units (normalisation inside).
    metrics : dict
        ``{"model": HorizonMetrics, "persistence": ..., "seasonal_average": ..., "ridge": ...,
        "gbm": ...}`` (the baselines of ``traffic.forecast.baselines.BASELINES``) all on the same
        :attr:`holdout`.
    holdout : Holdout
    learning_curve : list of dict
        ``{"epoch", "step", "train_loss", "val_loss", "elapsed_s"}`` rows.
    params : dict
        Model and training hyper-parameters (flat, loggable).
    input_example : np.ndarray
        A small ``(1, T_in, F, H, W)`` float32 input for the MLflow signature.
    example_forecast, example_target, example_mask : np.ndarray
        One holdout sample ``(H_out, C, H, W)`` for forecast-vs-actual maps.
    channels : tuple of str
    train_window : tuple of str
        ISO UTC times of the first and last bin used for training.
    train_seconds : float
    device : str
    stopped_reason : str
        ``"budget"``, ``"early_stopping"``, ``"max_epochs"`` or ``"max_steps"``.
    intervals : IntervalModel, optional
        The 80 % interval model fitted on the validation samples
        (:mod:`traffic.forecast.intervals`); ``metrics["model"].coverage`` is its holdout coverage.
    ablation : dict
        The trained module with parts switched off, on the same holdout: ``"base"`` (the linear
        base alone) and ``"base_head"`` (base + per-cell head, hidden state zero: no recurrent or
        attention path). ``metrics["model"]`` is the full network. Logged as ``ablation.<name>.*``.
    backtest : traffic.forecast.backtest.Backtest, optional
        Every candidate's errors per target day over the holdout's folds (the model, ``base``,
        ``base_head`` and the baselines), for the paired comparisons that decide what serves.
    variant_intervals : dict
        The 80 % interval model of each deployable network variant: ``"model"`` (the same as
        :attr:`intervals`), ``"base_head"`` and ``"base"``.
    variant_states : dict
        State dicts of the variants whose weights differ from :attr:`module`'s: ``"base_head"``
        (the head as pre-fitted; ``"base"`` reads only the linear base, the same in both).
    combinations : list
        The fitted :class:`traffic.forecast.combination.Combination` s (``combination`` and
        ``combination_without_network``): their serving weights and the fold weights they were
        judged with.
    holdout_predictions : HoldoutPredictions or None
        Every member's holdout forecasts (:class:`traffic.forecast.combination.HoldoutPredictions`):
        a champion that serves a combination is scored with tonight's baselines from them.
    """

    module: Any
    metrics: dict[str, HorizonMetrics]
    holdout: Holdout
    learning_curve: list[dict[str, float]]
    params: dict[str, Any]
    input_example: np.ndarray
    example_forecast: np.ndarray
    example_target: np.ndarray
    example_mask: np.ndarray
    channels: tuple[str, ...]
    train_window: tuple[str, str]
    train_seconds: float
    device: str
    stopped_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    intervals: Any = None
    ablation: dict[str, HorizonMetrics] = field(default_factory=dict)
    backtest: Any = None
    variant_intervals: dict[str, Any] = field(default_factory=dict)
    variant_states: dict[str, Any] = field(default_factory=dict)
    combinations: list[Any] = field(default_factory=list)
    holdout_predictions: Any = None

    @property
    def baselines(self) -> dict[str, HorizonMetrics]:
        return {k: v for k, v in self.metrics.items() if k != "model"}

    def best_baseline(self) -> tuple[str, HorizonMetrics]:
        """Baseline with the lowest mean RMSE over horizons."""
        name = min(self.baselines, key=lambda k: self.baselines[k].rmse_mean)
        return name, self.baselines[name]
