"""The verify stage on a real lake, DuckDB store and catalog (the tiny city): waiting, re-verifying, kills, grids, alerts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.verify import verify_cases as vc
from traffic import pipeline
from traffic.cli import main
from traffic.errors import GridMismatchError
from traffic.publish import connect_catalog
from traffic.publish.duckdb_publish import list_skill, store_dir
from traffic.verify import alerts

DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")


def _rows(res, sql: str) -> list[tuple]:
    con = connect_catalog(res.warehouse.path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_run_whose_day_has_not_landed_waits_and_the_command_succeeds(tiny, capsys):
    c, res = tiny
    for d in DAYS[:2]:
        vc.write_raster(c, res, d)
    vc.publish_day_ahead(c, res, DAYS[1])  # targets 2024-03-03: no raster yet
    out = pipeline.verify(c, res=res)
    assert out["verified"] == [] and out["unchanged"] == []
    assert out["waiting"] == [
        {"run_id": "tiny_20240302T230000Z", "target_dates": ["2024-03-03"], "missing": ["2024-03-03"]}
    ]
    assert list_skill(res.warehouse.path) == {}
    assert main(["verify", "tiny"]) == 0
    assert "wait for their target days" in capsys.readouterr().err
    # the day lands: verified
    vc.write_raster(c, res, DAYS[2], day_offset=0.5)
    assert pipeline.verify(c, res=res)["verified"] == ["tiny_20240302T230000Z"]


def test_verifying_the_same_day_twice_gives_the_same_rows_once(tiny):
    c, res = tiny
    for d in DAYS:
        vc.write_raster(c, res, d, day_offset=0.5 * (d == DAYS[2]))
    vc.publish_day_ahead(c, res, DAYS[1])
    assert pipeline.verify(c, res=res)["verified"] == ["tiny_20240302T230000Z"]
    query = "SELECT * EXCLUDE (issued_at) FROM forecast_skill ORDER BY ALL"
    first = _rows(res, query)
    cells = _rows(res, "SELECT * FROM cell_skill ORDER BY ALL")
    assert len(first) == 2 * 5 and len(cells) == 2 * 12  # 2 channels x 5 groups; 2 channels x 12 cells
    version = list_skill(res.warehouse.path)["tiny_20240302T230000Z"]
    again = pipeline.verify(c, DAYS[2], DAYS[2], res=res)  # the day again (as the DAG does after a re-ingest)
    assert again["verified"] == [] and again["unchanged"] == ["tiny_20240302T230000Z"]
    assert _rows(res, query) == first and _rows(res, "SELECT * FROM cell_skill ORDER BY ALL") == cells
    assert list_skill(res.warehouse.path)["tiny_20240302T230000Z"] == version
    assert len([p for p in version.parent.iterdir()]) == 1  # one version, no duplicate
    # late data changes the rows: a new version replaces the old one in the catalog, still one row per key
    vc.write_raster(c, res, DAYS[2], day_offset=2.0)
    assert pipeline.verify(c, DAYS[2], DAYS[2], res=res)["verified"] == ["tiny_20240302T230000Z"]
    assert len(_rows(res, query)) == len(first) and _rows(res, query) != first


def test_the_catalog_views_pool_days_and_channels(tiny):
    c, res = tiny
    for d in DAYS:
        vc.write_raster(c, res, d)
    vc.publish_day_ahead(c, res, DAYS[1], bias=1.0)
    vc.publish_day_ahead(c, res, DAYS[0], bias=2.0, window_days=1)
    pipeline.verify(c, res=res)
    # truth is exactly periodic here: the seasonal reference is perfect, the runs are off by their bias
    daily = _rows(res, "SELECT target_date::VARCHAR, channel, n, rmse, bias, coverage, ref_rmse FROM skill_daily")
    assert daily == [
        ("2024-03-02", "all", 576, 2.0, 2.0, 1.0, 0.0),
        ("2024-03-02", "s.count", 288, 2.0, 2.0, 1.0, 0.0),
        ("2024-03-02", "s.speed_kmh", 288, 2.0, 2.0, 1.0, 0.0),
        ("2024-03-03", "all", 576, 1.0, 1.0, 1.0, 0.0),
        ("2024-03-03", "s.count", 288, 1.0, 1.0, 1.0, 0.0),
        ("2024-03-03", "s.speed_kmh", 288, 1.0, 1.0, 1.0, 0.0),
    ]
    by_h = _rows(res, "SELECT channel, horizon_group, days, n, rmse FROM skill_by_horizon WHERE channel = 'all'")
    rmse = round(((12 * 2 * 4 + 12 * 2 * 1) / (12 * 2 * 2)) ** 0.5, 4)  # sqrt(mean of 4 and 1) per group
    assert [r[:4] for r in by_h] == [
        ("all", "h01", 2, 48),
        ("all", "h02-03", 2, 96),
        ("all", "h04-06", 2, 144),
        ("all", "h07-12", 2, 288),
        ("all", "h13-24", 2, 576),
    ]
    assert {r[4] for r in by_h} == {rmse}
    for name in ("forecast_skill", "cell_skill", "skill_daily", "skill_by_horizon"):
        assert _rows(res, f"SELECT count(*) FROM {name} WHERE city = 'tiny'")[0][0] > 0


def test_a_run_published_on_another_grid_is_an_error_naming_the_run_and_both_digests(
    tiny, tmp_path, monkeypatch, capsys
):
    c, res = tiny
    for d in DAYS:
        vc.write_raster(c, res, d)
    vc.publish_day_ahead(c, res, DAYS[1])
    moved = vc.write_city(tmp_path / "cities", monkeypatch, bbox="[13.410, 52.500, 13.450, 52.515]")
    from traffic.verify.stage import city_grid_digest

    old, new = city_grid_digest(c), city_grid_digest(moved)
    assert old != new
    with pytest.raises(GridMismatchError) as err:
        pipeline.verify(moved, res=res)
    assert "tiny_20240302T230000Z" in str(err.value) and old in str(err.value) and new in str(err.value)
    assert main(["verify", "tiny"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith(
        "traffic verify: run tiny_20240302T230000Z was published on grid " + old
    )


KILLED = """
import os, sys, time
sys.path.insert(0, {root!r})
import pyarrow.parquet as pq
from traffic import pipeline
from traffic.resources import Resources
write = pq.write_table
def slow(table, where, **kw):  # fault injection: the verify writes its files slowly, so that it can be killed mid-way
    write(table, where, **kw)
    open({flag!r}, "w").close()
    time.sleep(60)
