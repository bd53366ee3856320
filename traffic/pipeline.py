"""Pipeline stages: the small, importable units that Airflow tasks and the CLI call.

Each stage takes a city name and partition keys (dates, run ids, paths), does its work
through the library, writes its outputs keyed by partition, and returns a small JSON-able
dict (paths, ids, counts) — never a frame. Every stage is safe to re-run.

Dates are the city's local calendar dates (``YYYY-MM-DD``), as in the lake's ``date=``
partitions.

Where data lives comes in as one :class:`traffic.resources.Resources` (``res``: the lake, the
registry, the warehouse, the folder for checkpoints and run summaries, the worker's name and
the training overrides), built once by the caller (a CLI command, an Airflow task, a bench
script) with :meth:`~traffic.resources.Resources.from_config`; the stages read nothing from the
environment themselves. A stage called without ``res`` builds it from the config. The registry
functions get ``registry=res.registry``, the ingest and grid functions ``lake=res.lake``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import pandas as pd
from upath import UPath

from traffic.config import CityConfig, load_city
from traffic.errors import NoChampion, QualityError, UsageError
from traffic.lake import Lake
from traffic.registry.names import SERVING_VARIANT_TAG
from traffic.resources import Resources

#: What made a published run (``forecast_runs.kind``): ``replay`` is a day-ahead run issued after the
#: fact for a past day with data up to that day only (:func:`replay_days`), so that it can be verified.
FORECAST_KINDS = ("nightly", "refresh", "replay")

_log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])
#: Attribute of the log record a failed stage writes (its error, logged before it propagates).
STAGE_FAILED = "traffic_stage_failed"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _logged(stage: str, summary: Callable[[Any], str]) -> Callable[[_F], _F]:
    """Log a stage's start, its outcome (``summary(result)``: counts, decisions) and its duration.

    Records go to the module logger ``traffic.pipeline`` (INFO; a failure at ERROR, with the
    exception's type and message, before it propagates, marked with :data:`STAGE_FAILED`): in an
    Airflow task they are part of the task log; the ``traffic`` command, which prints the error
    as its one line, drops the marked record (unless ``--verbose``).
    """

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(city: Any, *args: Any, **kwargs: Any) -> Any:
            name = city.name if isinstance(city, CityConfig) else str(city)
            shown = ", ".join(
                [*(_short(a) for a in args), *(f"{k}={_short(v)}" for k, v in kwargs.items() if k != "res")]
            )
            _log.info("%s %s: start (%s)", stage, name, shown)
            t0 = time.perf_counter()
            try:
                out = fn(city, *args, **kwargs)
            except Exception as exc:
                _log.error(
                    "%s %s: failed after %.1f s: %s: %s",
                    stage,
                    name,
                    time.perf_counter() - t0,
                    type(exc).__name__,
                    exc,
                    extra={STAGE_FAILED: True},  # the CLI prints the error itself: it drops this record
                )
                raise
            try:
                what = summary(out)
            except Exception as exc:  # a summary must never fail a stage
                what = f"(no summary: {type(exc).__name__}: {exc})"
            _log.info("%s %s: done in %.1f s: %s", stage, name, time.perf_counter() - t0, what)
            return out

        return cast(_F, inner)

    return wrap


def _ingest_summary(out: dict[str, Any]) -> str:
    how = "skipped (--skip-ingest), the lake holds: " if out.get("skipped") else ""
    return how + "; ".join(
        f"feed {f}: {v['partitions']} day(s) ({v['days_unchanged']} already in the lake), read {v['rows_read']:,}, "
        f"accepted {v['rows_accepted']:,}, "
        f"quarantined {v['rows_quarantined']:,}, {v['n_sources']} sources (registry {v['registry_version']})"
        + (f", partial {v['partial']}" if v["partial"] else "")
        for f, v in out["feeds"].items()
    )


def _rasterize_summary(out: dict[str, Any]) -> str:
    partial = f", partial days {out['partial']}" if out["partial"] else ""
    return f"{out['partitions']} day(s) {out['start']}..{out['end']}, {out['rows']:,} raster rows{partial}"


def _quality_summary(out: dict[str, Any]) -> str:
    feeds = "; ".join(
        f"feed {f}: accepted {v['rows_accepted']:,} of {v['rows_read']:,} rows, {v['days_with_data']} days with data"
        for f, v in out["feeds"].items()
    )
    return f"passed for window {out['start']}..{out['end']}: {feeds}"


def _train_summary(out: dict[str, Any]) -> str:
    return ("REUSED (registered whole by this training before) " if out.get("reused") else "") + (
        f"registered {out['model_name']} v{out['version']} (run {out['run_id']}): mean RMSE {out['rmse_mean']:.4f} "
        f"vs gate baseline {out['gate_baseline']!r} {out['gate_baseline_rmse_mean']:.4f}; trained "
        f"{out['train_seconds']:.1f} s on {out['device']} ({out['worker']}), stopped: {out['stopped_reason']}"
    )


def _promotion_summary(out: dict[str, Any]) -> str:
    verdict = "PROMOTED" if out["promoted"] else "not promoted"
    return (
        f"v{out['version']} {verdict} (champion before: {out['champion_before']}, now: {out.get('champion')}): "
        f"{out['reason']}"
    )


def _forecast_summary(out: dict[str, Any]) -> str:
    return (
        f"{out['kind']} forecast issued at {out['issued_at']} with {out['model_name']} v{out['model_version']}: "
        f"{out['horizon_steps']} bins, data {out['data_start']}..{out['data_end']}, written to {out['path']}"
    )


def _publish_summary(out: dict[str, Any]) -> str:
    return f"published run {out.get('run_id')} to {out['db']}: {out.get('n_rows')} rows, {out.get('n_cells')} cells"


def _refresh_summary(out: dict[str, Any]) -> str:
    return f"newest bin {out['newest_bin']}, issued at {out['issued_at']}, timings {out['timings_s']}"


def as_of_from_events(events: Iterable[Any]) -> tuple[str | None, str | None]:
    """The ``as_of`` a nightly run takes from its queued asset events: the newest complete day.

    Several ``traffic://raster/<city>`` events may be queued when the nightly run starts (a
    backfill, a slow previous run); each has ``extra["as_of"]`` and, for a partial day,
    ``extra["until"]``. The run trains on the newest ``as_of`` among the complete days (an
    older one would publish a stale forecast).

    An event of a backfill run also has ``extra["later_runs"]``: how many ingest runs of later
    days were queued or running when it was emitted (``airflow backfill create`` queues every
    day of its range at once). While every complete day queued has later runs to come, the
    nightly run is skipped: a backfill retrains once, on its last day, not once per day.

    Parameters
    ----------
    events : iterable
        Asset events with an ``extra`` mapping (Airflow's ``triggering_asset_events`` values).

    Returns
    -------
    (as_of, skip_reason)
        The newest complete day's ``as_of`` and None; or None and why the run has nothing to
        train on (only partial days queued, or only days a later ingest run of the same backfill
        supersedes); or (None, None) when no event names an ``as_of``.
    """
    complete: list[str] = []
    superseded: list[tuple[str, int]] = []
    partial: list[tuple[str, str]] = []
    for ev in events:
        extra = getattr(ev, "extra", None) or {}
        if not extra.get("as_of"):
            continue
        if extra.get("until"):
            partial.append((str(extra["as_of"]), str(extra["until"])))
        elif int(extra.get("later_runs") or 0) > 0:
            superseded.append((str(extra["as_of"]), int(extra["later_runs"])))
        else:
            complete.append(str(extra["as_of"]))
    if complete:
        newest = max([*complete, *(d for d, _ in superseded)])
        _log.info("queued as_of %s: taking the newest complete day %s", sorted(set(complete)), newest)
        return newest, None
    if superseded:
        day, later = max(superseded)
        return None, (
            f"raster of {day} is one day of a backfill with {later} later ingest run(s) queued or running; "
            "the nightly run trains once, on the backfill's last day"
        )
    if partial:
        day, until = max(partial)
        return None, (f"raster of {day} is a partial day (until {until}); the nightly run waits for the complete day")
    return None, None


def _city(city: str | CityConfig) -> CityConfig:
    return city if isinstance(city, CityConfig) else load_city(city)


def _res(res: Resources | None) -> Resources:
    """The caller's resources; built from the config only for a caller that passed none."""
    return res if res is not None else Resources.from_config()


def _days(start: str, end: str) -> list[str]:
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if d1 < d0:
        raise UsageError(f"end date {end} is before start date {start}", key="end", value=end, allowed=f">= {start}")
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def source_dates(city: str | CityConfig) -> tuple[str, str]:
    """First and last local date any raw feed of the city holds."""
    from traffic.ingest import available_dates

    c = _city(city)
    dates = sorted({d for f in c.feeds for d in available_dates(c, f)})
    if not dates:
        raise QualityError(f"city {c.name}: no raw data in any feed ({[f.observations for f in c.feeds]})")
    return dates[0], dates[-1]


def lake_dates(city: str | CityConfig, *, as_of: str | None = None, res: Resources | None = None) -> tuple[str, str]:
    """First and last local date the lake holds ingested for the city (a quality report of any feed).

    What ``traffic nightly --skip-ingest`` works on instead of :func:`source_dates` (no feed is read).

    Raises
    ------
    QualityError
        The lake holds no ingested day of the city, or not ``as_of``: one line naming the lake
        and what to run.
    """
    c, lake = _city(city), _res(res).lake
    dates = sorted({d for f in c.feeds for d in lake.list_dates("quality", city=c.name, feed=f.name)})
    if not dates:
        raise QualityError(
            f"city {c.name}: the lake {lake.root} holds no ingested day (no quality/city={c.name} partition): "
            f"nothing to re-run; run `traffic nightly {c.name}` without --skip-ingest first"
        )
    if as_of is not None and as_of not in dates:
        raise QualityError(
            f"city {c.name}: the lake {lake.root} holds no ingested {as_of} (it holds {dates[0]} .. {dates[-1]}); "
            f"pick an --as-of in that range, or run `traffic nightly {c.name} --as-of {as_of}` without --skip-ingest"
        )
    return dates[0], dates[-1]


def promotion_gate_baselines() -> tuple[str, ...]:
    """Baselines a challenger must beat to be promoted: ``[promotion] gate_baselines`` of the model spec."""
    from traffic.forecast.baselines import BASELINES
    from traffic.forecast.train import load_model_spec

    gates = tuple(load_model_spec().get("promotion", {}).get("gate_baselines", BASELINES))
    bad = sorted(set(gates) - set(BASELINES)) or ([] if gates else ["(empty)"])
    if bad:
        raise ValueError(f"models/convlstm_attention.toml [promotion] gate_baselines {bad} not in {BASELINES}")
    return gates


def training_window(city: str | CityConfig, as_of: str) -> dict[str, str]:
    """Local-date window a nightly run for ``as_of`` trains and evaluates on.

    The window ends with ``as_of`` and spans ``train_days + holdout_days`` days.
    """
    c = _city(city)
    days = c.forecast.train_days + c.forecast.holdout_days
    end = dt.date.fromisoformat(as_of)
    start = end - dt.timedelta(days=days - 1)
    return {"start": start.isoformat(), "end": end.isoformat(), "as_of": as_of}


# --------------------------------------------------------------------------- ingest


@_logged("ingest", _ingest_summary)
def ingest(
    city: str | CityConfig,
    start: str,
    end: str,
    until: str | None = None,
    *,
    progress: bool = False,
    skip_ingest: bool = False,
    res: Resources | None = None,
) -> dict[str, Any]:
    """Ingest every feed of ``city`` for local dates ``start..end`` (registry first).

    A day whose partitions the lake already holds from the same delivered rows is not written
    again (:func:`traffic.ingest.ingest_range`: ``days_unchanged`` per feed). With
    ``skip_ingest`` no feed is read: the summary is that of the quality reports the lake holds
    for the range (``skipped``), and a range the lake holds nothing of raises ``QualityError``.

    With ``until`` (local ``YYYY-MM-DD HH:MM`` or ISO 8601 with an offset) only the raw
    rows timestamped before it are kept, as a live feed that has delivered up to then: the
    day it ends early is written as a *partial* day (``until`` in its quality report; see
    :mod:`traffic.intraday`), replaced whole when it is ingested again with a later
    ``until`` or none. Writes to ``res.lake``.
    """
    from traffic.ingest import ingest_range, ingest_registry, stored_reports
    from traffic.ingest.run import REGISTRY_FILE

    c, lake = _city(city), _res(res).lake
    out: dict[str, Any] = {"city": c.name, "start": start, "end": end, "until": until, "feeds": {}}
    if skip_ingest:
        out["skipped"] = True
        held = {f.name: stored_reports(c, f, _days(start, end), lake=lake) for f in c.feeds}
        if not any(held.values()):
            lake_dates(c, res=res)  # nothing at all: the one line that says so
            raise QualityError(
                f"city {c.name}: the lake {lake.root} holds no ingested day in {start} .. {end}; "
                "run the ingest without skip_ingest first"
            )
    for feed in c.feeds:
        if skip_ingest:
            reports = held[feed.name]
            reg: dict[str, Any] = {
                "version": reports[-1]["registry_version"] if reports else None,
                "n_sources": max((r["n_sources"] for r in reports), default=0),
                "n_invalid": None,
                "by_reason": {},
            }
        elif (lake.partition("registry", city=c.name, feed=feed.name) / REGISTRY_FILE).exists():
            reg = ingest_registry(c, feed, lake=lake)  # a changed registry is written before the days read it
            reports = ingest_range(c, feed, start, end, progress=progress, until=until, lake=lake)
        else:  # a first ingest: the range is checked against the delivery before anything (the registry) is written
            reports = ingest_range(c, feed, start, end, progress=progress, until=until, lake=lake)
            reg = ingest_registry(c, feed, lake=lake)  # written by ingest_range already: the same version
        out["feeds"][feed.name] = {
            "registry_version": reg["version"],
            "n_sources": reg["n_sources"],
            "registry_rejected": reg["n_invalid"],
            "registry_rejected_by_reason": reg["by_reason"],
            "partitions": len(reports),  # the dates, plus date=undated when rows had no timestamp
            "rows_read": sum(r["rows_read"] for r in reports),
            "rows_accepted": sum(r["rows_accepted"] for r in reports),
            "rows_quarantined": sum(r["rows_quarantined"] for r in reports),
            "partial": [r["date"] for r in reports if r["partial"]],
            "days_unchanged": sum(bool(r.get("unchanged")) for r in reports) if not skip_ingest else len(reports),
        }
    return out


@_logged("rasterize", _rasterize_summary)
def rasterize(
    city: str | CityConfig,
    start: str,
    end: str,
    until: str | None = None,
    *,
    progress: bool = False,
    res: Resources | None = None,
) -> dict[str, Any]:
    """Write the city grid (once) and rasterize ``start..end`` onto it.

    A partial day (its observations' ``until``, or the ``until`` given here, whichever is
    earlier) keeps only the bins that had ended by then (:mod:`traffic.grid.rasterize`).
    Reads and writes ``res.lake``.
    """
    from traffic.grid import assignments_for, rasterize_range, write_grid

    c, lake = _city(city), _res(res).lake
    write_grid(c, lake=lake)
    reports = rasterize_range(c, start, end, assignments_for(c, lake=lake), progress=progress, until=until, lake=lake)
    return {
        "city": c.name,
        "start": start,
        "end": end,
        "until": until,
        "partitions": len(reports),
        "rows": sum(r["rows"] for r in reports),
        "partial": {r["date"]: r["until"] for r in reports if r["until"]},
    }


# --------------------------------------------------------------------------- nightly


@_logged("check_quality", _quality_summary)
def check_quality(
    city: str | CityConfig,
    as_of: str,
    *,
    max_quarantine_share: float = 0.5,
    min_days_with_data: float = 0.8,
    res: Resources | None = None,
) -> dict[str, Any]:
    """Freshness and quality gate for the nightly run of ``as_of``.

    Fails (``QualityError``) when the window's raster or quality partitions are missing,
    when the newest day is not ``as_of`` (stale data), when a day of the window is only a
    partial day (ingested or rasterized with ``until``: an intraday refresh's lake, see
    :mod:`traffic.intraday`), when fewer than ``min_days_with_data`` of the window's days
    have accepted rows, or when a day quarantined more than ``max_quarantine_share`` of its
    rows. A day whose report says ``nothing_delivered`` (asked for, outside what the delivery
    holds) has no accepted rows, is listed in the summary's ``days_nothing_delivered``, and is
    stale data when it is ``as_of``.
    """
    from traffic.intraday import parquet_until

    c, lake = _city(city), _res(res).lake
    win = training_window(c, as_of)
    days = _days(win["start"], win["end"])
    problems: list[str] = []
    summary: dict[str, Any] = {"city": c.name, **win, "feeds": {}}
    raster = set(lake.list_dates("raster", city=c.name))
    if raster and min(raster) > win["start"]:
        fc = c.forecast
        n_days = (dt.date.fromisoformat(as_of) - dt.date.fromisoformat(min(raster))).days + 1
        raise QualityError(
            f"city {c.name} as_of {as_of}: the window of {fc.window_days} days ({c.source} [forecast] "
            f"train_days = {fc.train_days} + holdout_days = {fc.holdout_days}) starts {win['start']}, but the "
            f"delivered data starts {min(raster)} ({n_days} days up to {as_of}); lower train_days or deliver more days"
        )
    missing_raster = [d for d in days if d not in raster]
    if missing_raster:
        problems.append(f"raster partitions missing for {len(missing_raster)} day(s): {missing_raster[:5]}...")
    partial_raster = {
        d: u
        for d in days
        if d in raster and (u := parquet_until(lake.partition("raster", city=c.name, date=d) / "part.parquet"))
    }
    if partial_raster:
        problems.append(
            f"raster partitions of partial day(s) {dict(list(partial_raster.items())[:5])} (date: until); "
            "the nightly trains on complete days only: rasterize them again once they are ingested in full"
        )
    for feed in c.feeds:
        have = set(lake.list_dates("quality", city=c.name, feed=feed.name))
        if as_of not in have:
            problems.append(
                f"feed {feed.name}: no quality report for {as_of} (stale data; newest {max(have) if have else None})"
            )
        read = acc = quar = 0
        with_data = 0
        bad_days = []
        partial: dict[str, str] = {}
        undelivered: list[str] = []
        for d in days:
            if d not in have:
                continue
            r = lake.read_json(lake.partition("quality", city=c.name, feed=feed.name, date=d) / "report.json")
            if r.get("until"):
                partial[d] = r["until"]
            if r.get("nothing_delivered"):  # a day asked for outside what the delivery holds (traffic.ingest.run)
                undelivered.append(d)
            read += r["rows_read"]
            acc += r["rows_accepted"]
            quar += r["rows_quarantined"]
            with_data += r["rows_accepted"] > 0
            if r["rows_read"] and r["rows_quarantined"] / r["rows_read"] > max_quarantine_share:
                bad_days.append(d)
        if as_of in undelivered:
            delivered = sorted(set(have) - set(undelivered))
            problems.append(
                f"feed {feed.name}: nothing delivered for {as_of} (stale data: its quality report says "
                f"nothing_delivered; newest delivered day {delivered[-1] if delivered else None})"
            )
        if with_data < min_days_with_data * len(days):
            problems.append(
                f"feed {feed.name}: only {with_data}/{len(days)} days have accepted rows"
                + (f" (nothing delivered for {undelivered[:5]})" if undelivered else "")
            )
        if bad_days:
            problems.append(f"feed {feed.name}: quarantine share > {max_quarantine_share:.0%} on {bad_days[:5]}")
        if partial:
            problems.append(
                f"feed {feed.name}: partial day(s) {dict(list(partial.items())[:5])} (date: ingested until); "
                "the nightly trains on complete days only: ingest them again without until"
            )
        summary["feeds"][feed.name] = {
            "rows_read": read,
            "rows_accepted": acc,
            "rows_quarantined": quar,
            "days_with_data": with_data,
            "days_nothing_delivered": undelivered,
        }
    if problems:
        raise QualityError(f"city {c.name} as_of {as_of}: " + "; ".join(problems))
    return summary


def _load_window(c: CityConfig, as_of: str, *, res: Resources | None = None):
    from traffic.grid import load_tensor

    win = training_window(c, as_of)
    return win, load_tensor(c, win["start"], win["end"], lake=_res(res).lake)


def lake_inputs(
    city: str | CityConfig, window: dict[str, str], *, res: Resources | None = None
) -> list[dict[str, Any]]:
    """The raster partitions a window reads, with their digests: what a training run logs as its inputs.

    Parameters
    ----------
    city : str or CityConfig
    window : dict
        ``{"start", "end", ...}`` local dates (:func:`training_window`).

    Returns
    -------
    list of dict
        Per existing partition file, in date order: ``path`` (its URI), ``name``
        (``raster/<city>/date=<date>``), ``sha256`` of the file, ``bytes``, ``date`` and
        ``context``: ``holdout`` for the last ``holdout_days`` dates of the window (the days
        whose bins the holdout scores), else ``training``.
    """
    import hashlib

    c, lake = _city(city), _res(res).lake
    days = _days(window["start"], window["end"])
    holdout = set(days[-c.forecast.holdout_days :])
    out: list[dict[str, Any]] = []
    for d in days:
        path = lake.partition("raster", city=c.name, date=d) / "part.parquet"
        if not path.exists():
            continue
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        out.append(
            {
                "path": str(path) if "://" in str(path) else path.as_uri(),
                "name": f"raster/{c.name}/date={d}",
                "sha256": digest.hexdigest(),
                "bytes": size,
                "date": d,
                "context": "holdout" if d in holdout else "training",
            }
        )
    return out


@_logged("train", _train_summary)
def train(
    city: str | CityConfig,
    as_of: str,
    *,
    progress: bool = False,
    budget_s: float | None = None,
    steps: int | None = None,
    res: Resources | None = None,
) -> dict[str, Any]:
    """Train a challenger on the window of ``as_of``, log and register it in MLflow.

    ``steps`` (default: ``res.train_steps`` (``TRAFFIC_TRAIN_STEPS``), else the city's ``[forecast]
    train_steps``) is the optimiser-step budget that decides the model; ``budget_s`` (default
    ``res.train_budget_s`` (``TRAFFIC_TRAIN_BUDGET_S``), else ``train_budget_s``) the wall-clock
    safety net, recorded on the run when it fires. The run is tagged with ``res.worker``.

    Before the run is logged, the current champion (if any) is scored on the challenger's
    holdout, so that the model card shows it next to the challenger and the baselines, and
    its scores are logged with the run (``champion.*``, tag ``champion.version``) for
    :func:`evaluate_and_promote`. The run's inputs are the window's raster partitions with
    their digests (:func:`lake_inputs`).

    **Exactly once.** The version is registered with an idempotency key (tag ``training.key``:
    city, ``as_of``, code version, holdout digest, step budget, ``[forecast]`` and model spec,
    :func:`traffic.registry.health.training_key`). A retried task (killed after it registered,
    or failed in a later write) whose key names a version registered whole registers nothing
    new: it returns that version, marked ``reused``.

    MLflow down: fails first, in seconds, with one line (``TrackingServerError``).
    """
    c, res = _city(city), _res(res)
    _require_tracking_server(c, res, "train", "the run, its model and the registered version are written to MLflow")

    import mlflow

    from traffic.forecast.train import holdout_digest, load_model_spec, train_forecaster
    from traffic.provenance import code_version
    from traffic.registry import champion, log_training
    from traffic.registry.health import TRAINING_KEY_TAG, recover_unfinished, registered_training, training_key

    win, grid = _load_window(c, as_of, res=res)
    fc = c.forecast
    if budget_s is None:
        budget_s = res.train_budget_s if res.train_budget_s is not None else fc.train_budget_s
    if steps is None:
        steps = res.train_steps if res.train_steps is not None else fc.train_steps
    ckpt = _checkpoint_dir(c, as_of, res)
    config = {"forecast": dataclasses.asdict(fc), "model_spec": load_model_spec()}
    key = training_key(c.name, as_of, code_version(), holdout_digest(grid, fc.holdout_days), steps, config)
    done = registered_training(c, key, registry=res.registry)
    # finish what a crashed nightly left; this training's own version (registered whole) waits for its decision
    recover_unfinished(c, registry=res.registry, keep=(done["version"],) if done else ())
    if done is not None:
        _drop_checkpoint(ckpt)
        return _trained_before(c, as_of, done, key, res)
    result = _train_resumable(
        ckpt,
        lambda **resume_kw: train_forecaster(
            grid,
            context_steps=fc.context_steps,
            horizon_steps=fc.horizon_steps,
            holdout_days=fc.holdout_days,
            train_days=fc.train_days,
            budget_s=budget_s,
            progress=progress,
            max_steps=steps,
            epochs=fc.train_epochs,
            backtest_folds=fc.backtest_folds,
            **resume_kw,
        ),
    )
    gates = promotion_gate_baselines()
    current = champion(c, registry=res.registry)
    daily = None
    if current is not None and result.backtest is not None:
        from traffic.forecast.backtest import DailyErrors

        ref = result.backtest.errors["model"]
        daily = DailyErrors(ref.day_of_bin, len(result.backtest.days), fc.horizon_steps)
    champ_metrics, note = (
        (None, "")
        if current is None
        else _score_champion(c, current, grid, res, daily=daily, recorded=result.holdout_predictions)
    )
    if daily is not None and champ_metrics is not None and math.isfinite(champ_metrics.rmse_mean):
        result.backtest.errors["champion"] = daily  # scored on the same folds: compared like every candidate
    logged = log_training(
        c,
        result,
        data_window=win,
        code_version=code_version(),
        champion_metrics=champ_metrics,
        champion_version=current["version"] if current is not None else None,
        gate_baselines=gates,
        inputs=lake_inputs(c, win, res=res),
        train_steps=steps,
        version_tags={TRAINING_KEY_TAG: key, "as_of": as_of},
        registry=res.registry,
    )
    _drop_checkpoint(ckpt)
    worker = res.worker
    mlflow.MlflowClient(tracking_uri=res.registry.tracking_uri).set_tag(logged["run_id"], "worker", worker)
    best_name, best = result.best_baseline()
    scored_gates = [k for k in gates if k in result.baselines]
    gate_name = min(scored_gates, key=lambda k: result.baselines[k].rmse_mean) if scored_gates else best_name
    return {
        "city": c.name,
        "as_of": as_of,
        **logged,
        "rmse_mean": result.metrics["model"].rmse_mean,
        "mape_mean": result.metrics["model"].mape_mean,
        "best_baseline": best_name,
        "best_baseline_rmse_mean": best.rmse_mean,
        "gate_baselines": list(gates),
        "gate_baseline": gate_name,
        "gate_baseline_rmse_mean": result.baselines[gate_name].rmse_mean,
        "ablation_rmse_mean": {k: v.rmse_mean for k, v in result.ablation.items()},
        "champion_scored": current["version"] if current is not None else None,
        "champion_rmse_mean": champ_metrics.rmse_mean if champ_metrics is not None else None,
        "champion_note": note,
        "train_seconds": result.train_seconds,
        "steps": result.extra.get("steps"),
        "device": result.device,
        "worker": worker,
        "stopped_reason": result.stopped_reason,
        "holdout_digest": result.holdout.digest,
        "training_key": key,
        "reused": False,
    }


def _trained_before(c: CityConfig, as_of: str, done: dict[str, Any], key: str, res: Resources) -> dict[str, Any]:
    """What :func:`train` returns for a training registered whole before (a retried task), from its run.

    Nothing is trained or registered; the run's ``worker`` tag is written if the first attempt
    died before it.
    """
    import mlflow

    from traffic.registry import run_data

    data = run_data(done["run_id"], registry=res.registry)
    m, tags = data["metrics"], data["tags"]
    if "worker" not in tags:
        mlflow.MlflowClient(tracking_uri=res.registry.tracking_uri).set_tag(done["run_id"], "worker", res.worker)
    gates = _run_gates(data)
    scored = {g: float(m[f"{g}.rmse_mean"]) for g in gates if f"{g}.rmse_mean" in m}
    gate = min(scored, key=lambda g: scored[g]) if scored else str(tags.get("best_baseline", ""))
    best = str(tags.get("best_baseline", gate))
    _log.warning(
        "train %s as_of %s: %s v%s was registered whole by this training before (key %s, run %s); "
        "nothing is trained or registered again",
        c.name,
        as_of,
        done["model_name"],
        done["version"],
        key,
        done["run_id"],
    )
    return {
        "city": c.name,
        "as_of": as_of,
        "run_id": done["run_id"],
        "model_name": done["model_name"],
        "version": done["version"],
        "model_uri": done["model_uri"],
        "rmse_mean": m.get("model.rmse_mean", math.nan),
        "mape_mean": m.get("model.mape_mean", math.nan),
        "best_baseline": best,
        "best_baseline_rmse_mean": m.get(f"{best}.rmse_mean", math.nan),
        "gate_baselines": list(gates),
        "gate_baseline": gate,
        "gate_baseline_rmse_mean": m.get(f"{gate}.rmse_mean", math.nan),
        "ablation_rmse_mean": {},
        "champion_scored": tags.get("champion.version"),
        "champion_rmse_mean": m.get("champion.rmse_mean"),
        "champion_note": "",
        "train_seconds": m.get("train.seconds", math.nan),
        "steps": int(m["train.steps"]) if "train.steps" in m else None,
        "device": tags.get("train.device"),
        "worker": tags.get("worker", res.worker),
        "stopped_reason": tags.get("train.stopped_reason"),
        "holdout_digest": tags.get("holdout.digest"),
        "training_key": key,
        "reused": True,
    }


def _require_tracking_server(c: CityConfig, res: Resources, stage: str, needs: str) -> None:
    """Fail in seconds, with one line, when the stage needs MLflow and its server is down.

    The line is that of :func:`traffic.registry.health.check_tracking_server` (the URI and the
    cause), followed by what ``stage`` of the city needs the server for (``needs``).
    """
    from traffic.errors import TrackingServerError
    from traffic.registry.health import check_tracking_server

    try:
        check_tracking_server(res.registry.tracking_uri)
    except TrackingServerError as exc:
        raise TrackingServerError(f"{exc}; {stage} {c.name} needs it: {needs}") from exc


def last_served(city: str | CityConfig, *, res: Resources | None = None) -> dict[str, Any] | None:
    """What served the city's newest stored forecast (its ``meta.json``), read from the lake alone.

    Returns
    -------
    dict or None
        ``issued_at``, ``model_kind`` (``model`` or a baseline's name), ``model_name``,
        ``model_version``, ``mlflow_run_id`` and ``serving``; None when no forecast is stored.
    """
    c, lake = _city(city), _res(res).lake
    metas = lake.partition_files("forecasts", filename="meta.json", city=c.name)
    if not metas:
        return None
    meta = lake.read_json(metas[-1])  # issued_at=YYYYMMDDTHHMMSSZ: the newest sorts last
    keys = ("issued_at", "model_kind", "model_name", "model_version", "mlflow_run_id", "serving")
    return {k: meta.get(k) for k in keys}


def _forecast_needs(c: CityConfig, res: Resources) -> str:
    """What a forecast of the city reads from MLflow, after what served its newest stored forecast."""
    last = last_served(c, res=res)
    if last is None:
        return "no forecast is stored yet; what serves (the champion, or a baseline) is decided in the registry"
    kind = str(last.get("model_kind") or "model")
    if kind != "model":
        return (
            f"it is served by baseline {kind!r} (newest forecast issued {last['issued_at']}): the baseline is refitted "
            "from the lake, but which baseline serves, and the run that scored it "
            f"({last.get('mlflow_run_id')}), are the registry's serving decision"
        )
    return (
        f"it is served by {last.get('model_name')} v{last.get('model_version')} (newest forecast issued "
        f"{last['issued_at']}): the champion's weights and intervals are MLflow artifacts"
    )


def _checkpoint_dir(c: CityConfig, as_of: str, res: Resources) -> Path:
    """Where the nightly training of ``as_of`` checkpoints: ``<res.home>/checkpoints/<city>/<as_of>``."""
    return res.home / "checkpoints" / c.name / as_of


def _train_resumable(ckpt: Path, run: Any) -> Any:
    """``run(checkpoint_dir=..., resume=True)``: a killed training resumes from its checkpoint.

    A checkpoint that cannot be resumed (written by other code or another configuration) is
    dropped with a warning and the training starts afresh.
    """
    try:
        return run(checkpoint_dir=ckpt, resume=True)
    except ValueError as exc:
        if "checkpoint" not in str(exc) or not ckpt.exists():
            raise
        _log.warning("%s: %s; dropping it and training afresh", ckpt, exc)
        _drop_checkpoint(ckpt)
        return run(checkpoint_dir=ckpt, resume=False)


def _drop_checkpoint(ckpt: Path) -> None:
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)


