"""A publish that swaps the catalog exactly between DuckDB's opens of one ``connect`` (issue 18, part 2).

DuckDB 2.0 opens the database file three times in one read-only ``connect`` (magic bytes, headers,
blocks). The shim ``swap_between_opens.c`` (LD_PRELOAD in a child process) renames the next
catalog onto the path right before the N-th open, so the race that happens at random under load
(old headers over new blocks) happens every time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from publish_cases import make_case

from traffic.publish import duckdb_publish as dp

SHIM = Path(__file__).with_name("swap_between_opens.c")

PLAIN = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(json.dumps(con.execute("SELECT count(*), sum(n_rows) FROM forecast_runs").fetchall()[0]))
"""
PROJECT = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
from traffic.publish import connect_catalog
con = connect_catalog(sys.argv[1])
runs, rows = con.execute("SELECT count(*), sum(n_rows) FROM forecast_runs").fetchall()[0]
print(json.dumps([runs, rows, con.execute("SELECT count(*) FROM forecasts").fetchall()[0][0]]))
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    out = tmp_path_factory.mktemp("shim") / "swap_between_opens.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SHIM), "-ldl"], check=True)
    return out


@pytest.fixture
def swap(db, shim):
    """The catalog in place is the empty one of init_db; ``next.duckdb`` is the catalog after 4 publishes."""
    dp.init_db(db)
    old = db.with_name("old.duckdb")
    shutil.copy(db, old)
    for day in range(2, 6):
        dp.publish_forecast(db, **make_case(issued_at=f"2024-12-0{day}T06:00:00Z", seed=day).kwargs())
    nxt = db.with_name("next.duckdb")
    os.replace(db, nxt)
    shutil.copy(old, db)

    def run(code: str, at_open: int) -> subprocess.CompletedProcess:
        env = dict(
            os.environ,
            LD_PRELOAD=str(shim),
            SWAP_TARGET=str(db),
            SWAP_SOURCE=str(nxt),
            SWAP_AT_OPEN=str(at_open),
        )
        return subprocess.run([sys.executable, "-c", code, str(db)], env=env, capture_output=True, text=True)

    return run


def test_a_plain_read_only_connect_fails_when_the_catalog_is_swapped_before_its_third_open(swap):
    # DuckDB 2.0.1: old headers over new blocks. This is why third-party tools must retry (docs/publishing.md).
    res = swap(PLAIN, 3)
    assert res.returncode != 0
    assert "MetadataReader" in res.stderr


@pytest.mark.parametrize("at_open", [1, 3])
def test_the_project_reader_reopens_when_its_open_spanned_a_swap(swap, at_open):
    res = swap(PROJECT, at_open)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [4, 4 * 72, 4 * 72]  # the new catalog, whole
    assert "was swapped while it was opened (attempt 1" in res.stderr  # said so in the debug log
    assert "opened on attempt 2" in res.stderr


def test_without_a_swap_the_project_reader_opens_once(db, swap):
    res = swap(PROJECT, 99)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [0, None, 0]  # the empty catalog in place
    assert "swapped" not in res.stderr
