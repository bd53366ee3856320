from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from traffic.config import PROJECT_ROOT, ConfigError, list_cities, load_city, parse_city
from traffic.errors import IngestError


def _berlin() -> dict:
    with open(PROJECT_ROOT / "cities" / "berlin.toml", "rb") as fh:
        return tomllib.load(fh)


def test_shipped_cities_load():
    assert list_cities() == ["berlin", "los_angeles", "melbourne"]
    la = load_city("los_angeles")
    assert la.channels == ("metr.speed_kmh",)
    assert la.bin_seconds == 900
    b = load_city("berlin")
    assert b.channels == ("telraam.car", "telraam.heavy", "telraam.bike", "telraam.pedestrian", "telraam.speed_kmh")
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


def test_backtest_folds_default_to_weeks_or_days_and_the_shipped_cities_have_enough():
    d = _berlin()
    d["forecast"].pop("backtest_folds", None)
    d["forecast"]["holdout_days"] = 28
    assert parse_city(d).forecast.backtest_folds == 4
    d["forecast"]["holdout_days"] = 7
    assert parse_city(d).forecast.backtest_folds == 7
    assert load_city("berlin").forecast.backtest_folds >= 4
    assert load_city("los_angeles").forecast.backtest_folds == load_city("los_angeles").forecast.holdout_days == 2


@pytest.mark.parametrize(
    ("forecast", "message"),
    [
        ({"horizon": 24}, r"\[forecast\] keys \['horizon'\] unknown; allowed: \['backtest_folds', 'context_steps'"),
        ({"context_steps": -5}, r"context_steps = -5 must be >= 1"),
        ({"context_steps": 2.5}, r"context_steps = 2.5 must be a whole number"),
        ({"train_days": "many"}, r"train_days = 'many' must be a whole number"),
        ({"train_budget_s": 0}, r"train_budget_s = 0.0 must be > 0"),
        ({"train_epochs": -1}, r"train_epochs = -1.0 must be >= 0"),
        ({"train_epochs": "ten"}, r"train_epochs = 'ten' must be a number"),
        ({"holdout_days": 1, "horizon_steps": 48}, r"horizon_steps = 48 \(48 h\) does not fit in holdout_days = 1"),
        (
            {"holdout_days": 7, "backtest_folds": 4},
            r"backtest_folds = 4 does not split holdout_days = 7 into folds of whole days: the backtest window is "
            r"too short for the asked folds",
        ),
        ({"holdout_days": 2, "backtest_folds": 3}, r"\[forecast\] backtest_folds = 3 does not split holdout_days = 2"),
    ],
)
def test_forecast_table_is_validated(forecast, message):
    d = _berlin()
    d["forecast"].update(forecast)
    with pytest.raises(ConfigError, match=message):
        parse_city(d, source="cities/berlin.toml")


