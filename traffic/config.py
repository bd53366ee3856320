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
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from traffic.calendar import HolidayCalendar

PROJECT_ROOT = Path(__file__).resolve().parent.parent

FEED_KINDS = ("sensor", "camera")
ADAPTERS = ("telraam", "metr_la", "canonical")
#: Channels a feed may deliver, per feed kind (see docs in ``traffic.landing.contract``).
CHANNELS = {
    "sensor": ("count", "speed_kmh", "occupancy"),
    "camera": ("car", "heavy", "bike", "pedestrian", "speed_kmh"),
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """A city file is missing a key or has a value outside what is allowed."""


def home() -> Path:
    """Folder that holds everything the pipeline writes (``TRAFFIC_HOME`` or ``var/``)."""
    return Path(os.environ.get("TRAFFIC_HOME", PROJECT_ROOT / "var")).resolve()


def lake_uri() -> str:
    """URI of the data lake root (``TRAFFIC_LAKE`` or ``<home>/lake``)."""
    return os.environ.get("TRAFFIC_LAKE", str(home() / "lake"))


def cities_dir() -> Path:
    """Folder of city TOML files (``TRAFFIC_CITIES`` or ``cities/``)."""
    return Path(os.environ.get("TRAFFIC_CITIES", PROJECT_ROOT / "cities"))


def mlflow_uri() -> str:
    """MLflow tracking URI (``MLFLOW_TRACKING_URI`` or SQLite under home)."""
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home() / 'mlflow.db'}")


def mlflow_artifact_root() -> str:
    """Artifact root used when creating a city's experiment."""
    return os.environ.get("TRAFFIC_MLFLOW_ARTIFACTS", (home() / "mlartifacts").as_uri())


def duckdb_path() -> Path:
    """The analysts' DuckDB file (``TRAFFIC_DUCKDB`` or ``<home>/forecasts.duckdb``)."""
    return Path(os.environ.get("TRAFFIC_DUCKDB", home() / "forecasts.duckdb"))