def _score_champion(
    c: CityConfig, current: dict[str, Any], grid: Any, res: Resources, *, daily: Any = None, recorded: Any = None
) -> tuple[Any, str]:
    """The champion's metrics on the holdout of ``grid`` (the challenger's), and a note when it cannot serve.

    The champion is scored as the variant it serves (tag ``serving.variant``: the full model, base +
    head or the base); ``daily`` (:class:`traffic.forecast.backtest.DailyErrors`) also receives its
    errors per target day, for the paired comparisons of the backtest.

    A champion that predicts another number of bins than ``[forecast] horizon_steps`` (the city's
    horizon changed) cannot serve this horizon: its metrics are NaN (it counts as beaten) and the
    note says why.
    """
    from traffic.forecast.combination import COMBINATIONS
    from traffic.forecast.inference import evaluate_module
    from traffic.forecast.result import HorizonMetrics
    from traffic.registry import load_serving_module, load_version_module

    fc = c.forecast
    variant = _variant_of(current)
    if variant in COMBINATIONS:
        return _score_champion_combination(c, current, grid, res, daily=daily, recorded=recorded)
    if variant == "model":
        module = load_version_module(current["model_uri"], registry=res.registry)
    else:
        module = load_serving_module(current["run_id"], current["model_uri"], variant=variant, registry=res.registry)
    steps = _predicted_steps(module, grid, fc.context_steps)
    if steps != fc.horizon_steps:
        nan = [float("nan")] * fc.horizon_steps
        note = (
            f"; champion v{current['version']} predicts {steps} bins, not the {fc.horizon_steps} of "
            "[forecast] horizon_steps: it cannot serve this horizon (no score)"
        )
        return HorizonMetrics(mae=nan, rmse=nan, n=[0] * fc.horizon_steps), note
    metrics = evaluate_module(
        module,
        grid,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        daily=daily,
    )
    return metrics, ""


