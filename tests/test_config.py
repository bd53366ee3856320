from __future__ import annotations

import copy
import tomllib

import pytest

from traffic.config import PROJECT_ROOT, ConfigError, list_cities, load_city, parse_city


def _berlin() -> dict:
    with open(PROJECT_ROOT / "cities" / "berlin.toml", "rb") as fh:
        return tomllib.load(fh)


def test_shipped_cities_load():
    assert list_cities() == ["berlin", "los_angeles"]
    la = load_city("los_angeles")
    assert la.channels == ("metr.speed_kmh",)
    assert la.bin_seconds == 900
    b = load_city("berlin")
    assert b.channels == ("telraam.car", "telraam.heavy", "telraam.bike", "telraam.pedestrian")
    assert b.tz.key == "Europe/Berlin"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("timezone"), "missing key 'timezone'"),
        (lambda d: d.update(timezone="Mars/Olympus"), "not an IANA zone"),
        (lambda d: d.update(crs_epsg=4326), "projected CRS in metres"),
        (lambda d: d.update(bbox=[13.7, 52.3, 13.0, 52.6]), "lon_min, lat_min"),
        (lambda d: d.update(cell_size_m=0), "cell_size_m = 0.0 must be > 0"),
        (lambda d: d.update(time_bin="7min"), "must divide a day"),
        (lambda d: d.update(time_bin="soon"), "is not a duration"),
        (lambda d: d.update(name="Berlin!"), "must match"),
        (lambda d: d["feeds"][0].update(kind="radar"), "kind = 'radar' is not allowed; allowed: 'sensor' or 'camera'"),
        (lambda d: d["feeds"][0].update(adapter="ftp"), "adapter = 'ftp' is not allowed; allowed: 'telraam'"),
        (lambda d: d["feeds"][0].update(channels=["car", "speed_mph"]), "allowed:"),
        (lambda d: d.update(feeds=[]), "at least one"),
        (lambda d: d.update(feeds=d["feeds"] * 2), "unique"),
        (lambda d: d["calendar"].update(holidays_country="XX"), "holiday country 'XX' is not known"),
        (lambda d: d["calendar"].update(holidays_subdiv="ZZ"), "subdivision 'ZZ' is not known for 'DE'"),
        (lambda d: d["calendar"].update(extra_holidays=["24.12.2024"]), "not a date YYYY-MM-DD"),
        (lambda d: d["calendar"].update(holiday_country="DE"), r"\[calendar\] keys \['holiday_country'\] unknown"),
    ],
)
def test_bad_city_config_is_named(mutate, message):
    data = copy.deepcopy(_berlin())
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse_city(data, source="cities/test.toml")


def test_adding_a_city_is_adding_a_file(tmp_path, monkeypatch):
    data = (PROJECT_ROOT / "cities" / "berlin.toml").read_text().replace('name = "berlin"', 'name = "potsdam"')
    (tmp_path / "potsdam.toml").write_text(data)
    monkeypatch.setenv("TRAFFIC_CITIES", str(tmp_path))
    assert list_cities() == ["potsdam"]
    assert load_city("potsdam").name == "potsdam"
    with pytest.raises(ConfigError, match="known cities: \\['potsdam'\\]"):
        load_city("paris")


def test_forecast_horizon_defaults_to_one_local_day_of_bins():
    assert load_city("los_angeles").forecast.horizon_steps == 96  # 15 min bins
    assert load_city("berlin").forecast.horizon_steps == 24  # 1 h bins
    d = _berlin()
    d["forecast"]["horizon_steps"] = 6
    assert parse_city(d).forecast.horizon_steps == 6


@pytest.mark.parametrize(
    ("forecast", "message"),
    [
        ({"horizon": 24}, r"\[forecast\] keys \['horizon'\] unknown; allowed: \['context_steps'"),
        ({"context_steps": -5}, r"context_steps = -5 must be >= 1"),
        ({"context_steps": 2.5}, r"context_steps = 2.5 must be a whole number"),
        ({"train_days": "many"}, r"train_days = 'many' must be a whole number"),
        ({"train_budget_s": 0}, r"train_budget_s = 0.0 must be > 0"),
        ({"holdout_days": 1, "horizon_steps": 48}, r"horizon_steps = 48 \(48 h\) does not fit in holdout_days = 1"),
    ],
)
def test_forecast_table_is_validated(forecast, message):
    d = _berlin()
    d["forecast"].update(forecast)
    with pytest.raises(ConfigError, match=message):
        parse_city(d, source="cities/berlin.toml")
