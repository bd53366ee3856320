"""kill -9 during an atomic write leaves a temporary file; the next write of the same target removes it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from traffic import lake
from traffic.forecast.checkpoint import load_checkpoint, save_checkpoint
from traffic.tempfiles import STALE_AFTER_S, sweep, temp_path

KILLED_LAKE_WRITE = """
import os, signal, sys
from traffic import lake

def write(fh):
    fh.write(b"PAR1 half a file")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the write

lake.atomic_write(sys.argv[1], write)
"""

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from traffic.tempfiles import temp_path

tmp = temp_path(Path(sys.argv[1]))
tmp.write_bytes(b"half")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _child(code: str, *args: str) -> int:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=dict(os.environ)).returncode


def _hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_lake_write_killed_mid_way_is_cleaned_by_the_next_write(traffic_home):
    target = lake.partition("observations", city="x", feed="f", date="2024-06-01") / "part.parquet"
    lake.write_table(pa.table({"a": [1, 2]}), target)
    assert _child(KILLED_LAKE_WRITE, str(target)) == -9
    left = _hidden(target.parent)
    assert len(left) == 1 and left[0].startswith(".part.parquet.") and left[0].endswith(".tmp")
    assert pq.read_table(target).column("a").to_pylist() == [1, 2]  # the old file, whole
    lake.write_partition(pa.table({"a": [3]}), "observations", city="x", feed="f", date="2024-06-01")
    assert _hidden(target.parent) == [] and pq.read_table(target).column("a").to_pylist() == [3]


def test_a_checkpoint_write_killed_mid_way_is_cleaned_by_the_next_checkpoint(tmp_path):
    path = tmp_path / "ckpt" / "checkpoint.pt"
    path.parent.mkdir()
    assert _child(KILLED_WRITER, str(path)) == -9
    assert len(_hidden(path.parent)) == 1
    save_checkpoint(path, {"step": 3, "w": torch.ones(2)})
    assert _hidden(path.parent) == [] and load_checkpoint(path)["step"] == 3


def test_a_gridded_save_killed_mid_way_is_cleaned_by_the_next_save(tmp_path):
    from traffic.tempfiles import atomic_write

    path = tmp_path / "grid.npz"
    assert _child(KILLED_WRITER, str(path)) == -9
    atomic_write(path, lambda fh: fh.write(b"grid"))
    assert _hidden(tmp_path) == [] and path.read_bytes() == b"grid"


def test_a_live_writer_and_a_recent_unknown_file_are_left_alone(tmp_path):
    target = tmp_path / "part.parquet"
    mine = temp_path(target)  # this process: alive
    mine.write_bytes(b"writing")
    foreign = tmp_path / ".part.parquet.0123456789abcdef0123456789abcdef.tmp"  # older naming, another writer
    foreign.write_bytes(b"?")
    other = tmp_path / ".other.parquet.host.1.abcdef0123456789.tmp"  # another target
    other.write_bytes(b"?")
    assert sweep(tmp_path, "part.parquet") == []
    old = time.time() - STALE_AFTER_S - 10
    os.utime(foreign, (old, old))
    os.utime(other, (old, old))
    assert sweep(tmp_path, "part.parquet") == [foreign.name]
    assert mine.exists() and other.exists()
