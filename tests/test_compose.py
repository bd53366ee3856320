"""Shape of the production sketch ``docker-compose.yml`` (no Docker engine here: PyYAML only).

Checks what would break a deployment silently: a missing service or queue, a GPU worker
without a GPU, an environment variable the code reads but the containers lack, workers
that do not share the lake/DuckDB volume, a ``depends_on`` on a service that does not
exist (or a cycle), a build that points at a missing Dockerfile, and Airflow settings
that Airflow does not know.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from traffic.config import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
AIRFLOW_SERVICES = {
    "airflow-init": None,
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "worker-cpu": "celery worker",
    "worker-gpu": "celery worker",
}
WORKERS = {"worker-cpu": "default", "worker-gpu": "gpu"}
#: Variables the code reads that the stack leaves unset on purpose, and why.
OPTIONAL_ENV = {
    "TRAFFIC_TRAIN_BUDGET_S": "override of the per-city [forecast] train_budget_s; the TOML value applies when unset",
    "TRAFFIC_TRAIN_STEPS": "override of the per-city [forecast] train_steps (the step budget); the TOML value applies when unset",
    "WORLD_SIZE": "set by torchrun for data-parallel training; unset = one process",
    "LOCAL_RANK": "set by torchrun: the GPU of this rank; unset = 0",
    "MLFLOW_TRACKING_TOKEN": "bearer token of a tracking server behind token auth; this stack uses basic auth",
}
#: Variables only the Celery workers need (tasks run there), and why.
WORKER_ONLY_ENV = {
    "TRAFFIC_WORKER_NAME": "names the worker that trained a model (read inside the train task)",
}
_INTERP = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")
#: ``${VAR:?message}``: compose refuses to start while VAR is unset or empty.
_REQUIRED = re.compile(r"\$\{(\w+):\?([^}]*)\}")
#: What a secret is called; each must be required from the environment, never defaulted.
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$")


def _resolve(value: object) -> str:
    """``${VAR:-default}`` -> default (what compose does with an empty environment); required -> ``<VAR>``."""
    value = _REQUIRED.sub(lambda m: f"given-{m.group(1).lower()}", str(value))
    return _INTERP.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _command(svc: dict) -> str:
    cmd = svc.get("command", "")
    return _resolve(" ".join(cmd) if isinstance(cmd, list) else cmd)


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _env(svc: dict) -> dict[str, str]:
    """The environment compose gives a service: env_file entries, then ``environment``."""
    env: dict[str, str] = {}
    files = svc.get("env_file", [])
    for f in [files] if isinstance(files, str) else files:
        path = COMPOSE.parent / (f if isinstance(f, str) else f["path"])
        assert path.is_file(), f"env_file {path} does not exist"
        env.update(_env_file(path))
    raw = svc.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: _resolve(v) for k, v in raw.items()})
    return env


def _env_reads() -> dict[str, set[str]]:
    """Environment variables read by the package and the DAGs: ``{name: {file, ...}}``."""
    reads: dict[str, set[str]] = {}
    files = [*(PROJECT_ROOT / "traffic").rglob("*.py"), *(PROJECT_ROOT / "dags").rglob("*.py")]
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            name = None
            # os.environ.get("X", ...) / os.getenv("X", ...)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                f = node.func
                target = ast.unparse(f.value)
                if (f.attr == "get" and target.endswith("environ")) or (f.attr == "getenv" and target == "os"):
                    name = node.args[0]
            # os.environ["X"] (a read, not an assignment)
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                if ast.unparse(node.value).endswith("os.environ"):
                    name = node.slice
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                reads.setdefault(name.value, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return reads


# ------------------------------------------------------------------ services


def test_services_present(services):
    expected = {"postgres", "redis", "mlflow", *AIRFLOW_SERVICES}
    assert expected <= set(services), f"missing services: {sorted(expected - set(services))}"


@pytest.mark.parametrize(("name", "subcommand"), [(k, v) for k, v in AIRFLOW_SERVICES.items() if v])
def test_airflow_components_run_their_command(services, name, subcommand):
    assert _command(services[name]).startswith(f"airflow {subcommand}"), _command(services[name])


@pytest.mark.parametrize(("name", "queue"), WORKERS.items())
def test_workers_listen_on_their_queue(services, name, queue):
    cmd = _command(services[name]).split()
    queues = cmd[cmd.index("--queues") + 1].split(",")
    assert queues == [queue]


def _gpu_devices(svc: dict) -> list[dict]:
    return svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_gpu_worker_reserves_an_nvidia_gpu_and_cpu_worker_none(services):
    devices = _gpu_devices(services["worker-gpu"])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert all(int(d.get("count", 1)) >= 1 for d in devices if d.get("count") != "all")
    assert not _gpu_devices(services["worker-cpu"])


def test_gpu_worker_image_is_a_cuda_torch_build(services):
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    assert _resolve(cpu["build"]["args"]["TORCH_VARIANT"]) == "cpu"
    assert _resolve(gpu["build"]["args"]["TORCH_VARIANT"]).startswith("cu")
    assert _resolve(gpu["image"]) != _resolve(cpu["image"])


def test_gpu_pool_and_duckdb_schema_are_created_once(services):
    cmd = _command(services["airflow-init"])
    assert "airflow db migrate" in cmd
    assert re.search(r"airflow pools set gpu \d+", cmd)
    assert "init_db" in cmd


def test_the_dags_route_training_to_the_gpu_queue():
    tree = ast.parse((PROJECT_ROOT / "dags/traffic_dags.py").read_text())
    queues = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "queue" and isinstance(kw.value, ast.Constant)
    }
    assert queues <= set(WORKERS.values()), (
        f"DAG queues {queues} without a worker; workers serve {set(WORKERS.values())}"
    )
    assert "gpu" in queues


# ------------------------------------------------------------------ environment


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_configuration(services, name):
    env = _env(services[name])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert db.scheme == "postgresql+psycopg2" and db.hostname == "postgres" and db.path == "/airflow"
    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis" and broker.hostname == "redis"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and api.path.rstrip("/") == "/execution"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_airflow_components_share_their_secrets(services):
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        values = {_env(services[n]).get(key) for n in AIRFLOW_SERVICES}
        assert len(values) == 1 and None not in values, f"{key} differs between Airflow components: {values}"


def test_every_env_var_the_code_reads_is_set(services):
    reads = _env_reads()
    assert {"TRAFFIC_HOME", "MLFLOW_TRACKING_URI", "TRAFFIC_DUCKDB"} <= set(reads)  # the scan works
    unknown_optional = (set(OPTIONAL_ENV) | set(WORKER_ONLY_ENV)) - set(reads)
    assert not unknown_optional, f"OPTIONAL_ENV lists variables no code reads any more: {unknown_optional}"
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        skip = set(OPTIONAL_ENV) | (set() if name in WORKERS else set(WORKER_ONLY_ENV))
        missing = {v: sorted(files) for v, files in reads.items() if v not in env and v not in skip}
        assert not missing, f"{name} lacks variables the code reads: {missing}"


def test_optional_env_vars_have_a_default_in_the_code():
    for var in OPTIONAL_ENV:
        hits = [
            p
            for p in (PROJECT_ROOT / "traffic").rglob("*.py")
            if re.search(rf"os\.environ\.get\(\s*\"{var}\"\s*,", p.read_text())
        ]
        assert hits, f"{var} is left unset in compose but read without a default"


@pytest.mark.parametrize("name", WORKERS)
def test_workers_report_their_own_name(services, name):
    assert _env(services[name])["TRAFFIC_WORKER_NAME"] == name


def _airflow_options() -> dict[str, set[str]]:
    """Options of Airflow core and the Celery provider, read from their files (no airflow import)."""
    root = Path(importlib.util.find_spec("airflow").submodule_search_locations[0])
    core = yaml.safe_load((root / "config_templates/config.yml").read_text())
    options = {sec: set((spec or {}).get("options", {})) for sec, spec in core.items()}
    info_src = (root / "providers/celery/get_provider_info.py").read_text()
    ret = next(n for n in ast.walk(ast.parse(info_src)) if isinstance(n, ast.Return))
    for sec, spec in ast.literal_eval(ret.value).get("config", {}).items():
        options.setdefault(sec, set()).update(spec.get("options", {}))
    return options


def test_airflow_settings_are_known_to_airflow(services):
    """Every AIRFLOW__SECTION__KEY is an option of Airflow core or the Celery provider."""
    options = _airflow_options()
    assert "broker_url" in options["celery"] and "sql_alchemy_conn" in options["database"]
    for name in AIRFLOW_SERVICES:
        for key in _env(services[name]):
            m = re.fullmatch(r"AIRFLOW__([A-Z_]+?)__([A-Z_]+)", key)
            if m:
                sec, opt = m.group(1).lower(), m.group(2).lower()
                assert opt in options.get(sec, set()), f"{name}: {key} is not an Airflow option [{sec}] {opt}"


# ------------------------------------------------------------------ volumes


def _mounts(svc: dict) -> dict[str, str]:
    """target -> source of a service's volumes (short or long syntax)."""
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v["target"]
        out[target] = source
    return out


