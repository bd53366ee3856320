"""Lake partition reads: the former loop over dates and files vs :meth:`traffic.lake.Lake.read_dataset`.

Run from the project root::

    python bench/bench_lake_reads.py                  # writes the "lake reads" section of bench/RESULTS.md
    python bench/bench_lake_reads.py --repeat 3 --no-write   # a quick look

A temporary local lake gets ``--days`` raster partitions of the Los Angeles grid (24 x 37
cells, ``--cells-with-data`` of them observed, 96 bins of 15 min a day, one channel) and, for
one feed, ``--obs-days`` observation partitions (207 sensors every 5 min), written by
:meth:`Lake.write_partition` as the pipeline writes them. Timed, interleaved in one run (the
order of the two ways alternates every repetition, so a load change on the shared machine hits
both):

* the loader's raster window (the last ``--window`` days of ``--days``): the former
  ``grid.loader._read_raster`` (``list_dates``, then per date ``exists`` + ``open`` +
  ``pq.read_table(columns)``, ``concat_tables``) vs ``read_dataset("raster", columns,
  filter=date in window, city=)``;
* every raster day of the city (``--days``);
* the newest day alone (``newest_observed_bin``'s read): one file vs ``read_dataset(date=)``;
* every observation day of a feed, all columns.

Both ways must return equal tables (checked every repetition).

With it, the registries of the two shipped cities (Los Angeles: 207 points, Berlin: 255 lines;
the delivered sample files) are written and read back as the lake holds them, the former way vs
GeoPandas: write = the hand-built GeoParquet 1.0.0 ``geo`` metadata + ``write_table`` vs
:func:`traffic.lake.write_geoparquet` (GeoPandas writes, the lake adds the version key); read =
``pq.read_table`` + ``shapely.from_wkb`` + ``GeoDataFrame`` vs :func:`traffic.lake.read_geoparquet`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import geopandas as gpd  # noqa: E402
from results import load_average, machine, replace_block, today  # noqa: E402
from upath import UPath  # noqa: E402

from traffic.grid.rasterize import RASTER_SCHEMA  # noqa: E402
from traffic.ingest.run import registry_frame  # noqa: E402
from traffic.lake import Lake, read_geoparquet, write_geoparquet, write_table  # noqa: E402
from traffic.landing.contract import REGISTRY_SCHEMA  # noqa: E402

H, W = 24, 37
COLUMNS = ["bin_start", "cell_id", "channel", "value", "coverage"]
CITY, FEED = "los_angeles", "metr"


def loop_read(lake: Lake, dataset: str, dates: list[str], columns: list[str] | None, **keys: str) -> pa.Table:
    """The former reader: one ``exists`` + ``open`` + ``read_table`` per date, then ``concat_tables``."""
    tables = []
    for d in dates:
        path = lake.partition(dataset, **keys, date=d) / "part.parquet"
        if path.exists():
            with path.open("rb") as fh:
                tables.append(pq.read_table(fh, columns=columns))
    return pa.concat_tables(tables, promote_options="permissive")


def build(lake: Lake, days: list[str], obs_days: list[str], cells_with_data: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(H * W, cells_with_data, replace=False)).astype(np.int32)
    for d in days:
        start = pd.Timestamp(d, tz="America/Los_Angeles").tz_convert("UTC")
        bins = pd.date_range(start, periods=96, freq="15min")
        n = len(bins) * len(cells)
        raster = pa.table(
            {
                "bin_start": pa.array(np.repeat(bins.as_unit("us").asi8, len(cells))).cast(RASTER_SCHEMA.field(0).type),
                "cell_id": pa.array(np.tile(cells, len(bins)), pa.int32()),
                "channel": pa.array(["metr.speed_kmh"] * n, pa.string()),
                "value": rng.uniform(10, 110, n),
                "coverage": pa.array(rng.integers(1, 10, n), pa.int32()),
            },
            schema=RASTER_SCHEMA,
        )
        lake.write_partition(raster, "raster", city=CITY, date=d, metadata={"bin_seconds": "900"})
    sensors = np.array([f"7{i:05d}" for i in range(207)])
    for d in obs_days:
        start = pd.Timestamp(d, tz="America/Los_Angeles").tz_convert("UTC")
        ts = pd.date_range(start, periods=288, freq="5min").as_unit("us").asi8
        n = len(ts) * len(sensors)
        obs = pa.table(
            {
                "source_id": pa.array(np.tile(sensors, len(ts))).dictionary_encode(),
                "timestamp": pa.array(np.repeat(ts, len(sensors))).cast(pa.timestamp("us", tz="UTC")),
                "speed_kmh": rng.uniform(10, 110, n),
                "interval_s": pa.array(np.full(n, 300), pa.int32()),
            }
        )
        lake.write_partition(obs, "observations", city=CITY, feed=FEED, date=d)


_GEO_TYPE_NAMES = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}


def old_registry_write(registry: pa.Table, target: Any, version: str) -> None:
    """The former registry writer: ``geo`` metadata assembled by hand, then ``write_table``."""
    geoms = shapely.from_wkb(registry.column("geometry").to_numpy(zero_copy_only=False))
    names = [_GEO_TYPE_NAMES[t] for t in sorted(set(shapely.get_type_id(geoms).tolist())) if t in _GEO_TYPE_NAMES]
    geo = {
        "version": "1.0.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": names}},
    }
    write_table(
        registry, target, metadata={"version": version, "crs": "EPSG:4326", "geo": json.dumps(geo, sort_keys=True)}
    )


def new_registry_write(registry: pa.Table, target: Any, version: str) -> None:
    """As ``traffic.ingest.ingest_registry`` writes it now."""
    meta = {"version": version, "crs": "EPSG:4326"}
    write_geoparquet(registry_frame(registry), target, schema=REGISTRY_SCHEMA, metadata=meta)


def old_registry_read(target: Any) -> gpd.GeoDataFrame:
    """The former reader of ``grid.assign``: Arrow table, WKB decoded by shapely."""
    with target.open("rb") as fh:
        table = pq.read_table(pa.BufferReader(fh.read()))
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False), on_invalid="ignore")
    df = {"source_id": table.column("source_id").to_pandas().astype("str").to_numpy()}
    df["attributes"] = table.column("attributes").to_pandas().to_numpy()
    return gpd.GeoDataFrame(df, geometry=geoms, crs="EPSG:4326")


def registry_cases(root: Path) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    from traffic.config import load_city
    from traffic.ingest.run import registry_tables
    from traffic.landing.adapters import read_feed_registry

    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
    for name in ("los_angeles", "berlin"):
        feed = load_city(name).feeds[0]
        registry, _, version = registry_tables(read_feed_registry(feed))
        old_t, new_t = UPath(root / f"{name}_old.parquet"), UPath(root / f"{name}_new.parquet")
        cases[f"registry write, {name} ({registry.num_rows} sources)"] = (
            lambda r=registry, t=old_t, v=version: old_registry_write(r, t, v),
            lambda r=registry, t=new_t, v=version: new_registry_write(r, t, v),
        )
        cases[f"registry read, {name}"] = (
            lambda t=old_t: old_registry_read(t),
            lambda t=new_t: read_geoparquet(t)[0],
        )
    return cases


def same(a: Any, b: Any) -> bool:
    if isinstance(a, pa.Table):
        return bool(a.equals(b))
    if a is None or b is None:  # a write
        return True
    return bool(
        a["source_id"].tolist() == b["source_id"].tolist()
        and a["attributes"].tolist() == b["attributes"].tolist()
        and a.geometry.geom_equals_exact(b.geometry, 0).all()
        and a.crs == b.crs
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--window", type=int, default=91)
    ap.add_argument("--obs-days", type=int, default=30)
    ap.add_argument("--cells-with-data", type=int, default=180)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only, do not touch bench/RESULTS.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        days = [str(d.date()) for d in pd.date_range("2024-01-01", periods=args.days, freq="D")]
        obs_days = days[: args.obs_days]
        t0 = time.perf_counter()
        build(lake, days, obs_days, args.cells_with_data, args.seed)
        print(f"built {len(days)} raster + {len(obs_days)} observation partitions in {time.perf_counter() - t0:.1f} s")
        window = days[-args.window :]
        cases: dict[str, tuple[Callable[[], pa.Table], Callable[[], pa.Table]]] = {
            f"raster window ({len(window)} of {len(days)} days, 5 columns)": (
                lambda: loop_read(
                    lake, "raster", [d for d in lake.list_dates("raster", city=CITY) if d in window], COLUMNS, city=CITY
                ),
                lambda: lake.read_dataset("raster", columns=COLUMNS, filter=ds.field("date").isin(window), city=CITY),
            ),
            f"raster, every day ({len(days)})": (
                lambda: loop_read(lake, "raster", lake.list_dates("raster", city=CITY), COLUMNS, city=CITY),
                lambda: lake.read_dataset("raster", columns=COLUMNS, city=CITY),
            ),
            "raster, newest day": (
                lambda: loop_read(lake, "raster", [days[-1]], COLUMNS, city=CITY),
                lambda: lake.read_dataset("raster", columns=COLUMNS, city=CITY, date=days[-1]),
            ),
            f"observations of a feed, every day ({len(obs_days)}, all columns)": (
                lambda: loop_read(
                    lake,
                    "observations",
                    lake.list_dates("observations", city=CITY, feed=FEED),
                    None,
                    city=CITY,
                    feed=FEED,
                ),
                lambda: lake.read_dataset(
                    "observations",
                    columns=["source_id", "timestamp", "speed_kmh", "interval_s"],
                    city=CITY,
                    feed=FEED,
                ),
            ),
        }
        cases.update(registry_cases(Path(tmp)))
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
        rows: dict[str, str] = {}
        for rep in range(args.repeat):
            for name, (old, new) in cases.items():
                order = (0, 1) if rep % 2 == 0 else (1, 0)
                out: list[Any] = [None, None]
                for i in order:
                    dt_s, out[i] = timed((old, new)[i])
                    times[name][i].append(dt_s)
                a, b = out
                assert same(a, b), f"{name}: the two ways differ"
                rows[name] = f"{a.num_rows:,}" if isinstance(a, pa.Table) else (f"{len(a):,}" if a is not None else "")
        lines = []
        for name in cases:
            if name == next(n for n in cases if n.startswith("registry")):
                lines.append("| **registry as GeoParquet** | | **former way** | **GeoPandas** | |")
            old_t, new_t = times[name]
            mo, mn = statistics.median(old_t), statistics.median(new_t)
            lines.append(
                f"| {name} | {rows[name]} | {mo * 1e3:.1f} ms (best {min(old_t) * 1e3:.1f}) | "
                f"{mn * 1e3:.1f} ms (best {min(new_t) * 1e3:.1f}) | {mo / mn:.2f}x ({min(old_t) / min(new_t):.2f}x) |"
            )
        load = load_average()

    body = f"""## Lake reads: loop over dates and files vs `Lake.read_dataset` (pyarrow.dataset)

