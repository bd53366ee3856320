"""MLflow I/O of the registry: one experiment and one registered model per city, logged and loaded.

Flow of a nightly run for a city::

    info = log_training(city, result, data_window=...)          # run + version, alias "challenger"
    champ = champion(city)                                      # None before the first promotion
    champ_metrics = <score load_module(city) on result.holdout> # same holdout as the challenger
    decision = decide_promotion(result.metrics["model"], champ_metrics, result.best_baseline())
    promote(city, info["version"], decision)                    # alias "champion" moves only if better

The rule itself is :mod:`traffic.registry.promotion` and the model card
:mod:`traffic.registry.card` (both pure); this module does what touches MLflow.
Names (:mod:`traffic.registry.names`): experiment and registered model are both
``traffic-<city>``. Stages are not used (deprecated in MLflow); the registry is driven by the
aliases :data:`CHAMPION` and :data:`CHALLENGER`. Models are logged in the ``pt2`` format
(``torch.export``): the module must be exportable (no Python branching on tensor values) and is
exported with a dynamic batch dimension.
Loading never unpickles: pickle deserialization is off for the process
(:mod:`traffic.mlflow_env`), a version is loaded only when its archive holds raw tensors
and graphs (:mod:`traffic.registry.safe_load`), and the eager copy is a state dict read with
``torch.load(weights_only=True)``; anything else is refused with :class:`RegistryError`.

The tracking URI is :func:`traffic.config.mlflow_uri` (SQLite under ``TRAFFIC_HOME``
unless ``MLFLOW_TRACKING_URI`` names another store); it is set for the duration of each
call only, so MLflow's process-wide state and environment are left as they were.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from traffic.config import CityConfig, mlflow_artifact_root, mlflow_uri
from traffic.errors import RegistryError
from traffic.forecast.horizons import horizon_groups
from traffic.forecast.result import HorizonMetrics, TrainResult
from traffic.provenance import code_version as current_code_version
from traffic.registry.card import (
    decision_markdown,
    fmt,
    lead_labels,
    pooled_mean,
    render_model_card,
    warm_start_text,
    with_decision,
    yes_no,
)
from traffic.registry.names import (
    CHALLENGER,
    CHAMPION,
    SERVING_TAG,
    SERVING_VARIANT_TAG,
    city_name,
    experiment_name,
    model_name,
)
from traffic.registry.promotion import Decision

# A batch job: MLflow must not phone home (nor wait on a network that is not there), and
# artifact progress bars only clutter task logs. Explicit settings in the environment win.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

#: Name of the model's artifact folder inside a run / logged model.
MODEL_ARTIFACT = "model"
SERIALIZATION_FORMAT = "pt2"

_log = logging.getLogger(__name__)

#: Artifact of a training run holding its 80 % interval model (traffic.forecast.intervals).
INTERVALS_ARTIFACT = "intervals/intervals.npz"
#: The per-horizon weights of the run's combinations (:func:`traffic.forecast.combination.dumps`).
COMBINATION_ARTIFACT = "combination/weights.json"
#: The deployable variants of a registered network (:data:`traffic.model.PATHS` by candidate name):
#: the full model, base + head (the head as pre-fitted), the linear base alone.
VARIANT_PATHS = {"model": "full", "base_head": "base_head", "base": "base"}
#: Artifact folder of a training run holding the eager module (``traffic.forecast.model_folder.save_model``:
#: state dict + config): loads in a fraction of a second, where deserializing the exported
#: program takes seconds (what an hourly refresh would pay in every fresh task process).
EAGER_ARTIFACT = "eager"
#: In :data:`EAGER_ARTIFACT`: the code the state dict belongs to (``traffic/model.py`` digest, torch).
EAGER_FINGERPRINT = "fingerprint.json"


def eager_fingerprint() -> dict[str, str]:
    """What an eager copy depends on (:func:`traffic.forecast.model_folder.fingerprint`)."""
    from traffic.forecast.model_folder import fingerprint

    return fingerprint()


#: Tolerance of the check that the logged model reproduces the in-memory module.
ROUNDTRIP_RTOL, ROUNDTRIP_ATOL = 1e-4, 1e-5


# --------------------------------------------------------------------------------------
# MLflow session
# --------------------------------------------------------------------------------------


class RegistryStore(Protocol):
    """Where a registry lives: what every function here takes as ``registry=`` (e.g. ``traffic.resources.Registry``).

    Without one (``registry=None``) the configured store is used: :func:`traffic.config.mlflow_uri`,
    :func:`traffic.config.mlflow_artifact_root` and the ``MLFLOW_TRACKING_*`` credentials of the environment.
    """

    @property
    def tracking_uri(self) -> str: ...  # tracking and registry URI

    @property
    def artifact_root(self) -> str: ...  # artifact root a city's experiment is created with

    @property
    def username(self) -> str | None: ...

    @property
    def password(self) -> str | None: ...

    @property
    def token(self) -> str | None: ...


#: Environment variables MLflow reads the credentials of a tracking server from, by :class:`RegistryStore` field.
_CREDENTIALS = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "token": "MLFLOW_TRACKING_TOKEN",
}


def _store_of(registry: RegistryStore | None) -> tuple[str, str]:
    """``(tracking URI, artifact root)`` of ``registry``, else of the configuration."""
    if registry is None:
        return mlflow_uri(), mlflow_artifact_root()
    return registry.tracking_uri, registry.artifact_root


@contextmanager
def _mlflow_session(registry: RegistryStore | None = None) -> Iterator[Any]:
    """Point MLflow at the registry (default: :func:`mlflow_uri`) for the block; yield an ``MlflowClient``.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment,
    which :func:`traffic.config.mlflow_uri` reads first; the previous global URIs and
    environment are restored on exit so that a later call under another ``TRAFFIC_HOME``
    is not redirected. A given ``registry``'s credentials are put where MLflow reads them for
    the block only.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from traffic.config import home
    from traffic.registry.relocate import rebase_copied_home

    uri, root = _store_of(registry)
    # a copied home uses its own artifacts: the configured home, or the folder of a given store's SQLite file
    store_home = home() if registry is None or not uri.startswith("sqlite:///") else Path(uri[10:]).parent
    rebase_copied_home(uri, root, store_home)
    env_keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", *_CREDENTIALS.values())
    old_env = {k: os.environ.get(k) for k in env_keys}
    old_tracking = getattr(tracking_utils, "_tracking_uri", None)
    old_registry = getattr(registry_utils, "_registry_uri", None)
    if registry is not None:
        for field, var in _CREDENTIALS.items():
            value = getattr(registry, field, None)
            if value:
                os.environ[var] = value
            else:
                os.environ.pop(var, None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        mlflow.set_tracking_uri(old_tracking)  # type: ignore[arg-type]  # None resets
        mlflow.set_registry_uri(old_registry)  # type: ignore[arg-type]
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_missing(exc: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _ensure_experiment(client: Any, city: CityConfig | str, artifact_root: str | None = None) -> str:
    """The id of the city's experiment, created (under ``artifact_root``, default the configured root) or restored."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(city)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = f"{(artifact_root or mlflow_artifact_root()).rstrip('/')}/{name}"
    try:
        return client.create_experiment(name, artifact_location=location, tags={"city": city_name(city)})
    except MlflowException:  # created concurrently by another task
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _aliases(client: Any, name: str) -> dict[str, str]:
    """``{alias: version}`` of a registered model, ``{}`` if the model does not exist."""
    try:
        rm = client.get_registered_model(name)
    except Exception as exc:
        if _is_missing(exc):
            return {}
        raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def _newest_version(client: Any, name: str) -> str | None:
    versions = client.search_model_versions(f"name = '{name}'", max_results=1, order_by=["version_number DESC"])
    return str(versions[0].version) if versions else None


# --------------------------------------------------------------------------------------
# Logging a training run
# --------------------------------------------------------------------------------------


def _pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (skips MLflow's slow requirement inference)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("torch", "mlflow", "numpy"):
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _params(city: CityConfig, result: TrainResult, data_window: Mapping[str, Any]) -> dict[str, str]:
    fc = city.forecast
    out = {
        "city.name": city.name,
        "city.timezone": city.timezone,
        "city.crs_epsg": city.crs_epsg,
        "city.bbox": list(city.bbox),
        "city.cell_size_m": city.cell_size_m,
        "city.time_bin": city.time_bin,
        "city.feeds": [f"{f.name}:{f.kind}:{f.adapter}" for f in city.feeds],
        "city.channels": list(city.channels),
        "forecast.context_steps": fc.context_steps,
        "forecast.horizon_steps": fc.horizon_steps,
        "forecast.train_days": fc.train_days,
        "forecast.holdout_days": fc.holdout_days,
        "forecast.train_steps": getattr(fc, "train_steps", None),
        "forecast.train_epochs": getattr(fc, "train_epochs", None),
        "forecast.train_budget_s": fc.train_budget_s,
        "train.start": result.train_window[0],
        "train.end": result.train_window[1],
        "train.device": result.device,
        "model.channels": list(result.channels),
    }
    out.update({f"data.{k}": v for k, v in data_window.items()})
    out.update({f"hp.{k}": v for k, v in result.params.items()})
    return {k: str(v) for k, v in out.items()}


def _horizon_metric_rows(name: str, hm: HorizonMetrics, timestamp_ms: int, city: CityConfig | None) -> list[Any]:
    """Rows of one scored forecaster: per horizon (``step = h + 1``), means, per horizon group."""
    from mlflow.entities import Metric

    from traffic.forecast.horizons import group_tag

    rows: list[Metric] = []
    # mape/n_mape are empty for metrics made without them; coverage exists for the model only
    for key in ("mae", "rmse", "n", "mape", "n_mape", "coverage"):
        rows += [Metric(f"{name}.{key}", float(v), timestamp_ms, h + 1) for h, v in enumerate(getattr(hm, key))]
    rows.append(Metric(f"{name}.mae_mean", hm.mae_mean, timestamp_ms, 0))
    rows.append(Metric(f"{name}.rmse_mean", hm.rmse_mean, timestamp_ms, 0))
    if hm.mape:
        rows.append(Metric(f"{name}.mape_mean", hm.mape_mean, timestamp_ms, 0))
    if hm.coverage:
        rows.append(Metric(f"{name}.coverage_mean", hm.coverage_mean, timestamp_ms, 0))
    if city is not None and hm.rmse:
        n = np.asarray(hm.n, dtype=float)
        for g in horizon_groups(city.bin_seconds, len(hm.rmse)):
            tag = group_tag(g.label)
            for key in ("rmse", "mae", "coverage"):
                vals = np.asarray(getattr(hm, key), dtype=float)[g.steps]
                if not len(vals) or not np.isfinite(vals).any():
                    continue
                # errors: the mean over the group's horizons (as the card); coverage: pooled over its targets
                v = pooled_mean(vals, n[g.steps]) if key == "coverage" else float(np.nanmean(vals))
                rows.append(Metric(f"{name}.{key}.{tag}", v, timestamp_ms, 0))
    return rows


#: Prefix of the ablation metrics (``ablation.base.rmse_mean``, ``ablation.base_head.rmse.h01``...).
ABLATION_PREFIX = "ablation"
#: Name under which the current champion's scores on the challenger's holdout are logged.
CHAMPION_METRICS = "champion"


def _curve_step(row: Mapping[str, Any], i: int) -> int:
    """MLflow step of a learning-curve row: its optimiser step (``step``), else its position in the curve."""
    v = row.get("step")
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return i
    return int(v)


def _metrics(
    result: TrainResult,
    timestamp_ms: int,
    city: CityConfig | None = None,
    champion_metrics: HorizonMetrics | None = None,
) -> list[Any]:
    """MLflow metrics of a run.

    Per horizon (``step = h + 1``), means and per horizon group (``<name>.<metric>.<hNN>``) of
    the model, every baseline, the ablation (``ablation.base``, ``ablation.base_head``) and,
    when given, the current champion on the same holdout (``champion``); the skill vs the
    best baseline; ``train.seconds``, ``train.steps`` and ``train.best_step``; the learning
    curve with the optimiser step of each row as the MLflow step.
    """
    from mlflow.entities import Metric

    from traffic.forecast.metrics import skill

    rows: list[Metric] = []
    for name, hm in result.metrics.items():
        rows += _horizon_metric_rows(name, hm, timestamp_ms, city)
    for name, hm in (getattr(result, "ablation", None) or {}).items():
        rows += _horizon_metric_rows(f"{ABLATION_PREFIX}.{name}", hm, timestamp_ms, city)
    if champion_metrics is not None:
        rows += _horizon_metric_rows(CHAMPION_METRICS, champion_metrics, timestamp_ms, city)
    if getattr(result, "backtest", None) is not None:
        from traffic.forecast.backtest import backtest_metrics

        rows += [Metric(k, float(v), timestamp_ms, 0) for k, v in backtest_metrics(result.backtest).items()]
    base_name, base = result.best_baseline()
    model = result.metrics["model"]
    if base.rmse_mean:
        rows.append(
            Metric("model.rmse_skill_vs_best_baseline", skill(model.rmse_mean, base.rmse_mean), timestamp_ms, 0)
        )
    rows.append(Metric("train.seconds", float(result.train_seconds), timestamp_ms, 0))
    for key in (
        "steps",
        "max_steps",
        "best_step",
        "backtest_seconds",
        "total_seconds",
        "wall_clock_guard_s",
        "expected_train_s",
    ):
        v = result.extra.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            rows.append(Metric(f"train.{key}", float(v), timestamp_ms, 0))
    for i, r in enumerate(result.learning_curve):
        step = _curve_step(r, i)
        elapsed_ms = int(1000 * float(r.get("elapsed_s") or 0.0))
        for key in ("train_loss", "val_loss", "epoch"):
            v = r.get(key)
            if v is not None and math.isfinite(float(v)):
                rows.append(Metric(f"curve.{key}", float(v), timestamp_ms + elapsed_ms, step))
    return rows


def _check_module(result: TrainResult) -> tuple[Any, np.ndarray, np.ndarray]:
    """Module in eval mode, the batch-2 logging example and its output; shapes validated."""
    import torch

    x = np.asarray(result.input_example, dtype=np.float32)
    if x.ndim != 5 or x.shape[0] < 1:
        raise ValueError(f"result.input_example has shape {x.shape}; expected (1, T_in, F, H, W)")
    # Two identical samples: torch.export specialises a batch of 1 to a constant, 2 keeps B dynamic.
    example = np.ascontiguousarray(np.concatenate([x[:1], x[:1]], axis=0))
    module = result.module.to("cpu").eval()
    with torch.no_grad():
        out = module(torch.from_numpy(example))
    out = out.detach().cpu().numpy().astype(np.float32, copy=False)
    n_h = len(result.metrics["model"].rmse)
    expected = (2, n_h, len(result.channels), *x.shape[-2:])
    if out.shape != expected:
        raise ValueError(
            f"module output has shape {out.shape} for input {example.shape}; expected {expected} "
            f"(B, H_out, C, H, W) with H_out = {n_h} horizons, C = channels {list(result.channels)}"
        )
    return module, example, out


#: The model's input example: one sample ``(1, T_in, F, H, W)`` as float16 in a compressed ``.npz``
#: (array ``x``), in the logged model's ``extra_files/``.
INPUT_EXAMPLE_FILE = "input_example.npz"


def _write_input_example(x: np.ndarray, folder: Path) -> Path:
    """Write one sample as :data:`INPUT_EXAMPLE_FILE` (float16, compressed) into ``folder``."""
    path = folder / INPUT_EXAMPLE_FILE
    with path.open("wb") as fh:
        np.savez_compressed(fh, x=np.asarray(x[:1], dtype=np.float16))
    return path


def _export_example(example: np.ndarray) -> np.ndarray:
    """The example ``torch.export`` traces the module on: one sample seen as a batch of two.

    A batch of two keeps the exported batch dimension dynamic (``torch.export`` specialises a
    batch of one to a constant); as a broadcast view it holds one sample's memory, so the
    ``.pt2`` archive stores one sample, not two. Passed to MLflow inside a list: MLflow traces
    with it but writes no JSON copy of it (``input_example.json`` and
    ``serving_input_example.json`` of a Berlin-sized tensor are tens of MB of text); the small
    example lives in :data:`INPUT_EXAMPLE_FILE`.
    """
    one = np.ascontiguousarray(example[:1], dtype=np.float32)
    return np.broadcast_to(one, (2, *one.shape[1:]))


def log_lake_inputs(inputs: Sequence[Mapping[str, Any]]) -> None:
    """Log lake partitions as the active run's dataset inputs (``mlflow.data``).

    One :class:`mlflow.data.meta_dataset.MetaDataset` per partition: ``source`` its path (any
    URI the lake uses), ``name`` e.g. ``raster/berlin/date=2024-10-20``, ``digest`` the first 32
    hex digits of the file's SHA-256 (MLflow keeps at most 36 characters); the input's tags
    hold the full ``sha256`` and every other key given; ``context`` (e.g. ``training`` or
    ``holdout``) is MLflow's ``mlflow.data.context`` tag.

    Parameters
    ----------
    inputs : sequence of mapping
        ``{"path": str, "name": str, "sha256": str, "context": str, ...}`` per partition.

    A path whose URI scheme MLflow has no dataset source for is not logged as a dataset: a
    warning names it and the run's tag ``inputs.unresolved`` lists such paths.

    Raises
    ------
    ValueError
        If an entry lacks ``path``, ``name`` or ``sha256``, naming the entry.
    """
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.exceptions import MlflowException

    datasets: list[Any] = []
    unresolved: list[str] = []
    contexts: list[str | None] = []
    tags_list: list[dict[str, str] | None] = []
    for entry in inputs:
        missing = [k for k in ("path", "name", "sha256") if not entry.get(k)]
        if missing:
            raise ValueError(f"lake input {dict(entry)} lacks {missing}; each input needs path, name and sha256")
        try:
            with warnings.catch_warnings():  # a file URI matches two equivalent local sources; MLflow picks one
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                source = resolve_dataset_source(str(entry["path"]))
        except MlflowException as exc:  # a lake URI scheme MLflow has no dataset source for: say so, keep the run
            _log.warning("lake input %s not logged: MLflow resolves no dataset source for it (%s)", entry["path"], exc)
            unresolved.append(str(entry["path"]))
            continue
        # MetaDataset: MLflow's documented metadata-only dataset (its base marks `profile` abstract, unenforced)
        meta = MetaDataset(source, name=str(entry["name"]), digest=str(entry["sha256"])[:32])  # type: ignore[abstract]
        datasets.append(meta)
        contexts.append(str(entry["context"]) if entry.get("context") else None)
        tags_list.append({k: str(v) for k, v in entry.items() if k not in ("path", "name", "context")})
    if datasets:
        mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=tags_list)
    if unresolved:  # the run still says which partitions it read
        mlflow.set_tag("inputs.unresolved", json.dumps(unresolved)[:5000])


def log_training(
    city: CityConfig,
    result: TrainResult,
    *,
    data_window: Mapping[str, Any],
    code_version: str | None = None,
    champion_metrics: HorizonMetrics | None = None,
    champion_version: str | int | None = None,
    gate_baselines: Sequence[str] | None = None,
    inputs: Sequence[Mapping[str, Any]] = (),
    train_steps: int | None = None,
    version_tags: Mapping[str, str] | None = None,
    registry: RegistryStore | None = None,
) -> dict[str, Any]:
    """Log a training run, register its model and point the ``challenger`` alias at it.

    One run in experiment ``traffic-<city>`` with: params (``hp.*`` from ``result.params``,
    ``city.*``/``forecast.*`` from the city config, ``data.*`` from ``data_window``,
    ``train.*``); metrics per horizon for the model and every baseline (``<name>.rmse``,
    ``<name>.mae``, ``<name>.n``, ``<name>.mape``, ``<name>.n_mape`` with ``step = h + 1``,
    plus ``<name>.rmse_mean``, ``<name>.mae_mean`` and ``<name>.mape_mean``),
    ``model.rmse_skill_vs_best_baseline``, the learning curve
    (``curve.train_loss``/``curve.val_loss`` per epoch); tags with the holdout window and
    digest; artifacts ``plots/learning_curve.png``, ``plots/forecast_vs_actual_<channel>.png``,
    ``plots/error_map.png`` and ``model_card.md`` (which shows the maps); the model (pt2,
    signature inferred from the input example and the
    module's output). The logged model is loaded back and must reproduce the module's
    output before it is registered as a new version of ``traffic-<city>``.

    Parameters
    ----------
    city : CityConfig
    result : TrainResult
    data_window : mapping
        The data the run used, e.g. ``{"start": ..., "end": ..., "dates": ...}``; logged as
        ``data.<key>`` params and on the model card.
    code_version : str, optional
        Defaults to :func:`traffic.provenance.code_version`.
    champion_metrics : HorizonMetrics, optional
        The current champion scored on the same holdout: shown on the model card and logged
        as ``champion.*`` metrics (same names as ``model.*``), which
        :func:`traffic.pipeline.evaluate_and_promote` reuses instead of scoring it again.
    champion_version : str or int, optional
        The version ``champion_metrics`` belong to (tag ``champion.version``).
    gate_baselines : sequence of str, optional
        Baselines that gate promotion (tag ``promotion.gate_baselines``, shown on the card).
    inputs : sequence of mapping
        The lake partitions the run read, logged as MLflow dataset inputs
        (:func:`log_lake_inputs`): ``{"path", "name", "sha256", "context", ...}`` each.
    train_steps : int, optional
        The run's step budget, shown on the card next to the steps done.
    version_tags : mapping, optional
        More tags of the registered version, written with it (atomically): e.g. the training's
        idempotency key (:data:`traffic.registry.health.TRAINING_KEY_TAG`).
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    dict
        ``{"run_id", "model_name", "version", "model_uri"}``; ``model_uri`` is
        ``models:/traffic-<city>/<version>``.

    Raises
    ------
    ValueError
        If the input example or the module output has the wrong shape.
    RegistryError
        If the logged model does not reproduce the module's output (nothing is registered).
    """
    import mlflow
    import torch
    from mlflow.entities import Param, RunTag
    from mlflow.models import infer_signature

    from traffic.registry import plots
    from traffic.registry.health import REGISTRATION_TAG, owner_tags
    from traffic.registry.safe_load import load_pt2_model_dir

    if "model" not in result.metrics or not result.baselines:
        raise ValueError(f"result.metrics needs 'model' and at least one baseline; got {sorted(result.metrics)}")
    code_version = code_version or current_code_version()
    module, example, out = _check_module(result)
    signature = infer_signature(example, out)
    name = model_name(city)
    base_name, base = result.best_baseline()
    model_m = result.metrics["model"]
    tags = {
        "city": city.name,
        "code_version": code_version,
        "holdout.start": result.holdout.start,
        "holdout.end": result.holdout.end,
        "holdout.n_samples": str(result.holdout.n_samples),
        "holdout.digest": result.holdout.digest,
        "train.stopped_reason": result.stopped_reason,
        "train.device": result.device,
        "best_baseline": base_name,
        "train.wall_clock_cap": yes_no(result.extra.get("wall_clock_cap")),
        "train.warm_start": warm_start_text(result.extra.get("warm_start")),
        **{f"data_window.{k}": str(v) for k, v in data_window.items()},
    }
    if gate_baselines is not None:
        tags["promotion.gate_baselines"] = ",".join(gate_baselines)
    if champion_metrics is not None and champion_version is not None:
        tags["champion.version"] = str(champion_version)
    leads = lead_labels(city, len(model_m.rmse))
    card = partial(
        render_model_card,
        city,
        result,
        data_window,
        champion_metrics=champion_metrics,
        code_version=code_version,
        registered_name=name,
        champion_version=champion_version,
        gate_baselines=gate_baselines,
        train_steps=train_steps,
    )
    card()  # template errors surface before anything is logged

    with _mlflow_session(registry) as client:
        exp_id = _ensure_experiment(client, city, _store_of(registry)[1])
        # named after the night it ran for (as_of), else the end of its training window
        run_name = f"{city.name}-{data_window.get('as_of') or result.train_window[1][:10]}"
        # owner tags: a run its process left RUNNING (kill -9) is told from a live one (health.py)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=owner_tags()) as run:
            run_id = run.info.run_id
            now_ms = int(time.time() * 1000)
            client.log_batch(
                run_id,
                metrics=_metrics(result, now_ms, city, champion_metrics),
                params=[Param(k, v) for k, v in _params(city, result, data_window).items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            if inputs:
                log_lake_inputs(inputs)
            with tempfile.TemporaryDirectory(prefix="traffic-mlflow-") as tmp:
                plots.save_learning_curve(
                    result.learning_curve,
                    Path(tmp) / "learning_curve.png",
                    title=f"{city.name}: learning curve (stopped: {result.stopped_reason})",
                )
                # one panel per horizon group (its last step): a day-ahead sample has up to 96 horizons
                shown = [g.steps.stop - 1 for g in horizon_groups(city.bin_seconds, len(leads))]
                plots.save_forecast_maps(
                    result.example_forecast[shown],
                    result.example_target[shown],
                    result.example_mask[shown],
                    result.channels,
                    tmp,
                    lead_labels=[leads[i] for i in shown],
                )
                plots.save_error_map(
                    result.example_forecast,
                    result.example_target,
                    result.example_mask,
                    result.channels,
                    tmp,
                    title=f"{city.name}: |forecast - observed| per cell, mean over {len(leads)} horizons "
                    "(one holdout sample)",
                )
                client.log_artifacts(run_id, tmp, artifact_path="plots")
            variant_iv = {**(getattr(result, "variant_intervals", None) or {}), "model": result.intervals}
            for variant, iv in variant_iv.items():
                if iv is None:
                    continue
                with tempfile.TemporaryDirectory(prefix="traffic-intervals-") as tmp:
                    path = Path(tmp) / _intervals_artifact(variant).rsplit("/", 1)[-1]
                    path.write_bytes(iv.to_bytes())
                    client.log_artifact(run_id, str(path), artifact_path=INTERVALS_ARTIFACT.rsplit("/", 1)[0])
            combos = getattr(result, "combinations", None) or []
            if combos:  # the per-horizon weights a combination serves with (traffic.forecast.combination)
                from traffic.forecast.combination import dumps

                client.log_text(run_id, dumps(combos), COMBINATION_ARTIFACT)

            if getattr(module, "config", None) is not None and hasattr(module.config, "to_dict"):
                from traffic.forecast.model_folder import save_model

                variants = {"model": None, **(getattr(result, "variant_states", None) or {})}
                for variant, state in variants.items():
                    net = module
                    if state is not None:  # a variant with weights of its own (base + head as pre-fitted)
                        import copy

                        net = copy.deepcopy(module)
                        net.load_state_dict(state)
                    with tempfile.TemporaryDirectory(prefix="traffic-eager-") as tmp:
                        save_model(net, tmp)
                        (Path(tmp) / EAGER_FINGERPRINT).write_text(json.dumps(eager_fingerprint(), sort_keys=True))
                        client.log_artifacts(run_id, tmp, artifact_path=_eager_artifact(variant))

            with tempfile.TemporaryDirectory(prefix="traffic-example-") as tmp, warnings.catch_warnings():
                # torch.from_numpy of the read-only broadcast view of _export_example (never written to)
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                info = mlflow.pytorch.log_model(
                    module,
                    name=MODEL_ARTIFACT,
                    signature=signature,
                    input_example=[_export_example(example)],
                    serialization_format=SERIALIZATION_FORMAT,
                    pip_requirements=_pip_requirements(),
                    extra_files=[str(_write_input_example(example[:1], Path(tmp)))],
                    metadata={
                        "city": city.name,
                        "channels": list(result.channels),
                        "holdout_digest": result.holdout.digest,
                        "input_example": f"extra_files/{INPUT_EXAMPLE_FILE} (array 'x': one sample, "
                        "float16; cast to float32 to call the model)",
                    },
                    validate_serving_input=False,  # checked below, on the loaded module itself
                )
            with tempfile.TemporaryDirectory(prefix="traffic-model-") as tmp:  # the way a version is loaded
                loaded = load_pt2_model_dir(
                    mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=tmp), what=info.model_uri
                )
            with torch.no_grad():
                again = loaded(torch.from_numpy(example)).numpy()
            if not np.allclose(again, out, rtol=ROUNDTRIP_RTOL, atol=ROUNDTRIP_ATOL, equal_nan=True):
                worst = float(np.nanmax(np.abs(again - out)))
                raise RegistryError(
                    f"{name}: the logged model ({info.model_uri}) does not reproduce the module's output "
                    f"on the input example (max abs diff {worst:.3g}); not registered"
                )
            mv = mlflow.register_model(
                info.model_uri,
                name,
                tags={
                    "holdout_digest": result.holdout.digest,
                    "rmse_mean": fmt(model_m.rmse_mean),
                    "best_baseline": base_name,
                    "best_baseline_rmse_mean": fmt(base.rmse_mean),
                    "code_version": code_version,
                    **dict(version_tags or {}),
                },
            )
            version = str(mv.version)
            client.set_registered_model_alias(name, CHALLENGER, version)
            client.update_model_version(
                name,
                version,
                description=(
                    f"challenger: mean RMSE {fmt(model_m.rmse_mean)} vs best baseline {base_name!r} "
                    f"{fmt(base.rmse_mean)} on holdout {result.holdout.start}..{result.holdout.end}; "
                    "promotion not decided yet"
                ),
            )
            client.log_text(run_id, card(version=version, run_id=run_id), "model_card.md")
            # written last: a version without it was cut short (recovered by health.recover_unfinished)
            client.set_model_version_tag(name, version, REGISTRATION_TAG, "complete")
    return {"run_id": run_id, "model_name": name, "version": version, "model_uri": f"models:/{name}/{version}"}


# --------------------------------------------------------------------------------------
# Promotion and lookup
# --------------------------------------------------------------------------------------


def _write_card_decision(client: Any, name: str, version: str, decision: Decision, champion_after: str | None) -> None:
    """Write the decision into the ``model_card.md`` of the version's run (replaces the block: re-runnable).

    A run without a card, or with a card from a template without the decision block, is left as it is.
    """
    import mlflow

    run_id = client.get_model_version(name, version).run_id
    if not run_id or "model_card.md" not in {a.path for a in client.list_artifacts(run_id)}:
        return
    with tempfile.TemporaryDirectory(prefix="traffic-card-") as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_card.md", dst_path=tmp)
        card = Path(local).read_text(encoding="utf-8")
    try:
        updated = with_decision(card, decision_markdown(decision, version, champion_after))
    except ValueError:
        _log.info("%s v%s: model card has no decision block; decision only on the version", name, version)
        return
    client.log_text(run_id, updated, "model_card.md")


def promote(
    city: CityConfig | str,
    version: str | int,
    decision: Decision,
    *,
    serving: Mapping[str, Any] | None = None,
    registry: RegistryStore | None = None,
) -> dict[str, Any]:
    """Apply a promotion decision to a registered version.

    Always writes ``decision.reason`` on the version (description and tag
    ``promotion_decision``, plus tag ``promoted`` = ``true``/``false``) and into the
    "Promotion decision" section of the run's ``model_card.md`` (replaced, so a re-run
    writes the same card), and keeps
    ``challenger`` on the newest version; moves ``champion`` to ``version`` only if
    ``decision.promote``.

    Parameters
    ----------
    city : CityConfig or str
    version : str or int
        Version of ``traffic-<city>`` the decision is about.
    decision : Decision
    serving : mapping, optional
        What serves after the decision (the backtest rule, :func:`traffic.pipeline.evaluate_and_promote`):
        ``{"kind": "model", "variant"}`` (the promoted version's variant is tagged
        ``serving.variant``) or ``{"kind": "baseline", "baseline", "run_id"}``: then ``champion`` is
        removed and the registered model's tag ``serving`` names the baseline. Recorded as the
        registered model's tag ``serving`` either way.
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    dict
        ``{"model_name", "version", "promoted", "reason", "champion", "challenger"}`` where
        ``champion``/``challenger`` are the versions the aliases point at afterwards.

    Raises
    ------
    RegistryError
        If the decision promotes without having compared with an existing champion.
    """
    name = model_name(city)
    version = str(version)
    with _mlflow_session(registry) as client:
        client.get_model_version(name, version)  # raises, naming the model and version, if absent
        current = _aliases(client, name).get(CHAMPION)
        if decision.promote and current not in (None, version) and decision.champion_rmse is None:
            raise RegistryError(
                f"{name}: decision promotes version {version} without comparing with champion version {current}; "
                "score the champion on the same holdout and pass it to decide_promotion"
            )
        client.update_model_version(name, version, description=decision.reason)
        client.set_model_version_tag(name, version, "promotion_decision", decision.reason)
        client.set_model_version_tag(name, version, "promoted", "true" if decision.promote else "false")
        if decision.promote:
            if serving is not None:
                client.set_model_version_tag(name, version, SERVING_VARIANT_TAG, str(serving.get("variant") or "model"))
            client.set_registered_model_alias(name, CHAMPION, version)
        if serving is not None:
            if serving.get("kind") == "baseline" and current is not None:
                client.delete_registered_model_alias(name, CHAMPION)  # a baseline is better: the version stops serving
            client.set_registered_model_tag(name, SERVING_TAG, json.dumps(dict(serving), sort_keys=True))
        newest = _newest_version(client, name)
        if newest is not None:
            client.set_registered_model_alias(name, CHALLENGER, newest)
        aliases = _aliases(client, name)
        _write_card_decision(client, name, version, decision, aliases.get(CHAMPION))
    return {
        "model_name": name,
        "version": version,
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion": aliases.get(CHAMPION),
        "challenger": aliases.get(CHALLENGER),
    }


def champion(
    city: CityConfig | str, alias: str = CHAMPION, *, registry: RegistryStore | None = None
) -> dict[str, Any] | None:
    """The version an alias (default ``champion``) points at, or None.

    Parameters
    ----------
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    dict or None
        ``{"model_name", "version", "run_id", "model_uri", "tags", "description"}`` with
        ``model_uri = models:/traffic-<city>/<version>``; None if the model or alias does
        not exist.
    """
    name = model_name(city)
    with _mlflow_session(registry) as client:
        version = _aliases(client, name).get(alias)
        if version is None:
            return None
        mv = client.get_model_version(name, version)
    return {
        "model_name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "model_uri": f"models:/{name}/{mv.version}",
        "tags": dict(mv.tags or {}),
        "description": mv.description or "",
    }


def serving_record(city: CityConfig | str, *, registry: RegistryStore | None = None) -> dict[str, Any] | None:
    """The registered model's ``serving`` tag (what the last decision chose to serve), or None.

    Returns
    -------
    dict or None
        ``{"kind": "model", ...}`` or ``{"kind": "baseline", "baseline", "run_id", "version"}``; None
        for a city without a registered model or a decision made before the tag existed.
    """
    name = model_name(city)
    with _mlflow_session(registry) as client:
        try:
            rm = client.get_registered_model(name)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
    raw = (rm.tags or {}).get(SERVING_TAG)
    return json.loads(raw) if raw else None


def load_version_module(model_uri: str, *, registry: RegistryStore | None = None) -> Any:
    """Load a logged/registered model as a CPU torch module for inference.

    Parameters
    ----------
    model_uri : str
        Any MLflow model URI (``models:/traffic-berlin/3``, ``models:/traffic-berlin@champion``,
        ``runs:/<id>/model``).
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    torch.nn.Module
        Callable on ``(B, T_in, F, H, W)`` float32 tensors (any ``B``), returning
        ``(B, H_out, C, H, W)``. It is an exported graph: it is always in inference mode
        (``.eval()``/``.train()`` are not supported) and its parameters do not require grad.

    Raises
    ------
    RegistryError
        When the model is not a ``pt2`` archive of tensors and graphs only (a
        ``pickle``-format model, pickled weights, constants or sample inputs, AOTInductor
        libraries): it is refused before anything of it runs (:mod:`traffic.registry.safe_load`).
    """
    import mlflow

    from traffic.registry.safe_load import UnsafeModelError, load_pt2_model_dir

    # download into a folder removed afterwards: the exported program is read into memory
    with _mlflow_session(registry), tempfile.TemporaryDirectory(prefix="traffic-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        try:
            module = load_pt2_model_dir(local, what=model_uri)
        except UnsafeModelError as exc:
            raise RegistryError(f"refused to load {exc}") from exc
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _intervals_artifact(variant: str) -> str:
    """Artifact path of a variant's interval model: ``intervals/intervals.npz`` for the full model."""
    return INTERVALS_ARTIFACT if variant == "model" else INTERVALS_ARTIFACT.replace(".npz", f"_{variant}.npz")


def _eager_artifact(variant: str) -> str:
    """Artifact folder of a variant's eager copy: ``eager`` for the full model (and the base), ``eager_<variant>``."""
    return EAGER_ARTIFACT if variant in ("model", "base") else f"{EAGER_ARTIFACT}_{variant}"


def variant_artefacts(run_id: str, variant: str) -> dict[str, str]:
    """The fitted artefacts a network variant serves from: ``{"weights", "intervals"}`` as ``runs:/`` URIs."""
    return {
        "weights": f"runs:/{run_id}/{_eager_artifact(variant)}",
        "intervals": f"runs:/{run_id}/{_intervals_artifact(variant)}",
    }


def load_combination(run_id: str, name: str, *, registry: RegistryStore | None = None) -> Any:
    """The fitted :class:`traffic.forecast.combination.Combination` ``name`` of a training run (its serving weights).

    Raises
    ------
    RegistryError
        When the run logged no combination of that name (a run from before combinations).
    """
    import mlflow

    from traffic.forecast.combination import loads

    folder, _, fname = COMBINATION_ARTIFACT.rpartition("/")
    with _mlflow_session(registry) as client, tempfile.TemporaryDirectory(prefix="traffic-combination-") as tmp:
        if fname not in {Path(a.path).name for a in client.list_artifacts(run_id, folder)}:
            raise RegistryError(
                f"run {run_id} logged no {COMBINATION_ARTIFACT}: it has no combination {name!r} to serve"
            )
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=COMBINATION_ARTIFACT, dst_path=tmp)
        combos = loads(Path(local).read_text())
    if name not in combos:
        raise RegistryError(f"run {run_id}: {COMBINATION_ARTIFACT} holds {sorted(combos)}, not {name!r}")
    return combos[name]


def load_intervals(run_id: str, *, variant: str = "model", registry: RegistryStore | None = None) -> Any:
    """The 80 % interval model logged with a training run, or None for a run logged without one.

    Parameters
    ----------
    variant : str
        Which deployable variant's intervals (:data:`VARIANT_PATHS`): the full ``model``, ``base_head``
        or ``base``.
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    traffic.forecast.intervals.IntervalModel or None
    """
    import mlflow

    from traffic.forecast.intervals import IntervalModel

    artifact = _intervals_artifact(variant)
    with _mlflow_session(registry) as client, tempfile.TemporaryDirectory(prefix="traffic-intervals-") as tmp:
        folder, _, fname = artifact.rpartition("/")
        if fname not in {Path(a.path).name for a in client.list_artifacts(run_id, folder)}:
            return None
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp)
        return IntervalModel.from_bytes(Path(local).read_bytes())


