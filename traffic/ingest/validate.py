"""Timestamp normalisation and row validation: pure, vectorised functions over frames.

Nothing here reads or writes files. :func:`check_observations` takes a landing frame
(see :mod:`traffic.landing.adapters`), turns its timestamps into UTC with the rule of
:mod:`traffic.landing.contract`, and gives every row either no reason (accepted) or
exactly one reason code (quarantined).

Observation reason codes, in the order they are checked (a row with several problems
gets the first one):

=========================  =================================================================
``wrong_field_count``       a CSV line with more or fewer fields than the header (the adapter
                            cannot tell which value belongs to which column)
``missing_timestamp``       no timestamp, or text that is not ISO 8601
``nonexistent_local_time``  naive local time inside the skipped spring-forward DST hour
``future_timestamp``        starts later than the delivery (its file's modification time)
                            plus one time bin of the city
``unknown_source``          ``source_id`` empty or not in the feed's registry
``unparseable_value``       a measurement or ``interval_s`` cell that is not a number
``bad_interval``            ``interval_s`` missing, not an integer, <= 0 or > 86400
``marked_missing``          no measurement value, and at least one cell said so explicitly
                            (``N/A``, ``NaN``, ``null`` ...; see
                            :data:`traffic.landing.readers.MISSING_MARKERS`)
``all_values_null``         every measurement column is null (``uptime`` does not count)
``negative_count``          a count (``count``, ``car``, ``heavy``, ``bike``, ``pedestrian``)
                            is negative or infinite
``speed_out_of_range``      ``speed_kmh`` <= 0 or > 200 (a 0 speed is a detector fault)
``occupancy_out_of_range``  ``occupancy`` < 0 or > 1
``uptime_out_of_range``     ``uptime`` < 0 or > 1 + :data:`UPTIME_TOLERANCE`
``zero_uptime``             ``uptime`` is 0: the camera did not count, so its counts say
                            nothing (kept as delivered in the quarantine, never as zeros)
``duplicate``               same ``source_id``, UTC ``timestamp`` and values as an earlier
                            row that passed every other rule (the first is kept)
``conflicting_duplicate``   same ``source_id`` and UTC ``timestamp`` as an earlier accepted
                            row, but other values (the first is kept)
=========================  =================================================================

A null (blank) in an individual measurement column is *not* a reason: the columns are
nullable. A missing marker next to real values in the same row is null as well; the
quality report counts such cells (``values_marked_missing``). ``duplicate`` and
``conflicting_duplicate`` are checked last, among rows that passed every other rule, so
a broken first copy never costs the good second copy.

Registry reason codes, in order: ``missing_source_id``, ``missing_geometry``,
``empty_geometry``, ``invalid_geometry`` (unparseable or not valid per GEOS),
``unsupported_geometry_type`` (not a point or a (multi)line), ``out_of_bounds`` (not
WGS84 degrees), ``duplicate_source_id`` (first valid row kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from traffic.channels import COUNT_CHANNELS, SPEED_MAX_KMH, VALUE_CHANNELS

# SPEED_MAX_KMH (traffic.channels): highest plausible speed; above it (or at/below zero) a speed is a fault
# (city override: ``[plausibility] max_speed_kmh``).
#: Most of each count one source can count in an hour; a row's bound is this x ``interval_s`` / 3600
#: (city override: ``[plausibility] max_per_hour = {car = ...}``). A multi-lane arterial carries
#: about 2,000 vehicles/h per lane; the defaults leave room for 10 lanes and a dense crowd.
MAX_COUNT_PER_HOUR: dict[str, float] = {
    "count": 20_000.0,
    "car": 20_000.0,
    "heavy": 10_000.0,
    "bike": 20_000.0,
    "pedestrian": 100_000.0,
}
#: Telraam reports uptimes a hair above 1 (e.g. 1.00028) from rounding; accepted as delivered.
UPTIME_TOLERANCE = 0.01
#: Longest interval a row may cover.
MAX_INTERVAL_S = 86400

# ISO 8601 with a trailing UTC offset (Z, +01, +0100, +01:00)
_OFFSET_RE = r"\d[T ]?\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*(?:Z|z|UTC|[+-]\d{2}(?::?\d{2})?)$"


# --------------------------------------------------------------------------------------
# timestamps


def parse_timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """Split delivered timestamps into naive local times and exact (offset) instants.

    Parameters
    ----------
    values : pandas.Series
        datetime64 (naive = local wall clock; tz-aware = exact) or ISO 8601 text, where
        each value may or may not carry a UTC offset.

    Returns
    -------
    naive : pandas.Series
        ``datetime64[us]`` local wall-clock times (NaT where the value has an offset,
        is missing or unparseable).
    exact : pandas.Series
        ``datetime64[us, UTC]`` instants of values with an offset (NaT elsewhere).
    has_offset : numpy.ndarray
        bool, True where the value carried an offset.
    """
    n = len(values)
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        exact = values.dt.tz_convert("UTC").dt.as_unit("us")
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]"), exact, np.ones(n, dtype=bool)
    if pd.api.types.is_datetime64_dtype(dtype):
        naive = values.dt.as_unit("us")
        return naive, pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]"), np.zeros(n, dtype=bool)
    text = values.astype("string").str.strip()
    text = text.mask(text == "")
    has_offset = text.str.contains(_OFFSET_RE, regex=True).fillna(False).to_numpy(dtype=bool)
    naive = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    exact = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    if (~has_offset).any():
        parsed = pd.to_datetime(text[~has_offset], format="ISO8601", errors="coerce")
        naive[~has_offset] = parsed.dt.as_unit("us")
    if has_offset.any():
        parsed = pd.to_datetime(
            text[has_offset].str.replace(r"\s*UTC$", "Z", regex=True), format="ISO8601", utc=True, errors="coerce"
        )
        exact[has_offset] = parsed.dt.as_unit("us")
    return naive, exact, has_offset


def normalise_timestamps(source_id: pd.Series, timestamp: pd.Series, tz: str) -> pd.DataFrame:
    """Delivered timestamps -> UTC instants and local wall-clock times (contract rule).

    A timestamp with a UTC offset is exact. A naive one is read in ``tz``: in the
    repeated autumn hour the first row *per source, in file order* is the DST instant
    and the next is the standard-time instant; in the skipped spring hour it has no
    instant (``nonexistent``).

    Parameters
    ----------
    source_id : pandas.Series
        Source of each row (the ambiguous-hour rule counts occurrences per source).
    timestamp : pandas.Series
        As delivered (see :func:`parse_timestamps`).
    tz : str
        IANA timezone of the city.

    Returns
    -------
    pandas.DataFrame
        Same index; ``timestamp`` (``datetime64[us, UTC]``, NaT if missing or
        nonexistent), ``local`` (``datetime64[us]`` local wall clock, NaT if missing),
        ``missing`` and ``nonexistent`` (bool).
    """
    naive, exact, has_offset = parse_timestamps(timestamp)
    is_naive = naive.notna().to_numpy(dtype=bool)
    utc = exact.copy()
    if is_naive.any():
        utc = utc.where(~is_naive, _localise(source_id, naive, tz))
    local = naive.copy()
    if has_offset.any():
        local = local.where(~has_offset, exact.dt.tz_convert(tz).dt.tz_localize(None))
    nonexistent = is_naive & utc.isna().to_numpy(dtype=bool)
    missing = local.isna().to_numpy(dtype=bool)
    return pd.DataFrame(
        {
            "timestamp": utc.dt.as_unit("us"),
            "local": local.dt.as_unit("us"),
            "missing": missing,
            "nonexistent": nonexistent,
        },
        index=timestamp.index,
    )


def _localise(source_id: pd.Series, naive: pd.Series, tz: str) -> pd.Series:
    """Naive local times -> UTC with the contract's DST rule (vectorised over unique times)."""
    values = naive.to_numpy(dtype="datetime64[us]")
    uniq, inverse = np.unique(values, return_inverse=True)
    local = pd.DatetimeIndex(uniq)
    dst = local.tz_localize(tz, ambiguous=np.ones(len(uniq), dtype=bool), nonexistent="NaT").tz_convert("UTC")
    std = local.tz_localize(tz, ambiguous=np.zeros(len(uniq), dtype=bool), nonexistent="NaT").tz_convert("UTC")
    dst_us = dst.tz_localize(None).as_unit("us").asi8
    std_us = std.tz_localize(None).as_unit("us").asi8
    ambiguous = (dst_us != std_us) & ~dst.isna() & ~std.isna()
    take_dst = np.ones(len(values), dtype=bool)
    rows = np.flatnonzero(ambiguous[inverse])
    if len(rows):  # first occurrence per (source, local time) in file order = DST instant
        codes = pd.factorize(source_id)[0][rows]
        occurrence = (
            pd.DataFrame({"s": codes, "t": values[rows].view("int64")}).groupby(["s", "t"], sort=False).cumcount()
        )
        take_dst[rows] = occurrence.to_numpy() == 0
    out = np.where(take_dst, dst_us[inverse], std_us[inverse])
    out = np.where(dst.isna()[inverse], np.iinfo(np.int64).min, out)
    return pd.Series(out.view("datetime64[us]"), index=naive.index).dt.tz_localize("UTC")


