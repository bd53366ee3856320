"""Validation rules and the timezone rule on tiny hand-built landing frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon

from traffic.ingest.validate import (
    REASONS,
    REGISTRY_REASONS,
    check_observations,
    check_registry,
    normalise_timestamps,
)

KNOWN = ["a", "b"]
DEFAULTS = {
    "sensor": {"interval_s": 300.0, "count": 10.0, "speed_kmh": 50.0, "occupancy": 0.1},
    "camera": {
        "interval_s": 3600.0,
        "car": 5.0,
        "heavy": 1.0,
        "bike": 2.0,
        "pedestrian": 3.0,
        "uptime": 0.9,
        "speed_kmh": 40.0,
    },
}


def landing(kind: str, rows: list[dict]) -> pd.DataFrame:
    """Landing frame of ``kind`` from partial rows (defaults fill the rest)."""
    full = [{"source_id": "a", "timestamp": "2024-06-01T10:00:00", **DEFAULTS[kind], **r} for r in rows]
    df = pd.DataFrame(full)
    df["source_id"] = df["source_id"].astype("string")
    df["timestamp"] = df["timestamp"].astype("string")
    for col in DEFAULTS[kind]:
        df[col] = df[col].astype("float64")
    return df


def three_rows(kind: str, middle: dict) -> pd.DataFrame:
    return landing(
        kind,
        [
            {"source_id": "a", "timestamp": "2024-06-01T10:00:00"},
            {"source_id": "b", "timestamp": "2024-06-01T11:00:00", **middle},
            {"source_id": "a", "timestamp": "2024-06-01T12:00:00"},
        ],
    )


RULE_CASES = [
    ("sensor", {"timestamp": None}, "missing_timestamp"),
    ("sensor", {"timestamp": "yesterday at noon"}, "missing_timestamp"),
    ("camera", {"timestamp": ""}, "missing_timestamp"),
    ("sensor", {"timestamp": "2024-03-31T02:30:00"}, "nonexistent_local_time"),
    ("camera", {"timestamp": "2024-03-31T02:00:00"}, "nonexistent_local_time"),
    ("sensor", {"source_id": "zzz"}, "unknown_source"),
    ("camera", {"source_id": None}, "unknown_source"),
    ("sensor", {"interval_s": 0.0}, "bad_interval"),
    ("sensor", {"interval_s": -300.0}, "bad_interval"),
    ("sensor", {"interval_s": 300.5}, "bad_interval"),
    ("camera", {"interval_s": np.nan}, "bad_interval"),
    ("camera", {"interval_s": 90000.0}, "bad_interval"),
    ("sensor", {"count": np.nan, "speed_kmh": np.nan, "occupancy": np.nan}, "all_values_null"),
    (
        "camera",
        {"car": np.nan, "heavy": np.nan, "bike": np.nan, "pedestrian": np.nan, "speed_kmh": np.nan},
        "all_values_null",
    ),
    ("sensor", {"count": -1.0}, "negative_count"),
    ("camera", {"heavy": -2.0}, "negative_count"),
    ("camera", {"car": np.inf}, "negative_count"),
    ("sensor", {"speed_kmh": 0.0}, "speed_out_of_range"),
    ("sensor", {"speed_kmh": -5.0}, "speed_out_of_range"),
    ("camera", {"speed_kmh": 250.0}, "speed_out_of_range"),
    ("sensor", {"occupancy": 1.5}, "occupancy_out_of_range"),
    ("sensor", {"occupancy": -0.1}, "occupancy_out_of_range"),
    ("camera", {"uptime": 1.2}, "uptime_out_of_range"),
    ("camera", {"uptime": -0.1}, "uptime_out_of_range"),
    ("sensor", {"source_id": "a", "timestamp": "2024-06-01T10:00:00"}, "duplicate"),
    ("camera", {"source_id": "a", "timestamp": "2024-06-01T08:00:00Z"}, "duplicate"),  # same instant as 10:00 CEST
]


@pytest.mark.parametrize(("kind", "middle", "reason"), RULE_CASES)
def test_each_rule_flags_only_the_bad_row(kind, middle, reason):
    out = check_observations(three_rows(kind, middle), tz="Europe/Berlin", known_sources=KNOWN)
    assert out["reason"].iloc[1] == reason
    assert out["reason"].iloc[[0, 2]].isna().all(), out["reason"].tolist()


@pytest.mark.parametrize(
    ("kind", "middle"),
    [
        ("sensor", {"count": np.nan}),
        ("sensor", {"speed_kmh": np.nan, "occupancy": np.nan}),
        ("camera", {"speed_kmh": np.nan}),  # Telraam v85 is null when no car passed
        ("camera", {"uptime": np.nan}),
        ("camera", {"uptime": 1.00028}),  # Telraam rounding; within tolerance
        ("camera", {"car": 0.0, "heavy": 0.0, "bike": 0.0, "pedestrian": 0.0}),  # zero counts are real counts
        ("sensor", {"timestamp": "2024-10-27T02:00:00"}),  # ambiguous, but only once: DST instant
        ("sensor", {"timestamp": "2024-06-01T11:00:00+02:00"}),
    ],
)
def test_nullable_values_and_edge_cases_are_accepted(kind, middle):
    out = check_observations(three_rows(kind, middle), tz="Europe/Berlin", known_sources=KNOWN)
    assert out["reason"].isna().all(), out["reason"].tolist()


@pytest.mark.parametrize(
    "middle",
    [
        {"source_id": "zzz", "speed_kmh": 0.0, "count": -1.0},
        {"timestamp": None, "source_id": "zzz"},
        {"interval_s": 0.0, "count": np.nan, "speed_kmh": np.nan, "occupancy": np.nan, "source_id": "zzz"},
        {"count": -3.0, "speed_kmh": 500.0, "occupancy": 2.0},
        {"speed_kmh": 0.0, "occupancy": 7.0},
    ],
)
def test_several_problems_give_the_first_reason_in_documented_order(middle):
    out = check_observations(three_rows("sensor", middle), tz="Europe/Berlin", known_sources=KNOWN)
    got = out["reason"].iloc[1]
    # every single problem on its own, then the first in REASONS order must win
    singles = []
    for key, value in middle.items():
        one = check_observations(three_rows("sensor", {key: value}), tz="Europe/Berlin", known_sources=KNOWN)
        if pd.notna(one["reason"].iloc[1]):  # a lone null value is no problem
            singles.append(one["reason"].iloc[1])
    assert got == min(singles, key=REASONS.index)
    assert len(set(singles)) > 1


def test_duplicate_keeps_first_valid_copy():
    frame = landing(
        "sensor",
        [
            {"timestamp": "2024-06-01T10:00:00", "speed_kmh": 0.0},  # broken first copy
            {"timestamp": "2024-06-01T10:00:00", "speed_kmh": 48.0},
            {"timestamp": "2024-06-01T10:00:00", "speed_kmh": 49.0},
        ],
    )
    out = check_observations(frame, tz="Europe/Berlin", known_sources=KNOWN)
    assert out["reason"].iloc[0] == "speed_out_of_range"
    assert pd.isna(out["reason"].iloc[1])
    assert out["reason"].iloc[2] == "conflicting_duplicate"  # issue 9: 49 != 48 -> not an exact copy
    assert out["speed_kmh"].iloc[1] == 48.0


# ------------------------------------------------------------------------- timezone rule


def utc(*texts: str) -> list[pd.Timestamp]:
    return [pd.Timestamp(t, tz="UTC") for t in texts]


@pytest.mark.parametrize("as_datetime", [False, True])
def test_ambiguous_hour_first_occurrence_per_source_is_dst(as_datetime):
    sid = pd.Series(["a", "a", "b", "a", "a"], dtype="string")
    ts = pd.Series(
        ["2024-10-27 01:00", "2024-10-27 02:00", "2024-10-27 02:00", "2024-10-27 02:00", "2024-10-27 03:00"],
        dtype="string",
    )
    if as_datetime:
        ts = pd.to_datetime(ts)
    out = normalise_timestamps(sid, ts, "Europe/Berlin")
    assert out["timestamp"].tolist() == utc(
        "2024-10-26 23:00",  # 01:00 CEST
        "2024-10-27 00:00",  # a, first 02:00 -> CEST
        "2024-10-27 00:00",  # b, its only 02:00 -> CEST
        "2024-10-27 01:00",  # a, second 02:00 -> CET
        "2024-10-27 02:00",  # 03:00 CET
    )
    assert not out["nonexistent"].any() and not out["missing"].any()
    assert (out["local"].dt.date.astype(str) == "2024-10-27").all()


def test_ambiguous_hour_in_five_minute_data_and_third_copy_is_duplicate():
    la = "America/Los_Angeles"
    minutes = [f"2012-11-04T01:{m:02d}:00" for m in range(0, 60, 5)]
    frame = landing("sensor", [{"timestamp": t} for t in minutes + minutes + ["2012-11-04T01:30:00"]])
    out = check_observations(frame, tz=la, known_sources=KNOWN)
    first, second = out["timestamp"].iloc[:12], out["timestamp"].iloc[12:24]
    assert (first.dt.hour == 8).all() and (second.dt.hour == 9).all()  # PDT = UTC-7, PST = UTC-8
    assert out["timestamp"].iloc[:24].is_unique
    assert out["reason"].iloc[:24].isna().all()
    assert out["reason"].iloc[24] == "duplicate"


@pytest.mark.parametrize(
    ("tz", "local", "exists"),
    [
        ("Europe/Berlin", "2024-03-31T01:59:00", True),
        ("Europe/Berlin", "2024-03-31T02:00:00", False),
        ("Europe/Berlin", "2024-03-31T02:59:00", False),
        ("Europe/Berlin", "2024-03-31T03:00:00", True),
        ("America/Los_Angeles", "2012-03-11T02:00:00", False),
        ("America/Los_Angeles", "2012-03-11T02:55:00", False),
        ("America/Los_Angeles", "2012-03-11T03:00:00", True),
    ],
)
def test_nonexistent_local_time(tz, local, exists):
    out = normalise_timestamps(pd.Series(["a"], dtype="string"), pd.Series([local], dtype="string"), tz)
    assert bool(out["nonexistent"].iloc[0]) is (not exists)
    assert pd.isna(out["timestamp"].iloc[0]) is (not exists)
    assert out["local"].iloc[0] == pd.Timestamp(local)  # the local date stays known either way


def test_offset_timestamps_are_exact_and_get_city_local_dates():
    sid = pd.Series(["a", "a", "a", "a"], dtype="string")
    ts = pd.Series(
        ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00", "2024-10-26T22:30:00Z", "2024-10-27 02:00"],
        dtype="string",
    )
    out = normalise_timestamps(sid, ts, "Europe/Berlin")
    assert out["timestamp"].tolist() == utc(
        "2024-10-27 00:00", "2024-10-27 01:00", "2024-10-26 22:30", "2024-10-27 00:00"
    )
    assert out["local"].tolist() == [
        pd.Timestamp("2024-10-27 02:00"),
        pd.Timestamp("2024-10-27 02:00"),
        pd.Timestamp("2024-10-27 00:30"),
        pd.Timestamp("2024-10-27 02:00"),
    ]


def test_tz_aware_datetime_column_is_exact():
    ts = pd.Series(pd.to_datetime(["2012-03-11T09:30:00Z", "2012-03-11T10:00:00Z"], utc=True))
    out = normalise_timestamps(pd.Series(["a", "a"], dtype="string"), ts, "America/Los_Angeles")
    assert out["timestamp"].tolist() == utc("2012-03-11 09:30", "2012-03-11 10:00")
    # 01:30 PST, then the clock jumps: 10:00Z is 03:00 PDT
    assert out["local"].tolist() == [pd.Timestamp("2012-03-11 01:30"), pd.Timestamp("2012-03-11 03:00")]
    assert not out["nonexistent"].any()


# ------------------------------------------------------------------------- registry rules


@pytest.mark.parametrize(
    ("source_id", "geometry", "unparsed", "reason"),
    [
        (None, Point(13.4, 52.5), False, "missing_source_id"),
        ("x", None, False, "missing_geometry"),
        ("x", None, True, "invalid_geometry"),
        ("x", LineString(), False, "empty_geometry"),
        ("x", shapely.from_wkt("LINESTRING (13.4 52.5, 13.4 52.5)"), False, "invalid_geometry"),
        ("x", Polygon([(13, 52), (13.1, 52), (13.1, 52.1)]), False, "unsupported_geometry_type"),
        ("x", Point(500000.0, 5800000.0), False, "out_of_bounds"),  # metres, not degrees
        ("a", Point(13.5, 52.5), False, "duplicate_source_id"),
        ("x", LineString([(13.4, 52.5), (13.41, 52.5)]), False, None),
    ],
)
def test_registry_rules(source_id, geometry, unparsed, reason):
    frame = pd.DataFrame(
        {
            "source_id": pd.Series(["a", source_id, "b"], dtype="string"),
            "geometry": np.array([Point(13.4, 52.5), geometry, Point(13.41, 52.5)], dtype=object),
            "unparsed": [False, unparsed, False],
        }
    )
    out = check_registry(frame)
    assert (out.iloc[1] if pd.notna(out.iloc[1]) else None) == reason
    assert out.iloc[[0, 2]].isna().all()
    assert reason is None or reason in REGISTRY_REASONS
