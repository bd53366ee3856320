"""Every stage logs through ``logging`` (counts, timings, decisions); the nightly takes the newest queued as_of."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.ingest.helpers import canonical_city
from traffic import pipeline
from traffic.grid import IncompleteIngestError


def _event(**extra):
    return SimpleNamespace(extra=extra)


def test_the_newest_queued_as_of_wins():
    queued = [_event(as_of="2024-06-02", start="2024-06-02"), _event(as_of="2024-06-04"), _event(as_of="2024-06-03")]
    assert pipeline.as_of_from_events(queued) == ("2024-06-04", None)


def test_a_newer_partial_day_does_not_hide_a_complete_one_and_alone_skips():
    queued = [_event(as_of="2024-06-03"), _event(as_of="2024-06-04", until="2024-06-04 10:00")]
    assert pipeline.as_of_from_events(queued) == ("2024-06-03", None)
    as_of, skip = pipeline.as_of_from_events([_event(as_of="2024-06-04", until="2024-06-04 10:00")])
    assert as_of is None and "partial day" in skip and "2024-06-04 10:00" in skip
    assert pipeline.as_of_from_events([_event(), SimpleNamespace(extra=None)]) == (None, None)


def test_the_nightly_dag_resolves_as_of_through_the_newest_rule():
    """The DAG's resolve_as_of task uses the rule (no first-event-wins loop left in the DAG file)."""
    from traffic.config import PROJECT_ROOT

    text = (PROJECT_ROOT / "dags" / "traffic_dags.py").read_text()
    assert "pipeline.as_of_from_events(" in text and "for ev in evs:" not in text.split("as_of_from_events(")[1][:200]


@pytest.fixture
def town(tmp_path):
    times = pd.date_range("2024-06-01 00:00", "2024-06-02 23:45", freq="15min")
    obs = pd.DataFrame(
        {
            "source_id": ["a"] * len(times) + ["b"] * len(times),
            "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%S") for t in times] * 2,
            "interval_s": 900,
            "speed_kmh": 40.0,
        }
    )
    registry = pd.DataFrame({"source_id": ["a", "b"], "lon": [13.40, 13.41], "lat": [52.50, 52.51]})
    return canonical_city(tmp_path / "raw", obs, registry)


def _messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_ingest_and_rasterize_log_counts_timings_and_failures(town, caplog):
    with caplog.at_level(logging.INFO, logger="traffic"):
        pipeline.ingest(town, "2024-06-01", "2024-06-02")
        pipeline.rasterize(town, "2024-06-01", "2024-06-02")
    msgs = _messages(caplog, "traffic.pipeline")
    assert any(m.startswith("ingest tinytown: start") for m in msgs)
    done = next(m for m in msgs if m.startswith("ingest tinytown: done in"))
    assert "feed f: 2 day(s), read 384, accepted 384, quarantined 0, 2 sources" in done
    assert any(m.startswith("rasterize tinytown: done in") and "2 day(s) 2024-06-01..2024-06-02" in m for m in msgs)
    assert any("ingested whole in every feed" in m for m in _messages(caplog, "traffic.grid.rasterize"))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="traffic"), pytest.raises(IncompleteIngestError):
        pipeline.rasterize(town, "2024-06-01", "2024-06-03")
    failed = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "traffic.pipeline"]
    assert len(failed) == 1 and "rasterize tinytown: failed after" in failed[0].getMessage()
    assert "IncompleteIngestError" in failed[0].getMessage()
