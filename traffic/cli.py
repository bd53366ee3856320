"""``traffic`` command line: the pipeline stages, one sub-command each.

Examples::

    traffic cities
    traffic ingest berlin --start 2024-10-01 --end 2024-12-31
    traffic rasterize berlin --start 2024-10-01 --end 2024-12-31
    traffic train berlin --as-of 2024-12-31
    traffic run los_angeles            # all stages in-process, no Airflow
    traffic nightly                    # all cities through Airflow (the README's main command)
    traffic hotspots los_angeles --hours 3
    traffic export los_angeles --format html     # also geojson, geoparquet, png
    traffic hotspots los_angeles --at "2012-03-08 07:00" --hours 3
    traffic sql "SELECT city, count(*) FROM latest_forecast GROUP BY city"
    traffic refresh los_angeles --until "2012-03-07 08:00"   # re-forecast from the newest bin, publish
    traffic replay los_angeles --date 2012-03-07 --from 05:00 --to 10:00   # a morning, hour by hour, via Airflow
    traffic grid evaluate flows.npz --context 12 --horizon 12 --holdout-days 1 --budget 60 --json report.json
    traffic grid info flows.parquet --bin-minutes 30 --start 2015-01-01T00:00Z
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _dates(args) -> tuple[str, str]:
    from traffic import pipeline

    first, last = pipeline.source_dates(args.city)
    return args.start or first, args.end or args.start or last


def cmd_cities(args) -> None:
    from traffic.config import list_cities, load_city

    for name in list_cities():
        c = load_city(name)
        print(
            f"{name:14s} tz={c.timezone:22s} EPSG:{c.crs_epsg} cell={c.cell_size_m:g} m bin={c.time_bin} channels={list(c.channels)}"
        )


def _until_dates(args) -> tuple[str, str]:
    """``--start``/``--end``; with ``--until`` and neither, the local date of ``until`` (the partial day)."""
    if getattr(args, "until", None) and not (args.start or args.end):
        from traffic.config import load_city
        from traffic.intraday import local_date, parse_until

        tz = load_city(args.city).timezone
        try:
            day = local_date(parse_until(args.until, tz), tz)
        except ValueError as exc:
            raise SystemExit(f"traffic {args.cmd}: --until {exc}") from exc
        return day, day
    return _dates(args)


def cmd_ingest(args) -> None:
    from traffic import pipeline

    start, end = _until_dates(args)
    _print(pipeline.ingest(args.city, start, end, until=args.until, progress=True))


def cmd_rasterize(args) -> None:
    from traffic import pipeline

    start, end = _until_dates(args)
    _print(pipeline.rasterize(args.city, start, end, until=args.until, progress=True))


def cmd_refresh(args) -> int:
    from traffic import pipeline

    try:
        _print(pipeline.refresh(args.city, until=args.until))
    except pipeline.NoChampion as exc:
        print(f"traffic refresh: {exc}; run `make nightly` first", file=sys.stderr)
        return 2
    return 0


def cmd_replay(args) -> int:
    from traffic import pipeline
    from traffic.airflow_runner import run_replay

    try:
        run_replay(args.city, args.date, start=args.start, end=args.end, every_min=args.every, top=args.top)
    except pipeline.NoChampion as exc:
        print(f"traffic replay: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"traffic replay: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_train(args) -> None:
    from traffic import pipeline

    as_of = args.as_of or pipeline.source_dates(args.city)[1]
    trained = pipeline.train(args.city, as_of, progress=True, budget_s=args.budget)
    _print(trained)
    if args.promote:
        _print(pipeline.evaluate_and_promote(args.city, as_of, trained))


def cmd_forecast(args) -> None:
    from traffic import pipeline

    as_of = args.as_of or pipeline.source_dates(args.city)[1]
    meta = pipeline.forecast(args.city, as_of)
    _print(meta)
    if args.publish:
        _print(pipeline.publish(args.city, meta))


def cmd_run(args) -> None:
    from traffic import pipeline

    _print(pipeline.run_city(args.city, as_of=args.as_of, progress=True))


def cmd_nightly(args) -> None:
    from traffic.airflow_runner import report, run_nightly

    summary = run_nightly(args.cities or None, as_of=args.as_of)
    print()
    print(report(summary))
    print()
    print(
        "timings (s):",
        json.dumps(summary["timings_s"]),
        json.dumps({c: v["timings_s"] for c, v in summary["cities"].items()}),
    )


def _fail(msg: str) -> None:
    """One line on stderr and exit code 2 (bad input, no traceback)."""
    print(msg, file=sys.stderr)
    raise SystemExit(2)


def format_hotspots(result: Any) -> str:
    """Text of ``traffic hotspots``: a line naming the run and window, then one line per cell."""
    import pandas as pd

    tz, run = result.timezone, result.run

    def local(ts: Any) -> str:
        return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d %H:%M")

    zone = pd.Timestamp(result.start).tz_convert(tz).strftime("%Z")
    version = str(run["model_version"])
    model = f"{run['model_name']} v{version}" if version.isdigit() else f"{run['model_name']} {version}"
    head = (
        f"run {run['run_id']} (model {model}, {run['model_kind']}, {run['kind']};"
        f" issued {local(run['issued_at'])} {zone}); window {local(result.start)} .. {local(result.end)} {zone}"
        f" ({tz}); {len(result.rows)} cells, worst first"
    )
    if not len(result.rows):
        return head + "\nno congested cell in this window"
    df = result.rows
    out = pd.DataFrame(
        {
            "cell_id": df["cell_id"],
            "lon": df["centroid_lon"].round(5),
            "lat": df["centroid_lat"].round(5),
            "local_time": [local(t) for t in df["target_time"]],
            "channel": df["channel"],
            "value": df["value"].round(2),
            "lower": df["lower"].round(2),
            "upper": df["upper"].round(2),
            "index": df["congestion_index"].round(3),
            "level": df["congestion_level"],
            "slots": df["slots"],
        }
    )
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        return head + "\n" + out.to_string(index=False)


def cmd_hotspots(args) -> None:
    from traffic.config import duckdb_path
    from traffic.publish import find_hotspots

    try:
        result = find_hotspots(
            duckdb_path(), args.city, hours=args.hours, limit=args.limit, at=args.at, channel=args.channel
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(f"traffic hotspots: {exc}")
    print(format_hotspots(result))


def cmd_sql(args) -> None:
    import duckdb
    import pandas as pd

    from traffic.config import duckdb_path
    from traffic.publish import connect_catalog

    text = args.query if args.query is not None else sys.stdin.read()
    try:
        con = connect_catalog(duckdb_path())
    except (FileNotFoundError, duckdb.Error) as exc:
        _fail(f"traffic sql: {exc}")
    try:
        for stmt in con.extract_statements(text):
            cur = con.execute(stmt)
            if cur.description is None:
                continue
            df = cur.df()
            with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_rows", 500):
                print(df.to_string(index=False) if len(df) else f"(no rows; columns: {', '.join(df.columns)})")
    except duckdb.Error as exc:
        _fail("traffic sql: " + " ".join(str(exc).split()))
    finally:
        con.close()


def cmd_export(args) -> None:
    """Write a published run's cells as polygons; an unknown city/run/channel/format exits 2 with one line."""
    from traffic.publish.export import ExportError, check_format, export_run

    try:
        check_format(args.format)
        paths = export_run(args.city, args.format, run_id=args.run, out=args.out, channel=args.channel)
    except (ExportError, FileNotFoundError) as exc:
        print(f"traffic export: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for path in paths:
        print(path)


def _export_parser(sub) -> None:
    s = sub.add_parser("export", help="a published run's cells as polygons: geojson, geoparquet, png or html")
    s.add_argument("city")
    s.add_argument("--run", help="run id (default: the city's newest run)")
    s.add_argument("--format", required=True, help="geojson, geoparquet, png (one map per horizon group) or html")
    s.add_argument("--out", help="file or folder (png: folder); default <TRAFFIC_HOME>/exports/")
    s.add_argument("--channel", help="only this channel (default: all)")
    s.set_defaults(fn=cmd_export)


def _grid_load(args):
    """The array file of ``args.path``; a file the forecaster cannot use exits with the reason."""
    from traffic.gridded import load_array

    try:
        return load_array(
            args.path,
            bin_minutes=args.bin_minutes,
            start=args.start,
            channels=args.channels.split(",") if args.channels else None,
            fill_gaps=args.fill_gaps,
            timezone=args.timezone,
            holidays=args.holidays,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"traffic grid: {exc}") from exc


def _grid_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as TOML (``3``, ``1e-3``, ``[16, 16]``, ``true``), else kept as text."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set hidden_dims=[16,16]")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def cmd_grid_info(args) -> None:
    from traffic.gridded import describe

    _print(describe(_grid_load(args)))