def test_workers_share_the_lake_and_duckdb_volume(compose, services):
    homes = {_env(services[w])["TRAFFIC_HOME"] for w in WORKERS}
    assert len(homes) == 1
    home = homes.pop()
    sources = {_mounts(services[w]).get(home) for w in WORKERS}
    assert len(sources) == 1 and None not in sources, f"TRAFFIC_HOME {home} is not one shared mount: {sources}"
    volume = sources.pop()
    assert volume in (compose.get("volumes") or {}), f"{volume} is not a named volume"
    for w in WORKERS:
        env = _env(services[w])
        assert env["TRAFFIC_DUCKDB"].startswith(home + "/"), env["TRAFFIC_DUCKDB"]
        lake = env.get("TRAFFIC_LAKE", home + "/lake")
        assert "://" in lake or lake.startswith(home + "/"), f"{w}: the lake {lake} is neither shared nor remote"


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for target, source in _mounts(svc).items():
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} ({target}) is not declared"
            else:
                assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} does not exist"


def test_mlflow_server_on_postgres_with_artifact_volume(services):
    svc = services["mlflow"]
    args = dict(a.split("=", 1) for a in _command(svc).split() if a.startswith("--") and "=" in a)
    assert _command(svc).startswith("mlflow server")
    assert urlsplit(args["--backend-store-uri"]).scheme.startswith("postgresql")
    assert urlsplit(args["--backend-store-uri"]).hostname == "postgres"
    assert "--serve-artifacts" in _command(svc)
    assert args["--artifacts-destination"] in _mounts(svc)
    tracking = urlsplit(_env(services["worker-cpu"])["MLFLOW_TRACKING_URI"])
    assert tracking.hostname == "mlflow" and str(tracking.port) == args["--port"]
    assert _env(services["worker-cpu"])["TRAFFIC_MLFLOW_ARTIFACTS"].startswith("mlflow-artifacts:")


