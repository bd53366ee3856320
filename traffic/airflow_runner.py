"""Run the nightly pipeline through Airflow itself, on embedded defaults.

``traffic nightly`` (the README's main command) prepares a project-local Airflow
(SQLite metadata under ``<home>/airflow``, the project's ``dags/`` folder, a ``gpu``
pool), then for each city runs ``airflow dags test`` on the ingest DAG for every day
the raw data holds, and on the nightly DAG for the newest day. ``airflow dags test``
exits non-zero when the DagRun fails, so a failure stops the command. Then, in-process, it
replays the city's last ``verify_days`` days before the newest with what serves now
(:func:`traffic.pipeline.replay_days`: forecast + publish per day, no training) and verifies them
against the following days (:func:`traffic.pipeline.verify`), so that the catalog holds verified
runs and the serving MLflow run its ``live.*`` metrics.

:func:`fail_fast` wraps every task of ``dags/``: a :class:`~traffic.errors.TrafficError` that
a retry cannot fix (a bad city file, a bad delivered file, a failed quality gate) is logged as
one line (``traffic fault: ...``) and fails the task at once, without its retries; anything
else (a lost connection, a killed worker) keeps the task's retries.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from traffic.config import PROJECT_ROOT, list_cities
from traffic.errors import TrafficError

if TYPE_CHECKING:
    from traffic.resources import Resources

log = logging.getLogger(__name__)

#: Marks the log line of a fault :func:`fail_fast` stopped a task for; :func:`fault_in` finds it.
FAULT_MARK = "traffic fault: "

_F = TypeVar("_F", bound=Callable[..., Any])


def fail_fast(fn: _F) -> _F:
    """Decorate an Airflow task's function: a fault a retry cannot fix fails the task without retries.

    Parameters
    ----------
    fn : callable
        The task body (put ``@task(...)`` above ``@fail_fast``).

    Returns
    -------
    callable
        Same signature and name. A :class:`~traffic.errors.TrafficError` with ``retryable``
        False is logged as one line (``traffic fault: <Type>: <message>``) and re-raised as
        Airflow's ``AirflowFailException``, which fails the task instance at once whatever its
        ``retries``; every other exception (and a retryable fault) propagates unchanged, so
        the task's retries still cover transient faults.
    """

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrafficError as exc:
            line = f"{type(exc).__name__}: {exc.one_line()}"
            if exc.retryable:
                log.warning("%s (may be retried)", line)
                raise
            from airflow.sdk.exceptions import AirflowFailException

            log.error("%s%s (not retried: a retry cannot fix it)", FAULT_MARK, line)
            raise AirflowFailException(line) from exc

    return run  # type: ignore[return-value]


def fault_in(output: str) -> str | None:
    """The last fault :func:`fail_fast` logged in an Airflow output (``airflow dags test``), or None."""
    lines = [ln for ln in output.splitlines() if FAULT_MARK in ln]
    if not lines:
        return None
    text = lines[-1].split(FAULT_MARK, 1)[1]
    return text.split(" (not retried", 1)[0].strip()


#: How many days after a backfill run's logical date :func:`later_runs` looks for queued runs.
LATER_RUNS_HORIZON_DAYS = 400


def later_runs(ti: Any, dag_run: Any, timezone: str, horizon_days: int = LATER_RUNS_HORIZON_DAYS) -> int:
    """Runs of the same DAG at later daily logical dates that are queued or running: what still comes.

    ``airflow backfill create`` queues one run per day of its range at once; the ingest DAG puts
    this count into the raster asset event's ``extra["later_runs"]`` so that the nightly run skips
    every day but the backfill's last (:func:`traffic.pipeline.as_of_from_events`).

    Parameters
    ----------
    ti : RuntimeTaskInstance
        The running task instance (``context["ti"]``); its ``get_dr_count`` asks the API server.
    dag_run : DagRun
        The running DAG run (``context["dag_run"]``); a run without a logical date has none later.
    timezone : str
        The city's time zone: later days keep the logical date's local wall-clock time across DST.
    horizon_days : int
        Days after the logical date looked at.

    Returns
    -------
    int
    """
    if dag_run.logical_date is None:
        return 0
    import pendulum

    local = pendulum.instance(dag_run.logical_date).in_timezone(timezone)
    later = [local.add(days=k).in_timezone("UTC") for k in range(1, horizon_days + 1)]
    return int(ti.get_dr_count(dag_id=dag_run.dag_id, logical_dates=later, states=["queued", "running"]))


def backfill_args(city: str, start: str, end: str, *, max_active_runs: int = 1) -> list[str]:
    """``airflow backfill create`` arguments that ingest and rasterize local days ``start..end`` of a city.

    The ingest DAG's daily run (01:00 city time) ingests the local day before it, so the
    backfill covers the runs of the days after ``start`` .. ``end``: from local midnight of
    ``start + 1`` to the last second of ``end + 1``, written with the city's UTC offset (Airflow
    reads a bare date as UTC midnight, which misses or adds a day east and west of UTC). Runs go
    one at a time and forward, so every day's raster event but the last names later runs
    (:func:`later_runs`) and the nightly DAG retrains once, on ``end``.

    Parameters
    ----------
    city : str
    start, end : str
        First and last local date (``YYYY-MM-DD``) to ingest.
    max_active_runs : int
        Backfill runs at a time.

    Returns
    -------
    list of str
        The arguments after ``airflow``.

    Raises
    ------
    UsageError
        ``end`` before ``start``, or a date that is not ``YYYY-MM-DD``.
    """
    import datetime as dt

    from traffic.config import load_city
    from traffic.errors import UsageError

    c = load_city(city)
    try:
        d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as exc:
        raise UsageError(f"backfill dates {start!r}..{end!r}: {exc}", key="start/end", allowed="YYYY-MM-DD") from exc
    if d1 < d0:
        raise UsageError(f"backfill end {end} is before start {start}", key="end", value=end, allowed=f">= {start}")
    one = dt.timedelta(days=1)
    lo = dt.datetime.combine(d0 + one, dt.time(), tzinfo=c.tz)
    hi = dt.datetime.combine(d1 + one, dt.time(23, 59, 59), tzinfo=c.tz)
    return [
        "backfill",
        "create",
        "--dag-id",
        f"ingest_{c.name}",
        "--from-date",
        lo.isoformat(),
        "--to-date",
        hi.isoformat(),
        "--max-active-runs",
        str(max_active_runs),
    ]


class AirflowRunError(TrafficError, RuntimeError):
    """A DAG run that ``traffic nightly``/``replay`` started failed on a fault in the input (named in the message)."""


def airflow_env(base: dict[str, str] | None = None, res: Resources | None = None) -> dict[str, str]:
    """Environment for the Airflow CLI: project-local home, SQLite metadata, our DAGs.

    Values already set in ``base`` (e.g. a PostgreSQL ``SQL_ALCHEMY_CONN``) win. With ``res``
    (a :class:`traffic.resources.Resources`) the child's stores are those of ``res``
    (``TRAFFIC_HOME``, ``TRAFFIC_LAKE``, ``MLFLOW_TRACKING_URI``, ``TRAFFIC_MLFLOW_ARTIFACTS``,
    ``TRAFFIC_DUCKDB``, whatever ``base`` says), so its tasks build the same resources; without,
    they are this process's.
    """
    from traffic.resources import Resources

    mine = res if res is not None else Resources.from_config()
    env = dict(os.environ if base is None else base)
    af_home = Path(env.get("AIRFLOW_HOME", mine.home / "airflow"))
    af_home.mkdir(parents=True, exist_ok=True)
    defaults = {
        "AIRFLOW_HOME": str(af_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{af_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # INFO: the stages' own records (counts, timings, decisions) are in the task logs (Airflow's
        # stdlib handler filters at this level); Airflow's own loggers stay at WARNING
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "airflow=WARNING",
        "TRAFFIC_HOME": str(mine.home),
        "MLFLOW_TRACKING_URI": mine.registry.tracking_uri,
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for k, v in defaults.items():
        env.setdefault(k, v)
    if res is not None:
        env.update(
            TRAFFIC_HOME=str(res.home),
            TRAFFIC_LAKE=str(res.lake.root),
            MLFLOW_TRACKING_URI=res.registry.tracking_uri,
            TRAFFIC_MLFLOW_ARTIFACTS=res.registry.artifact_root,
            TRAFFIC_DUCKDB=str(res.warehouse.path),
        )
    return env


def airflow_exe() -> str:
    """The ``airflow`` command of this Python's environment (else the one on ``PATH``)."""
    return shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"


