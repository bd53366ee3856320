"""Ingest: raw feed files -> validated, UTC-normalised lake partitions with quarantine and quality reports.

Public API::

    ingest_registry(city, feed) -> dict
    available_dates(city, feed) -> list[str]
    ingest_partition(city, feed, date) -> dict
    ingest_range(city, feed, start, end, progress=False) -> list[dict]   # + the undated report
    IngestError                    # file-level fault: unreadable, truncated, wrong delimiter, schema
                                   # drift, a registry losing too many sources (file, column, value, allowed)
    REASONS, REGISTRY_REASONS      # quarantine / registry rejection reason codes, in check order
"""

from __future__ import annotations

from traffic.ingest.run import (
    REJECTED_SCHEMA,
    UNDATED,
    available_dates,
    ingest_partition,
    ingest_range,
    ingest_registry,
    registry_sources,
    stored_reports,
)
from traffic.ingest.validate import REASONS, REGISTRY_REASONS, check_observations, check_registry, validate
from traffic.landing.readers import IngestError

__all__ = [
    "IngestError",
    "REASONS",
    "REGISTRY_REASONS",
    "REJECTED_SCHEMA",
    "UNDATED",
    "available_dates",
    "check_observations",
    "check_registry",
    "ingest_partition",
    "ingest_range",
    "ingest_registry",
    "registry_sources",
    "stored_reports",
    "validate",
]
