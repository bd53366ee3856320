"""``traffic backfill``: the ``airflow backfill create`` range that ingests exactly the local days asked for."""

from __future__ import annotations

import datetime as dt

import pytest

from traffic.airflow_runner import backfill_args
from traffic.cli import main
from traffic.config import load_city
from traffic.errors import UsageError


def _ticks(city: str, lo: str, hi: str) -> list[str]:
    """Local days the ingest DAG's daily 01:00 runs inside [lo, hi] ingest (the day before each run)."""
    tz = load_city(city).tz
    first, last = dt.datetime.fromisoformat(lo), dt.datetime.fromisoformat(hi)
    day, out = first.astimezone(tz).date() - dt.timedelta(days=1), []
    while True:
        run = dt.datetime.combine(day, dt.time(1), tzinfo=tz)
        if run > last:
            return out
        if run >= first:
            out.append((day - dt.timedelta(days=1)).isoformat())
        day += dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("city", "start", "end"),
    [
        ("los_angeles", "2012-03-05", "2012-03-07"),  # west of UTC
        ("berlin", "2024-06-01", "2024-06-02"),  # east of UTC, summer time
        ("berlin", "2024-10-26", "2024-10-28"),  # over the end of summer time
    ],
)
def test_the_range_covers_the_runs_of_exactly_the_days_asked_for(city, start, end):
    args = backfill_args(city, start, end)
    assert args[:4] == ["backfill", "create", "--dag-id", f"ingest_{city}"]
    opts = dict(zip(args[4::2], args[5::2], strict=True))
    assert opts["--max-active-runs"] == "1"  # one at a time, forward: every day but the last names later runs
    days = _ticks(city, opts["--from-date"], opts["--to-date"])
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    assert days == [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def test_end_before_start_is_refused():
    with pytest.raises(UsageError, match="backfill end 2012-03-01 is before start 2012-03-05"):
        backfill_args("los_angeles", "2012-03-05", "2012-03-01")


def test_the_cli_prints_the_airflow_command(capsys):
    assert main(["backfill", "los_angeles", "--start", "2012-03-05", "--end", "2012-03-07", "--print"]) == 0
    assert capsys.readouterr().out.strip() == (
        "airflow backfill create --dag-id ingest_los_angeles --from-date 2012-03-06T00:00:00-08:00 "
        "--to-date 2012-03-08T23:59:59-08:00 --max-active-runs 1"
    )
