"""Deliveries wrong in bulk are loud: one line naming the file and column, a hint, nothing written (issue 18, part 3).

Built from the shipped data: a slice of the METR-LA day and of a Telraam day, each changed the way
a real delivery goes wrong.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.ingest.test_faults import (
    LOCATIONS,
    METR_DAY,
    SEGMENTS,
    TELRAAM_DAY,
    city_config,
    ingest,
    lake_files,
    metr_city,
    metr_lines,
    telraam_city,
)
from traffic import lake
from traffic.cli import main
from traffic.config import MAX_GRID_CELLS, parse_city
from traffic.errors import ConfigError
from traffic.ingest import IngestError, ingest_range, ingest_registry


@pytest.fixture(scope="module")
def telraam_day() -> pd.DataFrame:
    from tests.ingest.test_faults import TELRAAM

    raw = pd.read_parquet(TELRAAM)
    return raw[raw["date_local"].dt.strftime("%Y-%m-%d") == TELRAAM_DAY].reset_index(drop=True)


def data_files() -> dict[str, bytes]:
    """The lake's observations, quarantine and quality files (the registry is a delivery of its own)."""
    return {k: v for k, v in lake_files().items() if not k.startswith("registry/")}


def refused(city, match: str) -> IngestError:
    """Ingest must fail with one line matching ``match`` and write no data partition."""
    with pytest.raises(IngestError, match=match) as info:
        ingest(city, city_day(city))
    assert "\n" not in str(info.value)
    assert data_files() == {}
    return info.value


def city_day(city) -> str:
    return METR_DAY if city.feeds[0].adapter == "metr_la" else TELRAAM_DAY


def registry_csv(folder: Path, change) -> Path:
    reg = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"})
    reg = change(reg)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "locations.csv"
    reg.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------- every source outside the box


@pytest.mark.parametrize(
    ("change", "hint"),
    [
        (lambda r: r.assign(longitude=-r["longitude"]), "longitudes look sign-flipped"),
        (lambda r: r.assign(latitude=-r["latitude"]), "latitudes look sign-flipped"),
        (
            lambda r: r.assign(longitude=r["latitude"], latitude=r["longitude"]),
            "longitude and latitude look swapped",
        ),
        (lambda r: r.assign(longitude=r["longitude"] + 3.0), "the sources lie around lon=-115"),
    ],
)
def test_a_registry_entirely_outside_the_city_is_refused_with_the_likely_fault(tmp_path, change, hint):
    reg = registry_csv(tmp_path / "reg", change)
    city = metr_city(tmp_path / "raw", metr_lines(), registry=reg)
    # (swapped LA coordinates have latitudes of -118: not degrees, so the registry check names it first)
    err = refused(city, "lies outside the city's bbox|registry rejects 207 of 207")
    assert hint in str(err) and str(reg) in str(err) and err.column == "geometry"


def test_a_city_bbox_written_lat_lon_is_named(tmp_path, telraam_day):
    city = telraam_city(tmp_path / "raw", telraam_day.head(400))
    import dataclasses

    flipped = dataclasses.replace(city, bbox=(52.24, 13.02, 52.76, 13.78))  # valid degrees, the wrong order
    # from the data alone a bbox written lat/lon and swapped coordinates look the same: both are named
    err = refused(flipped, "if it is the city's bbox that is written lat/lon")
    assert "bbox = [13.02, 52.24, 13.78, 52.76]" in str(err)


def test_a_day_whose_rows_all_come_from_sources_outside_the_box_is_refused(tmp_path):
    # the registry keeps 190 sources in Los Angeles; the day's 12 sensors are the ones moved away
    lines = metr_lines()
    moved = set(lines[0].split(","))
    reg = registry_csv(
        tmp_path / "reg",
        lambda r: r.assign(longitude=np.where(r["sensor_id"].isin(moved), r["longitude"] + 5, r["longitude"])),
    )
    city = metr_city(tmp_path / "raw", lines, registry=reg)
    err = refused(city, f"{METR_DAY}: every source with accepted rows \\(12\\) lies outside the city's bbox")
    assert "speed.csv" in str(err)


# ------------------------------------------------------------------------- mostly quarantined


def test_uptime_delivered_in_percent_is_refused_naming_the_unit(tmp_path, telraam_day):
    frame = telraam_day.copy()
    frame["uptime"] = frame["uptime"] * 100
    city = telraam_city(tmp_path / "raw", frame)
    err = refused(city, r"rows quarantined \(\d+%, more than the allowed 50% of feed option `max_quarantined_share`\)")
    text = str(err)
    assert "most as 'uptime_out_of_range'" in text and "column `uptime`" in text
    assert "looks delivered in percent" in text


def test_speeds_in_another_unit_are_refused_with_the_reason_and_examples(tmp_path):
    lines = metr_lines()
    scaled = [lines[0]] + [",".join(f"{float(v) * 100:g}" for v in ln.split(",")) for ln in lines[1:]]
    city = metr_city(tmp_path / "raw", scaled)
    err = refused(city, "most as 'speed_out_of_range'")
    assert "column `speed_kmh`" in str(err) and "e.g. [" in str(err)