def test_postgres_creates_the_mlflow_database(services):
    svc = services["postgres"]
    scripts = [
        COMPOSE.parent / s for s, t in ((v, k) for k, v in _mounts(svc).items()) if "docker-entrypoint-initdb.d" in t
    ]
    assert scripts and all(p.is_file() for p in scripts)
    text = "".join(p.read_text() for p in scripts)
    assert re.search(r"CREATE DATABASE mlflow", text)
    assert _env(svc)["POSTGRES_DB"] == "airflow"


# ------------------------------------------------------------------ graph, images


def test_depends_on_graph_is_complete_and_acyclic(services):
    graph = {}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on missing service {dep}"
            cond = spec.get("condition", "service_started")
            assert cond in ("service_started", "service_healthy", "service_completed_successfully")
            if cond == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy but it has no healthcheck"
        graph[name] = set(deps)
    done: set[str] = set()
    while graph:
        ready = {n for n, deps in graph.items() if deps <= done}
        assert ready, f"depends_on cycle among {sorted(graph)}"
        done |= ready
        graph = {n: d for n, d in graph.items() if n not in ready}


def test_builds_reference_existing_dockerfiles(services):
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context = (COMPOSE.parent / build.get("context", ".")).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        declared = set(re.findall(r"^ARG\s+(\w+)", dockerfile.read_text(), flags=re.MULTILINE))
        unknown = set(build.get("args", {})) - declared
        assert not unknown, f"{name}: build args {unknown} are not ARGs of {dockerfile.name}"


def test_images_are_built_here_or_pinned(services):
    built = {_resolve(s["image"]) for s in services.values() if "build" in s and "image" in s}
    for name, svc in services.items():
        image = _resolve(svc.get("image", ""))
        if "build" in svc:
            continue
        assert image, f"{name} has neither image nor build"
        if image.split(":")[0] == "traffic":
            assert image in built, f"{name} uses {image} but no service builds it"
        else:
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image} to a version"


