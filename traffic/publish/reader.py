"""The one way the project opens the forecast catalog: read-only, confined, and safe across a swap.

Every catalog reader (``traffic sql``, ``traffic hotspots``, ``traffic export``, the Python API
of :mod:`traffic.publish`) opens the catalog through :func:`open_catalog`, which

* **never fails because a publish swapped the file meanwhile.** DuckDB 2.0 opens the database
  file three times in one read-only ``connect`` (magic bytes; headers; the blocks). A publish
  ``os.replace``\\ s a new catalog onto the path (``docs/publishing.md``); a swap between those
  opens gives the old headers over the new blocks (``IO Error: No more data remaining in
  MetadataReader``), or, worse, a session that mixes the two files. The reader notes the file's
  identity (device, inode, change time, size) before and after its ``connect``; when it changed,
  the open spanned a swap, so the session is closed (or the error dropped) and the open is
  tried again on the new file, with a DEBUG log line saying so. A swap is rare and a catalog is
  small, so a retry costs milliseconds; :data:`MAX_OPENS` bounds them.
* **cannot reach anything but the catalog's own run files.** Once open, the session's
  ``allowed_directories`` is the store (``<catalog folder>/published``: the files the views
  read), ``enable_external_access`` is off (no other file, no URL, no ``ATTACH``, no extension
  install or load), a ``memory_limit`` bounds what one query may hold, and
  ``lock_configuration`` keeps any statement from changing these. Which *statements* may run
  is decided apart from this (:mod:`traffic.publish.query`): even inside the store, nothing
  may be written.

DuckDB shares one database instance between the connections of a process to the same path;
the settings are the instance's, so a session opened by this module confines every other
connection of the process to that catalog file too (and a second :func:`open_catalog` finds the
instance confined already).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb

#: Most ``connect`` tries of one :func:`open_catalog` (each retry follows a swap seen during the open).
MAX_OPENS = 20
#: Default ``memory_limit`` of a reader session (DuckDB size text).
MEMORY_LIMIT = "2GB"

log = logging.getLogger(__name__)

_Identity = tuple[int, int, int, int] | None


def file_identity(path: str | Path) -> _Identity:
    """``(device, inode, ctime ns, size)`` of ``path``, or None when it does not exist.

    A swap (``os.replace`` of a new file onto the path) changes the inode; the change time and
    size also tell a new file that happens to get the inode number of a deleted one.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size)


def _sql_text(value: str) -> str:
    if any(ord(ch) < 32 for ch in value):
        raise ValueError(f"{value!r} contains control characters")
    return "'" + value.replace("'", "''") + "'"


def confine(con: duckdb.DuckDBPyConnection, store: str | Path, *, memory_limit: str = MEMORY_LIMIT) -> None:
    """Confine a read-only catalog session to the files of its ``store`` (see the module docstring).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        A session of a catalog opened ``read_only=True``.
    store : str or Path
        The folder of the catalog's run files: the only one the session may read.
    memory_limit : str
        DuckDB's ``memory_limit`` for the session's database instance (``"2GB"``).

    Notes
    -----
    The session's time zone is UTC. When the instance is confined already (another session of
    this process to the same catalog), nothing is changed.
    """
    locked = con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]
    if locked:
        external = con.execute("SELECT current_setting('enable_external_access')").fetchall()[0][0]
        if external:
            raise RuntimeError("the catalog's DuckDB instance has its configuration locked with external access on")
        return
    for stmt in (
        "SET GLOBAL TimeZone = 'UTC'",
        f"SET allowed_directories = [{_sql_text(str(Path(store).absolute()) + os.sep)}]",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        f"SET memory_limit = {_sql_text(memory_limit)}",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)


def open_catalog(path: str | Path, store: str | Path, *, memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """Open a catalog read-only and confined; an open that spans a swap of the file is retried.

    Parameters
    ----------
    path : str or Path
        The catalog file (it must exist).
    store : str or Path
        Its store, the one folder the session may read (:func:`traffic.publish.store_dir`).
    memory_limit : str
        DuckDB's ``memory_limit`` of the session.

    Returns
    -------
    duckdb.DuckDBPyConnection
        Read-only, confined, UTC; the caller closes it.

    Raises
    ------
    FileNotFoundError
        When there is no catalog at ``path``.
    duckdb.Error
        When the open fails with the file unchanged (a damaged file), or after :data:`MAX_OPENS`
        tries that all spanned a swap.
    """
    path = Path(path)
    for attempt in range(1, MAX_OPENS + 1):
        before = file_identity(path)
        if before is None:
            raise FileNotFoundError(f"no forecast catalog at {path}; run init_db() or publish a forecast first")
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            if file_identity(path) != before and attempt < MAX_OPENS:
                log.debug(
                    "catalog %s was swapped while it was opened (attempt %d: %s); opening again", path, attempt, exc
                )
                continue
            raise
        if file_identity(path) != before and attempt < MAX_OPENS:
            con.close()
            log.debug("catalog %s was swapped while it was opened (attempt %d); opening again", path, attempt)
            continue
        try:
            confine(con, store, memory_limit=memory_limit)
        except BaseException:
            con.close()
            raise
        if attempt > 1:
            log.debug("catalog %s opened on attempt %d", path, attempt)
        return con
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises
