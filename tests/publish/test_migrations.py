"""Numbered layout migrations: applied once each, recorded in layout.schema_version; an old database upgrades."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from publish_cases import make_case

from traffic.errors import PublishError
from traffic.publish import duckdb_publish as dp
from traffic.publish.migrations import MIGRATIONS_DIR, latest_version, migrate, migrations, schema_version

#: sql/schema.sql before the migrations existed (git history): "CREATE TABLE IF NOT EXISTS", no version table.
OLD_SCHEMA = (Path(__file__).parent / "schema_before_migrations.sql").read_text()

LAYOUT_COLUMNS = (
    "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() "
    "WHERE schema_name = 'layout' ORDER BY table_name, column_index"
)
CONSTRAINTS = (
    "SELECT table_name, constraint_type, constraint_text FROM duckdb_constraints() "
    "WHERE schema_name = 'layout' ORDER BY ALL"
)


def _fresh(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    migrate(con)
    return con


def test_migrations_are_numbered_from_one_and_the_first_is_the_old_layout():
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1)) and len(found) >= 2
    assert found[0].filename == "001_layout.sql"
    assert latest_version() == len(found)


def test_a_fresh_database_gets_every_migration_once_and_a_rerun_changes_nothing(tmp_path):
    path = tmp_path / "plain.duckdb"
    con = duckdb.connect(str(path))
    assert schema_version(con) == 0
    assert migrate(con) == list(range(1, latest_version() + 1))
    columns, recorded = (
        con.execute(LAYOUT_COLUMNS).fetchall(),
        con.execute("SELECT version, name FROM layout.schema_version ORDER BY version").fetchall(),
    )
    assert recorded == [(m.version, m.filename) for m in migrations()]
    for _ in range(2):
        assert migrate(con) == []
    assert con.execute(LAYOUT_COLUMNS).fetchall() == columns
    assert con.execute("SELECT count(*) FROM layout.schema_version").fetchone() == (latest_version(),)
    con.close()
    con = duckdb.connect(str(path))  # and after reopening the file
    assert schema_version(con) == latest_version() and migrate(con) == []
    con.close()


def test_a_database_of_the_old_schema_file_upgrades_keeps_its_rows_and_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_SCHEMA)
    con.execute(OLD_SCHEMA)  # the old way: re-applied on every start
    con.execute(
        "INSERT INTO layout.cell_channels VALUES ('berlin_20241202T060000Z', 'berlin', 1000, 't.car', TRUE, 0.5, 80.0)"
    )
    before = {r[1] for r in con.execute(LAYOUT_COLUMNS).fetchall() if r[0] == "forecast_runs"}
    assert "code_version" not in before and schema_version(con) == 0

    # 001 is the layout it holds (adopted: recorded, changes nothing, as the column sets below show), then the rest
    assert migrate(con, db=str(path)) == list(range(1, latest_version() + 1))

    after = {r[1] for r in con.execute(LAYOUT_COLUMNS).fetchall() if r[0] == "forecast_runs"}
    assert after - before == {"code_version"}
    assert con.execute("SELECT version FROM layout.schema_version ORDER BY 1").fetchall() == [
        (v,) for v in range(1, latest_version() + 1)
    ]
    assert con.execute("SELECT city, cell_id, reference FROM layout.cell_channels").fetchall() == [
        ("berlin", 1000, 80.0)
    ]
    assert migrate(con, db=str(path)) == []
    fresh = _fresh(tmp_path)
    assert con.execute(LAYOUT_COLUMNS).fetchall() == fresh.execute(LAYOUT_COLUMNS).fetchall()
    assert con.execute(CONSTRAINTS).fetchall() == fresh.execute(CONSTRAINTS).fetchall()
    fresh.close()
    con.close()


def test_a_layout_that_differs_from_001_is_refused_naming_the_table_and_left_alone(tmp_path):
    path = tmp_path / "odd.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_SCHEMA)
    con.execute("ALTER TABLE layout.cells DROP COLUMN coverage")
    with pytest.raises(PublishError, match=r"odd\.duckdb: table layout\.cells has columns .* but migration 001"):
        migrate(con, db=str(path))
    assert schema_version(con) == 0  # no version table was created
    con.close()


def test_a_database_from_newer_code_is_refused(tmp_path):
    con = _fresh(tmp_path)
    con.execute("INSERT INTO layout.schema_version (version, name) VALUES (99, '099_future.sql')")
    with pytest.raises(PublishError, match=r"records migrations \{99: '099_future.sql'\} that this code does not"):
        migrate(con)
    con.close()


def test_a_failing_migration_is_rolled_back_and_the_ones_before_stay(tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_layout.sql").write_text((MIGRATIONS_DIR / "001_layout.sql").read_text())
    (folder / "002_half.sql").write_text(
        "ALTER TABLE layout.forecast_runs ADD COLUMN first_half VARCHAR;\nALTER TABLE layout.no_such ADD COLUMN x INT;\n"
    )
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    with pytest.raises(duckdb.CatalogException, match="no_such"):
        migrate(con, folder=folder)
    assert schema_version(con) == 1
    cols = {r[1] for r in con.execute(LAYOUT_COLUMNS).fetchall() if r[0] == "forecast_runs"}
    assert "first_half" not in cols
    con.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["001_a.sql", "003_c.sql"], r"numbers \[1, 3\] must run 1, 2, 3"),
        (["001_a.sql", "001_b.sql"], r"numbers \[1, 1\] must run 1, 2, 3"),
        (["001_a.sql", "2_b.sql"], r"files \['2_b.sql'\] are not migrations; allowed: NNN_<name>.sql"),
    ],
)
def test_badly_numbered_migration_files_are_refused(tmp_path, files, message):
    for f in files:
        (tmp_path / f).write_text("SELECT 1;")
    with pytest.raises(PublishError, match=message):
        migrations(tmp_path)


def test_the_catalog_and_the_runs_carry_the_layout_version_and_code_version(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs(run={**case.run, "code_version": "abc123-dirty"}))
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert schema_version(con) == latest_version()
        assert con.execute("SELECT code_version FROM forecast_runs").fetchall() == [("abc123-dirty",)]
    finally:
        con.close()


def test_a_store_of_only_runs_from_before_a_column_builds_its_catalog_with_null_there(db):
    case = make_case()
    dp.publish_forecast(db, **case.kwargs())
    (run_file,) = dp.store_dir(db).glob("runs/city=berlin/run_id=*/v-*/run.parquet")
    pq.write_table(pq.read_table(run_file).drop(["code_version"]), run_file)
    dp.rebuild_catalog(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT run_id, code_version FROM forecast_runs").fetchall() == [
            ("berlin_20241202T060000Z", None)
        ]
    finally:
        con.close()


def test_runs_published_before_a_column_existed_read_null_next_to_new_ones(db):
    """A run file of the layout before 002 (no code_version column) stays readable in every new catalog."""
    old, new = make_case(issued_at="2024-12-02T06:00:00Z"), make_case(issued_at="2024-12-03T06:00:00Z", seed=1)
    dp.publish_forecast(db, **old.kwargs())
    (run_file,) = dp.store_dir(db).glob("runs/city=berlin/run_id=berlin_20241202T060000Z/v-*/run.parquet")
    table = pq.read_table(run_file)
    pq.write_table(table.drop(["code_version"]), run_file)  # as a publish before migration 002 wrote it
    dp.publish_forecast(db, **new.kwargs(run={**new.run, "code_version": "v2"}))
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT run_id, code_version, n_rows FROM forecast_runs ORDER BY run_id").fetchall()
        latest = con.execute("SELECT DISTINCT run_id FROM latest_forecast").fetchall()
    finally:
        con.close()
    assert [(r, v) for r, v, _ in rows] == [("berlin_20241202T060000Z", None), ("berlin_20241203T060000Z", "v2")]
    assert all(n > 0 for *_, n in rows) and latest == [("berlin_20241203T060000Z",)]


def test_forecasts_published_before_the_volume_index_read_null_there_next_to_new_ones(db):
    """A forecasts.parquet of the layout before 003 (no volume_index / volume_level) stays readable."""
    old, new = make_case(issued_at="2024-12-02T06:00:00Z"), make_case(issued_at="2024-12-03T06:00:00Z", seed=1)
    dp.publish_forecast(db, **old.kwargs())
    (rows_file,) = dp.store_dir(db).glob("runs/city=berlin/run_id=berlin_20241202T060000Z/v-*/forecasts.parquet")
    pq.write_table(pq.read_table(rows_file).drop(["volume_index", "volume_level"]), rows_file)
    dp.publish_forecast(db, **new.kwargs())
    con = duckdb.connect(str(db), read_only=True)
    try:
        got = con.execute(
            "SELECT run_id, count(*), count(volume_index), count(volume_level) FROM forecasts GROUP BY ALL ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    n = 3 * 2 * 12
    assert got == [("berlin_20241202T060000Z", n, 0, 0), ("berlin_20241203T060000Z", n, n // 2, n // 2)]
