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


def city_name(city: CityConfig | str) -> str:
    """The city's name, from its config or as given."""
    return city.name if isinstance(city, CityConfig) else str(city)


def model_name(city: CityConfig | str) -> str:
    """Registered model name of a city: ``traffic-<city>``."""
    return f"traffic-{city_name(city)}"


def experiment_name(city: CityConfig | str) -> str:
    """Experiment name of a city: ``traffic-<city>``."""
    return f"traffic-{city_name(city)}"
