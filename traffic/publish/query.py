"""The analysts' SQL (``traffic sql``): read statements only, streamed, written only where asked.

:func:`read_statements` decides what may run, from DuckDB's own parse of the text (its
statement types, never the text): ``SELECT`` (which is also what ``WITH``, ``VALUES``,
``FROM x``, ``DESCRIBE``, ``SHOW`` and ``SUMMARIZE`` parse to) and ``EXPLAIN`` of such a
statement. Anything else (``COPY``, ``EXPORT``, ``ATTACH``, ``SET``, ``PRAGMA``, ``CALL``,
``CREATE``, ``INSERT``, ``INSTALL``/``LOAD``, ``EXPLAIN ANALYZE COPY ...``) is refused with
one line naming the statement and what is allowed, before any statement of the text runs.

The session it runs in is the confined catalog session of
:func:`traffic.publish.duckdb_publish.connect_catalog` (no file but the store's run files, no
settings, a memory limit). :func:`stream` yields a result in record batches, so a query of a
hundred million rows costs one batch of memory; :func:`write_result` writes one to a CSV or
Parquet file the user named (atomically, never into the store or onto the catalog).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from traffic.errors import QueryError, one_line

#: Statement types that only read (DESCRIBE, SHOW, SUMMARIZE, WITH, VALUES parse as SELECT).
READ_TYPES = ("SELECT", "EXPLAIN")
#: What the refusal says is allowed.
ALLOWED_TEXT = "read-only statements: SELECT, WITH, VALUES, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE"
#: Rows printed per statement unless ``--limit``/``--all`` says otherwise.
DEFAULT_LIMIT = 1000
#: Rows per streamed record batch.
BATCH_ROWS = 10_000
#: Output formats of :func:`write_result`.
FORMATS = ("csv", "parquet")

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\b(?:\s+ANALY[SZ]E\b)?(?:\s*\([^)]*\))?", re.IGNORECASE)


def _kind(stmt: duckdb.Statement) -> str:
    return str(stmt.type).rsplit(".", 1)[-1]


def _parse(con: duckdb.DuckDBPyConnection, text: str) -> list[duckdb.Statement]:
    try:
        return list(con.extract_statements(text))
    except duckdb.Error as exc:
        raise QueryError(f"the SQL does not parse: {_duckdb_message(exc)}", key="sql", allowed=ALLOWED_TEXT) from None


def _snippet(text: str, n: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def read_statements(con: duckdb.DuckDBPyConnection, text: str) -> list[str]:
    """The statements of ``text``, each a read statement; else one :class:`QueryError` for the first that is not.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Any session (only its parser is used).
    text : str
        One or more SQL statements.

    Returns
    -------
    list of str
        The text of each statement, in order.

    Raises
    ------
    QueryError
        No statement, a statement that does not parse, or one of another type than
        :data:`READ_TYPES` (an ``EXPLAIN`` is judged by the statement it explains); the message
        names the statement's number, type and start.
    """
    stmts = _parse(con, text)
    if not stmts:
        raise QueryError("no SQL statement given", key="sql", allowed=ALLOWED_TEXT)
    out: list[str] = []
    for i, stmt in enumerate(stmts, start=1):
        kind = _kind(stmt)
        if kind == "EXPLAIN":
            inner = _parse(con, _EXPLAIN_RE.sub("", stmt.query, count=1))
            if len(inner) != 1 or _kind(inner[0]) != "SELECT":
                kind = "EXPLAIN " + (_kind(inner[0]) if len(inner) == 1 else "of several statements")
        if kind not in READ_TYPES:
            raise QueryError(
                f"statement {i} ({kind}: {_snippet(stmt.query)!r}) is not allowed; allowed: {ALLOWED_TEXT}; "
                "write results to a file with --csv FILE or --parquet FILE",
                key="sql",
                value=kind,
                allowed=ALLOWED_TEXT,
            )
        out.append(stmt.query)
    return out


def _duckdb_message(exc: BaseException) -> str:
    text = one_line(str(exc))
    if "disabled by configuration" in text or "disabled through configuration" in text:
        m = re.search(r'"([^"]*)"', text)
        what = f" ({m.group(1)})" if m else ""
        return (
            f"a statement reached outside the catalog{what}: only the catalog's relations can be read "
            "(forecast_runs, forecasts, latest_forecast, cells, run_cells, cell_channels, hotspots)"
        )
    if "configuration has been locked" in text:
        return "settings cannot be changed in a catalog session"
    return text


def query_error(exc: duckdb.Error, index: int | None = None) -> QueryError:
    """A DuckDB error of an analyst's statement as one-line :class:`QueryError` (file access is named as such)."""
    where = f"statement {index}: " if index is not None else ""
    return QueryError(where + _duckdb_message(exc), key="sql")


