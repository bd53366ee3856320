"""Run Airflow in a subprocess with a project-local, throw-away AIRFLOW_HOME.

Airflow reads its configuration once per process, at import; running it in a child
process lets every test pick its own metadata DB (SQLite or PostgreSQL).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from traffic.airflow_runner import airflow_env, prepare


def run_python(code: str, env: dict[str, str], timeout: float = 600) -> dict:
    """Run ``code`` in a child Python with ``env``; it must print one JSON line last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def migrated_env(**overrides: str) -> dict[str, str]:
    """Airflow env under the current TRAFFIC_HOME, metadata DB migrated, gpu pool created."""
    env = airflow_env()
    env.update(overrides)
    prepare(env)
    return env