def timestamp_us(values: pd.Series) -> np.ndarray:
    """int64 microseconds since the epoch of a UTC datetime Series (NaT = int64 min)."""
    return values.dt.tz_localize(None).dt.as_unit("us").to_numpy().view("int64")


# --------------------------------------------------------------------------------------
# observation rules


@dataclass
class RuleContext:
    """What a rule may need besides the frame.

    Attributes
    ----------
    known_sources : pandas.Index
        Source ids of the feed's registry.
    pending : numpy.ndarray
        bool per row: True while no earlier rule has claimed the row.
    source_codes : numpy.ndarray
        int64 per row: ``pandas.factorize`` codes of ``source_id`` (-1 for NA).
    future_slack_us : int
        How far (microseconds) a row may start after its delivery time (one time bin).
    """

    known_sources: pd.Index
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    source_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    future_slack_us: int = 0
    max_per_hour: dict[str, float] = field(default_factory=lambda: dict(MAX_COUNT_PER_HOUR))
    max_speed_kmh: float = SPEED_MAX_KMH


@dataclass(frozen=True)
class Rule:
    """One validation rule: ``check(frame, ctx)`` returns a bool mask of violating rows."""

    code: str
    description: str
    check: Callable[[pd.DataFrame, RuleContext], np.ndarray]