def load_serving_module(
    run_id: str, model_uri: str, *, variant: str = "model", registry: RegistryStore | None = None
) -> Any:
    """The module of a registered version for inference, the fast way when it can be.

    A run logged with the eager module (artifact ``eager/``: state dict + config of a
    :class:`~traffic.model.Forecaster`, the very module the exported program was checked
    against when it was logged) is rebuilt from it in a fraction of a second, provided the
    code is still the code it was logged with (:func:`eager_fingerprint`); any other run,
    or a model logged under other ``traffic/model.py`` code, is loaded with
    :func:`load_version_module` (deserializing the exported program, which does not depend
    on the code).

    Parameters
    ----------
    run_id : str
        The training run of the version (``champion(city)["run_id"]``).
    model_uri : str
        Its model URI, for the fallback.
    variant : str
        The deployable variant that serves (:data:`VARIANT_PATHS`): ``model`` (the full network),
        ``base_head`` or ``base``. A variant other than ``model`` needs the eager copy under the
        code it was logged with (the exported program runs the full network only).
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    torch.nn.Module
        CPU, inference mode, parameters without grad; ``(B, T_in, F, H, W)`` -> ``(B, H_out, C, H, W)``.

    Raises
    ------
    RegistryError
        For an unknown variant, or a variant other than ``model`` without a usable eager copy.
    """
    import mlflow

    from traffic.forecast.model_folder import MODEL_CONFIG, MODEL_WEIGHTS, load_model

    if variant not in VARIANT_PATHS:
        raise RegistryError(f"run {run_id}: unknown variant {variant!r}; allowed: {sorted(VARIANT_PATHS)}")
    folder = _eager_artifact(variant)

    def exported() -> Any:
        if variant != "model":
            raise RegistryError(
                f"run {run_id}: variant {variant!r} serves from the eager copy {folder!r} logged under this code; "
                "it is missing or was made under other code (retrain the city to serve it)"
            )
        return load_version_module(model_uri, registry=registry)

    with _mlflow_session(registry) as client:
        names = {Path(a.path).name for a in client.list_artifacts(run_id, folder)}
        if not {MODEL_CONFIG, MODEL_WEIGHTS, EAGER_FINGERPRINT} <= names:
            return exported()
        with tempfile.TemporaryDirectory(prefix="traffic-eager-") as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=folder, dst_path=tmp)
            logged = json.loads((Path(local) / EAGER_FINGERPRINT).read_text())
            if logged != eager_fingerprint():
                _log.info("run %s: eager copy made under other code %s; loading the exported program", run_id, logged)
                return exported()
            module = load_model(local)
    module.set_paths(VARIANT_PATHS[variant])
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_module(city: CityConfig | str, alias: str = CHAMPION, *, registry: RegistryStore | None = None) -> Any:
    """Load the module an alias of ``traffic-<city>`` points at (see :func:`load_version_module`).

    Parameters
    ----------
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Raises
    ------
    RegistryError
        If the city has no registered model or no such alias, naming the aliases it has.
    """
    name = model_name(city)
    with _mlflow_session(registry) as client:
        aliases = _aliases(client, name)
    if alias not in aliases:
        raise RegistryError(f"{name} has no version with alias {alias!r}; aliases: {aliases or 'none (no model yet)'}")
    return load_version_module(f"models:/{name}/{aliases[alias]}", registry=registry)


