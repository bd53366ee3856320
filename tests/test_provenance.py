"""traffic.provenance.code_version: the environment, else the git commit with its dirty flag, else unknown."""

from __future__ import annotations

import re
import subprocess

import pytest

from traffic import provenance
from traffic.config import PROJECT_ROOT
from traffic.provenance import code_version


def test_code_version_from_env_or_git(monkeypatch):
    monkeypatch.setenv("TRAFFIC_CODE_VERSION", "v1.2.3")
    assert code_version() == "v1.2.3"
    monkeypatch.delenv("TRAFFIC_CODE_VERSION")
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert code_version() == "unknown"
        return
    assert re.fullmatch(rf"{head}(-dirty)?", code_version())


def _git(repo, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_changed_tracked_file_marks_the_commit_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAFFIC_CODE_VERSION", raising=False)
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    sha = _git(tmp_path, "rev-parse", "HEAD")
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    assert code_version() == sha
    (tmp_path / "new.py").write_text("untracked files do not count\n")
    assert code_version() == sha
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version() == f"{sha}-dirty"


def test_outside_a_checkout_the_version_is_unknown(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAFFIC_CODE_VERSION", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    assert code_version() == "unknown"
