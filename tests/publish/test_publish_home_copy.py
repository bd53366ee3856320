"""A forecast's meta.json names its file relative to the lake: a copied TRAFFIC_HOME publishes its own."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd

from traffic import lake, pipeline
from traffic.config import load_city


def _write_forecast(c) -> dict:
    """A forecast .npz and meta.json where and as :func:`pipeline.forecast` writes them (real LA grid)."""
    from traffic.grid import read_grid, write_grid

    write_grid(c)  # as the rasterize stage does
    grid = read_grid(c)
    h, w = int(grid["row"].max()) + 1, int(grid["col"].max()) + 1
    issued = pd.Timestamp("2012-03-08T08:00Z")
    h_out = 2
    out = lake.partition("forecasts", city=c.name, issued_at=issued.strftime("%Y%m%dT%H%M%SZ")) / "forecast.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez_compressed(
            fh,
            forecast=np.full((h_out, 1, h, w), 50.0, np.float32),
            target_times=pd.date_range(issued, periods=h_out, freq="15min").as_unit("us").asi8,
            has_data=np.ones((h_out, 1, h, w), bool),
            reference=np.full((1, h, w), 100.0, np.float32),
            cell_ids=np.arange(h * w, dtype=np.int32).reshape(h, w),
            channels=np.array(["metr.speed_kmh"]),
        )
    meta = {
        "city": c.name,
        "issued_at": issued.isoformat(),
        "model_name": "traffic-los_angeles",
        "model_version": "1",
        "mlflow_run_id": None,
        "data_start": "2012-03-07T08:00:00+00:00",
        "data_end": "2012-03-08T07:45:00+00:00",
        "horizon_steps": h_out,
        "bin_seconds": 900,
        "path": pipeline.lake_relative(out),
    }
    lake.write_json(meta, out.parent / "meta.json")
    return meta


def test_meta_json_path_is_relative_and_a_copied_home_publishes_its_own_file(traffic_home, tmp_path, monkeypatch):
    c = load_city("los_angeles")
    meta = _write_forecast(c)
    assert meta["path"] == "forecasts/city=los_angeles/issued_at=20120308T080000Z/forecast.npz"
    copy = tmp_path / "copied-home"
    shutil.copytree(traffic_home, copy)
    shutil.rmtree(traffic_home)
    monkeypatch.setenv("TRAFFIC_HOME", str(copy))
    stored = json.loads(
        (lake.partition("forecasts", city=c.name, issued_at="20120308T080000Z") / "meta.json").read_text()
    )
    assert pipeline.lake_file(stored["path"]) == lake.lake_root() / stored["path"]
    res = pipeline.publish(c, stored)
    assert res["db"] == str(copy / "forecasts.duckdb") and res["n_rows"] > 0


def test_absolute_paths_of_older_runs_still_resolve(tmp_path):
    assert str(pipeline.lake_file(str(tmp_path / "x.npz"))) == str(tmp_path / "x.npz")
    assert pipeline.lake_relative(tmp_path / "elsewhere.npz") == str(tmp_path / "elsewhere.npz")


def test_traffic_publish_publishes_the_stored_forecast_and_forecasts_nothing(traffic_home, capsys):
    """`traffic publish` reads the run the forecast stage stored; there is no model it could forecast with."""
    import duckdb

    from traffic.cli import main

    c = load_city("los_angeles")
    _write_forecast(c)  # issued at local midnight after 2012-03-07: the nightly run of as_of 2012-03-07
    assert main(["publish", c.name, "--as-of", "2012-03-07"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == "los_angeles_20120308T080000Z" and out["n_rows"] > 0
    con = duckdb.connect(out["db"], read_only=True)
    try:
        values = con.execute("SELECT DISTINCT value FROM forecasts").fetchall()
        version = con.execute("SELECT model_version FROM forecast_runs").fetchall()
    finally:
        con.close()
    assert values == [(50.0,)] and version == [("1",)]  # the stored file's numbers, not a new forecast


def test_traffic_publish_without_a_stored_forecast_names_the_partition_and_the_command(traffic_home, capsys):
    from traffic.cli import main

    assert main(["publish", "los_angeles", "--as-of", "2012-03-06"]) == 2
    err = capsys.readouterr().err
    assert "forecasts/city=los_angeles/issued_at=20120307T080000Z" in err
    assert "traffic forecast los_angeles --as-of 2012-03-06" in err
    assert not (traffic_home / "forecasts.duckdb").exists()  # nothing was published
