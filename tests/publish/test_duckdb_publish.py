"""Publishing forecasts: per-run Parquet behind a swapped catalog (traffic.publish.duckdb_publish)."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from publish_cases import make_case, metr_la_case

from traffic.config import PROJECT_ROOT
from traffic.publish import duckdb_publish as dp
from traffic.publish.congestion import congestion

KEYS = {
    "forecast_runs": "run_id",
    "forecasts": "run_id, channel, cell_id, horizon",
    "run_cells": "run_id, cell_id",
    "cell_channels": "run_id, cell_id, channel",
}


def snapshot(db) -> dict[str, pd.DataFrame]:
    """Full contents of the catalog's relations, sorted (read-only, closed afterwards)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {k}").df() for t, k in KEYS.items()}
    finally:
        con.close()


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_like=False)


def versions(db) -> list[str]:
    return sorted(p.name for p in (dp.store_dir(db) / "runs").glob("city=*/run_id=*/*"))


# ------------------------------------------------------------------ catalog


def test_init_db_builds_an_empty_catalog_and_defaults_to_traffic_home(home):
    path = dp.init_db()
    assert path == home / "forecasts.duckdb"
    assert dp.init_db() == path
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    cols = [r[0] for r in con.execute("DESCRIBE latest_forecast").fetchall()]
    assert con.execute("SELECT count(*) FROM latest_forecast").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM hotspots").fetchall() == [(0,)]
    con.close()
    assert tables == set(dp.TABLES)
    assert views == set(dp.VIEWS)
    assert {"city", "target_time", "congestion_level", "lower", "upper"} <= set(cols)
    assert not list(home.glob(".forecasts.duckdb.*"))  # no temporary catalog left behind


def test_schema_applies_twice_on_a_plain_connection(tmp_path):
    from traffic.publish.migrations import migrate

    con = duckdb.connect(str(tmp_path / "plain.duckdb"))
    for _ in range(2):
        migrate(con)
    assert con.execute("SELECT count(*) FROM layout.forecasts").fetchall() == [(0,)]
    con.close()


def test_init_db_keeps_published_data(db):
    dp.publish_forecast(db, **make_case().kwargs())
    before = snapshot(db)
    dp.init_db(db)
    assert_same(before, snapshot(db))