def cmd_grid_evaluate(args) -> None:
    from pathlib import Path

    from traffic.gridded import evaluate_array, format_report

    grid = _grid_load(args)
    try:
        report = evaluate_array(
            grid,
            context_steps=args.context,
            horizon_steps=args.horizon,
            holdout_days=args.holdout_days,
            holdout_fraction=args.holdout_fraction,
            train_days=args.train_days,
            budget_s=args.budget,
            seed=args.seed,
            device=args.device,
            model_overrides=_grid_overrides(args.set),
            progress=args.progress,
            save_model_dir=args.save_model,
        )
    except ValueError as exc:  # an unusable split, setting or override
        raise SystemExit(f"traffic grid evaluate: {exc}") from exc
    print(format_report(report))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"report written to {out}")


def _grid_parser(sub) -> None:
    g = sub.add_parser(
        "grid", help="train and evaluate on any (T, C, H, W) array with a mask (.npz or Parquet), no city needed"
    )
    gsub = g.add_subparsers(dest="grid_cmd", required=True)
    loaders = []
    for name, fn, hlp in (
        ("info", cmd_grid_info, "load and check an array file; print its shape, time span and observed share"),
        ("evaluate", cmd_grid_evaluate, "train the forecaster; per-horizon metrics of model and baselines"),
    ):
        s = gsub.add_parser(name, help=hlp)
        s.add_argument("path", help="*.npz or *.parquet (formats: README, traffic/gridded.py)")
        s.add_argument("--bin-minutes", type=int, help="bin length, when the file has no times")
        s.add_argument("--start", help="first bin start (ISO 8601, naive = UTC), when the file has no times")
        s.add_argument("--channels", help="comma-separated channel names, in channel order")
        s.add_argument("--fill-gaps", action="store_true", help="insert missing time bins of an npz as unobserved")
        s.add_argument("--timezone", help="zone in which holiday dates are read (default UTC)")
        s.add_argument("--holidays", help="country code (US, CN, US-NY) or comma-separated ISO dates")
        s.set_defaults(fn=fn)
        loaders.append(s)
    s = loaders[1]
    s.add_argument("--context", type=int, default=12, help="context bins (default 12)")
    s.add_argument("--horizon", type=int, default=12, help="bins predicted (default 12)")
    ho = s.add_mutually_exclusive_group(required=True)
    ho.add_argument("--holdout-days", type=float, help="holdout = the last N days")
    ho.add_argument("--holdout-fraction", type=float, help="holdout = the last share of the bins, e.g. 0.1")
    s.add_argument("--train-days", type=float, help="training window before the holdout (default: all of it)")
    s.add_argument("--budget", type=float, default=60.0, help="training wall-clock budget in seconds (default 60)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model/training override (repeatable)"
    )
    s.add_argument("--save-model", metavar="DIR", help="write model.pt, config.json and report.json there")
    s.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    s.add_argument("--progress", action="store_true", help="show a training progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="traffic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cities", help="list configured cities").set_defaults(fn=cmd_cities)
    for name, fn, hlp in (
        ("ingest", cmd_ingest, "validate + quarantine + write observations"),
        ("rasterize", cmd_rasterize, "aggregate observations onto the grid"),
    ):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("city")
        s.add_argument("--start", help="first local date (default: first in the raw data)")
        s.add_argument("--end", help="last local date (default: last in the raw data)")
        s.add_argument(
            "--until",
            metavar='"YYYY-MM-DD HH:MM"',
            help="keep only rows before this local time: a partial current day (default: the date of until)",
        )
        s.set_defaults(fn=fn)
    s = sub.add_parser("train", help="train, log and register a challenger")
    s.add_argument("city")
    s.add_argument("--as-of")
    s.add_argument("--budget", type=float, default=None, help="training wall-clock budget in seconds")
    s.add_argument("--promote", action="store_true", help="also apply the promotion rule")
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("forecast", help="forecast with the champion")
    s.add_argument("city")
    s.add_argument("--as-of")
    s.add_argument("--publish", action="store_true")
    s.set_defaults(fn=cmd_forecast)
    s = sub.add_parser("publish", help="forecast with the champion and publish to DuckDB")
    s.add_argument("city")
    s.add_argument("--as-of")
    s.set_defaults(fn=cmd_forecast, publish=True)
    s = sub.add_parser("run", help="all stages for one city in-process (no Airflow)")
    s.add_argument("city")
    s.add_argument("--as-of")
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("nightly", help="ingest + nightly DAGs for all cities through Airflow")
    s.add_argument("cities", nargs="*")
    s.add_argument("--as-of")
    s.set_defaults(fn=cmd_nightly)
    s = sub.add_parser("hotspots", help="where will it jam in the next hours (cells at level moderate or worse)")
    s.add_argument("city")
    s.add_argument("--at", help="window start: local time of the city ('2012-03-08 07:00') or ISO with offset")
    s.add_argument("--hours", default="3", help="window length in hours (default 3)")
    s.add_argument("--channel", help="only this channel, e.g. metr.speed_kmh")
    s.add_argument("--limit", default="20", help="most cells listed (default 20)")
    s.set_defaults(fn=cmd_hotspots)
    _export_parser(sub)
    s = sub.add_parser("sql", help="query the analysts' catalog read-only (never blocks a publish)")
    s.add_argument("query", nargs="?", help="SQL; default: statements read from stdin")
    s.set_defaults(fn=cmd_sql)
    s = sub.add_parser("refresh", help="re-forecast from the newest ingested bin with the champion and publish")
    s.add_argument("city")
    s.add_argument("--until", metavar='"YYYY-MM-DD HH:MM"', help="only bins that ended by this local time")
    s.set_defaults(fn=cmd_refresh)
    s = sub.add_parser("replay", help="replay a past day hour by hour through the refresh DAG (Airflow)")
    s.add_argument("city")
    s.add_argument("--date", required=True, help="local date of the shipped data, YYYY-MM-DD")
    s.add_argument("--from", dest="start", default="05:00", help="first step, local HH:MM (default 05:00)")
    s.add_argument("--to", dest="end", default="10:00", help="last step, local HH:MM (default 10:00)")
    s.add_argument("--every", type=int, default=60, help="minutes between steps (default 60)")
    s.add_argument("--top", type=int, default=3, help="hotspots shown per step (default 3)")
    s.set_defaults(fn=cmd_replay)
    _grid_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
