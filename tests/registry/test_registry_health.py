"""MLflow down fails in seconds; a crash in the middle of registration is finished on the next run.

Real components only: a closed TCP port (nothing listening) for the unreachable server, a real
local HTTP server (``tests/mlflow_servers.py``) that answers slowly, fails once or never answers,
the real MLflow SQLite store of the test's TRAFFIC_HOME, and a real process killed with SIGKILL
right after it registered a version.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.mlflow_servers import http_server, hung_server
from traffic.config import PROJECT_ROOT, mlflow_uri
from traffic.errors import TrafficError
from traffic.registry import CHALLENGER, champion, decide_promotion, log_training, promote
from traffic.registry.health import (
    CHECK_DEADLINE_S,
    CHECK_TIMEOUT_S,
    DECISION_TAG,
    REGISTRATION_TAG,
    TrackingServerError,
    check_tracking_server,
    recover_unfinished,
)

DATA_WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


def _closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri(), registry_uri=mlflow_uri())


# ------------------------------------------------------------------ MLflow down


def test_unreachable_tracking_server_fails_in_seconds_naming_uri_and_cause(monkeypatch):
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.perf_counter()
    with pytest.raises(TrackingServerError, match="not reachable") as err:
        check_tracking_server()
    assert time.perf_counter() - t0 < 5
    assert uri in str(err.value) and "Connection refused" in str(err.value)


def test_nightly_train_stops_before_training_when_mlflow_is_down(monkeypatch, los_angeles):
    from traffic import pipeline

    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.perf_counter()
    with pytest.raises(TrackingServerError, match=uri.replace(".", r"\.")):
        pipeline.train(los_angeles, "2012-03-07")  # nothing ingested: it must not get that far
    assert time.perf_counter() - t0 < 5


def test_a_dead_server_is_not_retried(monkeypatch):
    """Connection refused is a dead server: one try, one line, retryable for Airflow, exit 1 in the CLI."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingServerError) as err:
        check_tracking_server(uri)
    assert time.perf_counter() - t0 < 1.0
    assert "(1 try;" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, TrafficError) and err.value.retryable


def test_a_slow_first_answer_is_tried_once_more_and_passes(caplog):
    """A cold server (the first GET takes longer than the first try's timeout) passes on the second try."""
    with http_server(delays=[CHECK_TIMEOUT_S + 2.0]) as (uri, seen):
        t0 = time.perf_counter()
        assert check_tracking_server(uri) == uri
        took = time.perf_counter() - t0
    assert CHECK_TIMEOUT_S <= took < CHECK_DEADLINE_S
    assert [p for p, _ in seen] == ["/health", "/health", "/api/2.0/mlflow/experiments/search?max_results=1"]
    assert "timed out" in caplog.text and "trying once more" in caplog.text


def test_a_transient_503_is_tried_once_more():
    with http_server(statuses=[503]) as (uri, seen):
        assert check_tracking_server(uri) == uri
    assert len(seen) == 3


def test_a_server_error_on_health_fails_without_hiding_it():
    with http_server(statuses=[500]) as (uri, seen), pytest.raises(TrackingServerError, match="HTTP 500"):
        check_tracking_server(uri)
    assert len(seen) == 1


def test_a_server_slow_on_every_try_fails_within_the_deadline():
    with http_server(delays=[5.0, 5.0]) as (uri, _):
        t0 = time.perf_counter()
        with pytest.raises(TrackingServerError, match=r"\(2 tries; .*timed out"):
            check_tracking_server(uri, timeout_s=0.5, deadline_s=1.5)
        assert 1.4 < time.perf_counter() - t0 < 2.5


def test_a_hung_server_fails_within_the_deadline_with_the_defaults():
    """Accepts the connection and never answers: the whole check stays under 10 s."""
    with hung_server() as uri:
        t0 = time.perf_counter()
        with pytest.raises(TrackingServerError, match="not reachable") as err:
            check_tracking_server(uri)
        took = time.perf_counter() - t0
    assert CHECK_DEADLINE_S - 0.5 < took <= CHECK_DEADLINE_S + 0.5 < 10
    assert uri in str(err.value)


def test_local_store_needs_no_check():
    assert check_tracking_server("sqlite:///somewhere/mlflow.db") is None


def test_mlflow_http_retries_are_bounded(monkeypatch):
    """MLflow's own client against a closed port gives up in seconds (its defaults take about four minutes)."""
    from traffic.mlflow_env import HTTP_DEFAULTS

    for key, value in HTTP_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(Exception, match="127.0.0.1"):
        MlflowClient(tracking_uri=uri).search_experiments()
    assert time.perf_counter() - t0 < 30


