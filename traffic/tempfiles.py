"""Temporary files of atomic writes, and the sweep that removes what a killed writer left.

Every atomic write of the project fills a hidden temporary file next to its target and
renames it into place; readers never see it. A writer killed with SIGKILL cannot remove its
temporary file, so the next write of the same target removes it instead (:func:`sweep`).

A temporary name says who wrote it: ``.<target>.<host>.<pid>.<random>.tmp``. A sweep removes
a temporary file of the same target when its writer is gone (same host, process no longer
running) or, whatever wrote it (another host, an older naming), when it has not changed for
:data:`STALE_AFTER_S`: a live write never takes that long, and a concurrent writer's file is
never taken from under it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from typing import Any, TypeVar

_log = logging.getLogger(__name__)

#: Age after which any temporary file of a target counts as abandoned.
STALE_AFTER_S = 3600.0
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.(?P<rand>[0-9a-f]{8,32})\.tmp$")

_P = TypeVar("_P")


def temp_path(target: _P) -> _P:
    """A fresh temporary path next to ``target`` (a ``pathlib.Path`` or ``upath.UPath``) that :func:`sweep` knows."""
    parent, name = target.parent, target.name  # type: ignore[attr-defined]
    return parent / f".{name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:16]}.tmp"  # type: ignore[no-any-return]


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _age_s(path: Any) -> float | None:
    try:
        mtime = path.stat().st_mtime
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    if mtime is None:
        return None
    if hasattr(mtime, "timestamp"):  # fsspec may give a datetime
        mtime = mtime.timestamp()
    return time.time() - float(mtime)


def sweep(folder: Any, name: str, *, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Remove the temporary files of ``folder / name`` whose writer is gone (module docstring).

    Parameters
    ----------
    folder : Path or UPath
        The target's folder (a missing folder has nothing to sweep).
    name : str
        The target's file name; only its temporary files (``.<name>.*.tmp``) are considered.
    stale_after_s : float
        Age after which a temporary file counts as abandoned whatever wrote it.

    Returns
    -------
    list of str
        Names of the files removed.
    """
    removed: list[str] = []
    prefix = f".{name}."
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError, OSError):
        return removed
    for p in entries:
        if not (p.name.startswith(prefix) and p.name.endswith(".tmp")):
            continue
        m = _OURS.match(p.name)
        dead = m is not None and m["name"] == name and m["host"] == _HOST and not _alive(int(m["pid"]))
        if not dead:
            age = _age_s(p)
            if age is None or age < stale_after_s:
                continue
        try:
            p.unlink()
        except FileNotFoundError:  # its writer finished or another sweep took it
            continue
        removed.append(p.name)
    if removed:
        _log.info("removed %d temporary file(s) left by killed writers in %s: %s", len(removed), folder, removed)
    return removed


def sweep_folder(folder: Any, *, recursive: bool = False, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """:func:`sweep` every target of ``folder`` (and of its sub-folders with ``recursive``).

    Returns
    -------
    list of str
        Paths of the files removed.
    """
    try:
        if not folder.exists():
            return []
        found = list(folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"))
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []
    removed: list[str] = []
    for parent, name in sorted({(p.parent, _target_name(p.name)) for p in found}, key=str):
        removed += [str(parent / n) for n in sweep(parent, name, stale_after_s=stale_after_s)]
    return removed


def _target_name(tmp_name: str) -> str:
    """The target a temporary name belongs to (``.<target>.<host>.<pid>.<random>.tmp`` or an older naming)."""
    m = _OURS.match(tmp_name)
    if m:
        return m["name"]
    return tmp_name[1:].rsplit(".", 2)[0]  # ".<target>.<random>.tmp"
