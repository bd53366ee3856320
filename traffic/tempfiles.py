"""The project's one atomic writer, its temporary files, and the sweep that removes what a killed writer left.

Every write of the project goes through :func:`atomic_write` (a binary handle) or
:func:`atomic_path` (a local path, for writers that want a file name): the data fills a
hidden temporary file next to its target, which is renamed into place; readers never see it.
On an object store (``s3://`` ...) the bytes are uploaded in one call instead. A writer killed with SIGKILL cannot remove its
temporary file, so the next write of the same target removes it instead (:func:`sweep`).

A temporary name says who wrote it: ``.<target>.<host>.<pid>.<random>.tmp``. A sweep removes
a temporary file of the same target when its writer is gone (same host, process no longer
running) or, whatever wrote it (another host, an older naming), when it has not changed for
:data:`STALE_AFTER_S`: a live write never takes that long, and a concurrent writer's file is
never taken from under it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from upath import UPath

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


#: fsspec protocols of object stores: an object appears only once its upload completes
#: (one PUT, or a completed multipart upload), so a direct write is all-or-nothing there.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
_LOCAL = ("", "file", "local")


def fsync(path: str | Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """A local temporary path that becomes ``target`` when the ``with`` block ends without error.

    For writers that want a file name (``torch.save``, ``duckdb.connect``); :func:`atomic_write`
    is the same write for writers of a binary handle. The temporary file sits next to the
    target under a name :func:`sweep` knows; what a killed writer of the same target left is
    removed first. On error the temporary file is removed and ``target`` is left as it was.

    Parameters
    ----------
    target : str or Path
        Final local file; its folder is created when missing.
    durable : bool
        Flush the file to disk before the rename (a power cut then leaves old or new).

    Yields
    ------
    Path
        The temporary path to write.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent, target.name)  # what a killed writer of this file left
    tmp = temp_path(target)
    try:
        yield tmp
        if durable:
            fsync(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: UPath | Path | str, write: Callable[[IO[bytes]], object]) -> UPath:
    """Write ``target`` atomically: readers see the old file or the whole new one, never a part.

    * Local files: ``write(fh)`` fills a temporary file next to the target (a dot name
      that readers never read), renamed into place (:func:`atomic_path`).
    * Object stores (:data:`OBJECT_STORES`, e.g. ``s3://``): copy-then-rename is not
      atomic there (a rename is a copy and a delete, and a killed writer leaves the
      temporary object behind). The bytes are built in memory and uploaded to the target
      in one call: the object store publishes the new object only when the upload
      completes, so a writer killed mid-upload leaves the old object and nothing else.
    * Other fsspec file systems: temporary file, then ``fs.mv``.

    Parameters
    ----------
    target : UPath, Path or str
    write : callable
        ``write(fh)`` with a binary file handle open for writing.

    Returns
    -------
    UPath
        ``target``.
    """
    target = UPath(target)
    if target.protocol in OBJECT_STORES:
        buf = io.BytesIO()
        write(buf)  # a failure here uploads nothing
        target.fs.pipe_file(target.path, buf.getvalue())
        return target
    if target.protocol in _LOCAL:
        with atomic_path(target.path) as tmp, tmp.open("wb") as fh:
            write(fh)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent, target.name)
    utmp = temp_path(target)
    try:
        with utmp.open("wb") as fh:
            write(fh)
        utmp.fs.mv(utmp.path, target.path)
    finally:
        if utmp.exists():
            utmp.unlink()
    return target
