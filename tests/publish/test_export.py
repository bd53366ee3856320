"""Maps of a published run (traffic.publish.export, `traffic export`), from a real published store."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import geopandas as gpd
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from publish_cases import make_case

from traffic.cli import main
from traffic.forecast.horizons import HorizonGroup, group_tag, horizon_groups
from traffic.publish import export as ex
from traffic.publish import publish_forecast
from traffic.publish.congestion import LEVELS
from traffic.publish.duckdb_publish import connect_catalog

H, W, H_OUT = 5, 7, 6  # 35 cells, 1-hour bins, 6 steps: groups 1 h, 2–3 h, 4–6 h
N_CELLS = H * W
N_EMPTY = 2  # cells without data in any channel: no forecast rows, drawn grey
N_DATA = N_CELLS - N_EMPTY
LON0, LAT0, STEP = 13.3, 52.4, 0.02
NEWEST = "berlin_20241202T060000Z"
OLDER = "berlin_20241201T060000Z"


def square_cells(h: int, w: int) -> pd.DataFrame:
    """Square cells (closed rings, clockwise as a grid writer might give them)."""
    ids = np.arange(h * w, dtype=np.int32) + 1000
    rows, cols = np.divmod(np.arange(h * w), w)
    wkt = []
    for r, c in zip(rows, cols, strict=True):
        x0, y0 = LON0 + STEP * c, LAT0 + STEP * r
        x1, y1 = x0 + STEP, y0 + STEP
        wkt.append(f"POLYGON (({x0} {y0}, {x0} {y1}, {x1} {y1}, {x1} {y0}, {x0} {y0}))")
    return pd.DataFrame(
        {
            "cell_id": ids,
            "row": rows,
            "col": cols,
            "centroid_lon": LON0 + STEP * (cols + 0.5),
            "centroid_lat": LAT0 + STEP * (rows + 0.5),
            "polygon_wkt": wkt,
        }
    )


def publish_case(db, issued_at: str, seed: int, **extra):
    case = make_case(issued_at=issued_at, h_out=H_OUT, shape=(H, W), seed=seed)
    case.cells = square_cells(H, W)
    case.has_data[:, 0, :N_EMPTY] = False  # two cells without data in every channel: no rows, grey, no level
    return case, publish_forecast(db, **case.kwargs(**extra))


@pytest.fixture
def store(db):
    """A catalog with two runs of berlin; the newer one is the default."""
    publish_case(db, "2024-12-01T06:00:00Z", seed=1)
    case, res = publish_case(db, "2024-12-02T06:00:00Z", seed=2)
    assert res["run_id"] == NEWEST
    return db, case


def db_rows(db, run_id: str, relation: str = "forecasts") -> pd.DataFrame:
    con = connect_catalog(db)  # read-only, UTC
    try:
        return con.execute(f"SELECT * FROM {relation} WHERE run_id = ? ORDER BY cell_id", [run_id]).df()
    finally:
        con.close()


def empty_cells(db, run_id: str = NEWEST) -> set[int]:
    cells = db_rows(db, run_id, "run_cells")
    assert len(cells) == N_CELLS
    return set(cells.loc[~cells["has_data"], "cell_id"].tolist())


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ horizon groups


def test_horizon_groups_day_ahead_hourly():
    groups = horizon_groups(3600, 24)
    assert [g.label for g in groups] == ["1 h", "2–3 h", "4–6 h", "7–12 h", "13–24 h"]
    assert [(g.steps.start, g.steps.stop) for g in groups] == [(0, 1), (1, 3), (3, 6), (6, 12), (12, 24)]
    assert [group_tag(g.label) for g in groups] == ["h01", "h02-03", "h04-06", "h07-12", "h13-24"]


@pytest.mark.parametrize(
    ("bin_seconds", "steps", "expected"),
    [
        (900, 12, [("1 h", 0, 4), ("2–3 h", 4, 12)]),  # Los Angeles: 15-minute bins, 3 h
        (3600, 3, [("1 h", 0, 1), ("2–3 h", 1, 3)]),  # Berlin: hourly, 3 h
        (7200, 3, [("2–3 h", 0, 1), ("4–6 h", 1, 3)]),  # 2-hour bins: no "1 h" band
        (
            3600,
            30,
            [
                ("1 h", 0, 1),
                ("2–3 h", 1, 3),
                ("4–6 h", 3, 6),
                ("7–12 h", 6, 12),
                ("13–24 h", 12, 24),
                ("25–48 h", 24, 30),
            ],
        ),
    ],
)
def test_horizon_groups_cover_every_step_once(bin_seconds, steps, expected):
    groups = horizon_groups(bin_seconds, steps)
    assert groups == [HorizonGroup(label, slice(a, b)) for label, a, b in expected]
    covered = [i for g in groups for i in range(steps)[g.steps]]
    assert covered == list(range(steps))


@pytest.mark.parametrize(("bin_seconds", "steps"), [(0, 3), (3600, 0), (3600, 2.5), (True, 3)])
def test_horizon_groups_refuse_non_positive_integers(bin_seconds, steps):
    with pytest.raises(ValueError, match="must be a positive integer"):
        horizon_groups(bin_seconds, steps)


# ------------------------------------------------------------------ reading


def test_read_run_defaults_to_newest_and_leaves_the_catalog_untouched(store):
    db, case = store
    before = digest(db)
    run, rows, cells = ex.read_run(db, "berlin")
    assert run.run_id == NEWEST and run.horizon_steps == H_OUT and run.bin_seconds == 3600
    assert run.mlflow_run_id == "abc123" and run.channels == tuple(sorted(case.channels))
    assert run.target_times()[0] == pd.Timestamp("2024-12-02T06:00:00Z") and len(run.target_times()) == H_OUT
    # only the published rows (cells with data); every grid cell, with or without data
    assert len(rows) == N_DATA * H_OUT * len(case.channels) == len(db_rows(db, NEWEST))
    assert set(rows.columns) == set(ex.ROW_COLUMNS) and rows["has_data"].all()
    assert rows["lower"].isna().all() and rows["upper"].isna().all()  # published without bounds
    assert len(cells) == N_CELLS and sorted(cells["cell_id"]) == sorted(case.cells["cell_id"])
    assert set(cells.loc[~cells["has_data"], "cell_id"]) == empty_cells(db) == {1000, 1001}
    assert not set(rows["cell_id"]) & empty_cells(db)
    older, _, older_cells = ex.read_run(db, "berlin", OLDER)
    assert older.run_id == OLDER and len(older_cells) == N_CELLS
    assert digest(db) == before  # read-only


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"city": "paris"}, r"unknown city 'paris' .*cities with a published run: berlin"),
        ({"city": "berlin", "run_id": "berlin_x"}, rf"unknown run 'berlin_x' .*newest first: {NEWEST}, {OLDER}"),
        ({"city": "berlin", "channel": "bus"}, r"unknown channel 'bus' .*channels: m.speed_kmh, t.car"),
    ],
)
def test_read_run_names_the_unknown_value_and_lists_the_allowed(store, kwargs, pattern):
    with pytest.raises(ex.ExportError, match=pattern):
        ex.read_run(store[0], **kwargs)


def test_read_run_is_not_blocked_by_an_analyst_session_held_open(store):
    db, _ = store
    code = (
        f"import duckdb, time; c = duckdb.connect({str(db)!r}, read_only=True); "
        "c.execute('SELECT count(*) FROM latest_forecast').fetchall(); print('open', flush=True); time.sleep(1.5)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        run, rows, _ = ex.read_run(db, "berlin")
        assert run.run_id == NEWEST and len(rows) > 0
    finally:
        holder.wait(timeout=30)


# ------------------------------------------------------------------ geojson


def ring_area(ring) -> float:
    x, y = np.asarray(ring).T
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def test_geojson_is_rfc7946_with_values_levels_and_local_times(store, tmp_path):
    db, case = store
    (path,) = ex.export_run("berlin", "geojson", db_path=db, out=tmp_path / "m.geojson")
    fc = json.loads(path.read_text())
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    feats = fc["features"]
    # one feature per published row, and no feature for a cell without data
    expected = db_rows(db, NEWEST).set_index(["cell_id", "channel", "horizon"])
    assert len(feats) == len(expected) == N_DATA * H_OUT * len(case.channels)
    keys = {(f["properties"]["cell_id"], f["properties"]["channel"], f["properties"]["horizon"]) for f in feats}
    assert keys == set(expected.index)
    assert not {f["properties"]["cell_id"] for f in feats} & empty_cells(db)
    for f in feats:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        (ring,) = f["geometry"]["coordinates"]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed
        assert ring_area(ring) > 0  # exterior counter-clockwise (right-hand rule)
        lons, lats = np.asarray(ring).T
        # lon/lat order: the test grid lies at 13.3-13.44 E, 52.4-52.5 N
        assert ((lons >= LON0 - 1e-9) & (lons <= LON0 + STEP * W + 1e-9)).all()
        assert ((lats >= LAT0 - 1e-9) & (lats <= LAT0 + STEP * H + 1e-9)).all()
        assert f["bbox"] == [lons.min(), lats.min(), lons.max(), lats.max()]
        p = f["properties"]
        row = expected.loc[(p["cell_id"], p["channel"], p["horizon"])]
        assert p["run_id"] == NEWEST and p["value"] == pytest.approx(row["value"])
        sc = ex.channel_scale(p["channel"])  # congestion for the speed channel, volume for the count channel
        other = "volume" if sc.measure == "congestion" else "congestion"
        assert p[sc.index] == pytest.approx(row[sc.index])
        assert p[sc.level] == row[sc.level] and p[sc.level] in sc.levels
        assert p[f"{other}_index"] is None and p[f"{other}_level"] is None
        assert p["has_data"] is True
        assert p["lower"] is None and p["upper"] is None  # the run was published without bounds
        utc = pd.Timestamp(p["target_time"])
        assert p["target_time"].endswith("Z") and utc == row["target_time"]
        assert pd.Timestamp(p["target_time_local"]) == utc and p["target_time_local"].endswith("+01:00")  # Berlin
        assert p["horizon_group"] == {1: "1 h", 2: "2–3 h", 3: "2–3 h"}.get(p["horizon"], "4–6 h")


def test_lower_and_upper_are_exported_and_null_values_and_bounds_are_tolerated(db, tmp_path):
    case = make_case(issued_at="2024-12-03T06:00:00Z", h_out=H_OUT, shape=(H, W), seed=4)
    forecast = case.forecast.copy()
    forecast[2, 1, 3, 4] = np.nan  # the model gave no value: a row with NULL value, bounds, index and level
    case.forecast = forecast
    case.cells = square_cells(H, W)
    case.has_data[:, 0, :N_EMPTY] = False
    publish_forecast(db, **case.kwargs(lower=forecast - 1, upper=forecast + 2))
    run_id = "berlin_20241203T060000Z"
    (path,) = ex.export_run("berlin", "geojson", db_path=db, out=tmp_path)
    assert path == tmp_path / f"{run_id}.geojson"
    feats = json.loads(path.read_text())["features"]
    assert len(feats) == len(db_rows(db, run_id)) == N_DATA * H_OUT * len(case.channels)
    nulls = [f["properties"] for f in feats if f["properties"]["value"] is None]
    assert [(p["cell_id"], p["channel"], p["horizon"]) for p in nulls] == [(1000 + 3 * W + 4, "m.speed_kmh", 3)]
    assert all(p[k] is None for p in nulls for k in ("lower", "upper", "congestion_index", "congestion_level"))
    for f in feats:
        p = f["properties"]
        if p["value"] is not None:
            assert p["lower"] == pytest.approx(p["value"] - 1) and p["upper"] == pytest.approx(p["value"] + 2)
    (page,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path)
    data = html_data(page.read_text())
    assert data["fields"] == ["value", "lower", "upper", "index", "level"]
    speed = data["data"]["m.speed_kmh"]
    i = [c[0] for c in data["cells"]].index(1000 + 3 * W + 4)
    assert speed["value"][2][i] is None and speed["lower"][2][i] is None and speed["level"][2][i] is None
    j = [c[0] for c in data["cells"]].index(1000 + 3 * W + 5)
    assert speed["upper"][2][j] == pytest.approx(speed["value"][2][j] + 2, abs=2e-3)
    gdf = gpd.read_parquet(ex.export_run("berlin", "geoparquet", db_path=db, out=tmp_path)[0])
    assert gdf["lower"].isna().sum() == 1 and (gdf["upper"] - gdf["value"]).dropna().round(9).eq(2).all()


# ------------------------------------------------------------------ geoparquet


def test_geoparquet_reads_back_with_geopandas_in_wgs84(store, tmp_path):
    db, case = store
    (path,) = ex.export_run("berlin", "geoparquet", db_path=db, out=tmp_path / "m.parquet", channel="t.car")
    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == N_DATA * H_OUT and set(gdf["channel"]) == {"t.car"}
    assert str(gdf["target_time"].dtype) == "datetime64[us, UTC]"
    assert not gdf.duplicated(["cell_id", "target_time", "channel"]).any()
    assert not set(gdf["cell_id"]) & empty_cells(db)  # no feature for a cell without data
    want_rows = db_rows(db, NEWEST).query("channel == 't.car'").set_index(["cell_id", "horizon"]).sort_index()
    got = gdf.set_index(["cell_id", "horizon"]).sort_index()
    assert got.index.equals(want_rows.index)
    np.testing.assert_allclose(got["value"], want_rows["value"])
    np.testing.assert_allclose(got["volume_index"], want_rows["volume_index"])  # a count: its volume index
    assert (got["volume_level"] == want_rows["volume_level"]).all() and got["congestion_level"].isna().all()
    assert got["lower"].isna().all() and got["upper"].isna().all()
    cells = case.cells.set_index("cell_id").drop(index=sorted(empty_cells(db)))
    first = gdf[gdf["horizon"] == 1].set_index("cell_id")
    want = gpd.GeoSeries.from_wkt(cells["polygon_wkt"], crs=4326)
    assert first.geometry.sort_index().geom_equals(want.sort_index()).all()
    np.testing.assert_allclose(first["centroid_lon"].sort_index(), cells["centroid_lon"].sort_index())


# ------------------------------------------------------------------ png


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)


def count_color(px: np.ndarray, hex_color: str) -> int:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((px == rgb).all(axis=1).sum())


def test_png_one_map_per_horizon_group_coloured_by_worst_level(store, tmp_path):
    db, _ = store
    paths = ex.export_run("berlin", "png", db_path=db, out=tmp_path / "maps", channel="m.speed_kmh")
    assert [p.name for p in paths] == [f"{NEWEST}_m.speed_kmh_{tag}.png" for tag in ("h01", "h02-03", "h04-06")]
    rows = db_rows(db, NEWEST)
    rows = rows[rows["channel"] == "m.speed_kmh"]
    for path, steps in zip(paths, ((1,), (2, 3), (4, 5, 6)), strict=True):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as im:
            im.verify()
        worst = rows[rows["horizon"].isin(steps)].groupby("cell_id")["congestion_index"].max()
        levels = set(np.array(LEVELS)[np.digitize(worst.dropna(), (0.25, 0.5, 0.75))])
        px = pixels(path)
        for lv in LEVELS:  # legend swatches aside, a level colour fills cells only when some cell has it
            n = count_color(px, ex.LEVEL_COLORS[lv])
            assert (n > 400) == (lv in levels), (path.name, lv, n)
        assert count_color(px, ex.NO_DATA_COLOR) > 400  # the two cells without data (no rows) are drawn grey


# ------------------------------------------------------------------ html

CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def html_data(text: str) -> dict:
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S)
    assert m, "no inline data"
    return json.loads(m.group(1))


def test_html_is_self_contained(store, tmp_path):
    db, case = store
    (path,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path / "m.html")
    text = path.read_text()
    for needle in ("http://", "https://", "src=", "href=", "<link", "url(", "@import", "//cdn", "@font-face"):
        assert needle not in text.lower(), needle
    data = html_data(text)
    # every grid cell is in the page, those without data too (no level)
    assert len(data["cells"]) == N_CELLS and data["channels"] == sorted(case.channels)
    assert sorted(c[0] for c in data["cells"]) == sorted(case.cells["cell_id"])
    empty = [i for i, c in enumerate(data["cells"]) if c[0] in empty_cells(db)]
    assert len(empty) == N_EMPTY
    for ch in data["data"].values():
        assert all(ch["level"][t][i] is None and ch["value"][t][i] is None for t in range(H_OUT) for i in empty)
    rows = db_rows(db, NEWEST).set_index(["channel", "horizon", "cell_id"])
    for ch, entry in data["data"].items():  # values equal to the catalog's rows
        for t in range(H_OUT):
            for i, c in enumerate(data["cells"]):
                if (ch, t + 1, c[0]) in rows.index:
                    r = rows.loc[(ch, t + 1, c[0])]
                    assert entry["value"][t][i] == pytest.approx(r["value"], abs=1e-3)
                    sc = ex.channel_scale(ch)
                    assert data["scales"][ch]["levels"][entry["level"][t][i]] == r[sc.level]
                    assert entry["index"][t][i] == pytest.approx(r[sc.index], abs=1e-3)
    assert len(data["times"]) == H_OUT and data["times"][0] == "2024-12-02T07:00:00+01:00"
    assert data["groups"] == ["1 h", "2–3 h", "2–3 h", "4–6 h", "4–6 h", "4–6 h"]
    assert all(len(m) == N_CELLS for ch in data["data"].values() for m in ch["level"])


def chromium(args: list[str], profile) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    cmd += ["--virtual-time-budget=3000", "--window-size=900,700", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_html_draws_every_cell_in_a_real_browser(store, tmp_path):
    db, _ = store
    (path,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path / "m.html")
    data = html_data(path.read_text())
    first = data["data"][data["channels"][0]]["level"][0]  # what is drawn on opening
    expected = {lv: sum(code == i for code in first) for i, lv in enumerate(LEVELS)}
    expected["none"] = sum(code is None for code in first)
    assert expected["none"] == N_EMPTY and expected["heavy"] > 0  # the two cells without data: grey

    dom = chromium(["--dump-dom", path.as_uri()], tmp_path / "profile").stdout
    svg = re.search(r'<svg id="map".*?</svg>', dom, re.S)  # the map as the script left it
    assert svg, "no map in the DOM"
    assert len(re.findall(r"<polygon\b", svg.group(0))) == N_CELLS
    drawn = {lv: len(re.findall(rf'data-level="{lv}"', svg.group(0))) for lv in expected}
    assert drawn == expected
    assert f"drawn {N_CELLS} cells" in dom

    # hovering a cell shows its values and level: dispatch the event the way a mouse would
    hover = tmp_path / "hover.html"
    probe = '<script>document.querySelectorAll("#map polygon")[9].dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));</script>'
    hover.write_text(path.read_text().replace("</body>", probe + "</body>"))
    info = re.search(
        r'<div id="info">(.*?)</div>', chromium(["--dump-dom", hover.as_uri()], tmp_path / "profile").stdout, re.S
    )
    assert info, "no info panel"
    lv = first[9]
    assert f"cell {data['cells'][9][0]} (row 1, col 2)" in info.group(1)
    assert f"level: {LEVELS[lv] if lv is not None else 'no data'}" in info.group(1)
    assert "value: " in info.group(1) and "Mon 2024-12-02 07:00 CET" in info.group(1)

    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", path.as_uri()], tmp_path / "profile")
    px = pixels(shot)
    heavy = count_color(px, ex.LEVEL_COLORS["heavy"])
    # each cell is ~60 x 90 px on the 640 x 520 map: many pixels per heavy cell, not just the legend swatch
    assert heavy > 1500 * expected["heavy"], heavy
    assert count_color(px, ex.NO_DATA_COLOR) > 1500 * N_EMPTY


# ------------------------------------------------------------------ cli


def test_cli_exports_the_newest_run_by_default(store, home, capsys):
    assert main(["export", "berlin", "--format", "geojson"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(home / "exports" / f"{NEWEST}.geojson")]
    assert main(["export", "berlin", "--run", OLDER, "--format", "png", "--out", str(home / "png")]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    assert sorted(p.name for p in (home / "png").iterdir())[0] == f"{OLDER}_h01.png"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["paris", "--format", "html"], "unknown city 'paris' in"),
        (["berlin", "--format", "pdf"], "unknown format 'pdf'; formats: geojson, geoparquet, png, html"),
        (["berlin", "--run", "x", "--format", "png"], "unknown run 'x' of berlin in"),
        (["berlin", "--channel", "bus", "--format", "html"], "unknown channel 'bus' in run"),
    ],
)
def test_cli_refuses_unknown_values_with_one_line_and_exit_2(store, capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        main(["export", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


# ------------------------------------------------------------------ mlflow


def test_published_maps_are_logged_to_the_mlflow_run_and_failures_only_warn(store, tmp_path, caplog):
    db, _ = store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("traffic-berlin", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    logged = ex.log_published_maps(db, "berlin", NEWEST, run_id, out_dir=tmp_path / "maps", tracking_uri=uri)
    names = [f"maps/{NEWEST}_{tag}.png" for tag in ("h01", "h02-03", "h04-06")]
    assert logged == names
    assert sorted(a.path for a in client.list_artifacts(run_id, "maps")) == names

    with caplog.at_level("WARNING", logger="traffic.publish.export"):
        assert ex.log_published_maps(db, "berlin", NEWEST, "0" * 32, out_dir=tmp_path / "m2", tracking_uri=uri) == []
        assert ex.log_published_maps(db, "berlin", "berlin_nope", run_id, tracking_uri=uri) == []
        assert ex.log_published_maps(db, "berlin", NEWEST, None, tracking_uri=uri) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and "0" * 32 in warnings[0] and "berlin_nope" in warnings[1]


def test_pipeline_publish_logs_the_maps_and_a_failure_never_fails_it(home, los_angeles, caplog):
    """`traffic.pipeline.publish` on the real Los Angeles grid: maps per group in MLflow, or a warning."""
    from traffic import pipeline
    from traffic.config import mlflow_uri
    from traffic.grid import read_grid, write_grid

    write_grid(los_angeles)  # as the rasterize stage does
    grid = read_grid(los_angeles)
    n_rows, n_cols = int(grid["row"].max()) + 1, int(grid["col"].max()) + 1
    steps, rng = los_angeles.forecast.horizon_steps, np.random.default_rng(3)
    issued = pd.Timestamp("2012-03-08T08:00:00Z")
    path = home / "forecast.npz"
    shape = (steps, len(los_angeles.channels), n_rows, n_cols)
    forecast = rng.uniform(5, 110, shape).astype(np.float32)
    has_data = np.ones(shape, bool)  # (H_out, C, H, W), as pipeline.forecast writes it
    has_data[:, :, 0, :3] = False  # three cells never observed: no rows, grey on the maps
    coverage = np.where(has_data[0], 0.9, 0.0).astype(np.float32)
    np.savez_compressed(  # the keys pipeline.forecast writes
        path,
        forecast=forecast,
        lower=forecast * np.float32(0.8),
        upper=forecast * np.float32(1.2),
        target_times=pd.date_range(issued, periods=steps, freq="15min").as_unit("us").asi8,
        has_data=has_data,
        coverage=coverage,
        reference=np.full(shape[1:], 100.0, np.float32),
        cell_ids=grid["cell_id"].to_numpy().reshape(n_rows, n_cols),
        channels=np.array(list(los_angeles.channels)),
    )
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri())
    run_id = client.create_run(client.create_experiment("traffic-los_angeles")).info.run_id
    meta = {
        "issued_at": issued.isoformat(),
        "model_name": "traffic-los_angeles",
        "model_version": "1",
        "mlflow_run_id": run_id,
        "data_start": (issued - pd.Timedelta("3h")).isoformat(),
        "data_end": (issued - pd.Timedelta("15min")).isoformat(),
        "horizon_steps": steps,
        "bin_seconds": 900,
        "path": str(path),
    }
    res = pipeline.publish(los_angeles, meta)
    # 15-minute bins, a day ahead by default: one map per horizon group (h01, h02-03, ..., h13-24)
    tags = [group_tag(g.label) for g in horizon_groups(900, steps)]
    assert tags[:2] == ["h01", "h02-03"]
    assert res["maps"] == [f"maps/{res['run_id']}_{t}.png" for t in tags]
    assert [a.path for a in client.list_artifacts(run_id, "maps")] == res["maps"]
    n_data = n_rows * n_cols - 3
    assert res["n_rows"] == steps * n_data and res["n_cells"] == n_rows * n_cols and res["n_cells_with_data"] == n_data
    _, rows, cells = ex.read_run(None, "los_angeles", res["run_id"])
    assert len(cells) == n_rows * n_cols and (~cells["has_data"]).sum() == 3
    np.testing.assert_allclose(rows["upper"] / rows["value"], 1.2, rtol=1e-5)

    with caplog.at_level("WARNING", logger="traffic.publish.export"):
        res = pipeline.publish(los_angeles, {**meta, "mlflow_run_id": "f" * 32})  # no such MLflow run
    assert res["replaced"] and res["n_rows"] == steps * n_data and res["maps"] == []
    assert any("f" * 32 in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# ------------------------------------------------------------------ a channel without data


def test_a_channel_without_any_data_gives_grey_maps_and_no_features(db, tmp_path):
    case = make_case(issued_at="2024-12-04T06:00:00Z", h_out=H_OUT, shape=(H, W), seed=5)
    case.cells = square_cells(H, W)
    case.has_data[1] = False  # m.speed_kmh observed nowhere: the run has no row of it
    publish_forecast(db, **case.kwargs())
    assert set(db_rows(db, "berlin_20241204T060000Z")["channel"]) == {"t.car"}
    (path,) = ex.export_run("berlin", "geojson", db_path=db, out=tmp_path, channel="m.speed_kmh")
    assert json.loads(path.read_text()) == {"type": "FeatureCollection", "features": []}
    (pq_path,) = ex.export_run("berlin", "geoparquet", db_path=db, out=tmp_path, channel="m.speed_kmh")
    assert len(gpd.read_parquet(pq_path)) == 0
    pngs = ex.export_run("berlin", "png", db_path=db, out=tmp_path / "png", channel="m.speed_kmh")
    assert len(pngs) == 3  # one per horizon group, every cell grey
    for png in pngs:
        px = pixels(png)
        assert count_color(px, ex.NO_DATA_COLOR) > 400 * N_CELLS
        assert all(count_color(px, ex.LEVEL_COLORS[lv]) < 400 for lv in LEVELS)  # legend swatches only
    (page,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path, channel="m.speed_kmh")
    data = html_data(page.read_text())
    assert data["channels"] == ["m.speed_kmh"] and len(data["cells"]) == N_CELLS
    assert all(v is None for m in data["data"]["m.speed_kmh"]["level"] for v in m)


# ------------------------------------------------------------------ maps with a place


def berlin_segments_case(db, home):
    """Berlin's shipped Telraam segments in the test lake, under a 0.04° grid over them, one run published.

    Every cell's speed is at 30 % of free flow at the first target (heavy), its count at its usual peak.
    """
    from traffic.config import load_city
    from traffic.ingest import ingest_registry
    from traffic.lake import Lake

    berlin = load_city("berlin")
    lake = Lake(home / "lake")
    ingest_registry(berlin, berlin.feed("telraam"), lake=lake)
    h, w, lon0, lat0, step = 12, 16, 13.1, 52.35, 0.04
    case = make_case(issued_at="2024-12-02T06:00:00Z", h_out=2, shape=(h, w), seed=5)
    ids = np.arange(h * w, dtype=np.int32) + 1000
    rows, cols = np.divmod(np.arange(h * w), w)
    x0, y0 = lon0 + step * cols, lat0 + step * rows
    case.cells = pd.DataFrame(
        {
            "cell_id": ids,
            "row": rows,
            "col": cols,
            "centroid_lon": x0 + step / 2,
            "centroid_lat": y0 + step / 2,
            "polygon_wkt": [
                f"POLYGON (({a} {b}, {a + step} {b}, {a + step} {b + step}, {a} {b + step}, {a} {b}))"
                for a, b in zip(x0, y0, strict=True)
            ],
        }
    )
    fc = case.forecast.copy()
    fc[:, 0] = 100.0  # t.car at the cells' p95: volume index 1, peak
    fc[:, 1] = 50.0
    fc[0, 1] = 15.0  # m.speed_kmh 15 of 50 km/h at the first target: index 0.7, heavy
    publish_forecast(db, **case.kwargs(forecast=fc))
    return lake


def test_maps_draw_berlins_street_segments_coloured_with_names_scale_and_north(db, home, tmp_path):
    lake = berlin_segments_case(db, home)
    (path,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path / "m.html", lake=lake)
    data = html_data(path.read_text())
    lines = [s for s in data["sources"] if s[3] == "line"]
    assert len(lines) > 128  # every segment, cut into one piece per cell it crosses
    assert {s[0] for s in lines} == {"telraam"} and all(s[4] is not None for s in lines)
    named = {s[1]: s[2] for s in lines}
    assert named["9000001786"] == "Dörpfeldstraße"  # the README's segment, by its OSM name
    assert data["scales"]["m.speed_kmh"]["measure"] == "congestion"
    assert data["scales"]["t.car"] == {
        "measure": "volume",
        "levels": list(ex.VOLUME_COLORS),
        "colors": list(ex.VOLUME_COLORS.values()),
    }
    text = path.read_text()
    for needle in ('id="scalebar"', 'id="north"', "°E", "°N"):
        assert needle in text, needle
    for needle in ("http://", "https://", "src=", "href=", "<link", "url(", "//cdn"):
        assert needle not in text.lower(), needle

    pngs = ex.export_run("berlin", "png", db_path=db, out=tmp_path / "png", channel="m.speed_kmh", lake=lake)
    first, later = pixels(pngs[0]), pixels(pngs[1])  # the first hour every segment is heavy, then free
    heavy = count_color(first, ex.LEVEL_COLORS["heavy"]) - count_color(later, ex.LEVEL_COLORS["heavy"])
    free = count_color(later, ex.LEVEL_COLORS["free"]) - count_color(first, ex.LEVEL_COLORS["free"])
    assert heavy > 100 and free > 100, (heavy, free)  # the segments' strokes, beyond the legend swatches


def test_a_registry_without_street_names_shows_ids(db, home):
    from traffic.config import load_city
    from traffic.grid.assign import read_lake_registry

    lake = berlin_segments_case(db, home)
    berlin = load_city("berlin")
    reg, _ = read_lake_registry(berlin, "telraam", lake=lake)
    cells = ex.cells_geodataframe(ex.read_run(db, "berlin")[2])
    assert ex.read_sources("berlin", cells, lake)["name"].notna().any()
    reg["attributes"] = "{}"  # a registry without names
    from traffic.lake import write_geoparquet

    write_geoparquet(reg, lake.partition("registry", city="berlin", feed="telraam") / "registry.parquet")
    src = ex.read_sources("berlin", cells, lake)
    assert len(src) > 128 and src["name"].isna().all()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_berlins_segments_are_drawn_and_hovered_in_a_real_browser(db, home, tmp_path):
    lake = berlin_segments_case(db, home)
    (path,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path / "m.html", lake=lake)
    data = html_data(path.read_text())
    first = data["channels"][0]
    dom = chromium(["--dump-dom", path.as_uri()], tmp_path / "profile").stdout
    svg = re.search(r'<svg id="map".*?</svg>', dom, re.S)
    assert svg and len(re.findall(r'<polyline class="src"', svg.group(0))) == len(data["sources"])
    assert f"{len(data['sources'])} sources" in dom
    j = next(j for j, s in enumerate(data["sources"]) if s[1] == "9000001786")
    hover = tmp_path / "hover.html"
    probe = (
        f"<script>document.querySelector('#map [data-s=\"{j}\"]')"
        '.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));</script>'
    )
    hover.write_text(path.read_text().replace("</body>", probe + "</body>"))
    info = re.search(
        r'<div id="info">(.*?)</div>', chromium(["--dump-dom", hover.as_uri()], tmp_path / "p2").stdout, re.S
    )
    assert info and "segment 9000001786 · Dörpfeldstraße (feed telraam)" in info.group(1), info
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", path.as_uri()], tmp_path / "profile")
    scale = data["scales"][first]
    assert count_color(pixels(shot), scale["colors"][-1 if scale["measure"] == "volume" else 2]) > 500