def run_metrics(run_id: str, name: str = "model", *, registry: RegistryStore | None = None) -> HorizonMetrics:
    """Per-horizon metrics of one model or baseline as :func:`log_training` logged them.

    Parameters
    ----------
    run_id : str
        A run made by :func:`log_training` (``log_training(...)["run_id"]``).
    name : str
        ``"model"`` or a baseline name (``"persistence"``, ...).
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    HorizonMetrics
        ``mape``/``n_mape`` are empty for a run logged before MAPE was recorded.

    Raises
    ------
    RegistryError
        If the run has no ``<name>.rmse`` metric, listing the names it has.
    """
    with _mlflow_session(registry) as client:
        hist = {
            key: sorted(client.get_metric_history(run_id, f"{name}.{key}"), key=lambda m: m.step)
            for key in ("mae", "rmse", "n", "mape", "n_mape")
        }
        if not hist["rmse"]:
            logged = sorted(k[: -len(".rmse")] for k in client.get_run(run_id).data.metrics if k.endswith(".rmse"))
            raise RegistryError(f"run {run_id} has no metrics for {name!r}; it has: {logged}")
    return HorizonMetrics(
        mae=[m.value for m in hist["mae"]],
        rmse=[m.value for m in hist["rmse"]],
        n=[int(m.value) for m in hist["n"]],
        mape=[m.value for m in hist["mape"]],  # empty for runs logged before MAPE existed
        n_mape=[int(m.value) for m in hist["n_mape"]],
    )


