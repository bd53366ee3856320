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


def _loop_read(own: lake.Lake, dataset: str, dates: list[str], columns: list[str], **keys) -> pa.Table:
    """What the readers did before :meth:`Lake.read_dataset`: one file per date, concatenated."""
    parts = [own.read_partition(dataset, **keys, date=d).select(columns) for d in dates]
    return pa.concat_tables(parts, promote_options="permissive")


def test_read_dataset_matches_the_loop_over_dates(tmp_path):
    import pyarrow.dataset as ds

    own = lake.Lake(tmp_path / "lake")
    dates = ["2024-03-30", "2024-03-31", "2024-04-01", "2024-04-02"]
    for i, d in enumerate(reversed(dates)):  # written out of order: the read still comes in date order
        n = 5 + i
        own.write_partition(
            pa.table(
                {
                    "bin_start": pa.array(range(n * i, n * i + n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                    "cell_id": pa.array(range(n), pa.int32()),
                    "channel": ["speed"] * n,
                    "value": [float(i)] * n,
                }
            ),
            "raster",
            city="x",
            date=d,
        )
    cols = ["bin_start", "cell_id", "channel", "value"]
    got = own.read_dataset("raster", columns=cols, city="x")
    assert got.equals(_loop_read(own, "raster", dates, cols, city="x"))
    assert got.schema.field("bin_start").type == pa.timestamp("us", tz="UTC")
    assert got.schema.field("cell_id").type == pa.int32()

    window = own.read_dataset("raster", columns=cols, filter=ds.field("date").isin(dates[1:3]), city="x")
    assert window.equals(_loop_read(own, "raster", dates[1:3], cols, city="x"))
    # the date key is a column when asked for, in path order
    assert own.read_dataset("raster", columns=["date"], city="x").column("date").unique().to_pylist() == dates


def test_read_dataset_never_opens_filtered_out_partitions(tmp_path):
    import pyarrow.dataset as ds

    own = lake.Lake(tmp_path / "lake")
    own.write_partition(pa.table({"a": [1, 2]}), "raster", city="x", date="2024-01-01")
    bad = own.partition("raster", city="x", date="2024-01-02") / "part.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not parquet")
    assert own.read_dataset("raster", filter=ds.field("date") == "2024-01-01", city="x").column("a").to_pylist() == [
        1,
        2,
    ]
    with pytest.raises(pa.ArrowInvalid):
        own.read_dataset("raster", city="x")


def test_read_dataset_missing_partitions_undated_and_columns(tmp_path):
    import pyarrow.dataset as ds

    own = lake.Lake(tmp_path / "lake")
    empty = own.read_dataset("raster", columns=["a", "b"], city="nowhere")
    assert empty.num_rows == 0 and empty.column_names == ["a", "b"]
    schema = pa.schema([("a", pa.int64())])
    assert own.read_dataset("raster", schema=schema, city="nowhere").schema == schema

    own.write_partition(pa.table({"a": pa.array([1], pa.int32())}), "quarantine", city="x", feed="f", date="undated")
    own.write_partition(pa.table({"a": pa.array([2], pa.int64())}), "quarantine", city="x", feed="f", date="2024-01-01")
    own.write_partition(pa.table({"a": pa.array([3], pa.int64())}), "quarantine", city="x", feed="g", date="2024-01-01")
    # a temporary file of a running writer and a file of another name are not partitions
    (own.partition("quarantine", city="x", feed="f", date="2024-01-01") / ".part.parquet.h.1.abcdef12.tmp").write_bytes(
        b"half"
    )
    own.write_json({"n": 1}, own.partition("quarantine", city="x", feed="f", date="2024-01-01") / "report.json")

    every = own.read_dataset("quarantine", city="x")  # int32 and int64 files: promoted, as concat_tables does
    assert every.schema.field("a").type == pa.int64()
    assert every.to_pylist() == [
        {"a": 2, "feed": "f", "date": "2024-01-01"},
        {"a": 1, "feed": "f", "date": "undated"},
        {"a": 3, "feed": "g", "date": "2024-01-01"},
    ]
    assert own.read_dataset("quarantine", columns=["a"], city="x", feed="f").column("a").to_pylist() == [2, 1]
    dated = own.read_dataset("quarantine", columns=["a"], filter=ds.field("date") != "undated", city="x", feed="f")
    assert dated.column("a").to_pylist() == [2]
    none = own.read_dataset("quarantine", columns=["a"], filter=ds.field("date") == "2030-01-01", city="x", feed="f")
    assert none.num_rows == 0 and none.column_names == ["a"]
    with pytest.raises(ValueError, match=r"no column \['b'\].*\['a', 'date'\]"):
        own.read_dataset("quarantine", columns=["b"], city="x", feed="f")


def test_geoparquet_is_written_by_geopandas_with_the_lake_metadata(tmp_path):
    import json

    import geopandas as gpd
    import pyarrow.parquet as pq
    import shapely

    own = lake.Lake(tmp_path / "lake")
    frame = gpd.GeoDataFrame(
        {"source_id": ["a", "b"], "geometry": [shapely.Point(13.4, 52.5), None]}, geometry="geometry", crs=4326
    )
    target = own.partition("registry", city="x", feed="f") / "registry.parquet"
    schema = pa.schema([("source_id", pa.string()), ("geometry", pa.binary())])
    lake.write_geoparquet(frame, target, schema=schema, metadata={"version": "v1"})
    stored = pq.read_schema(str(target))
    assert stored.remove_metadata().equals(schema)  # string, not pandas' large_string
    geo = json.loads(stored.metadata[b"geo"])
    assert geo["creator"]["library"] == "geopandas" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert stored.metadata[b"version"] == b"v1"
    back, md = lake.read_geoparquet(target)
    assert md["version"] == "v1" and len(md["file_sha256"]) == 64
    assert back.crs.to_epsg() == 4326 and back["source_id"].tolist() == ["a", "b"]
    assert back.geometry.iloc[0].equals(shapely.Point(13.4, 52.5)) and back.geometry.iloc[1] is None
    leftovers = sorted(p.name for p in target.parent.iterdir())
    assert leftovers == ["registry.parquet"]  # atomic: no temporary file left

    plain = own.partition("registry", city="x", feed="g") / "registry.parquet"
    own.write_partition(pa.table({"source_id": ["a"]}), "registry", filename="registry.parquet", city="x", feed="g")
    with pytest.raises(ValueError, match=r"registry\.parquet is not GeoParquet"):
        lake.read_geoparquet(plain)
