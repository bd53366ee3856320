"""``traffic`` command line: the pipeline stages, one sub-command each.

Examples::

    traffic cities
    traffic ingest berlin --start 2024-10-01 --end 2024-12-31
    traffic rasterize berlin --start 2024-10-01 --end 2024-12-31
    traffic train berlin --as-of 2024-12-31
    traffic run los_angeles            # all stages in-process, no Airflow
    traffic nightly                    # all cities through Airflow (the README's main command)
    traffic nightly los_angeles --skip-ingest   # again on what the lake holds: no feed is read
    traffic hotspots los_angeles --hours 3
    traffic export los_angeles --format html     # also geojson, geoparquet, png
    traffic hotspots los_angeles --at "2012-03-08 07:00" --hours 3
    traffic sql "SELECT city, count(*) FROM latest_forecast GROUP BY city"
    traffic verify berlin              # score the published runs whose day has landed
    traffic skill berlin --days 7      # how good were the last 7 days' forecasts
    traffic refresh los_angeles --until "2012-03-07 08:00"   # re-forecast from the newest bin, publish
    traffic replay los_angeles --date 2012-03-07 --from 05:00 --to 10:00   # a morning, hour by hour, via Airflow
    traffic backfill los_angeles --start 2012-03-05 --end 2012-03-07 --print   # airflow backfill create, one retrain
    traffic grid evaluate flows.npz --context 12 --horizon 12 --holdout-days 1 --budget 60 --json report.json
    traffic grid info flows.parquet --bin-minutes 30 --start 2015-01-01T00:00Z

A fault in the input (a city file, a delivered file, an option out of range) is printed as one
line on stderr, naming the file, key or option, the value and what is allowed, and the exit
code is 2; any other error is one line with exit code 1 (an unreachable MLflow server too: one line
naming the URI and the cause, :class:`~traffic.errors.TrackingServerError`). ``--debug`` (before or after the
sub-command) also prints the traceback.

Each command builds the run's :class:`traffic.resources.Resources` once from the config and
passes it to the stages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import sys
import traceback
from collections.abc import Callable
from typing import Any

from traffic.errors import TrafficError, UsageError, one_line

#: Most seconds a training budget may be (one week).
MAX_BUDGET_S = 7 * 86400.0
#: Most bins a context or horizon may be.
MAX_STEPS = 100_000
#: Most days a holdout or training window may be (100 years).
MAX_DAYS = 36_600.0
#: ``traffic hotspots`` ranges: those of :func:`traffic.publish.find_hotspots` (checked by a test).
MAX_HOURS, MAX_LIMIT = 744, 100_000
#: ``traffic sql`` rows printed per statement by default (:data:`traffic.publish.query.DEFAULT_LIMIT`), and the most --limit takes.
DEFAULT_SQL_LIMIT, MAX_SQL_LIMIT = 1000, 10**12


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the option, the value, what is allowed), exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def number(
    kind: type, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False, name: str = "x"
) -> Callable[[str], Any]:
    """An argparse ``type`` for a number in a range: ``int`` or ``float`` with ``lo <= x <= hi``.

    Parameters
    ----------
    kind : {int, float}
        ``int`` accepts whole numbers only (``10``, not ``1e20`` or ``2.5``).
    lo, hi : float
        Bounds of the allowed range.
    lo_open, hi_open : bool
        Exclude the bound itself (``0 < x`` rather than ``0 <= x``).
    name : str
        What the range calls the value (``0 < hours <= 744``).

    Returns
    -------
    callable
        Parses the text; out of range, not finite or not a number raises
        :class:`argparse.ArgumentTypeError`, which argparse prints as one line naming the option.
    """
    left = f"{_num(lo)} {'<' if lo_open else '<='} {name}"
    right = f"{'<' if hi_open else '<='} {_num(hi)}"
    what = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = int(text.strip()) if kind is int else float(text)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value)
        ok = ok and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)  # type: ignore[operator]
        if not ok:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: {what} with {left} {right}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def iso_date(text: str) -> str:
    """An argparse ``type`` for a local date ``YYYY-MM-DD``."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; allowed: YYYY-MM-DD, e.g. 2024-10-01") from None


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
            raise UsageError(f"--until {exc}", key="--until", value=args.until) from exc
        return day, day
    return _dates(args)