def run_data(run_id: str, *, registry: RegistryStore | None = None) -> dict[str, dict[str, Any]]:
    """Latest metrics, params and tags of a run: ``{"metrics": {...}, "params": {...}, "tags": {...}}``.

    Parameters
    ----------
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Raises
    ------
    mlflow.exceptions.MlflowException
        If there is no such run.
    """
    with _mlflow_session(registry) as client:
        run = client.get_run(run_id)
    return {"metrics": dict(run.data.metrics), "params": dict(run.data.params), "tags": dict(run.data.tags)}


def logged_metrics(
    city: CityConfig | str,
    alias: str = CHAMPION,
    *,
    holdout_digest: str | None = None,
    registry: RegistryStore | None = None,
) -> HorizonMetrics | None:
    """The model metrics logged with the run of an alias' version.

    Parameters
    ----------
    city : CityConfig or str
    alias : str
    holdout_digest : str, optional
        If given, return the metrics only when that run was scored on the holdout with this
        digest (so they are comparable with a challenger on it); otherwise None.
    registry : RegistryStore, optional
        The registry to use (default: the configured one, :class:`RegistryStore`).

    Returns
    -------
    HorizonMetrics or None
        None when there is no such version, the digests differ, or the run has no metrics.
    """
    info = champion(city, alias, registry=registry)
    if info is None or not info["run_id"]:
        return None
    with _mlflow_session(registry) as client:
        run = client.get_run(info["run_id"])
    if holdout_digest is not None and run.data.tags.get("holdout.digest") != holdout_digest:
        return None
    try:
        return run_metrics(info["run_id"], "model", registry=registry)
    except RegistryError:
        return None


