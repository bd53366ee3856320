"""Publishing forecasts to DuckDB (traffic.publish.duckdb_publish)."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import make_case

from traffic.config import PROJECT_ROOT
from traffic.publish import duckdb_publish as dp
from traffic.publish.congestion import congestion, reference_stats


def snapshot(db) -> dict[str, pd.DataFrame]:
    """Full contents of the three tables, sorted (read-only, closed afterwards)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        out = {}
        for table, key in (
            ("forecast_runs", "run_id"),
            ("forecasts", "run_id, channel, cell_id, horizon"),
            ("cells", "city, cell_id"),
        ):
            out[table] = con.execute(f"SELECT * FROM {table} ORDER BY {key}").df()
        return out
    finally:
        con.close()


def assert_same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for table in a:
        pd.testing.assert_frame_equal(a[table], b[table], check_like=False)


# ------------------------------------------------------------------ DDL


def test_init_db_applies_twice_and_defaults_to_traffic_home(home):
    path = dp.init_db()
    assert path == home / "forecasts.duckdb"
    assert dp.init_db() == path
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    con.close()
    assert tables == set(dp.TABLES)
    assert views == set(dp.VIEWS)


def test_sql_files_apply_twice_on_a_plain_connection(tmp_path):
    con = duckdb.connect(str(tmp_path / "plain.duckdb"))
    for _ in range(2):
        con.execute((PROJECT_ROOT / "sql/schema.sql").read_text())
        con.execute((PROJECT_ROOT / "sql/views.sql").read_text())
    assert con.execute("SELECT count(*) FROM latest_forecast").fetchall() == [(0,)]
    con.close()


def test_init_db_keeps_published_data(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before = snapshot(db)
    dp.init_db(db)
    assert_same(before, snapshot(db))


# ------------------------------------------------------------------ idempotence, latest


def test_publish_twice_is_idempotent(db):
    case = make_case()
    first = dp.publish_forecast(db, **case.kwargs())
    a = snapshot(db)
    second = dp.publish_forecast(db, **case.kwargs())
    b = snapshot(db)
    assert first["run_id"] == second["run_id"] == "berlin_20241202T060000Z"
    assert (first["replaced"], second["replaced"]) == (False, True)
    assert first["n_rows"] == 3 * 2 * 12 == len(b["forecasts"])
    for table in a:
        assert len(a[table]) == len(b[table])
    # only published_at moves
    pd.testing.assert_frame_equal(a["forecasts"], b["forecasts"])
    pd.testing.assert_frame_equal(
        a["forecast_runs"].drop(columns="published_at"), b["forecast_runs"].drop(columns="published_at")
    )


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
    expected = pd.Series(doubled.ravel()).sort_values().to_numpy()
    np.testing.assert_allclose(np.sort(got["value"].to_numpy()), expected)


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
    # the older run is kept, just not latest
    assert len(snapshot(db)["forecast_runs"]) == 3


# ------------------------------------------------------------------ atomicity


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
        ({"city": "Berlin; DROP TABLE cells"}, "city"),
    ],
)
def test_bad_input_raises_before_commit_and_keeps_previous_state(db, override, match):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before = snapshot(db)
    with pytest.raises(dp.PublishError, match=match):
        # changed values too, so a half-done write would be visible
        dp.publish_forecast(db, **case.kwargs(**{"forecast": case.forecast * 3, **override}))
    assert_same(before, snapshot(db))


def test_cells_that_disagree_with_the_grid_are_refused(db):
    case = make_case()
    flipped = case.cells.assign(row=case.cells["row"].max() - case.cells["row"])  # north/south swapped
    with pytest.raises(dp.PublishError, match="cell_id 1000 at row 2"):
        dp.publish_forecast(db, **case.kwargs(cells=flipped))
    with pytest.raises(dp.PublishError, match="not in the cells frame"):
        dp.publish_forecast(db, **case.kwargs(cells=case.cells.iloc[1:]))
    with pytest.raises(dp.PublishError, match="lacks columns"):
        dp.publish_forecast(db, **case.kwargs(cells=case.cells.drop(columns="polygon_wkt")))
    assert not db.exists()  # nothing was even opened


