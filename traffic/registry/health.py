"""MLflow down, MLflow half-written: fail fast, and finish what a crash left.

:func:`check_tracking_server`
    Before a stage spends minutes on work it must log, a short request to the tracking
    server (``<uri>/health``, then one authenticated REST call): an unreachable server, a
    server error or refused credentials fail in seconds with the URI and the cause. Only
    for ``http(s)`` URIs; a local store (SQLite, files) needs no check. MLflow's own HTTP
    retries are bounded by :mod:`traffic.mlflow_env`.

:func:`recover_unfinished`
    Registration is a sequence of writes (run, model, version, alias, description, card,
    then the promotion decision in a later task); a kill or a server outage in between leaves
    a run in ``RUNNING`` and a version without its decision. :func:`log_training
    <traffic.registry.mlflow_registry.log_training>` writes the version tag
    :data:`REGISTRATION_TAG` = ``complete`` last, and :func:`promote
    <traffic.registry.mlflow_registry.promote>` writes ``promotion_decision``. At the start
    of the next ``train``, every version without a decision gets one: ``promoted`` =
    ``false`` and a ``promotion_decision`` and description saying why; a version whose
    registration was cut short is also marked ``registration`` = ``failed`` and ``challenger``
    moves off it to the newest version registered whole. Runs that a dead process left
    ``RUNNING`` end ``FAILED``.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from traffic.config import CityConfig, mlflow_uri
from traffic.errors import TrackingServerError

if TYPE_CHECKING:
    from traffic.registry.mlflow_registry import RegistryStore

_log = logging.getLogger(__name__)

#: Version tag written last by ``log_training``: ``complete``; ``failed`` once recovered.
REGISTRATION_TAG = "registration"
#: Version tag of the promotion decision (written by ``promote``).
DECISION_TAG = "promotion_decision"
#: Version tag: the idempotency key of the training that registered it (:func:`training_key`).
TRAINING_KEY_TAG = "training.key"
#: Run tags naming the process that owns a run (to tell a crashed run from a live one).
HOST_TAG, PID_TAG = "traffic.host", "traffic.pid"
#: A RUNNING run of another host counts as crashed after this long (the train task's timeout is 2 h).
STALE_AFTER_S = 3 * 3600.0
#: Timeout of the first try of each request of :func:`check_tracking_server`.
CHECK_TIMEOUT_S = 4.0
#: The whole check (both requests, a retry included) never takes longer than this.
CHECK_DEADLINE_S = 9.0
#: HTTP statuses of a server that is starting or behind a busy proxy: tried once more.
_TRANSIENT = (502, 503, 504)


def check_tracking_server(
    uri: str | None = None, *, timeout_s: float = CHECK_TIMEOUT_S, deadline_s: float = CHECK_DEADLINE_S
) -> str | None:
    """Fail in seconds when the MLflow tracking server is not usable.

    Two requests: ``GET /health``, then one authenticated REST call. A request that times out
    (a cold server, an authentication backend warming up) or answers 502/503/504 is tried once
    more with what is left of ``deadline_s``; a refused connection or a DNS failure (nothing
    listens: a dead server) fails at once, without a retry. So a slow first call passes, and a
    dead or hung server fails within ``deadline_s``.

    Parameters
    ----------
    uri : str, optional
        Tracking URI; default :func:`traffic.config.mlflow_uri`.
    timeout_s : float
        Timeout of the first try of each request.
    deadline_s : float
        The most the whole check takes, retries included.

    Returns
    -------
    str or None
        The URI checked, or None when it is not an ``http(s)`` URI (nothing to check).

    Raises
    ------
    TrackingServerError
        One line naming the URI and the cause: connection refused, timeout, DNS failure, an HTTP
        status >= 500 on ``/health``, or 401/403 on the REST API (``MLFLOW_TRACKING_USERNAME``
        / ``MLFLOW_TRACKING_PASSWORD``).
    """
    uri = uri or mlflow_uri()
    if urlsplit(uri).scheme not in ("http", "https"):
        return None
    base = uri.rstrip("/")
    hint = "start the server or point MLFLOW_TRACKING_URI at a running one"
    t_start = time.perf_counter()

    def left() -> float:
        return deadline_s - (time.perf_counter() - t_start)

    def once(path: str, headers: dict[str, str], timeout: float) -> int:
        req = urllib.request.Request(base + path, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def get(path: str, headers: dict[str, str]) -> int:
        tries = 0
        while True:
            tries += 1
            timeout = min(timeout_s, left()) if tries == 1 else left()
            t0 = time.perf_counter()
            try:
                if timeout <= 0:
                    raise TimeoutError(f"no time left of the {deadline_s:g} s check")
                status = once(path, headers, timeout)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                cause = getattr(exc, "reason", exc)
                timed_out = isinstance(cause, TimeoutError | socket.timeout) or "timed out" in str(cause)
                if timed_out and tries == 1 and left() > 0.5:
                    _log.warning(
                        "MLflow tracking server %s: GET %s timed out after %.1f s; trying once more",
                        uri,
                        path,
                        time.perf_counter() - t0,
                    )
                    continue
                raise TrackingServerError(
                    f"MLflow tracking server {uri} is not reachable: GET {path} failed after "
                    f"{time.perf_counter() - t_start:.1f} s ({tries} tr{'y' if tries == 1 else 'ies'}; "
                    f"{type(cause).__name__}: {cause}); {hint}"
                ) from exc
            if status in _TRANSIENT and tries == 1 and left() > 0.5:
                _log.warning("MLflow tracking server %s: GET %s answered HTTP %s; trying once more", uri, path, status)
                time.sleep(min(0.5, left() / 4))
                continue
            return status

    status = get("/health", {})
    if status >= 500:
        raise TrackingServerError(f"MLflow tracking server {uri}: GET /health answered HTTP {status}; {hint}")
    headers = {}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN", ""):
        headers["Authorization"] = f"Bearer {token}"
    status = get("/api/2.0/mlflow/experiments/search?max_results=1", headers)
    if status in (401, 403):
        who = f"user {user!r}" if user else "no credentials (MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD unset)"
        raise TrackingServerError(f"MLflow tracking server {uri} refused {who}: HTTP {status}")
    if status >= 500:
        raise TrackingServerError(f"MLflow tracking server {uri}: the REST API answered HTTP {status}; {hint}")
    _log.info("MLflow tracking server %s is up (checked in %.1f s)", uri, time.perf_counter() - t_start)
    return uri


def training_key(
    city: str,
    as_of: str,
    code_version: str,
    holdout_digest: str,
    train_steps: int | None,
    config: Any = None,
) -> str:
    """The idempotency key of a nightly training: the same city, night, code, data, budget and configuration.

    A retried ``train`` task whose key names a version registered whole registers nothing new
    (:func:`registered_training`). The holdout digest stands for the data (the window ends
    with the holdout; a re-delivered day changes it); the step budget and ``config`` (the
    city's ``[forecast]`` table and the model spec: a ``-dirty`` or ``unknown`` code version
    does not tell edits apart) are part of it, since another budget or setting is another
    training.

    Returns
    -------
    str
        32 hex digits of the sha256 of the fields.
    """
    import hashlib
    import json

    fields: dict[str, Any] = {
        "city": city,
        "as_of": as_of,
        "code_version": code_version,
        "holdout_digest": holdout_digest,
        "train_steps": None if train_steps is None else int(train_steps),
        "config": config,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:32]


def registered_training(
    city: CityConfig | str, key: str, *, registry: RegistryStore | None = None
) -> dict[str, Any] | None:
    """The newest version registered whole (``registration`` = ``complete``) by the training with ``key``.

    Returns
    -------
    dict or None
        ``{"model_name", "version", "run_id", "model_uri", "tags"}``; None when no complete
        version carries the key (a version cut short does not count: it is recovered, and the
        training runs again).
    """
    from traffic.registry.mlflow_registry import _mlflow_session
    from traffic.registry.names import model_name

    name = model_name(city)
    with _mlflow_session(registry) as client:
        found = [
            mv
            for mv in client.search_model_versions(f"name = '{name}'", max_results=10000)
            if (mv.tags or {}).get(TRAINING_KEY_TAG) == key and (mv.tags or {}).get(REGISTRATION_TAG) == "complete"
        ]
    if not found:
        return None
    mv = max(found, key=lambda v: int(v.version))
    return {
        "model_name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "model_uri": f"models:/{name}/{mv.version}",
        "tags": dict(mv.tags or {}),
    }


def owner_tags() -> dict[str, str]:
    """Run tags naming this process (:data:`HOST_TAG`, :data:`PID_TAG`)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _crashed(run: Any, now_ms: int, stale_after_s: float) -> bool:
    """A RUNNING run whose process is gone (same host) or that is older than ``stale_after_s``."""
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname() and str(tags.get(PID_TAG, "")).isdigit():
        pid = int(tags[PID_TAG])
        if pid != os.getpid() and not _alive(pid):
            return True
    return now_ms - int(run.info.start_time or 0) > 1000 * stale_after_s