def test_a_share_under_the_threshold_passes_and_the_option_tightens_it(tmp_path, telraam_day):
    frame = telraam_day.copy()
    bad = frame.index[: len(frame) // 5]  # 20 % of the rows
    frame.loc[bad, "uptime"] = frame.loc[bad, "uptime"] * 100
    city = telraam_city(tmp_path / "raw", frame)
    report = ingest(city, TELRAAM_DAY)
    assert report["by_reason"]["uptime_out_of_range"] > 0  # quarantined row by row, the rest is kept
    assert report["rows_accepted"] > 0.5 * report["rows_read"]
    strict = city.feeds[0].options | {"max_quarantined_share": 0.1}
    import dataclasses

    city2 = dataclasses.replace(city, feeds=(dataclasses.replace(city.feeds[0], options=strict),))
    with pytest.raises(IngestError, match="more than the allowed 10%"):
        ingest_range(city2, city2.feeds[0], TELRAAM_DAY, TELRAAM_DAY)


# ------------------------------------------------------------------------- bins that do not fit


def canonical_metr(tmp_path: Path, interval_s: int, time_bin: str, every: int = 1):
    lines = metr_lines()
    ids = lines[0].split(",")
    rows = []
    for i, line in enumerate(lines[1::every]):
        local = (pd.Timestamp(f"{METR_DAY}T00:00") + pd.Timedelta(seconds=interval_s * i)).isoformat()
        rows += [f"{sid},{local},{interval_s},{v}" for sid, v in zip(ids, line.split(","), strict=True)]
    folder = tmp_path / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "obs.csv").write_text("source_id,timestamp,interval_s,speed_kmh\n" + "\n".join(rows) + "\n")
    reg = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"})
    reg.rename(columns={"sensor_id": "source_id", "longitude": "lon", "latitude": "lat"}).to_csv(
        folder / "reg.csv", index=False
    )
    feed = {
        "name": "f",
        "kind": "sensor",
        "adapter": "canonical",
        "observations": str(folder / "obs.csv"),
        "registry": str(folder / "reg.csv"),
        "channels": ["speed_kmh"],
    }
    return city_config(
        folder,
        feed,
        name="la_bins",
        timezone="America/Los_Angeles",
        epsg=26945,
        bbox=[-118.56, 34.03, -118.17, 34.23],
        time_bin=time_bin,
    )


@pytest.mark.parametrize(
    ("interval_s", "time_bin", "every"),
    [(3600, "45min", 12), (300, "2min", 1), (900, "10min", 3)],
)
def test_rows_whose_interval_does_not_divide_the_time_bin_are_refused(tmp_path, interval_s, time_bin, every):
    city = canonical_metr(tmp_path, interval_s, time_bin, every)
    ingest_registry(city, city.feeds[0])
    with pytest.raises(IngestError, match=rf"column `interval_s` = \[{interval_s}\] s .* does not divide") as info:
        ingest_range(city, city.feeds[0], METR_DAY, METR_DAY)
    assert "time_bin" in str(info.value) and str(city.source) in str(info.value)
    assert data_files() == {}


def test_rows_that_fit_the_bin_pass(tmp_path):
    city = canonical_metr(tmp_path, 300, "15min")
    ingest_registry(city, city.feeds[0])
    (report,) = ingest_range(city, city.feeds[0], METR_DAY, METR_DAY)
    assert report["rows_accepted"] > 0


def test_a_declared_interval_that_does_not_divide_the_time_bin_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"feeds\[0\].options.interval_s = 300 does not divide time_bin = '2min'"):
        metr_city(tmp_path, metr_lines()).__class__  # noqa: B018 - built below with another bin
        city_config(
            tmp_path,
            {
                "name": "metr",
                "kind": "sensor",
                "adapter": "metr_la",
                "observations": str(tmp_path / "x.csv"),
                "registry": str(LOCATIONS),
                "channels": ["speed_kmh"],
                "options": {"start_local": f"{METR_DAY}T00:00:00", "interval_s": 300},
            },
            name="la_bins",
            timezone="America/Los_Angeles",
            epsg=26945,
            bbox=[-118.56, 34.03, -118.17, 34.23],
            time_bin="2min",
        )


# ------------------------------------------------------------------------- the grid size


