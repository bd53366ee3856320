"""The lake on a real S3 API (moto's server on 127.0.0.1): all-or-nothing partitions, kill -9, re-runs.

On an object store a partition is one object uploaded in one call (:func:`traffic.tempfiles.atomic_write`):
S3 publishes an object only when its upload completes, so readers see the old or the new
partition and a killed writer leaves nothing behind (no temporary objects to clean).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

import fsspec.config  # noqa: E402
from upath import UPath  # noqa: E402

from tests.ingest.helpers import canonical_city  # noqa: E402
from traffic import lake  # noqa: E402
from traffic.config import PROJECT_ROOT  # noqa: E402
from traffic.ingest import ingest_range, ingest_registry  # noqa: E402

LOS_SPEED = PROJECT_ROOT / "data/samples/la_metr/observations/los_speed.csv"
LOCATIONS = PROJECT_ROOT / "data/samples/la_metr/graph_sensor_locations.csv"
BUCKET = "traffic-lake"
DAYS = ("2012-03-01", "2012-03-03")


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_lake(s3_endpoint, monkeypatch, request):
    """TRAFFIC_LAKE on a fresh bucket prefix of the local S3 server (also for child processes)."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    uri = f"s3://{BUCKET}/{request.node.name}"
    monkeypatch.setenv("TRAFFIC_LAKE", uri)
    return uri


def delivery(tmp_path: Path):
    """Three local days of 20 METR-LA sensors in the canonical long format (real values), + the real registry."""
    wide = pd.read_csv(LOS_SPEED, nrows=3 * 288, dtype="string").iloc[:, :20]
    times = pd.date_range("2012-03-01", periods=len(wide), freq="5min").strftime("%Y-%m-%dT%H:%M:%S")
    obs = wide.assign(timestamp=times).melt(id_vars="timestamp", var_name="source_id", value_name="speed_kmh")
    obs["interval_s"] = 300
    obs.loc[7, "speed_kmh"] = "N/A"  # something for the quarantine
    reg = pd.read_csv(LOCATIONS, dtype={"sensor_id": "string"}).rename(
        columns={"sensor_id": "source_id", "longitude": "lon", "latitude": "lat"}
    )
    city = canonical_city(
        tmp_path / "raw", obs, reg, timezone="America/Los_Angeles", bbox=[-118.56, 34.03, -118.17, 34.23]
    )
    return city


def objects(prefix: str) -> dict[str, bytes]:
    root = UPath(prefix)
    fs = root.fs
    fs.invalidate_cache()
    out = {}
    for key in sorted(fs.find(root.path)):
        out[key[len(root.path) :].lstrip("/")] = fs.cat_file(key)
    return out


def local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(city) -> list[dict]:
    ingest_registry(city, city.feeds[0])
    return ingest_range(city, city.feeds[0], *DAYS)


def test_ingest_on_s3_matches_the_local_lake_and_reruns_identically(tmp_path, s3_lake, monkeypatch):
    city = delivery(tmp_path)
    reports = run(city)
    assert [r["date"] for r in reports] == ["2012-03-01", "2012-03-02", "2012-03-03"]
    assert reports[0]["by_reason"]["marked_missing"] == 1
    first = objects(s3_lake)
    assert first and not [k for k in first if "/." in f"/{k}"], "temporary objects in the bucket"
    run(city)
    assert objects(s3_lake) == first  # a re-run on S3 is byte-identical
    table = lake.read_partition("observations", city=city.name, feed="f", date="2012-03-02")
    assert table.num_rows == 288 * 20

    local = tmp_path / "local_lake"
    monkeypatch.setenv("TRAFFIC_LAKE", str(local))
    run(city)
    assert local_files(local) == first  # the same bytes as on local files


def test_read_dataset_on_s3_matches_the_loop_over_dates_and_the_local_lake(tmp_path, s3_lake, monkeypatch):
    import pyarrow as pa
    import pyarrow.dataset as ds

    city = delivery(tmp_path)
    run(city)
    s3 = lake.Lake.from_config()
    dates = s3.list_dates("observations", city=city.name, feed="f")
    assert dates == ["2012-03-01", "2012-03-02", "2012-03-03"]
    loop = pa.concat_tables([s3.read_partition("observations", city=city.name, feed="f", date=d) for d in dates])
    columns = loop.column_names
    whole = s3.read_dataset("observations", columns=columns, city=city.name, feed="f")
    assert whole.equals(loop)
    last = s3.read_dataset(
        "observations", columns=columns, filter=ds.field("date") >= "2012-03-02", city=city.name, feed="f"
    )
    assert last.equals(
        pa.concat_tables([s3.read_partition("observations", city=city.name, feed="f", date=d) for d in dates[1:]])
    )
    quarantined = s3.read_dataset("quarantine", city=city.name, feed="f")
    assert quarantined.num_rows >= 1 and set(quarantined.column("date").to_pylist()) <= set(dates)

    local = lake.Lake(tmp_path / "local_lake")
    monkeypatch.setenv("TRAFFIC_LAKE", str(local.root))
    run(city)
    assert local.read_dataset("observations", columns=columns, city=city.name, feed="f").equals(whole)


def test_a_failed_write_leaves_the_old_object_and_nothing_else(s3_lake):
    target = UPath(s3_lake) / "observations" / "city=x" / "feed=f" / "date=2024-01-01" / "part.parquet"
    lake.atomic_write(target, lambda fh: fh.write(b"old partition"))
    before = objects(s3_lake)

    def half_then_crash(fh):
        fh.write(b"half of a new")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        lake.atomic_write(target, half_then_crash)
    assert objects(s3_lake) == before
    assert target.read_bytes() == b"old partition"


CHILD = """
import pickle, sys
from traffic.ingest import ingest_range, ingest_registry
city = pickle.loads(bytes.fromhex(sys.argv[1]))
print("ready", flush=True)
while True:
    ingest_registry(city, city.feeds[0])
    ingest_range(city, city.feeds[0], sys.argv[2], sys.argv[3])
"""


@pytest.mark.slow
def test_kill_9_during_an_s3_ingest_leaves_readable_partitions_and_no_leftovers(tmp_path, s3_lake, monkeypatch):
    city = delivery(tmp_path)
    rng = np.random.default_rng(11)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), pickle.dumps(city).hex(), *DAYS],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(1.0, 4.0)))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "the ingest died before the kill"
        for key, data in objects(s3_lake).items():
            assert not Path(key).name.startswith("."), f"leftover {key}"
            if key.endswith(".parquet"):
                pq.read_table(pa_buffer(data))  # every object is a whole Parquet file
    assert objects(s3_lake), "the killed runs wrote nothing to S3"
    run(city)
    after = objects(s3_lake)
    local = tmp_path / "local_lake"
    monkeypatch.setenv("TRAFFIC_LAKE", str(local))
    run(city)
    assert after == local_files(local)  # identical to a lake that never saw a kill


def pa_buffer(data: bytes):
    import pyarrow as pa

    return pa.BufferReader(data)