def cmd_ingest(args) -> None:
    from traffic import pipeline
    from traffic.resources import Resources

    start, end = _until_dates(args)
    _print(pipeline.ingest(args.city, start, end, until=args.until, progress=True, res=Resources.from_config()))


def cmd_rasterize(args) -> None:
    from traffic import pipeline
    from traffic.resources import Resources

    start, end = _until_dates(args)
    _print(pipeline.rasterize(args.city, start, end, until=args.until, progress=True, res=Resources.from_config()))


def cmd_refresh(args) -> int:
    from traffic import pipeline
    from traffic.resources import Resources

    try:
        _print(pipeline.refresh(args.city, until=args.until, res=Resources.from_config()))
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


def cmd_backfill(args) -> None:
    import shlex
    import subprocess

    from traffic.airflow_runner import airflow_env, airflow_exe, backfill_args

    cmd = backfill_args(args.city, args.start, args.end)
    if args.print:
        print(shlex.join(["airflow", *cmd]))
        return
    proc = subprocess.run([airflow_exe(), *cmd], env=airflow_env(), check=False)
    if proc.returncode != 0:
        _fail(f"traffic backfill: `airflow {shlex.join(cmd)}` exited {proc.returncode}")


def cmd_train(args) -> None:
    from traffic import pipeline
    from traffic.resources import Resources

    as_of = args.as_of or pipeline.source_dates(args.city)[1]
    res = Resources.from_config()
    trained = pipeline.train(args.city, as_of, progress=True, budget_s=args.budget, res=res)
    _print(trained)
    if args.promote:
        _print(pipeline.evaluate_and_promote(args.city, as_of, trained, res=res))


def cmd_forecast(args) -> None:
    from traffic import pipeline
    from traffic.resources import Resources

    res = Resources.from_config()
    as_of = args.as_of or pipeline.source_dates(args.city)[1]
    meta = pipeline.forecast(args.city, as_of, res=res)
    _print(meta)
    if args.publish:
        _print(pipeline.publish(args.city, meta, res=res))


def cmd_publish(args) -> None:
    """Publish the forecast the forecast stage stored for ``--as-of`` (nothing is forecast again)."""
    from traffic import pipeline
    from traffic.resources import Resources

    res = Resources.from_config()
    as_of = args.as_of or pipeline.source_dates(args.city)[1]
    _print(pipeline.publish(args.city, pipeline.stored_forecast(args.city, as_of, res=res), res=res))


def cmd_run(args) -> None:
    from traffic import pipeline
    from traffic.resources import Resources

    _print(pipeline.run_city(args.city, as_of=args.as_of, progress=True, res=Resources.from_config()))


def cmd_nightly(args) -> None:
    from traffic.airflow_runner import report, run_nightly

    summary = run_nightly(args.cities or None, as_of=args.as_of, skip_ingest=args.skip_ingest)
    print()
    print(report(summary))
    print()
    print(
        "timings (s):",
        json.dumps(summary["timings_s"]),
        json.dumps({c: v["timings_s"] for c, v in summary["cities"].items()}),
    )


def cmd_verify(args) -> None:
    """Score the published runs whose target days have landed; print what was verified, what waits, the alerts."""
    from traffic import pipeline
    from traffic.resources import Resources

    out = pipeline.verify(args.city, args.start, args.end, res=Resources.from_config())
    _print(out)
    if out["waiting"] and not out["verified"] and not out["unchanged"]:
        print(
            f"traffic verify: {len(out['waiting'])} run(s) of {args.city} wait for their target days' raster; "
            "nothing to verify yet",
            file=sys.stderr,
        )


