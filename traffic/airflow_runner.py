"""Run the nightly pipeline through Airflow itself, on embedded defaults.

``traffic nightly`` (the README's main command) prepares a project-local Airflow
(SQLite metadata under ``<home>/airflow``, the project's ``dags/`` folder, a ``gpu``
pool), then for each city runs ``airflow dags test`` on the ingest DAG for every day
the raw data holds, and on the nightly DAG for the newest day. ``airflow dags test``
exits non-zero when the DagRun fails, so a failure stops the command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from traffic.config import PROJECT_ROOT, duckdb_path, home, list_cities, mlflow_uri


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the Airflow CLI: project-local home, SQLite metadata, our DAGs.

    Values already set in ``base`` (e.g. a PostgreSQL ``SQL_ALCHEMY_CONN``) win.
    """
    env = dict(os.environ if base is None else base)
    af_home = Path(env.get("AIRFLOW_HOME", home() / "airflow"))
    af_home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "AIRFLOW_HOME": str(af_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "TRAFFIC_HOME": str(home()),
        "MLFLOW_TRACKING_URI": mlflow_uri(),
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for k, v in defaults.items():
        env.setdefault(k, v)
    return env


def _airflow(args: list[str], env: dict[str, str], *, quiet: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"
    proc = subprocess.run([exe, *args], env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-60:])
        raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


def prepare(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the ``gpu`` pool (idempotent)."""
    _airflow(["db", "migrate"], env)
    _airflow(["pools", "set", "gpu", "1", "GPU training slots (one per GPU worker)"], env)


def run_nightly(cities: list[str] | None = None, *, as_of: str | None = None, log=print) -> dict[str, Any]:
    """Ingest everything the raw feeds hold, then run each city's nightly DAG via Airflow.

    Returns a summary per city: timings, the trained version, the promotion decision,
    the published run.
    """
    from traffic import pipeline

    env = airflow_env()
    summary: dict[str, Any] = {"cities": {}, "timings_s": {}}
    t0 = time.perf_counter()
    log(f"airflow: migrating metadata DB in {env['AIRFLOW_HOME']} ...")
    prepare(env)
    summary["timings_s"]["airflow_prepare"] = round(time.perf_counter() - t0, 1)
    for city in cities or list_cities():
        first, last = pipeline.source_dates(city)
        day = as_of or last
        times = {}
        t = time.perf_counter()
        log(f"[{city}] ingest_{city}: {first} .. {last}")
        _airflow(
            [
                "dags",
                "test",
                f"ingest_{city}",
                "-c",
                json.dumps({"start": first, "end": last}),
            ],
            env,
        )
        times["ingest_dag"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        log(f"[{city}] nightly_{city}: as_of {day}")
        _airflow(["dags", "test", f"nightly_{city}", "-c", json.dumps({"as_of": day})], env)
        times["nightly_dag"] = round(time.perf_counter() - t, 1)
        summary["cities"][city] = {"as_of": day, "timings_s": times}
    summary["timings_s"]["total"] = round(time.perf_counter() - t0, 1)
    return summary


def report(summary: dict[str, Any]) -> str:
    """What was trained, promoted and published, and where to look."""
    import duckdb
    import mlflow

    lines = []
    mlflow.set_tracking_uri(mlflow_uri())
    client = mlflow.MlflowClient()
    for city, info in summary["cities"].items():
        name = f"traffic-{city}"
        versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
        latest = versions[-1] if versions else None
        try:
            champ = client.get_model_version_by_alias(name, "champion")
        except mlflow.exceptions.MlflowException:
            champ = None
        lines.append(
            f"== {city} (as_of {info['as_of']}; ingest {info['timings_s']['ingest_dag']} s, nightly {info['timings_s']['nightly_dag']} s)"
        )
        if latest is not None:
            run = client.get_run(str(latest.run_id))
            m = run.data.metrics
            base = {k.split(".")[0]: v for k, v in m.items() if k.endswith(".rmse_mean") and not k.startswith("model")}
            lines.append(
                f"   trained   {name} v{latest.version} (run {latest.run_id}) rmse_mean={m.get('model.rmse_mean', float('nan')):.3f}"
            )
            lines.append("   baselines " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(base.items())))
            verdict = "promoted to champion" if latest.tags.get("promoted") == "true" else "stays challenger"
            lines.append(f"   decision  {verdict}: {latest.tags.get('promotion_decision', '')}".rstrip())
        lines.append(f"   champion  {f'v{champ.version}' if champ else 'none'}")
    db = duckdb_path()
    if db.exists():
        con = duckdb.connect(str(db), read_only=True)
        try:
            runs = con.execute(
                "SELECT city, model_version, issued_at, count(*) AS rows FROM forecast_runs JOIN forecasts USING (run_id, city) "
                "GROUP BY ALL ORDER BY city, issued_at"
            ).fetchall()
        finally:
            con.close()
        for city, ver, issued, n in runs:
            lines.append(f"published {city}: model v{ver} issued_at {issued} ({n} forecast rows)")
    lines.append("")
    lines.append(f"DuckDB:   {db}   (e.g. `traffic hotspots los_angeles --hours 3`)")
    lines.append(f"MLflow:   {mlflow_uri()}   (`mlflow ui --backend-store-uri {mlflow_uri()}`)")
    lines.append(f"Lake:     {home() / 'lake'}")
    lines.append(f"Airflow:  {home() / 'airflow'}")
    return "\n".join(lines)