# ------------------------------------------------------------------ issue 9: one validator, one-line errors


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        # an EPSG code pyproj does not know: a ConfigError naming the file and key, not a raw pyproj error
        (
            lambda d: d.update(crs_epsg=99999),
            r"crs_epsg = 99999 is not an EPSG code pyproj knows; allowed: a projected",
        ),
        (lambda d: d.update(crs_epsg="25833"), r"crs_epsg = '25833' must be a whole number"),
        (lambda d: d.update(nme="berlin"), r"keys \['nme'\] unknown; allowed: \['bbox', 'calendar'"),
        (lambda d: d["feeds"][0].update(registy="x"), r"feeds\[0\] keys \['registy'\] unknown; allowed: \["),
        (lambda d: d["feeds"][0].pop("registry"), r"feeds\[0\]: missing key 'registry'"),
        (
            lambda d: d["feeds"][0].update(options={"intervl_s": 300}),
            r"feeds\[0\].options keys \['intervl_s'\] unknown",
        ),
        (
            lambda d: d["feeds"][0].update(options={"interval_s": -300}),
            r"feeds\[0\].options.interval_s = -300 must be >= 1",
        ),
        (lambda d: d["feeds"][0].update(options={"min_uptime": 2}), r"options.min_uptime = 2 must be <= 1"),
        (lambda d: d["feeds"][0].update(observations=""), r"feeds\[0\].observations = '' must not be empty"),
        (lambda d: d["feeds"][0].update(channels="car"), r"feeds\[0\].channels = 'car' must be a list"),
        (lambda d: d.update(bbox=["13.0", 52.2, 13.7, 52.7]), r"bbox\[0\] = '13.0' must be a number"),
        (lambda d: d.update(bbox=[200.0, 52.2, 213.7, 52.7]), r"bbox = \[200.0, .*\] is not in WGS84 degrees"),
        (lambda d: d.update(cell_size_m=float("inf")), r"cell_size_m = inf must be a finite number"),
        (lambda d: d.update(cell_size_m=1e9), r"cell_size_m = 1000000000.0 must be <= 100000"),
        (lambda d: d.update(timezone=1), r"timezone = 1 must be a string"),
        (lambda d: d.update(forecast=[1]), r"\[forecast\] = \[1\] must be a table"),
        (lambda d: d["forecast"].update(contxt_steps=12), r"\[forecast\] keys \['contxt_steps'\] unknown; allowed:"),
        (lambda d: d["forecast"].update(train_steps=True), r"\[forecast\] train_steps = True must be a whole number"),
        (lambda d: d["forecast"].update(train_steps=-1), r"\[forecast\] train_steps = -1 must be >= 0"),
        (lambda d: d["forecast"].update(train_budget_s=float("nan")), r"train_budget_s = nan must be a finite number"),
        (lambda d: d["forecast"].update(horizon_steps=-1), r"\[forecast\] horizon_steps = -1 must be >= 0"),
        (lambda d: d["forecast"].update(train_days=10**12), r"\[forecast\] train_days = 1000000000000 must be <= 3660"),
    ],
)
def test_every_fault_is_one_config_error_naming_file_key_value_and_allowed(mutate, message):
    data = copy.deepcopy(_berlin())
    mutate(data)
    with pytest.raises(ConfigError, match=message) as err:
        parse_city(data, source="cities/berlin.toml")
    text = str(err.value)
    assert text.startswith("cities/berlin.toml: ") and "\n" not in text
    assert err.value.file == "cities/berlin.toml" and err.value.key


def test_several_faults_are_reported_together():
    data = copy.deepcopy(_berlin())
    data.update(crs_epsg=99999, cell_size_m=-1)
    data["forecast"]["context_steps"] = -5
    with pytest.raises(ConfigError) as err:
        parse_city(data, source="cities/berlin.toml")
    text = str(err.value)
    assert "crs_epsg = 99999" in text and "cell_size_m = -1.0 must be > 0" in text
    assert "[forecast] context_steps = -5 must be >= 1" in text


def test_whole_floats_and_toml_dates_are_accepted_as_before():
    d = _berlin()
    d["forecast"].update(train_steps=600.0, train_budget_s=60)
    d["calendar"]["extra_holidays"] = [__import__("datetime").date(2024, 12, 24), "2024-12-31"]
    c = parse_city(d)
    assert c.forecast.train_steps == 600 and isinstance(c.forecast.train_steps, int)
    assert c.forecast.train_budget_s == 60.0 and isinstance(c.forecast.train_budget_s, float)
    assert c.forecast.train_epochs == 0.0  # the step budget alone unless a city sizes it by its data
    d["forecast"].update(train_epochs=10)
    assert parse_city(d).forecast.train_epochs == 10.0 and isinstance(parse_city(d).forecast.train_epochs, float)
    assert c.calendar.extra == ("2024-12-24", "2024-12-31")