def test_catalog_reads_from_another_working_directory(db, tmp_path):
    dp.publish_forecast(db, **make_case().kwargs())
    code = (
        f"import duckdb; c = duckdb.connect({str(db)!r}, read_only=True); "
        "print(c.execute('SELECT count(*), count(lower) FROM latest_forecast').fetchall()[0][0])"
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=other, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "72"


# ------------------------------------------------------------------ idempotence, latest


def test_publish_twice_is_idempotent(db):
    case = make_case()
    first = dp.publish_forecast(db, **case.kwargs())
    a = snapshot(db)
    second = dp.publish_forecast(db, **case.kwargs())
    b = snapshot(db)
    assert first["run_id"] == second["run_id"] == "berlin_20241202T060000Z"
    assert (first["replaced"], second["replaced"]) == (False, True)
    assert first["n_rows"] == 3 * 2 * 12 == len(b["forecasts"]) == b["forecast_runs"]["n_rows"].item()
    for table in a:
        assert len(a[table]) == len(b[table])
    # only published_at / version move
    for table in ("forecasts", "run_cells", "cell_channels"):
        pd.testing.assert_frame_equal(a[table], b[table])
    moving = ["published_at", "version", "folder"]
    pd.testing.assert_frame_equal(a["forecast_runs"].drop(columns=moving), b["forecast_runs"].drop(columns=moving))
    # both versions are on disk (a session may still read the first); the catalog lists the second
    assert versions(db) == sorted([first["version"], second["version"]])
    assert b["forecast_runs"]["version"].item() == second["version"]


def test_same_instant_in_another_timezone_is_the_same_run(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    berlin_time = pd.Timestamp(case.run["issued_at"]).tz_convert("Europe/Berlin")
    out = dp.publish_forecast(db, **case.kwargs(run={**case.run, "issued_at": berlin_time}))
    assert out["replaced"]
    assert len(snapshot(db)["forecast_runs"]) == 1


def test_republish_replaces_values(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    doubled = case.forecast * 2
    dp.publish_forecast(db, **case.kwargs(forecast=doubled))
    got = snapshot(db)["forecasts"]
    np.testing.assert_allclose(np.sort(got["value"].to_numpy()), np.sort(doubled.ravel()))


def test_later_run_becomes_latest_forecast(db):
    old = make_case(issued_at="2024-12-02T06:00:00Z", seed=1)
    new = make_case(issued_at="2024-12-03T06:00:00Z", seed=2)
    la = make_case(city="los_angeles", issued_at="2024-12-01T00:00:00Z", h_out=4, freq="15min", seed=3)
    dp.publish_forecast(db, **new.kwargs())  # published first, issued later
    dp.publish_forecast(db, **old.kwargs())
    dp.publish_forecast(db, **la.kwargs())
    latest = dp.read_relation(db, "latest_forecast")
    assert set(latest.groupby("city")["run_id"].unique().map(tuple)) == {
        ("berlin_20241203T060000Z",),
        ("los_angeles_20241201T000000Z",),
    }
    assert len(latest) == 3 * 2 * 12 + 4 * 2 * 12
    runs = dp.latest_runs(db)
    assert runs["run_id"].tolist() == ["berlin_20241203T060000Z", "los_angeles_20241201T000000Z"]
    assert runs["bin_seconds"].tolist() == [3600, 900]
    assert runs["horizon_steps"].tolist() == [3, 4]
    assert runs["n_rows"].tolist() == [72, 96]
    assert runs["timezone"].tolist() == ["Europe/Berlin", "America/Los_Angeles"]  # from cities/*.toml
    # the older run is kept, just not latest; cells follow the newest run of each city
    assert len(snapshot(db)["forecast_runs"]) == 3
    cells = dp.read_relation(db, "cells")
    assert cells.groupby("city")["run_id"].unique().map(tuple).to_dict() == {
        "berlin": ("berlin_20241203T060000Z",),
        "los_angeles": ("los_angeles_20241201T000000Z",),
    }


def test_run_kind_model_kind_and_interval_columns(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())  # an old caller: defaults
    runs = dp.read_relation(db, "forecast_runs")
    assert runs[["model_kind", "kind"]].values.tolist() == [["model", "nightly"]]
    assert runs["interval_level"].isna().all() and runs["interval_method"].isna().all()
    run = {**case.run, "model_kind": "gbm", "kind": "refresh", "interval_method": "conformal"}
    dp.publish_forecast(db, **case.kwargs(run=run, lower=case.forecast - 1, upper=case.forecast + 1))
    runs = dp.read_relation(db, "forecast_runs")
    assert runs[["model_kind", "kind", "interval_level", "interval_method"]].values.tolist() == [
        ["gbm", "refresh", 0.8, "conformal"]
    ]


# ------------------------------------------------------------------ atomicity, bad input


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"forecast": np.zeros((3, 2, 4, 3))}, "cell_ids has shape"),
        ({"forecast": np.zeros((3, 2, 12))}, r"\(H_out, C, H, W\)"),
        ({"target_times": pd.date_range("2024-12-02 06:00", periods=2, freq="h", tz="UTC")}, "2 entries"),
        ({"target_times": pd.date_range("2024-12-02 06:00", periods=3, freq="h")}, "naive"),
        ({"target_times": pd.date_range("2024-12-02 05:00", periods=3, freq="h", tz="UTC")}, "before issued_at"),
        ({"channels": ["t.car", "t.car"]}, "unique"),
        ({"has_data": np.ones((2, 3, 4), dtype=np.int8)}, "bool"),
        ({"reference": np.ones((1, 3, 4))}, "reference has shape"),
        ({"lower": np.zeros((3, 2, 3, 4))}, "both lower and upper"),
        ({"lower": np.zeros((3, 2, 3, 4)), "upper": np.ones((3, 2, 3))}, "upper has shape"),
        ({"lower": np.full((3, 2, 3, 4), 2.0), "upper": np.ones((3, 2, 3, 4))}, "lower > upper"),
        ({"lower": np.full((3, 2, 3, 4), np.nan), "upper": np.ones((3, 2, 3, 4))}, "lower is NaN"),
        ({"coverage": np.full((2, 3, 4), 1.5)}, r"coverage must be a share in \[0, 1\]"),
        ({"coverage": np.ones((3, 4))}, "coverage has shape"),
        ({"run": {"model_name": "m", "issued_at": "2024-12-02T06:00Z"}}, "missing"),
        (
            {"run": {"model_name": "m", "model_version": 1, "issued_at": "2024-12-02T06:00Z", "colour": "red"}},
            "unknown",
        ),
        ({"run": {"model_name": "m", "model_version": 1, "issued_at": "2024-12-02T06:00"}}, "naive"),
        (
            {"run": {"model_name": "m", "model_version": 1, "issued_at": "2024-12-02T06:00Z", "horizon_steps": 12}},
            "horizon",
        ),
        (
            {"run": {"model_name": "m", "model_version": 1, "issued_at": "2024-12-02T06:00Z", "bin_seconds": 900}},
            "bin_seconds",
        ),
        ({"run": {"model_name": "m", "model_version": 1, "issued_at": "2024-12-02T06:00Z", "kind": "x"}}, "'nightly'"),
        (
            {"run": {"model_name": "m", "model_version": 1, "issued_at": "2024-12-02T06:00Z", "timezone": "Mars/X"}},
            "IANA",
        ),
        ({"city": "Berlin; DROP TABLE cells"}, "city"),
    ],
)
def test_bad_input_raises_before_anything_is_written(db, override, match):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before, files = snapshot(db), versions(db)
    with pytest.raises(dp.PublishError, match=match):
        # changed values too, so a half-done write would be visible
        dp.publish_forecast(db, **case.kwargs(**{"forecast": case.forecast * 3, **override}))
    assert_same(before, snapshot(db))
    assert versions(db) == files


