"""City grids: cells, source-to-cell assignment, rasterizing and the dense tensor loader.

Names are imported lazily so that ``import traffic.grid.tensor`` (or a DAG file) does
not pull in GeoPandas.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GridTensor": "traffic.grid.tensor",
    "GridSpec": "traffic.grid.cells",
    "GridMismatchError": "traffic.grid.cells",
    "build_grid": "traffic.grid.cells",
    "grid_shape": "traffic.grid.cells",
    "grid_spec": "traffic.grid.cells",
    "write_grid": "traffic.grid.cells",
    "read_grid": "traffic.grid.cells",
    "assign_sources": "traffic.grid.assign",
    "assignment_for": "traffic.grid.assign",
    "assignments_for": "traffic.grid.assign",
    "rejected_for": "traffic.grid.assign",
    "aggregate": "traffic.grid.rasterize",
    "check_ingested": "traffic.grid.rasterize",
    "IncompleteIngestError": "traffic.grid.rasterize",
    "rasterize_partition": "traffic.grid.rasterize",
    "rasterize_range": "traffic.grid.rasterize",
    "load_tensor": "traffic.grid.loader",
    "newest_observed_bin": "traffic.grid.loader",
    "time_axis": "traffic.grid.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'traffic.grid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
