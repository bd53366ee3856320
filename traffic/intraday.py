"""Partial current days: the ``until`` cut of an intraday ingest, rasterize and refresh.

A live feed that has delivered rows up to *now* looks like the raw data cut at a moment
``until``: only rows with a timestamp strictly before ``until`` exist. Ingest keeps exactly
those rows (on the shipped historical data this simulates a live feed), rasterize keeps only
the time bins that had ended by ``until`` (a bin still filling would read as a traffic drop
for count channels), and a day whose local end lies after ``until`` is *partial*: its quality
report, observation and raster partitions carry ``until`` so that the nightly freshness gate
never trains on half a day.

``until`` is given as the city's local wall-clock time ``YYYY-MM-DD HH:MM`` (``T`` also
accepted, seconds optional) or as ISO 8601 with an offset (``...Z``, ``...+01:00``). Inside
the lake it is stored as ISO 8601 UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pandas as pd

from traffic.errors import UsageError

_LOCAL_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?$")
_OFFSET_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$")
#: Metadata / report key that marks a partial partition.
UNTIL_KEY = "until"


def parse_until(until: str | dt.datetime | pd.Timestamp, tz: str) -> pd.Timestamp:
    """The UTC instant of ``until``.

    Parameters
    ----------
    until : str or datetime
        Local wall-clock time of the city (``"2012-03-07 08:00"``), ISO 8601 with an offset
        (``"2012-03-07T16:00Z"``), or a datetime (naive = local time of the city).
    tz : str
        IANA timezone of the city. A local time in the skipped spring-forward hour is moved
        forward, an ambiguous fall-back time is read as the first (summer-time) occurrence.

    Returns
    -------
    pandas.Timestamp
        tz-aware, UTC, microsecond unit.

    Raises
    ------
    traffic.errors.UsageError
        (a ``ValueError``) ``until`` is neither form; the message names the value and the allowed forms.
    """
    if isinstance(until, str):
        text = until.strip()
        if not (_LOCAL_RE.match(text) or _OFFSET_RE.match(text)):
            raise UsageError(
                f"until {until!r}: expected local time 'YYYY-MM-DD HH:MM' (timezone {tz}) "
                "or ISO 8601 with an offset such as '2012-03-07T16:00Z'"
            )
        try:
            ts = pd.Timestamp(text)
        except ValueError as exc:
            raise UsageError(f"until {until!r} is not a valid date and time (timezone {tz})") from exc
    elif isinstance(until, dt.datetime):
        ts = pd.Timestamp(until)
    else:
        raise UsageError(
            f"until {until!r}: expected a str 'YYYY-MM-DD HH:MM' or a datetime, got {type(until).__name__}"
        )
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return ts.tz_convert("UTC").as_unit("us")


def local_midnight_utc(date: str, tz: str) -> pd.Timestamp:
    """UTC instant of the first local moment of ``date`` (``YYYY-MM-DD``)."""
    day = pd.Timestamp(date)
    return day.tz_localize(tz, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC").as_unit("us")


def day_end_utc(date: str, tz: str) -> pd.Timestamp:
    """UTC instant of local midnight after ``date``: the day is complete once this has passed."""
    nxt = (pd.Timestamp(date) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    return local_midnight_utc(nxt, tz)


def until_for_day(date: str, cut: pd.Timestamp | None, tz: str) -> pd.Timestamp | None:
    """``cut`` if it ends ``date`` early (the day is partial), else None (the day is complete).

    Raises
    ------
    traffic.errors.UsageError
        (a ``ValueError``) ``date`` begins at or after ``cut``: there is nothing of it yet.
    """
    if cut is None:
        return None
    if local_midnight_utc(date, tz) >= cut:
        raise UsageError(
            f"local date {date} begins at or after until {cut.isoformat()} (timezone {tz}): "
            "no row of that day can have arrived yet; ingest dates up to until's local date"
        )
    return cut if cut < day_end_utc(date, tz) else None


def iso(ts: pd.Timestamp | None) -> str | None:
    """``ts`` as ISO 8601 UTC text (the lake's form of ``until``), None stays None."""
    return None if ts is None else ts.tz_convert("UTC").isoformat()


def local_date(ts: pd.Timestamp, tz: str) -> str:
    """Local calendar date (``YYYY-MM-DD``) of the UTC instant ``ts``."""
    return ts.tz_convert(tz).strftime("%Y-%m-%d")


def parquet_until(path: Any) -> str | None:
    """The ``until`` (ISO UTC) in the metadata of a lake Parquet file, None for a complete day.

    Reads only the file footer.
    """
    import pyarrow.parquet as pq

    with path.open("rb") as fh:
        md = pq.read_schema(fh).metadata or {}
    raw = md.get(UNTIL_KEY.encode())
    return raw.decode() if raw else None