def _score_champion_combination(
    c: CityConfig, current: dict[str, Any], grid: Any, res: Resources, *, daily: Any, recorded: Any
) -> tuple[Any, str]:
    """A champion that serves a combination, scored as it would have served tonight's holdout.

    Its network members are its own (eager copies of its run); its baselines are refitted on
    tonight's window at serve time, so tonight's baseline forecasts (``recorded``, the training
    run's :class:`traffic.forecast.combination.HoldoutPredictions`) stand for them; the weights
    are its run's serving weights.
    """
    import numpy as np

    from traffic.forecast.backtest import DailyErrors
    from traffic.forecast.combination import HoldoutPredictions, RecordingErrors
    from traffic.forecast.inference import evaluate_module
    from traffic.forecast.result import HorizonMetrics
    from traffic.registry import load_serving_module
    from traffic.registry.mlflow_registry import load_combination
    from traffic.registry.promotion import NETWORK_VARIANTS

    fc = c.forecast
    nan = [float("nan")] * fc.horizon_steps
    unscored = HorizonMetrics(mae=nan, rmse=nan, n=[0] * fc.horizon_steps)
    combo = load_combination(current["run_id"], _variant_of(current), registry=res.registry)
    if recorded is None or combo.groups[-1][2] != fc.horizon_steps:
        return unscored, f"; champion v{current['version']} (a combination) was not scored on this run's folds"
    n_days = int(recorded.day_of_bin.max()) + 1  # the holdout's target days (day_index's codes)
    own = HoldoutPredictions(recorded.day_of_bin, recorded.seen, recorded.nightly)
    for m in combo.members:
        if m in NETWORK_VARIANTS:
            module = load_serving_module(current["run_id"], current["model_uri"], variant=m, registry=res.registry)
            evaluate_module(
                module,
                grid,
                context_steps=fc.context_steps,
                horizon_steps=fc.horizon_steps,
                holdout_days=fc.holdout_days,
                daily=RecordingErrors(recorded.day_of_bin, n_days, fc.horizon_steps, own, m),
            )
    pts = recorded.points()
    x = np.stack([(own if m in own.values else recorded).matrix([m])[:, 0] for m in combo.members], axis=1)
    errors = daily if daily is not None else DailyErrors(recorded.day_of_bin, n_days, fc.horizon_steps)
    errors.add_points(combo.predict_points(x, pts) - pts.y, pts.day, pts.step, pts.channel, len(combo.channels))
    n = errors.n.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.where(n > 0, errors.sae.sum(axis=0) / np.maximum(n, 1), np.nan)
    return HorizonMetrics(mae=mae.tolist(), rmse=errors.rmse().tolist(), n=n.tolist()), ""


