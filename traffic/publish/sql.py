"""The SQL files of ``sql/``: their text, their named statements and the identifier allow-list check.

All SQL of the publisher lives in ``sql/`` (``publish.sql``, ``views.sql``, ``hotspots.sql``,
``export.sql``, ``migrate.sql`` and the numbered layout migrations in ``sql/migrations/``).
Values are bound parameters; the only text put into SQL is an identifier that
:func:`check_identifier` accepted from an allow-list (and, in the catalog's view bodies, the
store's own file paths: :mod:`traffic.publish.duckdb_publish`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from traffic.config import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"
_STATEMENT_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def sql_text(filename: str) -> str:
    """Text of ``sql/<filename>`` (a path relative to ``sql/``, e.g. ``migrations/001_layout.sql``).

    Raises
    ------
    FileNotFoundError
        Naming the path and listing the SQL files of its folder.
    """
    path = SQL_DIR / filename
    if not path.is_file():
        known = sorted(p.name for p in path.parent.glob("*.sql"))
        raise FileNotFoundError(f"no SQL file {path}; files: {known}")
    return path.read_text()


@cache
def statements(filename: str = "publish.sql") -> dict[str, str]:
    """Named statements of a SQL file (blocks introduced by ``-- name: <name>``)."""
    text = sql_text(filename)
    parts = _STATEMENT_RE.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def statement(name: str, filename: str = "publish.sql") -> str:
    """One named statement of ``sql/<filename>``.

    Raises
    ------
    KeyError
        Naming the file and listing its statements.
    """
    named = statements(filename)
    if name not in named:
        raise KeyError(f"sql/{filename} has no statement {name!r}; statements: {sorted(named)}")
    return named[name]


def check_identifier(name: str, allowed: Sequence[str]) -> str:
    """Return ``name`` double-quoted if it is in the allow-list, else raise.

    Parameters
    ----------
    name : str
        A table, view or schema name.
    allowed : sequence of str
        Names that may be used.

    Returns
    -------
    str
        ``'"name"'``.

    Raises
    ------
    ValueError
        Naming the refused identifier and listing the allowed ones.
    """
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(f"identifier {name!r} is not allowed; allowed: {list(allowed)}")
    return '"' + name + '"'