#: A task-log line of ``airflow dags test`` (structlog's console format): time, level, message, logger, ``loc=``.
_TASK_LINE = re.compile(
    r"^(?P<time>\S+) \[(?P<level>\w+)\s*\] (?P<msg>.*) \[(?P<logger>traffic[\w.]*)\](?: loc=\S+)?\s*$"
)
#: Loggers whose INFO records :func:`task_line` shows: the stages' start and end (``_logged``), training and
#: backtest progress.
SHOWN_LOGGERS = ("traffic.pipeline", "traffic.forecast.loop", "traffic.forecast.train")


def task_line(line: str) -> str | None:
    """What the terminal shows of one line of ``airflow dags test`` output, or None.

    The stages' own records (:data:`SHOWN_LOGGERS`: a stage's start, its end with the duration
    and summary, training progress) and every WARNING or ERROR of a ``traffic`` logger, as
    ``HH:MM:SS message`` (the record's UTC time) with ``WARNING``/``ERROR`` in front where it is one;
    Airflow's own lines and anything else are None. Each record is one line of the task log, so
    each is shown once.
    """
    m = _TASK_LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    level, logger = m["level"].lower(), m["logger"]
    if level in ("warning", "error", "critical"):
        return f"{m['time'][11:19]} {level.upper()} {m['msg'].rstrip()}"
    if logger in SHOWN_LOGGERS:
        return f"{m['time'][11:19]} {m['msg'].rstrip()}"
    return None


