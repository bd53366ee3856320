"""`traffic sql` and every catalog reader are confined to the catalog: each attack is one line, exit 2,
and the catalog and its store are byte-identical afterwards (issue 18, part 1)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest
from publish_cases import metr_la_case

from traffic.cli import main
from traffic.errors import QueryError
from traffic.publish import duckdb_publish as dp
from traffic.publish.query import read_statements


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


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (the catalog, the store, whatever else is there)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _forecast_file(db: Path) -> Path:
    (folder,) = dp.list_runs(db).values()
    return folder / "forecasts.parquet"


ATTACKS = [
    # (sql, a part of the one line)
    ("COPY (SELECT 1 AS x) TO '{tmp}/leak.csv'", "statement 1 (COPY"),
    ("COPY (SELECT 1 AS x) TO '{forecasts}' (FORMAT parquet)", "statement 1 (COPY"),
    ("SELECT 1; COPY forecasts TO '{tmp}/leak.parquet'", "statement 2 (COPY"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/leak.csv'", "(EXPLAIN COPY"),
    ("EXPORT DATABASE '{tmp}/dump'", "(EXPORT"),
    ("ATTACH '{tmp}/other.duckdb' AS o", "(ATTACH"),
    ("INSTALL httpfs", "(LOAD"),
    ("LOAD httpfs", "(LOAD"),
    ("SET enable_external_access = true", "(SET"),
    ("RESET allowed_directories", "(SET"),
    ("PRAGMA enable_profiling", "(PRAGMA"),
    ("CALL pragma_version()", "(CALL"),
    ("CREATE TEMP TABLE t AS SELECT 1", "(CREATE"),
    ("DELETE FROM forecast_runs", "(DELETE"),
    ("SELECT * FROM read_text('/etc/hostname')", "outside the catalog (/etc/hostname)"),
    ("SELECT * FROM glob('/root/*')", "outside the catalog (/root/*)"),
    ("SELECT * FROM read_csv('{tmp}/secret.csv')", "outside the catalog"),
    ("SELECT * FROM read_text('{store}/../../../../../etc/hostname')", "outside the catalog"),
    ("SELECT * FROM 'https://example.com/x.csv'", "outside the catalog"),
    ("SELEC 1", "does not parse"),
    ("", "no SQL statement"),
]


@pytest.mark.parametrize(("sql", "message"), ATTACKS)
def test_sql_attacks_are_one_line_exit_2_and_change_nothing(la, tmp_path_factory, capsys, sql, message):
    tmp = tmp_path_factory.mktemp("outside")
    (tmp / "secret.csv").write_text("a\n1\n")
    home = la.parent
    before = tree_digest(home), tree_digest(tmp)
    text = sql.format(tmp=tmp, forecasts=_forecast_file(la), store=dp.store_dir(la))
    code, out, err = run_cli(capsys, "sql", text)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and err.startswith("traffic sql: ")
    assert message in err, err
    assert out == ""  # a refused text runs none of its statements
    assert (tree_digest(home), tree_digest(tmp)) == before
    # the store still answers for every run
    assert len(dp.read_relation(la, "forecasts")) == 2448


def test_output_files_are_written_only_where_asked_and_never_into_the_store(la, tmp_path_factory, capsys):
    out_dir = tmp_path_factory.mktemp("out")
    q = "SELECT cell_id, target_time, value FROM forecasts ORDER BY cell_id, target_time"
    code, out, err = run_cli(capsys, "sql", q, "--parquet", str(out_dir / "rows.parquet"))
    assert code == 0, err
    assert out.strip() == f"wrote 2448 rows to {out_dir / 'rows.parquet'}"
    assert pq.read_table(out_dir / "rows.parquet").num_rows == 2448
    code, _, err = run_cli(capsys, "sql", q, "--csv", str(out_dir / "rows.csv"), "--limit", "5")
    assert code == 0, err
    assert len(pd.read_csv(out_dir / "rows.csv")) == 5
    assert sorted(p.name for p in out_dir.iterdir()) == ["rows.csv", "rows.parquet"]  # no temporary left

    home = la.parent
    before = tree_digest(home)
    for target in (_forecast_file(la), la, dp.store_dir(la) / "new.parquet"):
        code, _, err = run_cli(capsys, "sql", q, "--parquet", str(target))
        assert code == 2 and "is the catalog or inside its store" in err and len(err.strip().splitlines()) == 1
    locked = out_dir / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(capsys, "sql", q, "--csv", str(locked / "x.csv"))
    if os.geteuid() != 0:  # root writes anywhere
        assert code == 2 and f"--csv {locked / 'x.csv'}: cannot write the file: Permission denied" in err
        assert ".tmp" not in err  # the user's path, not a hidden temporary name
    code, _, err = run_cli(capsys, "sql", "SELECT 1 AS a; SELECT 2 AS b", "--csv", str(out_dir / "two.csv"))
    assert code == 2 and "writes the rows of one statement; got 2 statements" in err
    assert tree_digest(home) == before


def test_a_huge_result_streams_with_a_default_row_limit(la, capsys):
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "sql", "SELECT * FROM range(100000000)")
    assert code == 0, err
    assert time.perf_counter() - t0 < 10  # the query stops after the first batch, nothing is held
    lines = out.strip().splitlines()
    assert lines[-1].startswith("(first 1000 rows; more with --limit N or --all")
    assert lines[-2].split() == ["999"] and len(lines) == 1 + 1000 + 1
    code, out, _ = run_cli(capsys, "sql", "SELECT * FROM range(25000)", "--all")
    assert code == 0 and out.split()[-1] == "24999" and "first" not in out
    code, out, _ = run_cli(capsys, "sql", "SELECT 42 AS answer", "--limit", "3")
    assert code == 0 and out.split() == ["answer", "42"]


def test_a_query_over_the_memory_limit_is_one_line(la, capsys):
    code, _, err = run_cli(capsys, "sql", "SELECT list(range) FROM range(2000000000)")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "traffic sql: " in err
    assert "memory" in err.lower()


def test_read_statements_judges_parsed_types_not_text(la):
    con = duckdb.connect()
    try:
        ok = "WITH a AS (SELECT 1 AS x) SELECT * FROM a; DESCRIBE forecasts; SHOW TABLES; SUMMARIZE forecasts; "
        ok += "VALUES (1); FROM forecasts; EXPLAIN SELECT 1; explain   select 2"
        assert len(read_statements(con, ok)) == 8
        # a comment that looks like a SELECT does not make a COPY one
        with pytest.raises(QueryError, match=r"statement 1 \(COPY"):
            read_statements(con, "/* SELECT */ COPY (SELECT 1) TO 'x.csv'")
        with pytest.raises(QueryError, match=r"statement 1 \(MULTI"):
            read_statements(con, "PIVOT forecasts ON channel USING count(*)")
    finally:
        con.close()


def test_every_catalog_reader_of_the_python_api_is_confined(la, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    con = dp.connect_catalog(la)
    try:
        assert con.execute("SELECT count(*) FROM forecasts").fetchall() == [(2448,)]
        for sql in (
            "SELECT * FROM read_text('/etc/hostname')",
            f"COPY (SELECT 1) TO '{outside}/x.csv'",
            f"ATTACH '{outside}/x.duckdb'",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute("SET enable_external_access = true")
        assert con.execute("SELECT current_setting('TimeZone')").fetchall() == [("UTC",)]
        # a second session of the same process shares the confined instance
        other = dp.connect_catalog(la)
        with pytest.raises(duckdb.PermissionException):
            other.execute("SELECT * FROM read_text('/etc/hostname')")
        other.close()
    finally:
        con.close()
    assert list(outside.iterdir()) == []
    # the readers built on it still answer
    assert len(dp.latest_runs(la)) == 1
    assert len(dp.hotspots(la, "los_angeles", at="2012-03-07 07:00", hours=3)) == 20