def log_live_metrics(
    run_id: str, metrics: Mapping[str, float], *, step: int, registry: RegistryStore | None = None
) -> str:
    """Log the live (verified) skill of what served on the MLflow run that served it.

    Parameters
    ----------
    run_id : str
        The run named by a forecast's ``mlflow_run_id``: a model version's training run, or the
        nightly run that chose a baseline.
    metrics : mapping
        ``{"live.rmse.h01": ..., "live.days": ...}`` (finite values; NaN ones are left out).
    step : int
        The window's last target day as ``YYYYMMDD``: the metric history shows the live skill day by day,
        and the latest value is the newest window's.
    registry : RegistryStore, optional

    Returns
    -------
    str
        ``"logged"``; ``"unchanged"`` when the run's latest values already are these at this step
        (a re-verification logs nothing twice); ``"no such run"`` when the run does not exist in
        the store (nothing logged).
    """
    from mlflow.entities import Metric

    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    with _mlflow_session(registry) as client:
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            if _is_missing(exc):
                return "no such run"
            raise
        have = run.data.metrics
        if finite and all(have.get(k) == v for k, v in finite.items()):
            hist = client.get_metric_history(run_id, next(iter(finite)))
            if any(m.step == step and m.value == finite[next(iter(finite))] for m in hist):
                return "unchanged"
        ts = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, ts, int(step)) for k, v in sorted(finite.items())])
    return "logged"