@pytest.mark.parametrize("name", ["../../x", "../cities/berlin", "../../x.toml", "/etc/passwd", "Berlin", "a/b", ""])
def test_a_city_name_cannot_leave_the_cities_folder(tmp_path, monkeypatch, name):
    outside = tmp_path / "x.toml"  # a valid city file outside the cities folder
    outside.write_text((PROJECT_ROOT / "cities" / "berlin.toml").read_text().replace('"berlin"', '"x"'))
    monkeypatch.chdir(tmp_path / "..")
    with pytest.raises(ConfigError, match=r"is not a city name: a name matches .* known cities: \['berlin', "):
        load_city(name)


def test_the_name_in_the_file_is_the_file_name(tmp_path, monkeypatch):
    (tmp_path / "potsdam.toml").write_text((PROJECT_ROOT / "cities" / "berlin.toml").read_text())
    monkeypatch.setenv("TRAFFIC_CITIES", str(tmp_path))
    with pytest.raises(ConfigError, match=r"potsdam.toml: name = 'berlin' must equal the file name 'potsdam'"):
        load_city("potsdam")


def test_a_city_file_that_is_not_toml(tmp_path, monkeypatch):
    (tmp_path / "broken.toml").write_text('name = "broken"\ntimezone = \n')
    monkeypatch.setenv("TRAFFIC_CITIES", str(tmp_path))
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML: .*line 2"):
        load_city("broken")


def test_feed_paths_resolve_against_the_city_file(tmp_path, monkeypatch):
    # a city folder elsewhere, its delivery next to it: found whatever the working directory
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "obs.csv").write_text("x\n")
    (tmp_path / "raw" / "reg.csv").write_text("x\n")
    (tmp_path / "cities").mkdir()
    text = (PROJECT_ROOT / "cities" / "berlin.toml").read_text().replace('"berlin"', '"potsdam"')
    text = text.replace(
        'observations = "../data/samples/berlin_telraam/observations/"',
        'observations = "../raw/obs.csv"',
    ).replace('registry = "../data/samples/berlin_telraam/bzm_telraam_segments.geojson"', 'registry = "../raw/reg.csv"')
    (tmp_path / "cities" / "potsdam.toml").write_text(text)
    monkeypatch.setenv("TRAFFIC_CITIES", str(tmp_path / "cities"))
    monkeypatch.chdir(PROJECT_ROOT / "data")
    feed = load_city("potsdam").feeds[0]
    assert feed.path("observations") == str(tmp_path / "raw" / "obs.csv")
    assert feed.path("registry") == str(tmp_path / "raw" / "reg.csv")


def test_shipped_city_paths_are_written_relative_to_the_cities_folder(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT / "data")  # whatever the working directory
    for city in ("berlin", "los_angeles", "melbourne"):
        for f in load_city(city).feeds:
            assert f.observations.startswith("../data/samples/") and f.registry.startswith("../data/samples/")
            assert Path(f.path("observations")).is_dir() and Path(f.path("registry")).is_file()  # a landing folder
            assert Path(f.resolve("observations")).is_relative_to(PROJECT_ROOT / "data" / "samples")


def test_a_path_written_relative_to_the_project_root_says_the_rule_and_the_fix(tmp_path, monkeypatch):
    (tmp_path / "potsdam.toml").write_text(
        (PROJECT_ROOT / "cities" / "berlin.toml")
        .read_text()
        .replace('"berlin"', '"potsdam"')
        .replace('"../data/', '"data/')
    )
    monkeypatch.setenv("TRAFFIC_CITIES", str(tmp_path))
    feed = load_city("potsdam").feeds[0]
    with pytest.raises(IngestError) as err:
        feed.path("observations")
    text = str(err.value)
    assert text.startswith(f"cannot read {tmp_path}/data/samples/berlin_telraam/observations: ")
    assert f"({tmp_path / 'potsdam.toml'}: feed 'telraam' observations = 'data/samples/" in text
    assert f"a relative path resolves against the city file's folder, {tmp_path})" in text
    rel = Path(__import__("os").path.relpath(PROJECT_ROOT, tmp_path)) / "data" / "samples" / "berlin_telraam"
    assert f"exists relative to the project root: write '{rel}/observations'" in text
    assert err.value.key == "observations" and err.value.value.startswith("data/samples/")