def _airflow(
    args: list[str], env: dict[str, str], *, quiet: bool = True, echo: Callable[[str], Any] | None = None
) -> subprocess.CompletedProcess:
    """Run the Airflow CLI; a failure raises (:class:`AirflowRunError` naming a fault, else the output's tail).

    With ``echo`` the output is read as it comes and each line :func:`task_line` keeps is passed
    to ``echo`` at once (stage starts and ends, training progress, warnings), so a long DAG run
    shows where it is; the whole output is still kept for the error.
    """
    if echo is None:
        proc = subprocess.run([airflow_exe(), *args], env=env, capture_output=quiet, text=True)
    else:
        kept: list[str] = []

        def keep(line: str) -> None:
            kept.append(line)
            if (shown := task_line(line)) is not None:
                echo(shown)

        argv = [airflow_exe(), *args]
        proc = subprocess.CompletedProcess(argv, _stream(argv, env, keep), "".join(kept), "")
    if proc.returncode != 0:
        raise _failure(f"`airflow {' '.join(args)}`", (proc.stdout or "") + (proc.stderr or ""), proc.returncode)
    return proc


def _stream(argv: list[str], env: dict[str, str], on_line: Callable[[str], Any]) -> int:
    """Run ``argv`` and pass each line of its output (stdout and stderr merged) to ``on_line`` as it comes.

    Returns the exit status. The child runs unbuffered, so its lines come as they are written, not in blocks.
    """
    quick = {**env, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(argv, env=quick, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            on_line(line)
    return child.returncode


def _failure(what: str, output: str, returncode: int) -> Exception:
    """The error of a failed run of ``what``: :class:`AirflowRunError` naming a fault (:func:`fault_in`), else a
    ``RuntimeError`` with the output's last 60 lines."""
    fault = fault_in(output)
    if fault:
        return AirflowRunError(f"{what} failed: {fault}")
    tail = "\n".join(output.splitlines()[-60:])
    return RuntimeError(f"{what} failed (exit {returncode}):\n{tail}")


def prepare(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the ``gpu`` pool (idempotent)."""
    _airflow(["db", "migrate"], env)
    _airflow(["pools", "set", "gpu", "1", "GPU training slots (one per GPU worker)"], env)


def run_nightly(
    cities: list[str] | None = None, *, as_of: str | None = None, skip_ingest: bool = False, log=print
) -> dict[str, Any]:
    """Ingest everything the raw feeds hold, then run each city's nightly DAG via Airflow.

    The tasks' stage lines (start, end with duration and summary), training progress and
    warnings are passed to ``log`` as they come, prefixed with ``[city]`` (:func:`task_line`).
    An ingest skips the days whose partitions the lake already holds from the same delivered
    bytes (:func:`traffic.ingest.ingest_range`). With ``skip_ingest`` nothing is read from the
    feeds: the ingest DAG rasterizes and verifies the days the lake holds
    (:func:`traffic.pipeline.lake_dates`) and the nightly DAG runs on the newest of them (or
    ``as_of``); a city whose lake holds nothing fails before Airflow starts, with one line.

    Returns a summary per city: timings, the trained version, the promotion decision,
    the published run.
    """
    from traffic import pipeline

    names = cities or list_cities()
    ranges = {c: (pipeline.lake_dates(c, as_of=as_of) if skip_ingest else pipeline.source_dates(c)) for c in names}
    env = airflow_env()
    summary: dict[str, Any] = {"cities": {}, "timings_s": {}}
    t0 = time.perf_counter()
    log(f"airflow: migrating metadata DB in {env['AIRFLOW_HOME']} ...")
    prepare(env)
    summary["timings_s"]["airflow_prepare"] = round(time.perf_counter() - t0, 1)
    # one Airflow process for every DAG run and replay (traffic.airflow_batch): Airflow's start-up is paid
    # once, and a city's replay reuses the baselines its nightly run fitted
    steps: list[dict[str, Any]] = []
    owner: list[tuple[str, str]] = []  # (city, stage) of each step
    for city in names:
        first, last = ranges[city]
        conf: dict[str, Any] = {"start": first, "end": last}
        if skip_ingest:
            conf["skip_ingest"] = True
        steps.append({"airflow": ["dags", "test", f"ingest_{city}", "-c", json.dumps(conf)]})
        steps.append({"airflow": ["dags", "test", f"nightly_{city}", "-c", json.dumps({"as_of": as_of or last})]})
        steps.append({"replay": {"city": city, "newest": as_of or last}})
        owner += [(city, "ingest_dag"), (city, "nightly_dag"), (city, "replay")]
    how = " (--skip-ingest: rasterize what the lake holds)" if skip_ingest else ""
    times: dict[str, dict[str, Any]] = {city: {} for city in names}

    def started(i: int) -> None:
        city, stage = owner[i]
        first, last = ranges[city]
        day = as_of or last
        if stage == "ingest_dag":
            log(f"[{city}] ingest_{city}: {first} .. {last}{how}")
        elif stage == "nightly_dag":
            log(f"[{city}] nightly_{city}: as_of {day}")

    def done(i: int, seconds: float) -> None:
        city, stage = owner[i]
        if stage != "replay":  # a replay's seconds are its own timings (replay_and_verify)
            times[city][stage] = round(seconds, 1)
            log(f"[{city}] {stage.removesuffix('_dag')}_{city}: done in {times[city][stage]} s")

    def line(i: int, text: str) -> None:
        log(f"[{owner[i][0]}]   {text}")

    results = run_plan(steps, env, started=started, done=done, line=line, note=log)
    for i, (city, stage) in enumerate(owner):
        if stage != "replay":
            continue
        out = results[str(i)]
        times[city].update(out.pop("timings_s"))
        summary["cities"][city] = {"as_of": as_of or ranges[city][1], "timings_s": times[city], **out}
    summary["timings_s"]["total"] = round(time.perf_counter() - t0, 1)
    return summary


def run_plan(
    steps: list[dict[str, Any]],
    env: dict[str, str],
    *,
    started: Callable[[int], Any],
    done: Callable[[int, float], Any],
    line: Callable[[int, str], Any],
    note: Callable[[str], Any],
) -> dict[str, Any]:
    """Run ``steps`` in one child process (:mod:`traffic.airflow_batch`); the replay steps' results by step index.

    ``started(i)`` and ``done(i, seconds)`` are called as step ``i`` starts and ends (seconds as
    this process saw them: the first step includes the child's start-up); ``line(i, text)`` with
    each line of its output that :func:`task_line` shows; ``note(text)`` with each progress line
    of a replay (:func:`replay_and_verify`'s ``log``). A
    failed step raises as :func:`_airflow` does (:class:`AirflowRunError` naming a fault, else a
    ``RuntimeError`` with the step's last output lines); the steps after it do not run.
    """
    import tempfile

    from traffic.airflow_batch import MARK

    with tempfile.TemporaryDirectory(prefix="traffic-plan-") as tmp:
        plan, out = Path(tmp) / "plan.json", Path(tmp) / "results.json"
        plan.write_text(json.dumps({"steps": steps, "out": str(out)}))
        argv = [sys.executable, "-m", "traffic.airflow_batch", str(plan)]
        kept: list[str] = []  # the output of the step that runs (all of it before the first step)
        current, failed, t_step = 0, None, time.perf_counter()

        def on_line(raw: str) -> None:
            nonlocal current, failed, t_step, kept
            if raw.startswith(MARK):
                kind, _, rest = raw[len(MARK) :].strip().partition(" ")
                if kind == "start":
                    current, kept, t_step = int(rest), [], time.perf_counter()
                    started(current)
                elif kind == "done":
                    done(current, time.perf_counter() - t_step)
                elif kind == "log":
                    note(rest)
                elif kind == "failed":
                    failed = int(rest)
                return
            kept.append(raw)
            if (shown := task_line(raw)) is not None:
                line(current, shown)

        returncode = _stream(argv, env, on_line)
        if returncode == 0 and failed is None:
            return json.loads(out.read_text())
    step = steps[current if failed is None else failed]
    what = f"`airflow {' '.join(step['airflow'])}`" if "airflow" in step else f"the replay of {step['replay']['city']}"
    raise _failure(what, "".join(kept), returncode)


def replay_and_verify(city: str, newest: str, times: dict[str, float], *, log=print) -> dict[str, Any]:
    """Replay the days before ``newest`` with what serves now and verify them (``times`` gets each stage's seconds).

    Returns ``{"replay": <replay_days result>, "verify": <verify result>}``.
    """
    from traffic import pipeline
    from traffic.resources import Resources

    res = Resources.from_config()
    t = time.perf_counter()
    log(f"[{city}] replay: day-ahead runs of the days before {newest} with what serves now (no training)")
    replayed = pipeline.replay_days(city, newest, res=res)
    times["replay_forecast"] = replayed["timings_s"]["forecast"]
    times["replay_publish"] = replayed["timings_s"]["publish"]
    times["replay"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    log(f"[{city}] verify: the published runs whose day has landed")
    verified = pipeline.verify(city, res=res)
    times["verify"] = round(time.perf_counter() - t, 1)
    return {"replay": replayed, "verify": verified}


def report(summary: dict[str, Any]) -> str:
    """What was trained, promoted and published, and where to look."""
    import mlflow

    from traffic.forecast.baselines import BASELINES
    from traffic.publish import connect_catalog
    from traffic.resources import Resources

    res = Resources.from_config()
    uri = res.registry.tracking_uri
    lines = []
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
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
            base = {b: m[f"{b}.rmse_mean"] for b in BASELINES if f"{b}.rmse_mean" in m}
            ablation = {
                k: m[f"ablation.{k}.rmse_mean"] for k in ("base", "base_head") if f"ablation.{k}.rmse_mean" in m
            }
            lines.append(
                f"   trained   {name} v{latest.version} (run {latest.run_id}) rmse_mean={m.get('model.rmse_mean', float('nan')):.3f}"
            )
            lines.append("   baselines " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(base.items())))
            if ablation:
                lines.append("   ablation  " + ", ".join(f"{k}={v:.3f}" for k, v in ablation.items()))
            if "backtest.folds" in m:
                cands = [
                    k[len("backtest.") : -len(".rmse_mean")]
                    for k in m
                    if k.endswith(".rmse_mean") and k.startswith("backtest.") and k.count(".") == 2
                ]
                lines.append(
                    f"   backtest  {int(m['backtest.folds'])} folds, {int(m['backtest.days'])} days: "
                    + ", ".join(
                        f"{c}={m[f'backtest.{c}.rmse_mean']:.3f}"
                        + (
                            f" ({100 * m[f'backtest.{c}.vs_gbm.mean']:+.1f} % vs gbm "
                            f"[{100 * m[f'backtest.{c}.vs_gbm.lo']:+.1f}, {100 * m[f'backtest.{c}.vs_gbm.hi']:+.1f}])"
                            if f"backtest.{c}.vs_gbm.mean" in m
                            else ""
                        )
                        for c in sorted(cands, key=lambda c: m[f"backtest.{c}.rmse_mean"])
                    )
                )
            verdict = "promoted to champion" if latest.tags.get("promoted") == "true" else "stays challenger"
            lines.append(f"   decision  {verdict}: {latest.tags.get('promotion_decision', '')}".rstrip())
        lines.append(f"   champion  {f'v{champ.version}' if champ else 'none'}")
        if "replay" in info:
            rep, ver = info["replay"], info["verify"]
            refused = f", refused {[r['as_of'] for r in rep['refused']]}" if rep["refused"] else ""
            refused += f", failed {[(r['as_of'], r['reason']) for r in rep['failed']]}" if rep["failed"] else ""
            lines.append(
                f"   replay    {len(rep['runs'])} day(s) with {rep['serving']}{refused}; verified "
                f"{len(ver['verified']) + len(ver['unchanged'])} run(s), {len(ver['waiting'])} waiting "
                f"(`traffic skill {city} --days {max(len(rep['runs']), 1)}`)"
            )
            for mlflow_run, live in ver["live"].items():
                lines.append(
                    f"   live      MLflow run {mlflow_run}: {live['status']} {sorted(live['metrics'])[:3]} ..."
                )
            for line in ver["alerts"]:
                lines.append(f"   WARNING   {line}")
    db = res.warehouse.path
    if db.exists():
        con = connect_catalog(db)
        try:
            runs = con.execute(
                "SELECT city, model_version, model_kind, issued_at, count(*) AS rows "
                "FROM forecast_runs JOIN forecasts USING (run_id, city) "
                "GROUP BY ALL ORDER BY city, issued_at"
            ).fetchall()
        finally:
            con.close()
        for city, ver, model_kind, issued, n in runs:
            who = f"model v{ver}" if model_kind == "model" else f"baseline {model_kind}"
            lines.append(f"published {city}: {who} issued_at {issued} ({n} forecast rows)")
    lines.append("")
    hint = "; ".join(f"`traffic hotspots {c} --hours 3`, `traffic skill {c}`" for c in summary["cities"])
    lines.append(f"DuckDB:   {db}   (e.g. {hint})")
    lines.append(f"MLflow:   {uri}   (`mlflow ui --backend-store-uri {uri}`)")
    lines.append(f"Lake:     {res.lake.root}")
    lines.append(f"Airflow:  {res.home / 'airflow'}")
    return "\n".join(lines)


def replay_steps(date: str, start: str = "05:00", end: str = "10:00", every_min: int = 60) -> list[str]:
    """Local ``YYYY-MM-DD HH:MM`` moments of a replay of ``date``: ``start``, ``start + every`` .. ``end``.

    Raises
    ------
    ValueError
        A time that is not ``HH:MM`` (``24:00`` allowed as the end of the day), ``end`` before
        ``start``, or ``every_min`` < 1.
    """
    import datetime as dt

    def minutes(text: str, what: str) -> int:
        hh, sep, mm = text.partition(":")
        if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 0 <= int(mm) < 60):
            raise ValueError(f"--{what} {text!r}: expected HH:MM, e.g. 07:00")
        total = int(hh) * 60 + int(mm)
        if total > 24 * 60:
            raise ValueError(f"--{what} {text!r}: a time of day 00:00 .. 24:00")
        return total

    day = dt.date.fromisoformat(date)
    lo, hi = minutes(start, "from"), minutes(end, "to")
    if hi < lo:
        raise ValueError(f"--to {end} is before --from {start}")
    if every_min < 1:
        raise ValueError(f"--every {every_min}: minutes between steps, >= 1")
    base = dt.datetime.combine(day, dt.time())
    return [(base + dt.timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M") for m in range(lo, hi + 1, every_min)]


def run_replay(
    city: str,
    date: str,
    *,
    start: str = "05:00",
    end: str = "10:00",
    every_min: int = 60,
    top: int = 3,
    restore: bool = True,
    log=print,
) -> list[dict[str, Any]]:
    """Replay a past day hour by hour through Airflow: ``airflow dags test refresh_<city>`` per step.

    Each step runs the refresh DAG with ``until`` = the step's local time (ingest the partial
    day up to then, rasterize, re-forecast with the champion, publish), then logs the run it
    published and its ``top`` hotspots for the next 3 hours. At the end the day is ingested
    and rasterized in full again (``restore``), so the lake holds no partial day for the
    nightly run.

    Returns
    -------
    list of dict
        Per step: ``until``, ``issued_at``, ``run_id``, ``seconds`` (the DAG run) and
        ``hotspots`` (records).

    Raises
    ------
    traffic.pipeline.NoChampion
        The city has no registered version yet (``make nightly`` makes one); without a
        champion the fallback baseline serves (:func:`traffic.pipeline.serving`).
    ValueError
        ``date`` is not in the shipped data, or bad ``start``/``end``/``every_min``.
    """
    import pandas as pd

    from traffic import pipeline
    from traffic.grid import newest_observed_bin
    from traffic.publish import hotspots, run_id_for
    from traffic.resources import Resources

    res = Resources.from_config()
    c = pipeline._city(city)
    steps = replay_steps(date, start, end, every_min)
    first, last = pipeline.source_dates(c)
    if not first <= date <= last:
        raise ValueError(f"--date {date}: {c.name}'s shipped data holds local dates {first} .. {last}")
    try:
        current = pipeline.serving(c, res=res)  # the champion, or the fallback baseline while none has passed
    except pipeline.NoChampion as exc:
        raise pipeline.NoChampion(f"no champion model for {c.name} yet: run `make nightly` first") from exc
    who = f"champion v{current['version']}" if current["kind"] == "model" else f"baseline {current['baseline']}"
    env = airflow_env(res=res)
    log(f"airflow: metadata DB in {env['AIRFLOW_HOME']} ...")
    prepare(env)
    log(f"replay {c.name} {date} {start}..{end} every {every_min} min with {who}")
    out: list[dict[str, Any]] = []
    try:
        for until in steps:
            t = time.perf_counter()
            _airflow(["dags", "test", f"refresh_{c.name}", "-c", json.dumps({"until": until})], env)
            seconds = round(time.perf_counter() - t, 1)
            newest = newest_observed_bin(c, until)
            if newest is None:
                log(f"{until}  no observed bin yet: nothing published ({seconds} s)")
                out.append({"until": until, "issued_at": None, "run_id": None, "seconds": seconds, "hotspots": []})
                continue
            issued = newest + pd.Timedelta(seconds=c.bin_seconds)
            run_id = run_id_for(c.name, issued)
            spots = hotspots(res.warehouse.path, c.name, hours=3, limit=top, at=issued)
            local = issued.tz_convert(c.timezone)
            log(f"{until}  published {run_id} (issued {local:%H:%M %Z}, model v{current['version']}, {seconds} s)")
            if spots.empty:
                log("        no hotspots (moderate or worse) in the next 3 h")
            for i, s in enumerate(spots.itertuples(index=False), 1):
                when = pd.Timestamp(s.target_time).tz_convert(c.timezone)
                log(
                    f"        {i}. cell {s.cell_id} (row {s.row}, col {s.col}; {s.centroid_lat:.4f}, "
                    f"{s.centroid_lon:.4f}) {s.congestion_level} {s.congestion_index:.2f} at {when:%H:%M} "
                    f"({s.channel} {s.value:.1f})"
                )
            out.append(
                {
                    "until": until,
                    "issued_at": issued.isoformat(),
                    "run_id": run_id,
                    "seconds": seconds,
                    "hotspots": spots.to_dict("records"),
                }
            )
    finally:
        if restore:  # leave no partial day behind for the nightly run
            days = sorted({pipeline.refresh_window(c, u)["start"] for u in steps} | {date})
            pipeline.ingest(c, days[0], days[-1])
            pipeline.rasterize(c, days[0], days[-1])
            log(f"lake: {days[0]} .. {days[-1]} ingested and rasterized in full again")
    return out
