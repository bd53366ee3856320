"""`traffic hotspots`, `traffic sql` and pipeline.publish on the swapped catalog."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from publish_cases import make_case, metr_la_case

from traffic.cli import main
from traffic.publish import duckdb_publish as dp

LEVEL_WORDS = re.compile(r"\b(moderate|heavy|severe)\b")


@pytest.fixture
def la(db):
    dp.publish_forecast(db, **metr_la_case())
    return db


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_hotspots_cli_lists_cells_moderate_or_worse_one_line_each(la, capsys):
    code, out, err = run_cli(capsys, "hotspots", "los_angeles", "--at", "2012-03-07 07:00", "--hours", "3")
    assert code == 0, err
    lines = out.splitlines()
    head = lines[0]
    assert head.startswith("run los_angeles_20120307T150000Z (model oracle day7, model, nightly;")
    assert "issued 2012-03-07 07:00 PST" in head and "window 2012-03-07 07:00 .. 2012-03-07 10:00 PST" in head
    assert not LEVEL_WORDS.search(head)
    leveled = [ln for ln in lines if LEVEL_WORDS.search(ln)]
    assert len(leveled) == 20  # --limit default, one line per cell
    assert any(re.search(r"\b(heavy|severe)\b", ln) for ln in leveled)
    assert "lower" in lines[1] and "upper" in lines[1] and "local_time" in lines[1]
    ids = [int(ln.split()[0]) for ln in lines[2:]]
    assert len(set(ids)) == len(ids)
    assert all(re.search(r"2012-03-07 (0[7-9]):\d\d", ln) for ln in lines[2:])  # local times
    # an ISO time with offset is the same instant
    code, out2, _ = run_cli(capsys, "hotspots", "los_angeles", "--at", "2012-03-07T15:00:00+00:00", "--hours", "3")
    assert code == 0 and out2 == out
    # default time: the start of the newest run (no run covers wall-clock now)
    code, out3, _ = run_cli(capsys, "hotspots", "los_angeles", "--hours", "3", "--limit", "500")
    assert code == 0 and out3.splitlines()[0].rsplit(";", 1)[0] == head.rsplit(";", 1)[0]
    assert out3.splitlines()[0].endswith("; 94 cells by congestion (speeds), worst first")
    assert len([ln for ln in out3.splitlines() if LEVEL_WORDS.search(ln)]) > 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--at", "2012-03-09 07:00"],
            "outside every los_angeles run; runs cover [start, end): 2012-03-07 07:00 PST ..",
        ),
        (["--at", "tomorrow morning"], "is not a time"),
        (["--channel", "metr.count"], "allowed: ['metr.speed_kmh']"),
        (["--hours", "0"], "0 < hours <= 744"),
        (["--hours", "-2"], "0 < hours <= 744"),
        (["--hours", "three"], "0 < hours <= 744"),
        (["--hours", "nan"], "0 < hours <= 744"),
        (["--hours", "inf"], "0 < hours <= 744"),
        (["--hours", "3e9"], "0 < hours <= 744"),
        (["--limit", "0"], "1 <= limit <= 100000"),
        (["--limit", "10000000000"], "1 <= limit <= 100000"),
        (["--limit", "ten"], "1 <= limit <= 100000"),
    ],
)
def test_hotspots_cli_bad_input_is_one_line_and_exit_2(la, capsys, argv, message):
    code, out, err = run_cli(capsys, "hotspots", "los_angeles", *argv)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err


def test_hotspots_cli_city_without_runs_lists_the_cities_that_have_them(la, capsys):
    code, _, err = run_cli(capsys, "hotspots", "berlin")
    assert code == 2 and "'berlin' has no published run; cities with runs: ['los_angeles']" in err


def test_hotspots_cli_without_a_catalog(home, capsys):
    code, _, err = run_cli(capsys, "hotspots", "berlin")
    assert code == 2 and "no forecast catalog" in err and len(err.strip().splitlines()) == 1


def test_sql_cli_runs_a_query_read_only(la, capsys):
    q = "SELECT city, count(*) AS n, count(lower) AS with_bounds FROM latest_forecast GROUP BY city"
    code, out, err = run_cli(capsys, "sql", q)
    assert code == 0, err
    assert out.split() == ["city", "n", "with_bounds", "los_angeles", "2448", "2448"]
    code, _, err = run_cli(capsys, "sql", "DELETE FROM forecast_runs")
    assert code == 2 and "read-only" in err.lower() and len(err.strip().splitlines()) == 1
    assert len(dp.read_relation(la, "forecast_runs")) == 1


def test_sql_cli_reads_statements_from_stdin(la, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 41 + 1 AS answer;\nSELECT run_id FROM forecast_runs;\n"))
    code, out, err = run_cli(capsys, "sql")
    assert code == 0, err
    assert out.split() == ["answer", "42", "run_id", "los_angeles_20120307T150000Z"]
    monkeypatch.setattr("sys.stdin", io.StringIO("SELEC nonsense"))
    code, out, err = run_cli(capsys, "sql")
    assert code == 2 and "syntax error" in err.lower() and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ pipeline.publish


def _forecast_files(home, *, with_new_keys: bool) -> dict:
    """A forecast .npz + meta.json as pipeline.forecast writes them, on the real LA grid."""
    from traffic.config import load_city
    from traffic.grid import read_grid, write_grid

    c = load_city("los_angeles")
    write_grid(c)  # as the rasterize stage does
    grid = read_grid(c)
    h, w = int(grid["row"].max()) + 1, int(grid["col"].max()) + 1
    rng = np.random.default_rng(0)
    h_out = 4
    issued = pd.Timestamp("2012-03-08T08:00Z")
    fc = rng.uniform(10, 110, (h_out, 1, h, w)).astype(np.float32)
    has = np.zeros((h_out, 1, h, w), bool)
    has[:, :, : h // 2] = True  # the southern half observed
    ref = np.full((1, h, w), 100.0, np.float32)
    arrays = {
        "forecast": fc,
        "target_times": pd.date_range(issued, periods=h_out, freq="15min").as_unit("us").asi8,
        "has_data": has,
        "reference": ref,
        "cell_ids": (np.arange(h * w, dtype=np.int32)).reshape(h, w),
        "channels": np.array(["metr.speed_kmh"]),
    }
    meta = {
        "city": "los_angeles",
        "issued_at": issued.isoformat(),
        "model_name": "traffic-los_angeles",
        "model_version": "1",
        "mlflow_run_id": "r1",
        "data_start": "2012-03-07T08:00:00+00:00",
        "data_end": "2012-03-08T07:45:00+00:00",
        "horizon_steps": h_out,
        "bin_seconds": 900,
    }
    if with_new_keys:
        arrays |= {"lower": fc * 0.9, "upper": fc * 1.1, "coverage": has[0].astype(np.float32) * 0.5}
        meta |= {"model_kind": "gbm", "kind": "refresh", "interval_level": 0.8, "interval_method": "conformal"}
    out = home / "fc" / ("new" if with_new_keys else "old")
    out.mkdir(parents=True)
    np.savez_compressed(out / "forecast.npz", **arrays)
    meta["path"] = str(out / "forecast.npz")
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


@pytest.mark.parametrize("with_new_keys", [False, True])
def test_pipeline_publish_reads_old_and_new_forecast_files(home, with_new_keys):
    from traffic import pipeline

    meta = _forecast_files(home, with_new_keys=with_new_keys)
    res = pipeline.publish("los_angeles", meta)
    db = home / "forecasts.duckdb"
    assert res["db"] == str(db) and res["run_id"] == "los_angeles_20120308T080000Z"
    run = dp.read_relation(db, "forecast_runs").iloc[0]
    f = dp.read_relation(db, "latest_forecast")
    cells = dp.read_relation(db, "cells")
    assert len(f) == res["n_rows"] == 4 * int(cells["has_data"].sum()) and f["congestion_level"].notna().all()
    assert len(cells) == res["n_cells"] and cells["has_data"].mean() == pytest.approx(0.5, abs=0.05)
    assert run["timezone"] == "America/Los_Angeles"
    if with_new_keys:
        assert (run["model_kind"], run["kind"], run["interval_level"], run["interval_method"]) == (
            "gbm",
            "refresh",
            0.8,
            "conformal",
        )
        assert f["lower"].notna().all() and (f["lower"] < f["upper"]).all()
        assert set(cells.loc[cells["has_data"], "coverage"]) == {0.5}
    else:
        assert (run["model_kind"], run["kind"]) == ("model", "nightly") and pd.isna(run["interval_level"])
        assert f["lower"].isna().all() and cells["coverage"].isna().all()


def test_make_case_still_publishes_through_the_cli_sql(db, capsys):
    dp.publish_forecast(db, **make_case().kwargs())
    code, out, _ = run_cli(capsys, "sql", "SELECT count(*) AS n FROM forecasts")
    assert code == 0 and out.split() == ["n", "72"]