@dataclass(frozen=True)
class FeedConfig:
    """One data feed of a city.

    Attributes
    ----------
    name : str
        Feed id, used as the ``feed=`` partition key.
    kind : {"sensor", "camera"}
        Landing contract the adapter produces.
    adapter : {"telraam", "metr_la", "canonical"}
        How raw files become the landing contract.
    observations, registry : str
        Paths (relative to the project root) or URIs of the raw files.
    channels : tuple of str
        Observation columns rasterized as model channels.
    options : dict
        Adapter-specific options.
    """

    name: str
    kind: str
    adapter: str
    observations: str
    registry: str
    channels: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def path(self, which: str) -> str:
        """Resolve ``observations`` or ``registry`` against the project root."""
        raw = getattr(self, which)
        if "://" in raw or Path(raw).is_absolute():
            return str(raw)
        return str(PROJECT_ROOT / raw)


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
    train_budget_s : float
        Wall-clock safety net of the training loop (default 900 s). When it fires before
        ``train_steps`` the run records it (``stopped_reason = "wall_clock_cap"``).
    """

    context_steps: int = 12
    horizon_steps: int = 0  # 0 = one local day of bins, resolved by parse_city
    train_days: int = 28
    holdout_days: int = 7
    train_steps: int = 600
    train_budget_s: float = 900.0

    @property
    def window_days(self) -> int:
        """Days of data one nightly run reads: ``train_days + holdout_days``."""
        return self.train_days + self.holdout_days


#: ``[forecast]`` keys and the types they take.
FORECAST_KEYS = {
    "context_steps": int,
    "horizon_steps": int,
    "train_days": int,
    "holdout_days": int,
    "train_steps": int,
    "train_budget_s": float,
}


def parse_forecast(raw: dict[str, Any], bin_seconds: int, source: str) -> ForecastConfig:
    """Validate a ``[forecast]`` table; ``horizon_steps`` defaults to one day of bins.

    Raises
    ------
    ConfigError
        Naming the file, the key, the value and what is allowed.
    """
    unknown = sorted(set(raw) - set(FORECAST_KEYS))
    if unknown:
        raise ConfigError(f"{source}: [forecast] keys {unknown} unknown; allowed: {sorted(FORECAST_KEYS)}")
    vals: dict[str, Any] = {}
    for key, typ in FORECAST_KEYS.items():
        if key not in raw:
            continue
        v = raw[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ is int and not float(v).is_integer()):
            raise ConfigError(f"{source}: [forecast] {key} = {v!r} must be a {'whole ' if typ is int else ''}number")
        vals[key] = typ(v)
    fc = ForecastConfig(**vals)
    per_day = 86400 // bin_seconds
    if fc.horizon_steps == 0:
        fc = dataclasses.replace(fc, horizon_steps=per_day)
    for key, lo in (
        ("context_steps", 1),
        ("horizon_steps", 1),
        ("train_days", 1),
        ("holdout_days", 1),
        ("train_steps", 0),
    ):
        if getattr(fc, key) < lo:
            raise ConfigError(f"{source}: [forecast] {key} = {getattr(fc, key)} must be >= {lo}")
    if fc.train_budget_s <= 0:
        raise ConfigError(f"{source}: [forecast] train_budget_s = {fc.train_budget_s} must be > 0")
    if fc.horizon_steps > fc.holdout_days * per_day:
        raise ConfigError(
            f"{source}: [forecast] horizon_steps = {fc.horizon_steps} ({fc.horizon_steps * bin_seconds / 3600:g} h) "
            f"does not fit in holdout_days = {fc.holdout_days}: the holdout must hold a full horizon "
            f"(raise holdout_days to >= {-(-fc.horizon_steps // per_day)} or lower horizon_steps)"
        )
    return fc


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

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def bin_seconds(self) -> int:
        return int(pd.Timedelta(self.time_bin).total_seconds())

    @property
    def channels(self) -> tuple[str, ...]:
        """Model channels in a fixed order: ``<feed>.<channel>`` for every feed."""
        return tuple(f"{f.name}.{c}" for f in self.feeds for c in f.channels)

    def feed(self, name: str) -> FeedConfig:
        for f in self.feeds:
            if f.name == name:
                return f
        raise ConfigError(f"city {self.name!r} has no feed {name!r}; feeds: {[f.name for f in self.feeds]}")


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing key {key!r}")
    return d[key]


def parse_city(data: dict[str, Any], source: str = "<dict>") -> CityConfig:
    """Validate a parsed city TOML and build a :class:`CityConfig`.

    Raises
    ------
    ConfigError
        Naming the file, the key and what is allowed.
    """
    name = _require(data, "name", source)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{source}: name {name!r} must match {_NAME_RE.pattern}")
    tzname = _require(data, "timezone", source)
    try:
        ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{source}: timezone {tzname!r} is not an IANA zone") from exc
    epsg = int(_require(data, "crs_epsg", source))
    from pyproj import CRS

    crs = CRS.from_epsg(epsg)
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise ConfigError(f"{source}: crs_epsg {epsg} must be a projected CRS in metres")
    bbox = tuple(float(v) for v in _require(data, "bbox", source))
    if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise ConfigError(f"{source}: bbox {bbox} must be [lon_min, lat_min, lon_max, lat_max]")
    if not (-180 <= bbox[0] <= 180 and -180 <= bbox[2] <= 180 and -90 <= bbox[1] <= 90 and -90 <= bbox[3] <= 90):
        raise ConfigError(f"{source}: bbox {bbox} is not in WGS84 degrees")
    cell = float(_require(data, "cell_size_m", source))
    if cell <= 0:
        raise ConfigError(f"{source}: cell_size_m must be > 0, got {cell}")
    time_bin = str(_require(data, "time_bin", source))
    try:
        secs = pd.Timedelta(time_bin).total_seconds()
    except ValueError as exc:
        raise ConfigError(f"{source}: time_bin {time_bin!r} is not a duration like '15min' or '1h'") from exc
    if secs <= 0 or 86400 % secs:
        raise ConfigError(f"{source}: time_bin {time_bin!r} must divide a day")
    feeds = []
    raw_feeds = _require(data, "feeds", source)
    if not raw_feeds:
        raise ConfigError(f"{source}: at least one [[feeds]] entry is required")
    for i, f in enumerate(raw_feeds):
        where = f"{source}: feeds[{i}]"
        fname = _require(f, "name", where)
        if not _NAME_RE.match(str(fname)):
            raise ConfigError(f"{where}: name {fname!r} must match {_NAME_RE.pattern}")
        kind = _require(f, "kind", where)
        if kind not in FEED_KINDS:
            raise ConfigError(f"{where}: kind {kind!r} not in {FEED_KINDS}")
        adapter = _require(f, "adapter", where)
        if adapter not in ADAPTERS:
            raise ConfigError(f"{where}: adapter {adapter!r} not in {ADAPTERS}")
        channels = tuple(_require(f, "channels", where))
        bad = [c for c in channels if c not in CHANNELS[kind]]
        if bad or not channels:
            raise ConfigError(
                f"{where}: channels {bad or channels} not allowed for kind {kind!r}; allowed: {CHANNELS[kind]}"
            )
        feeds.append(
            FeedConfig(
                name=fname,
                kind=kind,
                adapter=adapter,
                observations=str(_require(f, "observations", where)),
                registry=str(_require(f, "registry", where)),
                channels=channels,
                options=dict(f.get("options", {})),
            )
        )
    if len({f.name for f in feeds}) != len(feeds):
        raise ConfigError(f"{source}: feed names must be unique")
    fc = parse_forecast(dict(data.get("forecast", {})), int(secs), source)
    cal = dict(data.get("calendar", {}))
    unknown = set(cal) - {"holidays_country", "holidays_subdiv", "extra_holidays"}
    if unknown:
        raise ConfigError(
            f"{source}: [calendar] keys {sorted(unknown)} unknown; allowed: holidays_country, holidays_subdiv, "
            "extra_holidays"
        )
    try:
        calendar = HolidayCalendar(
            country=cal.get("holidays_country"),
            subdiv=cal.get("holidays_subdiv"),
            extra=tuple(str(d) for d in cal.get("extra_holidays", ())),
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [calendar] {exc}") from exc
    return CityConfig(
        name=name,
        timezone=tzname,
        crs_epsg=epsg,
        bbox=bbox,  # type: ignore[arg-type]
        cell_size_m=cell,
        time_bin=time_bin,
        feeds=tuple(feeds),
        forecast=fc,
        source=source,
        calendar=calendar,
    )


def load_city(name_or_path: str | Path) -> CityConfig:
    """Load a city by name (``cities/<name>.toml``) or by path to its TOML file."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = cities_dir() / f"{name_or_path}.toml"
    if not p.exists():
        known = sorted(x.stem for x in cities_dir().glob("*.toml"))
        raise ConfigError(f"no city file {p}; known cities: {known}")
    with p.open("rb") as fh:
        return parse_city(tomllib.load(fh), source=str(p))


def list_cities() -> list[str]:
    """Names of all cities configured in :func:`cities_dir`."""
    return sorted(p.stem for p in cities_dir().glob("*.toml"))
