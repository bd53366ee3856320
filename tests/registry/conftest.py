"""Real TrainResults around small real torch modules, for the registry tests.

The holdout is synthetic but honest: targets are produced by a fixed "true" convolution
network, models are that network with scaled weights (the larger the scale error, the
worse the model), and every metric is computed from the module's actual output, masked.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from traffic.config import load_city
from traffic.forecast.backtest import Backtest, DailyErrors, fold_plan
from traffic.forecast.metrics import masked_metrics
from traffic.forecast.result import Holdout, HorizonMetrics, TrainResult

T_IN, N_TIME_FEATURES, HEIGHT, WIDTH, N_HOLDOUT = 4, 2, 6, 7, 12
#: Fusion gates of the results (the tiny modules have no fusion of their own to inspect).
MODALITY_WEIGHTS = {"telraam": 0.62, "calendar": 0.41, "prior": 0.875}


class TinyForecaster(torch.nn.Module):
    """Maps ``(B, T_in, F, H, W)`` to ``(B, H_out, C, H, W)`` with normalisation inside."""

    def __init__(self, t_in: int, n_features: int, h_out: int, n_channels: int, scale: torch.Tensor) -> None:
        super().__init__()
        self.h_out, self.n_channels = h_out, n_channels
        self.conv = torch.nn.Conv2d(t_in * n_features, h_out * n_channels, kernel_size=3, padding=1)
        self.register_buffer("in_scale", torch.tensor(0.1))
        self.register_buffer("out_scale", scale.reshape(1, 1, n_channels, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, f, h, w = x.shape
        z = self.conv((x * self.in_scale).reshape(b, t * f, h, w))
        return torch.relu(z).reshape(b, self.h_out, self.n_channels, h, w) * self.out_scale


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    for var in ("MLFLOW_REGISTRY_URI", "TRAFFIC_CODE_VERSION"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def berlin():
    return load_city("berlin")


@pytest.fixture(scope="session")
def holdout_data(berlin):
    """``(x, y, mask)`` of a holdout with targets made by the true network."""
    n_channels, h_out = len(berlin.channels), berlin.forecast.horizon_steps
    n_features = n_channels + N_TIME_FEATURES
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(N_HOLDOUT, T_IN, n_features, HEIGHT, WIDTH, generator=gen) * 100).numpy()
    torch.manual_seed(11)
    # the scale of each channel of the city (counts per hour; a speed channel in km/h)
    scale = torch.tensor([30.0 if c.endswith(".speed_kmh") else 10.0 for c in berlin.channels])
    scale[0] = 40.0  # cars
    truth = TinyForecaster(T_IN, n_features, h_out, n_channels, scale).eval()
    with torch.no_grad():
        y = truth(torch.from_numpy(x)).numpy()
    mask = np.random.default_rng(3).random(y.shape) < 0.7
    return x, y, mask, truth


@pytest.fixture(scope="session")
def make_module(holdout_data):
    """A real module: the true network with its output scale off by ``1 + error``."""
    _, _, _, truth = holdout_data

    def make(error: float) -> TinyForecaster:
        m = TinyForecaster(
            T_IN, truth.conv.in_channels // T_IN, truth.h_out, truth.n_channels, truth.out_scale.flatten()
        )
        m.load_state_dict(truth.state_dict())
        with torch.no_grad():
            m.out_scale.mul_(1.0 + error)
        return m.eval()

    return make


def score(module, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> HorizonMetrics:
    """Masked metrics of a module (eager or loaded from MLflow) on the holdout."""
    with torch.no_grad():
        forecast = module(torch.from_numpy(x)).numpy()
    return masked_metrics(forecast, y, mask)


@pytest.fixture(scope="session")
def scorer():
    return score


@pytest.fixture(scope="session")
def make_result(berlin, holdout_data, make_module):
    """Build a real :class:`TrainResult` for a module, scored against real baselines.

    ``gbm_error`` / ``ridge_error`` add baselines named ``gbm`` / ``ridge``: the true network with
    that output-scale error, scored like the others (the registry treats baseline names alike). The ablation rows
    are the true network with larger errors (the base alone worst), scored on the same holdout,
    as the training code scores the module with parts switched off.
    """
    x, y, mask, _ = holdout_data
    n_channels, h_out = len(berlin.channels), berlin.forecast.horizon_steps
    # persistence: last observed input frame of each target channel, for every horizon
    persistence = np.repeat(x[:, -1:, :n_channels], h_out, axis=1)
    # seasonal average stand-in: the per-channel mean of the observed targets
    mean_fc = np.broadcast_to(
        (np.where(mask, y, 0).sum(axis=(0, 1, 3, 4)) / mask.sum(axis=(0, 1, 3, 4))).reshape(1, 1, -1, 1, 1), y.shape
    )
    digest = hashlib.sha256(y.tobytes() + mask.tobytes()).hexdigest()

    def make(
        module: torch.nn.Module,
        *,
        train_seconds: float = 1.5,
        gbm_error: float | None = None,
        ridge_error: float | None = None,
        ablation_errors: tuple[float, float] | None = (0.6, 0.35),
        backtest_days: int = 0,
    ) -> TrainResult:
        with torch.no_grad():
            fc = module(torch.from_numpy(x)).numpy()
        extra_baselines = {}
        if ridge_error is not None:
            extra_baselines["ridge"] = score(make_module(ridge_error), x, y, mask)
        if gbm_error is not None:
            extra_baselines["gbm"] = score(make_module(gbm_error), x, y, mask)
        ablation = {}
        if ablation_errors is not None:
            ablation = {
                name: score(make_module(e), x, y, mask)
                for name, e in zip(("base", "base_head"), ablation_errors, strict=True)
            }
        backtest = None
        if backtest_days:
            # the holdout's samples spread over target days (sample i on day i % backtest_days), every
            # candidate's errors per day as the training code records them; two days per fold
            bt_days = tuple(f"2024-12-{d + 1:02d}" for d in range(backtest_days))
            tidx = np.repeat(np.arange(len(x))[:, None], h_out, axis=1)  # (N, H_out): "bin" = sample
            backtest = Backtest(
                bt_days, fold_plan(bt_days, backtest_days // 2), 3600, {}, channels=tuple(berlin.channels)
            )
            forecasts = {"model": fc, "persistence": persistence, "seasonal_average": mean_fc}
            for name, e in (("ridge", ridge_error), ("gbm", gbm_error)):
                if e is not None:
                    with torch.no_grad():
                        forecasts[name] = make_module(e)(torch.from_numpy(x)).numpy()
            if ablation_errors is not None:
                for name, e in zip(("base", "base_head"), ablation_errors, strict=True):
                    with torch.no_grad():
                        forecasts[name] = make_module(e)(torch.from_numpy(x)).numpy()
            for name, f in forecasts.items():
                acc = DailyErrors(np.arange(len(x)) % backtest_days, backtest_days, h_out)
                acc.update(f, y, mask, tidx)
                backtest.errors[name] = acc
        curve = [
            {
                "epoch": e,
                "step": 10 * (e + 1),
                "train_loss": 1.0 / (e + 1),
                "val_loss": 1.2 / (e + 1),
                "elapsed_s": 0.1 * e,
            }
            for e in range(5)
        ]
        curve[0]["val_loss"] = float("nan")
        return TrainResult(
            module=module,
            metrics={
                "model": masked_metrics(fc, y, mask),
                "persistence": masked_metrics(persistence, y, mask),
                "seasonal_average": masked_metrics(mean_fc, y, mask),
                **extra_baselines,
            },
            holdout=Holdout(
                start="2024-12-01T00:00:00+00:00", end="2024-12-07T23:00:00+00:00", n_samples=len(x), digest=digest
            ),
            learning_curve=curve,
            params={
                "hidden": 8,
                "lr": 1e-3,
                "kernel": 3,
                "context_steps": T_IN,
                "cell": "convgru",
                "decoder": "direct",
                "attention": True,
            },
            input_example=x[:1].astype(np.float32),
            example_forecast=fc[0],
            example_target=y[0],
            example_mask=mask[0],
            channels=berlin.channels,
            train_window=("2024-10-20T00:00:00+00:00", "2024-11-30T23:00:00+00:00"),
            train_seconds=train_seconds,
            device="cpu",
            stopped_reason="early_stopping",
            extra={
                "modality_weights": dict(MODALITY_WEIGHTS),
                "steps": 50,
                "best_step": 30,
                "wall_clock_cap": False,
                "warm_start": None,
            },
            ablation=ablation,
            backtest=backtest,
        )

    return make


@pytest.fixture(scope="session")
def _migrated_mlflow_db(tmp_path_factory):
    """An empty MLflow SQLite database with every migration applied, built once per session."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{db}", (folder / "artifacts").as_uri())
    store.engine.dispose()
    return db


@pytest.fixture
def mlflow_db(traffic_home, _migrated_mlflow_db):
    """Start each test from a copy of the migrated empty database (migrations take seconds)."""
    import shutil

    target = traffic_home / "mlflow.db"
    shutil.copyfile(_migrated_mlflow_db, target)
    return target