def _variant_of(version: dict[str, Any]) -> str:
    """The variant a registered version serves (tag ``serving.variant``; the full ``model`` by default)."""
    return str((version.get("tags") or {}).get(SERVING_VARIANT_TAG) or "model")


def _run_gates(data: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The gating baselines a run was logged with (tag ``promotion.gate_baselines``), else today's spec."""
    tag = data["tags"].get("promotion.gate_baselines")
    return tuple(g for g in tag.split(",") if g) if tag else promotion_gate_baselines()


def fallback_baseline(scores: dict[str, float], gates: tuple[str, ...]) -> str:
    """The baseline that serves while there is no champion: the gating baseline with the lowest mean RMSE.

    Parameters
    ----------
    scores : dict
        ``{baseline: mean RMSE on the holdout}`` (NaN or absent: not scored).
    gates : tuple of str
        The gating baselines, in order of preference when none was scored.

    Returns
    -------
    str
    """
    import math

    scored = [g for g in gates if math.isfinite(scores.get(g, math.nan))]
    return min(scored, key=lambda g: scores[g]) if scored else gates[0]


@_logged("evaluate_and_promote", _promotion_summary)
def evaluate_and_promote(
    city: str | CityConfig, as_of: str, trained: dict[str, Any], *, res: Resources | None = None
) -> dict[str, Any]:
    """Apply the promotion rule to a trained challenger: it must beat every gating baseline and the champion.

    The gating baselines are ``[promotion] gate_baselines`` (every baseline, GBM included, by
    default), as recorded on the run. The champion's scores on the challenger's holdout are
    those :func:`train` logged with the run when the champion is still the version it scored;
    otherwise (the champion moved since, or an older run) it is scored here.

    When no champion exists after the decision (no version has passed yet: a city's first
    nights), the reason says which baseline serves instead: :func:`forecast` publishes the best
    gating baseline's forecast, labelled with its name in ``forecast_runs.model_kind``.

    Returns
    -------
    dict
        ``promoted``, ``reason``, ``champion_before``, ``champion_rmse_mean``, ``serving``
        (``{"kind": "model", "version"}`` or ``{"kind": "baseline", "baseline"}``) and the
        aliases after the decision (:func:`traffic.registry.promote`).
    """
    import math

    from traffic.forecast.baselines import BASELINES
    from traffic.forecast.result import HorizonMetrics
    from traffic.registry import champion, decide_promotion, promote, run_data, run_metrics
    from traffic.registry.promotion import pct_change

    c, res = _city(city), _res(res)
    reg = res.registry
    run_id = trained["run_id"]
    data = run_data(run_id, registry=reg)
    if "backtest.folds" in data["metrics"]:
        return _decide_on_backtest(c, trained, data, res)
    # a run logged before backtests: the point rule on its one holdout
    challenger = run_metrics(run_id, "model", registry=reg)
    n_h = len(challenger.rmse)
    gates = _run_gates(data)
    gate_metrics: dict[str, HorizonMetrics] = {}
    unscored = []
    for g in gates:
        if f"{g}.rmse_mean" in data["metrics"]:
            gate_metrics[g] = run_metrics(run_id, g, registry=reg)
        else:  # a gate the run did not score cannot be shown to be beaten
            unscored.append(g)
            gate_metrics[g] = HorizonMetrics(mae=[math.nan] * n_h, rmse=[math.nan] * n_h, n=[0] * n_h)
    current = champion(c, registry=reg)
    champ_metrics = None
    note = ""
    if current is not None and str(current["version"]) != str(trained["version"]):
        if data["tags"].get("champion.version") == str(current["version"]) and "champion.rmse_mean" in data["metrics"]:
            champ_metrics = run_metrics(run_id, "champion", registry=reg)  # scored by train() on this holdout
            note = trained.get("champion_note") or ""
        else:
            _, grid = _load_window(c, as_of, res=res)
            champ_metrics, note = _score_champion(c, current, grid, res)
    decision = decide_promotion(challenger, champ_metrics, gate_metrics)
    extra = note
    if unscored:
        extra += f"; gating baseline(s) {unscored} were not scored in run {run_id}"
    for name in (b for b in BASELINES if b not in gates and f"{b}.rmse_mean" in data["metrics"]):
        # a baseline taken out of [promotion] gate_baselines is still scored: say so, with its number
        ref = data["metrics"][f"{name}.rmse_mean"]
        extra += f"; baseline {name!r} {ref:.4f} ({pct_change(decision.challenger_rmse, ref)}) is not in [promotion] gate_baselines"
    champion_after = str(trained["version"]) if decision.promote else (current["version"] if current else None)
    serving: dict[str, Any] = {"kind": "model", "version": champion_after}
    if champion_after is None:
        base = fallback_baseline({k: v.rmse_mean for k, v in gate_metrics.items()}, gates)
        score = gate_metrics[base].rmse_mean
        extra += (
            f"; no version passes yet (no champion): publishing baseline {base!r} "
            f"(mean RMSE {score:.4f} on the same holdout) until one does"
        )
        serving = {"kind": "baseline", "baseline": base}
    if extra:
        decision = dataclasses.replace(decision, reason=decision.reason + extra)
    record = (
        {"kind": "model", "variant": "model", "version": str(champion_after)}
        if serving["kind"] == "model"
        else {"kind": "baseline", "baseline": serving["baseline"], "run_id": run_id, "version": str(trained["version"])}
    )
    promoted = promote(c, trained["version"], decision, serving=record, registry=reg)
    return {
        "city": c.name,
        "version": trained["version"],
        "promoted": decision.promote,
        "reason": decision.reason,
        "champion_before": current["version"] if current else None,
        "champion_rmse_mean": champ_metrics.rmse_mean if champ_metrics else None,
        "gate_baselines": list(gates),
        "serving": serving,
        **{k: v for k, v in promoted.items() if k not in ("city", "version")},
    }


def _folds_text(metrics: dict[str, float], tags: dict[str, str]) -> str:
    """What a backtest decision rests on: ``backtest over 4 folds (28 days; 1 holiday fold reported apart)``."""
    folds, days = int(metrics.get("backtest.folds", 0)), int(metrics.get("backtest.days", 0))
    hol = int(metrics.get("backtest.holiday_folds", 0))
    text = f"backtest over {folds} fold{'s' if folds != 1 else ''} ({days} target days"
    if hol:
        which = tags.get("backtest.holiday_folds", "")
        text += f"; {hol} holiday fold{'s' if hol != 1 else ''}{' ' + which if which else ''} reported apart"
        if hol == folds:
            text += ", and every fold holds a holiday: the figures are not those of a regular week"
    return text + ")"


def _decide_on_backtest(c: CityConfig, trained: dict[str, Any], data: dict[str, Any], res: Resources) -> dict[str, Any]:
    """The backtest rule (:func:`traffic.registry.promotion.decide_serving`) applied to a nightly run.

    The candidates are the run's network variants and gating baselines, scored on its folds; the
    incumbent is the champion (scored on the same folds by :func:`train`, ``backtest.champion.*``)
    or the baseline that serves (the registered model's ``serving`` tag). The decision, with the
    folds, the differences and their intervals, is written on the version, its card and its run
    (tag ``promotion.decision``).
    """
    import mlflow

    from traffic.forecast.backtest import CANDIDATES, comparisons_from_metrics
    from traffic.registry import champion, decide_serving, promote, serving_record
    from traffic.registry.promotion import CHAMPION, Decision

    reg, run_id, version = res.registry, trained["run_id"], str(trained["version"])
    m = data["metrics"]
    gates = _run_gates(data)
    names = [*CANDIDATES, CHAMPION]
    scores = {n: float(m[f"backtest.{n}.rmse_mean"]) for n in names if f"backtest.{n}.rmse_mean" in m}
    current = champion(c, registry=reg)
    record = serving_record(c, registry=reg)
    note = ""
    if current is not None and str(current["version"]) != version:
        incumbent: str | None = CHAMPION
        if data["tags"].get("champion.version") != str(current["version"]):
            scores.pop(CHAMPION, None)  # the champion moved since this run scored it: not comparable
            note = f"; champion v{current['version']} was not scored on this run's folds"
        elif trained.get("champion_note"):
            note = str(trained["champion_note"])
    elif record is not None and record.get("kind") == "baseline":
        incumbent = str(record["baseline"])
    else:
        incumbent = None
    if CHAMPION in scores and incumbent != CHAMPION:
        scores.pop(CHAMPION)
    comparisons = comparisons_from_metrics(m, list(scores))
    d = decide_serving(scores, comparisons, gates=gates, incumbent=incumbent, folds_text=_folds_text(m, data["tags"]))
    if d.serves == CHAMPION and current is not None:
        serving: dict[str, Any] = {"kind": "model", "version": str(current["version"]), "variant": _variant_of(current)}
    elif d.kind == "model":
        serving = {"kind": "model", "version": version, "variant": d.serves}
    else:
        serving = {"kind": "baseline", "baseline": d.serves}
    record_out = (
        {**serving}
        if serving["kind"] == "model"
        else {"kind": "baseline", "baseline": d.serves, "run_id": run_id, "version": version}
    )
    table = ["| candidate | backtest mean RMSE | best vs it (90 % interval) |", "|---|---:|---:|"]
    for n, v in sorted(scores.items(), key=lambda kv: kv[1] if math.isfinite(kv[1]) else math.inf):
        cmp = d.against.get(n)
        table.append(f"| {n} | {v:.4f} | {cmp.text() if cmp is not None else '(best)' if n == d.best else 'n/a'} |")
    gate_scores = {g: scores[g] for g in gates if g in scores}
    best_gate = min(gate_scores, key=lambda g: gate_scores[g]) if gate_scores else ""
    note += _budget_note(m, data["tags"])
    live = _live_alerts(c, res)
    if live:  # stale or broken, said out loud: what live verification found since the last decision
        note += f"; live verification ({len(live)} alert{'s' if len(live) != 1 else ''}): " + " | ".join(live[:5])
        if len(live) > 5:
            note += f" | ... and {len(live) - 5} more (traffic skill {c.name})"
    decision = Decision(
        promote=d.promote,
        reason=d.reason + note,
        challenger_rmse=scores.get(d.serves if d.promote else "model", math.nan),
        baseline=best_gate,
        baseline_rmse=gate_scores.get(best_gate, math.nan),
        champion_rmse=(scores.get(CHAMPION, math.nan) if current is not None else None),
        table="\n".join(table),
    )
    promoted = promote(c, version, decision, serving=record_out, registry=reg)
    mlflow.MlflowClient(tracking_uri=reg.tracking_uri).set_tag(run_id, "promotion.decision", decision.reason[:5000])
    return {
        "city": c.name,
        "version": version,
        "promoted": d.promote,
        "reason": decision.reason,
        "champion_before": current["version"] if current else None,
        "champion_rmse_mean": scores.get(CHAMPION),
        "gate_baselines": list(gates),
        "serving": serving,
        "best_candidate": d.best,
        **{k: v for k, v in promoted.items() if k not in ("city", "version")},
    }


def _live_alerts(c: CityConfig, res: Resources) -> list[str]:
    """The live-verification alerts of the city's last ``verify_days`` (:func:`traffic.verify.alerts`).

    A catalog that cannot be read (none yet, a first night) has nothing to say; the decision is
    made on the backtest either way.
    """
    from traffic.verify import alerts

    try:
        return alerts(c, res=res)
    except Exception as exc:  # the decision must not fail on the verification report
        _log.warning("city %s: live-verification alerts unavailable for the decision: %s", c.name, exc)
        return []


def _budget_note(metrics: dict[str, float], tags: dict[str, str]) -> str:
    """What a decision says when the run's wall-clock guard stopped it short of its step budget (else ``""``).

    The run's network variants were trained on fewer steps than asked: the decision is made on
    them (the guard recorded it: tag ``train.stopped_reason`` = ``wall_clock_cap``), and says so.
    """
    if tags.get("train.stopped_reason") != "wall_clock_cap":
        return ""
    done, asked = metrics.get("train.steps"), metrics.get("train.max_steps")
    steps = f"{int(done)} of the {int(asked)} steps asked" if done is not None and asked else "fewer steps than asked"
    guard, expected = metrics.get("train.wall_clock_guard_s"), metrics.get("train.expected_train_s")
    why = (
        f" (its wall-clock guard of {guard:.0f} s was {guard / expected:.1f} times the {expected:.0f} s its first "
        "steps promised)"
        if guard is not None and expected and math.isfinite(expected)
        else ""
    )
    return (
        f"; NOTE: the network was stopped by the wall-clock safety net after {steps}{why}: "
        "this decision is on a smaller training budget than asked"
    )


def _predicted_steps(module: Any, grid: Any, context_steps: int) -> int:
    """Bins a (registered) module predicts: one probe forecast from the grid's last bin."""
    from traffic.forecast.inference import forecast_after

    return int(forecast_after(module, grid, -1, context_steps=context_steps).shape[0])


def forecast_origin(city: str | CityConfig, as_of: str) -> pd.Timestamp:
    """The nightly forecast origin for ``as_of``: local midnight that starts day ``as_of + 1``, in UTC."""
    c = _city(city)
    nxt = dt.date.fromisoformat(as_of) + dt.timedelta(days=1)
    return pd.Timestamp(nxt.isoformat()).tz_localize(c.timezone).tz_convert("UTC")


def serving(city: str | CityConfig, *, res: Resources | None = None) -> dict[str, Any]:
    """What forecasts for a city now: its champion, or the fallback baseline while it has none.

    Returns
    -------
    dict
        ``{"kind": "model", "variant", "model_name", "version", "run_id", "model_uri", ...}`` (the
        champion, :func:`traffic.registry.champion`, and the variant of it that serves: ``model``,
        ``base_head`` or ``base``); ``{"kind": "baseline", "baseline", "rmse_mean", "model_name",
        "version", "run_id"}`` when the last backtest decision chose a baseline (the registered
        model's ``serving`` tag, :func:`traffic.registry.serving_record`); or, for a registry whose
        decisions predate that tag and with no version passed yet,
        ``{"kind": "baseline", "baseline", "rmse_mean", "model_name", "version", "run_id"}``: the
        gating baseline with the lowest mean RMSE on the holdout of the newest version's run
        (the ``challenger``), which decided that nothing passes (:func:`evaluate_and_promote`).

    Raises
    ------
    NoChampion
        When the city has no registered version at all (nothing was trained and scored yet).
    """
    from traffic.registry import CHALLENGER, champion, run_data, serving_record

    c, reg = _city(city), _res(res).registry
    record = serving_record(c, registry=reg)
    if record is not None and record.get("kind") == "baseline":
        # the backtest decided that a baseline serves (it beat the networks significantly, or none passed yet)
        data = run_data(record["run_id"], registry=reg)
        name = str(record["baseline"])
        key = next((k for k in (f"backtest.{name}.rmse_mean", f"{name}.rmse_mean") if k in data["metrics"]), None)
        return {
            "kind": "baseline",
            "baseline": name,
            "rmse_mean": float(data["metrics"][key]) if key else None,
            "model_name": record.get("model_name") or f"traffic-{c.name}",
            "version": record.get("version"),
            "run_id": record["run_id"],
        }
    current = champion(c, registry=reg)
    if current is not None:
        return {"kind": "model", "variant": _variant_of(current), **current}
    newest = champion(c, CHALLENGER, registry=reg)
    if newest is None or not newest["run_id"]:
        raise NoChampion(
            f"city {c.name}: no champion in the registry yet and no trained version to take a baseline from; "
            "nothing approved to forecast with"
        )
    data = run_data(newest["run_id"], registry=reg)
    gates = _run_gates(data)
    scores = {g: float(data["metrics"][f"{g}.rmse_mean"]) for g in gates if f"{g}.rmse_mean" in data["metrics"]}
    name = fallback_baseline(scores, gates)
    return {
        "kind": "baseline",
        "baseline": name,
        "rmse_mean": scores.get(name),
        "model_name": newest["model_name"],
        "version": newest["version"],
        "run_id": newest["run_id"],
    }


@_logged("forecast", _forecast_summary)
def forecast(
    city: str | CityConfig,
    as_of: str,
    *,
    issued_at: str | pd.Timestamp | None = None,
    kind: str = "nightly",
    res: Resources | None = None,
) -> dict[str, Any]:
    """Forecast ``horizon_steps`` bins from an origin with the champion (else a baseline); write ``forecasts/``.

    Without a champion (no version has passed the promotion gate yet) the best gating baseline
    of the newest version's run serves (:func:`serving`): it is fitted on the window's
    training days exactly as that run scored it (:func:`traffic.forecast.fallback.fit_baseline`)
    and forecasts from the same origin, with 80 % bounds from its residuals on training
    samples. The run is labelled with the baseline's name (``model_kind``, e.g. ``gbm``) and
    ``model_version`` ``baseline-<name>``; ``mlflow_run_id`` is the run that scored it. Once a
    champion exists, the champion serves.

    Parameters
    ----------
    city : str or CityConfig
    as_of : str
        Last local date of data the forecast reads (the window of :func:`training_window`).
    issued_at : str or Timestamp, optional
        The forecast origin (a bin edge, UTC when naive): the context is the ``context_steps``
        bins before it and targets start at it. Default: the nightly origin, local midnight
        after ``as_of`` — the day-ahead forecast covers every bin of local day ``as_of + 1``.
    kind : {"nightly", "refresh", "replay"}
        Recorded on the run (``forecast_runs.kind``); ``replay``: see :func:`replay_days`.

    Returns
    -------
    dict
        The run's metadata, with ``path``: the forecast ``.npz``, relative to the lake root
        (:func:`lake_file` resolves it), in the one npz layout of :mod:`traffic.grid.arrays`
        (``values`` the forecast, ``lower``, ``upper`` ``(H_out, C, H, W)``; ``times`` the target
        bin starts; ``mask`` where the cell observed the channel in the window and at the target's
        local time of day (:func:`traffic.forecast.observed.observed_targets`: only those targets
        are published); ``window_coverage`` ``(C, H, W)``; ``reference``; ``cell_ids``;
        ``channels``; read it with :func:`traffic.grid.arrays.read_forecast`), and ``serving``
        (what :func:`serving` chose). Every kind's values and bounds went through
        :func:`traffic.forecast.plausible.plausible_forecast` (in the channel's range, the value
        inside its interval).

    Raises
    ------
    TrackingServerError
        First, in seconds, when the MLflow tracking server is down (one line: the URI, the cause
        and what the city's forecast needs from it: :func:`last_served`).
    NoChampion
        When the city has no registered version yet (nothing to serve, not even a baseline).
    ValueError
        When the origin leaves fewer than ``context_steps`` bins of the window before it.
    """
    if kind not in FORECAST_KINDS:
        raise ValueError(f"kind {kind!r} not in {FORECAST_KINDS}")
    c, res = _city(city), _res(res)
    lake = res.lake
    _require_tracking_server(c, res, "forecast", _forecast_needs(c, res))

    import numpy as np

    from traffic.forecast.combination import COMBINATIONS
    from traffic.forecast.inference import forecast_after
    from traffic.forecast.intervals import INTERVAL_LEVEL, INTERVAL_METHOD
    from traffic.forecast.observed import observed_targets
    from traffic.forecast.plausible import plausible_forecast
    from traffic.publish import reference_stats
    from traffic.registry import load_intervals, load_serving_module
    from traffic.registry.mlflow_registry import variant_artefacts

    current = serving(c, res=res)
    win, grid = _load_window(c, as_of, res=res)
    origin = forecast_origin(c, as_of) if issued_at is None else _utc(issued_at)
    # the context ends with the last bin that starts before the origin
    t_last = int(grid.times.searchsorted(origin, side="left")) - 1  # (Timestamp.value is ns whatever the unit)
    n_ctx = c.forecast.context_steps
    if t_last < n_ctx - 1 or grid.times[t_last] + pd.Timedelta(seconds=c.bin_seconds) != origin:
        raise ValueError(
            f"city {c.name}: forecast origin {origin} needs {n_ctx} bins of data before it inside the window "
            f"{grid.times[0]} .. {grid.times[-1]} ([forecast] context_steps = {n_ctx}; the origin must be a bin edge)"
        )
    grid = grid.slice_time(0, t_last + 1)  # nothing at or after the origin is read
    bounds: dict[str, Any] = {}
    if current["kind"] == "model" and str(current.get("variant")) in COMBINATIONS:
        pred, lower, upper, spec = _combination_forecast(c, grid, current, t_last, res)
        bounds = {} if lower is None else {"lower": lower, "upper": upper}
        model_kind, model_version = "model", str(current["version"])
    elif current["kind"] == "model":
        variant = str(current.get("variant") or "model")
        module = load_serving_module(
            current["run_id"], current["model_uri"], variant=variant, registry=res.registry
        )  # eager copy: no pt2 deserializing
        pred = forecast_after(module, grid, t_last, context_steps=n_ctx)  # (H_out, C, H, W)
        intervals = load_intervals(current["run_id"], variant=variant, registry=res.registry)
        # a model logged before intervals existed has no bounds: the file holds none, the rows get NULL
        if intervals is not None:
            bounds = dict(zip(("lower", "upper"), intervals.bounds(pred), strict=True))
        model_kind, model_version = "model", str(current["version"])
        spec = {
            "kind": "model",
            "candidate": variant,
            "model_uri": current["model_uri"],
            "run_id": current["run_id"],
            "artefacts": variant_artefacts(current["run_id"], variant),
        }
    else:
        pred, lower, upper = _baseline_forecast(c, grid, current["baseline"], t_last)
        bounds = {"lower": lower, "upper": upper}
        model_kind, model_version = current["baseline"], f"baseline-{current['baseline']}"
        spec = {
            "kind": "baseline",
            "candidate": current["baseline"],
            "run_id": current["run_id"],
            # refitted from the stored data on every forecast, by this rule: reproducible from the lake
            "fit": {
                "data": [grid.times[0].isoformat(), grid.times[-1].isoformat()],
                "train_days": c.forecast.train_days,
                "holdout_days": c.forecast.holdout_days,
                "seed": 0,
            },
        }
    # every kind (the champion or a variant, a fallback baseline; nightly, refresh): values that can be true,
    # inside their interval
    pred, lower, upper = plausible_forecast(pred, grid.channels, bounds.get("lower"), bounds.get("upper"))
    bounds = {} if lower is None else {"lower": lower, "upper": upper}
    h_out = pred.shape[0]
    targets = pd.date_range(origin, periods=h_out, freq=pd.Timedelta(seconds=c.bin_seconds))
    # has_data: the cell observed this channel somewhere in the window, and at the target's time of day
    # (a camera that never counts at night publishes no night); coverage: in which share of its bins
    observed = grid.mask.any(axis=0)  # (C, H, W)
    has_data = observed[None] & observed_targets(grid, targets)  # (H_out, C, H, W)
    coverage = grid.mask.mean(axis=0).astype(np.float32)  # (C, H, W)
    ref = reference_stats(grid.values, grid.mask, list(grid.channels))
    out = lake.partition("forecasts", city=c.name, issued_at=origin.strftime("%Y%m%dT%H%M%SZ")) / "forecast.npz"
    from traffic.grid.writers import write_npz

    write_npz(  # the one npz layout; the forecast's own arrays are traffic.grid.arrays.FORECAST_EXTRAS
        out,
        values=pred.astype(np.float32),
        times=targets,
        mask=has_data,
        channels=grid.channels,
        cell_ids=grid.cell_ids,
        extra={**bounds, "reference": ref.astype(np.float32), "window_coverage": coverage},
    )

    meta = {
        "city": c.name,
        "as_of": as_of,
        "kind": kind,
        "issued_at": origin.isoformat(),
        "model_name": current.get("model_name") or f"traffic-{c.name}",
        "model_version": model_version,
        "model_kind": model_kind,
        "mlflow_run_id": current["run_id"],
        "data_start": grid.times[0].isoformat(),
        "data_end": grid.times[-1].isoformat(),
        "horizon_steps": h_out,
        "bin_seconds": c.bin_seconds,
        "interval_level": INTERVAL_LEVEL if bounds else None,
        "interval_method": INTERVAL_METHOD if bounds else None,
        "serving": {k: str(v) for k, v in current.items() if k in ("kind", "baseline", "version", "variant")},
        # what forecast, and its fitted artefacts: a run can always be reproduced (forecast_runs.model_spec)
        "model_spec": json.dumps(spec, sort_keys=True),
        "path": lake_relative(out, lake),  # relative to the lake: a copied TRAFFIC_HOME reads its own file
    }
    lake.write_json(meta, out.parent / "meta.json")
    return meta


def lake_relative(path: UPath | str, lake: Lake | None = None) -> str:
    """``path`` relative to the root of ``lake`` (default: the configured one), as stored in ``meta.json``.

    A path outside the lake is returned unchanged.
    """
    root, text = str((lake or Lake.from_config()).root).rstrip("/"), str(path)
    return text[len(root) + 1 :] if text.startswith(root + "/") else text


def lake_file(path: str, lake: Lake | None = None) -> UPath:
    """A path stored by :func:`lake_relative`: relative ones under the root of ``lake`` (default: the configured one).

    Absolute paths and URIs are returned as they are.
    """
    from pathlib import PurePosixPath

    if "://" in path or PurePosixPath(path).is_absolute():
        return UPath(path)
    return (lake or Lake.from_config()).root / path


def _fit_baseline(c: CityConfig, grid: Any, name: str) -> Any:
    """Baseline ``name`` fitted on ``grid`` as the nightly run fitted it for its holdout.

    The city's ``[forecast]`` split and the model spec's ``[training]`` ``val_fraction`` and
    ``ridge_lags``, seed 0 (that of :func:`train`): a
    :class:`~traffic.forecast.fallback.FittedBaseline`.
    """
    from traffic.forecast.fallback import fit_baseline
    from traffic.forecast.train import load_model_spec

    tr = load_model_spec()["training"]
    fc = c.forecast
    return fit_baseline(
        grid,
        name,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        train_days=fc.train_days,
        val_fraction=float(tr["val_fraction"]),
        ridge_lags=int(tr["ridge_lags"]),
    )


def _baseline_forecast(c: CityConfig, grid: Any, name: str, t_last: int) -> tuple[Any, Any, Any]:
    """Forecast and 80 % bounds ``(H_out, C, H, W)`` of baseline ``name`` after bin ``t_last`` of ``grid``.

    Fitted on ``grid`` as the nightly run fitted it for its holdout (:func:`_fit_baseline`).
    """
    return _fit_baseline(c, grid, name).forecast(t_last)


#: Baseline members of registered combinations, fitted once on their version's window and kept
#: for the process: ``(lake root, city, run id, member) -> (FittedBaseline, train.end)`` (the newest few).
_VERSION_BASELINES: dict[tuple[str, str, str, str], tuple[Any, pd.Timestamp]] = {}
_VERSION_BASELINES_KEPT = 16


def _version_baselines(
    c: CityConfig, current: dict[str, Any], names: list[str], origin: pd.Timestamp, res: Resources
) -> dict[str, Any] | None:
    """Baseline members ``names`` of the serving version, fitted on the window that version was trained on.

    Every member of a combination is what the version's run scored and weighted: the network from
    its registered copy, a baseline fitted on the same window (the data window of its ``as_of``
    tag, read once, split as the run split it: :func:`_fit_baseline`). Fitted once per process and
    version, a baseline forecasts every origin after it (the nightly forecast, each replayed day,
    each refresh) from that origin's context
    (:meth:`~traffic.forecast.fallback.FittedBaseline.forecast_on`); the version's window ends
    before any day a replay may forecast (:func:`replay_days` refuses the others). None when the
    version records no ``as_of`` or its training data do not end before ``origin`` (a backfilled
    day served by a later version): refit on the forecast's window then, which reads nothing from
    the origin on.
    """
    as_of = (current.get("tags") or {}).get("as_of")
    if not as_of or not current.get("run_id"):
        return None
    keys = {m: (str(res.lake.root), c.name, str(current["run_id"]), m) for m in names}
    cached = [_VERSION_BASELINES[k] for k in keys.values() if k in _VERSION_BASELINES]
    train_end = cached[0][1] if cached else _serving_train_end(current, res)
    if train_end is None or train_end >= origin:
        return None
    missing = [m for m, k in keys.items() if k not in _VERSION_BASELINES]
    if missing:
        _, grid = _load_window(c, str(as_of), res=res)
        for m in missing:
            while len(_VERSION_BASELINES) >= _VERSION_BASELINES_KEPT:
                _VERSION_BASELINES.pop(next(iter(_VERSION_BASELINES)))
            _VERSION_BASELINES[keys[m]] = (_fit_baseline(c, grid, m), train_end)
        _log.info(
            "combination %s v%s: members %s fitted on the version's window (as_of %s)",
            c.name,
            current.get("version"),
            missing,
            as_of,
        )
    return {m: _VERSION_BASELINES[k][0] for m, k in keys.items()}


def _combination_forecast(
    c: CityConfig, grid: Any, current: dict[str, Any], t_last: int, res: Resources
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Forecast, 80 % bounds and spec of a version that serves a per-horizon combination.

    Every member forecasts from the same origin: the version's network variants from its eager
    copies (with their interval models), the baselines fitted on the version's own window as its
    run fitted them, once per process (:func:`_version_baseline`). The forecast is the weighted sum with the
    run's serving weights (``combination/weights.json``, :mod:`traffic.forecast.combination`: those
    of the nightly origin when it is issued at local midnight, else the all-origin ones); so
    are the bounds (the weighted sum of the members' bounds: an interval for the combination when
    the members' errors move together, wider otherwise). Bounds are left out when a network
    member has none (a run logged before intervals).
    """
    from traffic.forecast.combination import nightly_origins
    from traffic.forecast.inference import forecast_after
    from traffic.registry import load_intervals, load_serving_module
    from traffic.registry.mlflow_registry import load_combination, variant_artefacts
    from traffic.registry.promotion import NETWORK_VARIANTS

    name = str(current["variant"])
    combo = load_combination(current["run_id"], name, registry=res.registry)
    n_ctx = c.forecast.context_steps
    origin = grid.times[t_last] + pd.Timedelta(seconds=c.bin_seconds)  # the first target bin's start (UTC)
    preds: dict[str, Any] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    artefacts: dict[str, Any] = {}
    for m in combo.members:
        if m in NETWORK_VARIANTS:
            module = load_serving_module(current["run_id"], current["model_uri"], variant=m, registry=res.registry)
            preds[m] = forecast_after(module, grid, t_last, context_steps=n_ctx)
            iv = load_intervals(current["run_id"], variant=m, registry=res.registry)
            if iv is not None:
                lows[m], highs[m] = iv.bounds(preds[m])
            artefacts[m] = variant_artefacts(current["run_id"], m)
    baselines = [m for m in combo.members if m not in NETWORK_VARIANTS]
    fitted = _version_baselines(c, current, baselines, origin, res) if baselines else {}
    for m in baselines:
        if fitted is None:  # a version without its as_of, or a day before its data ended: this window's fit
            preds[m], lows[m], highs[m] = _baseline_forecast(c, grid, m, t_last)
        else:
            preds[m], lows[m], highs[m] = fitted[m].forecast_on(grid, t_last)
    fresh = grid.mask[t_last]  # (C, H, W): the cell saw the channel in the origin's bin (the weights' regime)
    nightly = bool(nightly_origins(pd.DatetimeIndex([origin]), c.timezone)[0])  # the day-ahead forecast's weights
    pred = combo.apply(preds, fresh, nightly)
    full = len(lows) == len(combo.members)
    lower, upper = (combo.apply(lows, fresh, nightly), combo.apply(highs, fresh, nightly)) if full else (None, None)
    spec = {
        "kind": "model",
        "candidate": name,
        "model_uri": current["model_uri"],
        "run_id": current["run_id"],
        "weights": combo.to_json(),
        "artefacts": {"combination": f"runs:/{current['run_id']}/combination/weights.json", **artefacts},
        "fit": {
            "data": [grid.times[0].isoformat(), grid.times[-1].isoformat()],
            "train_days": c.forecast.train_days,
            "holdout_days": c.forecast.holdout_days,
            "seed": 0,
        },
    }
    return pred, lower, upper, spec


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    """A timestamp in UTC (naive = UTC)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def stored_forecast(city: str | CityConfig, as_of: str, *, res: Resources | None = None) -> dict[str, Any]:
    """The nightly forecast that :func:`forecast` stored for ``as_of``: its ``meta.json`` (the input of :func:`publish`).

    Parameters
    ----------
    city : str or CityConfig
    as_of : str
        Local date the forecast was made for; its run is the partition
        ``forecasts/city=<city>/issued_at=<nightly origin of as_of>`` (:func:`forecast_origin`).

    Returns
    -------
    dict
        The run's metadata as :func:`forecast` returned it (``path`` names its ``forecast.npz``).

    Raises
    ------
    PublishError
        When no forecast was stored for ``as_of``, naming the missing partition and the command
        that writes it (``traffic forecast <city> --as-of <as_of>``). Nothing is computed here.
    """
    from traffic.errors import PublishError

    c, lake = _city(city), _res(res).lake
    issued = forecast_origin(c, as_of).strftime("%Y%m%dT%H%M%SZ")
    meta_path = lake.partition("forecasts", city=c.name, issued_at=issued) / "meta.json"
    if not meta_path.exists():
        raise PublishError(
            f"city {c.name}: no forecast stored for as_of {as_of}: partition forecasts/city={c.name}/"
            f"issued_at={issued} has no meta.json ({meta_path})",
            file=str(meta_path),
            value=as_of,
            hint=f"the forecast stage writes it: traffic forecast {c.name} --as-of {as_of}",
        )
    return cast(dict[str, Any], lake.read_json(meta_path))


#: Optional keys of a forecast's meta.json that describe the run (absent in older files).
_PUBLISH_META_OPTIONAL = ("model_kind", "kind", "interval_level", "interval_method", "model_spec")


@_logged("publish", _publish_summary)
def publish(city: str | CityConfig, forecast_meta: dict[str, Any], *, res: Resources | None = None) -> dict[str, Any]:
    """Publish a forecast written by :func:`forecast` to the analysts' store (atomic per run).

    Reads the forecast ``.npz`` named by ``forecast_meta["path"]`` (relative to the lake root, or
    absolute as older runs wrote it) with :func:`traffic.grid.arrays.read_forecast`: the
    forecast, target times, where the model had data, ``reference``, ``cell_ids``, ``channels``
    and, when present, ``lower``/``upper`` (interval bounds; NULL bounds without them) and the
    per channel share of observed window bins; an optional ``cell_coverage`` (H, W) is used too.
    ``forecast_meta`` may carry ``model_kind``, ``kind``, ``interval_level``, ``interval_method`` and
    ``model_spec`` (a JSON text, or a mapping stored as one).
    The run records the code version of this publish (:func:`traffic.provenance.code_version`).
    A nightly publish logs the run's maps to its MLflow run: it checks the tracking server first
    and, when it is down, fails in seconds with one line (``TrackingServerError``) before it
    writes anything, so the retried task publishes and logs both; a refresh logs no maps and
    needs no server.
    :func:`stored_forecast` reads the ``forecast_meta`` the forecast stage stored for a date.
    """
    c, resources = _city(city), _res(res)
    maps = forecast_meta.get("kind") not in ("refresh", "replay")  # a replay logs none either
    if maps:  # the maps go to the forecast's MLflow run: fail before anything is written
        _require_tracking_server(
            c, resources, "publish", f"the run's maps are logged to MLflow run {forecast_meta.get('mlflow_run_id')}"
        )

    from traffic.grid import read_grid
    from traffic.grid.arrays import read_forecast
    from traffic.provenance import code_version
    from traffic.publish import publish_forecast

    fc = read_forecast(lake_file(forecast_meta["path"], resources.lake))
    grid = read_grid(c, lake=resources.lake)
    cent = grid.geometry.centroid.to_crs(4326)
    cells = pd.DataFrame(
        {
            "cell_id": grid["cell_id"].to_numpy(),
            "row": grid["row"].to_numpy(),
            "col": grid["col"].to_numpy(),
            "centroid_lon": cent.x.to_numpy(),
            "centroid_lat": cent.y.to_numpy(),
            "polygon_wkt": grid.geometry.to_crs(4326).to_wkt().to_numpy(),
        }
    )
    db = resources.warehouse.path
    keys = ("issued_at", "model_name", "model_version", "mlflow_run_id", "data_start", "data_end")
    run = {k: forecast_meta[k] for k in (*keys, "horizon_steps", "bin_seconds")}
    run.update({k: forecast_meta[k] for k in _PUBLISH_META_OPTIONAL if forecast_meta.get(k) is not None})
    if "model_spec" in run and not isinstance(run["model_spec"], str):  # a JSON text in forecast_runs.model_spec
        import json

        run["model_spec"] = json.dumps(run["model_spec"], sort_keys=True)
    run["timezone"] = c.timezone
    run["code_version"] = code_version()  # the code that publishes these rows (forecast_runs.code_version)
    z = fc.extra
    has_bounds = "lower" in z and "upper" in z
    published = publish_forecast(
        db,
        city=c.name,
        run=run,
        forecast=fc.values,
        target_times=fc.times,
        channels=list(fc.channels or ()),
        cells=cells,
        cell_ids=fc.cell_ids,
        has_data=fc.mask,
        reference=z["reference"],
        lower=z["lower"] if has_bounds else None,
        upper=z["upper"] if has_bounds else None,
        coverage=z.get("window_coverage"),
        cell_coverage=z.get("cell_coverage"),
    )
    from traffic.publish.export import log_published_maps  # never raises: a map must not fail a publish

    if not maps:
        # an hourly refresh logs no maps: they would cost seconds per refresh and pile 24 sets a day
        # onto the champion's training run; a replay neither (maps of any run: `traffic export`)
        published["maps"] = []
    else:
        published["maps"] = log_published_maps(
            db,
            c.name,
            published["run_id"],
            run["mlflow_run_id"],
            tracking_uri=resources.registry.tracking_uri,
            lake=resources.lake,
        )
    return {"city": c.name, "db": str(db), **published}


# --------------------------------------------------------------------------- intraday


def refresh_window(city: str | CityConfig, until: str | None = None) -> dict[str, str]:
    """Local dates an intraday refresh up to ``until`` (default: now) ingests and rasterizes.

    The day of ``until`` (partial) and, in the first hours after local midnight, the day
    before (its last bins ended after the previous refresh), so that its tail is not left
    to the nightly ingest. Returns ``{"start", "end", "until"}`` with ``until`` as local
    ``YYYY-MM-DD HH:MM``.
    """
    from traffic.intraday import local_date, parse_until

    c = _city(city)
    cut = parse_until(until, c.timezone) if until else pd.Timestamp.now(tz="UTC").floor("min")
    start = local_date(cut - pd.Timedelta(hours=2), c.timezone)
    return {
        "start": start,
        "end": local_date(cut, c.timezone),
        "until": cut.tz_convert(c.timezone).strftime("%Y-%m-%d %H:%M"),
    }


@_logged("refresh", _refresh_summary)
def refresh(city: str | CityConfig, *, until: str | None = None, res: Resources | None = None) -> dict[str, Any]:
    """Re-forecast from the newest ingested bin with the current champion and publish it (no training).

    Finds the newest bin with observations in the raster (that ended by ``until``, when
    given: local ``YYYY-MM-DD HH:MM`` or ISO 8601 with an offset), forecasts from the end
    of that bin (``kind="refresh"``) and publishes the run.

    Without a champion it behaves as the nightly :func:`forecast` does: the fallback baseline
    of the newest version's run (:func:`serving`) is refitted on the window ending at the
    refresh origin (the same split rule, so its training days move with the window) and
    forecasts from the newest bin, labelled with its name in ``model_kind``. Refitting costs
    seconds (GBM: one fit per refresh) and lasts only until a version passes.

    Returns
    -------
    dict
        ``city``, ``issued_at``, ``newest_bin``, ``forecast`` (the :func:`forecast` meta),
        ``publish`` (the :func:`publish` result) and ``timings_s``.

    Raises
    ------
    TrackingServerError
        First, in seconds, when the MLflow tracking server is down (as :func:`forecast`).
    NoChampion
        No registered version yet: nothing to forecast with, not even a baseline.
    QualityError
        No observed bin in the newest raster partitions (before ``until``).
    """
    c, res = _city(city), _res(res)
    t0 = time.perf_counter()
    _require_tracking_server(c, res, "refresh", _forecast_needs(c, res))

    from traffic.grid import newest_observed_bin
    from traffic.intraday import local_date

    newest = newest_observed_bin(c, until, lake=res.lake)
    if newest is None:
        raise QualityError(
            f"city {c.name}: no observed bin in the newest raster partitions"
            + (f" before until {until!r}" if until else "")
            + f" under {res.lake.partition('raster', city=c.name)}; ingest and rasterize first"
        )
    issued_at = newest + pd.Timedelta(seconds=c.bin_seconds)
    t1 = time.perf_counter()
    meta = forecast(c, local_date(newest, c.timezone), issued_at=issued_at.isoformat(), kind="refresh", res=res)
    t2 = time.perf_counter()
    published = publish(c, meta, res=res)
    t3 = time.perf_counter()
    return {
        "city": c.name,
        "until": until,
        "newest_bin": newest.isoformat(),
        "issued_at": meta["issued_at"],
        "forecast": meta,
        "publish": published,
        "timings_s": {
            "newest_bin": round(t1 - t0, 3),
            "forecast": round(t2 - t1, 3),
            "publish": round(t3 - t2, 3),
            "total": round(t3 - t0, 3),
        },
    }


# --------------------------------------------------------------------------- verification


def _verify_summary(out: dict[str, Any]) -> str:
    waiting = f", {len(out['waiting'])} waiting for their target days" if out["waiting"] else ""
    live = "; ".join(f"live.* on MLflow run {k}: {v['status']}" for k, v in out["live"].items())
    return (
        f"verified {len(out['verified'])} run(s), {len(out['unchanged'])} unchanged{waiting}; "
        f"{len(out['alerts'])} alert(s){'; ' + live if live else ''}; timings {out['timings_s']}"
    )


@_logged("verify", _verify_summary)
def verify(
    city: str | CityConfig, start: str | None = None, end: str | None = None, *, res: Resources | None = None
) -> dict[str, Any]:
    """Score every published run whose target days have landed against the raster (:mod:`traffic.verify`).

    Runs never verified are verified once the raster holds complete partitions for all their target
    days (until then they wait: logged, not an error); with ``start``/``end`` (local dates) every run
    whose target days fall in that range is verified again (late data). Results go to the catalog
    (``forecast_skill``, ``cell_skill``, views ``skill_daily``, ``skill_by_horizon``), per-run files
    written whole or not at all (identical rows write nothing); the serving MLflow runs get
    ``live.*`` metrics; what is stale or broken is logged as WARNING (:func:`traffic.verify.alerts`).

    Returns
    -------
    dict
        ``verified``, ``unchanged``, ``waiting``, ``live``, ``alerts``, ``timings_s``
        (:func:`traffic.verify.stage.verify_city`).

    Raises
    ------
    GridMismatchError
        A due run was published on another grid than the city's now (names the run and both digests).
    UsageError
        ``end`` before ``start``.
    """
    from traffic.verify.stage import verify_city

    c, res = _city(city), _res(res)
    if start and end:
        _days(start, end)  # end before start: UsageError
    return verify_city(c, res, start, end)


def _replay_summary(out: dict[str, Any]) -> str:
    refused = f"; refused {[r['as_of'] for r in out['refused']]}" if out["refused"] else ""
    return f"replayed {[r['as_of'] for r in out['runs']]} with {out['serving']}{refused}; timings {out['timings_s']}"


def _serving_train_end(current: dict[str, Any], res: Resources) -> pd.Timestamp | None:
    """Last bin the serving thing was fitted on: ``train.end`` of the MLflow run that serves (None: not recorded)."""
    from traffic.registry import run_data

    if not current.get("run_id"):
        return None
    text = run_data(str(current["run_id"]), registry=res.registry)["params"].get("train.end")
    return _utc(text) if text else None


@_logged("replay_days", _replay_summary)
def replay_days(
    city: str | CityConfig, newest: str | None = None, *, days: int | None = None, res: Resources | None = None
) -> dict[str, Any]:
    """Issue and publish the day-ahead runs of the ``days`` days before ``newest`` with what serves now (no training).

    For each local day D in ``newest - days .. newest - 1``: :func:`forecast` with ``as_of = D``
    (data up to D only, the nightly origin after D), ``kind = "replay"``, then :func:`publish` (no
    maps). What serves now (:func:`serving`) was fitted on data before its run's holdout, so a day
    whose targets come after that (``train.end`` of the serving MLflow run) is forecast as it would
    have been; a day whose targets lie inside that training window is **refused** (it would be scored
    on data the model learnt), and so is every day when the run does not record ``train.end``. A day
    that already has a nightly run (forecast file or published run) is left alone: a replay never
    replaces a real nightly. :func:`verify` then scores them against D+1.

    Parameters
    ----------
    city : str or CityConfig
    newest : str, optional
        The newest local date of data (default: the newest raster partition); it is not replayed.
    days : int, optional
        Days before ``newest`` (default the city's ``[forecast] verify_days``).

    Returns
    -------
    dict
        ``serving`` (what served), ``runs`` (``[{"as_of", "run_id", "issued_at"}]``), ``refused``,
        ``skipped`` and ``failed`` (``[{"as_of", "reason"}]``: a day the forecast stage could not
        forecast is logged and left out, the others go on), ``timings_s`` (``forecast``, ``publish``, ``total``).
    """
    from traffic.publish import list_runs, run_id_for

    c, res = _city(city), _res(res)
    t0 = time.perf_counter()
    if newest is None:
        dates = res.lake.list_dates("raster", city=c.name)
        if not dates:
            raise QualityError(f"city {c.name}: no raster partitions to replay; ingest and rasterize first")
        newest = dates[-1]
    n = c.forecast.verify_days if days is None else int(days)
    current = serving(c, res=res)
    who = f"model v{current['version']}" if current["kind"] == "model" else f"baseline {current['baseline']}"
    train_end = _serving_train_end(current, res)
    published = list_runs(res.warehouse.path)
    out: dict[str, Any] = {"city": c.name, "serving": who, "runs": [], "refused": [], "skipped": [], "failed": []}
    t_fc = t_pub = 0.0
    last = dt.date.fromisoformat(newest)
    for k in range(n, 0, -1):
        day = (last - dt.timedelta(days=k)).isoformat()
        origin = forecast_origin(c, day)
        if train_end is None or origin <= train_end:
            why = (
                f"targets from {origin} lie inside the training window of what serves ({who}: run "
                f"{current.get('run_id')} trained on data up to {train_end})"
                if train_end is not None
                else f"the serving run {current.get('run_id')} records no train.end: cannot show the day is unseen"
            )
            _log.info("replay %s %s refused: %s", c.name, day, why)
            out["refused"].append({"as_of": day, "reason": why})
            continue
        stamp = origin.strftime("%Y%m%dT%H%M%SZ")
        meta_path = res.lake.partition("forecasts", city=c.name, issued_at=stamp) / "meta.json"
        run_id = run_id_for(c.name, origin)
        kind = res.lake.read_json(meta_path).get("kind") if meta_path.exists() else None
        if (kind is not None and kind != "replay") or (kind is None and run_id in published):
            why = f"a {kind or 'published'} run {run_id} exists for it; a replay never replaces it"
            _log.info("replay %s %s skipped: %s", c.name, day, why)
            out["skipped"].append({"as_of": day, "reason": why})
            continue
        t = time.perf_counter()
        try:
            meta = forecast(c, day, kind="replay", res=res)
        except (ValueError, QualityError) as exc:  # e.g. a window too short for the baseline's split that day
            _log.warning("replay %s %s failed: %s: %s", c.name, day, type(exc).__name__, exc)
            out["failed"].append({"as_of": day, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        finally:
            t_fc += time.perf_counter() - t
        t = time.perf_counter()
        pub = publish(c, meta, res=res)
        t_pub += time.perf_counter() - t
        out["runs"].append({"as_of": day, "run_id": pub["run_id"], "issued_at": meta["issued_at"]})
    out["timings_s"] = {
        "forecast": round(t_fc, 2),
        "publish": round(t_pub, 2),
        "total": round(time.perf_counter() - t0, 2),
    }
    return out


# --------------------------------------------------------------------------- whole run


def run_city(
    city: str, *, as_of: str | None = None, progress: bool = False, res: Resources | None = None
) -> dict[str, Any]:
    """All stages for one city in-process (what the two DAGs do, without Airflow); the summary goes to ``runs/``."""
    c, res = _city(city), _res(res)
    first, last = source_dates(c)
    as_of = as_of or last
    timings: dict[str, float] = {}
    out: dict[str, Any] = {"city": c.name, "as_of": as_of}

    def stage(name, fn, *a, **kw):
        t0 = time.perf_counter()
        r = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t0, 2)
        out[name] = r
        return r

    stage("ingest", ingest, c, first, last, progress=progress, res=res)
    stage("rasterize", rasterize, c, first, last, progress=progress, res=res)
    stage("check_quality", check_quality, c, as_of, res=res)
    trained = stage("train", train, c, as_of, progress=progress, res=res)
    stage("promote", evaluate_and_promote, c, as_of, trained, res=res)
    meta = stage("forecast", forecast, c, as_of, res=res)
    stage("publish", publish, c, meta, res=res)
    out["timings_s"] = timings
    res.lake.write_json(out, UPath(res.home / "runs" / f"{c.name}_{as_of}.json"))
    return out