#: Columns of ``traffic skill`` (catalog column, heading).
SKILL_COLUMNS = (
    ("model_kind", "model_kind"),
    ("n", "n"),
    ("rmse", "rmse"),
    ("mae", "mae"),
    ("bias", "bias"),
    ("coverage", "coverage"),
    ("level_hit_rate", "level_hit"),
    ("ref_rmse", "ref_rmse"),
    ("skill", "skill"),
)


def _skill_cell(v: Any) -> str:
    """A figure of ``traffic skill``: as the catalog rounded it (4 decimals, all printed), ``-`` for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_skill(city: str, days: int, win: dict[str, Any], channel: str) -> str:
    """Text of ``traffic skill``: a head line, one line per verified day, one per horizon group over the days."""
    which = "all channels pooled" if channel == "all" else f"channel {channel}"
    head = (
        f"skill {city}: day-ahead forecasts (nightly and replayed runs) verified on {len(win['days'])} of the "
        f"{days} day(s) {win['first_day']} .. {win['last_day']}, {which}; reference: the seasonal average issued "
        "from the same data; skill = 1 - rmse / ref_rmse (> 0: better than the reference)"
    )

    def table(first: tuple[str, str], rows: list[dict[str, Any]], extra: tuple[str, str]) -> list[str]:
        cols = [first, extra, *SKILL_COLUMNS]
        cells = [[_skill_cell(r[k]) for k, _ in cols] for r in rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(cols)]

        def fmt(vals: list[str]) -> str:
            return "  " + "  ".join(
                v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths, strict=True))
            )

        return [fmt([h for _, h in cols]), *(fmt(c) for c in cells)]

    lines = [head, *table(("target_date", "day"), win["days"], ("runs", "runs"))]
    lines.append(f"per horizon group over the {days} day(s) (hours ahead: h01 = the first hour, h13-24 = the last 12):")
    lines += table(("horizon_group", "group"), win["groups"], ("days", "days"))
    return "\n".join(lines)


def cmd_skill(args) -> None:
    """How good were the last ``--days`` days' day-ahead forecasts (the catalog's skill relations)."""
    from traffic.config import load_city
    from traffic.resources import Resources
    from traffic.verify.stage import skill_window

    c = load_city(args.city)  # an unknown city: ConfigError, one line, exit 2
    try:
        win = skill_window(c.name, res=Resources.from_config(), days=args.days, channel=args.channel)
    except FileNotFoundError as exc:
        _fail(f"traffic skill: {exc}")
    if win["last_day"] is None or not win["days"]:
        _fail(
            f"traffic skill: city {c.name} has no verified day-ahead forecasts"
            + (f" for channel {args.channel!r}" if args.channel != "all" else "")
            + f" yet; `traffic verify {c.name}` scores the published runs whose day has landed"
        )
    print(format_skill(c.name, args.days, win, args.channel))


def _fail(msg: str) -> None:
    """One line on stderr and exit code 2 (bad input, no traceback)."""
    print(msg, file=sys.stderr)
    raise SystemExit(2)


def format_hotspots(result: Any, places: dict[int, str] | None = None) -> str:
    """Text of ``traffic hotspots``: a line naming the run and window, then one line per cell.

    ``places`` (``{cell_id: text}``, :func:`traffic.publish.export.cell_places`) adds a last
    column ``where``: the cell's road segments or sensors, by name and id.
    """
    import pandas as pd

    from traffic.publish.export import model_label

    tz, run = result.timezone, result.run

    def local(ts: Any) -> str:
        return pd.Timestamp(ts).tz_convert(tz).strftime("%Y-%m-%d %H:%M")

    zone = pd.Timestamp(result.start).tz_convert(tz).strftime("%Z")
    model = model_label(run["model_name"], run["model_version"])
    volume = result.measure == "volume"
    ranked = "volume index (share of the usual peak), busiest first" if volume else "congestion (speeds), worst first"
    head = (
        f"run {run['run_id']} (model {model}, {run['model_kind']}, {run['kind']};"
        f" issued {local(run['issued_at'])} {zone}); window {local(result.start)} .. {local(result.end)} {zone}"
        f" ({tz}); {len(result.rows)} cells by {ranked}"
    )
    if not len(result.rows):
        if volume:
            return head + "\nno busy cell in this window"
        speeds = [c for c in run["channels"] if c.rsplit(".", 1)[-1] == "speed_kmh"]
        why = "" if speeds else " (the run has no speed channel: rank a volume with --channel)"
        return head + f"\nno congested cell in this window{why}"
    df = result.rows
    index_col, level_col = ("volume_index", "volume_level") if volume else ("congestion_index", "congestion_level")
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
            "index": df[index_col].round(3),
            "level": df[level_col],
            "slots": df["slots"],
        }
    )
    if places:
        out["where"] = [places.get(int(c), "") for c in df["cell_id"]]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        return head + "\n" + out.to_string(index=False)


def cmd_hotspots(args) -> None:
    from traffic.publish import find_hotspots
    from traffic.resources import Resources

    res = Resources.from_config()
    try:
        result = find_hotspots(
            res.warehouse.path,
            args.city,
            hours=args.hours,
            limit=args.limit,
            at=args.at,
            channel=args.channel,
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(f"traffic hotspots: {exc}")
    places: dict[int, str] = {}
    if len(result.rows):
        from traffic.publish.export import cell_places

        try:  # naming the streets is a help, never a failure
            places = cell_places(
                res.warehouse.path, args.city, result.run["run_id"], result.rows["cell_id"].tolist(), res.lake
            )
        except Exception as exc:
            logging.getLogger(__name__).warning(
                "hotspots: cells not named after their streets: %s: %s", type(exc).__name__, exc
            )
    print(format_hotspots(result, places))


def cmd_sql(args) -> None:
    """Read statements only, in a session confined to the catalog; rows printed up to --limit or written to a file."""
    from traffic.publish.query import run_sql
    from traffic.resources import Resources

    text = args.query if args.query is not None else sys.stdin.read()
    out, fmt = (args.parquet, "parquet") if args.parquet is not None else (args.csv, "csv")
    limit = None if args.all else args.limit if args.limit is not None else (None if out else DEFAULT_SQL_LIMIT)
    try:
        run_sql(Resources.from_config().warehouse.path, text, limit=limit, out=out, fmt=fmt)
    except FileNotFoundError as exc:
        _fail(f"traffic sql: {exc}")


def cmd_export(args) -> None:
    """Write a published run's cells as polygons; an unknown city/run/channel/format exits 2 with one line."""
    from traffic.publish.export import ExportError, check_format, export_run
    from traffic.resources import Resources

    res = Resources.from_config()
    if args.errors:
        from traffic.verify.maps import write_error_maps

        if args.format != "png":
            raise UsageError(f"--errors draws PNG maps; got --format {args.format!r} (allowed with --errors: png)")
        for path in write_error_maps(
            args.city, run_id=args.run, out=args.out, channel=args.channel, db_path=res.warehouse.path
        ):
            print(path)
        return
    try:
        check_format(args.format)
        paths = export_run(
            args.city,
            args.format,
            run_id=args.run,
            out=args.out,
            channel=args.channel,
            db_path=res.warehouse.path,
            lake=res.lake,
        )
    except (ExportError, FileNotFoundError) as exc:
        print(f"traffic export: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:  # the folder cannot be written: name what the user gave, not a temporary file
        where = args.out or "<TRAFFIC_HOME>/exports"
        reason = exc.strerror or type(exc).__name__
        _fail(f"traffic export: --out {where}: cannot write there: {reason}; allowed: a file or folder you can write")
    for path in paths:
        print(path)


def _export_parser(sub) -> None:
    s = sub.add_parser("export", help="a published run's cells as polygons: geojson, geoparquet, png or html")
    s.add_argument("city")
    s.add_argument("--run", help="run id (default: the city's newest run)")
    s.add_argument("--format", required=True, help="geojson, geoparquet, png (one map per horizon group) or html")
    s.add_argument("--out", help="file or folder (png: folder); default <TRAFFIC_HOME>/exports/")
    s.add_argument("--channel", help="only this channel (default: all)")
    s.add_argument(
        "--errors",
        action="store_true",
        help="with --format png: the error map of a verified run (RMSE per cell, once its day happened)",
    )
    s.set_defaults(fn=cmd_export)


def _grid_load(args):
    """The array file of ``args.path``; a file the forecaster cannot use exits with the reason."""
    from traffic.grid.arrays import load_array

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
        raise UsageError(str(exc), file=args.path) from exc


def _grid_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; VALUE is read as TOML (``3``, ``1e-3``, ``[16, 16]``, ``true``), else kept as text."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--set {item!r}: expected KEY=VALUE, e.g. --set hidden_dims=[16,16]", key="--set", value=item
            )
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def cmd_grid_info(args) -> None:
    from traffic.grid.tensor import describe

    _print(describe(_grid_load(args)))


