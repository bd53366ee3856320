"""Provenance of a run: the code version recorded on training runs, model versions, cards and published runs.

One function, :func:`code_version`, used by every stage that records which code made something
(:func:`traffic.pipeline.train`, :mod:`traffic.registry`, :func:`traffic.pipeline.publish`).
"""

from __future__ import annotations

import os
import subprocess

from traffic.config import PROJECT_ROOT

#: Environment variable that names the code version where there is no git checkout (images).
CODE_VERSION_ENV = "TRAFFIC_CODE_VERSION"
#: What :func:`code_version` returns when neither the environment nor git can say.
UNKNOWN = "unknown"
#: Appended to the commit when tracked files differ from it.
DIRTY_SUFFIX = "-dirty"


def code_version() -> str:
    """The version of the code that runs now.

    Returns
    -------
    str
        ``TRAFFIC_CODE_VERSION`` if set (images built without ``.git``); else the full git commit of
        the project, with ``-dirty`` appended when tracked files differ from it; else ``"unknown"``
        (no git, not a checkout, or git did not answer within 10 s).
    """
    if env := os.environ.get(CODE_VERSION_ENV):
        return env

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    if not sha:
        return UNKNOWN
    return f"{sha}{DIRTY_SUFFIX}" if dirty else sha


def code_digest(*paths: str) -> str:
    """16 hex digits of a SHA-256 over the Python sources under ``paths`` (relative to the project's package).

    Narrower than :func:`code_version`: it changes only when those files change (a commit elsewhere
    leaves it alone), so a stage can tell whether what it wrote before came from the same code
    (e.g. ``code_digest("ingest", "landing", "intraday.py")``: the ingest's).
    """
    import hashlib

    root = PROJECT_ROOT / "traffic"
    digest = hashlib.sha256()
    for rel in paths:
        base = root / rel
        for f in sorted(base.rglob("*.py")) if base.is_dir() else [base]:
            digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
