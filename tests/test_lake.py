from __future__ import annotations

import pyarrow as pa
import pytest

from traffic import lake


def test_write_partition_replaces_whole_partition(traffic_home):
    t1 = pa.table({"a": [1, 2, 3]})
    p = lake.write_partition(t1, "observations", city="x", feed="f", date="2024-01-01")
    assert str(p).startswith(str(traffic_home / "lake" / "observations" / "city=x" / "feed=f" / "date=2024-01-01"))
    # a stray file from an older layout is dropped on rewrite
    (p.parent / "old.parquet").write_bytes(b"junk")
    t2 = pa.table({"a": [9]})
    lake.write_partition(t2, "observations", city="x", feed="f", date="2024-01-01")
    assert sorted(x.name for x in p.parent.iterdir()) == ["part.parquet"]
    assert lake.read_partition("observations", city="x", feed="f", date="2024-01-01").equals(t2)
    assert lake.list_dates("observations", city="x", feed="f") == ["2024-01-01"]


def test_failed_write_leaves_previous_partition(traffic_home):
    t1 = pa.table({"a": [1]})
    lake.write_partition(t1, "raster", city="x", date="2024-01-02")

    with pytest.raises((TypeError, AttributeError)):
        lake.write_partition("not a table", "raster", city="x", date="2024-01-02")  # type: ignore[arg-type]
    assert lake.read_partition("raster", city="x", date="2024-01-02").equals(t1)
    leftovers = [x.name for x in lake.partition("raster", city="x", date="2024-01-02").iterdir()]
    assert leftovers == ["part.parquet"]


def test_rewrite_is_byte_identical(traffic_home):
    t = pa.table({"a": [1, 2], "b": ["x", "y"]})
    p = lake.write_partition(t, "raster", city="x", date="2024-01-03")
    first = p.read_bytes()
    lake.write_partition(t, "raster", city="x", date="2024-01-03")
    assert p.read_bytes() == first


def test_lake_uri_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFIC_LAKE", f"file://{tmp_path}/elsewhere")
    lake.write_json({"k": 1}, lake.partition("quality", city="x") / "r.json")
    assert (tmp_path / "elsewhere" / "quality" / "city=x" / "r.json").exists()


def test_lake_object_uses_its_own_root_not_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFIC_LAKE", str(tmp_path / "configured"))
    own = lake.Lake(tmp_path / "own")
    t = pa.table({"a": [4, 5]})
    p = own.write_partition(t, "raster", city="x", date="2024-02-01", metadata={"k": "v"})
    assert p == own.root / "raster" / "city=x" / "date=2024-02-01" / "part.parquet"
    assert not (tmp_path / "configured").exists()
    back = own.read_partition("raster", city="x", date="2024-02-01")
    assert back.column("a").to_pylist() == [4, 5]
    assert back.schema.metadata[b"k"] == b"v"
    assert own.list_dates("raster", city="x") == ["2024-02-01"]
    assert own.list_dates("raster", city="nowhere") == []
    j = own.write_json({"n": 1}, own.partition("quality", city="x") / "r.json")
    assert own.read_json(j) == {"n": 1}
    with pytest.raises(FileNotFoundError, match="date=2024-02-02"):
        own.read_partition("raster", city="x", date="2024-02-02")


def test_lake_from_config_follows_traffic_lake(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAFFIC_LAKE", str(tmp_path / "configured"))
    assert lake.Lake.from_config() == lake.Lake(tmp_path / "configured")
    assert lake.lake_root() == lake.Lake.from_config().root


def test_list_dates_leaves_out_undated(traffic_home):
    lake.write_partition(pa.table({"a": [1]}), "quarantine", city="x", feed="f", date="undated")
    lake.write_partition(pa.table({"a": [1]}), "quarantine", city="x", feed="f", date="2024-03-01")
    assert lake.list_dates("quarantine", city="x", feed="f") == ["2024-03-01"]