def _col(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    return frame[name].to_numpy(dtype="float64", na_value=np.nan) if name in frame.columns else None


def _any_of(frame: pd.DataFrame, names: Iterable[str], test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    out = np.zeros(len(frame), dtype=bool)
    for name in names:
        v = _col(frame, name)
        if v is not None:
            with np.errstate(invalid="ignore"):
                out |= test(v)
    return out


def _missing_timestamp(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return f["missing"].to_numpy(dtype=bool)


def _nonexistent(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return f["nonexistent"].to_numpy(dtype=bool)


def _fault(code: str) -> Callable[[pd.DataFrame, RuleContext], np.ndarray]:
    def check(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
        if "fault" not in f.columns:
            return np.zeros(len(f), dtype=bool)
        return (f["fault"] == code).fillna(False).to_numpy(dtype=bool)

    return check


def _future(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    if "delivered_at" not in f.columns:
        return np.zeros(len(f), dtype=bool)
    ts = timestamp_us(f["timestamp"])
    at = timestamp_us(f["delivered_at"])
    nat = np.iinfo(np.int64).min
    return (ts != nat) & (at != nat) & (ts > at + ctx.future_slack_us)


def _unknown_source(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    sid = f["source_id"]
    return (sid.isna() | ~sid.isin(ctx.known_sources)).to_numpy(dtype=bool)


def _bad_interval(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    v = _col(f, "interval_s")
    if v is None:
        return np.ones(len(f), dtype=bool)
    with np.errstate(invalid="ignore"):
        return ~((v > 0) & (v <= MAX_INTERVAL_S) & (v == np.round(v)))


def _no_value(f: pd.DataFrame) -> np.ndarray:
    present = np.zeros(len(f), dtype=bool)
    for name in VALUE_CHANNELS:
        v = _col(f, name)
        if v is not None:
            present |= ~np.isnan(v)
    return ~present


def _marked_missing(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    if "marked" not in f.columns:
        return np.zeros(len(f), dtype=bool)
    return _no_value(f) & (f["marked"].to_numpy(dtype=np.int64) > 0)


def _all_values_null(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _no_value(f)


def _negative_count(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _any_of(f, COUNT_CHANNELS, lambda v: (v < 0) | np.isinf(v))


def _implausible_count(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    hours = _col(f, "interval_s")
    hours = np.full(len(f), 1.0) if hours is None else np.where(np.isfinite(hours), hours / 3600.0, 1.0)
    out = np.zeros(len(f), dtype=bool)
    for name in COUNT_CHANNELS:
        v = _col(f, name)
        if v is not None and name in ctx.max_per_hour:
            with np.errstate(invalid="ignore"):
                out |= v > ctx.max_per_hour[name] * hours
    return out


def _speed(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _any_of(f, ("speed_kmh",), lambda v: (v <= 0) | (v > ctx.max_speed_kmh))


def _occupancy(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _any_of(f, ("occupancy",), lambda v: (v < 0) | (v > 1))


def _uptime(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _any_of(f, ("uptime",), lambda v: (v < 0) | (v > 1 + UPTIME_TOLERANCE))


def _zero_uptime(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _any_of(f, ("uptime",), lambda v: v == 0)


def _copies(f: pd.DataFrame, ctx: RuleContext) -> tuple[np.ndarray, np.ndarray]:
    """Later copies among pending rows (same source, same instant) and whether each equals the kept first."""
    later = np.zeros(len(f), dtype=bool)
    same = np.zeros(len(f), dtype=bool)
    idx = np.flatnonzero(ctx.pending)
    if len(idx) == 0:
        return later, same
    key = pd.DataFrame({"s": ctx.source_codes[idx], "t": timestamp_us(f["timestamp"])[idx]})
    group = key.groupby(["s", "t"], sort=False).ngroup().to_numpy()
    _, first = np.unique(group, return_index=True)  # ngroup numbers groups 0..G-1
    kept = idx[first[group]]
    dup = kept != idx
    equal = np.ones(len(idx), dtype=bool)
    for name in ("interval_s",) + VALUE_CHANNELS + ("uptime",):
        v = _col(f, name)
        if v is not None:
            a, b = v[idx], v[kept]
            equal &= (a == b) | (np.isnan(a) & np.isnan(b))
    later[idx] = dup
    same[idx] = dup & equal
    return later, same


def _duplicate(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    return _copies(f, ctx)[1]


def _conflicting_duplicate(f: pd.DataFrame, ctx: RuleContext) -> np.ndarray:
    later, same = _copies(f, ctx)
    return later & ~same


#: Observation rules in the order they are applied (the first violated rule names the row).
RULES: tuple[Rule, ...] = (
    Rule("wrong_field_count", "a CSV line with more or fewer fields than the header", _fault("wrong_field_count")),
    Rule("missing_timestamp", "no timestamp, or text that is not ISO 8601", _missing_timestamp),
    Rule("nonexistent_local_time", "naive local time in the skipped DST hour", _nonexistent),
    Rule("future_timestamp", "starts after the delivery time plus one time bin", _future),
    Rule("unknown_source", "source_id empty or not in the registry", _unknown_source),
    Rule("unparseable_value", "a measurement or interval_s cell that is not a number", _fault("unparseable_value")),
    Rule("bad_interval", f"interval_s missing, not an integer, <= 0 or > {MAX_INTERVAL_S}", _bad_interval),
    Rule("marked_missing", "no measurement value; a cell said N/A (or another missing marker)", _marked_missing),
    Rule("all_values_null", "every measurement column is null", _all_values_null),
    Rule("negative_count", "a count is negative or infinite", _negative_count),
    Rule(
        "implausible_count",
        "a count above what one source can count in the row's interval ([plausibility] max_per_hour)",
        _implausible_count,
    ),
    Rule("speed_out_of_range", f"speed_kmh <= 0 or > {SPEED_MAX_KMH:g} ([plausibility] max_speed_kmh)", _speed),
    Rule("occupancy_out_of_range", "occupancy < 0 or > 1", _occupancy),
    Rule("uptime_out_of_range", f"uptime < 0 or > {1 + UPTIME_TOLERANCE:g}", _uptime),
    Rule("zero_uptime", "uptime is 0: the camera did not count", _zero_uptime),
    Rule("duplicate", "same source_id, UTC timestamp and values as an earlier accepted row", _duplicate),
    Rule(
        "conflicting_duplicate",
        "same source_id and UTC timestamp as an earlier accepted row, other values",
        _conflicting_duplicate,
    ),
)
#: Reason codes in rule order.
REASONS: tuple[str, ...] = tuple(r.code for r in RULES)


def _labels(codes: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Reason names for rule indices (-1 = None)."""
    out = np.full(len(codes), None, dtype=object)
    hit = codes >= 0
    out[hit] = np.array(names, dtype=object)[codes[hit]]
    return out


def validate(
    frame: pd.DataFrame,
    known_sources: Iterable[str],
    *,
    future_slack_s: int = 0,
    max_per_hour: dict[str, float] | None = None,
    max_speed_kmh: float = SPEED_MAX_KMH,
) -> pd.Series:
    """Reason code per row of a normalised frame (NA = accepted).

    Parameters
    ----------
    frame : pandas.DataFrame
        ``source_id``, ``timestamp`` (UTC), ``missing``, ``nonexistent`` (see
        :func:`normalise_timestamps`), ``interval_s`` and measurement columns (absent
        columns are skipped by their rules).
    known_sources : iterable of str
        Source ids of the registry.
    future_slack_s : int
        Seconds a row may start after its ``delivered_at`` (one time bin of the city).
    max_per_hour : dict, optional
        Most of each count channel per hour and source; default :data:`MAX_COUNT_PER_HOUR`.
    max_speed_kmh : float
        Highest plausible speed.

    Returns
    -------
    pandas.Series
        ``string`` dtype, same index; the first violated rule of :data:`RULES`, NA if none.
    """
    n = len(frame)
    ctx = RuleContext(
        known_sources=pd.Index(pd.Series(list(known_sources), dtype="string")),
        pending=np.ones(n, dtype=bool),
        source_codes=pd.factorize(frame["source_id"])[0],
        future_slack_us=int(future_slack_s) * 1_000_000,
        max_per_hour={**MAX_COUNT_PER_HOUR, **(max_per_hour or {})},
        max_speed_kmh=float(max_speed_kmh),
    )
    codes = np.full(n, -1, dtype=np.int16)
    for i, rule in enumerate(RULES):
        hit = rule.check(frame, ctx) & ctx.pending
        codes[hit] = i
        ctx.pending &= ~hit
    out = _labels(codes, REASONS)
    return pd.Series(out, index=frame.index, dtype="string")


def check_observations(
    landing: pd.DataFrame,
    *,
    tz: str,
    known_sources: Iterable[str],
    future_slack_s: int = 0,
    max_per_hour: dict[str, float] | None = None,
    max_speed_kmh: float = SPEED_MAX_KMH,
) -> pd.DataFrame:
    """Normalise timestamps and validate a landing frame.

    Parameters
    ----------
    landing : pandas.DataFrame
        Landing observation frame (``source_id``, ``timestamp`` as delivered,
        ``interval_s``, measurement columns; optionally the adapter's ``fault``,
        ``marked`` and ``delivered_at``, see :class:`traffic.landing.adapters.Delivery`).
    tz : str
        IANA timezone of the city.
    known_sources : iterable of str
        Source ids of the registry.
    future_slack_s : int
        Seconds a row may start after its delivery time (the city's time bin).
    max_per_hour, max_speed_kmh
        Plausibility bounds (:func:`validate`; the city's ``[plausibility]``).

    Returns
    -------
    pandas.DataFrame
        Same index and rows as ``landing``: ``timestamp`` replaced by UTC, plus
        ``local`` (naive local wall clock), ``missing``, ``nonexistent`` and ``reason``
        (NA = accepted).
    """
    times = normalise_timestamps(landing["source_id"], landing["timestamp"], tz)
    frame = landing.drop(columns=["timestamp"]).join(times)
    frame["reason"] = validate(
        frame, known_sources, future_slack_s=future_slack_s, max_per_hour=max_per_hour, max_speed_kmh=max_speed_kmh
    )
    return frame


# --------------------------------------------------------------------------------------
# registry rules

REGISTRY_REASONS: tuple[str, ...] = (
    "missing_source_id",
    "missing_geometry",
    "empty_geometry",
    "invalid_geometry",
    "unsupported_geometry_type",
    "out_of_bounds",
    "duplicate_source_id",
)
#: Geometry types a source may have (points for detectors, lines for road segments).
GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString")
_GEOMETRY_TYPE_IDS = [int(getattr(shapely.GeometryType, t.upper())) for t in GEOMETRY_TYPES]


def check_registry(frame: pd.DataFrame) -> pd.Series:
    """Reason code per registry row (NA = kept), first of :data:`REGISTRY_REASONS` that applies.

    Parameters
    ----------
    frame : pandas.DataFrame
        Landing registry frame: ``source_id``, ``geometry`` (shapely or None, WGS84),
        ``unparsed`` (bool).

    Returns
    -------
    pandas.Series
        ``string`` dtype, same index.
    """
    n = len(frame)
    geoms = np.array(frame["geometry"].to_numpy(dtype=object), dtype=object)
    geoms[pd.isna(geoms)] = None
    unparsed = frame["unparsed"].to_numpy(dtype=bool) if "unparsed" in frame.columns else np.zeros(n, dtype=bool)
    missing = shapely.is_missing(geoms)
    empty = ~missing & shapely.is_empty(geoms)
    usable = ~missing & ~empty
    invalid = unparsed | (usable & ~shapely.is_valid(geoms))
    type_names = np.asarray(shapely.get_type_id(geoms))
    unsupported = usable & ~np.isin(type_names, _GEOMETRY_TYPE_IDS)
    bounds = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        oob = usable & ~(
            (bounds[:, 0] >= -180)
            & (bounds[:, 2] <= 180)
            & (bounds[:, 1] >= -90)
            & (bounds[:, 3] <= 90)
            & np.isfinite(bounds).all(axis=1)
        )
    masks = [
        frame["source_id"].isna().to_numpy(dtype=bool),
        missing & ~unparsed,
        empty,
        invalid,
        unsupported,
        oob,
    ]
    codes = np.full(n, -1, dtype=np.int16)
    pending = np.ones(n, dtype=bool)
    for i, m in enumerate(masks):
        hit = m & pending
        codes[hit] = i
        pending &= ~hit
    dup = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(pending)
    dup[idx] = frame["source_id"].iloc[idx].duplicated(keep="first").to_numpy(dtype=bool)
    codes[dup] = len(masks)
    return pd.Series(_labels(codes, REGISTRY_REASONS), index=frame.index, dtype="string")
