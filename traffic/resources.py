"""The resources a run works on (lake, model registry, warehouse), built once from the config at the edges.

The edges (``traffic`` CLI commands, Airflow tasks, bench scripts) call
:meth:`Resources.from_config` once; it is the one place that reads where storage lives
(``TRAFFIC_HOME``, ``TRAFFIC_LAKE``, ``MLFLOW_TRACKING_URI``, ``TRAFFIC_MLFLOW_ARTIFACTS``,
the MLflow credentials, ``TRAFFIC_DUCKDB``) and who runs (``TRAFFIC_WORKER_NAME``,
``TRAFFIC_TRAIN_STEPS``, ``TRAFFIC_TRAIN_BUDGET_S``), through :mod:`traffic.config`. The
pipeline stages take the object and read nothing from the environment themselves; a test
builds one under a temporary folder with :meth:`Resources.under`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from traffic import config
from traffic.errors import ConfigError
from traffic.lake import Lake


@dataclass(frozen=True)
class Registry:
    """Where the MLflow tracking/registry store lives, and the credentials to reach it.

    Attributes
    ----------
    tracking_uri : str
        Tracking and registry URI (``sqlite:///...``, ``postgresql://...``, ``http(s)://...``).
    artifact_root : str
        Artifact root a city's experiment is created with.
    username, password, token : str or None
        ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` / ``MLFLOW_TRACKING_TOKEN``, read
        once; never shown in ``repr``.
    """

    tracking_uri: str
    artifact_root: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls) -> Registry:
        """The registry configured for this process (:func:`traffic.config.mlflow_uri` and its siblings)."""
        return cls(
            tracking_uri=config.mlflow_uri(),
            artifact_root=config.mlflow_artifact_root(),
            username=os.environ.get("MLFLOW_TRACKING_USERNAME") or None,
            password=os.environ.get("MLFLOW_TRACKING_PASSWORD") or None,
            token=os.environ.get("MLFLOW_TRACKING_TOKEN") or None,
        )


@dataclass(frozen=True)
class Warehouse:
    """The analysts' DuckDB catalog that forecasts are published to.

    Attributes
    ----------
    path : Path
        The catalog file (its run files live next to it, :func:`traffic.publish.store_dir`).
    """

    path: Path

    @classmethod
    def from_config(cls) -> Warehouse:
        """The catalog configured for this process (:func:`traffic.config.duckdb_path`)."""
        return cls(config.duckdb_path())


@dataclass(frozen=True)
class Resources:
    """The lake, the registry and the warehouse of one run, plus the folder for run-local files.

    Attributes
    ----------
    lake : Lake
        Partitioned Parquet/JSON data (:class:`traffic.lake.Lake`).
    registry : Registry
        MLflow tracking/registry store.
    warehouse : Warehouse
        DuckDB catalog.
    home : Path
        Run-local files: training checkpoints (``checkpoints/``), run summaries (``runs/``).
    worker : str
        Names the worker that runs the stages (tag ``worker`` of a training run).
    train_steps, train_budget_s : int or float, optional
        Overrides of every city's ``[forecast] train_steps`` / ``train_budget_s`` (None: the city's
        values apply).
    """

    lake: Lake
    registry: Registry
    warehouse: Warehouse
    home: Path
    worker: str = field(default_factory=socket.gethostname)
    train_steps: int | None = None
    train_budget_s: float | None = None

    @classmethod
    def from_config(cls) -> Resources:
        """The resources configured for this process: the one place a run reads them from the environment.

        Raises
        ------
        ConfigError
            ``TRAFFIC_TRAIN_STEPS`` not a whole number >= 0, or ``TRAFFIC_TRAIN_BUDGET_S`` not a number > 0.
        """
        return cls(
            lake=Lake.from_config(),
            registry=Registry.from_config(),
            warehouse=Warehouse.from_config(),
            home=config.home(),
            worker=os.environ.get("TRAFFIC_WORKER_NAME") or socket.gethostname(),
            train_steps=_env_steps(),
            train_budget_s=_env_budget(),
        )

    @classmethod
    def under(cls, root: str | Path, **overrides: object) -> Resources:
        """Everything under one folder, laid out as a default ``TRAFFIC_HOME`` is (no environment read).

        Parameters
        ----------
        root : str or Path
            The folder (``lake/``, ``mlflow.db``, ``mlartifacts/``, ``forecasts.duckdb``,
            ``checkpoints/``, ``runs/``).
        **overrides
            Other fields (``worker``, ``train_steps``, ...).
        """
        root = Path(root).resolve()
        layout = config.home_layout(root)
        res = cls(
            lake=Lake(layout["lake"]),
            registry=Registry(tracking_uri=layout["mlflow"], artifact_root=layout["artifacts"]),
            warehouse=Warehouse(Path(layout["duckdb"])),
            home=root,
        )
        return dataclasses.replace(res, **overrides)  # type: ignore[arg-type]


def _env_steps() -> int | None:
    """``TRAFFIC_TRAIN_STEPS``: the step budget of every city's training (None when unset)."""
    raw = os.environ.get("TRAFFIC_TRAIN_STEPS", "")
    value = _env_number("TRAFFIC_TRAIN_STEPS", raw, int, "a whole number >= 0", lambda v: v >= 0)
    return None if value is None else int(value)


def _env_budget() -> float | None:
    """``TRAFFIC_TRAIN_BUDGET_S``: the wall-clock cap of every city's training (None when unset)."""
    raw = os.environ.get("TRAFFIC_TRAIN_BUDGET_S", "")
    return _env_number("TRAFFIC_TRAIN_BUDGET_S", raw, float, "seconds > 0", lambda v: v > 0)


def _env_number(name: str, raw: str, kind: type, allowed: str, ok: Callable[[float], bool]) -> int | float | None:
    """``raw``, the value of environment variable ``name``, as a number (None when empty)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ConfigError(f"environment variable {name}={raw!r} is not {allowed}", key=name, value=raw, allowed=allowed)
    return value