def test_cells_that_disagree_with_the_grid_are_refused(db):
    case = make_case()
    flipped = case.cells.assign(row=case.cells["row"].max() - case.cells["row"])  # north/south swapped
    with pytest.raises(dp.PublishError, match="cell_id 1000 at row 2"):
        dp.publish_forecast(db, **case.kwargs(cells=flipped))
    with pytest.raises(dp.PublishError, match="not in the cells frame"):
        dp.publish_forecast(db, **case.kwargs(cells=case.cells.iloc[1:]))
    with pytest.raises(dp.PublishError, match="lacks columns"):
        dp.publish_forecast(db, **case.kwargs(cells=case.cells.drop(columns="polygon_wkt")))
    assert not db.exists() and not dp.store_dir(db).exists()  # nothing was even created


def test_failure_while_writing_run_files_leaves_nothing_visible(db, monkeypatch):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before, files = snapshot(db), versions(db)
    real = dp.pq.write_table
    written = []

    def failing_write(table, where, **kw):
        if len(written) == 2:
            raise OSError("disk full (injected)")
        written.append(where)
        return real(table, where, **kw)

    monkeypatch.setattr(dp.pq, "write_table", failing_write)
    with pytest.raises(OSError, match="injected"):
        dp.publish_forecast(db, **case.kwargs(forecast=case.forecast + 1))
    assert len(written) == 2 and not any(os.path.exists(w) for w in written)  # the temp folder is gone
    assert_same(before, snapshot(db))
    assert versions(db) == files


def test_constraint_violation_in_the_schema_writes_nothing(db, monkeypatch):
    """A row the schema refuses (an index without a level) aborts the whole publish."""
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before, files = snapshot(db), versions(db)
    real = dp.forecast_table

    def with_bad_row(*args, **kwargs):
        t = real(*args, **kwargs)
        level = t.column("congestion_level").to_pylist()
        first = next(i for i, v in enumerate(level) if v is not None)  # a speed row: volumes have no congestion
        level[first] = None  # index kept: violates CHECK ((index IS NULL) = (level IS NULL))
        return t.set_column(t.schema.get_field_index("congestion_level"), "congestion_level", pa.array(level))

    monkeypatch.setattr(dp, "forecast_table", with_bad_row)
    with pytest.raises(duckdb.ConstraintException):
        dp.publish_forecast(db, **case.kwargs(forecast=case.forecast + 1))
    assert_same(before, snapshot(db))
    assert versions(db) == files


KILL_CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from publish_cases import make_case, metr_la_case
from traffic.publish import duckdb_publish as dp
point = {point!r}
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "writing":          # after the first run file, before the folder is renamed
    real = dp.pq.write_table
    n = []
    def write(*a, **k):
        real(*a, **k); n.append(1)
        if len(n) == 2: die()
    dp.pq.write_table = write
elif point == "before_catalog":  # run folder in place, catalog not rebuilt
    dp.rebuild_catalog = die
elif point == "before_swap":    # new catalog written to its temporary name, not swapped
    dp.os.replace = die
