"""Shared fixtures: every test writes under its own TRAFFIC_HOME, never into the repo."""

from __future__ import annotations

import os

# numpy/scipy's OpenBLAS runs one thread in tests (and in the Airflow and other children they start):
# on 2 cores shared with other work its spinning threads made the Ridge baseline's Gram products about
# 11x slower (200k x 40 X^T X: 0.26 s with 2 threads, 0.023 s with 1), a third of a nightly training in
# a test. Set before numpy is imported; the results differ only by rounding. An explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from traffic.config import CityConfig, load_city  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _airflow_templates():
    """Drop the migrated Airflow metadata templates (tests/airflow_helpers.py) when the session ends."""
    yield
    from tests.airflow_helpers import drop_templates

    drop_templates()


@pytest.fixture(autouse=True)
def traffic_home(tmp_path, monkeypatch):
    """Point TRAFFIC_HOME (lake, MLflow, DuckDB, Airflow) at a fresh temporary folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TRAFFIC_HOME", str(home))
    for var in ("TRAFFIC_LAKE", "TRAFFIC_DUCKDB", "MLFLOW_TRACKING_URI", "TRAFFIC_MLFLOW_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    # pipeline runs in tests train a few steps, not the cities' nightly budgets (tests check wiring, not skill)
    monkeypatch.setenv("TRAFFIC_TRAIN_STEPS", "20")
    return home


@pytest.fixture(scope="session")
def berlin() -> CityConfig:
    """The shipped Berlin config (Telraam camera counts)."""
    return load_city("berlin")


@pytest.fixture(scope="session")
def los_angeles() -> CityConfig:
    """The shipped Los Angeles config (METR-LA loop detectors)."""
    return load_city("los_angeles")


#: Seconds the slowest tests took (``--durations`` of a quiet clean-clone run; a node id, or a prefix of
#: its parametrised ids). Only the schedule reads them: a missing or stale entry schedules worse, never
#: changes what runs.
HEAVY_TESTS = {
    "tests/test_backfill_airflow.py::test_backfill_ingests_every_day_and_retrains_once": 240,
    "tests/test_services.py::test_celery_postgres_redis_topology": 165,
    "tests/test_pipeline_fallback.py::test_first_night_publishes_the_best_baseline_then_a_passing_version": 134,
    "tests/test_e2e_airflow.py::test_nightly_los_angeles_through_airflow": 114,
    "tests/test_e2e_refresh_airflow.py::test_refresh_los_angeles_through_airflow": 102,
    "tests/forecast/test_forecast_realdata.py::test_model_beats_the_classical_baselines_on_real_data[berlin]": 94,
    "tests/publish/test_concurrent_readers.py::test_eight_readers_during_twenty_publishes_under_cpu_load": 85,
    "tests/test_pipeline_exactly_once.py::test_a_train_killed_after_registration": 61,
    "tests/forecast/test_forecast_realdata.py::test_model_beats_the_classical_baselines_on_real_data[los_": 46,
    "tests/test_dag_faults.py::test_config_faults_fail_the_task_without_retries": 31,
    "tests/test_airflow_task_log.py::test_stage_records_are_in_the_airflow_task_log": 30,
    "tests/publish/test_concurrent_readers.py::test_eight_readers_during_two_large_publishes": 22,
    "tests/registry/test_registry_health.py::test_a_registration_killed_half_way": 18,
    "tests/test_bench_reference.py::test_quick_run_prints_both_sections": 16,
    "tests/forecast/test_forecast_ddp.py::test_torchrun_two_gloo_processes": 14,
}


def _heavy_seconds(nodeid: str) -> float:
    return next((s for k, s in HEAVY_TESTS.items() if nodeid.startswith(k)), 0.0)


def pytest_collection_modifyitems(session, config, items):
    """Start the slowest tests first, alternately in each half of the collection.

    pytest-xdist's ``worksteal`` gives each of the two workers one contiguous half of the
    collection and lets an idle worker steal from the *end* of the other's queue. In file order
    the slowest tests (whole pipelines, real services) came last and ran one after the other on
    one worker while the other sat idle. Here they open both halves, longest first, dealt
    alternately (each half starts with about the same heavy seconds); the rest keep their order.
    Every worker computes the same order from the same collection, as xdist requires.
    """
    heavy = sorted((it for it in items if _heavy_seconds(it.nodeid) > 0), key=lambda it: -_heavy_seconds(it.nodeid))
    if not heavy:
        return
    halves: tuple[list, list] = ([], [])
    loads = [0.0, 0.0]
    for it in heavy:  # longest first, each to the half with fewer heavy seconds
        k = 0 if loads[0] <= loads[1] else 1
        halves[k].append(it)
        loads[k] += _heavy_seconds(it.nodeid)
    ids = {id(it) for it in heavy}
    rest = [it for it in items if id(it) not in ids]
    first = len(items) // 2 - len(halves[0])  # the first half is exactly len(items) // 2 items
    if first < 0:
        items[:] = heavy + rest
        return
    items[:] = halves[0] + rest[:first] + halves[1] + rest[first:]