- Machine: {machine()}
- Date: {today()}; load average {load} at the end of the run (the machine is shared)
- Command: `python bench/bench_lake_reads.py{" --repeat " + str(args.repeat) if args.repeat != 15 else ""}`
- pyarrow {pa.__version__}; local lake in a temporary folder (page cache warm after the first repetition)
- Timed: median (and best) wall time of {args.repeat} interleaved repetitions; both ways return equal tables.
  Old: `list_dates` + per date `exists`/`open`/`pq.read_table` + `concat_tables`. New: one listing of the
  prefix, partitions pruned on the hive keys before any file is opened, one `pyarrow.dataset` scan.
- Registry rows: the former hand-built GeoParquet 1.0.0 metadata + `write_table`, and `pq.read_table` +
  `shapely.from_wkb`, vs `lake.write_geoparquet` / `lake.read_geoparquet` (GeoPandas). GeoPandas is slower
  by a fixed cost per file, not per row: it writes the file once more in memory (its writer takes no schema
  metadata, so the lake re-writes its table with the version key), and reading parses the CRS it stored
  (PROJJSON, by pyproj: about 40 ms of the read). A registry is written once per delivery and read once
  per feed and rasterize run, so this is milliseconds per nightly run.

| read | rows | loop over dates | read_dataset | speed-up: median (best) |
|---|---|---|---|---|
""" + "\n".join(lines)
    print(body)
    if not args.no_write:
        replace_block("lake-reads", body)


if __name__ == "__main__":
    main()