case = make_case(issued_at="2024-12-03T06:00:00Z", seed=9)
dp.publish_forecast({db!r}, **case.kwargs())
"""


@pytest.mark.parametrize("point", ["writing", "before_catalog", "before_swap"])
def test_kill_9_during_a_publish_never_shows_a_partial_run(db, point):
    dp.publish_forecast(db, **make_case().kwargs())
    before = snapshot(db)
    code = KILL_CHILD.format(tests=str(PROJECT_ROOT / "tests/publish"), point=point, db=str(db))
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr
    assert_same(before, snapshot(db))  # readers still see exactly the previous state
    # the next publish (of another run) recovers: the killed run is whole or absent, never partial
    dp.publish_forecast(db, **make_case(issued_at="2024-12-04T06:00:00Z").kwargs())
    after = snapshot(db)
    counts = after["forecasts"].groupby("run_id").size().to_dict()
    assert counts == dict(zip(after["forecast_runs"]["run_id"], after["forecast_runs"]["n_rows"], strict=True))
    expected = {"berlin_20241202T060000Z", "berlin_20241204T060000Z"}
    if point != "writing":  # the run folder was complete: the store listing includes it from now on
        expected.add("berlin_20241203T060000Z")
    assert set(counts) == expected
    assert not list(db.parent.glob(".forecasts.duckdb.*"))  # temporary catalogs cleaned under the lock


def test_superseded_versions_are_removed_only_after_the_grace_period(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    dp.publish_forecast(db, **case.kwargs())
    assert len(versions(db)) == 2  # default grace: a day
    last = dp.publish_forecast(db, **case.kwargs(), grace_s=0.0)
    assert versions(db) == [last["version"]]
    assert len(snapshot(db)["forecasts"]) == 72


# ------------------------------------------------------------------ row rule, coverage, bounds


def test_only_pairs_with_data_are_published_and_every_cell_is_kept(db):
    case = make_case()
    has_data = case.has_data.copy()
    has_data[0, 1, 2] = False  # volume channel never seen in cell (1, 2)
    reference = case.reference.copy()
    reference[1, 0, 0] = np.nan  # speed channel without a reference in cell (0, 0)
    coverage = np.full((2, 3, 4), 0.75)
    coverage[0, 1, 2] = 0.0
    coverage[1, 2, 3] = 0.5
    out = dp.publish_forecast(db, **case.kwargs(has_data=has_data, reference=reference, coverage=coverage))
    snap = snapshot(db)
    f = snap["forecasts"]
    assert out["n_rows"] == len(f) == 72 - 2 * 3 == out["n_rows_with_level"]
    assert f["has_data"].all()
    speed, vol = f[f["channel"] == "m.speed_kmh"], f[f["channel"] == "t.car"]
    assert speed["congestion_level"].notna().all() and speed["congestion_index"].notna().all()
    assert speed["volume_level"].isna().all() and speed["volume_index"].isna().all()
    assert vol["volume_level"].notna().all() and vol["volume_index"].notna().all()
    assert vol["congestion_level"].isna().all() and vol["congestion_index"].isna().all()
    pairs = set(zip(f["channel"], f["cell_id"], strict=True))
    assert ("t.car", int(case.cell_ids[1, 2])) not in pairs and ("m.speed_kmh", int(case.cell_ids[0, 0])) not in pairs
    cells = snap["run_cells"].set_index("cell_id")
    assert len(cells) == 12 and cells["has_data"].all()  # each cell still has one channel
    assert cells.loc[int(case.cell_ids[1, 2]), "n_channels_with_data"] == 1
    assert cells.loc[int(case.cell_ids[1, 2]), "coverage"] == 0.75  # largest per-channel share
    chans = snap["cell_channels"].set_index(["cell_id", "channel"])
    assert len(chans) == 24 and (~chans["has_data"]).sum() == 2
    assert chans.loc[(int(case.cell_ids[1, 2]), "t.car"), "coverage"] == 0.0
    assert chans.loc[(int(case.cell_ids[2, 3]), "m.speed_kmh"), "coverage"] == 0.5
    assert np.isnan(chans.loc[(int(case.cell_ids[0, 0]), "m.speed_kmh"), "reference"])
    # a cell without any data stays in cells, flagged
    none = np.zeros_like(case.has_data)
    none[:, 0, 1:] = True
    dp.publish_forecast(db, **case.kwargs(has_data=none, cell_coverage=np.full((3, 4), 0.25)))
    cells = dp.read_relation(db, "cells").set_index("cell_id")
    assert len(cells) == 12 and cells["has_data"].sum() == 3 and (cells["coverage"] == 0.25).all()
    assert len(dp.read_relation(db, "forecasts")) == 3 * 2 * 3


def test_has_data_may_depend_on_the_horizon(db):
    case = make_case()
    per_horizon = np.broadcast_to(case.has_data, case.forecast.shape).copy()
    per_horizon[2, :, 0, :] = False  # southern row unobserved at the third target bin's time of day
    out = dp.publish_forecast(db, **case.kwargs(has_data=per_horizon))
    f = snapshot(db)["forecasts"]
    assert out["n_rows"] == len(f) == 72 - 2 * 4
    missing = f[(f["horizon"] == 3) & f["cell_id"].isin(case.cell_ids[0].tolist())]
    assert missing.empty
    with pytest.raises(dp.PublishError, match=r"needs \(2, 3, 4\) or \(3, 2, 3, 4\)"):
        dp.publish_forecast(db, **case.kwargs(has_data=per_horizon[:2]))


def test_bounds_are_published_and_missing_values_have_none(db):
    case = make_case()
    fc = case.forecast.copy()
    fc[0, 0, 0, 0] = np.nan  # the model gave no value here
    lo, hi = fc * 0.8, fc * 1.25
    dp.publish_forecast(db, **case.kwargs(forecast=fc, lower=lo, upper=hi))
    f = snapshot(db)["forecasts"]
    hole = (f["horizon"] == 1) & (f["channel"] == "t.car") & (f["cell_id"] == int(case.cell_ids[0, 0]))
    assert f.loc[hole, ["value", "lower", "upper", "congestion_index", "congestion_level"]].isna().all(axis=None)
    rest = f[~hole]
    assert rest[["lower", "upper"]].notna().all(axis=None)
    np.testing.assert_allclose(rest["lower"], rest["value"] * 0.8)
    np.testing.assert_allclose(rest["upper"], rest["value"] * 1.25)
    # an old forecast file without bounds: NULL bounds
    dp.publish_forecast(db, **make_case(issued_at="2024-12-05T06:00:00Z").kwargs())
    latest = dp.read_relation(db, "latest_forecast")
    assert latest["lower"].isna().all() and latest["upper"].isna().all() and len(latest) == 72


def test_index_in_the_store_matches_congestion_module(db):
    case = make_case(seed=5)
    dp.publish_forecast(db, **case.kwargs())
    f = snapshot(db)["forecasts"]
    index, _ = congestion(case.forecast, case.reference, case.channels)
    hz, ch, r, co = np.unravel_index(np.arange(index.size), index.shape)
    expected = pd.DataFrame(
        {
            "horizon": hz + 1,
            "channel": np.array(case.channels)[ch],
            "cell_id": case.cell_ids[r, co],
            "target_time": case.target_times[hz],
            "expected": index.ravel(),
        }
    )
    merged = f.merge(expected, on=["horizon", "channel", "cell_id"], validate="one_to_one")
    np.testing.assert_allclose(merged["congestion_index"], merged["expected"])
    assert (merged["target_time_x"] == merged["target_time_y"]).all()


# ------------------------------------------------------------------ hotspots


def _hotspot_case(**kw):
    """3 horizons, 12 cells; cell 1000 is jammed but has no data, cell 1001 jams at h=3 only.

    Congestion is read from speeds (``m.speed_kmh``, free flow 50 km/h); the volume channel
    (``t.car``, p95 100 in every cell) is busy where nothing jams: cell 1002 at its peak.
    """
    case = make_case(**kw)
    fc = np.zeros_like(case.forecast)
    fc[:, 1] = 50.0  # free-flowing speeds everywhere
    fc[:, :, 0, 0] = [140.0, 1.0]  # cell 1000: huge volume, standstill ...
    has_data = case.has_data.copy()
    has_data[:, 0, 0] = False  # ... but it never had data
    fc[2, 1, 0, 1] = 5.0  # cell 1001: speed 5 of 50 km/h at horizon 3 -> index 0.9, severe
    fc[0, 1, 2, 3] = 20.0  # cell 1011: 20 km/h at horizon 1 -> 0.6, heavy
    fc[1, 1, 2, 3] = 15.0  # ... and 0.7 at horizon 2
    fc[0, 1, 1, 1] = 35.0  # cell 1005: 0.3, moderate
    fc[0, 0, 0, 2] = 120.0  # cell 1002: 120 cars of its usual peak 100 -> volume index 1.2, peak; no jam
    fc[1, 0, 0, 2] = 80.0  # ... 0.8, busy
    return case.kwargs(forecast=fc, has_data=has_data, lower=fc * 0.9, upper=fc * 1.1)


def test_hotspots_next_hours(db):
    dp.publish_forecast(db, **_hotspot_case())
    three = dp.hotspots(db, "berlin", hours=3, min_level="heavy")
    assert three["cell_id"].tolist() == [1001, 1011]
    assert three["congestion_level"].tolist() == ["severe", "heavy"]
    top = three.iloc[0]
    assert top["target_time"] == pd.Timestamp("2024-12-02T08:00Z")
    assert (top["row"], top["col"], top["channel"]) == (0, 1, "m.speed_kmh")
    assert top["congestion_index"] == pytest.approx(0.9)
    assert (top["value"], top["lower"], top["upper"]) == pytest.approx((5.0, 4.5, 5.5))
    assert (top["centroid_lon"], top["centroid_lat"]) == pytest.approx((13.01, 52.0))
    cell_1011 = three.iloc[1]
    assert (cell_1011["congestion_index"], cell_1011["heavy_slots"], cell_1011["horizon"]) == (pytest.approx(0.7), 2, 2)
    # default: moderate or worse, so cell 1005 shows up too; 1000 (no data) never does
    assert dp.hotspots(db, "berlin", hours=3)["cell_id"].tolist() == [1001, 1011, 1005]
    # the next 2 hours do not reach horizon 3
    assert dp.hotspots(db, "berlin", hours=2, min_level="heavy")["cell_id"].tolist() == [1011]
    assert dp.hotspots(db, "berlin", hours=3, limit=1)["cell_id"].tolist() == [1001]
    # window start at 07:00 UTC: horizon 1 of cell 1011 drops out
    later = dp.hotspots(db, "berlin", hours=1, at=pd.Timestamp("2024-12-02T07:00Z"), min_level="heavy")
    assert later[["cell_id", "heavy_slots"]].values.tolist() == [[1011, 1]]
    # naive = local wall-clock time of the city (Berlin, UTC+1 in December); a bin that has begun counts
    local = dp.find_hotspots(db, "berlin", hours=0.5, at="2024-12-02 08:30", min_level="heavy")
    assert local.start == pd.Timestamp("2024-12-02T07:30Z") and local.end == pd.Timestamp("2024-12-02T08:00Z")
    assert local.rows["cell_id"].tolist() == [1011]
    assert dp.hotspots(db, "berlin", channel="m.speed_kmh")["cell_id"].tolist() == [1001, 1011, 1005]
    # a volume asked for by name: its volume index and levels (busy or peak), never called congestion
    busy = dp.find_hotspots(db, "berlin", hours=3, channel="t.car")
    assert busy.measure == "volume" and "congestion_index" not in busy.rows.columns
    assert busy.rows[["cell_id", "volume_level", "heavy_slots"]].values.tolist() == [[1002, "peak", 2]]
    assert busy.rows["volume_index"].iloc[0] == pytest.approx(1.2)
    assert dp.hotspots(db, "berlin", channel="t.car", min_level="peak")["cell_id"].tolist() == [1002]
    with pytest.raises(dp.HotspotError, match=r"min_level 'heavy' for channel t.car; allowed: \['quiet'"):
        dp.hotspots(db, "berlin", channel="t.car", min_level="heavy")
    # the window is cut at the run's last target bin
    assert dp.find_hotspots(db, "berlin", hours=100).end == pd.Timestamp("2024-12-02T09:00Z")


def test_hotspots_reads_the_newest_run_covering_the_time(db):
    dp.publish_forecast(db, **_hotspot_case(issued_at="2024-12-02T06:00:00Z"))  # covers 06:00-09:00
    calm = make_case(issued_at="2024-12-02T07:00:00Z")  # newer, covers 07:00-10:00, nothing congested
    calm_kw = calm.kwargs(forecast=np.stack([np.zeros((3, 3, 4)), np.full((3, 3, 4), 50.0)], axis=1))
    dp.publish_forecast(db, **calm_kw)
    early = dp.find_hotspots(db, "berlin", at="2024-12-02T06:30Z")
    assert early.run["run_id"] == "berlin_20241202T060000Z"
    assert early.rows["cell_id"].tolist() == [1001, 1011, 1005]
    late = dp.find_hotspots(db, "berlin", at="2024-12-02T07:30Z")
    assert late.run["run_id"] == "berlin_20241202T070000Z" and late.rows.empty
    # default: no run covers wall-clock now (2024 data) -> the start of the newest run
    default = dp.find_hotspots(db, "berlin")
    assert default.run["run_id"] == "berlin_20241202T070000Z" and default.start == pd.Timestamp("2024-12-02T07:00Z")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hours": 0}, "0 < hours"),
        ({"hours": -1}, "0 < hours"),
        ({"hours": float("nan")}, "0 < hours"),
        ({"hours": float("inf")}, "0 < hours"),
        ({"hours": 3e9}, "0 < hours"),
        ({"hours": "soon"}, "0 < hours"),
        ({"limit": 0}, "1 <= limit"),
        ({"limit": 2.5}, "1 <= limit"),
        ({"limit": 10**9}, "1 <= limit"),
        ({"channel": "t.bus"}, r"unknown channel 't.bus' for berlin; allowed: \['t.car', 'm.speed_kmh'\]"),
        ({"at": "2024-12-03 12:00"}, r"outside every berlin run; runs cover \[start, end\): 2024-12-02 07:00 CET"),
        ({"at": "yesterday-ish"}, "not a time"),
        ({"min_level": "jammed"}, "allowed"),
        ({"city": "paris"}, r"'paris' has no published run; cities with runs: \['berlin'\]"),
        ({"city": "berlin' OR '1'='1"}, "city"),
    ],
)
def test_hotspots_rejects_bad_questions(db, kwargs, match):
    dp.publish_forecast(db, **_hotspot_case())
    city = kwargs.pop("city", "berlin")
    with pytest.raises(dp.HotspotError, match=match):
        dp.hotspots(db, city, **kwargs)


def test_hotspots_view_uses_the_run_covering_now_else_the_newest(db):
    now = pd.Timestamp.now(tz="UTC").floor("h")
    covering = _hotspot_case(issued_at=str(now - pd.Timedelta(hours=1)))  # covers now-1h .. now+2h
    dp.publish_forecast(db, **covering)
    future = make_case(issued_at=str(now + pd.Timedelta(hours=5)), seed=4)  # newer, not covering now
    dp.publish_forecast(db, **future.kwargs())
    dp.publish_forecast(db, **make_case(city="los_angeles", issued_at="2024-12-01T00:00:00Z", seed=3).kwargs())
    dp.publish_forecast(db, **make_case(city="los_angeles", issued_at="2024-12-02T00:00:00Z", seed=4).kwargs())
    view = dp.read_relation(db, "hotspots")
    assert view.groupby("city")["run_id"].unique().map(tuple).to_dict() == {
        "berlin": (dp.run_id_for("berlin", now - pd.Timedelta(hours=1)),),
        "los_angeles": ("los_angeles_20241202T000000Z",),
    }
    berlin = view[view["city"] == "berlin"]
    assert 1000 not in set(berlin["cell_id"])
    assert sorted(berlin["cell_id"].tolist()) == [1001, 1005, 1011, 1011]
    assert view["congestion_level"].isin(["moderate", "heavy", "severe"]).all()
    assert view["congestion_index"].is_monotonic_decreasing
    # the CLI function answers the same for now
    assert dp.find_hotspots(db, "berlin").run["run_id"] == berlin["run_id"].iloc[0]


# ------------------------------------------------------------------ identifiers, readers


@pytest.mark.parametrize(
    "name", ["forecasts; DROP TABLE cells", "pg_catalog.pg_tables", "Forecasts", "duckdb_settings()", ""]
)
def test_identifier_outside_allow_list_is_refused(db, name):
    dp.publish_forecast(db, **make_case().kwargs())
    with pytest.raises(ValueError, match="not allowed; allowed"):
        dp.read_relation(db, name)
    assert len(snapshot(db)["run_cells"]) == 12


@pytest.mark.parametrize("name", dp.ALLOWED_RELATIONS)
def test_allowed_relations_are_readable(db, name):
    dp.publish_forecast(db, **_hotspot_case())
    assert "city" in dp.read_relation(db, name, city="berlin").columns
    assert len(dp.read_relation(db, name, city="berlin"))
    assert dp.read_relation(db, name, city="los_angeles").empty


def test_readers_need_an_existing_catalog(db):
    with pytest.raises(FileNotFoundError, match="init_db"):
        dp.hotspots(db, "berlin")
    assert not db.exists()


HOLDER = """
import duckdb, sys, time
c = duckdb.connect({db!r}, read_only=True)
print(c.execute("SELECT count(*) FROM forecasts").fetchall()[0][0], flush=True)
sys.stdin.readline()  # the parent publishes meanwhile
print(c.execute("SELECT count(*) FROM forecasts").fetchall()[0][0], flush=True)
c.close()
"""


def test_a_reader_session_never_blocks_a_publish_and_keeps_its_snapshot(db):
    dp.publish_forecast(db, **make_case().kwargs())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(db=str(db))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "72"
        t0 = time.monotonic()
        out = dp.publish_forecast(db, **make_case(issued_at="2024-12-03T06:00:00Z").kwargs(), lock_timeout_s=1)
        took = time.monotonic() - t0
        assert len(snapshot(db)["forecasts"]) == 144  # a new session sees both runs
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "72"  # the open session still sees its catalog
    finally:
        holder.kill() if holder.poll() is None else None
        holder.wait(timeout=30)
    assert out["run_id"] == "berlin_20241203T060000Z"
    assert took < 10


def _publish_in_child(db: str, city: str, issued: str, barrier) -> dict:
    sys.path.insert(0, str(PROJECT_ROOT / "tests/publish"))
    from publish_cases import make_case as mk

    barrier.wait(timeout=60)
    return dp.publish_forecast(db, **mk(city=city, issued_at=issued, shape=(20, 20)).kwargs())


def test_concurrent_publishes_from_two_processes_keep_both_runs(db):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            jobs = [
                pool.apply_async(_publish_in_child, (str(db), city, "2024-12-02T06:00:00Z", barrier))
                for city in ("berlin", "los_angeles")
            ]
            results = [j.get(timeout=120) for j in jobs]
    assert {r["city"] for r in results} == {"berlin", "los_angeles"}
    runs = dp.read_relation(db, "forecast_runs")
    assert sorted(runs["run_id"]) == ["berlin_20241202T060000Z", "los_angeles_20241202T060000Z"]
    counts = dp.read_relation(db, "latest_forecast").groupby("city").size().to_dict()
    assert counts == {"berlin": 3 * 2 * 400, "los_angeles": 3 * 2 * 400}


# ------------------------------------------------------------------ real data


def test_publish_real_metr_la_speeds(db):
    """METR-LA: 207 sensors as a 9 x 23 grid; reference from six days, 'forecast' = day seven's 07:00-10:00."""
    case = metr_la_case()
    fc, ids, reference, tt = case["forecast"], case["cell_ids"], case["reference"], case["target_times"]
    out = dp.publish_forecast(db, **case)
    assert out["n_rows"] == out["n_rows_with_level"] == 12 * 204  # the three silent sensors get no rows
    assert out["n_cells"] == 207 and out["n_cells_with_data"] == 204
    hot = dp.hotspots(db, "los_angeles", hours=3, limit=500, min_level="heavy")
    assert 0 < len(hot) < 204  # a weekday morning jams some sensors, not all
    assert not set(hot["cell_id"]) & set(ids[8, 20:].tolist())
    assert hot["congestion_index"].between(0.5, 1.0).all() and hot["congestion_index"].is_monotonic_decreasing
    assert hot["target_time"].between(tt[0], tt[-1]).all()
    assert hot["centroid_lat"].between(33.5, 34.5).all()
    assert (hot["lower"] <= hot["value"]).all() and (hot["value"] <= hot["upper"]).all()
    # a cell's index is 1 - speed / free flow of that sensor
    first = hot.iloc[0]
    r, c = np.argwhere(ids == first["cell_id"])[0]
    h = int(first["horizon"]) - 1
    assert first["congestion_index"] == pytest.approx(1 - fc[h, 0, r, c] / reference[0, r, c])
    cells = dp.read_relation(db, "cells").set_index("cell_id")
    assert len(cells) == 207 and not cells.loc[ids[8, 20:].tolist(), "has_data"].any()
    assert (cells.loc[ids[8, 20:].tolist(), "coverage"] == 0).all() and cells["coverage"].max() <= 1