pq.write_table = slow
pipeline.verify("tiny", res=Resources.under({home!r}))
"""


def test_a_verify_killed_mid_write_leaves_nothing_visible_and_a_rerun_completes(tiny, tmp_path):
    c, res = tiny
    for d in DAYS:
        vc.write_raster(c, res, d)
    vc.publish_day_ahead(c, res, DAYS[1])
    flag = tmp_path / "writing"
    code = KILLED.format(root=os.getcwd(), flag=str(flag), home=str(res.home))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "the verify ended before it wrote"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    skill_dir = store_dir(res.warehouse.path) / "skill"
    assert [p.name for p in skill_dir.rglob(".tmp-v-*")], "killed while its version was still hidden"
    assert list_skill(res.warehouse.path) == {}  # nothing half-visible
    out = pipeline.verify(c, res=res)
    assert out["verified"] == ["tiny_20240302T230000Z"]
    assert _rows(res, "SELECT count(*) FROM forecast_skill")[0][0] == 10


def test_alerts_name_city_channel_group_and_figures(tiny):
    c, res = tiny
    vc.write_raster(c, res, DAYS[0])
    vc.write_raster(c, res, DAYS[1], day_offset=0.5)  # the seasonal reference (from day 1) is off by 0.5
    vc.write_raster(c, res, DAYS[2], silent=True)  # the feed delivered nothing on the last day
    vc.publish_day_ahead(c, res, DAYS[0], bias=3.0, window_days=1)  # worse than the (perfect) seasonal reference
    out = pipeline.verify(c, res=res)
    assert out["verified"] == ["tiny_20240301T230000Z"]
    lines = out["alerts"]
    assert alerts("tiny", res=res) == lines  # what the next nightly's decision can quote
    skill = [ln for ln in lines if "worse than the seasonal reference" in ln]
    assert len(skill) == 2 * 5  # each channel, each horizon group
    assert skill[0] == (
        "city tiny channel s.count horizon h01: live RMSE 2.5000 over 1 day(s) 2024-03-02..2024-03-02 (gbm) is worse "
        "than the seasonal reference's 0.5000 (skill -4.0000)"
    )
    assert any(ln.startswith("city tiny channel s.speed_kmh horizon h13-24: live RMSE 3.2500") for ln in skill)
    assert [ln for ln in lines if "stopped delivering" in ln] == [
        "city tiny feed s (channels ['s.count', 's.speed_kmh']): no rows on 2024-03-03 (0 rows read, 0 accepted): "
        "the feed stopped delivering"
    ]
    # a window before the silent day, with a good run: nothing to say
    assert alerts("tiny", res=res, as_of="2024-03-01") == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["skill", "nope"], "traffic skill: no city file"),
        (
            ["skill", "tiny", "--days", "0"],
            "traffic skill: argument --days: '0' is not allowed; allowed: a whole number with 1 <= days <= 3660",
        ),
        (["skill", "tiny"], "traffic skill: city tiny has no verified day-ahead forecasts yet"),
        (
            ["verify", "tiny", "--start", "2024-03-03", "--end", "2024-03-01"],
            "traffic verify: end date 2024-03-01 is before start date 2024-03-03",
        ),
    ],
)
def test_bad_skill_and_verify_questions_are_one_line_with_exit_code_2(tiny, argv, needle, capsys):
    c, res = tiny
    vc.write_raster(c, res, DAYS[0])
    vc.publish_day_ahead(c, res, DAYS[1])  # a catalog, but nothing verified
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from the parser
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(needle), err
