"""Publish forecasts to the analysts' store: per-run Parquet behind a swapped DuckDB catalog.

* :mod:`traffic.publish.congestion`: congestion index and levels (pure numpy).
* :mod:`traffic.publish.duckdb_publish`: per-run Parquet files, the catalog swap, hotspot queries
  (design: ``docs/publishing.md``).

Names are re-exported lazily so that importing the package (e.g. from a DAG file) does not
import DuckDB.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LEVELS": "congestion",
    "congestion": "congestion",
    "reference_stats": "congestion",
    "init_db": "duckdb_publish",
    "publish_forecast": "duckdb_publish",
    "rebuild_catalog": "duckdb_publish",
    "connect_catalog": "duckdb_publish",
    "store_dir": "duckdb_publish",
    "list_runs": "duckdb_publish",
    "find_hotspots": "duckdb_publish",
    "Hotspots": "duckdb_publish",
    "HotspotError": "duckdb_publish",
    "hotspots": "duckdb_publish",
    "latest_runs": "duckdb_publish",
    "read_relation": "duckdb_publish",
    "run_id_for": "duckdb_publish",
    "PublishError": "duckdb_publish",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'traffic.publish' has no attribute {name!r}; names: {__all__}")
    return getattr(importlib.import_module(f"traffic.publish.{_EXPORTS[name]}"), name)