def cmd_grid_evaluate(args) -> None:
    from pathlib import Path

    from traffic.forecast.evaluation import evaluate_array
    from traffic.forecast.tables import format_report

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
        raise UsageError(str(exc)) from exc
    print(format_report(report))
    if args.json:
        from traffic.tempfiles import atomic_write

        out = Path(args.json)
        text = json.dumps(report, indent=2).encode()
        atomic_write(out, lambda fh: fh.write(text))
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
        s.add_argument("path", help="*.npz or *.parquet (formats: README, traffic/grid/arrays.py)")
        s.add_argument("--bin-minutes", type=number(int, 1, 1440), help="bin length, when the file has no times")
        s.add_argument("--start", help="first bin start (ISO 8601, naive = UTC), when the file has no times")
        s.add_argument("--channels", help="comma-separated channel names, in channel order")
        s.add_argument("--fill-gaps", action="store_true", help="insert missing time bins of an npz as unobserved")
        s.add_argument("--timezone", help="zone in which holiday dates are read (default UTC)")
        s.add_argument("--holidays", help="country code (US, CN, US-NY) or comma-separated ISO dates")
        s.set_defaults(fn=fn)
        loaders.append(s)
    s = loaders[1]
    s.add_argument("--context", type=number(int, 1, MAX_STEPS), default=12, help="context bins (default 12)")
    s.add_argument("--horizon", type=number(int, 1, MAX_STEPS), default=12, help="bins predicted (default 12)")
    ho = s.add_mutually_exclusive_group(required=True)
    ho.add_argument("--holdout-days", type=number(float, 0, MAX_DAYS, lo_open=True), help="holdout = the last N days")
    ho.add_argument(
        "--holdout-fraction",
        type=number(float, 0, 1, lo_open=True, hi_open=True),
        help="holdout = the last share of the bins, e.g. 0.1",
    )
    s.add_argument(
        "--train-days",
        type=number(float, 0, MAX_DAYS, lo_open=True),
        help="training window before the holdout (default: all of it)",
    )
    s.add_argument(
        "--budget",
        type=number(float, 0, MAX_BUDGET_S, lo_open=True),
        default=60.0,
        help="training wall-clock budget in seconds (default 60)",
    )
    s.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0)
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model/training override (repeatable)"
    )
    s.add_argument("--save-model", metavar="DIR", help="write model.pt, config.json and report.json there")
    s.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    s.add_argument("--progress", action="store_true", help="show a training progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="traffic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cities", help="list configured cities").set_defaults(fn=cmd_cities)
    for name, fn, hlp in (
        ("ingest", cmd_ingest, "validate + quarantine + write observations"),
        ("rasterize", cmd_rasterize, "aggregate observations onto the grid"),
    ):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("city")
        s.add_argument("--start", type=iso_date, help="first local date (default: first in the raw data)")
        s.add_argument("--end", type=iso_date, help="last local date (default: last in the raw data)")
        s.add_argument(
            "--until",
            metavar='"YYYY-MM-DD HH:MM"',
            help="keep only rows before this local time: a partial current day (default: the date of until)",
        )
        s.set_defaults(fn=fn)
    s = sub.add_parser("train", help="train, log and register a challenger")
    s.add_argument("city")
    s.add_argument("--as-of", type=iso_date)
    s.add_argument(
        "--budget",
        type=number(float, 0, MAX_BUDGET_S, lo_open=True),
        default=None,
        help="training wall-clock budget in seconds",
    )
    s.add_argument("--promote", action="store_true", help="also apply the promotion rule")
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("forecast", help="forecast with the champion")
    s.add_argument("city")
    s.add_argument("--as-of", type=iso_date)
    s.add_argument("--publish", action="store_true")
    s.set_defaults(fn=cmd_forecast)
    s = sub.add_parser("publish", help="publish the forecast stored by `traffic forecast` to DuckDB")
    s.add_argument("city")
    s.add_argument("--as-of", type=iso_date, help="local date of the stored forecast (default: the newest data)")
    s.set_defaults(fn=cmd_publish)
    s = sub.add_parser("run", help="all stages for one city in-process (no Airflow)")
    s.add_argument("city")
    s.add_argument("--as-of", type=iso_date)
    s.set_defaults(fn=cmd_run)
    s = sub.add_parser("nightly", help="ingest + nightly DAGs for all cities through Airflow")
    s.add_argument("cities", nargs="*")
    s.add_argument("--as-of", type=iso_date)
    s.add_argument(
        "--skip-ingest",
        action="store_true",
        help="read no feed: rasterize, train, promote, forecast and publish on what the lake already holds",
    )
    s.set_defaults(fn=cmd_nightly)
    s = sub.add_parser(
        "hotspots",
        help="where will it jam in the next hours: congestion from speeds, cells at level moderate or worse "
        "(--channel <a volume> ranks its volume index instead, cells at busy or peak)",
    )
    s.add_argument("city")
    s.add_argument("--at", help="window start: local time of the city ('2012-03-08 07:00') or ISO with offset")
    s.add_argument(
        "--hours",
        type=number(float, 0, MAX_HOURS, lo_open=True, name="hours"),
        default="3",
        help=f"window length in hours, 0 < hours <= {MAX_HOURS} (default 3)",
    )
    s.add_argument("--channel", help="only this channel, e.g. metr.speed_kmh; a volume (telraam.car) ranks busyness")
    s.add_argument(
        "--limit",
        type=number(int, 1, MAX_LIMIT, name="limit"),
        default="20",
        help=f"most cells listed, 1 <= limit <= {MAX_LIMIT} (default 20)",
    )
    s.set_defaults(fn=cmd_hotspots)
    _export_parser(sub)
    s = sub.add_parser("sql", help="query the analysts' catalog read-only (never blocks a publish)")
    s.add_argument("query", nargs="?", help="SQL; default: statements read from stdin")
    rows = s.add_mutually_exclusive_group()
    rows.add_argument(
        "--limit",
        type=number(int, 1, MAX_SQL_LIMIT, name="limit"),
        help=f"most rows per statement (default {DEFAULT_SQL_LIMIT} printed; a file gets every row)",
    )
    rows.add_argument("--all", action="store_true", help="every row, streamed")
    dest = s.add_mutually_exclusive_group()
    dest.add_argument("--csv", metavar="FILE", help="write the rows of the one statement to this CSV file")
    dest.add_argument("--parquet", metavar="FILE", help="write the rows of the one statement to this Parquet file")
    s.set_defaults(fn=cmd_sql)
    s = sub.add_parser("verify", help="score the published runs whose target days have landed (skill tables)")
    s.add_argument("city")
    s.add_argument(
        "--start", type=iso_date, help="also re-verify runs whose target days are on or after this local date"
    )
    s.add_argument("--end", type=iso_date, help="... and on or before this one")
    s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("skill", help="how good were the last days' day-ahead forecasts (per day, per horizon group)")
    s.add_argument("city")
    s.add_argument(
        "--days",
        type=number(int, 1, 3660, name="days"),
        default="7",
        help="verified target days shown, ending at the newest (1 <= days <= 3660, default 7)",
    )
    s.add_argument("--channel", default="all", help="one channel, e.g. telraam.car (default: all channels pooled)")
    s.set_defaults(fn=cmd_skill)
    s = sub.add_parser("refresh", help="re-forecast from the newest ingested bin with the champion and publish")
    s.add_argument("city")
    s.add_argument("--until", metavar='"YYYY-MM-DD HH:MM"', help="only bins that ended by this local time")
    s.set_defaults(fn=cmd_refresh)
    s = sub.add_parser("replay", help="replay a past day hour by hour through the refresh DAG (Airflow)")
    s.add_argument("city")
    s.add_argument("--date", required=True, type=iso_date, help="local date of the shipped data, YYYY-MM-DD")
    s.add_argument("--from", dest="start", default="05:00", help="first step, local HH:MM (default 05:00)")
    s.add_argument("--to", dest="end", default="10:00", help="last step, local HH:MM (default 10:00)")
    s.add_argument("--every", type=number(int, 1, 1440), default=60, help="minutes between steps (default 60)")
    s.add_argument("--top", type=number(int, 1, 1000), default=3, help="hotspots shown per step (default 3)")
    s.set_defaults(fn=cmd_replay)
    s = sub.add_parser(
        "backfill", help="airflow backfill create over the ingest DAG: every day ingested, the model retrained once"
    )
    s.add_argument("city")
    s.add_argument("--start", required=True, type=iso_date, help="first local date to ingest, YYYY-MM-DD")
    s.add_argument("--end", required=True, type=iso_date, help="last local date to ingest (the one trained on)")
    s.add_argument("--print", action="store_true", help="print the airflow command instead of running it")
    s.set_defaults(fn=cmd_backfill)
    _grid_parser(sub)
    _add_debug(p)
    return p


def _add_debug(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` on the parser and on every sub-command, so it works before or after the sub-command."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="on an error, also print the traceback",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_debug(sub, top=False)


def error_line(prog: str, exc: BaseException, *, debug: bool = False) -> str:
    """The one line ``traffic`` prints for an error.

    Parameters
    ----------
    prog : str
        ``traffic <sub-command>``.
    exc : BaseException
        A :class:`~traffic.errors.TrafficError` (a fault in the input: its message as is) or
        anything else (its type and message, and a hint to rerun with ``--debug``).
    debug : bool
        The traceback is printed already: no hint.

    Returns
    -------
    str
        One line, without a newline.
    """
    if isinstance(exc, TrafficError):
        return f"{prog}: {exc.one_line()}"
    hint = "" if debug else " (an unexpected error: run again with --debug for the traceback)"
    return f"{prog}: {type(exc).__name__}: {one_line(str(exc)) or '(no message)'}{hint}"


def _not_a_stage_failure(record: logging.LogRecord) -> bool:
    """Drop the record a failed pipeline stage logs (:data:`traffic.pipeline.STAGE_FAILED`)."""
    return not getattr(record, "traffic_stage_failed", False)


def main(argv: list[str] | None = None) -> int:
    """Run the ``traffic`` command; returns the exit code.

    Returns
    -------
    int
        0 on success; 2 for a fault in the input (:class:`~traffic.errors.TrafficError`, a bad
        option), printed as one line on stderr; 1 for any other error (a retryable
        ``TrafficError`` such as an unreachable tracking server included), also one line; 130 on
        Ctrl-C. With ``--debug`` the traceback is printed before the line.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    prog = " ".join(["traffic", args.cmd] + ([args.grid_cmd] if getattr(args, "grid_cmd", None) else []))
    stages = logging.getLogger("traffic.pipeline")
    if not args.verbose:  # a failed stage's own log record would repeat the one line printed below
        stages.addFilter(_not_a_stage_failure)
    try:
        return args.fn(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(error_line(prog, exc, debug=args.debug), file=sys.stderr)
        return 2 if isinstance(exc, TrafficError) and not exc.retryable else 1
    finally:
        stages.removeFilter(_not_a_stage_failure)


if __name__ == "__main__":
    sys.exit(main())
