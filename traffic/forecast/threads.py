"""How many CPU threads a computation takes: all the cores on a quiet machine, one on a busy one."""

from __future__ import annotations

import os


def cpu_threads(setting: int = 0, default: int | None = None) -> int:
    """Intra-op threads: ``setting`` if > 0; 0 = auto.

    Auto gives ``default`` (all the cores when None) unless the 1-minute load average says the
    cores are already busy (other tasks, other cities, a test suite's other worker): then one
    thread, because spinning OpenMP threads of small kernels slow down several-fold on
    oversubscribed cores (torch's convolutions, scikit-learn's tree ensembles).
    """
    if setting > 0:
        return setting
    default = default or os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] >= max(1, (os.cpu_count() or 1) - 0.5)
    except OSError:
        busy = False
    return 1 if busy else default
