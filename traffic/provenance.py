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