def recover_unfinished(
    city: CityConfig | str,
    *,
    stale_after_s: float = STALE_AFTER_S,
    registry: RegistryStore | None = None,
    keep: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Finish the registry state a crashed or failed nightly left behind (module docstring).

    Call it when no other nightly of the city runs (the nightly DAG runs one at a time).

    Parameters
    ----------
    city : CityConfig or str
    stale_after_s : float
        Age after which a ``RUNNING`` run of another host counts as crashed.
    registry : RegistryStore, optional
        The registry to recover (default: the configured one).
    keep : tuple of str
        Versions left undecided: a retried training's own version, registered whole, whose
        promotion comes next (:func:`registered_training`).

    Returns
    -------
    dict
        ``{"failed_runs": [run ids], "failed_versions": [versions whose registration was cut
        short], "undecided_versions": [versions registered whole but never decided],
        "challenger": version or None}``.
    """
    from traffic.registry.mlflow_registry import _aliases, _mlflow_session
    from traffic.registry.names import CHALLENGER, experiment_name, model_name

    name = model_name(city)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    failed_runs: list[str] = []
    failed_versions: list[str] = []
    undecided_versions: list[str] = []
    with _mlflow_session(registry) as client:
        exp = client.get_experiment_by_name(experiment_name(city))
        if exp is not None:
            for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
                if _crashed(run, now_ms, stale_after_s):
                    client.set_tag(
                        run.info.run_id, "traffic.recovered", f"ended FAILED by the nightly of {now:%Y-%m-%dT%H:%M:%SZ}"
                    )
                    client.set_terminated(run.info.run_id, status="FAILED")
                    failed_runs.append(run.info.run_id)
        versions = client.search_model_versions(f"name = '{name}'", max_results=10000)
        for mv in versions:
            tags = dict(mv.tags or {})
            if DECISION_TAG in tags or (str(mv.version) in keep and tags.get(REGISTRATION_TAG) == "complete"):
                continue
            when = f"{now:%Y-%m-%dT%H:%M:%SZ}"
            if tags.get(REGISTRATION_TAG) == "complete":  # registered whole; no promotion ran after it
                reason = f"not promoted: no promotion decision was made before the next training ({when})"
                undecided_versions.append(str(mv.version))
            else:
                reason = (
                    "not promoted: registration did not finish (the process crashed while registering it); "
                    f"marked failed by the training of {when}"
                )
                client.set_model_version_tag(name, mv.version, REGISTRATION_TAG, "failed")
                failed_versions.append(str(mv.version))
            client.set_model_version_tag(name, mv.version, "promoted", "false")
            client.update_model_version(name, mv.version, description=reason)
            client.set_model_version_tag(name, mv.version, DECISION_TAG, reason)  # written last: the decision
            if mv.run_id and mv.run_id not in failed_runs:
                try:
                    run = client.get_run(mv.run_id)
                except Exception:  # the run is gone: nothing to end
                    run = None
                if run is not None and run.info.status == "RUNNING":
                    client.set_terminated(mv.run_id, status="FAILED")
                    failed_runs.append(mv.run_id)
        challenger = _aliases(client, name).get(CHALLENGER) if versions else None
        if failed_versions:  # challenger: the newest version registered whole
            failed = set(failed_versions)
            ok = sorted(int(v.version) for v in versions if str(v.version) not in failed)
            if ok:
                challenger = str(ok[-1])
                client.set_registered_model_alias(name, CHALLENGER, challenger)
            elif challenger in failed:
                client.delete_registered_model_alias(name, CHALLENGER)
                challenger = None
    if failed_runs or failed_versions or undecided_versions:
        _log.warning(
            "%s: finished what an earlier run left: runs %s ended FAILED, versions %s marked failed "
            "(registration cut short), versions %s given a not-promoted decision; challenger now %s",
            name,
            failed_runs,
            failed_versions,
            undecided_versions,
            challenger,
        )
    return {
        "failed_runs": failed_runs,
        "failed_versions": failed_versions,
        "undecided_versions": undecided_versions,
        "challenger": challenger,
    }