def test_cells_outside_the_forecast_grid_are_kept_without_data(db):
    case = make_case()
    extra = pd.DataFrame(
        {
            "cell_id": [5000, 1],
            "row": [7, -1],
            "col": [7, -1],
            "centroid_lon": [13.5, 12.9],
            "centroid_lat": [52.5, 51.9],
            "polygon_wkt": ["POINT (13.5 52.5)", "POINT (12.9 51.9)"],
        }
    )
    out = dp.publish_forecast(db, **case.kwargs(cells=pd.concat([case.cells, extra], ignore_index=True)))
    cells = dp.read_relation(db, "cells").set_index("cell_id")
    assert out["n_cells"] == len(cells) == 14 and out["n_rows"] == 72
    assert not cells.loc[[5000, 1], "has_data"].any() and cells.loc[[5000, 1], "coverage"].isna().all()
    assert cells.drop(index=[5000, 1])["has_data"].all()


def test_a_query_for_one_run_reads_only_that_runs_file(db):
    for day in (2, 3, 4):
        dp.publish_forecast(db, **make_case(issued_at=f"2024-12-0{day}T06:00:00Z", seed=day).kwargs())
    con = dp.connect_catalog(db)
    try:
        plan = con.execute(
            "EXPLAIN ANALYZE SELECT count(*) FROM forecasts WHERE run_id = $r", {"r": "berlin_20241203T060000Z"}
        ).fetchall()[0][1]
        everything = con.execute("EXPLAIN ANALYZE SELECT count(*) FROM forecasts").fetchall()[0][1]
    finally:
        con.close()
    assert re.search(r"Total Files Read: 1\b", plan), plan
    assert "run_id=berlin_20241203T060000Z" in plan and "run_id=berlin_20241202T060000Z" not in plan
    assert re.search(r"Total Files Read: 3\b", everything), everything