def test_failure_after_delete_rolls_back(db, monkeypatch):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before = snapshot(db)
    seen = {}

    def failing_insert(con):
        # runs inside the publish transaction, after the old run was deleted
        seen["rows_of_run_during_txn"] = con.execute(
            "SELECT count(*) FROM forecasts WHERE run_id = 'berlin_20241202T060000Z'"
        ).fetchall()[0][0]
        con.execute(dp._stmt("insert_forecasts"))
        seen["rows_after_partial_insert"] = con.execute("SELECT count(*) FROM forecasts").fetchall()[0][0]
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(dp, "_insert_forecasts", failing_insert)
    with pytest.raises(RuntimeError, match="injected"):
        dp.publish_forecast(db, **case.kwargs(forecast=case.forecast + 1, cells=case.cells.assign(centroid_lon=1.0)))
    assert seen == {"rows_of_run_during_txn": 0, "rows_after_partial_insert": 72}
    assert_same(before, snapshot(db))  # old values, old cells, old run row


def test_constraint_violation_in_the_database_rolls_back(db, monkeypatch):
    """A row the schema refuses (no-data row with a level) aborts the whole publish."""
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    before = snapshot(db)
    real = dp.forecast_table

    def with_bad_row(*args, **kwargs):
        t = real(*args, **kwargs)
        has = t.column("has_data").to_numpy(zero_copy_only=False).copy()
        has[0] = False  # level kept: violates CHECK (has_data OR level IS NULL)
        return t.set_column(t.schema.get_field_index("has_data"), "has_data", pa.array(has, pa.bool_()))

    monkeypatch.setattr(dp, "forecast_table", with_bad_row)
    with pytest.raises(duckdb.ConstraintException):
        dp.publish_forecast(db, **case.kwargs(forecast=case.forecast + 1))
    assert_same(before, snapshot(db))


# ------------------------------------------------------------------ has_data, hotspots


def test_cells_without_data_are_flagged_and_carry_no_level(db):
    case = make_case()
    has_data = case.has_data.copy()
    has_data[0, 1, 2] = False  # volume channel never seen in cell (1, 2)
    reference = case.reference.copy()
    reference[1, 0, 0] = np.nan  # speed channel without a reference in cell (0, 0)
    out = dp.publish_forecast(db, **case.kwargs(has_data=has_data, reference=reference))
    f = snapshot(db)["forecasts"]
    assert out["n_rows"] == len(f) == 72
    no = f[~f["has_data"]]
    assert set(zip(no["channel"], no["cell_id"], strict=True)) == {
        ("t.car", int(case.cell_ids[1, 2])),
        ("m.speed_kmh", int(case.cell_ids[0, 0])),
    }
    assert len(no) == 2 * 3 and out["n_rows_with_data"] == 72 - 6
    assert no["congestion_index"].isna().all() and no["congestion_level"].isna().all()
    assert no["value"].notna().all()  # the model's value is kept


def test_has_data_may_depend_on_the_horizon(db):
    case = make_case()
    per_horizon = np.broadcast_to(case.has_data, case.forecast.shape).copy()
    per_horizon[2, :, 0, :] = False  # southern row unobserved at the third target bin's time of day
    out = dp.publish_forecast(db, **case.kwargs(has_data=per_horizon))
    f = snapshot(db)["forecasts"]
    no = f[~f["has_data"]]
    assert out["n_rows_with_data"] == 72 - 2 * 4
    assert set(no["horizon"]) == {3} and set(no["cell_id"]) == set(case.cell_ids[0].tolist())
    with pytest.raises(dp.PublishError, match=r"needs \(2, 3, 4\) or \(3, 2, 3, 4\)"):
        dp.publish_forecast(db, **case.kwargs(has_data=per_horizon[:2]))


def test_index_in_database_matches_congestion_module(db):
    case = make_case(seed=5)
    dp.publish_forecast(db, **case.kwargs())
    f = snapshot(db)["forecasts"]
    index, _ = congestion(case.forecast, case.reference, case.channels)
    h_out, c, h, w = case.forecast.shape
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


def _hotspot_case():
    """3 horizons, 12 cells; cell 1000 is jammed but has no data, cell 1001 jams at h=3 only."""
    case = make_case()
    fc = np.zeros_like(case.forecast)
    fc[:, 1] = 50.0  # free-flowing speeds everywhere
    fc[:, 0, 0, 0] = 140.0  # cell 1000: huge volume ...
    has_data = case.has_data.copy()
    has_data[0, 0, 0] = False  # ... but it never had volume data
    fc[2, 1, 0, 1] = 5.0  # cell 1001: speed 5 of 50 km/h at horizon 3 -> index 0.9, severe
    fc[0, 0, 2, 3] = 60.0  # cell 1011: volume 60 of 100 at horizon 1 -> 0.6, heavy
    fc[1, 0, 2, 3] = 70.0  # ... and 0.7 at horizon 2
    fc[0, 0, 1, 1] = 30.0  # cell 1005: 0.3, moderate: no hotspot
    return case.kwargs(forecast=fc, has_data=has_data)


