"""Traffic DAGs, generated from the city configs (``cities/*.toml``).

Per city:

``ingest_<city>`` (daily, 01:00 city time)
    registry + observations of every feed → validated, quarantined, UTC Parquet →
    rasterized onto the city grid. Ingests yesterday's local date, or ``params.start``
    .. ``params.end`` when given (backfills, first load); ``params.until`` (local
    ``YYYY-MM-DD HH:MM``) keeps only rows before it (a partial last day). Emits the asset
    ``traffic://raster/<city>`` with the newest date (and ``until``) in the event's ``extra``;
    ``params.skip_ingest`` reads no feed and rasterizes what the lake holds (``traffic nightly
    --skip-ingest``); a day whose delivered bytes the lake holds already is not ingested again;
    the nightly run skips an event of a partial day. Then ``verify``: every published run whose
    target days have now landed is scored against the raster (``traffic.pipeline.verify``:
    the catalog's ``forecast_skill``/``skill_daily``/``skill_by_horizon``, ``live.*`` metrics on
    the serving MLflow run, WARNINGs when the live skill is stale or a feed stopped); a run whose
    day has not landed waits (logged; the task succeeds).

``nightly_<city>`` (triggered by that asset)
    freshness/quality gate → training window → train (``queue="gpu"``, ``pool="gpu"``)
    → evaluate and promote (the challenger must beat every gating baseline, GBM included, and
    the champion) → forecast with the champion → publish to DuckDB. While no version has
    passed (a city's first nights) the best gating baseline's forecast is published instead,
    labelled with its name in ``forecast_runs.model_kind``.
    Asset-triggered runs have no logical date, so the partition travels explicitly:
    ``params.as_of``, else the newest ``extra["as_of"]`` among the queued asset events of
    complete days (``traffic.pipeline.as_of_from_events``); only partial days queued = skipped.
    A backfill of the ingest DAG (``traffic backfill``: ``airflow backfill create``) ingests
    every day of its range but retrains once: each backfill day's event carries
    ``extra["later_runs"]`` (ingest runs of later days still queued or running,
    ``traffic.airflow_runner.later_runs``), and a nightly run whose events all have later runs
    coming is skipped, so only the range's last day trains.

    Airflow's partitioned assets (``PartitionedAssetTimetable``, ``dag_run.partition_key``,
    installed since Airflow 3.2) are not used for ``as_of``, because they do not fit this
    DAG: they create one nightly run per partition key, so a backlog or a backfill would
    retrain once per day instead of once on the newest day; a partial day (``until``) would
    carry a key and start a run all the same; and the ingest run's own partition (its run
    date) is not the day it ingests (the day before), so the key would still be computed by
    hand. The few keys of ``extra`` say all of that in one place.

``refresh_<city>`` (hourly at minute 5, no catch-up, one run at a time)
    resolve the window (``params.until``, local ``YYYY-MM-DD HH:MM``; default: the run's
    time) → ingest today's partial day up to ``until`` (and yesterday, in the first two
    hours after midnight) → rasterize it (only the bins that had ended by ``until``) →
    refresh: re-forecast from the newest observed bin with the current champion (or, without
    one, the fallback baseline, as the nightly run) and publish the run (no training). No
    version registered yet = the refresh task is skipped. It emits
    no asset: a partial day never triggers the nightly run, whose freshness gate refuses
    partial days anyway (see ``traffic.intraday``). ``traffic replay`` drives it hour by
    hour over a past day.

This file only wires tasks: the work lives in ``traffic.pipeline`` and heavy imports
(torch, geopandas, mlflow) happen inside the tasks, never at parse time. Each task builds its
:class:`traffic.resources.Resources` once from the worker's configuration (:func:`_resources`)
and passes it to the stage. Every task is
wrapped in :func:`traffic.airflow_runner.fail_fast`: a fault that a retry cannot fix (a bad
city file, an unreadable delivery, a failed quality gate) is logged as one line and fails
the task without its retries; the retries stay for transient faults. A city file that does
not validate gets only a stand-in ``ingest_<city>`` whose one task fails with the error, so the
other cities keep their DAGs.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

from traffic.airflow_runner import fail_fast, later_runs
from traffic.config import list_cities, load_city
from traffic.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "traffic",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=20),
    "execution_timeout": dt.timedelta(minutes=30),
}


def raster_asset(city: str) -> Asset:
    """The rasterized lake partitions of a city, as an Airflow asset."""
    return Asset(name=f"raster_{city}", uri=f"traffic://raster/{city}")


def _resources():
    """The task's :class:`traffic.resources.Resources`, from the worker's configuration (built per task)."""
    from traffic.resources import Resources

    return Resources.from_config()


def _yesterday_local(tz: str) -> str:
    ctx = get_current_context()
    when = ctx.get("logical_date") or ctx["dag_run"].run_after
    return (when.in_timezone(tz).date() - dt.timedelta(days=1)).isoformat()


def make_ingest_dag(city: str):
    cfg = load_city(city)
    asset = raster_asset(city)

    @dag(
        dag_id=f"ingest_{city}",
        description=f"Ingest and rasterize {city}'s feeds ({', '.join(f.name for f in cfg.feeds)})",
        schedule="0 1 * * *",
        start_date=dt.datetime(2000, 1, 1, tzinfo=cfg.tz),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["traffic", "ingest", city],
        params={
            "start": Param(
                None, type=["null", "string"], format="date", description="first local date (default: yesterday)"
            ),
            "end": Param(None, type=["null", "string"], format="date", description="last local date (default: start)"),
            "until": Param(
                None,
                type=["null", "string"],
                description=f"keep only rows before this local time 'YYYY-MM-DD HH:MM' ({cfg.timezone}): a partial day",
            ),
            "skip_ingest": Param(
                False,
                type="boolean",
                description="read no feed: rasterize (and verify) the days the lake already holds (traffic nightly --skip-ingest)",
            ),
        },
    )
    def ingest_dag():
        @task
        @fail_fast
        def partition_range() -> dict[str, Any]:
            params = get_current_context()["params"]
            start = params.get("start") or _yesterday_local(cfg.timezone)
            return {
                "start": start,
                "end": params.get("end") or start,
                "until": params.get("until"),
                "skip_ingest": bool(params.get("skip_ingest")),
            }

        @task
        @fail_fast
        def ingest(window: dict[str, str]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.ingest(
                city,
                window["start"],
                window["end"],
                until=window.get("until"),
                skip_ingest=bool(window.get("skip_ingest")),
                res=_resources(),
            )

        @task(outlets=[asset])
        @fail_fast
        def rasterize(window: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            out = pipeline.rasterize(city, window["start"], window["end"], until=window.get("until"), res=_resources())
            ctx = get_current_context()
            extra: dict[str, Any] = {"as_of": window["end"], "start": window["start"]}
            if window.get("until"):
                extra["until"] = window["until"]
            if ctx["dag_run"].run_type == "backfill":  # the nightly run trains on the backfill's last day only
                extra["later_runs"] = later_runs(ctx["ti"], ctx["dag_run"], cfg.timezone)
            ctx["outlet_events"][asset].extra = extra
            return out

        @task(retries=2, execution_timeout=dt.timedelta(minutes=15))
        @fail_fast
        def verify(window: dict[str, str], rasterized: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            # runs never verified, and every run whose target days were (re)rasterized now: late data
            out = pipeline.verify(city, window["start"], window["end"], res=_resources())
            log.info(
                "verify %s: verified %s, unchanged %d, waiting %s, live metrics %s",
                city,
                out["verified"],
                len(out["unchanged"]),
                [w["run_id"] for w in out["waiting"]],
                {k: v["status"] for k, v in out["live"].items()},
            )
            for line in out["alerts"]:
                log.warning("%s", line)
            return {
                "verified": out["verified"],
                "unchanged": out["unchanged"],
                "waiting": [w["run_id"] for w in out["waiting"]],
                "alerts": out["alerts"],
                "timings_s": out["timings_s"],
            }

        window = partition_range()
        verify(window, rasterize(window, ingest(window)))

    return ingest_dag()


def make_nightly_dag(city: str):
    cfg = load_city(city)
    asset = raster_asset(city)

    @dag(
        dag_id=f"nightly_{city}",
        description=f"Nightly retrain, promote, forecast and publish for {city}",
        schedule=[asset],
        start_date=dt.datetime(2000, 1, 1, tzinfo=cfg.tz),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["traffic", "nightly", city],
        params={"as_of": Param(None, type=["null", "string"], format="date", description="last local date of data")},
    )
    def nightly_dag():
        @task(retries=0)
        @fail_fast
        def resolve_as_of() -> str:
            from traffic import pipeline

            ctx = get_current_context()
            if ctx["params"].get("as_of"):
                log.info("nightly %s: as_of %s from params", city, ctx["params"]["as_of"])
                return ctx["params"]["as_of"]
            events = ctx.get("triggering_asset_events") or {}
            # several events may be queued: the newest complete day wins (pipeline.as_of_from_events)
            as_of, skip = pipeline.as_of_from_events(ev for evs in events.values() for ev in evs)
            if skip:
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException(skip)
            if as_of:
                return as_of
            day = _yesterday_local(cfg.timezone)
            log.info("nightly %s: no asset event names an as_of; taking yesterday %s", city, day)
            return day

        @task(retries=1)
        @fail_fast
        def check_quality(as_of: str) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.check_quality(city, as_of, res=_resources())

        @task
        @fail_fast
        def training_window(as_of: str, quality: dict[str, Any]) -> dict[str, str]:
            from traffic import pipeline

            return pipeline.training_window(city, as_of)

        @task(queue="gpu", pool="gpu", execution_timeout=dt.timedelta(hours=2))
        @fail_fast
        def train(window: dict[str, str]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.train(city, window["as_of"], res=_resources())

        @task
        @fail_fast
        def evaluate_and_promote(window: dict[str, str], trained: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.evaluate_and_promote(city, window["as_of"], trained, res=_resources())

        @task
        @fail_fast
        def forecast(window: dict[str, str], promotion: dict[str, Any]) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from traffic import pipeline

            try:
                return pipeline.forecast(city, window["as_of"], res=_resources())
            except pipeline.NoChampion as exc:  # no version registered at all: nothing to serve, not even a baseline
                raise AirflowSkipException(str(exc)) from exc

        @task
        @fail_fast
        def publish(meta: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.publish(city, meta, res=_resources())

        as_of = resolve_as_of()
        window = training_window(as_of, check_quality(as_of))
        trained = train(window)
        publish(forecast(window, evaluate_and_promote(window, trained)))

    return nightly_dag()


#: The refresh is a short job that the next hour's run supersedes: quick retries, short timeouts.
REFRESH_ARGS: dict[str, Any] = {
    **DEFAULT_ARGS,
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=1),
    "max_retry_delay": dt.timedelta(minutes=5),
    "execution_timeout": dt.timedelta(minutes=10),
}


def make_refresh_dag(city: str):
    cfg = load_city(city)

    @dag(
        dag_id=f"refresh_{city}",
        description=f"Hourly intraday refresh for {city}: ingest today's partial day, re-forecast with the champion",
        schedule="5 * * * *",
        start_date=dt.datetime(2000, 1, 1, tzinfo=cfg.tz),
        catchup=False,
        max_active_runs=1,
        default_args=REFRESH_ARGS,
        tags=["traffic", "refresh", city],
        params={
            "until": Param(
                None,
                type=["null", "string"],
                description=f"data delivered up to this local time 'YYYY-MM-DD HH:MM' ({cfg.timezone}); default: now",
            ),
        },
    )
    def refresh_dag():
        @task(retries=0)
        @fail_fast
        def resolve_window() -> dict[str, str]:
            from traffic import pipeline

            ctx = get_current_context()
            until = ctx["params"].get("until")
            if not until:
                when = ctx.get("logical_date") or ctx["dag_run"].run_after
                until = when.in_timezone(cfg.timezone).strftime("%Y-%m-%d %H:%M")
            window = pipeline.refresh_window(city, until)
            log.info("refresh %s: local dates %s..%s up to %s", city, window["start"], window["end"], window["until"])
            return window

        @task
        @fail_fast
        def ingest(window: dict[str, str]) -> dict[str, Any]:
            from traffic import pipeline

            out = pipeline.ingest(city, window["start"], window["end"], until=window["until"], res=_resources())
            log.info("ingested %s", {f: v["rows_accepted"] for f, v in out["feeds"].items()})
            return out

        @task
        @fail_fast
        def rasterize(window: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            out = pipeline.rasterize(city, window["start"], window["end"], until=window["until"], res=_resources())
            log.info("rasterized %d rows; partial days %s", out["rows"], out["partial"])
            return out

        @task
        @fail_fast
        def refresh(window: dict[str, str], rasterized: dict[str, Any]) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from traffic import pipeline

            try:
                out = pipeline.refresh(city, until=window["until"], res=_resources())
            except pipeline.NoChampion as exc:  # no version registered at all: nothing to serve
                raise AirflowSkipException(str(exc)) from exc
            log.info(
                "published %s issued_at %s in %s s", out["publish"].get("run_id"), out["issued_at"], out["timings_s"]
            )
            return {k: v for k, v in out.items() if k != "forecast"}

        window = resolve_window()
        refresh(window, rasterize(window, ingest(window)))

    return refresh_dag()


def make_config_error_dag(city: str, error: ConfigError):
    """Stand-in ``ingest_<city>`` for a city file that does not validate: its one task fails with the error.

    One bad file must not take the other cities' DAGs down (an exception at parse time would
    discard every DAG of this file), and must not vanish silently either: the daily run of
    this DAG fails at once, without retries, with the one-line error in its log.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", city)

    @dag(
        dag_id=f"ingest_{safe}",
        description=f"city file of {city!r} is invalid: {error.one_line()}"[:500],
        schedule="0 1 * * *",
        start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["traffic", "ingest", "config-error", safe],
    )
    def config_error_dag():
        @task
        @fail_fast
        def city_config() -> str:
            return load_city(city).name  # still invalid: ConfigError, the task fails without retries

        city_config()

    return config_error_dag()


for _city in list_cities():
    try:
        load_city(_city)
    except ConfigError as _exc:
        log.error("city %r: %s; only ingest_%s is generated, and it fails", _city, _exc.one_line(), _city)
        globals()[f"ingest_{_city}"] = make_config_error_dag(_city, _exc)
        continue
    globals()[f"ingest_{_city}"] = make_ingest_dag(_city)
    globals()[f"nightly_{_city}"] = make_nightly_dag(_city)
    globals()[f"refresh_{_city}"] = make_refresh_dag(_city)
