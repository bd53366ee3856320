"""City configuration and project paths.

A city is one TOML file in ``cities/`` (or any folder named by ``TRAFFIC_CITIES``).
Adding a city is adding a file: nothing in the code names a city.

Everything the pipeline writes lives under one folder, ``var/`` in the project root
unless ``TRAFFIC_HOME`` names another. The lake inside it is addressed by URI
(``TRAFFIC_LAKE``, default ``<home>/lake``) so that object storage can replace the
local disk later without code changes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from traffic.calendar import HolidayCalendar
from traffic.channels import CHANNELS, channel_name
from traffic.errors import ConfigError, IngestError
from traffic.timebins import SECONDS_PER_DAY, time_bin_seconds

_T = TypeVar("_T", bound=BaseModel)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ADAPTERS = ("telraam", "metr_la", "melbourne_pedestrian", "canonical")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def home() -> Path:
    """Folder that holds everything the pipeline writes (``TRAFFIC_HOME`` or ``var/``)."""
    return Path(os.environ.get("TRAFFIC_HOME", PROJECT_ROOT / "var")).resolve()


def home_layout(root: Path) -> dict[str, str]:
    """Where each store lives under a home folder when no variable names another place.

    Returns
    -------
    dict
        ``lake`` (a path), ``mlflow`` (the SQLite tracking URI), ``artifacts`` (a ``file://`` URI)
        and ``duckdb`` (a path).
    """
    return {
        "lake": str(root / "lake"),
        "mlflow": f"sqlite:///{root / 'mlflow.db'}",
        "artifacts": (root / "mlartifacts").as_uri(),
        "duckdb": str(root / "forecasts.duckdb"),
    }


def lake_uri() -> str:
    """URI of the data lake root (``TRAFFIC_LAKE`` or ``<home>/lake``)."""
    return os.environ.get("TRAFFIC_LAKE", home_layout(home())["lake"])


def cities_dir() -> Path:
    """Folder of city TOML files (``TRAFFIC_CITIES`` or ``cities/``)."""
    return Path(os.environ.get("TRAFFIC_CITIES", PROJECT_ROOT / "cities"))


def mlflow_uri() -> str:
    """MLflow tracking URI (``MLFLOW_TRACKING_URI`` or SQLite under home)."""
    return os.environ.get("MLFLOW_TRACKING_URI", home_layout(home())["mlflow"])


def mlflow_artifact_root() -> str:
    """Artifact root used when creating a city's experiment."""
    return os.environ.get("TRAFFIC_MLFLOW_ARTIFACTS", home_layout(home())["artifacts"])


def duckdb_path() -> Path:
    """The analysts' DuckDB file (``TRAFFIC_DUCKDB`` or ``<home>/forecasts.duckdb``)."""
    return Path(os.environ.get("TRAFFIC_DUCKDB", home_layout(home())["duckdb"]))


#: Feed options every adapter takes (read by rasterize), besides ``traffic.landing.adapters.ADAPTER_OPTIONS``.
COMMON_FEED_OPTIONS = {
    "min_uptime": "camera rows with a smaller uptime are not rasterized (0 .. 1, default 0)",
    "max_quarantined_share": "a feed day with a larger share of quarantined rows fails ingest (0 .. 1, default 0.5)",
}
#: Most cells a city grid may have (``bbox`` / ``cell_size_m``); a larger grid is refused when the file is loaded.
MAX_GRID_CELLS = 250_000


@dataclass(frozen=True)
class FeedConfig:
    """One data feed of a city.

    Attributes
    ----------
    name : str
        Feed id, used as the ``feed=`` partition key.
    kind : {"sensor", "camera"}
        Landing contract the adapter produces.
    adapter : {"telraam", "metr_la", "melbourne_pedestrian", "canonical"}
        How raw files become the landing contract.
    observations, registry : str
        Paths or URIs of the raw files; a relative path resolves against ``base``.
    channels : tuple of str
        Observation columns rasterized as model channels.
    options : dict
        Adapter-specific options (``traffic.landing.adapters.ADAPTER_OPTIONS`` of the adapter,
        plus :data:`COMMON_FEED_OPTIONS`).
    base : str
        Folder relative paths resolve against: the folder of the city file (set by
        :func:`load_city`); empty = the project root (a config built in code).
    source : str
        The city file, for messages.
    """

    name: str
    kind: str
    adapter: str
    observations: str
    registry: str
    channels: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    base: str = ""
    source: str = ""

    def resolve(self, which: str) -> str:
        """``observations`` or ``registry`` as an absolute path or URI (no file system access).

        A URI or an absolute path is returned as written; a relative path is joined to
        :attr:`base` (the city file's folder), or to the project root when ``base`` is empty.
        """
        raw = str(getattr(self, which))
        if "://" in raw or Path(raw).is_absolute():
            return raw
        return os.path.normpath(Path(self.base or PROJECT_ROOT) / raw)

    def path(self, which: str) -> str:
        """:meth:`resolve`, and for a relative local path, an error that says where it was looked for.

        Raises
        ------
        IngestError
            A relative path (not a glob) that does not exist; the message names the city file,
            the key, the rule (relative to the city file's folder) and, when the path exists
            relative to the project root (the rule before), how to write it.
        """
        raw = str(getattr(self, which))
        resolved = self.resolve(which)
        if resolved == raw or any(ch in raw for ch in "*?[") or Path(resolved).exists():
            return resolved
        base = Path(self.base or PROJECT_ROOT)
        rule = "the city file's folder" if self.base else "the project root (a config built in code)"
        msg = (
            f"cannot read {resolved}: file does not exist ({self.source or 'city config'}: feed {self.name!r} "
            f"{which} = {raw!r}; a relative path resolves against {rule}, {base})"
        )
        legacy = PROJECT_ROOT / raw
        if self.base and legacy.exists():
            msg += (
                f"; {raw!r} exists relative to the project root: write {os.path.relpath(legacy, base)!r} "
                "or an absolute path"
            )
        raise IngestError(msg, file=resolved, key=which, value=raw, allowed="an existing file, folder, glob or URI")


@dataclass(frozen=True)
class ForecastConfig:
    """Forecast settings of a city (the ``[forecast]`` table of its TOML file).

    The nightly run for local date D trains on the ``train_days + holdout_days`` days that
    end with D and forecasts every bin of local day D+1 (the *day-ahead* forecast); the
    intraday refresh re-forecasts the same number of bins from the newest ingested bin.

    Attributes
    ----------
    context_steps : int
        Bins of observations the model reads before the forecast origin (default 12).
    horizon_steps : int
        Bins forecast after the origin. Default: one local day of bins (24 for 1 h bins,
        96 for 15 min), i.e. the whole next day from the nightly origin at local midnight.
    train_days : int
        Days of training (and validation) data before the holdout (default 28).
    holdout_days : int
        Last days of the window kept for evaluation; must hold at least one full horizon
        (default 7).
    train_steps : int
        Optimiser steps of the nightly training: the budget that decides what ships, the same
        on every machine, so two runs on the same data give the same model (default 600).
    train_epochs : float
        The step budget sized by the data: ``ceil(train_epochs x training origins / batch)``
        steps (passes over the training and validation origins), at most ``train_steps`` (then
        the cap). Default 0: ``train_steps`` alone. A city with a long history (Melbourne, 140
        days) needs several passes before its network adds anything; one with a week would
        overfit them.
    train_budget_s : float
        Wall-clock safety net of the training loop (default 900 s). When it fires before
        ``train_steps`` the run records it (``stopped_reason = "wall_clock_cap"``).
    backtest_folds : int
        Folds the holdout's target days are split into for the rolling-origin backtest that
        decides what serves (:mod:`traffic.forecast.backtest`); ``holdout_days`` must be a
        multiple of it. Default (0): :func:`default_backtest_folds`, one fold per week when the
        holdout holds two or more whole weeks, else one per day.
    verify_days : int
        Days of verified day-ahead forecasts the live skill is pooled over (default 7): the
        ``live.*`` metrics on the serving MLflow run, the stale/broken warnings of the verify
        stage (:func:`traffic.verify.alerts`) and the days ``make nightly`` replays.
    """

    context_steps: int = 12
    horizon_steps: int = 0  # 0 = one local day of bins, resolved by parse_city
    train_days: int = 28
    holdout_days: int = 7
    train_steps: int = 600
    train_epochs: float = 0.0
    train_budget_s: float = 900.0
    backtest_folds: int = 0  # 0 = default_backtest_folds(holdout_days), resolved by parse_city
    verify_days: int = 7

    @property
    def window_days(self) -> int:
        """Days of data one nightly run reads: ``train_days + holdout_days``."""
        return self.train_days + self.holdout_days


def default_backtest_folds(holdout_days: float) -> int:
    """Backtest folds of a holdout of ``holdout_days``: weekly folds from two whole weeks on, else daily folds.

    A 7-day city with a 2-day holdout gets 2 daily folds; a 28-day holdout 4 weekly folds (each
    fold then holds every day of the week once).
    """
    days = max(1, int(round(holdout_days)))
    return days // 7 if days >= 14 and days % 7 == 0 else days


# --------------------------------------------------------------------------- validation (pydantic)


def _whole(v: Any) -> Any:
    """A float with no fraction (``600.0``) as an int; anything else unchanged (then type-checked)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _real(v: Any) -> Any:
    """An int as a float (TOML ``60`` for ``60.0``); inf and nan refused; the rest unchanged (then type-checked)."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _text(v: Any) -> Any:
    """A TOML date or date-time literal as its ISO text; anything else unchanged."""
    return v.isoformat() if isinstance(v, dt.date | dt.time) else v


Whole = Annotated[int, BeforeValidator(_whole)]
Real = Annotated[float, BeforeValidator(_real)]
Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[str, StringConstraints(pattern=_NAME_RE.pattern)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _ForecastTable(_Table):
    context_steps: Whole = Field(default=12, ge=1, le=100_000)
    horizon_steps: Whole = Field(default=0, ge=0, le=100_000)
    train_days: Whole = Field(default=28, ge=1, le=3660)
    holdout_days: Whole = Field(default=7, ge=1, le=3660)
    train_steps: Whole = Field(default=600, ge=0, le=100_000_000)
    train_epochs: Real = Field(default=0.0, ge=0, le=100_000)
    train_budget_s: Real = Field(default=900.0, gt=0, le=7 * 86400)
    backtest_folds: Whole = Field(default=0, ge=0, le=3660)
    verify_days: Whole = Field(default=7, ge=1, le=366)


class _PlausibilityTable(_Table):
    max_per_hour: dict[str, Annotated[Real, Field(gt=0, le=1e9)]] = {}
    max_speed_kmh: Real = Field(default=200.0, gt=0, le=1000)

    @field_validator("max_per_hour")
    @classmethod
    def _counts(cls, v: dict[str, float]) -> dict[str, float]:
        from traffic.channels import COUNT_CHANNELS

        bad = sorted(set(v) - set(COUNT_CHANNELS))
        if bad:
            raise ValueError(f"keys {bad} are not count channels; allowed: {sorted(COUNT_CHANNELS)}")
        return v


@dataclass(frozen=True)
class Plausibility:
    """Plausibility bounds of a city's rows (``[plausibility]``; defaults in :mod:`traffic.ingest.validate`)."""

    max_per_hour: tuple[tuple[str, float], ...] = ()
    max_speed_kmh: float = 200.0


class _CalendarTable(_Table):
    holidays_country: str | None = None
    holidays_subdiv: str | None = None
    extra_holidays: list[Text] = []


def _crs_text(v: Any) -> Any:
    """``registry_crs = 2229`` as ``"EPSG:2229"``; anything else unchanged (then type-checked)."""
    return f"EPSG:{v}" if isinstance(v, int) and not isinstance(v, bool) else v


Delimiter = Literal[",", ";", "\t", "|"]


class _OptionsTable(_Table):
    """Every feed option any adapter reads, typed; which ones an adapter reads is checked by :class:`_FeedTable`."""

    interval_s: Whole | None = Field(default=None, ge=1, le=86400)
    start_local: Text | None = None
    end_local: Text | None = None
    counts_extrapolated: bool | None = None
    min_speed_cars: Real | None = Field(default=None, ge=0)
    min_uptime: Real | None = Field(default=None, ge=0, le=1)
    csv_delimiter: Delimiter | None = None
    registry_csv_delimiter: Delimiter | None = None
    registry_crs: Annotated[str, BeforeValidator(_crs_text)] | None = None
    registry_max_rejected_share: Real | None = Field(default=None, ge=0, le=1)
    max_quarantined_share: Real | None = Field(default=None, ge=0, le=1)

    @field_validator("start_local", "end_local")
    @classmethod
    def _iso_time(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ts = pd.Timestamp(v)
            except ValueError:
                ts = None
            if ts is None or ts.tzinfo is not None:
                raise ValueError("is not a local time; allowed: ISO 8601 without offset, like '2012-03-01T00:00:00'")
        return v

    @field_validator("registry_crs")
    @classmethod
    def _crs(cls, v: str | None) -> str | None:
        if v is not None:
            from pyproj import CRS
            from pyproj.exceptions import CRSError

            try:
                CRS.from_user_input(v)
            except CRSError:
                raise ValueError("is not a CRS pyproj knows; allowed: e.g. 'EPSG:25833' or 'EPSG:2229'") from None
        return v


class _FeedTable(_Table):
    name: Name
    kind: Literal["sensor", "camera"]
    adapter: Literal["telraam", "metr_la", "melbourne_pedestrian", "canonical"]
    observations: str = Field(min_length=1)
    registry: str = Field(min_length=1)
    channels: list[str]
    options: _OptionsTable = _OptionsTable()

    @model_validator(mode="after")
    def _channels_of_kind(self) -> _FeedTable:
        bad = [c for c in self.channels if c not in CHANNELS[self.kind]]
        if bad or not self.channels:
            raise ValueError(
                f"channels {bad or self.channels} not allowed for kind {self.kind!r}; allowed: {CHANNELS[self.kind]}"
            )
        return self

    @model_validator(mode="after")
    def _options_of_adapter(self) -> _FeedTable:
        allowed = adapter_options(self.adapter)
        unread = sorted(set(self.options.model_dump(exclude_none=True)) - set(allowed))
        if unread:
            raise ValueError(f"options {unread} are not read by adapter {self.adapter!r}; allowed: {sorted(allowed)}")
        return self


def adapter_options(adapter: str) -> dict[str, str]:
    """The feed options adapter ``adapter`` reads, with what they mean.

    ``traffic.landing.adapters.ADAPTER_OPTIONS[adapter]`` plus :data:`COMMON_FEED_OPTIONS`
    (imported here, not at the top: the adapters import this module).
    """
    from traffic.landing.adapters import ADAPTER_OPTIONS

    return {**ADAPTER_OPTIONS.get(adapter, {}), **COMMON_FEED_OPTIONS}


class _CityTable(_Table):
    name: Name
    timezone: str
    crs_epsg: Whole
    bbox: list[Real]
    cell_size_m: Real = Field(gt=0, le=100_000)
    time_bin: str
    feeds: list[_FeedTable]
    calendar: _CalendarTable = _CalendarTable()
    forecast: _ForecastTable = _ForecastTable()
    plausibility: _PlausibilityTable = _PlausibilityTable()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "is not an IANA zone; allowed: a name like 'Europe/Berlin' or 'America/Los_Angeles'"
            ) from None
        return v

    @field_validator("crs_epsg")
    @classmethod
    def _epsg(cls, v: int) -> int:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs = CRS.from_epsg(v)
        except CRSError:
            raise ValueError(f"is not an EPSG code pyproj knows; allowed: {_EPSG_ALLOWED}") from None
        if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
            unit = crs.axis_info[0].unit_name if crs.axis_info else "?"
            raise ValueError(f"is {crs.name!r} (unit {unit}); allowed: {_EPSG_ALLOWED}")
        return v

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, v: list[float]) -> list[float]:
        if len(v) != 4 or not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError("must be [lon_min, lat_min, lon_max, lat_max] with min < max")
        if not all(-180 <= x <= 180 for x in v[::2]) or not all(-90 <= y <= 90 for y in v[1::2]):
            raise ValueError("is not in WGS84 degrees; allowed: lon -180 .. 180, lat -90 .. 90")
        return v

    @field_validator("time_bin")
    @classmethod
    def _time_bin(cls, v: str) -> str:
        time_bin_seconds(v)
        return v

    @field_validator("feeds")
    @classmethod
    def _feeds(cls, v: list[_FeedTable]) -> list[_FeedTable]:
        if not v:
            raise ValueError("at least one [[feeds]] entry is required")
        names = [f.name for f in v]
        if len(set(names)) != len(names):
            raise ValueError(f"feed names must be unique; got {names}")
        return v


_EPSG_ALLOWED = "a projected CRS in metres, e.g. 25833 (ETRS89 / UTM 33N) or 26945 (NAD83 / California zone 5)"

#: Model of each table, by its place in the file (list indices dropped), for "unknown key" messages.
_TABLES: dict[tuple[str, ...], type[BaseModel]] = {
    (): _CityTable,
    ("forecast",): _ForecastTable,
    ("calendar",): _CalendarTable,
    ("feeds",): _FeedTable,
    ("feeds", "options"): _OptionsTable,
    ("plausibility",): _PlausibilityTable,
}
_SECTIONS = ("forecast", "calendar", "plausibility")


def _where(loc: tuple[Any, ...]) -> str:
    """``("forecast", "context_steps")`` -> ``[forecast] context_steps``; ``("feeds", 0, "kind")`` -> ``feeds[0].kind``."""
    if loc and loc[0] in _SECTIONS:
        return f"[{loc[0]}]" + (" " + _where(loc[1:]) if len(loc) > 1 else "")
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _bound(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


_PROBLEMS = {
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list [...]",
    "model_type": "must be a table",
    "dict_type": "must be a table",
}


def _problem(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _PROBLEMS:
        return _PROBLEMS[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {_bound(bound)}"
    if kind == "literal_error":
        return f"is not allowed; allowed: {ctx['expected']}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])[:1].lower() + str(err["msg"])[1:]


def config_error(exc: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> ConfigError:
    """Pydantic's errors of a city file as one :class:`ConfigError` in the project's one-line form.

    Parameters
    ----------
    exc : pydantic.ValidationError
        Errors of validating (part of) a city file.
    source : str
        The city file, named first in the message.
    prefix : tuple of str
        Location of the validated table in the file (``("forecast",)`` for ``[forecast]`` alone).

    Returns
    -------
    ConfigError
        ``<file>: <key> = <value> <what is allowed>``, every fault joined by ``; ``; unknown keys
        of a table are grouped with the keys the table allows. ``key``/``value``/``allowed`` of
        the first fault are set as attributes.
    """
    parts: list[str] = []
    unknown: dict[tuple[Any, ...], list[str]] = {}
    first: tuple[str, Any, str] | None = None
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        where, value = _where(loc), err.get("input")
        if err["type"] == "missing":
            table = _where(loc[:-1])
            parts.append(f"{table + ': ' if table else ''}missing key {loc[-1]!r}")
            first = first or (where, None, "a value")
            continue
        problem = _problem(dict(err))
        compound = isinstance(value, dict) or (
            isinstance(value, list) and (not value or any(isinstance(x, dict) for x in value))
        )
        parts.append(f"{where}: {problem}" if compound else f"{where} = {value!r} {problem}")
        first = first or (where, value, problem)
    for parent, keys in unknown.items():
        model = _TABLES.get(tuple(p for p in parent if isinstance(p, str)), _CityTable)
        table = _where(parent)
        fields = sorted(model.model_fields)
        parts.insert(0, f"{table + ' ' if table else ''}keys {sorted(keys)} unknown; allowed: {fields}")
        first = first or (f"{table} {keys[0]}".strip(), None, f"one of {fields}")
    key, value, allowed = first or ("", None, "")
    return ConfigError(f"{source}: " + "; ".join(parts), file=source, key=key, value=value, allowed=allowed)


def _validate(model: type[_T], raw: Any, source: str, prefix: tuple[str, ...] = ()) -> _T:
    if not isinstance(raw, dict):
        where = _where(prefix) or "the file"
        raise ConfigError(f"{source}: {where} must be a table, got {raw!r}", file=source, key=where, value=raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source, prefix) from None


def _resolve_forecast(table: _ForecastTable, bin_seconds: int, source: str) -> ForecastConfig:
    fc = ForecastConfig(**table.model_dump())
    per_day = SECONDS_PER_DAY // bin_seconds
    if fc.horizon_steps == 0:
        fc = dataclasses.replace(fc, horizon_steps=per_day)
    if fc.horizon_steps > fc.holdout_days * per_day:
        raise ConfigError(
            f"{source}: [forecast] horizon_steps = {fc.horizon_steps} ({fc.horizon_steps * bin_seconds / 3600:g} h) "
            f"does not fit in holdout_days = {fc.holdout_days}: the holdout must hold a full horizon "
            f"(raise holdout_days to >= {-(-fc.horizon_steps // per_day)} or lower horizon_steps)",
            file=source,
            key="[forecast] horizon_steps",
            value=fc.horizon_steps,
            allowed=f"<= holdout_days x {per_day} bins",
        )
    if fc.backtest_folds == 0:
        fc = dataclasses.replace(fc, backtest_folds=default_backtest_folds(fc.holdout_days))
    if fc.backtest_folds > fc.holdout_days or fc.holdout_days % fc.backtest_folds:
        raise ConfigError(
            f"{source}: [forecast] backtest_folds = {fc.backtest_folds} does not split holdout_days = "
            f"{fc.holdout_days} into folds of whole days: the backtest window is too short for the asked folds "
            f"(raise holdout_days to a multiple of {fc.backtest_folds}, or lower backtest_folds to a divisor of "
            f"{fc.holdout_days})",
            file=source,
            key="[forecast] backtest_folds",
            value=fc.backtest_folds,
            allowed=f"a divisor of holdout_days = {fc.holdout_days} (0 = default)",
        )
    return fc


def parse_forecast(raw: dict[str, Any], bin_seconds: int, source: str) -> ForecastConfig:
    """Validate a ``[forecast]`` table; ``horizon_steps`` defaults to one day of bins.

    Parameters
    ----------
    raw : dict
        The table as read from TOML.
    bin_seconds : int
        The city's bin length (resolves ``horizon_steps = 0``).
    source : str
        The city file, for messages.

    Returns
    -------
    ForecastConfig

    Raises
    ------
    ConfigError
        Naming the file, the key, the value and what is allowed.
    """
    return _resolve_forecast(_validate(_ForecastTable, raw, source, ("forecast",)), bin_seconds, source)


@dataclass(frozen=True)
class CityConfig:
    """A city: its clock, its projection, its grid and its feeds."""

    name: str
    timezone: str
    crs_epsg: int
    bbox: tuple[float, float, float, float]
    cell_size_m: float
    time_bin: str
    feeds: tuple[FeedConfig, ...]
    forecast: ForecastConfig
    source: str = ""
    calendar: HolidayCalendar = field(default_factory=HolidayCalendar)
    plausibility: Plausibility = field(default_factory=Plausibility)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def bin_seconds(self) -> int:
        return time_bin_seconds(self.time_bin)

    @property
    def channels(self) -> tuple[str, ...]:
        """Model channels in a fixed order: ``<feed>.<channel>`` for every feed."""
        return tuple(channel_name(f.name, c) for f in self.feeds for c in f.channels)

    def feed(self, name: str) -> FeedConfig:
        for f in self.feeds:
            if f.name == name:
                return f
        raise ConfigError(
            f"city {self.name!r} has no feed {name!r}; feeds: {[f.name for f in self.feeds]}",
            file=self.source or None,
            key="feed",
            value=name,
            allowed=str([f.name for f in self.feeds]),
        )


def grid_cells(bbox: Any, crs_epsg: int, cell_size_m: float) -> tuple[int, int]:
    """``(rows, columns)`` of the grid of ``bbox`` in ``crs_epsg`` at ``cell_size_m`` (what ``traffic.grid.cells.grid_spec`` builds)."""
    from pyproj import Transformer

    tr = Transformer.from_crs(4326, crs_epsg, always_xy=True)
    lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
    xmin, ymin, xmax, ymax = tr.transform_bounds(lon0, lat0, lon1, lat1, densify_pts=101)
    s = float(cell_size_m)
    width = max(1, math.ceil((xmax - math.floor(xmin / s) * s) / s))
    height = max(1, math.ceil((ymax - math.floor(ymin / s) * s) / s))
    return height, width


def _check_grid_size(bbox: Any, crs_epsg: int, cell_size_m: float, source: str) -> None:
    h, w = grid_cells(bbox, crs_epsg, cell_size_m)
    if h * w > MAX_GRID_CELLS:
        fit = cell_size_m * math.sqrt(h * w / MAX_GRID_CELLS)
        raise ConfigError(
            f"{source}: cell_size_m = {cell_size_m:g} gives a grid of {h} x {w} = {h * w:,} cells over bbox "
            f"{list(bbox)}, more than the {MAX_GRID_CELLS:,} allowed; use cell_size_m >= {math.ceil(fit)} "
            "or a smaller bbox",
            file=source,
            key="cell_size_m",
            value=cell_size_m,
            allowed=f"a grid of at most {MAX_GRID_CELLS:,} cells",
        )


def parse_city(data: dict[str, Any], source: str = "<dict>", base: str | Path | None = None) -> CityConfig:
    """Validate a parsed city TOML and build a :class:`CityConfig`.

    Parameters
    ----------
    data : dict
        The file as read by ``tomllib``.
    source : str
        Where it came from, named in every message.
    base : str or Path, optional
        Folder relative feed paths resolve against (:func:`load_city` passes the city file's
        folder); None = the project root, for a config built in code.

    Returns
    -------
    CityConfig

    Raises
    ------
    ConfigError
        Naming the file, the key, the value and what is allowed: a missing or unknown key, a
        wrong type, a value out of range, an EPSG code pyproj does not know or that is not a
        projected CRS in metres, a bad calendar.
    """
    city = _validate(_CityTable, data, source)
    secs = time_bin_seconds(city.time_bin)
    _check_grid_size(city.bbox, city.crs_epsg, city.cell_size_m, source)
    for i, f in enumerate(city.feeds):
        iv = f.options.interval_s
        if iv is not None and secs % iv:
            raise ConfigError(
                f"{source}: feeds[{i}].options.interval_s = {iv} does not divide time_bin = {city.time_bin!r} "
                f"({secs} s): a bin must hold whole rows of feed {f.name!r}; set time_bin to a multiple of {iv} s",
                file=source,
                key="time_bin",
                value=city.time_bin,
                allowed=f"a multiple of interval_s = {iv} s",
            )
    fc = _resolve_forecast(city.forecast, secs, source)
    try:
        calendar = HolidayCalendar(
            country=city.calendar.holidays_country,
            subdiv=city.calendar.holidays_subdiv,
            extra=tuple(city.calendar.extra_holidays),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [calendar] {exc}", file=source, key="[calendar]") from exc
    feeds = tuple(
        FeedConfig(
            name=f.name,
            kind=f.kind,
            adapter=f.adapter,
            observations=f.observations,
            registry=f.registry,
            channels=tuple(f.channels),
            options=f.options.model_dump(exclude_none=True),
            base="" if base is None else str(base),
            source=source,
        )
        for f in city.feeds
    )
    return CityConfig(
        name=city.name,
        timezone=city.timezone,
        crs_epsg=city.crs_epsg,
        bbox=tuple(city.bbox),  # type: ignore[arg-type]
        cell_size_m=city.cell_size_m,
        time_bin=city.time_bin,
        feeds=feeds,
        forecast=fc,
        source=source,
        calendar=calendar,
        plausibility=Plausibility(
            max_per_hour=tuple(sorted(city.plausibility.max_per_hour.items())),
            max_speed_kmh=city.plausibility.max_speed_kmh,
        ),
    )


def city_file(name: str) -> Path:
    """The TOML file of city ``name`` in :func:`cities_dir`; a name can never leave that folder.

    Raises
    ------
    ConfigError
        ``name`` is not a city name (``../../x``, ``x.toml``, ``Berlin``: it must match
        ``^[a-z][a-z0-9_]{0,62}$``), or no such file; the message lists the known cities.
    """
    known = list_cities()
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"city {name!r} is not a city name: a name matches {_NAME_RE.pattern} and is the file "
            f"{cities_dir()}/<name>.toml; known cities: {known}",
            key="city",
            value=name,
            allowed=str(known),
        )
    p = cities_dir() / f"{name}.toml"
    if not p.is_file():
        raise ConfigError(f"no city file {p}; known cities: {known}", file=str(p), key="city", value=name)
    return p


#: Leading bytes of files that are not UTF-8 TOML text, and what they are.
_NOT_TOML_TEXT = (
    (b"\x1f\x8b", "gzip-compressed bytes (1f 8b)", "decompress it (gunzip) and save the TOML text"),
    (b"\xef\xbb\xbf", "a UTF-8 byte-order mark (BOM, ef bb bf)", "save it as UTF-8 without a BOM"),
    (b"\xff\xfe", "a UTF-16 byte-order mark (ff fe)", "save it as UTF-8 text"),
    (b"\xfe\xff", "a UTF-16 byte-order mark (fe ff)", "save it as UTF-8 text"),
    (b"PK\x03\x04", "a zip archive (50 4b 03 04)", "unzip it and save the TOML text"),
)


def _toml_text(raw: bytes, path: Path) -> str:
    """The text of a city file: UTF-8 without a BOM; anything else is named as what it is.

    Raises
    ------
    ConfigError
        The file starts with gzip or zip bytes or a byte-order mark, or is not UTF-8 (naming the
        first byte that is not).
    """
    for magic, what, fix in _NOT_TOML_TEXT:
        if raw.startswith(magic):
            raise ConfigError(
                f"{path}: the file starts with {what}, not TOML text; {fix}",
                file=str(path),
                value=raw[:4].hex(" "),
                allowed="UTF-8 TOML text without a byte-order mark",
            )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte {raw[exc.start]:#04x} at offset {exc.start} (line {line}); "
            "save the file as UTF-8",
            file=str(path),
            value=f"{raw[exc.start]:#04x}",
            allowed="UTF-8 TOML text",
        ) from exc


def load_city(name_or_path: str | Path) -> CityConfig:
    """Load a city by name (``<cities_dir>/<name>.toml``) or, from code, by the :class:`~pathlib.Path` of its file.

    A name (a ``str``) must match the city name pattern, so that no input can reach a file
    outside the cities folder; the file's ``name`` key must equal the file name. Relative
    feed paths in the file resolve against the file's folder.

    Raises
    ------
    ConfigError
        A name that is not a city name or has no file, a file that is not TOML, or any fault
        :func:`parse_city` finds.
    """
    if isinstance(name_or_path, Path):
        p, stem = name_or_path, None
    else:
        p = city_file(name_or_path)
        stem = name_or_path
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read city file {p}: {exc.strerror or exc}", file=str(p)) from exc
    try:
        data = tomllib.loads(_toml_text(raw, p))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}", file=str(p)) from exc
    city = parse_city(data, source=str(p), base=p.resolve().parent)
    if stem is not None and city.name != stem:
        raise ConfigError(
            f"{p}: name = {city.name!r} must equal the file name {stem!r} (DAGs are named after the file, the lake "
            "after `name`)",
            file=str(p),
            key="name",
            value=city.name,
            allowed=repr(stem),
        )
    return city


def list_cities() -> list[str]:
    """Names of all cities configured in :func:`cities_dir`."""
    return sorted(p.stem for p in cities_dir().glob("*.toml"))
