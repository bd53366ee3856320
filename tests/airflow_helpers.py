"""Run Airflow in a subprocess with a project-local, throw-away AIRFLOW_HOME.

Airflow reads its configuration once per process, at import; running it in a child
process lets every test pick its own metadata DB (SQLite or PostgreSQL). Long-running
Airflow services (API server, scheduler, workers) start in their own process groups
(:func:`start_process`, :func:`stop_processes`) on throw-away PostgreSQL databases
(:func:`pg_databases`). Metadata DBs are copies of templates migrated once per test process
(:func:`migrated_env`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

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
    """Airflow env under the current TRAFFIC_HOME, metadata DB migrated, gpu pool created.

    The metadata DB is a copy of a template that :func:`traffic.airflow_runner.prepare` (``airflow db
    migrate`` + the ``gpu`` pool, the same calls ``make nightly`` makes) built once per test process:
    the default SQLite file is copied into the test's ``AIRFLOW_HOME``; a PostgreSQL database named by
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` (an empty one from :func:`pg_databases`) is re-created
    from a template database. A migration takes ~25 s; a copy well under one.
    """
    env = airflow_env()
    env.update(overrides)
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    home = Path(env["AIRFLOW_HOME"])
    if conn.startswith("sqlite:///"):
        target = Path(conn.removeprefix("sqlite:///"))
        if target.exists() or (home / "airflow.cfg").exists():  # an Airflow already used: prepare it in place
            prepare(env)
            return env
        shutil.copyfile(_sqlite_template(), target)
        template_home = _sqlite_template().parent / "airflow"
    elif conn.startswith(f"postgresql+psycopg2://{PG}/") and not (home / "airflow.cfg").exists():
        template_home = _pg_from_template(conn.rsplit("/", 1)[1])
    else:
        prepare(env)
        return env
    # the airflow.cfg the first CLI call writes (its generated fernet key and JWT secret shared by the
    # API server, scheduler and workers a test starts), as the template's first call wrote it for its home
    text = (template_home / "airflow.cfg").read_text()
    (home / "airflow.cfg").write_text(text.replace(str(template_home), str(home)))
    return env


_TEMPLATES: dict[str, str] = {}
_CLEANUP: list[Callable[[], None]] = []


def drop_templates() -> None:
    """Remove the templates this process built (conftest calls it at the end of the session)."""
    while _CLEANUP:
        _CLEANUP.pop()()
    _TEMPLATES.clear()


def _template_env(conn: str, home: Path) -> dict[str, str]:
    """The Airflow env of a template build: its own throw-away homes, metadata DB ``conn``."""
    from traffic.resources import Resources

    base = {**os.environ, "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn}
    return airflow_env(base, res=Resources.under(home))


def _sqlite_template() -> Path:
    """A migrated SQLite metadata DB with the ``gpu`` pool, built on first use in this process."""
    if "sqlite" not in _TEMPLATES:
        folder = Path(tempfile.mkdtemp(prefix="airflow-template-"))
        _CLEANUP.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        db = folder / "airflow.db"
        prepare(_template_env(f"sqlite:///{db}", folder))
        _TEMPLATES["sqlite"] = str(db)
    return Path(_TEMPLATES["sqlite"])


def _pg_from_template(name: str) -> Path:
    """Re-create the empty PostgreSQL database ``name`` as a copy of a migrated template database.

    Returns the template's AIRFLOW_HOME (its ``airflow.cfg``).
    """
    import psycopg2

    if "pg" not in _TEMPLATES:
        template = f"traffic_test_airflow_template_{uuid.uuid4().hex[:8]}"
        _pg_execute(f'CREATE DATABASE "{template}"')
        _CLEANUP.append(lambda: _pg_execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        folder = Path(tempfile.mkdtemp(prefix="airflow-template-"))
        _CLEANUP.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        prepare(_template_env(f"postgresql+psycopg2://{PG}/{template}", folder))
        _TEMPLATES["pg"] = template
        _TEMPLATES["pg_home"] = str(folder / "airflow")
    con = psycopg2.connect(f"postgresql://{PG}/{name}")
    try:
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            (n_tables,) = cur.fetchone()
    finally:
        con.close()
    assert n_tables == 0, f"{name} is not an empty database: not replaced by the template"
    _pg_execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    _pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATES["pg"]}"')
    return Path(_TEMPLATES["pg_home"])


def _pg_execute(sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE: names generated here or by :func:`pg_databases`)."""
    import psycopg2

    con = psycopg2.connect(f"postgresql://{PG}/postgres")
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(sql)
    finally:
        con.close()


#: The machine's PostgreSQL (user@host:port), for tests on real services.
PG = "postgres@127.0.0.1:5432"


def services_up(ports: tuple[int, ...] = (5432, 6379)) -> bool:
    """Whether PostgreSQL (and Redis) answer on 127.0.0.1."""
    for port in ports:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pg_databases(*kinds: str) -> Iterator[dict[str, str]]:
    """Fresh PostgreSQL databases ``{kind: name}``, dropped on exit."""
    import psycopg2

    suffix = uuid.uuid4().hex[:8]
    names = {k: f"traffic_test_{k}_{suffix}" for k in kinds}
    con = psycopg2.connect(f"postgresql://{PG}/postgres")
    con.autocommit = True
    try:
        with con.cursor() as cur:
            for n in names.values():
                cur.execute(f'CREATE DATABASE "{n}"')  # names are generated above, not user input
        yield names
    finally:
        with con.cursor() as cur:
            for n in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        con.close()


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a long-running service in its own process group, output to ``log``."""
    fh = log.open("w")
    return subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def start_api_server(env: dict[str, str], port: int, logs: Path, apps: str = "execution") -> subprocess.Popen:
    """An Airflow API server on 127.0.0.1:``port`` (``apps``: ``execution`` for task runners, ``core`` for the REST API)."""
    from traffic.airflow_runner import airflow_exe

    args = [airflow_exe(), "api-server", "-p", str(port), "-H", "127.0.0.1", "--apps", apps]
    return start_process(args, env, logs / "api.log")


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each service's process group; SIGKILL what is still there after 20 s."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float = 90) -> None:
    """Wait until ``url`` answers 200."""
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout} s")
