"""A header that names a column twice is one IngestError naming the file and the column (issue 18, part 5)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.helpers import canonical_city
from traffic.cli import main
from traffic.ingest import IngestError, ingest_range, ingest_registry
from traffic.landing.readers import read_parquet

REG = pd.DataFrame({"source_id": ["a", "b"], "lon": [13.40, 13.41], "lat": [52.50, 52.51]})
OBS = pd.DataFrame(
    {
        "source_id": ["a"] * 6,
        "timestamp": [f"2024-10-01T{h:02d}:00:00+02:00" for h in range(6)],
        "interval_s": [3600] * 6,
        "speed_kmh": [40.0] * 6,
    }
)


def test_a_csv_with_a_column_twice_is_refused_naming_it(tmp_path):
    city = canonical_city(tmp_path / "raw", OBS, REG)
    path = tmp_path / "raw" / "obs.csv"
    lines = path.read_text().splitlines()
    lines = [lines[0] + ",speed_kmh"] + [ln + ",41" for ln in lines[1:]]
    path.write_text("\n".join(lines) + "\n")
    ingest_registry(city, city.feeds[0])
    with pytest.raises(IngestError, match=r"obs.csv: column `speed_kmh` appears twice \(columns 4 and 5") as info:
        ingest_range(city, city.feeds[0], "2024-10-01", "2024-10-01")
    assert info.value.column == "speed_kmh"


def test_a_parquet_file_with_a_column_twice_is_refused_naming_it(tmp_path):
    path = tmp_path / "x.parquet"
    t = pa.table([pa.array(["a"]), pa.array([1.0]), pa.array([2.0])], names=["source_id", "car", "car"])
    pq.write_table(t, path)
    with pytest.raises(IngestError, match=r"x.parquet: column `car` appears twice"):
        read_parquet(path)


def test_the_cli_prints_it_once_with_exit_2(tmp_path, monkeypatch, capsys):
    cities = tmp_path / "cities"
    city = canonical_city(tmp_path / "raw", OBS, REG)
    path = tmp_path / "raw" / "obs.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",timestamp"] + [ln + ",x" for ln in lines[1:]]) + "\n")
    cities.mkdir()
    toml = tmp_path / "raw" / "tinytown.toml"
    toml.write_text(
        f'name = "tinytown"\ntimezone = "Europe/Berlin"\ncrs_epsg = 25833\nbbox = [13.0, 52.0, 14.0, 53.0]\n'
        f'cell_size_m = 1000\ntime_bin = "1h"\n[[feeds]]\nname = "f"\nkind = "sensor"\nadapter = "canonical"\n'
        f'observations = "{path}"\nregistry = "{city.feeds[0].registry}"\nchannels = ["speed_kmh"]\n'
    )
    (cities / "tinytown.toml").write_text(toml.read_text())
    monkeypatch.setenv("TRAFFIC_CITIES", str(cities))
    code = main(["ingest", "tinytown", "--start", "2024-10-01", "--end", "2024-10-01"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "column `timestamp` appears twice" in err and err.count("appears twice") == 1
