from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely

from tests.grid.helpers import to_wgs84, utc
from traffic import lake
from traffic.grid import rasterize as rz
from traffic.grid.assign import assignments_for
from traffic.grid.cells import grid_spec, write_grid
from traffic.grid.rasterize import aggregate, rasterize_partition, rasterize_range

NAN = float("nan")
#: a and b feed cell 1; c is a line: 3/4 of it in cell 2, 1/4 in cell 1
ASSIGNMENT = pd.DataFrame(
    {"source_id": ["a", "b", "c", "c"], "cell_id": np.array([1, 1, 2, 1], np.int32), "weight": [1, 1, 0.75, 0.25]}
)


def _obs(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["source_id", "time", *columns])
    df.insert(1, "timestamp", utc(*("2024-05-06 " + t for t in df.pop("time"))))
    return df


def _expected(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["time", "cell_id", "channel", "value", "coverage"])
    df.insert(0, "bin_start", utc(*("2024-05-06 " + t for t in df.pop("time"))))
    return df.astype({"cell_id": np.int32, "coverage": np.int32, "value": np.float64, "channel": "str"})


CASES = {
    "mean speed, weighted by the line's share": (
        "sensor",
        ["speed_kmh"],
        _obs([("a", "00:00", 10.0), ("b", "00:05", 50.0), ("c", "00:10", 60.0)], ["speed_kmh"]),
        [("00:00", 1, "speed_kmh", (10 + 50 + 0.25 * 60) / 2.25, 3), ("00:00", 2, "speed_kmh", 60.0, 1)],
    ),
    "uptime correction, uptime <= 0 or null drops the row": (
        "camera",
        ["car"],
        _obs(
            [
                ("a", "00:00", 2.0, 0.5),  # 4 per full interval
                ("a", "00:05", 3.0, 1.0),  # 3: a sums to 7 over the bin
                ("b", "00:00", 10.0, 0.0),  # offline: not a traffic drop
                ("b", "00:05", 5.0, None),
                ("c", "00:10", 8.0, 0.8),  # 10
            ],
            ["car", "uptime"],
        ),
        [("00:00", 1, "car", (7 + 0.25 * 10) / 1.25, 3), ("00:00", 2, "car", 10.0, 1)],
    ),
    "NaN never contributes (mean and count)": (
        "camera",
        ["car", "speed_kmh"],
        _obs(
            [
                ("a", "00:00", 4.0, 1.0, NAN),
                ("a", "00:05", NAN, 1.0, 30.0),
                ("b", "00:00", NAN, 1.0, NAN),  # b reports nothing: not in the mean of sources
            ],
            ["car", "uptime", "speed_kmh"],
        ),
        [("00:00", 1, "car", 4.0, 1), ("00:00", 1, "speed_kmh", 30.0, 1)],
    ),
    "counts summed per source, averaged over sources; coverage counts rows": (
        "sensor",
        ["count"],
        _obs([("a", "00:00", 1.0), ("a", "00:05", 2.0), ("a", "00:10", 3.0), ("b", "00:10", 4.0)], ["count"]),
        [("00:00", 1, "count", (6 + 4) / 2, 4)],
    ),
    "5-min rows floored into 15-min bins": (
        "sensor",
        ["speed_kmh"],
        _obs(
            [
                ("a", t, float(v))
                for v, t in enumerate(["00:00", "00:05", "00:10", "00:15", "00:20", "00:29:59", "00:30"])
            ],
            ["speed_kmh"],
        ),
        [("00:00", 1, "speed_kmh", 1.0, 3), ("00:15", 1, "speed_kmh", 4.0, 3), ("00:30", 1, "speed_kmh", 6.0, 1)],
    ),
    "unknown and null sources are dropped": (
        "sensor",
        ["speed_kmh"],
        _obs([("a", "00:00", 10.0), ("zz", "00:00", 99.0), (None, "00:00", 98.0)], ["speed_kmh"]),
        [("00:00", 1, "speed_kmh", 10.0, 1)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_aggregate_rules(case):
    kind, channels, obs, rows = CASES[case]
    got = aggregate(obs, ASSIGNMENT, channels, kind, 900)
    pd.testing.assert_frame_equal(got, _expected(rows), check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("encoding", ["dictionary", "string", "pandas"])
def test_input_encodings_and_row_order_agree(encoding):
    kind, channels, obs, rows = CASES["uptime correction, uptime <= 0 or null drops the row"]
    obs = obs.sample(frac=1.0, random_state=3)  # order does not matter
    table = pa.Table.from_pandas(obs, preserve_index=False)
    if encoding == "dictionary":
        data = table.set_column(0, "source_id", table.column("source_id").dictionary_encode())
    elif encoding == "string":
        data = table
    else:
        data = obs
    pd.testing.assert_frame_equal(aggregate(data, ASSIGNMENT, channels, kind, 900), _expected(rows))


def _reference(obs: pd.DataFrame, assignment: pd.DataFrame, channel: str, kind: str, bin_s: int) -> pd.DataFrame:
    """The rule written the slow, obvious way with pandas."""
    df = obs.copy()
    df["bin_start"] = df["timestamp"].dt.floor(f"{bin_s}s")
    x = df[channel]
    if channel in rz.COUNT_CHANNELS:
        if kind == "camera":
            x = x.where(df["uptime"] > 0) / df["uptime"]
        df = df.assign(x=x).dropna(subset=["x"])
        per_src = df.groupby(["bin_start", "source_id"]).agg(s=("x", "sum"), n=("x", "size")).reset_index()
        m = per_src.merge(assignment, on="source_id")
        m["ws"] = m["weight"] * m["s"]
        g = m.groupby(["bin_start", "cell_id"]).agg(ws=("ws", "sum"), w=("weight", "sum"), n=("n", "sum"))
    else:
        df = df.assign(x=x).dropna(subset=["x"])
        m = df.merge(assignment, on="source_id")
        m["ws"] = m["weight"] * m["x"]
        m["one"] = 1
        g = m.groupby(["bin_start", "cell_id"]).agg(ws=("ws", "sum"), w=("weight", "sum"), n=("one", "sum"))
    out = pd.DataFrame({"value": g["ws"] / g["w"], "coverage": g["n"]}).reset_index()
    return out.sort_values(["bin_start", "cell_id"], ignore_index=True)


@pytest.mark.parametrize(
    ("kind", "channels"),
    [("camera", ["car", "bike", "speed_kmh"]), ("sensor", ["count", "speed_kmh"]), ("sensor", ["occupancy"])],
)
@pytest.mark.parametrize(
    ("block_rows", "key_limit"),
    [(rz._BLOCK_ROWS, rz._DENSE_KEY_LIMIT), (7, rz._DENSE_KEY_LIMIT), (rz._BLOCK_ROWS, 200)],
    ids=["one-block", "tiny-blocks", "time-windows"],
)
def test_aggregate_matches_pandas_reference(kind, channels, block_rows, key_limit, monkeypatch):
    monkeypatch.setattr(rz, "_BLOCK_ROWS", block_rows)  # 7: many blocks, scattered times grow them
    monkeypatch.setattr(rz, "_DENSE_KEY_LIMIT", key_limit)  # 200: the 3 days are cut into windows
    rng = np.random.default_rng(7)
    n, n_src = 600, 12
    ids = [f"s{i}" for i in range(n_src)]
    asg = pd.DataFrame({"source_id": ids, "cell_id": rng.integers(0, 5, n_src).astype(np.int32), "weight": 1.0})
    # two sources split across cells
    asg = pd.concat(
        [asg, pd.DataFrame({"source_id": ["s0", "s1"], "cell_id": np.array([9, 9], np.int32), "weight": 1.0})]
    )
    asg["weight"] = asg["weight"] / asg.groupby("source_id")["weight"].transform("sum")
    ts = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 3 * 86400 // 300, n) * 300, unit="s")
    obs = pd.DataFrame({"source_id": rng.choice(ids + ["unknown"], n), "timestamp": ts.as_unit("us")})
    for i, ch in enumerate(channels):
        vals = rng.gamma(2.0, 20.0, n)
        if i != 1:  # the second channel has no NaN: it shares its row counts with the group
            vals[rng.random(n) < 0.1] = np.nan
        obs[ch] = vals
    uptime = rng.uniform(-0.1, 1.0, n)
    uptime[rng.random(n) < 0.05] = np.nan
    obs["uptime"] = uptime
    got = aggregate(obs, asg, channels, kind, 3600)
    assert got.sort_values(["bin_start", "cell_id"], kind="stable").index.equals(got.index)
    assert (
        got.groupby(["bin_start", "cell_id"])["channel"]
        .agg(list)
        .map(lambda c: c == sorted(c, key=channels.index))
        .all()
    )
    for channel in channels:
        part = got[got["channel"] == channel].reset_index(drop=True)
        ref = _reference(obs, asg, channel, kind, 3600)
        assert part["bin_start"].tolist() == ref["bin_start"].tolist()
        assert part["cell_id"].tolist() == ref["cell_id"].tolist()
        np.testing.assert_allclose(part["value"], ref["value"], rtol=1e-10)
        np.testing.assert_array_equal(part["coverage"], ref["coverage"])


def test_long_time_span_is_cut_into_windows(monkeypatch):
    obs = _obs([("a", "00:00", 10.0), ("b", "00:05", 20.0)], ["speed_kmh"])
    far = obs.assign(timestamp=obs["timestamp"] + pd.Timedelta(days=4000), speed_kmh=[30.0, 50.0])
    both = pd.concat([obs, far], ignore_index=True)
    dense = aggregate(both, ASSIGNMENT, ["speed_kmh"], "sensor", 900)
    monkeypatch.setattr(rz, "_DENSE_KEY_LIMIT", 64)
    sparse = aggregate(both, ASSIGNMENT, ["speed_kmh"], "sensor", 900)
    pd.testing.assert_frame_equal(sparse, dense)
    assert sparse["value"].tolist() == [15.0, 40.0]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda o: o.assign(timestamp=o["timestamp"].dt.tz_localize(None)), "naive"),
        (lambda o: o.drop(columns="speed_kmh"), r"lack columns \['speed_kmh'\]"),
        (lambda o: o.assign(speed_kmh="fast"), "must be numeric"),
    ],
)
def test_aggregate_errors_name_the_column(change, match):
    obs = _obs([("a", "00:00", 10.0)], ["speed_kmh"])
    with pytest.raises(ValueError, match=match):
        aggregate(change(obs), ASSIGNMENT, ["speed_kmh"], "sensor", 900)


@pytest.mark.parametrize(
    ("channels", "kind", "bin_s", "match"),
    [(["v85"], "sensor", 900, "allowed"), (["speed_kmh"], "drone", 900, "kind"), (["speed_kmh"], "sensor", 0, "bin")],
)
def test_aggregate_rejects_bad_arguments(channels, kind, bin_s, match):
    obs = _obs([("a", "00:00", 10.0)], ["speed_kmh"])
    with pytest.raises(ValueError, match=match):
        aggregate(obs, ASSIGNMENT, channels, kind, bin_s)


def test_camera_min_uptime_option():
    obs = _obs([("a", "00:00", 1.0, 0.01), ("b", "00:00", 50.0, 0.9)], ["car", "uptime"])
    assert aggregate(obs, ASSIGNMENT, ["car"], "camera", 900)["value"].tolist() == [pytest.approx((100 + 50 / 0.9) / 2)]
    strict = aggregate(obs, ASSIGNMENT, ["car"], "camera", 900, min_uptime=0.5)
    assert strict["value"].tolist() == [pytest.approx(50 / 0.9)] and strict["coverage"].tolist() == [1]


@pytest.fixture
def tiny_lake(tiny_city, write_registry, write_observations):
    """The grid, registries of both feeds of the tiny city and observations on 2024-05-06 (local)."""
    write_grid(tiny_city)
    spec = grid_spec(tiny_city)
    pt = lambda dx, dy: shapely.Point(spec.x0 + dx, spec.y0 + dy)  # noqa: E731
    p = to_wgs84(
        [
            pt(500, 500),
            pt(1500, 500),
            shapely.LineString([(spec.x0 + 500, spec.y0 + 1500), (spec.x0 + 1500, spec.y0 + 1500)]),
        ],
        25833,
    )
    write_registry(tiny_city, "cam", {"c1": p[0], "c2": p[1], "far": shapely.Point(0, 0)}, version="r1")
    write_registry(tiny_city, "loop", {"l1": p[2]}, version="r2")
    ts = utc("2024-05-06 06:00", "2024-05-06 06:05", "2024-05-06 06:20")
    cam = pd.DataFrame(
        {
            "source_id": ["c1", "c2", "far"],
            "timestamp": ts,
            "car": [10.0, 20.0, 5.0],
            "bike": [1.0, NAN, 2.0],
            "uptime": 1.0,
        }
    )
    loop = pd.DataFrame({"source_id": ["l1", "l1", "l1"], "timestamp": ts, "speed_kmh": [30.0, 40.0, 50.0]})
    write_observations(tiny_city, "cam", "2024-05-06", "camera", cam)
    write_observations(tiny_city, "loop", "2024-05-06", "sensor", loop)
    return spec


def test_rasterize_partition_writes_channels_per_feed(tiny_city, tiny_lake):
    w = tiny_lake.width
    out = rasterize_partition(tiny_city, "2024-05-06", assignments_for(tiny_city))
    assert out["path"].endswith("raster/city=tiny/date=2024-05-06/part.parquet")
    table = lake.read_partition("raster", city="tiny", date="2024-05-06")
    assert table.schema.equals(rz.RASTER_SCHEMA)
    df = table.to_pandas()
    got = {(r.bin_start.strftime("%H:%M"), r.cell_id, r.channel): (r.value, r.coverage) for r in df.itertuples()}
    assert got == {
        ("06:00", 0, "cam.car"): (10.0, 1),
        ("06:00", 0, "cam.bike"): (1.0, 1),
        ("06:00", 1, "cam.car"): (20.0, 1),
        ("06:00", w, "loop.speed_kmh"): (35.0, 2),
        ("06:00", w + 1, "loop.speed_kmh"): (35.0, 2),
        ("06:15", w, "loop.speed_kmh"): (50.0, 1),
        ("06:15", w + 1, "loop.speed_kmh"): (50.0, 1),
    }
    assert out["rows"] == len(df) == 7 and out["cells"] == 4 and out["bins"] == 2
    assert out["observations"] == 6 and out["feeds"] == ["cam", "loop"]
    # idempotent: same bytes again
    first = (lake.partition("raster", city="tiny", date="2024-05-06") / "part.parquet").read_bytes()
    assert rasterize_partition(tiny_city, "2024-05-06", assignments_for(tiny_city)) == out
    assert (lake.partition("raster", city="tiny", date="2024-05-06") / "part.parquet").read_bytes() == first


def test_rasterize_takes_the_assignment_tables_and_names_a_missing_one(tiny_city, tiny_lake):
    with pytest.raises(
        ValueError, match=r"feed=loop/date=2024-05-06/part.parquet: no assignment table for feed 'loop'"
    ):
        rasterize_partition(tiny_city, "2024-05-06", assignments_for(tiny_city, ["cam"]))
    assert lake.list_dates("raster", city="tiny") == []  # nothing written
    # the tables given are the ones used: no assignment is computed here
    given = assignments_for(tiny_city)
    only_c1 = given["cam"][given["cam"]["source_id"] == "c1"].copy()
    only_c1.attrs = dict(given["cam"].attrs)
    out = rasterize_partition(tiny_city, "2024-05-06", {"cam": only_c1, "loop": given["loop"]})
    df = lake.read_partition("raster", city="tiny", date="2024-05-06").to_pandas()
    assert set(df.loc[df["channel"].str.startswith("cam."), "cell_id"]) == {0}
    assert out["observations"] == 6


def test_rasterize_range_writes_empty_days(tiny_city, tiny_lake, write_empty_days):
    write_empty_days(tiny_city, "2024-05-05", "2024-05-07")  # ingested, without rows
    outs = rasterize_range(tiny_city, "2024-05-05", "2024-05-07", assignments_for(tiny_city))
    assert [o["rows"] for o in outs] == [0, 7, 0]
    assert lake.list_dates("raster", city="tiny") == ["2024-05-05", "2024-05-06", "2024-05-07"]
    assert lake.read_partition("raster", city="tiny", date="2024-05-07").schema.equals(rz.RASTER_SCHEMA)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        rasterize_partition(tiny_city, "2024-5-6", assignments_for(tiny_city))