def test_dockerfile_copies_what_the_code_needs_next_to_the_package():
    """The package finds sql/ and cities/ through PROJECT_ROOT: an editable install in the image."""
    text = (PROJECT_ROOT / "docker/Dockerfile").read_text()
    for folder in ("traffic", "sql", "dags", "cities"):
        assert re.search(rf"^COPY {folder} ", text, flags=re.MULTILINE), f"Dockerfile does not copy {folder}/"
        assert (PROJECT_ROOT / folder).is_dir()
    assert "pip install --no-deps -e ." in text
    assert re.search(r"torch==\$\{TORCH_VERSION\}.*download\.pytorch\.org/whl/\$\{TORCH_VARIANT\}", text)


# ------------------------------------------------------------------ secrets, authentication


def _interpolations(text: str) -> list[tuple[str, str]]:
    """``(variable, whole expression)`` of every ``${...}`` in the compose file (comments left out)."""
    body = "\n".join(line.split(" #", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [(m.group(1), m.group(0)) for m in re.finditer(r"\$\{(\w+)[^}]*\}", body)]


def test_secrets_are_required_from_the_environment_without_fallbacks():
    text = COMPOSE.read_text()
    assert "change-me" not in text
    secrets = {var for var, _ in _interpolations(text) if _SECRET_NAME.search(var)}
    assert {"AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "MLFLOW_ADMIN_PASSWORD", "AIRFLOW_DB_PASSWORD"} <= secrets
    for var, expr in _interpolations(text):
        if _SECRET_NAME.search(var):
            assert _REQUIRED.fullmatch(expr), f"secret {var} must be required (${{{var}:?message}}), not {expr}"
            assert _REQUIRED.fullmatch(expr).group(2).strip(), f"{expr}: say what to set"


def test_no_secret_reaches_a_container_as_a_literal(services):
    for name, svc in services.items():
        raw = svc.get("environment", {}) or {}
        raw = dict(item.split("=", 1) for item in raw) if isinstance(raw, list) else raw
        for key, value in raw.items():
            if _SECRET_NAME.search(key) and value is not None:
                assert _REQUIRED.search(str(value)), f"{name}: {key} is not taken from the environment: {value!r}"
    for key, value in _env_file(COMPOSE.parent / "docker/traffic.env").items():
        assert not _SECRET_NAME.search(key), f"docker/traffic.env holds the secret {key}={value!r}"


def test_mlflow_server_requires_authentication(services):
    from importlib.metadata import entry_points

    svc = services["mlflow"]
    cmd = _command(svc).split()
    assert "--app-name=basic-auth" in cmd or ("--app-name" in cmd and cmd[cmd.index("--app-name") + 1] == "basic-auth")
    assert "basic-auth" in {e.name for e in entry_points(group="mlflow.app")}, "this MLflow has no basic-auth app"
    env = _env(svc)
    ini = _mounts(svc)
    config = env["MLFLOW_AUTH_CONFIG_PATH"]
    source = ini.get(config)
    assert source and (COMPOSE.parent / source).is_file(), f"{config} is not mounted from the project"
    import configparser

    parser = configparser.ConfigParser()
    parser.read(COMPOSE.parent / source)
    auth = parser["mlflow"]
    assert auth["default_permission"] == "NO_PERMISSIONS"
    assert "admin_password" not in auth, "the admin password must come from the environment"
    db_folder = str(Path(auth["database_uri"].removeprefix("sqlite:///")).parent)
    assert db_folder in _mounts(svc), f"the user database {auth['database_uri']} is not on a volume"
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert _REQUIRED.search(str(svc["environment"][key])), key
    # the tasks log in as that user, with the same secret
    for name in WORKERS:
        w = _env(services[name])
        assert w["MLFLOW_TRACKING_USERNAME"] == env["MLFLOW_AUTH_ADMIN_USERNAME"]
        assert w["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    # the image can run the auth app (Flask-WTF, for CSRF) and has the user database folder
    import tomllib

    prod = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["prod"]
    assert any(re.match(r"(?i)flask-wtf\b", r) for r in prod), prod
    assert db_folder in (PROJECT_ROOT / "docker/Dockerfile").read_text()
    # its health check stays unauthenticated (/health is open in the auth app)
    assert "/health" in " ".join(svc["healthcheck"]["test"])