def test_values_that_cannot_be_true_are_refused_and_nothing_is_written(db):
    """The catalog holds no negative count, no speed above the limit and no value outside its interval."""
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before, files = snapshot(db), versions(db)
    negative = case.forecast.copy()
    negative[1, 0, 2, 3] = -192.0
    with pytest.raises(dp.PublishError, match=r"channel t.car: 1 forecast values outside \[0, inf\], first -192"):
        dp.publish_forecast(db, **case.kwargs(forecast=negative))
    fast = case.forecast.copy()
    fast[0, 1, 0, 0] = 250.0
    with pytest.raises(dp.PublishError, match=r"channel m.speed_kmh: .* outside \[0, 200\]"):
        dp.publish_forecast(db, **case.kwargs(forecast=fast))
    lo, hi = case.forecast * 0.9, case.forecast * 1.1
    lo[2, 1, 1, 1] = case.forecast[2, 1, 1, 1] + 1  # the bound above its value
    hi[2, 1, 1, 1] = lo[2, 1, 1, 1] + 1
    with pytest.raises(dp.PublishError, match=r"value outside its interval at 1 .* first \(2, 1, 1, 1\)"):
        dp.publish_forecast(db, **case.kwargs(lower=lo, upper=hi))
    assert_same(before, snapshot(db))
    assert versions(db) == files
    con = duckdb.connect(str(db), read_only=True)
    try:
        bad = con.execute(
            "SELECT count(*) FROM forecasts WHERE value < 0 OR (lower IS NOT NULL AND (value < lower OR value > upper))"
        ).fetchone()
    finally:
        con.close()
    assert bad == (0,)
