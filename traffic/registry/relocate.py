"""A copied ``TRAFFIC_HOME`` keeps working: MLflow's stored artifact locations follow the home.

MLflow stores absolute artifact URIs: an experiment keeps the location it was created with
(``file:///<home>/mlartifacts/traffic-<city>``) and every run, logged model and model
version below it has an absolute URI too. A copy of the home (``cp -r``, a backup restored
elsewhere, a CI cache) would then train into the original's ``mlartifacts`` and read the
original's models, or fail once the original is gone.

:func:`rebase_copied_home` makes those locations relative to the home in effect: when the
tracking store is the home's own SQLite file and the artifacts live in the home's own
``mlartifacts`` (the defaults: neither ``MLFLOW_TRACKING_URI`` nor
``TRAFFIC_MLFLOW_ARTIFACTS`` points elsewhere), every stored URI under the artifact root the
project's experiments were created with is rewritten onto the current root, in one SQLite
transaction. It runs at the start of every MLflow session of the project (once per process
and store) and does nothing when nothing moved. Remote stores (a tracking server,
``mlflow-artifacts:``) are left alone: their URIs do not name the home.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

#: ``(table, column)`` pairs of the MLflow SQLAlchemy schema that hold artifact URIs.
URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)
#: Experiments whose creation location tells the root the store was written under.
EXPERIMENT_PREFIX = "traffic-"

_done: set[tuple[str, str]] = set()


def _local_db(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def rebase_copied_home(uri: str, artifact_root: str, home: Path) -> dict[str, Any] | None:
    """Rewrite the artifact URIs of a copied home's SQLite store onto its own ``mlartifacts``.

    Parameters
    ----------
    uri : str
        The tracking URI in effect (:func:`traffic.config.mlflow_uri`).
    artifact_root : str
        The artifact root in effect (:func:`traffic.config.mlflow_artifact_root`).
    home : Path
        The home in effect (:func:`traffic.config.home`).

    Returns
    -------
    dict or None
        ``{"from": old root, "to": new root, "rows": rows rewritten}`` when something was
        rewritten, else None (remote store, a store or root outside the home, nothing moved).
    """
    db = _local_db(uri)
    key = (uri, artifact_root)
    if key in _done or db is None or not artifact_root.startswith("file://"):
        return None
    home = home.resolve()
    root_path = Path(artifact_root[len("file://") :])
    if not (db.resolve().is_relative_to(home) and root_path.resolve().is_relative_to(home)):
        _done.add(key)
        return None  # an explicitly placed store or root: it does not move with the home
    if not db.exists():
        return None  # created on first use, with the current root
    root = artifact_root.rstrip("/")
    con = sqlite3.connect(db, timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return None
        olds = set()
        for name, loc in con.execute("SELECT name, artifact_location FROM experiments"):
            if not (str(name).startswith(EXPERIMENT_PREFIX) and isinstance(loc, str) and loc.startswith("file://")):
                continue
            suffix = f"/{name}"
            if loc.endswith(suffix) and loc[: -len(suffix)] != root:
                olds.add(loc[: -len(suffix)])
        rows = 0
        if len(olds) == 1:
            (old,) = olds
            with con:  # one transaction: every URI moves, or none
                for table, column in URI_COLUMNS:
                    if table not in tables:
                        continue
                    cols = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                    if column not in cols:
                        continue
                    cur = con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE substr({column}, 1, ?) = ? AND (length({column}) = ? OR substr({column}, ?, 1) = '/')",
                        (root, len(old) + 1, len(old), old, len(old), len(old) + 1),
                    )
                    rows += cur.rowcount
        elif len(olds) > 1:
            _log.warning("%s: experiments were created under several artifact roots %s; not rebased", db, sorted(olds))
    finally:
        con.close()
    _done.add(key)
    if not rows:
        return None
    (old,) = olds
    _log.warning("%s: copied home: %d artifact URIs moved from %s to %s", db, rows, old, root)
    return {"from": old, "to": root, "rows": rows}