def stream(con: duckdb.DuckDBPyConnection, statement: str, *, batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
    """Run one read statement (from :func:`read_statements`) and stream its result.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A confined catalog session.
    statement : str
        One statement.
    batch_rows : int
        Rows per record batch.

    Returns
    -------
    pyarrow.RecordBatchReader
        The rows, produced as they are read (a limit stops the query early).
    """
    return con.sql(statement).to_arrow_reader(batch_rows)


def head(reader: pa.RecordBatchReader, limit: int | None) -> Iterator[pa.RecordBatch]:
    """The batches of ``reader`` up to ``limit`` rows in all (None: every row)."""
    left = limit
    for batch in reader:
        if left is not None:
            if left <= 0:
                return
            if batch.num_rows > left:
                batch = batch.slice(0, left)
            left -= batch.num_rows
        yield batch


def check_output(path: str | Path, fmt: str, *, catalog: Path, store: Path) -> Path:
    """Validate an output file of ``traffic sql``: a known format, a file outside the store and not the catalog.

    Raises
    ------
    QueryError
        Naming the option and the path.
    """
    if fmt not in FORMATS:
        raise QueryError(f"unknown output format {fmt!r}; allowed: {list(FORMATS)}", key="--format", value=fmt)
    out = Path(path).expanduser().absolute()
    opt = f"--{fmt}"
    if out.is_dir():
        raise QueryError(f"{opt} {path}: is a folder; allowed: a file name", key=opt, value=str(path))
    resolved = out.resolve()
    store_r, cat_r = store.resolve(), catalog.resolve()
    if (
        resolved == cat_r
        or resolved.is_relative_to(store_r)
        or resolved.parent == cat_r.parent
        and (resolved.name.startswith(f".{cat_r.name}"))
    ):
        raise QueryError(
            f"{opt} {path}: is the catalog or inside its store {store}; allowed: a file anywhere else",
            key=opt,
            value=str(path),
        )
    return out


def _os_reason(exc: OSError) -> str:
    """The reason of a failed write without the temporary file's name (pyarrow puts it in its message)."""
    import os

    if exc.errno:
        return os.strerror(exc.errno)
    m = re.search(r"\[errno (\d+)\]", str(exc))
    return os.strerror(int(m.group(1))) if m else type(exc).__name__


def write_result(reader: pa.RecordBatchReader, path: Path, fmt: str, *, limit: int | None = None) -> int:
    """Write a streamed result to ``path`` (CSV with a header, or Parquet) atomically; return its rows.

    Raises
    ------
    QueryError
        When the file cannot be written (naming the path the user gave and the reason).
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from traffic.tempfiles import atomic_path

    n = 0
    try:
        with atomic_path(path) as tmp:
            writer: pq.ParquetWriter | pcsv.CSVWriter
            if fmt == "parquet":
                writer = pq.ParquetWriter(tmp, reader.schema)
            else:
                writer = pcsv.CSVWriter(tmp, reader.schema)
            with writer:
                for batch in head(reader, limit):
                    writer.write_batch(batch)
                    n += batch.num_rows
    except OSError as exc:
        reason = _os_reason(exc)
        raise QueryError(
            f"--{fmt} {path}: cannot write the file: {reason}; allowed: a file in a folder you can write",
            key=f"--{fmt}",
            value=str(path),
        ) from None
    return n


def _table_text(batches: list[pa.RecordBatch], schema: pa.Schema, header: bool = True) -> str:
    import pandas as pd

    df = pa.Table.from_batches(batches, schema=schema).to_pandas()
    if not len(df):
        return f"(no rows; columns: {', '.join(schema.names)})"
    if schema.names == ["explain_key", "explain_value"]:  # EXPLAIN: the plan as drawn
        return "\n".join(f"{k}\n{v}" for k, v in zip(df["explain_key"], df["explain_value"], strict=True))
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 200):
        return df.to_string(index=False, header=header)


def run_sql(
    db_path: str | Path | None,
    text: str,
    *,
    limit: int | None = DEFAULT_LIMIT,
    out: str | Path | None = None,
    fmt: str = "csv",
    write: Callable[[str], object] = print,
) -> int:
    """``traffic sql``: run read statements in a confined catalog session, print or write their rows.

    Parameters
    ----------
    db_path : str or Path or None
        Catalog file; None = :func:`traffic.config.duckdb_path`.
    text : str
        One or more SQL statements; every one must be a read statement (:func:`read_statements`)
        before any runs.
    limit : int or None
        Most rows shown (or written) per statement; None = all, streamed batch by batch.
    out : str or Path, optional
        Write the rows of the one statement to this file instead of printing them.
    fmt : {"csv", "parquet"}
        Format of ``out``.
    write : callable
        Where the text goes (one call per block of lines).

    Returns
    -------
    int
        The number of statements run.

    Raises
    ------
    QueryError
        A statement that is not a read statement, reaches outside the catalog or fails; an
        output file that is not allowed or cannot be written. Nothing is written then.
    FileNotFoundError
        No catalog.
    """
    from traffic.publish.duckdb_publish import _db, connect_catalog, store_dir

    path = _db(db_path)
    target = check_output(out, fmt, catalog=path, store=store_dir(path)) if out is not None else None
    con = connect_catalog(path)
    try:
        stmts = read_statements(con, text)
        if target is not None and len(stmts) != 1:
            raise QueryError(
                f"--{fmt} {out}: writes the rows of one statement; got {len(stmts)} statements",
                key=f"--{fmt}",
                value=len(stmts),
            )
        for i, stmt in enumerate(stmts, start=1):
            try:
                reader = stream(con, stmt)
                if target is not None:
                    n = write_result(reader, target, fmt, limit=limit)
                    write(f"wrote {n} rows to {target}")
                    continue
                _print_rows(reader, limit, write)
            except duckdb.Error as exc:
                raise query_error(exc, i if len(stmts) > 1 else None) from None
        return len(stmts)
    finally:
        con.close()


def _print_rows(reader: pa.RecordBatchReader, limit: int | None, write: Callable[[str], object]) -> None:
    if limit is not None:
        batches = list(head(reader, limit + 1))
        n = sum(b.num_rows for b in batches)
        if n > limit:
            write(_table_text(list(head(iter(batches), limit)), reader.schema))
            write(f"(first {limit} rows; more with --limit N or --all, or write them with --csv FILE)")
        else:
            write(_table_text(batches, reader.schema))
        return
    first, any_rows = True, False
    for batch in reader:
        if batch.num_rows:
            write(_table_text([batch], reader.schema, header=first))
            first, any_rows = False, True
    if not any_rows:
        write(_table_text([], reader.schema))
