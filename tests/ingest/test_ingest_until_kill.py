"""kill -9 during partial-day re-ingests: every partition stays readable and the gate is never fooled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pyarrow.parquet as pq

from tests.ingest.helpers import canonical_city
from traffic import lake

CHILD = """
import pickle, sys, itertools
from traffic.ingest import ingest_range
city = pickle.loads(bytes.fromhex(sys.argv[1]))
untils = [None, "2024-06-02 06:00", "2024-06-02 12:00", "2024-06-02 18:30"]
for i in itertools.count():
    ingest_range(city, city.feeds[0], "2024-06-02", "2024-06-02", until=untils[i % len(untils)])
    if i == 0:
        print("ready", flush=True)
"""


def test_kill_9_mid_reingest_leaves_a_consistent_day(tmp_path):
    n_src = 300
    times = pd.date_range("2024-06-02 00:00", "2024-06-02 23:55", freq="5min")
    registry = pd.DataFrame(
        {"source_id": [f"s{i}" for i in range(n_src)], "lon": 13.4 + 0.001 * (pd.RangeIndex(n_src) % 50), "lat": 52.5}
    )
    obs = pd.DataFrame(
        {
            "source_id": [f"s{i}" for i in range(n_src) for _ in times],
            "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%S") for _ in range(n_src) for t in times],
            "interval_s": 300,
            "speed_kmh": 40.0,
        }
    )
    city = canonical_city(tmp_path / "raw", obs, registry, obs_name="obs.parquet")
    import pickle

    rng = random.Random(7)
    keys = {"city": city.name, "feed": "f", "date": "2024-06-02"}
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), pickle.dumps(city).hex()],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        folder = lake.partition("observations", **keys)
        with (folder / "part.parquet").open("rb") as fh:
            table = pq.read_table(fh)  # readable: an old or a new partition, never half of one
        obs_until = (table.schema.metadata or {}).get(b"until")
        ts = table.column("timestamp").to_pylist()
        if obs_until is None:
            assert table.num_rows == n_src * len(times)
        else:
            assert max(ts) < pd.Timestamp(obs_until.decode())
        report = lake.read_json(lake.partition("quality", **keys) / "report.json")
        # a report that calls the day complete is only ever next to complete data
        if not report["partial"]:
            assert obs_until is None, (report, obs_until)
        assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == ["part.parquet"]