def test_hotspots_next_hours(db):
    dp.publish_forecast(db, **_hotspot_case())
    three = dp.hotspots(db, "berlin", hours=3)
    assert three["cell_id"].tolist() == [1001, 1011]
    assert three["congestion_level"].tolist() == ["severe", "heavy"]
    top = three.iloc[0]
    assert top["target_time"] == pd.Timestamp("2024-12-02T08:00Z")
    assert (top["row"], top["col"], top["channel"]) == (0, 1, "m.speed_kmh")
    assert top["congestion_index"] == pytest.approx(0.9)
    assert (top["centroid_lon"], top["centroid_lat"]) == pytest.approx((13.01, 52.0))
    cell_1011 = three.iloc[1]
    assert (cell_1011["congestion_index"], cell_1011["heavy_slots"], cell_1011["horizon"]) == (pytest.approx(0.7), 2, 2)
    # the next 2 hours do not reach horizon 3
    two = dp.hotspots(db, "berlin", hours=2)
    assert two["cell_id"].tolist() == [1011]
    assert dp.hotspots(db, "berlin", hours=3, limit=1)["cell_id"].tolist() == [1001]
    # window start moved to 07:00: horizon 1 of cell 1011 drops out
    later = dp.hotspots(db, "berlin", hours=1, now=pd.Timestamp("2024-12-02T07:00Z"))
    assert later[["cell_id", "heavy_slots"]].values.tolist() == [[1011, 1]]
    assert dp.hotspots(db, "los_angeles").empty


def test_hotspots_view_excludes_cells_without_data(db):
    dp.publish_forecast(db, **_hotspot_case())
    view = dp.read_relation(db, "hotspots")
    assert 1000 not in set(view["cell_id"])
    assert view["congestion_level"].isin(["heavy", "severe"]).all()
    assert view["congestion_index"].is_monotonic_decreasing
    assert sorted(view["cell_id"].tolist()) == [1001, 1011, 1011]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"hours": 0}, "hours"), ({"hours": float("nan")}, "hours"), ({"limit": 0}, "limit"), ({"limit": 2.5}, "limit")],
)
def test_hotspots_rejects_bad_parameters(db, kwargs, match):
    dp.init_db(db)
    with pytest.raises(ValueError, match=match):
        dp.hotspots(db, "berlin", **kwargs)


def test_hotspots_binds_city_as_a_value(db):
    dp.publish_forecast(db, **_hotspot_case())
    with pytest.raises(ValueError, match="city"):
        dp.hotspots(db, "berlin' OR '1'='1")


# ------------------------------------------------------------------ identifiers, readers


@pytest.mark.parametrize(
    "name", ["forecasts; DROP TABLE cells", "pg_catalog.pg_tables", "Forecasts", "duckdb_settings()", ""]
)
def test_identifier_outside_allow_list_is_refused(db, name):
    dp.publish_forecast(db, **make_case().kwargs())
    with pytest.raises(ValueError, match="not allowed; allowed"):
        dp.read_relation(db, name)
    assert len(snapshot(db)["cells"]) == 12


@pytest.mark.parametrize("name", dp.ALLOWED_RELATIONS)
def test_allowed_relations_are_readable(db, name):
    dp.publish_forecast(db, **make_case().kwargs())
    assert "city" in dp.read_relation(db, name, city="berlin").columns
    assert dp.read_relation(db, name, city="los_angeles").empty


def test_readers_need_an_existing_database(db):
    with pytest.raises(FileNotFoundError, match="init_db"):
        dp.hotspots(db, "berlin")
    assert not db.exists()


def test_upsert_cells_replaces_by_cell_id(db):
    case = make_case()
    assert dp.upsert_cells(db, "berlin", case.cells) == 12
    moved = case.cells.iloc[:3].assign(centroid_lon=14.0)
    dp.upsert_cells(db, "berlin", moved)
    cells = snapshot(db)["cells"]
    assert len(cells) == 12
    assert (cells.set_index("cell_id").loc[[1000, 1001, 1002], "centroid_lon"] == 14.0).all()
    with pytest.raises(dp.PublishError, match="repeats cell_id"):
        dp.upsert_cells(db, "berlin", pd.concat([case.cells, case.cells.iloc[:1]]))


