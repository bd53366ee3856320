"""Traffic DAGs, generated from the city configs (``cities/*.toml``).

Per city:

``ingest_<city>`` (daily, 01:00 city time)
    registry + observations of every feed → validated, quarantined, UTC Parquet →
    rasterized onto the city grid. Ingests yesterday's local date, or ``params.start``
    .. ``params.end`` when given (backfills, first load). Emits the asset
    ``traffic://raster/<city>`` with the newest date in the event's ``extra``.

``nightly_<city>`` (triggered by that asset)
    freshness/quality gate → training window → train (``queue="gpu"``, ``pool="gpu"``)
    → evaluate and promote → forecast → publish to DuckDB.
    Asset-triggered runs have no logical date, so the partition travels explicitly:
    ``params.as_of``, else the triggering asset event's ``extra["as_of"]``.

This file only wires tasks: the work lives in ``traffic.pipeline`` and heavy imports
(torch, geopandas, mlflow) happen inside the tasks, never at parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

from traffic.config import list_cities, load_city

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
        },
    )
    def ingest_dag():
        @task
        def partition_range() -> dict[str, str]:
            params = get_current_context()["params"]
            start = params.get("start") or _yesterday_local(cfg.timezone)
            return {"start": start, "end": params.get("end") or start}

        @task
        def ingest(window: dict[str, str]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.ingest(city, window["start"], window["end"])

        @task(outlets=[asset])
        def rasterize(window: dict[str, str], ingested: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            out = pipeline.rasterize(city, window["start"], window["end"])
            get_current_context()["outlet_events"][asset].extra = {"as_of": window["end"], "start": window["start"]}
            return out

        window = partition_range()
        rasterize(window, ingest(window))

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
        def resolve_as_of() -> str:
            ctx = get_current_context()
            if ctx["params"].get("as_of"):
                return ctx["params"]["as_of"]
            events = ctx.get("triggering_asset_events") or {}
            for evs in events.values():
                for ev in evs:
                    if ev.extra and ev.extra.get("as_of"):
                        return ev.extra["as_of"]
            return _yesterday_local(cfg.timezone)

        @task(retries=1)
        def check_quality(as_of: str) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.check_quality(city, as_of)

        @task
        def training_window(as_of: str, quality: dict[str, Any]) -> dict[str, str]:
            from traffic import pipeline

            return pipeline.training_window(city, as_of)

        @task(queue="gpu", pool="gpu", execution_timeout=dt.timedelta(hours=2))
        def train(window: dict[str, str]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.train(city, window["as_of"])

        @task
        def evaluate_and_promote(window: dict[str, str], trained: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.evaluate_and_promote(city, window["as_of"], trained)

        @task
        def forecast(window: dict[str, str], promotion: dict[str, Any]) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowSkipException

            from traffic import pipeline

            try:
                return pipeline.forecast(city, window["as_of"])
            except pipeline.NoChampion as exc:  # nothing approved to serve: publish nothing
                raise AirflowSkipException(str(exc)) from exc

        @task
        def publish(meta: dict[str, Any]) -> dict[str, Any]:
            from traffic import pipeline

            return pipeline.publish(city, meta)

        as_of = resolve_as_of()
        window = training_window(as_of, check_quality(as_of))
        trained = train(window)
        publish(forecast(window, evaluate_and_promote(window, trained)))

    return nightly_dag()


for _city in list_cities():
    globals()[f"ingest_{_city}"] = make_ingest_dag(_city)
    globals()[f"nightly_{_city}"] = make_nightly_dag(_city)