def test_a_path_object_loads_a_city_file_from_code(tmp_path):
    p = tmp_path / "anywhere.toml"
    p.write_text((PROJECT_ROOT / "cities" / "los_angeles.toml").read_text())
    c = load_city(p)  # code may name any file; only names (str) are confined to the cities folder
    assert c.name == "los_angeles" and c.feeds[0].base == str(tmp_path)


def test_feed_options_are_those_the_adapter_reads_and_typed():
    from traffic.config import COMMON_FEED_OPTIONS, _OptionsTable, adapter_options
    from traffic.landing.adapters import ADAPTER_OPTIONS
    from traffic.landing.readers import DELIMITER_NAMES

    # every option an adapter reads has a type in the validator (a new option must be typed here)
    every = set(COMMON_FEED_OPTIONS).union(*ADAPTER_OPTIONS.values())
    assert every == set(_OptionsTable.model_fields)
    assert set(_OptionsTable.model_fields["csv_delimiter"].annotation.__args__[0].__args__) == set(DELIMITER_NAMES)
    assert "start_local" in adapter_options("metr_la") and "start_local" not in adapter_options("telraam")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"start_local": "2012-03-01T00:00:00"},
            r"feeds\[0\]: options \['start_local'\] are not read by adapter 'telraam'",
        ),
        ({"registry_crs": 99999}, r"feeds\[0\].options.registry_crs = 99999 is not a CRS pyproj knows"),
        ({"csv_delimiter": ":"}, r"feeds\[0\].options.csv_delimiter = ':' is not allowed; allowed: ','"),
        ({"registry_max_rejected_share": 1.5}, r"registry_max_rejected_share = 1.5 must be <= 1"),
        ({"counts_extrapolated": "yes"}, r"counts_extrapolated = 'yes' must be true or false"),
    ],
)
def test_bad_feed_options_are_config_errors(options, message):
    d = _berlin()
    d["feeds"][0]["options"] = options
    with pytest.raises(ConfigError, match=message):
        parse_city(d, source="cities/berlin.toml")


def test_metr_options_are_kept_as_read():
    la = load_city("los_angeles").feeds[0]
    assert la.options == {"interval_s": 300, "start_local": "2012-03-01T00:00:00"}
    d = tomllib.loads((PROJECT_ROOT / "cities" / "los_angeles.toml").read_text())
    d["feeds"][0]["options"].update(start_local=__import__("datetime").datetime(2012, 3, 1), registry_crs=4326)
    opts = parse_city(d).feeds[0].options
    assert opts["start_local"] == "2012-03-01T00:00:00" and opts["registry_crs"] == "EPSG:4326"


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda text: __import__("gzip").compress(text.encode()), "gzip-compressed bytes (1f 8b)"),
        (lambda text: b"\xef\xbb\xbf" + text.encode(), "a UTF-8 byte-order mark (BOM, ef bb bf)"),
        (lambda text: text.encode("utf-16"), "a UTF-16 byte-order mark"),
        (lambda text: text.encode("latin-1"), "not UTF-8 text: byte 0xe4 at offset"),  # the file's first "ä"
    ],
)
def test_a_city_file_of_other_bytes_is_named_as_such(tmp_path, make, named):
    """The shipped Berlin file, delivered gzipped, with a BOM, as UTF-16 or Latin-1: one line naming what it is."""
    path = tmp_path / "berlin.toml"
    path.write_bytes(make((PROJECT_ROOT / "cities" / "berlin.toml").read_text(encoding="utf-8")))
    with pytest.raises(ConfigError) as err:
        load_city(path)
    assert named in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
