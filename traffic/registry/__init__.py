"""MLflow tracking, the champion/challenger model registry and the model card.

Public names are loaded lazily from :mod:`traffic.registry.mlflow_registry` so that
importing this package (e.g. from a DAG file) does not import MLflow or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Decision",
    "RegistryError",
    "champion",
    "decide_promotion",
    "experiment_name",
    "load_intervals",
    "load_module",
    "load_serving_module",
    "load_version_module",
    "log_lake_inputs",
    "log_training",
    "logged_metrics",
    "model_name",
    "promote",
    "render_model_card",
    "resolve_code_version",
    "run_data",
    "run_metrics",
    "with_decision",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("traffic.registry.mlflow_registry"), name)
    raise AttributeError(f"module 'traffic.registry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
