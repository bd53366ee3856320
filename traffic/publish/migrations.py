"""Numbered migrations of the publisher's DuckDB layout: ``sql/migrations/NNN_<name>.sql``, each applied once.

The ``layout`` schema (the empty tables whose columns and constraints every per-run Parquet file
follows, see :mod:`traffic.publish.duckdb_publish`) is built by applying the migrations in order;
``layout.schema_version`` records each one applied (version, file name, time). :func:`migrate`
applies only what a database lacks, each migration in its own transaction together with its
record, so it is safe to re-run and a failed migration leaves the database at the version before.

A database made by the schema file of before (``sql/schema.sql``: ``CREATE TABLE IF NOT EXISTS``,
no ``schema_version``) is adopted: migration 001 is that layout, so applying it changes nothing;
its tables are then checked to hold exactly 001's columns (a database whose layout differs is
refused, naming the table), 001 is recorded and the later migrations add what came since.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb

from traffic.errors import PublishError
from traffic.publish.sql import SQL_DIR, statement

#: Folder of the migration files.
MIGRATIONS_DIR = SQL_DIR / "migrations"
#: The bookkeeping table, in schema ``layout``.
VERSION_TABLE = "schema_version"
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One file of ``sql/migrations``: ``NNN_<name>.sql`` and its statements."""

    version: int
    filename: str
    sql: str


@cache
def migrations(folder: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """The migrations in order (001, 002, ...).

    Parameters
    ----------
    folder : Path
        Where the files are; default :data:`MIGRATIONS_DIR`.

    Raises
    ------
    PublishError
        When a file of ``sql/migrations`` is not named ``NNN_<name>.sql`` (lower case), or the
        numbers are not 1, 2, 3, ... without gaps or repeats, listing the files.
    """
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    bad = [f for f in files if not _FILE_RE.match(f)]
    if bad:
        raise PublishError(
            f"{folder}: files {bad} are not migrations; allowed: NNN_<name>.sql (3 digits, lower-case name)",
            file=str(folder),
        )
    found = [Migration(int(f[:3]), f, (folder / f).read_text()) for f in files]
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise PublishError(
            f"{folder}: migration numbers {numbers} must run 1, 2, 3, ... without gaps or repeats; files {files}",
            file=str(folder),
        )
    return tuple(found)


def latest_version(folder: Path = MIGRATIONS_DIR) -> int:
    """Number of the newest migration: the version :func:`migrate` brings a database to."""
    return len(migrations(folder))


def _layout_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Tables of schema ``layout`` (``schema_version`` included when it exists)."""
    return {str(t) for (t,) in con.execute(statement("layout_tables", "migrate.sql")).fetchall()}


def _applied(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    return {int(v): str(n) for v, n in con.execute(statement("applied", "migrate.sql")).fetchall()}


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The newest migration applied to the database of ``con`` (0: none, no ``layout.schema_version``)."""
    if VERSION_TABLE not in _layout_tables(con):
        return 0
    return max(_applied(con), default=0)


@cache
def _layout_after(folder: Path, version: int) -> tuple[tuple[str, str, str, str], ...]:
    """Columns of the layout tables of a fresh database after migrations 1..``version``."""
    con = duckdb.connect(":memory:")
    try:
        for m in migrations(folder)[:version]:
            con.execute(m.sql)
        return tuple(con.execute(statement("layout_columns", "migrate.sql")).fetchall())
    finally:
        con.close()


def _check_adopted(con: duckdb.DuckDBPyConnection, db: str, folder: Path) -> None:
    """A database made by the old schema file: its layout must be exactly migration 001's."""
    have = con.execute(statement("layout_columns", "migrate.sql")).fetchall()
    want = _layout_after(folder, 1)
    if tuple(have) == want:
        return
    tables = sorted({t for t, *_ in have} | {t for t, *_ in want})
    for table in tables:
        h = [c[1:] for c in have if c[0] == table]
        w = [c[1:] for c in want if c[0] == table]
        if h != w:
            raise PublishError(
                f"{db}: table layout.{table} has columns {h} but migration 001 ({migrations(folder)[0].filename}) "
                f"defines {w}; this database was not made by the publisher's schema and is not migrated",
                file=db,
                value=f"layout.{table}",
            )


def migrate(con: duckdb.DuckDBPyConnection, *, db: str = ":memory:", folder: Path = MIGRATIONS_DIR) -> list[int]:
    """Bring the ``layout`` schema of the database of ``con`` to :func:`latest_version`.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A read-write connection (not inside a transaction).
    db : str
        What the database is (its path), for messages.
    folder : Path
        The migration files; default :data:`MIGRATIONS_DIR`.

    Returns
    -------
    list of int
        The versions applied now, in order; ``[]`` when the database was up to date.

    Raises
    ------
    PublishError
        When the database records a migration this code does not have (it was made by newer
        code), or it has layout tables but no ``schema_version`` and they differ from
        migration 001 (not a layout this project made). Nothing is changed then.
    duckdb.Error
        When a migration fails; that migration is rolled back (the ones before it stay).
    """
    known = migrations(folder)
    tables = _layout_tables(con)
    if VERSION_TABLE in tables:
        applied = _applied(con)
    else:
        if tables:
            _check_adopted(con, db, folder)  # made by the old schema file: 001 must be what it holds
        con.execute(statement("create_version_table", "migrate.sql"))
        applied = {}
    unknown = {v: n for v, n in applied.items() if v > len(known) or known[v - 1].filename != n}
    if unknown:
        raise PublishError(
            f"{db}: layout.schema_version records migrations {unknown} that this code does not have "
            f"(it has {[m.filename for m in known]}); the database was made by other code",
            file=db,
        )
    done: list[int] = []
    for m in known:
        if m.version in applied:
            continue
        con.begin()
        try:
            con.execute(m.sql)
            con.execute(statement("record", "migrate.sql"), {"version": m.version, "name": m.filename})
            con.commit()
        except BaseException:
            con.rollback()
            raise
        done.append(m.version)
    return done