def test_a_grid_too_fine_to_allocate_is_refused_at_load_with_its_size(tmp_path):
    raw = {
        "name": "berlin",
        "timezone": "Europe/Berlin",
        "crs_epsg": 25833,
        "bbox": [13.02, 52.24, 13.78, 52.76],
        "cell_size_m": 1,
        "time_bin": "1h",
        "feeds": [
            {
                "name": "t",
                "kind": "camera",
                "adapter": "telraam",
                "observations": "x.parquet",
                "registry": str(SEGMENTS),
                "channels": ["car"],
            }
        ],
    }
    with pytest.raises(ConfigError, match=r"cell_size_m = 1 gives a grid of 5\d{4} x 5\d{4} = .* cells") as info:
        parse_city(raw, source="cities/berlin.toml")
    assert f"more than the {MAX_GRID_CELLS:,} allowed" in str(info.value)
    assert info.value.key == "cell_size_m"
    parse_city(raw | {"cell_size_m": 1000}, source="cities/berlin.toml")  # the shipped size loads


def test_the_cli_prints_a_bulk_fault_as_one_line_exit_2(tmp_path, monkeypatch, capsys):
    reg = registry_csv(tmp_path / "reg", lambda r: r.assign(longitude=-r["longitude"]))
    cities = tmp_path / "cities"
    cities.mkdir()
    (cities / "la_flip.toml").write_text(
        io.StringIO(
            f"""name = "la_flip"
timezone = "America/Los_Angeles"
crs_epsg = 26945
bbox = [-118.56, 34.03, -118.17, 34.23]
cell_size_m = 1000
time_bin = "15min"
[[feeds]]
name = "metr"
kind = "sensor"
adapter = "metr_la"
observations = "{tmp_path / "raw" / "speed.csv"}"
registry = "{reg}"
channels = ["speed_kmh"]
[feeds.options]
start_local = "{METR_DAY}T00:00:00"
interval_s = 300
"""
        ).getvalue()
    )
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "speed.csv").write_text("\n".join(metr_lines()) + "\n")
    monkeypatch.setenv("TRAFFIC_CITIES", str(cities))
    code = main(["ingest", "la_flip", "--start", METR_DAY, "--end", METR_DAY])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "longitudes look sign-flipped" in err
    assert not Path(str(lake.lake_root())).joinpath("observations").exists()


# ------------------------------------------------------------------------- plausibility bounds


def test_absurd_counts_are_quarantined_and_a_city_can_move_the_bound(tmp_path, telraam_day):
    frame = telraam_day.copy()
    i = int(frame.index[(frame["car_total"] > 10) & (frame["uptime"] > 0.5)][0])
    frame.loc[i, "car_total"] = 1e12  # 10^12 cars in an hour
    city = telraam_city(tmp_path / "raw", frame)
    report = ingest(city, TELRAAM_DAY)
    assert report["by_reason"]["implausible_count"] == 1
    import dataclasses

    from traffic.config import Plausibility

    # a city whose cameras never see more than 5 cars an hour: most of the day is implausible -> refused
    tight = dataclasses.replace(city, plausibility=Plausibility(max_per_hour=(("car", 5.0),)))
    with pytest.raises(IngestError, match="most as 'implausible_count'.*raise \\[plausibility\\] max_per_hour"):
        ingest_range(tight, tight.feeds[0], TELRAAM_DAY, TELRAAM_DAY)


def test_the_plausibility_table_is_validated_at_load(tmp_path):
    raw = {
        "name": "x",
        "timezone": "Europe/Berlin",
        "crs_epsg": 25833,
        "bbox": [13.02, 52.24, 13.78, 52.76],
        "cell_size_m": 1000,
        "time_bin": "1h",
        "feeds": [
            {
                "name": "t",
                "kind": "camera",
                "adapter": "telraam",
                "observations": "x.parquet",
                "registry": str(SEGMENTS),
                "channels": ["car"],
            }
        ],
    }
    city = parse_city(raw | {"plausibility": {"max_per_hour": {"car": 3000}, "max_speed_kmh": 130}}, source="x.toml")
    assert dict(city.plausibility.max_per_hour) == {"car": 3000.0} and city.plausibility.max_speed_kmh == 130
    with pytest.raises(ConfigError, match=r"\[plausibility\] max_per_hour: keys \['cars'\] are not count channels"):
        parse_city(raw | {"plausibility": {"max_per_hour": {"cars": 3000}}}, source="x.toml")
    with pytest.raises(ConfigError, match=r"\[plausibility\] max_speed_kmh = -1"):
        parse_city(raw | {"plausibility": {"max_speed_kmh": -1}}, source="x.toml")


# ------------------------------------------------------------------------- days no delivery holds


def test_a_range_the_delivery_does_not_hold_is_an_error_not_empty_partitions(tmp_path, telraam_day):
    city = telraam_city(tmp_path / "raw", telraam_day)
    ingest_registry(city, city.feeds[0])
    with pytest.raises(
        IngestError,
        match=r"feed .telraam. of \w+: nothing delivered for 2025-01-01 \.\. 2025-01-02 \(the dates asked\): the delivery holds",
    ) as info:
        ingest_range(city, city.feeds[0], "2025-01-01", "2025-01-02")
    assert f"local dates {TELRAAM_DAY} .. {TELRAAM_DAY}" in str(info.value)
    assert data_files() == {}
