"""City configuration and project paths.

A city is one TOML file in ``cities/`` (or any folder named by ``TRAFFIC_CITIES``).
Adding a city is adding a file: nothing in the code names a city.

Everything the pipeline writes lives under one folder, ``var/`` in the project root
unless ``TRAFFIC_HOME`` names another. The lake inside it is addressed by URI
(``TRAFFIC_LAKE``, default ``<home>/lake``) so that object storage can replace the
local disk later without code changes.
"""

from __future__ import annotations

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
    """Forecast settings: window lengths in bins and days, and the training budget."""

    context_steps: int = 12
    horizon_steps: int = 3
    train_days: int = 28
    holdout_days: int = 7
    train_budget_s: float = 60.0


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
    fc = ForecastConfig(**data.get("forecast", {}))
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
