"""The model registry: the promotion rule, the model card and MLflow tracking of champion/challenger versions.

Public names are loaded lazily from their modules (:mod:`traffic.registry.promotion`,
:mod:`traffic.registry.card`, :mod:`traffic.registry.names` and the MLflow I/O of
:mod:`traffic.registry.mlflow_registry`) so that importing this package (e.g. from a DAG file)
does not import MLflow or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Where each public name lives.
_MODULES = {
    "CHALLENGER": "names",
    "CHAMPION": "names",
    "SERVING_TAG": "names",
    "SERVING_VARIANT_TAG": "names",
    "decide_serving": "promotion",
    "ServingDecision": "promotion",
    "serving_record": "mlflow_registry",
    "experiment_name": "names",
    "model_name": "names",
    "Decision": "promotion",
    "decide_promotion": "promotion",
    "render_model_card": "card",
    "with_decision": "card",
    "RegistryError": "mlflow_registry",
    "RegistryStore": "mlflow_registry",
    "champion": "mlflow_registry",
    "load_intervals": "mlflow_registry",
    "load_module": "mlflow_registry",
    "load_serving_module": "mlflow_registry",
    "load_version_module": "mlflow_registry",
    "log_lake_inputs": "mlflow_registry",
    "log_training": "mlflow_registry",
    "logged_metrics": "mlflow_registry",
    "promote": "mlflow_registry",
    "run_data": "mlflow_registry",
    "run_metrics": "mlflow_registry",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(import_module(f"traffic.registry.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'traffic.registry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
