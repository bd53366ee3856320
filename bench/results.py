"""Shared by the benchmarks: the machine description and the section writer of ``bench/RESULTS.md``.

Each benchmark owns one section between ``<!-- name:start -->`` and ``<!-- name:end -->``
markers and replaces only that section (atomically: temp file + rename), so benchmarks can
be re-run one at a time.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def machine() -> str:
    """``"<cpu model>, <n> cores, Python <version>"`` (plus the load average when available)."""
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1/5/15 min)"
    except OSError:
        return "n/a"


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def replace_block(name: str, body: str) -> None:
    """Replace (or append) section ``name`` of ``bench/RESULTS.md`` with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n\nEach benchmark writes its own section.\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(f".md.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(RESULTS)
    print(f"wrote section {name!r} of {RESULTS}")
