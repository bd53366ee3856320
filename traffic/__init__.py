"""traffic: nightly urban congestion forecasts.

Importing the package applies the project's MLflow settings (:mod:`traffic.mlflow_env`)
before anything imports MLflow: pickle deserialization off, bounded HTTP retries.
"""

from traffic import mlflow_env as _mlflow_env

_mlflow_env.apply()
