"""Process-wide MLflow settings of the project, applied before MLflow is imported.

``import traffic`` calls :func:`apply` (``traffic/__init__.py``), so every entry point (the
CLI, the DAGs, the pipeline) runs with them before MLflow reads its environment:

* ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, always: a model that would need unpickling
  (a ``pickle``-format model, a ``pt2`` archive with pickled records) is refused instead of
  run. MLflow 3 defaults it to true. The project writes only ``pt2`` archives and state
  dicts (loaded with ``torch.load(weights_only=True)``); see
  :mod:`traffic.registry.safe_load`.
* Bounded HTTP retries against a tracking server (MLflow's defaults retry for about four
  minutes): ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` and
  ``MLFLOW_HTTP_REQUEST_TIMEOUT`` get the values of :data:`HTTP_DEFAULTS` unless the user
  set them.
* No telemetry, no artifact progress bars (task logs), unless set.
"""

from __future__ import annotations

import os

#: Environment variable that lets MLflow unpickle models; forced to ``"false"``.
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"

#: Defaults of MLflow's HTTP client: 3 retries with backoff 1, 2, 4 s, 20 s per request,
#: so an unreachable server costs seconds, not minutes (MLflow: 7 retries, factor 2, 120 s).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}

_QUIET_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def apply() -> None:
    """Set the project's MLflow environment (idempotent; user settings win except pickle).

    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set to ``"false"`` even when the user set it:
    loading a model must never run code that came with it.
    """
    os.environ[PICKLE_ENV] = "false"
    for key, value in {**HTTP_DEFAULTS, **_QUIET_DEFAULTS}.items():
        os.environ.setdefault(key, value)
