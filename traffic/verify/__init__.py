"""Verification of published forecasts: how good was each run once its day has happened (issue 15, parts 3-5).

* :mod:`traffic.verify.scores`: the figures of a run against what was observed, and the seasonal
  reference issued from the same data (pure numpy/pandas).
* :mod:`traffic.verify.store`: published runs read from the warehouse store, skill written next to them.
* :mod:`traffic.verify.stage`: the verify stage (:func:`traffic.pipeline.verify`), the ``live.*``
  metrics in MLflow, :func:`alerts` and the window ``traffic skill`` prints.

Names are re-exported lazily (importing the package, e.g. from a DAG file, imports nothing heavy).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "score_run": "scores",
    "seasonal_reference": "scores",
    "figures": "scores",
    "RunScores": "scores",
    "verify_city": "stage",
    "skill_window": "stage",
    "live_metrics": "stage",
    "log_live": "stage",
    "city_grid_digest": "stage",
    "DAY_AHEAD_KINDS": "stage",
    "published_runs": "store",
    "cells_digest": "store",
}
__all__ = sorted([*_EXPORTS, "alerts"])


def alerts(city: Any, *, res: Any = None, as_of: str | None = None) -> list[str]:
    """What is stale or broken in a city's live forecasts over its last ``verify_days`` (one line each).

    Parameters
    ----------
    city : str or CityConfig
    res : traffic.resources.Resources, optional
        Default: built from the configuration.
    as_of : str, optional
        Last local date of the window (default: the newest raster date).

    Returns
    -------
    list of str
        Lines naming city, channel, horizon group and the figures (:func:`traffic.verify.stage.alerts`):
        live skill worse than the seasonal reference, live RMSE above the backtest's promise, days a feed
        delivered nothing. The nightly's promotion decision can quote them.
    """
    from traffic.config import CityConfig, load_city
    from traffic.resources import Resources
    from traffic.verify.stage import alerts as _alerts

    c = city if isinstance(city, CityConfig) else load_city(city)
    return _alerts(c, res=res if res is not None else Resources.from_config(), as_of=as_of)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'traffic.verify' has no attribute {name!r}; names: {__all__}")
    return getattr(importlib.import_module(f"traffic.verify.{_EXPORTS[name]}"), name)
