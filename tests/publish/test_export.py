"""Maps of a published run (traffic.publish.export, `traffic export`), from a real published store."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import duckdb
import geopandas as gpd
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import make_case
from PIL import Image

from traffic.cli import main
from traffic.forecast.horizons import HorizonGroup, group_tag, horizon_groups
from traffic.publish import export as ex
from traffic.publish import publish_forecast
from traffic.publish.congestion import LEVELS

H, W, H_OUT = 5, 7, 6  # 35 cells, 1-hour bins, 6 steps: groups 1 h, 2–3 h, 4–6 h
N_CELLS = H * W
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


def publish_case(db, issued_at: str, seed: int):
    case = make_case(issued_at=issued_at, h_out=H_OUT, shape=(H, W), seed=seed)
    case.cells = square_cells(H, W)
    case.has_data[:, 0, :2] = False  # two cells without data in every channel: grey, no level
    return case, publish_forecast(db, **case.kwargs())


@pytest.fixture
def store(db):
    """A catalog with two runs of berlin; the newer one is the default."""
    publish_case(db, "2024-12-01T06:00:00Z", seed=1)
    case, res = publish_case(db, "2024-12-02T06:00:00Z", seed=2)
    assert res["run_id"] == NEWEST
    return db, case


def db_rows(db, run_id: str) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute("SELECT * FROM forecasts WHERE run_id = ? ORDER BY cell_id", [run_id]).df()
    finally:
        con.close()


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
    run, rows = ex.read_run(db, "berlin")
    assert run.run_id == NEWEST and run.horizon_steps == H_OUT and run.bin_seconds == 3600
    assert run.mlflow_run_id == "abc123"
    assert len(rows) == N_CELLS * H_OUT * len(case.channels)
    older, _ = ex.read_run(db, "berlin", OLDER)
    assert older.run_id == OLDER
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
        run, rows = ex.read_run(db, "berlin")
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
    assert len(feats) == N_CELLS * H_OUT * len(case.channels)
    expected = db_rows(db, NEWEST).set_index(["cell_id", "channel", "horizon"])
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
        assert p["congestion_level"] == (row["congestion_level"] if row["has_data"] else None)
        assert p["has_data"] is bool(row["has_data"])
        utc = pd.Timestamp(p["target_time"])
        assert p["target_time"].endswith("Z") and utc == row["target_time"]
        assert pd.Timestamp(p["target_time_local"]) == utc and p["target_time_local"].endswith("+01:00")  # Berlin
        assert p["horizon_group"] == {1: "1 h", 2: "2–3 h", 3: "2–3 h"}.get(p["horizon"], "4–6 h")
    no_data = [f for f in feats if not f["properties"]["has_data"]]
    assert len(no_data) == 2 * H_OUT * len(case.channels)
    assert all(f["properties"]["congestion_index"] is None for f in no_data)
    assert "lower" not in feats[0]["properties"]  # the catalog has no interval yet


def test_lower_and_upper_are_exported_when_the_catalog_has_them(store, tmp_path):
    db, _ = store
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE forecasts ADD COLUMN lower DOUBLE")
    con.execute("ALTER TABLE forecasts ADD COLUMN upper DOUBLE")
    con.execute("UPDATE forecasts SET lower = value - 1, upper = value + 2")
    con.close()
    (path,) = ex.export_run("berlin", "geojson", db_path=db, out=tmp_path)
    assert path == tmp_path / f"{NEWEST}.geojson"
    for f in json.loads(path.read_text())["features"]:
        p = f["properties"]
        assert p["lower"] == pytest.approx(p["value"] - 1) and p["upper"] == pytest.approx(p["value"] + 2)
    (page,) = ex.export_run("berlin", "html", db_path=db, out=tmp_path)
    assert '"lower"' in page.read_text() and '"upper"' in page.read_text()


# ------------------------------------------------------------------ geoparquet


def test_geoparquet_reads_back_with_geopandas_in_wgs84(store, tmp_path):
    db, case = store
    (path,) = ex.export_run("berlin", "geoparquet", db_path=db, out=tmp_path / "m.parquet", channel="t.car")
    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == N_CELLS * H_OUT and set(gdf["channel"]) == {"t.car"}
    assert str(gdf["target_time"].dtype) == "datetime64[us, UTC]"
    assert not gdf.duplicated(["cell_id", "target_time", "channel"]).any()
    cells = case.cells.set_index("cell_id")
    first = gdf[gdf["horizon"] == 1].set_index("cell_id")
    want = gpd.GeoSeries.from_wkt(cells["polygon_wkt"], crs=4326)
    assert first.geometry.sort_index().geom_equals(want.sort_index()).all()
    np.testing.assert_allclose(first["centroid_lon"].sort_index(), cells["centroid_lon"])


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
        assert count_color(px, ex.NO_DATA_COLOR) > 400  # the two cells without data


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
    assert len(data["cells"]) == N_CELLS and data["channels"] == sorted(case.channels)
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
    assert expected["none"] == 2 and expected["heavy"] > 0

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
    assert count_color(px, ex.NO_DATA_COLOR) > 1500 * 2


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
    from traffic.grid import read_grid

    grid = read_grid(los_angeles)
    n_rows, n_cols = int(grid["row"].max()) + 1, int(grid["col"].max()) + 1
    steps, rng = los_angeles.forecast.horizon_steps, np.random.default_rng(3)
    issued = pd.Timestamp("2012-03-08T08:00:00Z")
    path = home / "forecast.npz"
    np.savez_compressed(
        path,
        forecast=rng.uniform(5, 110, (steps, 1, n_rows, n_cols)).astype(np.float32),
        target_times=pd.date_range(issued, periods=steps, freq="15min").as_unit("us").asi8,
        has_data=np.ones((steps, 1, n_rows, n_cols), bool),
        reference=np.full((1, n_rows, n_cols), 100.0, np.float32),
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
    tags = ("h01", "h02-03")  # 15-minute bins, 3 h ahead
    assert res["maps"] == [f"maps/{res['run_id']}_{t}.png" for t in tags]
    assert [a.path for a in client.list_artifacts(run_id, "maps")] == res["maps"]

    with caplog.at_level("WARNING", logger="traffic.publish.export"):
        res = pipeline.publish(los_angeles, {**meta, "mlflow_run_id": "f" * 32})  # no such MLflow run
    assert res["replaced"] and res["n_rows"] == steps * n_rows * n_cols and res["maps"] == []
    assert any("f" * 32 in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