def test_import_traffic_sets_the_mlflow_environment():
    """Defaults for the HTTP client unless the user set them; pickle deserialization off always."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_HTTP_REQUEST_TIMEOUT": "7", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    code = (
        "import os, json, traffic; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('MLFLOW_')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    got = json.loads(out.stdout)
    assert got["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    assert got["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's value wins
    assert got["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3" and got["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"


# ------------------------------------------------------------------ half-done registration

_CRASH_AFTER_REGISTER = textwrap.dedent(
    """
    import os, pickle, signal, sys
    sys.path.insert(0, {tests!r})  # the registry tests' module (TinyForecaster) for the pickled result
    import mlflow
    from traffic.config import load_city
    from traffic.registry import log_training

    real = mlflow.register_model

    def register_then_die(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 between the version and its alias/card/decision

    mlflow.register_model = register_then_die
    with open({result!r}, "rb") as fh:
        result = pickle.load(fh)
    log_training(load_city("berlin"), result, data_window={window!r}, code_version="crash")
    """
)


@pytest.mark.usefixtures("mlflow_db")
def test_a_registration_killed_half_way_is_marked_failed_on_the_next_run(berlin, make_module, make_result, tmp_path):
    # a good nightly first: version 1 decided (champion)
    good = make_result(make_module(0.1))
    info = log_training(berlin, good, data_window=DATA_WINDOW, code_version="ok")
    promote(berlin, info["version"], decide_promotion(good.metrics["model"], None, good.best_baseline()))
    assert _client().get_model_version(info["model_name"], "1").tags[REGISTRATION_TAG] == "complete"

    # the next nightly is killed -9 right after registering version 2
    path = tmp_path / "result.pkl"
    path.write_bytes(pickle.dumps(make_result(make_module(0.05))))
    script = _CRASH_AFTER_REGISTER.format(tests=str(Path(__file__).parent), result=str(path), window=DATA_WINDOW)
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    client = _client()
    v2 = client.get_model_version("traffic-berlin", "2")
    assert DECISION_TAG not in v2.tags and REGISTRATION_TAG not in v2.tags
    assert client.get_run(v2.run_id).info.status == "RUNNING"  # what the crash leaves

    out = recover_unfinished(berlin)
    assert out["failed_versions"] == ["2"] and out["failed_runs"] == [v2.run_id] and out["undecided_versions"] == []
    v2 = client.get_model_version("traffic-berlin", "2")
    assert v2.tags[REGISTRATION_TAG] == "failed" and v2.tags["promoted"] == "false"
    assert "registration did not finish" in v2.tags[DECISION_TAG] and v2.description == v2.tags[DECISION_TAG]
    assert client.get_run(v2.run_id).info.status == "FAILED"
    assert champion(berlin)["version"] == "1" and champion(berlin, CHALLENGER)["version"] == "1"
    # re-running the recovery changes nothing; the next nightly registers and decides normally
    assert recover_unfinished(berlin) == {
        "failed_runs": [],
        "failed_versions": [],
        "undecided_versions": [],
        "challenger": "1",
    }
    nxt = make_result(make_module(0.02))
    info3 = log_training(berlin, nxt, data_window=DATA_WINDOW, code_version="ok")
    assert info3["version"] == "3" and champion(berlin, CHALLENGER)["version"] == "3"


@pytest.mark.usefixtures("mlflow_db")
def test_a_version_whose_promotion_never_ran_gets_a_not_promoted_decision(berlin, make_module, make_result):
    """The train task registered it whole, then the nightly stopped (e.g. MLflow went down before promote)."""
    result = make_result(make_module(0.1))
    info = log_training(berlin, result, data_window=DATA_WINDOW, code_version="ok")
    client = _client()
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    out = recover_unfinished(berlin)
    assert out == {"failed_runs": [], "failed_versions": [], "undecided_versions": ["1"], "challenger": "1"}
    mv = client.get_model_version("traffic-berlin", "1")
    assert "no promotion decision was made" in mv.tags[DECISION_TAG] and mv.tags["promoted"] == "false"
    assert mv.tags[REGISTRATION_TAG] == "complete" and mv.description == mv.tags[DECISION_TAG]
    assert champion(berlin) is None and champion(berlin, CHALLENGER)["version"] == "1"


@pytest.mark.usefixtures("mlflow_db")
def test_a_running_run_of_a_live_process_is_left_alone(berlin):
    """Only crashed runs are ended: this process's own open run stays RUNNING."""
    import mlflow

    from traffic.registry.health import owner_tags
    from traffic.registry.mlflow_registry import _ensure_experiment, _mlflow_session

    with _mlflow_session() as client:
        exp = _ensure_experiment(client, berlin)
        run = client.create_run(exp, tags=owner_tags())
    assert recover_unfinished(berlin)["failed_runs"] == []
    assert _client().get_run(run.info.run_id).info.status == "RUNNING"
    assert mlflow.active_run() is None