def test_writer_waits_for_a_reader_in_another_process(db):
    """DuckDB locks the file per process: publish waits while another process reads."""
    dp.publish_forecast(db, **make_case().kwargs())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); print('open', flush=True); time.sleep(1.5); c.close()",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        t0 = time.monotonic()
        out = dp.publish_forecast(db, **make_case(issued_at="2024-12-03T06:00:00Z").kwargs(), lock_timeout_s=30)
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=30)
    assert out["run_id"] == "berlin_20241203T060000Z"
    assert waited > 0.5
    with pytest.raises(duckdb.IOException, match="lock"):
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); print('open', flush=True); time.sleep(1.0); c.close()",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "open"
            dp.publish_forecast(db, **make_case().kwargs(), lock_timeout_s=0.2)
        finally:
            holder.wait(timeout=30)


# ------------------------------------------------------------------ real data


def test_publish_real_metr_la_speeds(db):
    """METR-LA: 207 sensors as a 9 x 23 grid; reference from six days, 'forecast' = day seven's 07:00-10:00."""
    raw = pd.read_csv(PROJECT_ROOT / "data/samples/la_metr/los_speed.csv")
    times = pd.date_range("2012-03-01", periods=len(raw), freq="5min", tz="America/Los_Angeles")
    kmh = raw.to_numpy(np.float64) * 1.609344
    values = kmh.reshape(len(raw), 1, 9, 23)
    day7 = times >= pd.Timestamp("2012-03-07", tz="America/Los_Angeles")
    mask = np.isfinite(values) & (values > 0)
    mask[:, :, 8, 20:] = False  # three sensors without any reading: must not be hotspots
    reference = reference_stats(values[~day7], mask[~day7], ["metr.speed_kmh"])
    # 15-minute means of 07:00-10:00 on day seven
    sel = day7 & (times.hour >= 7) & (times.hour < 10)
    fc = values[sel].reshape(12, 3, 1, 9, 23).mean(axis=1)
    tt = times[sel][::3].tz_convert("UTC")
    ids = np.array([int(s) for s in raw.columns], dtype=np.int64).reshape(9, 23)
    locs = (
        pd.read_csv(PROJECT_ROOT / "data/samples/la_metr/graph_sensor_locations.csv")
        .set_index("sensor_id")
        .loc[ids.ravel()]
    )
    rows, cols = np.divmod(np.arange(ids.size), 23)
    cells = pd.DataFrame(
        {
            "cell_id": ids.ravel(),
            "row": rows,
            "col": cols,
            "centroid_lon": locs["longitude"].to_numpy(),
            "centroid_lat": locs["latitude"].to_numpy(),
            "polygon_wkt": [f"POINT ({x} {y})" for x, y in zip(locs["longitude"], locs["latitude"], strict=True)],
        }
    )
    out = dp.publish_forecast(
        db,
        city="los_angeles",
        run={
            "model_name": "oracle",
            "model_version": "day7",
            "issued_at": tt[0],
            "data_start": times[0],
            "data_end": times[~day7][-1],
        },
        forecast=fc,
        target_times=tt,
        channels=["metr.speed_kmh"],
        cells=cells,
        cell_ids=ids,
        has_data=mask[~day7].any(axis=0),
        reference=reference,
    )
    assert out["n_rows"] == 12 * 207 and out["n_rows_with_data"] == 12 * 204
    hot = dp.hotspots(db, "los_angeles", hours=3, limit=500)
    assert 0 < len(hot) < 204  # a weekday morning jams some sensors, not all
    assert not set(hot["cell_id"]) & set(ids[8, 20:].tolist())
    assert hot["congestion_index"].between(0.5, 1.0).all() and hot["congestion_index"].is_monotonic_decreasing
    assert hot["target_time"].between(tt[0], tt[-1]).all()
    assert hot["centroid_lat"].between(33.5, 34.5).all()
    # a cell's index is 1 - speed / free flow of that sensor
    first = hot.iloc[0]
    r, c = np.argwhere(ids == first["cell_id"])[0]
    h = int(first["horizon"]) - 1
    assert first["congestion_index"] == pytest.approx(1 - fc[h, 0, r, c] / reference[0, r, c])
