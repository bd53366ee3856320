"""Names in the model registry: the experiment and registered model of a city, and the aliases.

Pure (no MLflow import): the promotion rule, the model card and the MLflow I/O of
:mod:`traffic.registry.mlflow_registry` all name things through these.
"""

from __future__ import annotations

from traffic.config import CityConfig

#: Alias of the version that serves forecasts.
CHAMPION = "champion"
#: Alias of the newest registered version (its promotion is decided by the nightly run).
CHALLENGER = "challenger"
#: Tag of a version: the variant of it that serves (``model``, ``base_head``, ``base``).
SERVING_VARIANT_TAG = "serving.variant"
#: Tag of a registered model: JSON of what serves the city when it is a baseline
#: (``{"kind": "baseline", "baseline", "run_id", "version"}``); ``{"kind": "model"}`` while the champion serves.
SERVING_TAG = "serving"


def city_name(city: CityConfig | str) -> str:
    """The city's name, from its config or as given."""
    return city.name if isinstance(city, CityConfig) else str(city)


def model_name(city: CityConfig | str) -> str:
    """Registered model name of a city: ``traffic-<city>``."""
    return f"traffic-{city_name(city)}"


def experiment_name(city: CityConfig | str) -> str:
    """Experiment name of a city: ``traffic-<city>``."""
    return f"traffic-{city_name(city)}"
